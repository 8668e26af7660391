//! EC2 notices through SQS, end to end through the real binary: EC2's PutEvents on moto's
//! EventBridge → the stack's rule → the queue → the service's poller → an interruption record,
//! a cordon, and the message deleted. A notice the service cannot record (DynamoDB down) stays
//! in the queue and is handled on a later delivery; repeats, a rebalance after its warning, a
//! body that is no EC2 event and another cluster's instance are deleted without effect.

use std::time::Duration;

use crate::support::joiner::node_name;
use crate::support::kube_api::{Budget, pdb, pod};
use crate::support::notices::{NoticeQueue, queue_config};
use crate::support::service::Service;
use crate::support::{World, eventually};

const SPOT: &str = "EC2 Spot Instance Interruption Warning";
const REBALANCE: &str = "EC2 Instance Rebalance Recommendation";

/// A world whose service polls the queue `notices-<cluster>`, with one managed spot worker
/// (joined) that EC2 has marked for interruption.
async fn world_with_queue(cluster: &str) -> (World, NoticeQueue, String) {
    let name = format!("notices-{cluster}");
    let world = World::new(cluster, |c| c.extra_top = queue_config(&c.endpoint, &name)).await;
    let queue = NoticeQueue::create(&world.moto_url, &name).await;
    let (_, subnet_a) = &world.fixtures.subnets[0];
    let doomed = world.aws.seed_spot_instance(cluster, subnet_a).await;
    eventually("the worker joined", Duration::from_secs(20), || async {
        (world.kube.nodes().len() == 1).then_some(())
    })
    .await;
    world.proxy.spot_request_status(&doomed, "marked-for-termination");
    (world, queue, doomed)
}

async fn deleted(service: &Service, reason: &str) -> f64 {
    let series = format!("k3s_autoscaler_notice_queue_deleted_total{{reason=\"{reason}\"}}");
    service.metric(&series).await.unwrap_or(0.0)
}

async fn wait_deleted(service: &Service, reason: &str, n: f64) {
    eventually(&format!("{n} deleted as {reason}"), Duration::from_secs(30), || async {
        (deleted(service, reason).await >= n).then_some(())
    })
    .await;
}

fn cordoned(world: &World, instance: &str) -> bool {
    let node = world.kube.node(&node_name(instance));
    node.and_then(|n| n.spec).and_then(|s| s.unschedulable) == Some(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eventbridge_to_the_queue_to_the_service_records_cordons_and_deletes_once() {
    let (world, queue, doomed) = world_with_queue("sqs-e2e").await;
    // A pod a PDB keeps in place holds the drain (up to the 2-minute deadline): the instance
    // stays, so the later copies meet its open record rather than a gone instance.
    let quorum = pod("shop", "quorum").on_node(&node_name(&doomed)).owned_by("ReplicaSet", "quorum");
    world.kube.add_pod(quorum.label("app", "quorum").grace_period(0).build());
    world.kube.add_pdb(pdb("shop", "quorum", &[("app", "quorum")], Budget::MinAvailable(1)));
    let (_, subnet_b) = &world.fixtures.subnets[1];
    let stranger = world.aws.seed_spot_instance("another-cluster", subnet_b).await;
    world.proxy.spot_request_status(&stranger, "marked-for-termination");
    let service = world.service().await;

    queue.put_ec2_event(SPOT, &doomed).await;
    wait_deleted(&service, "handled", 1.0).await;
    assert_eq!(world.items("interrupt#").await, 1, "the record is durable");
    assert!(cordoned(&world, &doomed), "cordoned");
    eventually("the queue empty", Duration::from_secs(10), || async {
        (queue.depth().await == 0).then_some(())
    })
    .await;

    // Out of order and repeated: the rebalance after its warning, and the warning again
    // (SQS delivers at least once). Then a body that is no EC2 event, and a warning for an
    // instance of another cluster.
    queue.put_ec2_event(REBALANCE, &doomed).await;
    queue.put_ec2_event(SPOT, &doomed).await;
    queue.send_raw("{\"not\": \"an EventBridge event\"}").await;
    queue.put_ec2_event(SPOT, &stranger).await;
    wait_deleted(&service, "duplicate", 2.0).await;
    wait_deleted(&service, "malformed", 1.0).await;
    wait_deleted(&service, "ignored", 1.0).await;
    eventually("the queue empty", Duration::from_secs(10), || async {
        (queue.depth().await == 0).then_some(())
    })
    .await;
    let records = world.aws.items(&world.config.table, &world.config.cluster_id, "interrupt#").await;
    assert_eq!(records.len(), 1, "one record for the instance, none for the stranger");
    let kind = records[0].get("record").and_then(|r| r.as_m().ok()).and_then(|r| r.get("kind"));
    let kind = kind.and_then(|k| k.as_s().ok()).map(String::as_str);
    assert_eq!(kind, Some("spot"), "the late rebalance did not turn the spot record back: {records:?}");
    assert!(world.aws.is_live(&stranger).await, "another cluster's instance untouched");
    assert_eq!(deleted(&service, "handled").await, 1.0, "handled once");
    let metrics = service.metrics().await;
    for line in [
        "k3s_autoscaler_notice_queue_received_total 5",
        "k3s_autoscaler_notice_queue_failed_total{stage=\"handle\"} 0",
        "k3s_autoscaler_notice_queue_failed_total{stage=\"delete\"} 0",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_notice_the_service_cannot_record_stays_in_the_queue_and_is_handled_later() {
    let (world, queue, doomed) = world_with_queue("sqs-outage").await;
    let service = world.service().await;
    world.proxy.dynamodb_down(true);

    queue.put_ec2_event(SPOT, &doomed).await;
    eventually("a failed handling", Duration::from_secs(30), || async {
        let failed = service.metric("k3s_autoscaler_notice_queue_failed_total{stage=\"handle\"}").await?;
        (failed >= 1.0).then_some(())
    })
    .await;
    assert_eq!(queue.depth().await, 1, "not deleted");
    assert_eq!(deleted(&service, "handled").await, 0.0);
    assert!(!cordoned(&world, &doomed), "nothing acted on before the record exists");

    world.proxy.dynamodb_down(false);
    wait_deleted(&service, "handled", 1.0).await;
    assert_eq!(world.items("interrupt#").await, 1);
    assert!(cordoned(&world, &doomed));
    eventually("the queue empty", Duration::from_secs(10), || async {
        (queue.depth().await == 0).then_some(())
    })
    .await;
}
