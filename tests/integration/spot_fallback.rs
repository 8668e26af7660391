//! Spot capacity fault → on-demand in the same notification, failing (AZ, spot) remembered.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use crate::support::{World, scale_up};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_capacity_error_launches_on_demand_in_the_same_notification() {
    let world = World::new("spot", |_| {}).await;
    world.proxy.fail_spot(true);
    let service = world.service().await;
    world.proxy.reset_calls();
    assert_eq!(service.post(&scale_up("fp-cpu")).await, 200);
    let instances = world.expect_instances(1, Duration::from_secs(2)).await;
    let (_, az, spot) = &instances[0];
    assert!(!spot, "the fallback instance is on-demand");
    assert_eq!(az, "us-east-1a", "the emptiest zone (ties by name)");
    let runs = world.proxy.count("CreateFleet");
    assert_eq!(runs, 2, "one spot attempt, one on-demand: {:?}", world.proxy.histogram());
    let state = world.aws.items(&world.config.table, "spot", "state#workers").await;
    let backoffs = &state[0]["capacity_backoffs"];
    let AttributeValue::L(list) = backoffs else { panic!("backoffs: {backoffs:?}") };
    assert_eq!(list.len(), 1, "the failing (zone, spot) is remembered: {list:?}");
    let metrics = service.metrics().await;
    assert!(
        metrics.contains(
            "k3s_autoscaler_aws_errors_total{api=\"CreateFleet\",code=\"InsufficientInstanceCapacity\"} 1"
        ),
        "{metrics}"
    );
}
