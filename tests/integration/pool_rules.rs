//! The pool rules that count serving nodes, drain supersession and node repair, through the
//! real binary on moto + the fake Kubernetes API.

use std::time::Duration;

use crate::interruption::{post_event, spot_warning};
use crate::support::joiner::node_name;
use crate::support::kube_api::{Budget, pdb, pod};
use crate::support::service::Service;
use crate::support::{World, eventually, payload};

fn scale_down() -> serde_json::Value {
    payload("firing", serde_json::json!({"alertname": "WorkerCpuLow", "autoscaler": "scale-down"}), "fp-low")
}

fn cordoned(world: &World, name: &str) -> bool {
    world.kube.node(name).and_then(|n| n.spec).and_then(|s| s.unschedulable).unwrap_or(false)
}

/// Waits until the service has counted a decision with this action and reason.
async fn decided(service: &Service, action: &str, reason: &str) {
    let line =
        format!("k3s_autoscaler_decisions_total{{pool=\"workers\",action=\"{action}\",reason=\"{reason}\"}}");
    eventually(&line.clone(), Duration::from_secs(15), || async {
        service.metrics().await.lines().any(|l| l.starts_with(&line)).then_some(())
    })
    .await;
}

/// Puts a pod on `node` that a PDB keeps from being evicted.
fn held_pod(world: &World, node: &str) {
    world.kube.add_pod(
        pod("shop", &format!("quorum-{node}"))
            .on_node(node)
            .owned_by("ReplicaSet", "quorum")
            .label("app", "quorum")
            .grace_period(0)
            .build(),
    );
    world.kube.add_pdb(pdb("shop", "quorum", &[("app", "quorum")], Budget::MinAvailable(1)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_waits_while_a_spot_warning_is_handled() {
    let world = World::new("warnmin", |c| c.min = 2).await;
    let cluster = world.config.cluster_id.clone();
    let (_, subnet_a) = &world.fixtures.subnets[0];
    let (_, subnet_b) = &world.fixtures.subnets[1];
    let doomed = world.aws.seed_spot_instance(&cluster, subnet_a).await;
    let steady = world.aws.seed_instance(&cluster, subnet_b, true).await;
    eventually("seeded nodes", Duration::from_secs(20), || async {
        (world.kube.nodes().len() == 2).then_some(())
    })
    .await;
    // The PDB keeps the interruption open (its evictions are refused until the deadline).
    held_pod(&world, &node_name(&doomed));
    let service = world.service().await;
    // EC2 marks the instance, so the warning is verified (moto creates no spot request).
    world.proxy.spot_request_status(&doomed, "marked-for-termination");
    let (status, answer) = post_event(&service, spot_warning(&doomed).to_string().as_bytes(), true).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("handled")), "{answer}");
    // The replacement joins: three instances, two Ready schedulable nodes (min 2).
    eventually("replacement Ready", Duration::from_secs(20), || async {
        (world.instances().await.len() == 3 && world.kube.nodes().len() == 3).then_some(())
    })
    .await;
    assert_eq!(service.post(&scale_down()).await, 200);
    decided(&service, "hold", "interruption_open").await;
    let instances = world.instances().await;
    assert_eq!(instances.len(), 3, "{instances:?}");
    for (id, _, _) in &instances {
        if id != &doomed {
            assert!(!cordoned(&world, &node_name(id)), "{id} cordoned while {doomed} is interrupted");
        }
    }
    assert!(world.kube.node(&node_name(&steady)).is_some());
    let evicted: Vec<String> = world.kube.evictions().into_iter().map(|(p, _)| p).collect();
    assert!(evicted.iter().all(|p| p.starts_with("shop/quorum-")), "{evicted:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scale_up_supersedes_a_drain_held_by_a_pdb_and_launches_at_once() {
    let world = World::new("supersede", |c| c.min = 1).await;
    let cluster = world.config.cluster_id.clone();
    let mut seeded = Vec::new();
    for (_, subnet) in world.fixtures.subnets.iter().take(2) {
        seeded.push(world.aws.seed_instance(&cluster, subnet, true).await);
    }
    eventually("seeded nodes", Duration::from_secs(20), || async {
        (world.kube.nodes().len() == 2).then_some(())
    })
    .await;
    // Two replicas per node under a budget of one disruption: after the first eviction the
    // budget is spent and nothing recreates the pod, so the drain stays in `evicting`.
    crate::drain::db_pairs_under_one_budget(&world, &seeded);
    let service = world.service().await;
    assert_eq!(service.post(&scale_down()).await, 200);
    let chosen = eventually("a drain held by the PDB", Duration::from_secs(10), || async {
        let refused = world.kube.evictions().iter().any(|(_, code)| *code == 429);
        refused.then(|| seeded.iter().map(|id| node_name(id)).find(|n| cordoned(&world, n))).flatten()
    })
    .await;
    assert_eq!(world.proxy.count("CreateFleet"), 0);
    let posted = std::time::Instant::now();
    assert_eq!(service.post(&crate::support::scale_up("fp-up")).await, 200);
    eventually("uncordoned and launched", Duration::from_secs(5), || async {
        (!cordoned(&world, &chosen) && world.proxy.count("CreateFleet") == 1).then_some(())
    })
    .await;
    let latency = posted.elapsed();
    assert!(latency < Duration::from_secs(3), "superseded after {latency:?}");
    eventually("launch finished", Duration::from_secs(20), || async {
        (world.op_finished().await && world.instances().await.len() == 3).then_some(())
    })
    .await;
    assert!(world.kube.node(&chosen).is_some(), "nothing terminated");
    assert_eq!(world.kube.pod_deletes(), 0);
    assert!(
        world.kube.events().iter().any(|e| e["reason"] == "DrainSuperseded"
            && e["regarding"]["name"] == chosen.as_str()
            && e["note"].as_str().is_some_and(|n| n.contains("superseded by scale-up"))),
        "{:?}",
        world.kube.events()
    );
    let metrics = service.metrics().await;
    let line = "k3s_autoscaler_operations_total{pool=\"workers\",kind=\"drain\",outcome=\"superseded\"} 1";
    assert!(metrics.contains(line), "{metrics}");
}
