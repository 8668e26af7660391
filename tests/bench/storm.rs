//! The duplicate storm (the same firing payload from many concurrent clients, as Alertmanager
//! HA replicas and retries send it) against the service and against a bare axum handler in
//! the same run; and the service's footprint: start → ready, memory idle and under the storm,
//! release binary size.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::proc::{mib, ms, percentile, rss_kib};
use crate::support::service::TOKEN;
use crate::support::{World, eventually, scale_up};
use crate::{Mode, Row};

const STORM: &str = "2 duplicate storm";
const FOOTPRINT: &str = "3 footprint";

/// AWS calls that write or act.
const WRITES: [&str; 8] = [
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "BatchWriteItem",
    "RunInstances",
    "CreateFleet",
    "TerminateInstances",
    "CreateTags",
];

/// What one storm measured.
struct Storm {
    ok: usize,
    per_second: f64,
    p99: Option<Duration>,
}

pub async fn run(mode: &Mode) -> Vec<Row> {
    let world = World::new("bench-storm", |_| {}).await;
    let started = Instant::now();
    let service = world.service().await;
    let ready = started.elapsed();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let idle = rss_kib(service.pid());

    // The first notification acts (one launch); wait until that launch is finished.
    let payload = scale_up("fp-storm").to_string();
    let first = service.post(&serde_json::from_str(&payload).expect("payload")).await;
    eventually("the first launch to finish", Duration::from_secs(30), || async {
        (world.instances().await.len() == 1 && world.op_finished().await).then_some(())
    })
    .await;
    world.proxy.reset_calls();

    let peak = Arc::new(AtomicU64::new(0));
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = tokio::spawn(sample_rss(service.pid(), peak.clone(), sampling.clone()));
    let ours = storm(&format!("{}/v1/alerts", service.url), &payload, mode).await;
    sampling.store(false, Ordering::SeqCst);
    let _ = sampler.await;
    let writes: usize = WRITES.iter().map(|api| world.proxy.count(api)).sum();
    let histogram = world.proxy.histogram();

    let bare_url = bare_handler();
    let bare = storm(&format!("{bare_url}/v1/alerts"), &payload, mode).await;
    let ratio = (bare.per_second > 0.0).then(|| ours.per_second / bare.per_second);
    let complete = first == 200 && ours.ok == mode.storm_requests && bare.ok == mode.storm_requests;
    let only = |v: Option<String>| if complete { v } else { None };
    let binary = std::fs::metadata(env!("CARGO_BIN_EXE_k3s-autoscaler")).ok().map(|m| m.len());
    vec![
        Row::new(
            STORM,
            "requests × concurrent clients",
            only(Some(format!("{} × {}", mode.storm_requests, mode.storm_clients))),
            "",
        ),
        Row::new(STORM, "service: requests/s", only(Some(format!("{:.0}", ours.per_second))), "≥ 1,000"),
        Row::new(STORM, "service: p99 latency", only(ours.p99.map(ms)), ""),
        Row::new(STORM, "bare axum handler: requests/s", only(Some(format!("{:.0}", bare.per_second))), ""),
        Row::new(STORM, "bare axum handler: p99 latency", only(bare.p99.map(ms)), ""),
        Row::new(STORM, "service / bare (requests/s)", only(ratio.map(|r| format!("{r:.2}×"))), "≥ 0.5×"),
        Row::new(STORM, "AWS writes after the first", only(Some(writes.to_string())), "0").must_be("0"),
        Row::new(STORM, "AWS calls during the storm (sweeps' reads)", Some(format!("{histogram:?}")), ""),
        Row::new(FOOTPRINT, "start → /readyz OK", Some(ms(ready)), "< 500 ms"),
        Row::new(FOOTPRINT, "RSS idle", idle.map(mib), "< 30 MiB"),
        Row::new(
            FOOTPRINT,
            "RSS peak under the storm",
            match peak.load(Ordering::SeqCst) {
                0 => None,
                kib => Some(mib(kib)),
            },
            "< 30 MiB",
        ),
        Row::new(FOOTPRINT, "binary size (this build's profile)", binary.map(|b| mib(b / 1024)), ""),
    ]
}

/// Sends `mode.storm_requests` posts of `payload` from `mode.storm_clients` concurrent clients.
async fn storm(url: &str, payload: &str, mode: &Mode) -> Storm {
    let client =
        reqwest::Client::builder().pool_max_idle_per_host(mode.storm_clients).build().expect("client");
    let remaining = Arc::new(AtomicU64::new(mode.storm_requests as u64));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..mode.storm_clients {
        let (client, url, body, remaining) =
            (client.clone(), url.to_string(), payload.to_string(), remaining.clone());
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut ok = 0;
            while remaining.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok() {
                let sent = Instant::now();
                let response = client
                    .post(&url)
                    .header("authorization", format!("Bearer {TOKEN}"))
                    .header("content-type", "application/json")
                    .body(body.clone())
                    .send()
                    .await;
                if response.is_ok_and(|r| r.status().is_success()) {
                    ok += 1;
                }
                latencies.push(sent.elapsed());
            }
            (ok, latencies)
        }));
    }
    let mut latencies = Vec::new();
    let mut ok = 0;
    for task in tasks {
        if let Ok((n, l)) = task.await {
            ok += n;
            latencies.extend(l);
        }
    }
    let took = started.elapsed().as_secs_f64();
    Storm { ok, per_second: ok as f64 / took, p99: percentile(&latencies, 99.0) }
}

/// A bare axum handler (parse the JSON body, answer 200) on its own 2-thread runtime, like the
/// service's: the baseline for what this machine can serve at all.
fn bare_handler() -> String {
    let (sender, receiver) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("bare runtime");
        runtime.block_on(async move {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind bare");
            let url = format!("http://{}", listener.local_addr().expect("addr"));
            let _ = sender.send(url);
            let app = axum::Router::new()
                .route("/v1/alerts", axum::routing::post(|_: axum::Json<serde_json::Value>| async { "{}" }));
            axum::serve(listener, app).await.expect("bare serve");
        });
    });
    receiver.recv().expect("bare handler url")
}

async fn sample_rss(pid: u32, peak: Arc<AtomicU64>, running: Arc<AtomicBool>) {
    while running.load(Ordering::SeqCst) {
        if let Some(kib) = rss_kib(pid) {
            peak.fetch_max(kib, Ordering::SeqCst);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
