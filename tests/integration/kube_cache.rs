//! The service's Kubernetes caches: once listed, steady sweeps send no list request, and a
//! launch still completes when the joined node arrives over the watch.

use std::time::Duration;

use crate::support::{World, eventually, scale_up};

fn lists(requests: &[String]) -> Vec<&String> {
    requests.iter().filter(|r| r.starts_with("GET ") && !r.contains("watch=true")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_sweeps_list_nothing_and_a_joined_node_arrives_over_the_watch() {
    let world = World::new("cache", |_| {}).await;
    let service = world.service().await;
    eventually("the five watches", Duration::from_secs(10), || async {
        (world.kube.count("GET", "watch=true") >= 5).then_some(())
    })
    .await;
    let before = lists(&world.kube.requests()).len();
    world.sweeps_pass(3).await;
    let requests = world.kube.requests();
    assert_eq!(lists(&requests).len(), before, "sweeps listed: {:?}", &lists(&requests)[before..]);

    assert_eq!(service.post(&scale_up("fp-cache")).await, 200);
    eventually("the launch to finish once its node is Ready", Duration::from_secs(30), || async {
        (world.instances().await.len() == 1 && world.op_finished().await).then_some(())
    })
    .await;
    let requests = world.kube.requests();
    assert_eq!(lists(&requests).len(), before, "the launch listed: {:?}", &lists(&requests)[before..]);
}
