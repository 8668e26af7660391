//! Your own history as the load (`--from-prometheus URL --since DUR`): two range queries to
//! the Prometheus that feeds the rules — the CPU the workers used, and the CPU requested by
//! Pending pods — folded onto one day, so last week can be replayed through a retuned rule
//! file before it ships (docs/cost.md).
//!
//! The fold keeps the query's step (5 minutes by default) and takes, for each time of day,
//! the **busiest** day of the window: an average would flatten a flash sale that happened
//! once, and a rule file is judged by the spikes it has to catch. The replayed day is then
//! an upper bound of any single day in the window (a Monday peak and a Friday sale land in
//! the same day), which is what a check before shipping wants.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use k3s_autoscaler::core::text::bounded;

use super::profile::{DAY, Profile, clock};
use crate::support::sim::model::WORKER_CPUS;

/// Bound of a text quoted from the answer (an HTML page, an error) in an error.
const EXCERPT_MAX: usize = 200;
/// Prometheus refuses a range query of more than 11,000 points per series.
const MAX_POINTS: u64 = 11_000;
/// Whole answer from Prometheus.
const TIMEOUT: Duration = Duration::from_secs(60);

/// CPUs the workers used: one minus the idle share of each worker CPU, as the scaling rules
/// measure busy (alert-rules/autoscaler.rules.yaml), summed over every worker. `{window}` is
/// the step, so each point covers the step before it.
const USED: &str = r#"sum(1 - rate(node_cpu_seconds_total{mode="idle", role="worker"}[{window}]))"#;
/// CPUs requested by Pending pods (kube-state-metrics), the demand no node served; zero
/// where kube-state-metrics reported pods and requests but none Pending, nothing (an error)
/// where either series is missing, e.g. a kube-state-metrics older than 2.0.
const PENDING: &str = r#"sum(max by (namespace, pod, container) (kube_pod_container_resource_requests{resource="cpu"}) * on (namespace, pod) group_left () (max by (namespace, pod) (kube_pod_status_phase{phase="Pending"}) == 1)) or on () 0 * (count(kube_pod_container_resource_requests{resource="cpu"}) + count(kube_pod_status_phase))"#;

/// Which history to read.
#[derive(Clone, Debug)]
pub struct Source {
    /// Prometheus' base URL, e.g. `http://prometheus:9090`.
    pub url: String,
    /// How far back from `until`.
    pub since: Duration,
    /// End of the window (now by default).
    pub until: SystemTime,
    /// Between two points of the queries and of the profile; divides a day.
    pub step: Duration,
}

/// Why no profile could be read; each names the URL, and the query where there was one.
#[derive(Debug, thiserror::Error)]
pub enum HistoryError {
    #[error("Prometheus at {url} is unreachable: {reason}")]
    Unreachable { url: String, reason: String },
    #[error("Prometheus at {url} answered {status} to {query}: {detail}")]
    Refused { url: String, query: String, status: u16, detail: String },
    #[error("{url} did not answer as a Prometheus API (HTTP {status}) to {query}: {excerpt}")]
    NotPrometheus { url: String, query: String, status: u16, excerpt: String },
    #[error(
        "Prometheus at {url} has no samples of {query} between {start} and {end} (wrong URL, labels, or window?)"
    )]
    Empty { url: String, query: String, start: String, end: String },
    #[error("Prometheus at {url} answered {value:?} at {at} to {query}: not a number of CPUs")]
    NotANumber { url: String, query: String, value: String, at: String },
    #[error("no sample at {time} of any day in the window from Prometheus at {url} ({query} and {other})")]
    Gap { url: String, query: String, other: String, time: String },
    #[error("the history from {url} makes no profile for {reference_workers} reference workers: {reason}")]
    NotAProfile { url: String, reference_workers: u32, reason: String },
    #[error("{0}")]
    Window(String),
}

/// One point of a range query: unix seconds, value.
pub type Point = (i64, f64);

/// The default profile's pool and prices with the load of `source`'s history, as a share of
/// `reference_workers` workers of 2 CPUs. Flash sales are dropped: the history has its own.
pub async fn profile(
    source: &Source,
    base: &Profile,
    reference_workers: u32,
) -> Result<Profile, HistoryError> {
    let (start, end) = window(source)?;
    let client = reqwest::Client::builder().timeout(TIMEOUT).build().map_err(|e| {
        HistoryError::Unreachable { url: source.url.clone(), reason: format!("HTTP client: {e}") }
    })?;
    let used_query = USED.replace("{window}", &prom_duration(source.step));
    let used = query_range(&client, source, &used_query, start, end).await?;
    let pending = query_range(&client, source, PENDING, start, end).await?;
    let cpus = fold_day(&used, &pending, source.step).map_err(|time| HistoryError::Gap {
        url: source.url.clone(),
        query: used_query.clone(),
        other: PENDING.into(),
        time,
    })?;
    let capacity = f64::from(reference_workers) * WORKER_CPUS;
    let profile = Profile {
        reference_workers,
        load: cpus.iter().map(|c| c / capacity).collect(),
        load_step: Some(humantime::format_duration(source.step).to_string()),
        flash_sale: Vec::new(),
        ..base.clone()
    };
    profile.check().map_err(|reason| HistoryError::NotAProfile {
        url: source.url.clone(),
        reference_workers,
        reason,
    })?;
    Ok(profile)
}

/// Start and end (unix seconds) of the queries: the end rounded down to the step, so every
/// point falls on a whole step of the day.
fn window(source: &Source) -> Result<(i64, i64), HistoryError> {
    let step = source.step.as_secs();
    let whole = source.step.subsec_nanos() == 0 && (60..=3600).contains(&step);
    if !whole || DAY.as_secs() % step != 0 {
        return Err(HistoryError::Window(format!(
            "--step {}: need whole seconds from 1m to 1h that divide a day, e.g. 5m",
            humantime::format_duration(source.step)
        )));
    }
    let points = source.since.as_secs() / step;
    if !(1..=MAX_POINTS).contains(&points) {
        return Err(HistoryError::Window(format!(
            "--since {} at --step {} is {points} points; Prometheus answers 1 to {MAX_POINTS}",
            humantime::format_duration(source.since),
            humantime::format_duration(source.step)
        )));
    }
    let until = source
        .until
        .duration_since(UNIX_EPOCH)
        .map_err(|_| HistoryError::Window("--until is before 1970".into()))?
        .as_secs();
    let end = (until / step * step) as i64;
    Ok((end - (points * step) as i64 + step as i64, end))
}

/// `5m`, `90s`: a duration as PromQL writes it.
fn prom_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

fn rfc3339(unix: i64) -> String {
    humantime::format_rfc3339_seconds(UNIX_EPOCH + Duration::from_secs(unix.max(0) as u64)).to_string()
}

/// The one series `query` gives from `start` to `end`, every step.
async fn query_range(
    client: &reqwest::Client,
    source: &Source,
    query: &str,
    start: i64,
    end: i64,
) -> Result<Vec<Point>, HistoryError> {
    let url = source.url.trim_end_matches('/').to_string();
    let response = client
        .get(format!("{url}/api/v1/query_range"))
        .query(&[
            ("query", query.to_string()),
            ("start", start.to_string()),
            ("end", end.to_string()),
            ("step", source.step.as_secs().to_string()),
        ])
        .send()
        .await
        .map_err(|e| HistoryError::Unreachable {
            url: url.clone(),
            reason: bounded(&error_chain(&e.without_url()), EXCERPT_MAX),
        })?;
    let status = response.status().as_u16();
    let body = response.text().await.map_err(|e| HistoryError::Unreachable {
        url: url.clone(),
        reason: bounded(&error_chain(&e), EXCERPT_MAX),
    })?;
    let not_prometheus = || HistoryError::NotPrometheus {
        url: url.clone(),
        query: query.to_string(),
        status,
        excerpt: bounded(body.trim(), EXCERPT_MAX),
    };
    let answer: serde_json::Value = serde_json::from_str(&body).map_err(|_| not_prometheus())?;
    if answer["status"] != "success" || !(200..300).contains(&status) {
        let (kind, error) = (answer["errorType"].as_str(), answer["error"].as_str());
        let detail = match (kind, error) {
            (Some(kind), Some(error)) => format!("{kind}: {error}"),
            _ => return Err(not_prometheus()),
        };
        return Err(HistoryError::Refused {
            url,
            query: query.to_string(),
            status,
            detail: bounded(&detail, EXCERPT_MAX),
        });
    }
    if answer["data"]["resultType"] != "matrix" {
        return Err(not_prometheus());
    }
    let series = answer["data"]["result"].as_array().map(Vec::as_slice).unwrap_or_default();
    let [one] = series else {
        if series.is_empty() {
            return Err(HistoryError::Empty {
                url,
                query: query.to_string(),
                start: rfc3339(start),
                end: rfc3339(end),
            });
        }
        return Err(HistoryError::Refused {
            url,
            query: query.to_string(),
            status,
            detail: format!("{} series where one sum was expected", series.len()),
        });
    };
    let values = one["values"].as_array().ok_or_else(not_prometheus)?;
    let mut points = Vec::with_capacity(values.len());
    for pair in values {
        let (Some(at), Some(text)) = (pair[0].as_f64(), pair[1].as_str()) else {
            return Err(not_prometheus());
        };
        let value: f64 = text.parse().unwrap_or(f64::NAN);
        if !value.is_finite() || value < 0.0 {
            return Err(HistoryError::NotANumber {
                url,
                query: query.to_string(),
                value: bounded(text, EXCERPT_MAX),
                at: rfc3339(at as i64),
            });
        }
        points.push((at.round() as i64, value));
    }
    Ok(points)
}

/// The error with its causes (reqwest's own text hides "connection refused"); without the
/// request's URL, which quotes the whole query.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        text += &format!(": {c}");
        cause = c.source();
    }
    text
}

/// Offered CPUs at each step of the day (UTC, from 00:00): used plus Pending at the same
/// instant, the highest over the days. An instant missing from either series is left out;
/// a time of day with no instant at all is an error naming it (`HH:MM`).
pub fn fold_day(used: &[Point], pending: &[Point], step: Duration) -> Result<Vec<f64>, String> {
    let step = step.as_secs() as i64;
    let pending: BTreeMap<i64, f64> = pending.iter().copied().collect();
    let mut day: Vec<Option<f64>> = vec![None; (DAY.as_secs() as i64 / step) as usize];
    for (at, cpus) in used {
        let Some(waiting) = pending.get(at) else { continue };
        let slot = &mut day[(at.rem_euclid(DAY.as_secs() as i64) / step) as usize];
        *slot = Some(slot.unwrap_or(0.0).max(cpus + waiting));
    }
    day.iter()
        .enumerate()
        .map(|(i, v)| v.ok_or_else(|| clock(Duration::from_secs((i as i64 * step) as u64))))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::profile::default_day;
    use super::*;

    const HOUR: i64 = 3600;

    #[test]
    fn the_busiest_day_wins_at_each_time_of_day() {
        // Two days at hourly steps: the first busier at night, the second at noon.
        let day0 = 10 * 24 * HOUR;
        let mut used = Vec::new();
        let mut pending = Vec::new();
        for d in 0..2 {
            for h in 0..24 {
                let at = day0 + d * 24 * HOUR + h * HOUR;
                let night = if d == 0 { 2.0 } else { 1.5 };
                used.push((at, if (9..22).contains(&h) { 8.0 } else { night }));
                pending.push((at, if d == 1 && h == 12 { 4.0 } else { 0.0 }));
            }
        }
        let day = fold_day(&used, &pending, Duration::from_secs(3600)).expect("every hour seen");
        assert_eq!(day.len(), 24);
        assert_eq!((day[3], day[10], day[12], day[23]), (2.0, 8.0, 12.0, 2.0));
    }

    #[test]
    fn an_instant_needs_both_series_and_every_time_of_day_a_sample() {
        let step = Duration::from_secs(6 * 3600);
        let used = [(0, 1.0), (6 * HOUR, 1.0), (12 * HOUR, 1.0), (18 * HOUR, 1.0)];
        let pending = [(0, 0.0), (6 * HOUR, 0.5), (18 * HOUR, 0.0)];
        assert_eq!(fold_day(&used, &pending, step), Err("12:00".into()));
        let pending = [(0, 0.0), (6 * HOUR, 0.5), (12 * HOUR, 0.0), (18 * HOUR, 0.0)];
        assert_eq!(fold_day(&used, &pending, step), Ok(vec![1.0, 1.5, 1.0, 1.0]));
    }

    #[test]
    fn the_window_ends_on_a_step_and_fits_prometheus() {
        let source = |since: u64, step: u64| Source {
            url: "http://p".into(),
            since: Duration::from_secs(since),
            until: UNIX_EPOCH + Duration::from_secs(100 * 86_400 + 299),
            step: Duration::from_secs(step),
        };
        let (start, end) = window(&source(7 * 86_400, 300)).expect("7d at 5m");
        assert_eq!(end, 100 * 86_400);
        assert_eq!((end - start) / 300 + 1, 7 * 288);
        assert!(window(&source(40 * 86_400, 60)).unwrap_err().to_string().contains("11000"));
        assert!(window(&source(86_400, 420)).unwrap_err().to_string().contains("divide a day"));
        assert_eq!(
            (prom_duration(Duration::from_secs(300)), prom_duration(Duration::from_secs(90))),
            ("5m".into(), "90s".into())
        );
    }

    /// Serves `response` (a whole HTTP response) to every request; the base URL.
    async fn serve(response: String) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        tokio::spawn(async move {
            use tokio::io::{AsyncReadExt, AsyncWriteExt};
            while let Ok((mut socket, _)) = listener.accept().await {
                let mut buf = [0u8; 8192];
                let _ = socket.read(&mut buf).await;
                let _ = socket.write_all(response.as_bytes()).await;
                let _ = socket.shutdown().await;
            }
        });
        url
    }

    fn http(status: &str, content_type: &str, body: &str) -> String {
        format!(
            "HTTP/1.1 {status}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
            body.len()
        )
    }

    async fn load(url: &str) -> Result<Profile, HistoryError> {
        let source = Source {
            url: url.into(),
            since: Duration::from_secs(86_400),
            until: SystemTime::now(),
            step: Duration::from_secs(300),
        };
        profile(&source, &default_day(), 5).await
    }

    async fn error_of(response: String) -> String {
        let url = serve(response).await;
        let e = load(&url).await.expect_err("no profile from a bad answer").to_string();
        assert!(e.contains(&url), "the error names the URL: {e}");
        assert!(e.len() < 1000, "bounded error text ({} bytes): {e}", e.len());
        e
    }

    #[tokio::test]
    async fn bad_answers_are_clear_errors() {
        let page = format!("<html><body>{}</body></html>", "<p>Grafana login</p>".repeat(5000));
        let e = error_of(http("200 OK", "text/html", &page)).await;
        assert!(e.contains("did not answer as a Prometheus API") && e.contains("<html>"), "{e}");
        assert!(e.contains("node_cpu_seconds_total"), "names the query: {e}");

        let e = error_of(http("500 Internal Server Error", "text/plain", "upstream broke")).await;
        assert!(e.contains("HTTP 500") && e.contains("upstream broke"), "{e}");

        let refused = r#"{"status":"error","errorType":"bad_data","error":"1:6: parse error"}"#;
        let e = error_of(http("400 Bad Request", "application/json", refused)).await;
        assert!(e.contains("answered 400") && e.contains("bad_data: 1:6: parse error"), "{e}");

        let empty = r#"{"status":"success","data":{"resultType":"matrix","result":[]}}"#;
        let e = error_of(http("200 OK", "application/json", empty)).await;
        assert!(e.contains("no samples of") && e.contains("role=\"worker\""), "{e}");

        let nan = r#"{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[86400,"NaN"]]}]}}"#;
        let e = error_of(http("200 OK", "application/json", nan)).await;
        assert!(e.contains("\"NaN\"") && e.contains("not a number"), "{e}");
    }

    #[tokio::test]
    async fn an_unreachable_prometheus_is_named() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        drop(listener);
        let e = load(&url).await.expect_err("nothing listens").to_string();
        assert!(e.contains(&url) && e.contains("unreachable"), "{e}");
        assert!(e.to_lowercase().contains("connection refused") && !e.contains("query_range"), "{e}");
    }
}
