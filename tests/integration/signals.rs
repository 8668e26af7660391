//! Signals through the real binary and DynamoDB: a `resolved` post removes its signal so
//! nothing more acts on it, and three replicas driven at the shipped `max = 10` never pass it.

use std::time::Duration;

use serde_json::json;

use crate::support::{World, eventually, payload, scale_up};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolved_post_removes_its_signal_and_nothing_more_launches() {
    // A 2 s cooldown: a signal left behind would launch again within the sweeps waited below.
    let world = World::new("resolved", |c| c.scale_up_cooldown = "2s".into()).await;
    let service = world.service().await;
    assert_eq!(service.post(&scale_up("fp-resolved")).await, 200);
    eventually("the launch to finish", Duration::from_secs(20), || async {
        (world.instances().await.len() == 1 && world.op_finished().await).then_some(())
    })
    .await;
    assert_eq!(world.items("signal#").await, 1, "the firing alert is stored as a signal");

    let resolved =
        payload("resolved", json!({"alertname": "WorkerCpuHigh", "autoscaler": "scale-up"}), "fp-resolved");
    assert_eq!(service.post(&resolved).await, 200);
    eventually("the signal item deleted", Duration::from_secs(5), || async {
        (world.items("signal#").await == 0).then_some(())
    })
    .await;
    // Sweeps look at the pool again until well past the cooldown: nothing more launches.
    world.sweeps_pass(4).await;
    assert_eq!(world.instances().await.len(), 1);
    assert_eq!(world.proxy.count("CreateFleet"), 1, "{:?}", world.proxy.histogram());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_at_the_shipped_max_of_ten_never_pass_it() {
    let world = World::new("max10", |c| {
        c.max = 10;
        c.scale_up_cooldown = "1s".into();
    })
    .await;
    let replicas = [world.service().await, world.service().await, world.service().await];
    let step3 = payload(
        "firing",
        json!({"alertname": "PodsPending", "autoscaler": "scale-up", "step": "3"}),
        "fp-max10",
    );
    let mut peak = 0;
    let started = std::time::Instant::now();
    // Every replica hears every repeat (Alertmanager HA): the pool climbs by 3 per launch.
    while started.elapsed() < Duration::from_secs(60) {
        for replica in &replicas {
            assert_eq!(replica.post(&step3).await, 200);
        }
        let count = world.instances().await.len();
        peak = peak.max(count);
        assert!(count <= 10, "{count} managed instances, max is 10");
        if count == 10 && world.op_finished().await {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(peak, 10, "the pool reached max");
    // At max, further repeats and sweeps of all three replicas launch nothing.
    let launches = world.proxy.count("CreateFleet");
    for replica in &replicas {
        assert_eq!(replica.post(&step3).await, 200);
    }
    world.sweeps_pass(6).await;
    assert_eq!(world.instances().await.len(), 10);
    assert_eq!(world.proxy.count("CreateFleet"), launches, "{:?}", world.proxy.histogram());
}
