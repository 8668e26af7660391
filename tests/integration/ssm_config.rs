//! Configuration and the webhook token from SSM Parameter Store, as the stack writes them
//! (docs/quickstart.md): the real binary reads `--config ssm:/… , <file>` and the token's
//! SecureString from moto's SSM, follows a token rotation without a restart, and refuses to
//! start, naming the parameter, when one is missing or malformed.

use std::process::Command;
use std::time::Duration;

use crate::support::service::{Service, TOKEN};
use crate::support::{World, eventually, scale_up};

async fn ssm(world: &World) -> aws_sdk_ssm::Client {
    let credentials = aws_sdk_ssm::config::Credentials::new("testing", "testing", None, None, "tests");
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(world.config.region.clone()))
        .credentials_provider(credentials)
        .endpoint_url(&world.moto_url)
        .load()
        .await;
    aws_sdk_ssm::Client::new(&sdk)
}

async fn put(ssm: &aws_sdk_ssm::Client, name: &str, value: &str, secure: bool) {
    let kind = if secure {
        aws_sdk_ssm::types::ParameterType::SecureString
    } else {
        aws_sdk_ssm::types::ParameterType::String
    };
    ssm.put_parameter()
        .name(name)
        .value(value)
        .r#type(kind)
        .overwrite(true)
        .send()
        .await
        .expect("put parameter");
}

/// The prepared config split as the stack and the operator split it: the pools (what the
/// stack knows) in the SSM layer, the rest in the file, with the webhook token's parameter
/// instead of the token file.
fn split(prepared: &std::path::Path, token_parameter: &str) -> (String, String) {
    let mut file: toml::Table = toml::from_str(&std::fs::read_to_string(prepared).unwrap()).unwrap();
    let pools = file.remove("pools").expect("pools");
    let auth = file.get_mut("auth").and_then(toml::Value::as_table_mut).expect("auth");
    auth.remove("bearer_token_file");
    auth.insert("token_ssm_parameter".into(), token_parameter.into());
    auth.insert("token_ssm_refresh_interval".into(), "1s".into());
    let mut stack = toml::Table::new();
    stack.insert("pools".into(), pools);
    (stack.to_string(), file.to_string())
}

async fn post_with(service: &Service, token: &str) -> u16 {
    service.post_raw(scale_up("fp-ssm").to_string().into_bytes(), Some(&format!("Bearer {token}"))).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_runs_from_ssm_and_follows_a_token_rotation() {
    let world = World::new("ssmcfg", |_| {}).await;
    let ssm = ssm(&world).await;
    let (config_name, token_name) = ("/k3s-autoscaler/ssmcfg/config", "/k3s-autoscaler/ssmcfg/webhook-token");
    let (stack, file) = split(&world.prepared.1, token_name);
    put(&ssm, config_name, &stack, false).await;
    put(&ssm, token_name, &format!("{TOKEN}\n"), true).await;
    let dir = tempfile::tempdir().unwrap();
    let file_path = dir.path().join("config.toml");
    std::fs::write(&file_path, file).unwrap();
    let layers = format!("ssm:{config_name},{}", file_path.display());
    let service = Service::start_with_layers(layers.as_ref(), dir).await;

    // The pool exists only in the SSM layer: a scale-up of it launches.
    assert_eq!(post_with(&service, TOKEN).await, 200);
    world.expect_instances(1, Duration::ZERO).await;

    // Rotation: the new token beside the old, then the old removed; no restart.
    put(&ssm, token_name, &format!("{TOKEN}\nrotated-token\n"), true).await;
    eventually("the new token accepted", Duration::from_secs(10), || async {
        (post_with(&service, "rotated-token").await == 200).then_some(())
    })
    .await;
    assert_eq!(post_with(&service, TOKEN).await, 200, "overlap window: the old one still works");
    put(&ssm, token_name, "rotated-token\n", true).await;
    eventually("the old token refused", Duration::from_secs(10), || async {
        (post_with(&service, TOKEN).await == 401).then_some(())
    })
    .await;
    assert_eq!(post_with(&service, "rotated-token").await, 200);
    assert_eq!(service.metric("k3s_autoscaler_token_refresh_failures_total").await, Some(0.0));
}

fn check_config(world: &World, layers: &str) -> (Option<i32>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_k3s-autoscaler"))
        .env("K3S_AUTOSCALER_CONFIG", layers)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env_remove("AWS_REGION")
        .arg("check-config")
        .output()
        .unwrap();
    let _ = world;
    (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_malformed_or_missing_parameter_refuses_to_start_naming_it() {
    let world = World::new("ssmbad", |_| {}).await;
    let ssm = ssm(&world).await;
    let token_name = "/k3s-autoscaler/ssmbad/webhook-token";
    let (stack, file) = split(&world.prepared.1, token_name);
    let dir = tempfile::tempdir().unwrap();
    let file_path = dir.path().join("config.toml");
    std::fs::write(&file_path, file).unwrap();
    let file_path = file_path.display().to_string();

    let (code, stderr) = check_config(&world, &format!("ssm:/k3s-autoscaler/ssmbad/config,{file_path}"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("SSM parameter /k3s-autoscaler/ssmbad/config does not exist"), "{stderr}");

    put(&ssm, "/k3s-autoscaler/ssmbad/config", "[pools.workers\nmax = 3", false).await;
    let (code, stderr) = check_config(&world, &format!("ssm:/k3s-autoscaler/ssmbad/config,{file_path}"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("config file ssm:/k3s-autoscaler/ssmbad/config is not valid"), "{stderr}");

    put(&ssm, "/k3s-autoscaler/ssmbad/config", &stack, false).await;
    let (code, stderr) = check_config(&world, &format!("ssm:/k3s-autoscaler/ssmbad/config,{file_path}"));
    assert_eq!(code, Some(2), "the token parameter is missing: {stderr}");
    assert!(stderr.contains(&format!("SSM parameter {token_name} does not exist")), "{stderr}");

    put(&ssm, token_name, "# no token yet\n", true).await;
    let (code, stderr) = check_config(&world, &format!("ssm:/k3s-autoscaler/ssmbad/config,{file_path}"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains(token_name) && stderr.contains("holds no token"), "{stderr}");

    let (code, stderr) = check_config(&world, &format!("ssm:k3s-autoscaler/no-slash,{file_path}"));
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("must be a full path"), "{stderr}");

    put(&ssm, token_name, &format!("{TOKEN}\n"), true).await;
    let (code, stderr) = check_config(&world, &format!("ssm:/k3s-autoscaler/ssmbad/config,{file_path}"));
    assert_eq!(code, Some(0), "{stderr}");
}
