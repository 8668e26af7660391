//! The service's Kubernetes caches: once listed, steady sweeps send no list request, and a
//! launch still completes when the joined node arrives over the watch.

use std::time::Duration;

use crate::support::kube_api::node;
use crate::support::{World, eventually, payload, scale_up};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_watch_makes_the_cache_unsynced_and_sweeps_read_the_api() {
    let world = World::new("brokenwatch", |_| {}).await;
    let service = world.service().await;
    eventually("the five watches", Duration::from_secs(10), || async {
        (world.kube.count("GET", "watch=true") >= 5).then_some(())
    })
    .await;
    // A standing scale-down signal (min 0, no worker) makes every sweep read the pool's nodes.
    let down = payload(
        "firing",
        serde_json::json!({"alertname": "WorkerCpuLow", "autoscaler": "scale-down"}),
        "fp-low",
    );
    assert_eq!(service.post(&down).await, 200);
    let direct = |world: &World| world.kube.count("GET", "labelSelector=k3s-autoscaler/pool=workers");
    // Two sweeps in a row that list nothing directly: the caches are synced and read (watches
    // being open is not enough; a fixed wait could take the baseline before the sync).
    let before = eventually("two sweeps reading the synced caches", Duration::from_secs(15), || async {
        let start = direct(&world);
        world.sweeps_pass(2).await;
        (direct(&world) == start).then_some(start)
    })
    .await;
    // The watches break and cannot relist (the watchers' lists are paged, direct lists not),
    // while a node joins.
    world.kube.fail_next("GET", "limit=500", 500, 10_000);
    world.kube.expire_watches();
    world.kube.add_node(
        node("late")
            .provider_id("aws:///us-east-1a/i-late")
            .label("k3s-autoscaler/pool", "workers")
            .ready(true)
            .build(),
    );
    eventually("sweeps reading nodes from the API", Duration::from_secs(10), || async {
        (direct(&world) > before).then_some(())
    })
    .await;
}
