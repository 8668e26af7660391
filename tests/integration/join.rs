//! Scale-up is done only when the node is Ready; a node that never joins is terminated.

use std::time::Duration;

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
    let metrics = service.metrics().await;
    assert!(
        metrics.contains(
            "k3s_autoscaler_operations_total{pool=\"workers\",kind=\"launch\",outcome=\"join_timeout\"} 1"
        ),
        "{metrics}"
    );
    assert!(world.kube.nodes().is_empty());
}
