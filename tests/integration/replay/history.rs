//! `replay --from-prometheus` against the real Prometheus: two past days of node-exporter and
//! kube-state-metrics series of a known shape, backfilled with `promtool tsdb
//! create-blocks-from openmetrics`, read back through the loader as a profile.
//!
//! The shape (5 reference workers, 10 CPUs): 15 % at night on the first day and 20 % on the
//! second, 80 % from 09:00 to 22:00, and on the second day a flash sale at 12:00 for 30 minutes
//! that saturates the workers and leaves 4 CPUs of requests Pending (140 %). Decoys that a
//! wrong query would count: a busy control-plane node, the workers' `user` counters, a
//! Running pod's requests, the sale pods' requests while they are not Pending.

use std::fmt::Write;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::harness::history::{self, Source};
use super::harness::profile::default_day;
use crate::support::prometheus::Prometheus;

const DAY: i64 = 86_400;
const STEP: Duration = Duration::from_secs(300);
/// Seconds between two backfilled samples (a scrape).
const SCRAPE: i64 = 60;

/// Worker CPUs in use at `t` seconds into the history.
fn used(t: i64) -> f64 {
    let (day, minute) = (t / DAY, t % DAY / 60);
    match minute {
        720..750 if day == 1 => 10.0,
        540..1320 => 8.0,
        _ if day == 0 => 1.5,
        _ => 2.0,
    }
}

/// Whether the sale's pods are Pending at `t`.
fn sale(t: i64) -> bool {
    t / DAY == 1 && (720..750).contains(&(t % DAY / 60))
}

/// Two days of history from `day0` (unix seconds) in the OpenMetrics text format, one
/// series after the other as promtool wants them.
fn openmetrics(day0: i64) -> String {
    let times = || (0..=2 * DAY).step_by(SCRAPE as usize);
    let mut out = String::from("# TYPE node_cpu_seconds counter\n");
    let nodes =
        (1..=5).map(|i| (format!("worker-{i}"), "worker")).chain([("server".into(), "control-plane")]);
    for (node, role) in nodes {
        for cpu in 0..2 {
            for mode in ["idle", "user"] {
                let mut seconds = 0.0;
                for t in times() {
                    // Each of the 10 worker CPUs carries a tenth of the used CPUs.
                    let busy = if role == "worker" { used(t) / 10.0 } else { 0.9 };
                    seconds += SCRAPE as f64 * if mode == "idle" { 1.0 - busy } else { busy };
                    let _ = writeln!(
                        out,
                        "node_cpu_seconds_total{{cpu=\"{cpu}\",mode=\"{mode}\",node=\"{node}\",pool=\"workers\",role=\"{role}\"}} {seconds} {}",
                        day0 + t
                    );
                }
            }
        }
    }
    // Four sale pods of 1 CPU, Pending only in the sale; one Running batch pod of 2 CPUs.
    let pods = (0..4).map(|i| (format!("shop-sale-{i}"), 1.0, true)).chain([("report-0".into(), 2.0, false)]);
    let pods: Vec<(String, f64, bool)> = pods.collect();
    out.push_str("# TYPE kube_pod_status_phase gauge\n");
    for (pod, _, in_sale) in &pods {
        for phase in ["Pending", "Running"] {
            for t in times() {
                let pending = *in_sale && sale(t);
                let value = u8::from((phase == "Pending") == pending);
                let _ = writeln!(
                    out,
                    "kube_pod_status_phase{{namespace=\"shop\",phase=\"{phase}\",pod=\"{pod}\"}} {value} {}",
                    day0 + t
                );
            }
        }
    }
    out.push_str("# TYPE kube_pod_container_resource_requests gauge\n");
    for (pod, cpus, _) in &pods {
        for t in times() {
            let _ = writeln!(
                out,
                "kube_pod_container_resource_requests{{container=\"app\",namespace=\"shop\",node=\"\",pod=\"{pod}\",resource=\"cpu\",unit=\"core\"}} {cpus} {}",
                day0 + t
            );
        }
    }
    out.push_str("# EOF\n");
    out
}

/// The share of 10 CPUs expected at `minute` of the day, or `None` within 10 minutes of a
/// change (each point is the rate over the 5 minutes before it).
fn expected(minute: i64) -> Option<f64> {
    let near = |edge: i64| (minute - edge).abs() < 10 || (minute + 1440 - edge).abs() < 10;
    if [0, 540, 720, 750, 1320].into_iter().any(near) {
        return None;
    }
    Some(match minute {
        720..750 => 1.4,
        540..1320 => 0.8,
        _ => 0.2,
    })
}

#[tokio::test]
async fn a_backfilled_history_becomes_the_days_profile() {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("clock").as_secs() as i64;
    // Two whole UTC days ending at yesterday's midnight: older than any head block, well
    // within Prometheus' default 15-day retention (counted from the newest sample).
    let day0 = (now / DAY - 3) * DAY;
    let dir = tempfile::tempdir().expect("tempdir");
    let input = dir.path().join("history.om");
    std::fs::write(&input, openmetrics(day0)).expect("write openmetrics");
    let data = dir.path().join("data");
    let backfill = std::process::Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(&data)
        .output()
        .expect("run promtool (apt package prometheus)");
    assert!(backfill.status.success(), "promtool: {}", String::from_utf8_lossy(&backfill.stderr));
    let prometheus = Prometheus::start(dir, "global:\n  scrape_interval: 15s\n").await;

    let until = UNIX_EPOCH + Duration::from_secs((day0 + 2 * DAY) as u64);
    let source =
        Source { url: prometheus.url.clone(), since: Duration::from_secs(2 * DAY as u64), until, step: STEP };
    let profile = history::profile(&source, &default_day(), 5).await.expect("profile from the history");

    assert_eq!(profile.load.len(), 288, "one point every 5 minutes");
    assert_eq!(profile.step(), STEP);
    assert!(profile.flash_sale.is_empty(), "the history has its own sale");
    let base = default_day();
    assert_eq!(
        (profile.pool.max, profile.prices.spot),
        (base.pool.max, base.prices.spot),
        "pool and prices kept"
    );
    let mut checked = 0;
    for (i, share) in profile.load.iter().enumerate() {
        let minute = i as i64 * 5;
        let Some(want) = expected(minute) else { continue };
        assert!(
            (share - want).abs() < 0.01,
            "{:02}:{:02}: {share} instead of {want}",
            minute / 60,
            minute % 60
        );
        checked += 1;
    }
    assert!(checked > 250, "only {checked} points away from a change");
    // The replay offers 14 CPUs in the sale and 2 at night.
    let at = |h: u64, m: u64| profile.load_at(Duration::from_secs(h * 3600 + m * 60));
    assert!((at(12, 15) - 14.0).abs() < 0.1 && (at(3, 0) - 2.0).abs() < 0.1, "{} {}", at(12, 15), at(3, 0));

    // The same Prometheus a month earlier has nothing: a clear error, not a quiet profile.
    let empty = Source { until: until - Duration::from_secs(30 * DAY as u64), ..source };
    let e = history::profile(&empty, &default_day(), 5).await.expect_err("no samples then").to_string();
    assert!(e.contains(&prometheus.url) && e.contains("no samples of"), "{e}");
}
