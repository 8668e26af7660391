//! `dry_run = true` on moto + the fake Kubernetes API: every decision is computed and recorded
//! as "would have", and nothing is written to EC2 or Kubernetes — checked on both wires.

use std::process::Command;
use std::time::Duration;

use crate::interruption::{kube_writes_since, post_event, spot_warning};
use crate::support::{World, eventually, scale_up};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dry_run_writes_nothing_to_ec2_or_kubernetes_while_status_shows_the_would_have_decisions() {
    let world = World::new("dryrun", |c| c.extra_top = "dry_run = true".into()).await;
    let (_, subnet_a) = &world.fixtures.subnets[0];
    let worker = world.aws.seed_spot_instance("dryrun", subnet_a).await;
    eventually("seeded node", Duration::from_secs(20), || async {
        (world.kube.nodes().len() == 1).then_some(())
    })
    .await;
    let service = world.service().await;
    world.proxy.reset_calls();
    world.proxy.spot_request_status(&worker, "marked-for-termination");
    let requests_before = world.kube.requests().len();

    assert_eq!(service.post(&scale_up("fp-dry")).await, 200);
    let (status, answer) = post_event(&service, spot_warning(&worker).to_string().as_bytes(), true).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("dry_run")), "{answer}");
    eventually("would-have launch recorded", Duration::from_secs(10), || async {
        (world.items("event#").await >= 2).then_some(())
    })
    .await;
    // Several sweeps pass (each reads the pool's signals): still nothing.
    world.sweeps_pass(3).await;

    for api in ["RunInstances", "CreateFleet", "TerminateInstances", "CreateTags"] {
        assert_eq!(world.proxy.count(api), 0, "{api}: {:?}", world.proxy.histogram());
    }
    let writes = kube_writes_since(&world, requests_before);
    assert!(writes.is_empty(), "no Kubernetes writes (patch, eviction, delete, event): {writes:?}");
    assert!(world.kube.evictions().is_empty());
    assert_eq!(world.instances().await.len(), 1);
    assert_eq!(world.items("interrupt#").await, 0, "no interruption is handled in dry-run");

    let config = world.prepared.1.to_str().unwrap().to_string();
    let run = |json: bool| {
        let config = config.clone();
        tokio::task::spawn_blocking(move || {
            let mut command = Command::new(env!("CARGO_BIN_EXE_k3s-autoscaler"));
            command
                .env("AWS_ACCESS_KEY_ID", "testing")
                .env("AWS_SECRET_ACCESS_KEY", "testing")
                .args(["--config", &config, "status"]);
            if json {
                command.arg("--json");
            }
            command.output().unwrap()
        })
    };
    let out = run(true).await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let events = report[0]["events"].as_array().unwrap();
    let would: Vec<(String, String)> = events
        .iter()
        .filter(|e| e["dry_run"] == true)
        .map(|e| (e["action"].as_str().unwrap().to_string(), e["reason_label"].as_str().unwrap().to_string()))
        .collect();
    assert!(would.contains(&("launch".into(), "scale_up_signal".into())), "{would:?}");
    assert!(would.contains(&("interrupt".into(), "spot_interruption".into())), "{would:?}");
    assert!(events.iter().all(|e| e["dry_run"] == true), "nothing real happened: {events:?}");
    let text = String::from_utf8(run(false).await.unwrap().stdout).unwrap();
    assert!(text.contains("(dry-run: would have)"), "{text}");
}
