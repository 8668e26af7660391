//! With the real Alertmanager: while DynamoDB is down the webhook answers 503 and nothing
//! launches; Alertmanager retries on its own, and once DynamoDB is back the launch follows.

use std::time::Duration;

use crate::support::alertmanager::Alertmanager;
use crate::support::service::TOKEN;
use crate::support::{World, eventually};

fn counter(metrics: &str, outcome: &str) -> u64 {
    let prefix = format!("k3s_autoscaler_webhook_requests_total{{outcome=\"{outcome}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alertmanager_retries_through_a_store_outage_and_the_launch_follows() {
    let world = World::new("amretry", |_| {}).await;
    let service = world.service().await;
    let am = Alertmanager::start(&format!("{}/v1/alerts", service.url), TOKEN).await;
    world.proxy.dynamodb_down(true);
    am.fire(
        serde_json::json!({"alertname": "K3sWorkersCPUHigh", "autoscaler": "scale-up", "pool": "workers"}),
        "CPU 85%",
    )
    .await;
    eventually("Alertmanager told to retry", Duration::from_secs(30), || async {
        (counter(&service.metrics().await, "unavailable") >= 2).then_some(())
    })
    .await;
    assert!(world.instances().await.is_empty(), "nothing launched while the store is down");
    assert_eq!(counter(&service.metrics().await, "accepted"), 0);
    world.proxy.dynamodb_down(false);
    world.expect_instances(1, Duration::from_secs(2)).await;
    let metrics = service.metrics().await;
    assert_eq!(counter(&metrics, "accepted"), 1, "Alertmanager's retry got through once");
    println!("503s before success: {}", counter(&metrics, "unavailable"));
}
