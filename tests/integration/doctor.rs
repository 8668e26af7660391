//! `k3s-autoscaler doctor --config <path>` through the real binary against moto (behind the
//! fault proxy), the fake Kubernetes API (with SelfSubjectAccessReview), the real
//! Alertmanager and the real Prometheus: every check passes on a complete setup (exit 0),
//! and each broken piece gives its own ✘ line and exit 1, never a panic.

use std::path::{Path, PathBuf};
use std::process::Command;

use aws_sdk_ec2::types::{
    LaunchTemplateHttpTokensState, LaunchTemplateInstanceMetadataOptionsRequest, RequestLaunchTemplateData,
    ResourceType, Tag, TagSpecification,
};

use crate::support::World;
use crate::support::alertmanager::Alertmanager;
use crate::support::notices::{NoticeQueue, queue_config};
use crate::support::prometheus::Prometheus;
use crate::support::service::TOKEN;

/// What one doctor run printed and how it exited.
struct Report {
    code: i32,
    stdout: String,
}

impl Report {
    fn line(&self, start: &str) -> &str {
        self.stdout
            .lines()
            .find(|l| l.starts_with(start))
            .unwrap_or_else(|| panic!("no line {start:?} in\n{}", self.stdout))
    }
}

/// Runs `doctor --config <config>`; `env` edits the environment the service would have.
fn doctor(config: &Path, env: &[(&str, Option<&str>)]) -> Report {
    let mut command = Command::new(env!("CARGO_BIN_EXE_k3s-autoscaler"));
    command
        .args(["--log-format", "text", "doctor", "--config"])
        .arg(config)
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/nonexistent")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
        .env_remove("AWS_PROFILE")
        .env("RUST_LOG", "warn");
    for (key, value) in env {
        match value {
            Some(value) => command.env(key, value),
            None => command.env_remove(key),
        };
    }
    let out = command.output().expect("run doctor");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "doctor panicked: {stderr}");
    Report { code: out.status.code().unwrap_or(-1), stdout }
}

/// A copy of the world's config with `edit` applied to its text.
fn variant(world: &World, dir: &Path, name: &str, edit: impl Fn(String) -> String) -> PathBuf {
    let text = std::fs::read_to_string(&world.prepared.1).expect("config");
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, edit(text)).expect("write config");
    path
}

/// The worker template as the stack makes it: IMDSv2 required, tagged for cluster and pool.
async fn good_template(world: &World) -> String {
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
    let name = "doctor-workers".to_string();
    world
        .aws
        .ec2
        .create_launch_template()
        .launch_template_name(&name)
        .tag_specifications(
            TagSpecification::builder()
                .resource_type(ResourceType::LaunchTemplate)
                .tags(tag("k3s-autoscaler/cluster", &world.config.cluster_id))
                .tags(tag("k3s-autoscaler/pool", "workers"))
                .build(),
        )
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id("ami-12c6146b")
                .instance_type(aws_sdk_ec2::types::InstanceType::T3Small)
                .metadata_options(
                    LaunchTemplateInstanceMetadataOptionsRequest::builder()
                        .http_tokens(LaunchTemplateHttpTokensState::Required)
                        .build(),
                )
                .build(),
        )
        .send()
        .await
        .expect("create launch template");
    name
}

/// Prometheus with the shipped rule files loaded (or none).
async fn prometheus(with_rules: bool) -> Prometheus {
    let dir = tempfile::tempdir().expect("tempdir");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("alert-rules");
    let mut files = Vec::new();
    if with_rules {
        for file in ["autoscaler.rules.yaml", "health.rules.yaml"] {
            std::fs::copy(root.join(file), dir.path().join(file)).expect("copy rules");
            files.push(format!("  - {file}\n"));
        }
    }
    let config = format!("global:\n  evaluation_interval: 5s\nrule_files:\n{}", files.concat());
    let config = if files.is_empty() { "global:\n  evaluation_interval: 5s\n".to_string() } else { config };
    Prometheus::start(dir, &config).await
}

/// Alertmanager with the shipped configuration (its token file made to exist).
async fn shipped_alertmanager() -> Alertmanager {
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).expect("token");
    let shipped = include_str!("../../alertmanager/alertmanager.yml")
        .replace("/etc/alertmanager/secrets/k3s-autoscaler-token/token", &token.display().to_string())
        .replace("/etc/alertmanager/secrets/slack-webhook/url", &token.display().to_string());
    Alertmanager::with_config(dir, &shipped).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_passes_on_a_complete_setup_and_names_each_broken_piece() {
    let queue_name = "notices-doctor";
    let world = World::new("doctor", |c| c.extra_top = queue_config(&c.endpoint, queue_name)).await;
    let _queue = NoticeQueue::create(&world.moto_url, queue_name).await;
    let template = good_template(&world).await;
    let (_, subnet_a) = &world.fixtures.subnets[0];
    world.aws.seed_instance("doctor", subnet_a, true).await;
    let alertmanager = shipped_alertmanager().await;
    let rules = prometheus(true).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let fixture_template = world.fixtures.launch_template.clone();
    let complete = |text: String, am: &str, prom: &str| {
        text.replace(
            &format!("launch_template = \"{fixture_template}\""),
            &format!("launch_template = \"{template}\""),
        ) + &format!("[alertmanager]\nurls = [\"{am}\"]\n[prometheus]\nurl = \"{prom}\"\n")
    };
    let good = variant(&world, dir.path(), "good", |t| complete(t, &alertmanager.url, &rules.url));

    let report = doctor(&good, &[]);
    assert_eq!(report.code, 0, "{}", report.stdout);
    for line in [
        "✔ AWS credentials and region us-east-1:",
        "✔ DynamoDB table autoscaler-doctor: keys cluster_id (HASH), sk (RANGE); TTL on expires_at",
        "✔ pool workers: launch template doctor-workers version 1: IMDSv2 required",
        "✔ pool workers: subnets:",
        "✔ pool workers: CreateFleet permitted: EC2 DryRun: permitted",
        "✔ pool workers: TerminateInstances permitted: EC2 DryRun: permitted",
        "✔ EC2 notice queue",
        "✔ Kubernetes API: reachable, v1.33.4+k3s1",
        "✔ Kubernetes permissions: all 15 verbs",
        "✔ Alertmanager http://127.0.0.1:",
        "✔ Prometheus rules at",
    ] {
        report.line(line);
    }
    assert!(!report.stdout.contains('✘'), "{}", report.stdout);
    assert!(report.stdout.ends_with("0 failed, 0 skipped\n"), "{}", report.stdout);

    // Each broken piece, one at a time: its own ✘ line with a fix, exit 1.
    let missing_table = variant(&world, dir.path(), "table", |t| {
        complete(t, &alertmanager.url, &rules.url)
            .replace("table = \"autoscaler-doctor\"", "table = \"no-such-table\"")
    });
    let report = doctor(&missing_table, &[]);
    assert_eq!(report.code, 1);
    assert_eq!(report.line("✘ DynamoDB table"), "✘ DynamoDB table no-such-table: not found in us-east-1");

    let open_template = variant(&world, dir.path(), "imds", |t| {
        complete(t, &alertmanager.url, &rules.url).replace(
            &format!("launch_template = \"{template}\""),
            &format!("launch_template = \"{fixture_template}\""),
        )
    });
    let report = doctor(&open_template, &[]);
    assert_eq!(report.code, 1);
    assert!(
        report.line("✘ pool workers: launch template").contains("does not require IMDSv2"),
        "{}",
        report.stdout
    );

    let elsewhere_dir = tempfile::tempdir().expect("tempdir");
    let elsewhere = Alertmanager::with_config(
        elsewhere_dir,
        "route: {receiver: team}\nreceivers: [{name: team, webhook_configs: [{url: 'http://127.0.0.1:9/chat'}]}]\n",
    )
    .await;
    let no_rules = prometheus(false).await;
    let alerting = variant(&world, dir.path(), "alerting", |t| complete(t, &elsewhere.url, &no_rules.url));
    let report = doctor(&alerting, &[]);
    assert_eq!(report.code, 1);
    assert!(
        report
            .line("✘ Alertmanager")
            .contains("autoscaler=scale-up goes to team with no webhook to /v1/alerts"),
        "{}",
        report.stdout
    );
    assert!(
        report.line("✘ Prometheus rules").contains("0 scale-up and 0 scale-down rules loaded"),
        "{}",
        report.stdout
    );

    // The stack's role: no DescribeLaunchTemplateVersions (template data is account-wide).
    world.proxy.deny("DescribeLaunchTemplateVersions");
    let report = doctor(&good, &[]);
    assert_eq!(report.code, 0, "{}", report.stdout);
    assert!(
        report.line("✔ pool workers: launch template").contains("HttpTokens not readable with this role"),
        "{}",
        report.stdout
    );

    world.kube.deny_access("pods/eviction", "create");
    world.proxy.deny("CreateFleet");
    let report = doctor(&good, &[]);
    assert_eq!(report.code, 1);
    assert_eq!(
        report.line("✘ Kubernetes permissions"),
        "✘ Kubernetes permissions: denied: create pods/eviction"
    );
    assert!(
        report.line("✘ pool workers: CreateFleet permitted").contains("EC2 DryRun: denied"),
        "{}",
        report.stdout
    );
    report.line("✔ pool workers: TerminateInstances permitted");

    let report = doctor(&good, &[("AWS_ACCESS_KEY_ID", None), ("AWS_SECRET_ACCESS_KEY", None)]);
    assert_eq!(report.code, 1);
    assert!(
        report.line("✘ AWS credentials and region").contains("no AWS credentials found"),
        "{}",
        report.stdout
    );
    assert!(
        !report.stdout.contains("DynamoDB table"),
        "one line for the missing credentials:\n{}",
        report.stdout
    );

    let wrong_region = variant(&world, dir.path(), "region", |t| {
        complete(t, &alertmanager.url, &rules.url).replace("region = \"us-east-1\"", "region = \"eu-west-1\"")
    });
    let report = doctor(&wrong_region, &[]);
    assert_eq!(report.code, 1);
    assert!(
        report
            .line("✘ AWS credentials and region eu-west-1")
            .contains("name zones that eu-west-1 does not have"),
        "{}",
        report.stdout
    );
}
