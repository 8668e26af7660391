//! Scale-down on moto + the fake Kubernetes API: the safe-drain rules, end to end through the
//! real binary, its webhook and its sweeper.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};

use crate::support::joiner::node_name;
use crate::support::kube_api::{Budget, K3sAddon, k3s_server, k3s_svclb_pod, node, pdb, pod};
use crate::support::{World, eventually, payload};

fn scale_down() -> serde_json::Value {
    payload("firing", serde_json::json!({"alertname": "WorkerCpuLow", "autoscaler": "scale-down"}), "fp-low")
}

/// Seeds managed workers, `per_zone[i]` in zone i, and waits until all are Ready nodes.
async fn seed(world: &World, per_zone: &[usize]) -> Vec<(String, String)> {
    let mut seeded = Vec::new();
    for (zone, count) in per_zone.iter().enumerate() {
        let (az, subnet) = &world.fixtures.subnets[zone];
        for _ in 0..*count {
            let id = world.aws.seed_instance(&world.config.cluster_id, subnet, true).await;
            seeded.push((id, az.clone()));
        }
    }
    let expected = seeded.len();
    eventually("seeded nodes Ready", Duration::from_secs(20), || async {
        (world.kube.nodes().len() >= expected).then_some(())
    })
    .await;
    seeded
}

fn web_pod(node: &str, name: &str, grace: i64) -> k8s_openapi::api::core::v1::Pod {
    pod("shop", name).on_node(node).owned_by("ReplicaSet", "web").grace_period(grace).build()
}

fn daemon_pod(node: &str) -> k8s_openapi::api::core::v1::Pod {
    pod("kube-system", &format!("flannel-{node}")).on_node(node).daemonset("flannel").grace_period(0).build()
}

/// Two replicas on every seeded node under one budget of one disruption: after the first
/// eviction the budget is spent, and nothing recreates the pod, so a drain waits on a 429.
pub(crate) fn db_pairs_under_one_budget<'a>(world: &World, instances: impl IntoIterator<Item = &'a String>) {
    for id in instances {
        for i in 0..2 {
            world.kube.add_pod(
                pod("shop", &format!("db-{i}-{id}"))
                    .on_node(&node_name(id))
                    .owned_by("ReplicaSet", "db")
                    .label("app", "db")
                    .grace_period(0)
                    .build(),
            );
        }
    }
    world.kube.set_replicas("shop", "ReplicaSet", "db", 4);
    world.kube.add_pdb(pdb("shop", "db", &[("app", "db")], Budget::MaxUnavailable(1)));
}

const HELD: &str =
    "k3s_autoscaler_decisions_total{pool=\"workers\",action=\"hold\",reason=\"no_drain_candidate\"}";
const DRAINED: &str = "k3s_autoscaler_decisions_total{pool=\"workers\",action=\"drain\"";

/// The metrics once the service has decided the scale-down: held (no candidate) or drained.
async fn scale_down_decided(service: &crate::support::service::Service) -> String {
    eventually("the scale-down decided", Duration::from_secs(10), || async {
        let metrics = service.metrics().await;
        (metrics.contains(HELD) || metrics.contains(DRAINED)).then_some(metrics)
    })
    .await
}

fn cordoned(world: &World, name: &str) -> bool {
    world.kube.node(name).and_then(|n| n.spec).and_then(|s| s.unschedulable).unwrap_or(false)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scale_down_alert_drains_one_node_in_the_fullest_zone_and_terminates_its_instance() {
    let world = World::new("drain", |c| c.min = 1).await;
    let seeded = seed(&world, &[1, 2]).await;
    // A control-plane node and an unmanaged worker with the pool label: never touched.
    let (_, subnet_a) = &world.fixtures.subnets[0];
    let unmanaged = world.aws.seed_instance("drain", subnet_a, false).await;
    world.kube.add_node(
        node("server")
            .provider_id("aws:///us-east-1a/i-server")
            .label("node-role.kubernetes.io/control-plane", "true")
            .ready(true)
            .build(),
    );
    world.kube.add_node(
        node("hand-made")
            .provider_id(&format!("aws:///us-east-1a/{unmanaged}"))
            .label("k3s-autoscaler/pool", "workers")
            .ready(true)
            .build(),
    );
    for name in ["server", "hand-made"] {
        world.kube.add_pod(web_pod(name, &format!("web-{name}"), 0));
    }
    for (i, (id, _)) in seeded.iter().enumerate() {
        let name = node_name(id);
        world.kube.add_pod(daemon_pod(&name));
        world.kube.add_pod(web_pod(&name, &format!("web-{i}"), 1));
    }
    let service = world.service().await;
    assert_eq!(service.post(&scale_down()).await, 200);
    let remaining = world.expect_instances(2, Duration::from_secs(3)).await;
    let gone: Vec<&(String, String)> =
        seeded.iter().filter(|(id, _)| !remaining.iter().any(|r| &r.0 == id)).collect();
    assert_eq!(gone.len(), 1);
    let (gone_id, gone_az) = gone[0];
    assert_eq!(gone_az, "us-east-1b", "the zone with two workers gives one up");
    eventually("op finished", Duration::from_secs(10), || async { world.op_finished().await.then_some(()) })
        .await;
    let gone_node = node_name(gone_id);
    assert!(world.kube.node(&gone_node).is_none(), "Node deleted");
    let evicted: Vec<String> = world.kube.evictions().into_iter().map(|(p, _)| p).collect();
    assert_eq!(evicted.len(), 1, "{evicted:?}");
    assert!(evicted[0].starts_with("shop/web-"), "{evicted:?}");
    assert_eq!(world.kube.pod_deletes(), 0, "never a pod delete");
    for name in ["server", "hand-made"] {
        assert!(world.kube.node(name).is_some() && !cordoned(&world, name), "{name} untouched");
    }
    assert!(world.aws.is_live(&unmanaged).await, "unmanaged instance untouched");
    let reasons: Vec<String> = world
        .kube
        .events()
        .iter()
        .filter(|e| e["regarding"]["name"] == gone_node.as_str())
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .collect();
    assert_eq!(reasons, vec!["DrainStarted", "DrainCompleted", "NodeRemoved"]);
    service
        .metric_line(
            "k3s_autoscaler_operations_total{pool=\"workers\",kind=\"drain\",outcome=\"succeeded\"} 1",
            Duration::from_secs(5),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pdb_that_never_allows_disruption_aborts_at_the_timeout_and_terminates_nothing() {
    let world = World::new("pdb", |c| {
        c.min = 1;
        c.extra_pool = "drain_timeout = \"3s\"".into();
    })
    .await;
    let seeded = seed(&world, &[1, 1]).await;
    db_pairs_under_one_budget(&world, seeded.iter().map(|(id, _)| id));
    let service = world.service().await;
    assert_eq!(service.post(&scale_down()).await, 200);
    let chosen = eventually("a node cordoned", Duration::from_secs(10), || async {
        seeded.iter().map(|(id, _)| node_name(id)).find(|n| cordoned(&world, n))
    })
    .await;
    eventually("drain aborted", Duration::from_secs(15), || async {
        (world.op_finished().await && !cordoned(&world, &chosen)).then_some(())
    })
    .await;
    assert_eq!(world.instances().await.len(), 2, "nothing terminated");
    assert!(world.kube.node(&chosen).is_some());
    assert!(world.kube.evictions().iter().any(|(_, code)| *code == 429), "{:?}", world.kube.evictions());
    assert_eq!(world.kube.pod_deletes(), 0);
    assert!(
        world
            .kube
            .events()
            .iter()
            .any(|e| e["reason"] == "DrainAborted" && e["regarding"]["name"] == chosen.as_str())
    );
    service
        .metric_line(
            "k3s_autoscaler_operations_total{pool=\"workers\",kind=\"drain\",outcome=\"aborted\"} 1",
            Duration::from_secs(5),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_not_a_candidate_rule_keeps_its_node_and_a_vouched_pod_does_not() {
    let world = World::new("rules", |c| {
        c.min = 1;
        c.max = 10;
    })
    .await;
    let seeded = seed(&world, &[5, 4]).await;
    let n = |i: usize| node_name(&seeded[i].0);
    let k = &world.kube;
    k.add_pod(pod("kube-system", "coredns-x").on_node(&n(0)).owned_by("ReplicaSet", "coredns").build());
    k.add_pod(
        pod("shop", "critical")
            .on_node(&n(1))
            .owned_by("ReplicaSet", "c")
            .priority_class("system-cluster-critical")
            .build(),
    );
    k.add_pod(pod("shop", "bare").on_node(&n(2)).build());
    k.add_pod(pod("shop", "scratch").on_node(&n(3)).owned_by("ReplicaSet", "s").empty_dir(false).build());
    k.add_pod(
        pod("shop", "pinned")
            .on_node(&n(4))
            .owned_by("ReplicaSet", "p")
            .annotation("cluster-autoscaler.kubernetes.io/safe-to-evict", "false")
            .build(),
    );
    k.add_pod(
        pod("shop", "quorum").on_node(&n(5)).owned_by("ReplicaSet", "q").label("app", "quorum").build(),
    );
    k.add_pdb(pdb("shop", "quorum", &[("app", "quorum")], Budget::MinAvailable(1)));
    let nodes: Api<Node> = Api::all(k.client().await);
    let disabled = serde_json::json!({"metadata": {"annotations": {"cluster-autoscaler.kubernetes.io/scale-down-disabled": "true"}}});
    nodes.patch(&n(6), &PatchParams::default(), &Patch::Merge(&disabled)).await.unwrap();
    k.add_local_pv("shop", "data-db-0", &n(8));
    k.add_pod(
        pod("shop", "db-0").on_node(&n(8)).owned_by("StatefulSet", "db").local_pv_claim("data-db-0").build(),
    );
    // This node's only pod has local storage but is vouched for: it may go.
    k.add_pod(
        pod("shop", "cache")
            .on_node(&n(7))
            .owned_by("ReplicaSet", "cache")
            .empty_dir(false)
            .annotation("cluster-autoscaler.kubernetes.io/safe-to-evict", "true")
            .grace_period(0)
            .build(),
    );
    let service = world.service().await;
    assert_eq!(service.post(&scale_down()).await, 200);
    let remaining = world.expect_instances(8, Duration::from_secs(3)).await;
    assert!(!remaining.iter().any(|(id, _, _)| id == &seeded[7].0), "the vouched node was drained");
    for i in [0, 1, 2, 3, 4, 5, 6, 8] {
        assert!(!cordoned(&world, &n(i)), "node {i} untouched");
    }
    let evicted: Vec<String> = k.evictions().into_iter().map(|(p, _)| p).collect();
    assert_eq!(evicted, vec!["shop/cache"]);
    let metrics = service.metrics().await;
    for reason in [
        "kube_system_pod_without_pdb",
        "system_critical_pod",
        "pod_without_controller",
        "safe_to_evict_false",
        "pdb_allows_no_disruption",
        "scale_down_disabled",
    ] {
        let line = format!("k3s_autoscaler_unremovable_nodes{{pool=\"workers\",reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
    // emptyDir on disk, and a local PersistentVolume with its own reason.
    for reason in ["pod_with_local_storage", "pod_with_node_local_volume"] {
        let line = format!("k3s_autoscaler_unremovable_nodes{{pool=\"workers\",reason=\"{reason}\"}} 1");
        assert!(metrics.contains(&line), "missing {line} in\n{metrics}");
    }
}

/// K3s's default storage: a StatefulSet pod on a `local-path` volume keeps its node (its
/// data lives there and its PV can only ever be mounted there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pod_on_a_k3s_local_path_volume_keeps_its_node() {
    let world = World::new("localpath", |c| c.min = 1).await;
    let seeded = seed(&world, &[1, 1]).await;
    let (db_node, other) = (node_name(&seeded[0].0), node_name(&seeded[1].0));
    world.kube.add_local_path_db(&db_node);
    // The other node holds a bare pod: the db node is the only one that could go.
    world.kube.add_pod(pod("shop", "bare").on_node(&other).build());
    let service = world.service().await;
    assert_eq!(service.post(&scale_down()).await, 200);
    let metrics = scale_down_decided(&service).await;
    if metrics.contains(DRAINED) {
        let left = world.expect_instances(1, Duration::from_secs(1)).await;
        panic!("the node with the local-path volume was drained and terminated; left: {left:?}");
    }
    let line = "k3s_autoscaler_unremovable_nodes{pool=\"workers\",reason=\"pod_with_node_local_volume\"} 1";
    assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    assert!(world.kube.evictions().is_empty(), "{:?}", world.kube.evictions());
    assert!(!cordoned(&world, &db_node));
    assert_eq!(world.instances().await.len(), 2, "nothing terminated");
    assert_eq!(world.proxy.count("TerminateInstances"), 0, "{:?}", world.proxy.histogram());
}

/// Seeds a K3s-shaped cluster of two workers: the tainted server, an svclb pod per node,
/// coredns and traefik (as installed: kube-system, critical, traefik's emptyDirs, no PDB) on
/// the first worker, and a bare pod holding the second. Returns (add-on worker, other).
async fn seed_k3s_addons_on_one_worker(world: &World) -> (String, String) {
    let seeded = seed(world, &[1, 1]).await;
    let (addons, other) = (node_name(&seeded[0].0), node_name(&seeded[1].0));
    let k = &world.kube;
    k.add_node(k3s_server("server").provider_id("aws:///us-east-1a/i-server").ready(true).build());
    for name in ["server", addons.as_str(), other.as_str()] {
        k.add_pod(k3s_svclb_pod(name).build());
    }
    k.add_pod(K3sAddon::named("coredns").pod("x2kq4", Some(&addons)).build());
    k.add_pod(K3sAddon::named("traefik").pod("m7h2w", Some(&addons)).build());
    k.add_pod(pod("shop", "bare").on_node(&other).build());
    (addons, other)
}

/// K3s's coredns and traefik on a worker (no PDB, critical, traefik's emptyDirs) no longer
/// hold it: they are evicted through the Eviction API like any replicated pod, the svclb
/// DaemonSet pod stays, and the node goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_hosting_k3s_addons_is_drained_through_the_eviction_api() {
    let world = World::new("k3saddons", |c| c.min = 1).await;
    let (addons, other) = seed_k3s_addons_on_one_worker(&world).await;
    let service = world.service().await;
    assert_eq!(service.post(&scale_down()).await, 200);
    let remaining = world.expect_instances(1, Duration::from_secs(3)).await;
    assert_eq!(node_name(&remaining[0].0), other, "the add-on worker went");
    eventually("op finished", Duration::from_secs(10), || async { world.op_finished().await.then_some(()) })
        .await;
    assert!(world.kube.node(&addons).is_none(), "Node deleted");
    let mut evicted: Vec<String> = world.kube.evictions().into_iter().map(|(p, _)| p).collect();
    evicted.sort();
    assert_eq!(
        evicted,
        vec!["kube-system/coredns-ccb96694c-x2kq4", "kube-system/traefik-5d45fc8cc9-m7h2w"],
        "the add-ons, never svclb"
    );
    assert_eq!(world.kube.pod_deletes(), 0, "never a pod delete");
    assert!(!cordoned(&world, "server") && !cordoned(&world, &other));
}

/// With `drain.movable_system_workloads = []` the same worker is held, as before the key
/// existed: a critical kube-system pod without a PDB.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_movable_system_workloads_a_worker_hosting_k3s_addons_is_held() {
    let world = World::new("k3sheld", |c| {
        c.min = 1;
        c.extra_timing = "[drain]\nmovable_system_workloads = []".into();
    })
    .await;
    let (addons, _) = seed_k3s_addons_on_one_worker(&world).await;
    let service = world.service().await;
    assert_eq!(service.post(&scale_down()).await, 200);
    let metrics = scale_down_decided(&service).await;
    assert!(!metrics.contains(DRAINED), "drained although no add-on is movable:\n{metrics}");
    let line = "k3s_autoscaler_unremovable_nodes{pool=\"workers\",reason=\"system_critical_pod\"} 1";
    assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    assert!(world.kube.evictions().is_empty(), "{:?}", world.kube.evictions());
    assert!(!cordoned(&world, &addons));
    assert_eq!(world.instances().await.len(), 2, "nothing terminated");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_killed_mid_drain_is_finished_by_the_restart() {
    let world = World::new("middrain", |c| c.min = 1).await;
    let seeded = seed(&world, &[1, 1]).await;
    for (i, (id, _)) in seeded.iter().enumerate() {
        // A long grace period keeps the drain going while the first process dies.
        world.kube.add_pod(web_pod(&node_name(id), &format!("slow-{i}"), 4));
    }
    let mut first = world.service().await;
    assert_eq!(first.post(&scale_down()).await, 200);
    let chosen = eventually("a node cordoned and evicting", Duration::from_secs(10), || async {
        (!world.kube.evictions().is_empty())
            .then(|| seeded.iter().map(|(id, _)| node_name(id)).find(|n| cordoned(&world, n)))
            .flatten()
    })
    .await;
    first.kill();
    assert_eq!(world.instances().await.len(), 2, "killed before termination");
    let _second = world.service().await;
    world.expect_instances(1, Duration::from_secs(1)).await;
    eventually("drain finished", Duration::from_secs(20), || async {
        (world.op_finished().await && world.kube.node(&chosen).is_none()).then_some(())
    })
    .await;
    assert_eq!(world.kube.pod_deletes(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_deleted_while_its_drain_waits_on_a_pdb_frees_the_pool_within_a_sweep() {
    let world = World::new("vanish", |c| {
        c.min = 1;
        c.extra_pool = "drain_timeout = \"10m\"".into();
    })
    .await;
    let seeded = seed(&world, &[1, 1]).await;
    db_pairs_under_one_budget(&world, seeded.iter().map(|(id, _)| id));
    let service = world.service().await;
    assert_eq!(service.post(&scale_down()).await, 200);
    let chosen = eventually("the drain held by the PDB", Duration::from_secs(10), || async {
        world
            .kube
            .evictions()
            .iter()
            .any(|(_, code)| *code == 429)
            .then(|| seeded.iter().map(|(id, _)| node_name(id)).find(|n| cordoned(&world, n)))
            .flatten()
    })
    .await;
    // An operator gives up on the node: `kubectl delete node`. Its pods stay bound to the
    // name until pod GC (40 s).
    world.kube.remove_node(&chosen);
    eventually("the pool free again", Duration::from_secs(3), || async {
        world.op_finished().await.then_some(())
    })
    .await;
    // The op is cleared first; the outcome is counted and audited right after that save.
    service
        .metric_line(
            "k3s_autoscaler_operations_total{pool=\"workers\",kind=\"drain\",outcome=\"node_vanished\"} 1",
            Duration::from_secs(5),
        )
        .await;
    let vanished = eventually("the audit record of the vanished node", Duration::from_secs(5), || async {
        let events = world.aws.items(&world.config.table, &world.config.cluster_id, "event#").await;
        events
            .iter()
            .filter_map(|e| e.get("reason").and_then(|r| r.as_s().ok()))
            .find(|r| r.contains("deleted outside the autoscaler"))
            .cloned()
    })
    .await;
    assert!(vanished.contains("nothing to uncordon") && vanished.contains("left running"), "{vanished}");
    assert_eq!(world.instances().await.len(), 2, "a pod is still bound to it: nothing terminated");
    assert_eq!(world.kube.pod_deletes(), 0);
}
