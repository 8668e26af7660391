//! Node repair through the real binary on moto + the fake Kubernetes API: a node whose
//! kubelet stopped is replaced, then drained and terminated; one with a local-path volume is
//! reported and kept; an outage (3 of 4 NotReady) repairs nothing.

use std::time::Duration;

use crate::support::joiner::node_name;
use crate::support::service::Service;
use crate::support::{World, eventually};

/// Waits for the first metric line that starts with `prefix`.
async fn metric(service: &Service, prefix: &str, within: Duration) -> String {
    eventually(prefix, within, || async {
        service.metrics().await.lines().find(|l| l.starts_with(prefix)).map(str::to_string)
    })
    .await
}

fn decision(action: &str, reason: &str) -> String {
    format!("k3s_autoscaler_decisions_total{{pool=\"workers\",action=\"{action}\",reason=\"{reason}\"}}")
}

/// A world with `repair_after = 2s` and `n` seeded, joined workers.
async fn world_with(name: &str, min: u32, n: usize) -> (World, Vec<String>) {
    let world = World::new(name, |c| {
        c.min = min;
        c.extra_pool = "repair_after = \"2s\"".into();
    })
    .await;
    let cluster = world.config.cluster_id.clone();
    let mut seeded = Vec::new();
    for i in 0..n {
        let (_, subnet) = &world.fixtures.subnets[i % world.fixtures.subnets.len()];
        seeded.push(world.aws.seed_instance(&cluster, subnet, true).await);
    }
    eventually("seeded nodes", Duration::from_secs(20), || async {
        (world.kube.nodes().len() == n).then_some(())
    })
    .await;
    (world, seeded)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_kubelet_stopped_is_replaced_then_drained_and_terminated() {
    let (world, seeded) = world_with("repair", 2, 2).await;
    let dead = node_name(&seeded[0]);
    world.kube.set_node_ready(&dead, false);
    tokio::time::sleep(Duration::from_secs(3)).await; // past repair_after
    let service = world.service().await;
    metric(&service, &decision("launch", "repair_launch"), Duration::from_secs(20)).await;
    // The replacement joins (the joiner registers it Ready); then the dead node goes.
    metric(&service, &decision("drain", "repair_drain"), Duration::from_secs(90)).await;
    eventually("the NotReady instance terminated and its Node deleted", Duration::from_secs(30), || async {
        let instances = world.instances().await;
        (instances.len() == 2
            && !instances.iter().any(|(id, _, _)| id == &seeded[0])
            && world.kube.node(&dead).is_none())
        .then_some(())
    })
    .await;
    assert_eq!(world.proxy.count("CreateFleet"), 1, "one replacement");
    assert!(world.kube.node(&node_name(&seeded[1])).is_some());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_not_ready_node_with_a_local_path_volume_is_reported_not_terminated() {
    let (world, seeded) = world_with("repairpv", 1, 2).await;
    let db_node = node_name(&seeded[0]);
    world.kube.add_local_path_db(&db_node);
    world.kube.set_node_ready(&db_node, false);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let service = world.service().await;
    metric(&service, &decision("hold", "repair_blocked_local_data"), Duration::from_secs(20)).await;
    let gauge =
        metric(&service, "k3s_autoscaler_repair_blocked_nodes{pool=\"workers\"}", Duration::from_secs(5))
            .await;
    assert!(gauge.ends_with(" 1"), "{gauge}");
    let event = world.kube.events().into_iter().find(|e| e["reason"] == "RepairBlocked");
    assert!(
        event.is_some_and(|e| e["regarding"]["name"] == db_node.as_str()),
        "a RepairBlocked event on {db_node}"
    );
    assert_eq!(world.proxy.count("CreateFleet"), 0);
    assert_eq!(world.instances().await.len(), 2, "nothing terminated");
    assert!(world.kube.evictions().is_empty());
    let spec = world.kube.node(&db_node).and_then(|n| n.spec);
    assert!(!spec.and_then(|s| s.unschedulable).unwrap_or(false), "not cordoned");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_of_four_nodes_not_ready_repairs_nothing() {
    let (world, seeded) = world_with("repairout", 1, 4).await;
    for id in &seeded[..3] {
        world.kube.set_node_ready(&node_name(id), false);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let service = world.service().await;
    metric(&service, &decision("hold", "repair_too_many_unready"), Duration::from_secs(20)).await;
    assert_eq!(world.proxy.count("CreateFleet"), 0);
    assert_eq!(world.proxy.count("TerminateInstances"), 0);
    assert!(world.kube.evictions().is_empty());
    assert_eq!(world.instances().await.len(), 4);
}
