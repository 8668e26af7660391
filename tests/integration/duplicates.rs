//! The same firing payload, 20× concurrently to each of 3 replicas sharing one table: one
//! instance. Also reports the AWS calls one notification costs.

use std::time::Duration;

use crate::support::{World, eventually, scale_up};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_concurrent_duplicates_to_three_replicas_launch_exactly_one_instance() {
    let world = World::new("storm", |_| {}).await;
    let replicas = [world.service().await, world.service().await, world.service().await];
    world.proxy.reset_calls();
    let payload = scale_up("fp-storm");
    let mut posts = Vec::new();
    for replica in &replicas {
        for _ in 0..20 {
            let url = replica.url.clone();
            let body = payload.to_string();
            posts.push(tokio::spawn(async move {
                reqwest::Client::new()
                    .post(format!("{url}/v1/alerts"))
                    .header("authorization", format!("Bearer {}", crate::support::service::TOKEN))
                    .body(body)
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }));
        }
    }
    for post in posts {
        assert_eq!(post.await.unwrap().unwrap(), 200);
    }
    // Several sweeps (1 s each) pass while we wait: still one instance.
    let instances = world.expect_instances(1, Duration::from_secs(4)).await;
    assert_eq!(world.proxy.count("CreateFleet"), 1, "{:?}", world.proxy.histogram());
    // One signal write per replica plus the decision and outcome records; repeats write nothing.
    assert!(world.proxy.count("PutItem") <= 3 + 2, "{:?}", world.proxy.histogram());
    println!("storm: 60 posts, instances {instances:?}, AWS calls {:?}", world.proxy.histogram());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_notification_costs_few_aws_calls() {
    let world = World::new("calls", |c| {
        c.extra_top = String::new();
        c.sweep_interval = "1h".into();
    })
    .await;
    let service = world.service().await;
    // With an hour between sweeps, the startup pass is the only background one: the pool's
    // reconcile (its worker gauge is exported once it has listed the instances) and the
    // interrupt worker's look at open records, one Query each. Once both are done, only what
    // the notification causes is counted (a fixed 300 ms wait was too short on a busy machine).
    eventually("the startup pass done", Duration::from_secs(10), || async {
        let listed = service.metric("k3s_autoscaler_pool_workers{pool=\"workers\"}").await.is_some();
        (listed && world.proxy.count("Query") >= 2).then_some(())
    })
    .await;
    world.proxy.reset_calls();
    assert_eq!(service.post(&scale_up("fp-one")).await, 200);
    world.expect_instances(1, Duration::from_millis(200)).await;
    let calls = world.proxy.calls();
    let until_launch: Vec<&String> = calls.iter().take_while(|c| *c != "CreateFleet").collect();
    println!(
        "AWS calls before CreateFleet: {} {:?}; all: {:?}",
        until_launch.len(),
        until_launch,
        world.proxy.histogram()
    );
    assert!(calls.iter().any(|c| c == "CreateFleet"));
    assert!(until_launch.len() <= 6, "{until_launch:?}");
}
