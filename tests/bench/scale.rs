//! Scale: the fake Kubernetes API loaded with N Ready pool nodes (each the node of a managed
//! instance in moto) and 30 pods per node; the service's CPU time, API requests and AWS calls
//! per sweep cycle, its memory, and the time from a scale-down alert to the chosen node being
//! cordoned. Run at each size of `mode.sizes` to show how the figures grow.

use std::time::{Duration, Instant};

use aws_sdk_ec2::types::{ResourceType, Tag, TagSpecification};

use crate::proc::{cpu_time, mib, ms, rss_kib};
use crate::support::alertmanager::Alertmanager;
use crate::support::kube_api::{FakeKube, node, pod};
use crate::support::service::{Service, ServiceConfig, prepare};
use crate::support::{aws::Aws, moto::Moto, payload, proxy::Proxy};
use crate::{Mode, Row};

const SECTION: &str = "4 scale";

pub async fn run(mode: &Mode) -> Vec<Row> {
    let mut rows = Vec::new();
    for &nodes in &mode.sizes {
        rows.extend(crate::print_rows(one_size(nodes, mode).await));
    }
    rows
}

async fn one_size(nodes: usize, mode: &Mode) -> Vec<Row> {
    let moto = Moto::start();
    let proxy = Proxy::start(&moto.url).await;
    let aws = Aws::new(&moto.url).await;
    let fixtures = aws.fixtures().await;
    let kube = FakeKube::start().await;
    let cluster = format!("bench-scale-{nodes}");
    let mut config = ServiceConfig::new(&cluster, &proxy.url);
    config.max = nodes as u32 + 10;
    // The service reads a real Alertmanager's API every sweep, as deployed (one GET, plus
    // the DynamoDB Query of the stored signals); BENCH_ALERTMANAGER=0 measures without it,
    // BENCH_ALERTMANAGER=idle with Alertmanager running but not read (its own share of the
    // two cores, apart from the sync's).
    let alertmanager_mode = std::env::var("BENCH_ALERTMANAGER").unwrap_or_default();
    let alertmanager = match alertmanager_mode.as_str() {
        "0" => None,
        _ => {
            let port = crate::support::moto::free_port();
            if alertmanager_mode != "idle" {
                config.extra_top = format!("[alertmanager]\nurls = [\"http://127.0.0.1:{port}\"]");
            }
            let dir = tempfile::tempdir().expect("tempdir");
            let quiet = "route:\n  receiver: \"null\"\nreceivers:\n  - name: \"null\"\n";
            Some(Alertmanager::with_config_on(dir, quiet, port).await)
        }
    };
    let instances = launch(&aws, &cluster, &fixtures.subnets, nodes).await;
    let names: Vec<String> = instances.iter().map(|(id, _)| format!("node-{id}")).collect();
    kube.add_nodes(
        instances
            .iter()
            .zip(&names)
            .map(|((id, az), name)| {
                node(name)
                    .provider_id(&format!("aws:///{az}/{id}"))
                    .label("k3s-autoscaler/pool", "workers")
                    .ready(true)
                    .build()
            })
            .collect(),
    );
    let pods = names
        .iter()
        .flat_map(|name| {
            (0..mode.pods_per_node).map(move |j| {
                pod("apps", &format!("{name}-{j}")).on_node(name).owned_by("ReplicaSet", "web").build()
            })
        })
        .collect();
    kube.add_pods(pods);
    let prepared = prepare(&config, &fixtures, &kube);
    let service = Service::start(&prepared).await;
    let pid = service.pid();
    let label = |what: &str| format!("{nodes} nodes: {what}");

    // The five caches have listed once each has started its watch.
    let synced = Instant::now();
    while kube.count("GET", "watch=true") < 5 && synced.elapsed() < Duration::from_secs(300) {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let cached = kube.count("GET", "watch=true") >= 5;
    if std::env::var_os("BENCH_DEBUG").is_some() {
        eprintln!("kube requests after {:?}: {:#?}", synced.elapsed(), kube.requests());
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // A sweep cycle is one reconcile of the pool, which reads the pool record once: cycles are
    // counted by GetItem, as moto's DescribeInstances of 1,000 instances takes longer than
    // the 1 s sweep interval.
    let (cpu0, kube0, aws0, get0) =
        (cpu_time(pid), kube.requests().len(), proxy.calls().len(), proxy.count("GetItem"));
    tokio::time::sleep(Duration::from_secs(mode.sweeps)).await; // sweep_interval is 1 s
    let (cpu1, kube1, aws1, get1) =
        (cpu_time(pid), kube.requests().len(), proxy.calls().len(), proxy.count("GetItem"));
    let sweeps = (get1 - get0).max(1) as f64;
    let cpu_total = cpu0.zip(cpu1).map(|(a, b)| b - a);
    let cpu = cpu_total.map(|total| total.div_f64(sweeps));
    let cpu_per_second = cpu_total.map(|total| total.div_f64(mode.sweeps as f64));
    let kube_per_sweep = (kube1 - kube0) as f64 / sweeps;
    let aws_per_sweep = (aws1 - aws0) as f64 / sweeps;
    let rss = rss_kib(pid);

    let sent = Instant::now();
    let down = payload(
        "firing",
        serde_json::json!({"alertname": "WorkersIdle", "autoscaler": "scale-down"}),
        "fp-idle",
    );
    let status = service.post(&down).await;
    let mut cordoned = None;
    while status == 200 && sent.elapsed() < Duration::from_secs(60) {
        if kube.count("PATCH", "/api/v1/nodes/") > 0 {
            cordoned = Some(sent.elapsed());
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    drop(alertmanager);
    let only = |v: Option<String>| if cached { v } else { None };
    vec![
        Row::new(SECTION, label("pods"), Some((nodes * mode.pods_per_node).to_string()), ""),
        Row::new(
            SECTION,
            label("sweep cycles measured"),
            only(Some(format!("{sweeps} in {} s", mode.sweeps))),
            "",
        ),
        Row::new(
            SECTION,
            label("CPU per sweep cycle"),
            only(cpu.map(ms)),
            if nodes >= 1000 { "< 20 ms" } else { "" },
        ),
        Row::new(SECTION, label("CPU per second, relists included"), only(cpu_per_second.map(ms)), ""),
        Row::new(
            SECTION,
            label("Kubernetes API requests per cycle"),
            only(Some(format!("{kube_per_sweep:.1}"))),
            "O(changes): ~0",
        ),
        Row::new(SECTION, label("AWS calls per cycle"), only(Some(format!("{aws_per_sweep:.1}"))), ""),
        Row::new(SECTION, label("RSS"), only(rss.map(mib)), ""),
        Row::new(SECTION, label("scale-down alert → candidate cordoned"), cordoned.map(ms), ""),
    ]
}

/// Launches `count` managed pool instances in moto directly, split over the zones, 100 per
/// call, each call in a /24 subnet of its own (moto fails with a 500 when a subnet runs out of
/// addresses, and on very large single launches).
async fn launch(
    aws: &Aws,
    cluster: &str,
    subnets: &[(String, String)],
    count: usize,
) -> Vec<(String, String)> {
    let first = subnets.first().map(|(_, id)| id.clone()).unwrap_or_default();
    let described = aws.ec2.describe_subnets().subnet_ids(first).send().await.expect("describe subnet");
    let vpc = described.subnets().first().and_then(|s| s.vpc_id()).expect("vpc id").to_string();
    let mut next_cidr = 16;
    let tag = |k: &str, v: &str| Tag::builder().key(k).value(v).build();
    let tags = vec![
        tag("k3s-autoscaler/managed-by", "k3s-autoscaler"),
        tag("k3s-autoscaler/cluster", cluster),
        tag("k3s-autoscaler/pool", "workers"),
    ];
    let mut launched = Vec::new();
    for (i, (az, _)) in subnets.iter().enumerate() {
        let mut left = count / subnets.len() + usize::from(i < count % subnets.len());
        while left > 0 {
            let n = left.min(100);
            left -= n;
            let created = aws
                .ec2
                .create_subnet()
                .vpc_id(&vpc)
                .cidr_block(format!("10.20.{next_cidr}.0/24"))
                .availability_zone(az)
                .send()
                .await
                .expect("create a subnet");
            next_cidr += 1;
            let subnet = created.subnet().and_then(|s| s.subnet_id()).expect("subnet id").to_string();
            let out = aws
                .ec2
                .run_instances()
                .image_id("ami-12c6146b")
                .subnet_id(subnet)
                .min_count(n as i32)
                .max_count(n as i32)
                .tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::Instance)
                        .set_tags(Some(tags.clone()))
                        .build(),
                )
                .send()
                .await
                .expect("launch instances in moto");
            launched.extend(
                out.instances().iter().map(|i| (i.instance_id().unwrap_or_default().to_string(), az.clone())),
            );
        }
    }
    launched
}
