//! The command line of the real binary: --version, check-config, status.

use std::process::Command;
use std::time::Duration;

use crate::support::{World, eventually, scale_up};

fn binary() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_k3s-autoscaler"));
    command
        .env_remove("K3S_AUTOSCALER_CONFIG")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing");
    command
}

#[test]
fn version_names_the_release() {
    let out = binary().arg("--version").output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("k3s-autoscaler {}", env!("CARGO_PKG_VERSION"))
    );
}

#[test]
fn check_config_prints_the_effective_config_redacted_or_every_problem_by_key() {
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "very-secret-token\n").unwrap();
    let good = format!(
        "cluster_id = \"prod\"\n[auth]\nbearer_token_file = \"{}\"\n[aws]\nregion = \"eu-west-1\"\ntable = \"t\"\n[pools.workers]\nmin = 1\nmax = 3\nlaunch_template = \"lt-1\"\n[pools.workers.subnets]\n\"eu-west-1a\" = \"subnet-a\"\n",
        token.display()
    );
    let path = dir.path().join("config.toml");
    std::fs::write(&path, &good).unwrap();
    let out = binary()
        .args(["--config", path.to_str().unwrap(), "check-config"])
        .env("K3S_AUTOSCALER__POOLS__WORKERS__MAX", "7")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("bearer_token = \"<redacted>\""), "{stdout}");
    assert!(!stdout.contains("very-secret-token"), "{stdout}");
    assert!(stdout.contains("max = 7"), "environment override applied: {stdout}");
    assert!(stdout.contains("drain_timeout = \"5m\""), "defaults shown: {stdout}");

    std::fs::write(
        &path,
        good.replace("min = 1", "min = 5").replace("\"eu-west-1a\" = \"subnet-a\"", "\"eu-west-1a\" = \"\""),
    )
    .unwrap();
    std::fs::remove_file(&token).unwrap();
    let out = binary().args(["--config", path.to_str().unwrap(), "check-config"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    for expected in [
        "pools.workers.min: 5 is above max 3",
        "pools.workers.subnets.eu-west-1a: no subnet for this availability zone",
        "auth.bearer_token_file: cannot read",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in {stderr}");
    }
    assert!(out.stdout.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_signals_and_the_last_decisions_with_reasons() {
    let world = World::new("status", |_| {}).await;
    let service = world.service().await;
    assert_eq!(service.post(&scale_up("fp-status")).await, 200);
    world.expect_instances(1, Duration::ZERO).await;
    eventually("op finished", Duration::from_secs(15), || async { world.op_finished().await.then_some(()) })
        .await;
    // The outcome is audited just after the save that clears the op.
    eventually("the decision and its outcome audited", Duration::from_secs(5), || async {
        (world.items("event#").await >= 2).then_some(())
    })
    .await;
    let config = world.prepared.1.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        binary().args(["--config", &config, "status", "--json"]).output().unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pool = &report[0];
    assert_eq!(pool["pool"], "workers");
    assert!(pool["operation"].is_null());
    assert_eq!(pool["last_scale"][0], "scale-up");
    assert_eq!(pool["signals"][0]["alertname"], "WorkerCpuHigh");
    let events: Vec<(String, String)> = pool["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["kind"].as_str().unwrap().to_string(), e["reason_label"].as_str().unwrap().to_string()))
        .collect();
    assert!(events.contains(&("decision".into(), "scale_up_signal".into())), "{events:?}");
    assert!(events.contains(&("outcome".into(), "succeeded".into())), "{events:?}");
}
