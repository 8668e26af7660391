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
    // The outcome is audited just after the state that ends the op is saved, and each record
    // is counted once CloudWatch has answered: wait for each of those events, never assume it
    // (a run on a loaded machine failed reading them at once).
    let audit = eventually("the decision and its outcome audited", Duration::from_secs(10), || async {
        let audit = world.items("event#").await;
        (audit >= 2).then_some(audit)
    })
    .await;
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
    for line in [
        "k3s_autoscaler_cloudwatch_records_total{outcome=\"sent\"} 2",
        "k3s_autoscaler_lease_held{pool=\"workers\"} 0",
    ] {
        service.metric_line(line, Duration::from_secs(10)).await;
    }
    // The next reconcile of the idle pool counts the new worker by zone and market.
    let spread = "k3s_autoscaler_pool_nodes{pool=\"workers\",az=\"us-east-1a\",capacity_type=\"spot\"} 1";
    eventually("pool_nodes by zone", Duration::from_secs(10), || async {
        service.metrics().await.contains(spread).then_some(())
    })
    .await;
    let metrics = service.metrics().await;
    let empty = "k3s_autoscaler_pool_nodes{pool=\"workers\",az=\"us-east-1b\",capacity_type=\"spot\"} 0";
    assert!(metrics.contains(empty), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_log_group_is_counted_and_never_holds_up_scaling() {
    let world = World::new("cwfail", |c| {
        c.extra_top = "[cloudwatch]\nlog_group = \"/does/not/exist\"\nlog_stream = \"s\"\n".into()
    })
    .await;
    let service = world.service().await;
    assert_eq!(service.post(&scale_up("fp-cwfail")).await, 200);
    eventually("op finished", Duration::from_secs(20), || async {
        (world.instances().await.len() == 1 && world.op_finished().await).then_some(())
    })
    .await;
    // Both records of the scale-up (decision and outcome) fail, and none is sent.
    let failed = "k3s_autoscaler_cloudwatch_records_total{outcome=\"failed\"}";
    eventually("failures counted", Duration::from_secs(10), || async {
        (service.metric(failed).await >= Some(2.0)).then_some(())
    })
    .await;
    let sent = "k3s_autoscaler_cloudwatch_records_total{outcome=\"sent\"}";
    assert_eq!(service.metric(sent).await, Some(0.0));
}
