//! A process killed after the operation is written ahead: the restarted service finishes
//! it without a second instance, whether or not CreateFleet reached EC2 before the crash.

use std::time::Duration;

use crate::support::proxy::RunInstancesFault;
use crate::support::{World, eventually, scale_up};

async fn crash_during_launch(cluster: &str, fault: RunInstancesFault) -> World {
    let world = World::new(cluster, |_| {}).await;
    let mut first = world.service().await;
    world.proxy.run_instances(fault);
    assert_eq!(first.post(&scale_up("fp-crash")).await, 200);
    eventually("CreateFleet sent", Duration::from_secs(20), || async {
        (world.proxy.count("CreateFleet") >= 1).then_some(())
    })
    .await;
    first.kill();
    assert_eq!(world.items("state#workers").await, 1, "the op was written ahead");
    world.proxy.run_instances(RunInstancesFault::None);
    let _second = world.service().await;
    let instances = world.expect_instances(1, Duration::from_secs(3)).await;
    println!("{cluster}: instances after restart {instances:?}, calls {:?}", world.proxy.histogram());
    eventually("op finished with the node Ready", Duration::from_secs(20), || async {
        let state = world.aws.items(&world.config.table, cluster, "state#workers").await;
        (!state[0].contains_key("op") && state[0].contains_key("last_scale_time")).then_some(())
    })
    .await;
    assert_eq!(world.kube.nodes().len(), 1);
    world
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_ec2_launched_restart_adopts_the_instance() {
    let world = crash_during_launch("crash-after", RunInstancesFault::AnswerLost).await;
    assert_eq!(world.proxy.count("CreateFleet"), 1, "no second CreateFleet: {:?}", world.proxy.histogram());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_before_ec2_saw_the_launch_restart_launches_once() {
    let world = crash_during_launch("crash-before", RunInstancesFault::NeverArrives).await;
    assert_eq!(world.proxy.count("CreateFleet"), 2, "the lost call, then the one that worked");
}
