//! Scale-up is done only when the node is Ready; a node that never joins is terminated.

use std::time::Duration;

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, Patch, PatchParams};

use crate::support::joiner::node_name;
use crate::support::kube_api::pod;
use crate::support::{World, eventually, scale_up};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn launch_completes_when_the_node_is_ready_and_records_it() {
    let world = World::new("joins", |_| {}).await;
    let service = world.service().await;
    assert_eq!(service.post(&scale_up("fp-join")).await, 200);
    let instances = world.expect_instances(1, Duration::from_millis(100)).await;
    eventually("op finished once Ready", Duration::from_secs(15), || async {
        world.op_finished().await.then_some(())
    })
    .await;
    let node = crate::support::joiner::node_name(&instances[0].0);
    let reasons: Vec<String> = world
        .kube
        .events()
        .iter()
        .filter(|e| e["regarding"]["name"] == node.as_str())
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .collect();
    assert_eq!(reasons, vec!["ScaleUpLaunched", "NodeJoined"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_that_never_joins_is_terminated_after_the_join_timeout() {
    let world = World::new("nojoin", |c| c.extra_pool = "join_timeout = \"3s\"".into()).await;
    world.joiner.pause();
    let service = world.service().await;
    assert_eq!(service.post(&scale_up("fp-nojoin")).await, 200);
    world.expect_instances(1, Duration::ZERO).await;
    eventually("instance terminated", Duration::from_secs(20), || async {
        world.instances().await.is_empty().then_some(())
    })
    .await;
    eventually("op finished", Duration::from_secs(10), || async { world.op_finished().await.then_some(()) })
        .await;
    service
        .metric_line(
            "k3s_autoscaler_operations_total{pool=\"workers\",kind=\"launch\",outcome=\"join_timeout\"} 1",
            Duration::from_secs(5),
        )
        .await;
    assert!(world.kube.nodes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ready_node_that_lost_its_pool_label_is_reported_not_terminated() {
    let world = World::new("unlabelled", |c| c.extra_pool = "join_timeout = \"2s\"".into()).await;
    let (_, subnet) = &world.fixtures.subnets[0];
    let id = world.aws.seed_instance(&world.config.cluster_id, subnet, true).await;
    let name = node_name(&id);
    eventually("the node registered", Duration::from_secs(20), || async {
        world.kube.node(&name).map(|_| ())
    })
    .await;
    world.kube.add_pod(pod("shop", "web").on_node(&name).owned_by("ReplicaSet", "web").build());
    // Someone removes the pool label (as a template naming another pool would leave it).
    let nodes: Api<Node> = Api::all(world.kube.client().await);
    let unlabel = serde_json::json!({"metadata": {"labels": {"k3s-autoscaler/pool": null}}});
    nodes.patch(&name, &PatchParams::default(), &Patch::Merge(&unlabel)).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await; // the instance is now older than join_timeout
    let service = world.service().await;
    eventually("the node reported", Duration::from_secs(15), || async {
        let metrics = service.metrics().await;
        metrics.contains("k3s_autoscaler_nodes_without_pool_label{pool=\"workers\"} 1").then_some(())
    })
    .await;
    assert!(world.aws.is_live(&id).await, "a Ready node with pods is never cleaned up");
    assert!(world.kube.node(&name).is_some());
}
