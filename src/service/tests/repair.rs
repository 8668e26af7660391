//! Node repair through the service (on the FakeCluster double): replace, then drain and
//! terminate a NotReady node; report one with local data; nothing during an outage.

use std::time::Duration;

use super::{Harness, harness_with};
use crate::adapters::Clock;
use crate::adapters::kube::fake::FakeCluster;
use crate::core::drainability::PodFacts;
use crate::core::time::Timestamp;
use crate::metrics::PoolLabels;
use crate::service::ReconcileOutcome;

const QUIET: Duration = Duration::from_secs(61);

fn web(name: &str) -> PodFacts {
    PodFacts {
        namespace: "shop".into(),
        name: name.into(),
        controller_kind: Some("ReplicaSet".into()),
        has_pdb: true,
        ..PodFacts::default()
    }
}

/// Workers i-0..i-n (zone a), the first `dead` of them NotReady for 20 minutes.
fn pool(h: &Harness, cluster: &FakeCluster, n: usize, dead: usize) {
    let since = Timestamp::from_millis(h.clock.now().as_millis() - 20 * 60_000);
    for i in 0..n {
        let id = format!("i-{i}");
        h.compute.add_instance(&id, "us-east-1a", "workers");
        cluster.add_node(&format!("node-{id}"), "us-east-1a", &id, i >= dead);
        if i < dead {
            let mut nodes = cluster.nodes.lock().unwrap();
            let node = nodes.iter_mut().find(|n| n.name == format!("node-{id}")).unwrap();
            node.ready_since = Some(since);
        }
    }
}

fn decisions(h: &Harness) -> Vec<String> {
    h.store.events().iter().filter(|e| e.kind == "decision").map(|e| e.reason_label.clone()).collect()
}

#[tokio::test]
async fn a_not_ready_node_is_replaced_then_drained_and_terminated() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster, 3, 1);
    cluster.add_pod("node-i-0", web("stuck"));
    *cluster.pdb_budget.lock().unwrap() = Some(0);
    h.reconcile().await;
    assert_eq!(h.compute.launch_count(), 1, "the replacement is launched first");
    assert_eq!(decisions(&h), ["repair_launch"]);
    let new = {
        let mut instances = h.compute.instances.lock().unwrap();
        let new = instances.iter_mut().find(|i| i.op_id.is_some()).expect("the replacement");
        new.launched_at = Timestamp::from_millis(h.clock.now().as_millis());
        new.clone()
    };
    cluster.add_node("node-new", &new.az, &new.instance_id, true);
    h.reconcile().await; // the launch completes
    assert!(h.store.record("workers").state.op.is_none());
    h.clock.advance(QUIET);
    h.reconcile().await;
    assert_eq!(decisions(&h), ["repair_launch", "repair_drain"]);
    assert!(cluster.node("node-i-0").unwrap().unschedulable, "cordoned");
    assert!(
        h.compute.list_pool_now().iter().any(|i| i.instance_id == "i-0"),
        "not terminated before the timeout"
    );
    h.clock.advance(Duration::from_secs(301));
    h.reconcile().await;
    assert!(!h.compute.list_pool_now().iter().any(|i| i.instance_id == "i-0"), "terminated at drain_timeout");
    assert!(cluster.deleted_nodes.lock().unwrap().contains(&"node-i-0".to_string()));
    assert_eq!(h.compute.launch_count(), 1);
}

#[tokio::test]
async fn a_not_ready_node_with_local_data_is_reported_not_repaired() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster, 3, 1);
    cluster.add_pod("node-i-0", PodFacts { node_local_volume: true, ..web("db-0") });
    assert_eq!(h.reconcile().await, ReconcileOutcome::Held("repair_blocked_local_data"));
    h.clock.advance(QUIET);
    assert_eq!(h.reconcile().await, ReconcileOutcome::Held("repair_blocked_local_data"));
    assert_eq!(h.compute.launch_count(), 0);
    assert!(!cluster.node("node-i-0").unwrap().unschedulable);
    let labels = PoolLabels { pool: "workers".into() };
    assert_eq!(h.service.metrics().repair_blocked_nodes.get_or_create(&labels).get(), 1);
    assert_eq!(cluster.event_reasons(), ["RepairBlocked"], "one event, not one per sweep");
}

#[tokio::test]
async fn three_of_four_not_ready_repairs_nothing() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster, 4, 3);
    assert_eq!(h.reconcile().await, ReconcileOutcome::Held("repair_too_many_unready"));
    assert_eq!(h.compute.launch_count(), 0);
    assert!(cluster.nodes.lock().unwrap().iter().all(|n| !n.unschedulable));
    assert_eq!(decisions(&h), ["repair_too_many_unready"]);
}
