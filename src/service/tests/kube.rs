//! Service behaviour with the Kubernetes side (on the FakeCluster double): readiness before a
//! launch is done, join timeout, drain to termination, aborts, never-joined cleanup.

use std::time::Duration;

use super::{Harness, firing, harness_with};
use crate::adapters::Clock;
use crate::adapters::kube::fake::FakeCluster;
use crate::core::drainability::PodFacts;
use crate::core::model::{Direction, LaunchPhase, Market, OperationKind};
use crate::service::ReconcileOutcome;

fn web(name: &str) -> PodFacts {
    PodFacts {
        namespace: "shop".into(),
        name: name.into(),
        controller_kind: Some("ReplicaSet".into()),
        ..PodFacts::default()
    }
}

fn daemon(name: &str) -> PodFacts {
    PodFacts {
        namespace: "kube-system".into(),
        name: name.into(),
        controller_kind: Some("DaemonSet".into()),
        ..PodFacts::default()
    }
}

/// Three Ready workers: i-a1 (a), i-b1 and i-b2 (b), each with a DaemonSet pod.
fn three_workers(h: &Harness, cluster: &FakeCluster) {
    for (id, az) in [("i-a1", "us-east-1a"), ("i-b1", "us-east-1b"), ("i-b2", "us-east-1b")] {
        h.compute.add_instance(id, az, "workers");
        cluster.add_node(&format!("node-{id}"), az, id, true);
        cluster.add_pod(&format!("node-{id}"), daemon(&format!("flannel-{id}")));
    }
}

/// Two pods under one budget that allows a single disruption on every node: the first
/// eviction uses the budget up, so the drain stays in its evicting phase.
fn budgeted_pairs(cluster: &FakeCluster) {
    for node in ["node-i-a1", "node-i-b1", "node-i-b2"] {
        for i in 0..2 {
            cluster.add_pod(node, PodFacts { has_pdb: true, ..web(&format!("db-{i}-{node}")) });
        }
    }
    *cluster.pdb_budget.lock().unwrap() = Some(1);
}

fn cordoned(cluster: &FakeCluster) -> String {
    cluster
        .nodes
        .lock()
        .unwrap()
        .iter()
        .find(|n| n.unschedulable)
        .map(|n| n.name.clone())
        .expect("a cordoned node")
}

#[tokio::test]
async fn launch_is_in_flight_until_the_node_is_ready() {
    let (h, cluster) = harness_with(&[]);
    h.service.accept(firing(Direction::Up, "fp", 1)).await.unwrap();
    h.reconcile().await;
    let op = h.store.record("workers").state.op.expect("still in flight");
    let OperationKind::Launch(launch) = &op.kind else { panic!() };
    assert_eq!(launch.phase, LaunchPhase::Launched);
    let instance = launch.instances[0].clone();
    let writes = h.store.writes.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        h.reconcile().await,
        ReconcileOutcome::Held("operation_in_flight"),
        "not Ready yet: keeps waiting"
    );
    assert_eq!(h.store.writes.load(std::sync::atomic::Ordering::SeqCst), writes, "waiting costs no writes");
    assert!(h.store.record("workers").state.op.is_some());
    cluster.add_node("node-new", &instance.az, &instance.instance_id, false);
    h.reconcile().await;
    assert!(h.store.record("workers").state.op.is_some(), "registered but NotReady");
    cluster.nodes.lock().unwrap()[0].ready = true;
    h.reconcile().await;
    let record = h.store.record("workers");
    assert!(record.state.op.is_none());
    assert_eq!(record.state.last_scale.unwrap().direction, Direction::Up);
    assert_eq!(cluster.event_reasons(), vec!["ScaleUpLaunched", "NodeJoined"]);
    assert_eq!(h.compute.launch_count(), 1);
}

#[tokio::test]
async fn node_that_never_joins_is_terminated_at_the_join_timeout_and_its_market_backed_off() {
    let (h, cluster) = harness_with(&[("K3S_AUTOSCALER__POOLS__WORKERS__JOIN_TIMEOUT", "2m")]);
    h.service.accept(firing(Direction::Up, "fp", 1)).await.unwrap();
    h.reconcile().await;
    h.clock.advance(Duration::from_secs(119));
    h.reconcile().await;
    assert!(h.store.record("workers").state.op.is_some());
    h.clock.advance(Duration::from_secs(2));
    h.reconcile().await;
    let record = h.store.record("workers");
    assert!(record.state.op.is_none());
    assert!(h.compute.list_pool_now().is_empty(), "the instance was terminated");
    assert_eq!(
        (record.state.backoffs[0].az.as_str(), record.state.backoffs[0].market),
        ("us-east-1a", Market::Spot)
    );
    assert!(h.store.events().iter().any(|e| e.reason_label == "join_timeout"));
    assert!(cluster.event_reasons().is_empty(), "no node registered, so no node to put events on");
}

/// Issue 15: a pool of several instance types with `[pools.workers.prices]` drains its most
/// expensive safe node, read from EC2's instance type, even when it runs more pods.
#[tokio::test]
async fn a_mixed_type_pool_drains_its_most_expensive_node_first() {
    let prices = r#"{ "t3.small" = { on_demand = 0.0208 }, "m7i.large" = { on_demand = 0.1008 } }"#;
    let (h, cluster) = harness_with(&[("K3S_AUTOSCALER__POOLS__WORKERS__PRICES", prices)]);
    three_workers(&h, &cluster);
    for instance in h.compute.instances.lock().unwrap().iter_mut() {
        let large = instance.instance_id == "i-b1";
        instance.instance_type = Some(if large { "m7i.large" } else { "t3.small" }.into());
    }
    for pod in ["web-1", "web-2", "web-3"] {
        cluster.add_pod("node-i-b1", web(pod));
    }
    cluster.add_pod("node-i-b2", web("web-4"));
    h.service.accept(firing(Direction::Down, "fp-down", 1)).await.unwrap();
    assert!(matches!(h.reconcile().await, ReconcileOutcome::Acted { .. }));
    assert!(cluster.node("node-i-b1").unwrap().unschedulable, "the m7i.large node, despite its 3 pods");
    assert!(!cluster.node("node-i-b2").unwrap().unschedulable);
}

#[tokio::test]
async fn scale_down_drains_the_node_then_terminates_and_deletes_it() {
    let (h, cluster) = harness_with(&[]);
    three_workers(&h, &cluster);
    cluster.add_pod("node-i-b2", web("web-1"));
    cluster.add_pod("node-i-b2", web("web-2"));
    cluster.add_pod("node-i-b1", web("web-3"));
    cluster.add_pod("node-i-b1", web("web-4"));
    cluster.add_pod("node-i-b1", web("web-5"));
    h.service.accept(firing(Direction::Down, "fp-down", 1)).await.unwrap();
    assert!(matches!(h.reconcile().await, ReconcileOutcome::Acted { .. }));
    // Zone b has most workers; i-b2 has fewer pods.
    assert!(cluster.node("node-i-b2").unwrap().unschedulable, "cordoned");
    assert_eq!(cluster.evictions.lock().unwrap().clone(), vec!["shop/web-1", "shop/web-2"]);
    assert_eq!(h.compute.list_pool_now().len(), 3, "nothing terminated while pods were there");
    h.reconcile().await;
    assert!(h.store.record("workers").state.op.is_none());
    assert!(!h.compute.list_pool_now().iter().any(|i| i.instance_id == "i-b2"), "instance terminated");
    assert_eq!(cluster.deleted_nodes.lock().unwrap().clone(), vec!["node-i-b2"]);
    assert!(
        !cluster.evictions.lock().unwrap().iter().any(|e| e.contains("flannel")),
        "DaemonSet pods untouched"
    );
    assert_eq!(cluster.event_reasons(), vec!["DrainStarted", "DrainCompleted", "NodeRemoved"]);
    assert!(h.store.events().iter().any(|e| e.action == "drain" && e.reason_label == "succeeded"));
}

#[tokio::test]
async fn pods_inside_their_grace_period_are_not_evicted_again() {
    let (h, cluster) = harness_with(&[]);
    three_workers(&h, &cluster);
    for node in ["node-i-a1", "node-i-b1", "node-i-b2"] {
        cluster.add_pod(node, PodFacts { terminating: true, ..web(&format!("leaving-{node}")) });
    }
    h.service.accept(firing(Direction::Down, "fp-down", 1)).await.unwrap();
    h.reconcile().await;
    h.reconcile().await;
    assert!(cluster.evictions.lock().unwrap().is_empty(), "waiting out the grace period");
    assert_eq!(h.compute.list_pool_now().len(), 3, "not empty yet: nothing terminated");
}

#[tokio::test]
async fn pdb_that_never_allows_disruption_aborts_at_the_timeout_and_terminates_nothing() {
    let (h, cluster) = harness_with(&[("K3S_AUTOSCALER__POOLS__WORKERS__DRAIN_TIMEOUT", "1m")]);
    three_workers(&h, &cluster);
    budgeted_pairs(&cluster);
    h.service.accept(firing(Direction::Down, "fp-down", 1)).await.unwrap();
    h.reconcile().await;
    let chosen = cordoned(&cluster);
    h.clock.advance(Duration::from_secs(30));
    h.reconcile().await;
    assert!(cluster.node(&chosen).unwrap().unschedulable, "still draining before the timeout");
    h.clock.advance(Duration::from_secs(31));
    h.reconcile().await;
    assert!(!cluster.node(&chosen).unwrap().unschedulable, "uncordoned");
    assert_eq!(h.compute.list_pool_now().len(), 3, "nothing terminated");
    assert_eq!(cluster.pods.lock().unwrap()[&chosen].len(), 2, "the DaemonSet pod and the refused pod stay");
    assert!(cluster.event_reasons().contains(&"DrainAborted"));
    assert!(h.store.events().iter().any(|e| e.action == "drain" && e.reason_label == "aborted"));
    assert!(h.store.record("workers").state.op.is_none());
}

#[tokio::test]
async fn a_pod_that_must_not_be_evicted_arriving_mid_drain_aborts_it() {
    let (h, cluster) = harness_with(&[]);
    three_workers(&h, &cluster);
    budgeted_pairs(&cluster);
    h.service.accept(firing(Direction::Down, "fp-down", 1)).await.unwrap();
    h.reconcile().await;
    let chosen = cordoned(&cluster);
    cluster.add_pod(&chosen, PodFacts { controller_kind: None, ..web("bare") });
    h.reconcile().await;
    assert!(!cluster.evictions.lock().unwrap().iter().any(|e| e.ends_with("/bare")));
    assert!(!cluster.node(&chosen).unwrap().unschedulable);
    assert_eq!(h.compute.list_pool_now().len(), 3);
}

#[tokio::test]
async fn nodes_with_blockers_are_kept_and_reported() {
    let (h, cluster) = harness_with(&[]);
    three_workers(&h, &cluster);
    for node in ["node-i-a1", "node-i-b1", "node-i-b2"] {
        cluster.add_pod(node, PodFacts { local_storage: true, ..web(&format!("cache-{node}")) });
    }
    h.service.accept(firing(Direction::Down, "fp-down", 1)).await.unwrap();
    assert_eq!(h.reconcile().await, ReconcileOutcome::Held("no_drain_candidate"));
    assert_eq!(h.reconcile().await, ReconcileOutcome::Held("no_drain_candidate"));
    assert!(cluster.evictions.lock().unwrap().is_empty());
    let holds: Vec<String> = h
        .store
        .events()
        .iter()
        .filter(|e| e.reason_label == "no_drain_candidate")
        .map(|e| e.reason.clone())
        .collect();
    assert_eq!(holds.len(), 1, "recorded once, not on every pass: {holds:?}");
    assert!(holds[0].contains("3 pod with local storage"), "{holds:?}");
    let metrics = h.service.metrics().render();
    assert!(
        metrics.contains(
            "k3s_autoscaler_unremovable_nodes{pool=\"workers\",reason=\"pod_with_local_storage\"} 3"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn instances_that_never_joined_are_cleaned_up_after_the_join_timeout() {
    let (h, cluster) = harness_with(&[("K3S_AUTOSCALER__POOLS__WORKERS__JOIN_TIMEOUT", "5m")]);
    three_workers(&h, &cluster);
    h.compute.add_instance("i-orphan", "us-east-1a", "workers");
    // add_instance launches at t=0; the harness clock is far past 5 minutes.
    h.reconcile().await;
    let ids: Vec<String> = h.compute.list_pool_now().into_iter().map(|i| i.instance_id).collect();
    assert_eq!(ids, vec!["i-a1", "i-b1", "i-b2"]);
    assert!(h.store.events().iter().any(|e| e.reason_label == "never_joined"));
}

/// Starts a scale-down held by a PDB (one refused pod stays on the chosen node) and returns
/// the cordoned node.
async fn drain_held_by_a_pdb(h: &Harness, cluster: &FakeCluster) -> String {
    three_workers(h, cluster);
    budgeted_pairs(cluster);
    h.service.accept(firing(Direction::Down, "fp-down", 1)).await.unwrap();
    h.reconcile().await;
    cordoned(cluster)
}

#[tokio::test]
async fn a_drained_node_deleted_with_pods_still_bound_frees_the_pool_and_terminates_nothing() {
    let (h, cluster) = harness_with(&[]);
    let chosen = drain_held_by_a_pdb(&h, &cluster).await;
    // `kubectl delete node`: the pods stay bound to its name until pod GC.
    cluster.nodes.lock().unwrap().retain(|n| n.name != chosen);
    assert_eq!(h.reconcile().await, ReconcileOutcome::Progressed);
    assert!(h.store.record("workers").state.op.is_none(), "the pool is free after one pass");
    assert_eq!(h.compute.list_pool_now().len(), 3, "pods still bound: nothing terminated");
    let outcome = h.store.events().into_iter().find(|e| e.kind == "outcome").expect("an outcome record");
    assert_eq!(outcome.reason_label, "node_vanished");
    assert!(outcome.reason.contains("nothing to uncordon") && outcome.reason.contains("left running"));
}

#[tokio::test]
async fn a_drained_node_deleted_with_no_pod_left_is_terminated_and_the_pool_freed() {
    let (h, cluster) = harness_with(&[]);
    let chosen = drain_held_by_a_pdb(&h, &cluster).await;
    cluster.nodes.lock().unwrap().retain(|n| n.name != chosen);
    cluster.pods.lock().unwrap().get_mut(&chosen).unwrap().retain(|p| !p.must_move());
    h.reconcile().await;
    assert!(h.store.record("workers").state.op.is_none());
    assert_eq!(h.compute.list_pool_now().len(), 2, "nothing bound to it: terminated");
    let outcome = h.store.events().into_iter().find(|e| e.kind == "outcome").expect("an outcome record");
    assert_eq!(outcome.reason_label, "succeeded");
    assert!(outcome.reason.contains("deleted outside the autoscaler"), "{}", outcome.reason);
}

#[tokio::test]
async fn a_terminate_whose_save_failed_is_never_recorded_as_nothing_terminated() {
    let (h, cluster) = harness_with(&[("K3S_AUTOSCALER__POOLS__WORKERS__DRAIN_TIMEOUT", "1m")]);
    three_workers(&h, &cluster);
    for node in ["node-i-a1", "node-i-b1", "node-i-b2"] {
        cluster.add_pod(node, web(&format!("web-{node}")));
    }
    h.service.accept(firing(Direction::Down, "fp-down", 1)).await.unwrap();
    h.reconcile().await;
    let store = h.store.clone();
    *h.compute.after_terminate.lock().unwrap() = Some(Box::new(move || store.set_down(true)));
    assert!(h.service.reconcile("workers").await.is_err(), "the save after the terminate fails");
    assert_eq!(h.compute.list_pool_now().len(), 2, "terminated");
    h.store.set_down(false);
    h.clock.advance(Duration::from_secs(120));
    h.reconcile().await;
    assert!(h.store.record("workers").state.op.is_none());
    let outcomes: Vec<String> =
        h.store.events().iter().filter(|e| e.kind == "outcome").map(|e| e.reason_label.clone()).collect();
    assert_eq!(outcomes, vec!["succeeded"], "past the deadline, still not an abort");
    assert!(!cluster.event_reasons().contains(&"DrainAborted"));
}

#[tokio::test]
async fn a_ready_node_that_lost_its_pool_label_is_reported_never_cleaned_up() {
    let (h, cluster) = harness_with(&[("K3S_AUTOSCALER__POOLS__WORKERS__JOIN_TIMEOUT", "5m")]);
    three_workers(&h, &cluster);
    cluster.add_pod("node-i-b2", web("web-1"));
    cluster.unlabelled.lock().unwrap().push("node-i-b2".into());
    h.reconcile().await;
    assert_eq!(h.compute.list_pool_now().len(), 3, "a registered Node is not an orphan");
    assert!(!h.store.events().iter().any(|e| e.reason_label == "never_joined"));
    let metrics = h.service.metrics().render();
    assert!(metrics.contains("k3s_autoscaler_nodes_without_pool_label{pool=\"workers\"} 1"), "{metrics}");
}

#[tokio::test]
async fn never_joined_cleanup_waits_for_another_replicas_lease() {
    let (h, cluster) = harness_with(&[("K3S_AUTOSCALER__POOLS__WORKERS__JOIN_TIMEOUT", "5m")]);
    three_workers(&h, &cluster);
    h.compute.add_instance("i-orphan", "us-east-1a", "workers");
    let mut record = h.store.record("workers");
    record.lease = Some(("other-replica".into(), h.clock.now().plus(Duration::from_secs(30))));
    h.store.set_record("workers", record);
    h.reconcile().await;
    assert_eq!(h.compute.list_pool_now().len(), 4, "not terminated without the lease");
}

/// Another replica takes the pool's lease (a newer fencing token) while this one reads a
/// node's pods live, as if that read had hung past `lease_ttl`.
fn lease_taken_over_during_pod_reads(h: &Harness, cluster: &FakeCluster) {
    let store = h.store.clone();
    let until = h.clock.now().plus(Duration::from_secs(600));
    *cluster.during_node_pods.lock().unwrap() = Some(Box::new(move || {
        let mut record = store.record("workers");
        if record.lease.as_ref().is_some_and(|(holder, _)| holder == "other-replica") {
            return;
        }
        record.fencing_token += 1;
        record.lease = Some(("other-replica".into(), until));
        store.set_record("workers", record);
    }));
}

#[tokio::test]
async fn a_lease_lost_during_the_pod_check_stops_the_terminate() {
    let (h, cluster) = harness_with(&[]);
    three_workers(&h, &cluster);
    for node in ["node-i-a1", "node-i-b1", "node-i-b2"] {
        cluster.add_pod(node, web(&format!("web-{node}")));
    }
    h.service.accept(firing(Direction::Down, "fp-down", 1)).await.unwrap();
    h.reconcile().await;
    assert_eq!(cluster.evictions.lock().unwrap().len(), 1, "evicted; empty at the next pass");
    lease_taken_over_during_pod_reads(&h, &cluster);
    let error = h.service.reconcile("workers").await.expect_err("the lease is lost");
    assert_eq!(error.label(), "lease_lost");
    assert_eq!(h.compute.list_pool_now().len(), 3, "no TerminateInstances without the lease");
}

#[tokio::test]
async fn a_lease_lost_during_the_pod_check_stops_the_evictions() {
    let (h, cluster) = harness_with(&[]);
    three_workers(&h, &cluster);
    budgeted_pairs(&cluster);
    h.service.accept(firing(Direction::Down, "fp-down", 1)).await.unwrap();
    lease_taken_over_during_pod_reads(&h, &cluster);
    assert!(h.service.reconcile("workers").await.is_err(), "the lease is lost");
    assert!(cluster.evictions.lock().unwrap().is_empty(), "no eviction without the lease");
}
