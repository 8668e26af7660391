//! The HTTP surface under hostile clients, through the real binary: slow headers and slow
//! bodies are cut off, idle connections cost little memory, and bearer tokens rotate with
//! an overlap window and no restart.

use std::time::{Duration, Instant};

use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::service::{Service, TOKEN};
use crate::support::{World, eventually, payload};

fn addr(service: &Service) -> String {
    service.url.trim_start_matches("http://").to_string()
}

/// Reads until the server closes the connection (or answers and closes); returns what came
/// and how long it took. Panics if the server keeps the connection open past `limit`.
async fn wait_for_close(stream: &mut TcpStream, limit: Duration) -> (String, Duration) {
    let start = Instant::now();
    let mut received = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(limit.saturating_sub(start.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => received.extend_from_slice(&buf[..n]),
            Err(_) => {
                panic!("connection still open after {limit:?}; got {:?}", String::from_utf8_lossy(&received))
            }
        }
    }
    (String::from_utf8_lossy(&received).into_owned(), start.elapsed())
}

/// A foreign alert: authenticated, parsed, acknowledged, and nothing else happens.
fn harmless() -> serde_json::Value {
    payload("firing", json!({"alertname": "DiskFull"}), "fp-harmless")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_header_and_slow_body_clients_are_cut_off_after_their_timeouts() {
    let world = World::new("slowloris", |c| {
        c.extra_server = "header_read_timeout = \"1s\"\nbody_read_timeout = \"1s\"".into();
    })
    .await;
    let service = world.service().await;

    // Headers a little at a time, never finished.
    let mut slow_header = TcpStream::connect(addr(&service)).await.unwrap();
    slow_header.write_all(b"POST /v1/alerts HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let (_, took) = wait_for_close(&mut slow_header, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(900), "closed before the timeout: {took:?}");

    // Complete headers, then a body that stops after 10 of its 100 bytes.
    let mut slow_body = TcpStream::connect(addr(&service)).await.unwrap();
    let head = format!(
        "POST /v1/alerts HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"version\""
    );
    slow_body.write_all(head.as_bytes()).await.unwrap();
    let (answer, took) = wait_for_close(&mut slow_body, Duration::from_secs(5)).await;
    assert!(took >= Duration::from_millis(900), "cut off before the timeout: {took:?}");
    assert!(answer.is_empty() || answer.starts_with("HTTP/1.1 4"), "a client error or a close: {answer:?}");

    // The service is still there for honest clients, and nothing was stored.
    assert_eq!(service.post(&harmless()).await, 200);
    assert_eq!(world.items("signal#").await, 0);
}

/// The pod's memory limit, from the shipped Deployment.
fn pod_memory_limit_mib() -> u64 {
    let text = include_str!("../../deploy/base/deployment.yaml");
    let limits = &text[text.find("limits:").expect("resources.limits")..];
    let line = limits.lines().find(|l| l.trim_start().starts_with("memory:")).expect("limits.memory");
    line.trim().trim_start_matches("memory:").trim().trim_end_matches("Mi").parse().expect("memory in Mi")
}

fn rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).expect("VmRSS");
    line.split_whitespace().nth(1).and_then(|kib| kib.parse::<u64>().ok()).expect("kib") / 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_hundred_idle_connections_stay_within_the_pod_memory_and_the_webhook_answers() {
    let world = World::new("idle", |c| c.extra_server = "header_read_timeout = \"30s\"".into()).await;
    let service = world.service().await;
    let limit = pod_memory_limit_mib();
    let before = rss_mib(service.pid());
    let mut idle = Vec::new();
    for _ in 0..500 {
        let mut stream = TcpStream::connect(addr(&service)).await.unwrap();
        // Half send a partial request line, half nothing at all.
        if idle.len() % 2 == 0 {
            stream.write_all(b"GET /readyz HT").await.unwrap();
        }
        idle.push(stream);
    }
    // Every connection is accepted and served by a task before the figure is taken: an
    // honest request queued behind them all is answered.
    assert_eq!(service.post(&harmless()).await, 200);
    let during = rss_mib(service.pid());
    println!("RSS {before} MiB idle, {during} MiB with 500 idle connections (pod limit {limit} MiB)");
    assert!(during < limit, "RSS {during} MiB with 500 idle connections, pod limit {limit} MiB");
    drop(idle);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_rotation_accepts_old_and_new_during_the_window_then_only_the_new() {
    let world = World::new("rotate", |_| {}).await;
    let service = world.service().await;
    let token_file = world.prepared.0.path().join("token");
    let body = harmless().to_string().into_bytes();
    let post = |token: &'static str| {
        let body = body.clone();
        let service = &service;
        async move { service.post_raw(body, Some(&format!("Bearer {token}"))).await }
    };
    assert_eq!(post("rotated-token").await, 401, "the new token is not valid yet");

    // Window opens: both lines in the file.
    std::fs::write(&token_file, format!("{TOKEN}\nrotated-token\n")).unwrap();
    eventually("the new token accepted", Duration::from_secs(10), || async {
        (post("rotated-token").await == 200).then_some(())
    })
    .await;
    assert_eq!(post(TOKEN).await, 200, "the old token still works during the window");

    // Window closes: only the new line left.
    std::fs::write(&token_file, "rotated-token\n").unwrap();
    eventually("the old token refused", Duration::from_secs(10), || async {
        (post(TOKEN).await == 401).then_some(())
    })
    .await;
    assert_eq!(post("rotated-token").await, 200);
    let metrics = service.metrics().await;
    assert!(metrics.contains("k3s_autoscaler_webhook_requests_total{outcome=\"unauthorized\"}"), "{metrics}");
}
