//! The notice poller on the test doubles: what is deleted and why, what stays in the queue
//! when the store is down and is handled on a later delivery, and repeats and a warning
//! before its rebalance through the queue.

use std::sync::Arc;

use super::{Disposition, NoticePoller};
use crate::adapters::kube::fake::FakeCluster;
use crate::adapters::sqs::fake::FakeNoticeQueue;
use crate::core::ec2_event::{REBALANCE_RECOMMENDATION, SPOT_INTERRUPTION};
use crate::core::interruption::InterruptKind;
use crate::service::tests::{Harness, harness_with};

fn event(detail_type: &str, instance_id: &str) -> String {
    serde_json::json!({
        "version": "0", "id": format!("e-{instance_id}"), "detail-type": detail_type,
        "source": "aws.ec2", "account": "123456789012", "time": "2026-11-24T08:00:00Z",
        "region": "us-east-1", "resources": [],
        "detail": {"instance-id": instance_id, "instance-action": "terminate"},
    })
    .to_string()
}

/// A spot worker i-a1 (node-i-a1) that EC2 marked for interruption, an empty queue and a
/// poller on it.
fn one_marked_spot_worker() -> (Harness, Arc<FakeCluster>, Arc<FakeNoticeQueue>, NoticePoller) {
    let (h, cluster) = harness_with(&[]);
    h.compute.add_spot_instance("i-a1", "us-east-1a", "workers");
    cluster.add_node("node-i-a1", "us-east-1a", "i-a1", true);
    h.compute.set_spot_status("i-a1", "marked-for-termination");
    let queue = Arc::new(FakeNoticeQueue::default());
    let poller = h.service.notice_poller(queue.clone());
    (h, cluster, queue, poller)
}

fn deleted(reasons: &[&'static str]) -> Vec<Disposition> {
    reasons.iter().copied().map(Disposition::Deleted).collect()
}

#[tokio::test]
async fn each_message_is_deleted_once_the_intake_answered_and_says_why() {
    let (h, cluster, queue, mut poller) = one_marked_spot_worker();

    queue.send(&event(SPOT_INTERRUPTION, "i-a1"));
    assert_eq!(poller.poll_once().await, deleted(&["handled"]));
    assert!(h.store.interruption("i-a1").is_some(), "the record is durable before the delete");
    assert!(cluster.node("node-i-a1").unwrap().unschedulable, "cordoned");

    queue.send(&event(SPOT_INTERRUPTION, "i-a1"));
    queue.send("{not json");
    queue.send(&event("EC2 Instance State-change Notification", "i-a1"));
    queue.send(&event(SPOT_INTERRUPTION, "i-other-cluster"));
    assert_eq!(poller.poll_once().await, deleted(&["duplicate", "malformed", "ignored", "ignored"]));
    assert_eq!(queue.remaining(), 0);
    let metrics = h.service.metrics().render();
    for series in [
        "k3s_autoscaler_notice_queue_received_total 5",
        "k3s_autoscaler_notice_queue_deleted_total{reason=\"malformed\"} 1",
        "k3s_autoscaler_notice_queue_deleted_total{reason=\"ignored\"} 2",
        "k3s_autoscaler_notice_queue_failed_total{stage=\"handle\"} 0",
    ] {
        assert!(metrics.contains(series), "{series} in\n{metrics}");
    }
}

#[tokio::test]
async fn a_message_the_store_could_not_take_stays_and_is_handled_on_its_next_delivery() {
    let (h, _, queue, mut poller) = one_marked_spot_worker();
    queue.send(&event(SPOT_INTERRUPTION, "i-a1"));

    h.store.set_down(true);
    assert_eq!(poller.poll_once().await, vec![Disposition::Kept("unavailable".into())]);
    assert_eq!((queue.remaining(), queue.deleted().len()), (1, 0), "not deleted");
    assert!(h.store.interruption("i-a1").is_none());

    h.store.set_down(false);
    assert_eq!(poller.poll_once().await, deleted(&["handled"]));
    assert_eq!(queue.remaining(), 0);
    assert!(h.store.interruption("i-a1").is_some());
    let metrics = h.service.metrics().render();
    assert!(metrics.contains("k3s_autoscaler_notice_queue_failed_total{stage=\"handle\"} 1"), "{metrics}");
}

#[tokio::test]
async fn a_warning_before_its_rebalance_and_repeats_in_one_batch_leave_one_spot_record() {
    let (h, _, queue, mut poller) = one_marked_spot_worker();

    queue.send(&event(SPOT_INTERRUPTION, "i-a1"));
    assert_eq!(poller.poll_once().await, deleted(&["handled"]));
    queue.send(&event(REBALANCE_RECOMMENDATION, "i-a1"));
    queue.send(&event(SPOT_INTERRUPTION, "i-a1"));
    assert_eq!(poller.poll_once().await, deleted(&["duplicate", "duplicate"]));
    assert_eq!(
        h.store.interruption("i-a1").unwrap().kind,
        InterruptKind::Spot,
        "the late rebalance changed nothing"
    );
    assert_eq!(h.compute.launch_count(), 0, "the intake only records; the interrupt worker replaces");
}
