//! CloudWatch Logs on moto through the real binary: the service creates its stream and every
//! scaling event of a scale-up (decision and outcome) arrives as one JSON record.

use std::time::Duration;

use crate::interruption::{LOG_GROUP, logs, records};
use crate::support::{World, eventually, scale_up};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_scaling_event_of_a_scale_up_reaches_cloudwatch_logs() {
    let stream = "scale-up";
    let world = World::new("cwlogs", |c| {
        c.extra_top = format!("[cloudwatch]\nlog_group = \"{LOG_GROUP}\"\nlog_stream = \"{stream}\"\n")
    })
    .await;
    let logs = logs(&world).await;
    let service = world.service().await;
    assert_eq!(service.post(&scale_up("fp-cw")).await, 200);
    eventually("op finished", Duration::from_secs(20), || async {
        (world.instances().await.len() == 1 && world.op_finished().await).then_some(())
    })
    .await;
    let audit = world.items("event#").await;
    let records = eventually("records for every audit event", Duration::from_secs(10), || async {
        let records = records(&logs, stream).await;
        (records.len() >= audit).then_some(records)
    })
    .await;
    let seen: Vec<(&str, &str)> = records
        .iter()
        .map(|r| (r["kind"].as_str().unwrap_or(""), r["reason_label"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(seen, [("decision", "scale_up_signal"), ("outcome", "succeeded")], "{records:?}");
    assert_eq!(records.len(), audit);
    let metrics = service.metrics().await;
    assert!(metrics.contains("k3s_autoscaler_cloudwatch_records_total{outcome=\"sent\"} 2"), "{metrics}");
}
