//! DynamoDB down → 503 (Alertmanager retries) and nothing launched; back up → the retry
//! succeeds and the launch follows.

use std::time::Duration;

use crate::support::{World, eventually, scale_up};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn store_outage_answers_503_then_the_retry_succeeds() {
    let world = World::new("outage", |_| {}).await;
    let service = world.service().await;
    world.proxy.dynamodb_down(true);
    assert_eq!(service.post(&scale_up("fp-outage")).await, 503);
    // Readiness comes from a background check (every `server.readiness_interval`, 5 s), not
    // from a store call per probe: not ready from the next check on.
    eventually("not ready while the store is down", Duration::from_secs(10), || async {
        let ready = reqwest::get(format!("{}/readyz", service.url)).await.ok()?.status().as_u16();
        (ready == 503).then_some(())
    })
    .await;
    // The sweeps keep trying and fail on the store: the positive sign that the service looked
    // again while it was down.
    eventually("a reconcile failing on the store", Duration::from_secs(10), || async {
        let metrics = service.metrics().await;
        let failures = metrics
            .lines()
            .filter(|l| {
                l.starts_with("k3s_autoscaler_aws_errors_total{") && l.contains("code=\"unavailable\"")
            })
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum::<f64>();
        (failures >= 2.0).then_some(())
    })
    .await;
    assert!(world.instances().await.is_empty(), "nothing launched while the store is down");
    world.proxy.dynamodb_down(false);
    assert_eq!(service.post(&scale_up("fp-outage")).await, 200, "Alertmanager's retry");
    world.expect_instances(1, Duration::from_secs(1)).await;
    let metrics = service.metrics().await;
    assert!(
        metrics.contains("k3s_autoscaler_webhook_requests_total{outcome=\"unavailable\"} 1"),
        "{metrics}"
    );
}
