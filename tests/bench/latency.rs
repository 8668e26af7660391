//! Alert delivered → CreateFleet issued, over many scale-up notifications that each really
//! launch: between notifications the pool is reset behind the service's back (instances
//! terminated, the state item deleted, directly on moto so it is not counted), then the alert
//! resolves, which the service reads the pool for, as a pool that went quiet would have been
//! read by its sweeps. Besides the latency, the service's own time: the latency minus the time
//! some AWS call was in flight, which moto's speed does not move.

use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;

use crate::proc::{ms, percentile};
use crate::support::proxy::CallTiming;
use crate::support::{World, payload, scale_up};
use crate::{Mode, Row};

const SECTION: &str = "1 alert → CreateFleet";

/// One notification: latency to CreateFleet, calls before it, and its sequential depth.
struct Sample {
    latency: Duration,
    /// The latency minus the time at least one AWS call was in flight.
    own: Duration,
    calls_before: usize,
    depth: usize,
}

/// moto never forgets an instance: its DescribeInstances slows from ~6 ms to ~300 ms over 200
/// launches (measured), which would time moto, not the service. So a fresh moto (and service)
/// serves each batch of this many notifications.
const PER_MOTO: usize = 25;

pub async fn run(mode: &Mode) -> Vec<Row> {
    let mut samples = Vec::new();
    let mut cold = Vec::new();
    for batch in 0..mode.notifications.div_ceil(PER_MOTO) {
        let world = World::new(&format!("bench-latency-{batch}"), |c| c.max = 1000).await;
        // Nodes are not needed here, and the joiner's polling would load moto.
        world.joiner.pause();
        let service = world.service().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
        let count = PER_MOTO.min(mode.notifications - batch * PER_MOTO);
        // The first notification after start also opens the SDK's connections: a warm-up,
        // reported on its own line.
        for i in 0..=count {
            let fingerprint = format!("fp-latency-{i}");
            world.proxy.reset_calls();
            let sent = Instant::now();
            let status = service.post(&scale_up(&fingerprint)).await;
            if status != 200 {
                eprintln!("notification {i}: status {status}");
                continue;
            }
            match wait_for_launch(&world, sent).await {
                Some(sample) if i == 0 => cold.push(sample.latency),
                Some(sample) => samples.push(sample),
                None => eprintln!("notification {i}: no CreateFleet within 10 s"),
            }
            reset(&world, &service, &fingerprint).await;
        }
    }
    let latencies: Vec<Duration> = samples.iter().map(|s| s.latency).collect();
    let own: Vec<Duration> = samples.iter().map(|s| s.own).collect();
    let complete = samples.len() == mode.notifications;
    let figure = |v: Option<String>| if complete { v } else { None };
    let mean_calls = (!samples.is_empty())
        .then(|| samples.iter().map(|s| s.calls_before).sum::<usize>() as f64 / samples.len() as f64);
    let mut depths: Vec<usize> = samples.iter().map(|s| s.depth).collect();
    depths.sort();
    let depth_figure = (!depths.is_empty())
        .then(|| format!("{} (max {})", depths[depths.len() / 2], depths[depths.len() - 1]));
    vec![
        Row::new(SECTION, "notifications, each launching", figure(Some(samples.len().to_string())), "≥ 200"),
        Row::new(SECTION, "p50", figure(percentile(&latencies, 50.0).map(ms)), ""),
        Row::new(SECTION, "p99", figure(percentile(&latencies, 99.0).map(ms)), "< 100 ms"),
        Row::new(SECTION, "max", figure(percentile(&latencies, 100.0).map(ms)), ""),
        Row::new(
            SECTION,
            "service's own time (latency minus time waiting on AWS), p50",
            figure(percentile(&own, 50.0).map(ms)),
            "",
        ),
        Row::new(SECTION, "service's own time, p99", figure(percentile(&own, 99.0).map(ms)), "< 10 ms"),
        Row::new(
            SECTION,
            format!("first notification after start, max of {} (not in the above)", cold.len()),
            percentile(&cold, 100.0).map(ms),
            "",
        ),
        Row::new(
            SECTION,
            "AWS calls up to and incl. CreateFleet (mean)",
            figure(mean_calls.map(|c| format!("{:.1}", c + 1.0))),
            "",
        ),
        Row::new(
            SECTION,
            "sequential AWS round trips incl. CreateFleet, median (max)",
            figure(depth_figure),
            "2",
        ),
    ]
}

/// Waits for the CreateFleet the notification sent at `sent` causes.
async fn wait_for_launch(world: &World, sent: Instant) -> Option<Sample> {
    let deadline = sent + Duration::from_secs(10);
    while Instant::now() < deadline {
        let timings = world.proxy.timings();
        if let Some(run) = timings.iter().find(|t| t.api == "CreateFleet") {
            // Calls that started before the notification (a sweep's, the last reset's) are
            // not its round trips.
            let before: Vec<&CallTiming> =
                timings.iter().filter(|t| t.start >= sent && t.end <= run.start).collect();
            if std::env::var_os("BENCH_DEBUG").is_some() {
                let at = |i: Instant| i.duration_since(sent).as_secs_f64() * 1000.0;
                let calls: Vec<String> = timings
                    .iter()
                    .map(|t| format!("{} {:.1}-{:.1}", t.api, at(t.start), at(t.end)))
                    .collect();
                eprintln!("calls: {calls:?}");
            }
            let latency = run.start.duration_since(sent);
            return Some(Sample {
                latency,
                own: latency.saturating_sub(waiting(&timings, sent, run.start)),
                calls_before: before.len(),
                depth: depth(&before) + 1,
            });
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    None
}

/// The longest chain of calls each starting after the previous one answered: how many round
/// trips happened one after another. Calls issued together but started late by a busy CPU can
/// look sequential, so the median is the figure; the max shows that jitter.
fn depth(calls: &[&CallTiming]) -> usize {
    let mut sorted: Vec<&&CallTiming> = calls.iter().collect();
    sorted.sort_by_key(|c| c.start);
    let mut chain = vec![0usize; sorted.len()];
    for i in 0..sorted.len() {
        let longest_before =
            (0..i).filter(|&j| sorted[j].end <= sorted[i].start).map(|j| chain[j]).max().unwrap_or(0);
        chain[i] = longest_before + 1;
    }
    chain.into_iter().max().unwrap_or(0)
}

/// How long, between `from` and `to`, at least one AWS call was in flight (the union of the
/// calls' spans).
fn waiting(timings: &[CallTiming], from: Instant, to: Instant) -> Duration {
    let mut spans: Vec<(Instant, Instant)> = timings
        .iter()
        .map(|t| (t.start.max(from), t.end.min(to)))
        .filter(|(start, end)| start < end)
        .collect();
    spans.sort();
    let mut total = Duration::ZERO;
    let mut current: Option<(Instant, Instant)> = None;
    for (start, end) in spans {
        current = match current {
            Some((s, e)) if start <= e => Some((s, e.max(end))),
            Some((s, e)) => {
                total += e - s;
                Some((start, end))
            }
            None => Some((start, end)),
        };
    }
    total + current.map_or(Duration::ZERO, |(s, e)| e - s)
}

/// Lets the launch's record land, then deletes the signal, terminates the pool's instances and
/// deletes its state, and resolves the alert: the service reads the pool again (one sweep's
/// worth of reads) and the next notification launches again.
async fn reset(world: &World, service: &crate::support::service::Service, fingerprint: &str) {
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let timings = world.proxy.timings();
        let run_end = timings.iter().find(|t| t.api == "CreateFleet").map(|t| t.end);
        if run_end.is_some_and(|end| timings.iter().any(|t| t.api == "UpdateItem" && t.start >= end)) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    // The signal goes first: a sweep between the two deletes must not launch again.
    let delete = |sk: String| {
        world
            .aws
            .dynamodb
            .delete_item()
            .table_name(&world.config.table)
            .key("cluster_id", AttributeValue::S(world.config.cluster_id.clone()))
            .key("sk", AttributeValue::S(sk))
            .send()
    };
    let _ = delete(format!("signal#workers#{fingerprint}")).await;
    let ids: Vec<String> = world.instances().await.into_iter().map(|(id, _, _)| id).collect();
    if !ids.is_empty() {
        let _ = world.aws.ec2.terminate_instances().set_instance_ids(Some(ids)).send().await;
    }
    let _ = delete("state#workers".into()).await;
    let resolved_at = Instant::now();
    let resolved = payload(
        "resolved",
        serde_json::json!({"alertname": "WorkerCpuHigh", "autoscaler": "scale-up"}),
        fingerprint,
    );
    if service.post(&resolved).await != 200 {
        eprintln!("resolve of {fingerprint} refused");
        return;
    }
    // The resolve's reconcile reads the pool and lists its instances; then the service is
    // left to settle (no AWS call for 50 ms) so the next notification starts on a quiet pool.
    let deadline = Instant::now() + Duration::from_secs(3);
    let mut last_change = (0, Instant::now());
    while Instant::now() < deadline {
        let timings = world.proxy.timings();
        let listed = timings.iter().any(|t| t.api == "DescribeInstances" && t.start >= resolved_at);
        if timings.len() != last_change.0 {
            last_change = (timings.len(), Instant::now());
        }
        if listed && last_change.1.elapsed() >= Duration::from_millis(50) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
