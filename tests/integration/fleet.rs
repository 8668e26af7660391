//! Launches are one CreateFleet `instant` per chosen zone over the pool's instance types: the
//! request carries every (type, subnet) of the zone; a spot offering EC2 is short of (played by
//! the proxy as an `errorSet` entry) is skipped by the next request while the other types still
//! serve; every spot offering short falls back to on-demand in the same pass.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::support::service::ServiceConfig;
use crate::support::{World, eventually, payload, scale_up};

const TYPES: [&str; 3] = ["t3.small", "t3a.small", "m5.large"];

fn three_types(c: &mut ServiceConfig) {
    c.extra_pool = format!("instance_types = {TYPES:?}");
}

/// (instance type, subnet) of every override of each zone's subnet.
fn expected(subnet: &str, types: &[&str]) -> Vec<(String, String)> {
    types.iter().map(|t| (t.to_string(), subnet.to_string())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_launch_asks_for_every_type_in_each_chosen_zone() {
    let world = World::new("fleet-3x2", three_types).await;
    let service = world.service().await;
    world.proxy.reset_calls();
    let two = payload(
        "firing",
        serde_json::json!({"alertname": "WorkerCpuHigh", "autoscaler": "scale-up", "step": "2"}),
        "fp-fleet",
    );
    assert_eq!(service.post(&two).await, 200);
    let instances = world.expect_instances(2, Duration::from_secs(1)).await;
    let mut zones: Vec<&str> = instances.iter().map(|(_, az, _)| az.as_str()).collect();
    zones.sort();
    assert_eq!(zones, vec!["us-east-1a", "us-east-1b"], "one per zone: {instances:?}");
    assert!(instances.iter().all(|(_, _, spot)| *spot), "spot first: {instances:?}");
    let requests = world.proxy.fleet_requests();
    assert_eq!(requests.len(), 2, "one fleet request per zone: {requests:?}");
    for (request, (_, subnet)) in requests.iter().zip(&world.fixtures.subnets) {
        assert_eq!((request.market.as_str(), request.count), ("spot", 1));
        assert_eq!(request.overrides, expected(subnet, &TYPES), "3 types x the zone's subnet");
        for tag in ["k3s-autoscaler/managed-by=k3s-autoscaler", "k3s-autoscaler/cluster=fleet-3x2"] {
            assert!(request.instance_tags.iter().any(|t| t == tag), "{tag}: {:?}", request.instance_tags);
        }
        assert!(request.instance_tags.iter().any(|t| t.starts_with("k3s-autoscaler/op-id=")));
    }
    assert_ne!(requests[0].token, requests[1].token, "one ClientToken per request");
    assert_eq!(world.proxy.count("RunInstances"), 0, "{:?}", world.proxy.histogram());
    assert_eq!(world.proxy.count("DeleteFleets"), 0, "an instant fleet is never deleted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_short_spot_offering_is_skipped_next_time_while_the_others_serve() {
    let world = World::new("fleet-short", |c| {
        three_types(c);
        c.max = 3;
        c.scale_up_cooldown = "1s".into();
    })
    .await;
    world.proxy.short_spot_types(&["t3.small"]);
    let service = world.service().await;
    world.proxy.reset_calls();
    assert_eq!(service.post(&scale_up("fp-short")).await, 200);
    // The signal stays: a, then b, then a again (max 3), one node at a time.
    let instances = world.expect_instances(3, Duration::from_secs(1)).await;
    assert!(instances.iter().all(|(_, _, spot)| *spot), "the other types served spot: {instances:?}");
    let requests = world.proxy.fleet_requests();
    let (subnet_a, subnet_b) = (&world.fixtures.subnets[0].1, &world.fixtures.subnets[1].1);
    let asked: Vec<(String, Vec<(String, String)>)> =
        requests.iter().map(|r| (r.market.clone(), r.overrides.clone())).collect();
    assert_eq!(
        asked,
        vec![
            ("spot".to_string(), expected(subnet_a, &TYPES)),
            ("spot".to_string(), expected(subnet_b, &TYPES)),
            ("spot".to_string(), expected(subnet_a, &TYPES[1..])),
        ],
        "zone a leaves the short offering out; zone b still asks for it"
    );
    let state = world.aws.items(&world.config.table, "fleet-short", "state#workers").await;
    let AttributeValue::L(backoffs) = &state[0]["capacity_backoffs"] else { panic!("{state:?}") };
    let remembered: Vec<&String> =
        backoffs.iter().filter_map(|b| b.as_m().ok()?.get("instance_type")?.as_s().ok()).collect();
    assert_eq!(remembered, vec!["t3.small", "t3.small"], "only the short type, in each zone: {backoffs:?}");
    let metrics = service.metrics().await;
    let short_b =
        "k3s_autoscaler_aws_errors_total{api=\"CreateFleet\",code=\"InsufficientInstanceCapacity\"} 2";
    assert!(metrics.contains(short_b), "zone a once, zone b once: {metrics}");
    assert!(
        metrics
            .contains("k3s_autoscaler_capacity_backoff_seconds{pool=\"workers\",instance_type=\"t3.small\""),
        "{metrics}"
    );
    let config = world.prepared.1.to_str().unwrap().to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_k3s-autoscaler"))
            .env_remove("K3S_AUTOSCALER_CONFIG")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing")
            .args(["--config", &config, "status"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("backed off: t3.small us-east-1a spot for "), "{text}");
    assert!(text.contains("(InsufficientInstanceCapacity)"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spot_offering_short_launches_on_demand_in_the_same_pass() {
    let world = World::new("fleet-od", three_types).await;
    world.proxy.short_spot_types(&TYPES);
    let service = world.service().await;
    world.proxy.reset_calls();
    assert_eq!(service.post(&scale_up("fp-od")).await, 200);
    let instances = world.expect_instances(1, Duration::from_secs(1)).await;
    assert!(!instances[0].2, "on-demand: {instances:?}");
    let markets: Vec<(String, usize)> =
        world.proxy.fleet_requests().iter().map(|r| (r.market.clone(), r.overrides.len())).collect();
    assert_eq!(markets, vec![("spot".to_string(), 3), ("on-demand".to_string(), 3)]);
    eventually("launch recorded as succeeded", Duration::from_secs(20), || async {
        let state = world.aws.items(&world.config.table, "fleet-od", "state#workers").await;
        (!state[0].contains_key("op") && state[0].contains_key("last_scale_time")).then_some(())
    })
    .await;
}
