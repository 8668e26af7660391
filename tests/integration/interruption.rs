//! EventBridge EC2 notices on moto + the fake Kubernetes API through the real binary: a spot
//! interruption drains the node at once (candidate rules do not block it), launches one
//! replacement in the emptier zone, survives repeats; unmanaged instances are left alone;
//! every scaling event also lands in CloudWatch Logs.

use std::time::Duration;

use crate::support::joiner::node_name;
use crate::support::kube_api::pod;
use crate::support::service::{EVENTS_TOKEN, Service};
use crate::support::{World, eventually};

pub const LOG_GROUP: &str = "/k3s-autoscaler/test";

/// A spot interruption warning as EventBridge's API destination delivers it.
pub fn spot_warning(instance_id: &str) -> serde_json::Value {
    serde_json::json!({
        "version": "0", "id": format!("evt-{instance_id}"),
        "detail-type": "EC2 Spot Instance Interruption Warning", "source": "aws.ec2",
        "account": "123456789012", "time": "2026-11-24T08:00:00Z", "region": "us-east-1",
        "resources": [format!("arn:aws:ec2:us-east-1b:instance/{instance_id}")],
        "detail": {"instance-id": instance_id, "instance-action": "terminate"}
    })
}

/// A rebalance recommendation as EventBridge's API destination delivers it.
pub fn rebalance(instance_id: &str) -> serde_json::Value {
    serde_json::json!({
        "version": "0", "id": format!("rebalance-{instance_id}"),
        "detail-type": "EC2 Instance Rebalance Recommendation", "source": "aws.ec2",
        "account": "123456789012", "time": "2026-11-24T07:58:00Z", "region": "us-east-1",
        "resources": [format!("arn:aws:ec2:us-east-1a:instance/{instance_id}")],
        "detail": {"instance-id": instance_id}
    })
}

/// Posts an EventBridge event; returns the status and the JSON answer.
pub async fn post_event(service: &Service, body: &[u8], auth: bool) -> (u16, serde_json::Value) {
    let mut request = reqwest::Client::new()
        .post(format!("{}/v1/events/ec2", service.url))
        .header("content-type", "application/json")
        .body(body.to_vec());
    if auth {
        request = request.header("authorization", format!("Bearer {EVENTS_TOKEN}"));
    }
    let response = request.send().await.expect("post event");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or_default())
}

fn cloudwatch_config(cluster: &str) -> String {
    format!("[cloudwatch]\nlog_group = \"{LOG_GROUP}\"\nlog_stream = \"{cluster}\"\n")
}

/// CloudWatch Logs client on moto (the group must exist; infra creates it in production).
pub async fn logs(world: &World) -> aws_sdk_cloudwatchlogs::Client {
    let credentials = aws_sdk_ec2::config::Credentials::new("testing", "testing", None, None, "tests");
    let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new("us-east-1"))
        .credentials_provider(credentials)
        .endpoint_url(&world.config.endpoint)
        .load()
        .await;
    let client = aws_sdk_cloudwatchlogs::Client::new(&sdk);
    client.create_log_group().log_group_name(LOG_GROUP).send().await.expect("create log group");
    client
}

/// Every JSON record in the stream.
pub async fn records(client: &aws_sdk_cloudwatchlogs::Client, stream: &str) -> Vec<serde_json::Value> {
    let Ok(out) = client
        .get_log_events()
        .log_group_name(LOG_GROUP)
        .log_stream_name(stream)
        .start_from_head(true)
        .send()
        .await
    else {
        return Vec::new();
    };
    out.events().iter().filter_map(|e| serde_json::from_str(e.message().unwrap_or_default()).ok()).collect()
}

/// Requests other than GET the fake API server received after the first `before`.
pub fn kube_writes_since(world: &World, before: usize) -> Vec<String> {
    world.kube.requests()[before..].iter().filter(|r| !r.starts_with("GET ")).cloned().collect()
}

fn reasons_on(world: &World, node: &str) -> Vec<String> {
    world
        .kube
        .events()
        .iter()
        .filter(|e| e["regarding"]["name"] == node)
        .filter_map(|e| e["reason"].as_str().map(str::to_string))
        .collect()
}

/// Two managed spot workers in zone a, joined; the first (returned first) runs `shop/bare`, a
/// pod with no controller that would block a normal scale-down, and `shop/web`.
async fn two_spot_workers(world: &World) -> (String, String) {
    let (_, subnet_a) = &world.fixtures.subnets[0];
    let doomed = world.aws.seed_spot_instance(&world.config.cluster_id, subnet_a).await;
    let neighbour = world.aws.seed_spot_instance(&world.config.cluster_id, subnet_a).await;
    eventually("seeded nodes", Duration::from_secs(20), || async {
        (world.kube.nodes().len() == 2).then_some(())
    })
    .await;
    let node = node_name(&doomed);
    world.kube.add_pod(pod("shop", "bare").on_node(&node).grace_period(0).build());
    world
        .kube
        .add_pod(pod("shop", "web").on_node(&node).owned_by("ReplicaSet", "web").grace_period(0).build());
    (doomed, neighbour)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spot_warning_drains_at_once_replaces_in_the_emptier_zone_and_ignores_repeats() {
    let world = World::new("interrupt", |c| c.extra_top = cloudwatch_config("interrupt")).await;
    let logs = logs(&world).await;
    let (doomed, _neighbour) = two_spot_workers(&world).await;
    let node = node_name(&doomed);
    world
        .kube
        .add_pod(pod("kube-system", "flannel").on_node(&node).daemonset("flannel").grace_period(0).build());
    let service = world.service().await;
    world.proxy.reset_calls();
    world.proxy.spot_request_status(&doomed, "marked-for-termination");

    let body = spot_warning(&doomed).to_string().into_bytes();
    let started = std::time::Instant::now();
    let (status, answer) = post_event(&service, &body, true).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("handled")), "{answer}");
    let cordoned = world.kube.node(&node).and_then(|n| n.spec).and_then(|s| s.unschedulable);
    assert_eq!(cordoned, Some(true), "cordoned before the answer");
    let (status, answer) = post_event(&service, &body, true).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("duplicate")), "{answer}");

    eventually("interrupted instance terminated", Duration::from_secs(20), || async {
        (!world.aws.is_live(&doomed).await).then_some(())
    })
    .await;
    let drained_in = started.elapsed();
    let instances = world.expect_instances(2, Duration::from_secs(2)).await;
    let replacement =
        instances.iter().find(|(id, _, _)| id != &doomed && id != &_neighbour).expect("replacement");
    assert_eq!(replacement.1, "us-east-1b", "zone a keeps its other node; b was empty");
    let (status, answer) = post_event(&service, &body, true).await;
    assert_eq!(status, 200, "{answer}");
    // The interrupt worker runs at every sweep: let two pass, then nothing more was done.
    world.sweeps_pass(2).await;
    assert_eq!(world.proxy.count("CreateFleet"), 1, "{:?}", world.proxy.histogram());
    assert_eq!(world.proxy.count("TerminateInstances"), 1, "{:?}", world.proxy.histogram());
    let mut evicted: Vec<String> = world.kube.evictions().into_iter().map(|(p, _)| p).collect();
    evicted.sort();
    assert_eq!(evicted, ["shop/bare", "shop/web"], "DaemonSet pods stay; the rest moves, once");
    assert_eq!(world.kube.pod_deletes(), 0, "never a pod delete");
    assert!(world.kube.node(&node).is_none(), "Node deleted");
    assert_eq!(reasons_on(&world, &node), ["InterruptionNotice", "NodeRemoved"]);
    assert!(drained_in < Duration::from_secs(120), "inside the notice: {drained_in:?}");
    eprintln!("interruption: notice to instance terminated in {drained_in:?}");
    eprintln!("interruption: AWS calls {:?}", world.proxy.histogram());

    let audit = world.items("event#").await;
    let records = eventually("CloudWatch records", Duration::from_secs(10), || async {
        let records = records(&logs, "interrupt").await;
        (records.len() >= audit).then_some(records)
    })
    .await;
    let seen: Vec<(String, String)> = records
        .iter()
        .map(|r| {
            (r["kind"].as_str().unwrap_or("").to_string(), r["action"].as_str().unwrap_or("").to_string())
        })
        .collect();
    assert_eq!(records.len(), audit, "one record per audit event: {seen:?}");
    for expected in [("decision", "interrupt"), ("outcome", "replace"), ("outcome", "interrupt")] {
        assert!(seen.contains(&(expected.0.into(), expected.1.into())), "{expected:?} missing from {seen:?}");
    }
    assert!(records.iter().all(|r| r["cluster_id"] == "interrupt"));
    let metrics = service.metrics().await;
    for line in [
        "k3s_autoscaler_ec2_events_total{kind=\"spot_interruption\",outcome=\"handled\"} 1",
        "k3s_autoscaler_ec2_events_total{kind=\"spot_interruption\",outcome=\"duplicate\"} 1",
        "k3s_autoscaler_operations_total{pool=\"workers\",kind=\"interruption\",outcome=\"drained\"} 1",
        "k3s_autoscaler_decisions_total{pool=\"workers\",action=\"interrupt\",reason=\"spot_interruption\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
    assert!(!metrics.contains("k3s_autoscaler_cloudwatch_records_total{outcome=\"failed\"} 1"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_for_unmanaged_instances_or_other_types_change_nothing_and_bad_ones_are_refused() {
    let world = World::new("unmanaged", |_| {}).await;
    let (_, subnet_a) = &world.fixtures.subnets[0];
    let stranger = world.aws.seed_instance("unmanaged", subnet_a, false).await;
    let service = world.service().await;
    world.proxy.reset_calls();
    let requests_before = world.kube.requests().len();
    let body = spot_warning(&stranger).to_string().into_bytes();
    let (status, answer) = post_event(&service, &body, true).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("ignored")), "{answer}");
    let other = serde_json::json!({"detail-type": "EC2 Instance State-change Notification", "detail": {}});
    let (status, answer) = post_event(&service, other.to_string().as_bytes(), true).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("ignored")), "{answer}");
    assert_eq!(post_event(&service, b"{not json", true).await.0, 400);
    assert_eq!(post_event(&service, &body, false).await.0, 401, "same auth as /v1/alerts");
    // The interrupt worker runs at every sweep: let two pass, then nothing was done.
    world.sweeps_pass(2).await;
    for api in ["RunInstances", "CreateFleet", "TerminateInstances", "CreateTags"] {
        assert_eq!(world.proxy.count(api), 0, "{api}: {:?}", world.proxy.histogram());
    }
    let writes = kube_writes_since(&world, requests_before);
    assert!(writes.is_empty(), "no Kubernetes writes: {writes:?}");
    assert_eq!(world.items("interrupt#").await, 0);
    assert!(world.aws.is_live(&stranger).await);
    let metrics = service.metrics().await;
    assert!(
        metrics.contains("k3s_autoscaler_ec2_events_total{kind=\"spot_interruption\",outcome=\"ignored\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("k3s_autoscaler_ec2_events_total{kind=\"unparsed\",outcome=\"bad_request\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebalance_then_spot_warning_drains_and_replaces_once() {
    let world = World::new("rebalspot", |_| {}).await;
    let (doomed, neighbour) = two_spot_workers(&world).await;
    let node = node_name(&doomed);
    let service = world.service().await;
    world.proxy.reset_calls();

    // The usual EC2 order: the rebalance recommendation (default mode: cordon only), then
    // the two-minute warning for the same instance, which EC2 now reports as marked.
    let (status, answer) = post_event(&service, rebalance(&doomed).to_string().as_bytes(), true).await;
    assert_eq!((status, answer["outcome"].as_str()), (200, Some("handled")), "{answer}");
    world.proxy.spot_request_status(&doomed, "marked-for-termination");
    let warning = spot_warning(&doomed).to_string().into_bytes();
    let (status, upgraded) = post_event(&service, &warning, true).await;
    assert_eq!(status, 200, "{upgraded}");
    eventually("interrupted instance terminated", Duration::from_secs(20), || async {
        (!world.aws.is_live(&doomed).await).then_some(())
    })
    .await;
    assert_eq!(upgraded["outcome"].as_str(), Some("upgraded"), "{upgraded}");
    let instances = world.expect_instances(2, Duration::from_secs(1)).await;
    assert!(instances.iter().any(|(id, _, _)| id != &doomed && id != &neighbour), "{instances:?}");
    let mut evicted: Vec<String> = world.kube.evictions().into_iter().map(|(p, _)| p).collect();
    evicted.sort();
    assert_eq!(evicted, ["shop/bare", "shop/web"], "the warning overrides the drain blockers");
    // After TerminateInstances the worker deletes the Node, then closes the record and counts it.
    eventually("Node deleted", Duration::from_secs(5), || async {
        world.kube.node(&node).is_none().then_some(())
    })
    .await;
    service
        .metric_line(
            "k3s_autoscaler_operations_total{pool=\"workers\",kind=\"interruption\",outcome=\"drained\"} 1",
            Duration::from_secs(5),
        )
        .await;

    // Repeats and late copies stay harmless: the instance is gone.
    for body in [warning.clone(), rebalance(&doomed).to_string().into_bytes()] {
        let (status, answer) = post_event(&service, &body, true).await;
        assert_eq!((status, answer["outcome"].as_str()), (200, Some("ignored")), "{answer}");
    }
    assert_eq!(world.proxy.count("CreateFleet"), 1, "{:?}", world.proxy.histogram());
    assert_eq!(world.proxy.count("TerminateInstances"), 1, "{:?}", world.proxy.histogram());
    let metrics = service.metrics().await;
    for line in [
        "k3s_autoscaler_ec2_events_total{kind=\"rebalance_recommendation\",outcome=\"handled\"} 1",
        "k3s_autoscaler_ec2_events_total{kind=\"spot_interruption\",outcome=\"upgraded\"} 1",
        "k3s_autoscaler_operations_total{pool=\"workers\",kind=\"interruption\",outcome=\"drained\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forged_notices_for_on_demand_or_unmarked_spot_instances_change_nothing() {
    let world = World::new("forged", |_| {}).await;
    let (_, subnet_a) = &world.fixtures.subnets[0];
    let on_demand = world.aws.seed_instance("forged", subnet_a, true).await;
    let unmarked = world.aws.seed_spot_instance("forged", subnet_a).await;
    // moto keeps no spot request for a RunInstances spot launch: EC2's answer is empty.
    let no_request = world.aws.seed_spot_instance("forged", subnet_a).await;
    eventually("seeded nodes", Duration::from_secs(20), || async {
        (world.kube.nodes().len() == 3).then_some(())
    })
    .await;
    for instance in [&on_demand, &unmarked, &no_request] {
        let node = node_name(instance);
        world.kube.add_pod(
            pod("shop", &format!("web-{instance}")).on_node(&node).owned_by("ReplicaSet", "web").build(),
        );
    }
    let service = world.service().await;
    world.proxy.reset_calls();
    let requests_before = world.kube.requests().len();
    // EC2 answers for the unmarked spot instance as it does for any healthy one.
    world.proxy.spot_request_status(&unmarked, "fulfilled");

    for body in
        [spot_warning(&on_demand), spot_warning(&unmarked), spot_warning(&no_request), rebalance(&on_demand)]
    {
        let (status, answer) = post_event(&service, body.to_string().as_bytes(), true).await;
        assert_eq!((status, answer["outcome"].as_str()), (200, Some("unverified")), "{body}: {answer}");
    }
    let writes = kube_writes_since(&world, requests_before);
    assert!(writes.is_empty(), "no cordon, eviction or event: {writes:?}");
    for api in ["RunInstances", "CreateFleet", "TerminateInstances", "CreateTags"] {
        assert_eq!(world.proxy.count(api), 0, "{api}: {:?}", world.proxy.histogram());
    }
    assert_eq!(world.items("interrupt#").await, 0);
    for instance in [&on_demand, &unmarked, &no_request] {
        assert!(world.aws.is_live(instance).await);
    }
    let metrics = service.metrics().await;
    for line in [
        "k3s_autoscaler_ec2_events_total{kind=\"spot_interruption\",outcome=\"unverified\"} 3",
        "k3s_autoscaler_ec2_events_total{kind=\"rebalance_recommendation\",outcome=\"unverified\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}
