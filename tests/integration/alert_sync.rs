//! The Alertmanager sync through the real binary and the real Alertmanager 0.25: a `resolved`
//! post that never arrives (with a second replica down), no replica answering (fallback to the
//! TTL), and garbage answers, which must never read as "no alerts".

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use crate::support::alertmanager::Alertmanager;
use crate::support::moto::free_port;
use crate::support::service::TOKEN;
use crate::support::{World, eventually, scale_up};

/// Alertmanager routing everything to the webhook at once; `send_resolved: false` plays the
/// `resolved` post that is lost on its way (upstream #2675, #2060, #4251).
fn config(dir: &std::path::Path, webhook: &str, send_resolved: bool) -> String {
    let token = dir.join("token");
    std::fs::write(&token, TOKEN).expect("token");
    format!(
        "route:\n  receiver: k3s-autoscaler\n  group_by: [alertname, pool]\n  group_wait: 0s\n  group_interval: 1s\n  repeat_interval: 1h\n\
         receivers:\n- name: k3s-autoscaler\n  webhook_configs:\n  - url: {webhook}\n    send_resolved: {send_resolved}\n    http_config:\n      authorization:\n        credentials_file: {}\n",
        token.display()
    )
}

/// A world whose service reads Alertmanager's API at `urls`, scaling up every 2 s.
async fn world(cluster: &str, urls: &[String], extra_timing: &str) -> World {
    let urls: Vec<String> = urls.iter().map(|u| format!("\"{u}\"")).collect();
    let extra_timing = extra_timing.to_string();
    World::new(cluster, move |c| {
        c.max = 8;
        c.scale_up_cooldown = "2s".into();
        c.extra_top = format!("[alertmanager]\nurls = [{}]\ntimeout = \"500ms\"", urls.join(", "));
        c.extra_timing = extra_timing;
    })
    .await
}

fn cpu_high() -> serde_json::Value {
    serde_json::json!({"alertname": "K3sWorkersCPUHigh", "autoscaler": "scale-up", "pool": "workers"})
}

fn has(metrics: &str, line: &str) -> bool {
    metrics.lines().any(|l| l == line)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_resolved_post_is_healed_within_a_sweep_with_one_replica_down() {
    let am_port = free_port();
    // The second replica: nothing listens there.
    let urls = [format!("http://127.0.0.1:{am_port}"), format!("http://127.0.0.1:{}", free_port())];
    let world = world("sync-lost", &urls, "").await;
    let service = world.service().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let am_config = config(dir.path(), &format!("{}/v1/alerts", service.url), false);
    let am = Alertmanager::with_config_on(dir, &am_config, am_port).await;
    am.fire(cpu_high(), "CPU 85%").await;
    eventually("the first launch", Duration::from_secs(30), || async {
        world.proxy.times("CreateFleet").first().copied()
    })
    .await;
    am.resolve(cpu_high()).await;
    let resolved = SystemTime::now();
    eventually("the sync removed the signal", Duration::from_secs(10), || async {
        let metrics = service.metrics().await;
        has(&metrics, r#"k3s_autoscaler_alert_sync_signals_total{change="removed"} 1"#).then_some(())
    })
    .await;
    println!("resolved (post lost) -> signal removed: {:?}", resolved.elapsed().unwrap_or_default());
    let metrics = service.metrics().await;
    assert!(has(&metrics, "k3s_autoscaler_alertmanager_replicas_up 1"), "one of two replicas answers");
    assert!(has(&metrics, "k3s_autoscaler_alertmanager_fallback 0"), "one replica is enough");
    // One sweep for a reconcile that read before the removal, then five cooldowns (5 x 2 s).
    let settled = SystemTime::now() + Duration::from_secs(1);
    tokio::time::sleep(Duration::from_secs(11)).await;
    world.sweeps_pass(2).await;
    let late = world.proxy.times("CreateFleet").into_iter().filter(|t| *t > settled).count();
    assert_eq!(late, 0, "launches after the lost resolve was healed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_replica_answering_signals_fall_back_to_their_ttl_and_readyz_says_degraded() {
    let am_port = free_port();
    let urls = [format!("http://127.0.0.1:{am_port}")];
    let world = world("sync-down", &urls, "signal_ttl = \"8s\"").await;
    let service = world.service().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let am_config = config(dir.path(), &format!("{}/v1/alerts", service.url), true);
    let am = Alertmanager::with_config_on(dir, &am_config, am_port).await;
    am.fire(cpu_high(), "CPU 85%").await;
    let signal = r#"k3s_autoscaler_active_signals{pool="workers",direction="scale-up"} 1"#;
    eventually("the signal stored and synced", Duration::from_secs(30), || async {
        let metrics = service.metrics().await;
        (has(&metrics, signal) && has(&metrics, "k3s_autoscaler_alertmanager_replicas_up 1")).then_some(())
    })
    .await;
    drop(am);
    eventually("the fallback", Duration::from_secs(10), || async {
        has(&service.metrics().await, "k3s_autoscaler_alertmanager_fallback 1").then_some(())
    })
    .await;
    let ready = reqwest::get(format!("{}/readyz", service.url)).await.expect("readyz");
    assert_eq!(ready.status().as_u16(), 200, "Alertmanager down is degraded, not unready");
    let text = ready.text().await.expect("readyz body");
    assert!(text.contains("alertmanager: degraded, none of 1 replicas answers"), "{text}");
    assert!(has(&service.metrics().await, signal), "nothing removed without an answer");
    // The signal lives out its TTL (8 s), as with the webhook alone.
    eventually("the signal expired by its TTL", Duration::from_secs(20), || async {
        let metrics = service.metrics().await;
        has(&metrics, r#"k3s_autoscaler_active_signals{pool="workers",direction="scale-up"} 0"#).then_some(())
    })
    .await;
    assert!(has(&service.metrics().await, r#"k3s_autoscaler_alert_sync_signals_total{change="removed"} 0"#));
}

/// A replica that answers every request with the next of the bad answers, in turn.
async fn garbage_replica() -> (String, Arc<AtomicUsize>) {
    const BAD: [&str; 4] = [
        "HTTP/1.1 200 OK\r\ncontent-type: text/html\r\ncontent-length: 19\r\nconnection: close\r\n\r\n<html>oops</html>\r\n",
        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 20\r\nconnection: close\r\n\r\n[{\"fingerprint\": \"a\"",
        "HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\nboom",
        "slow",
    ];
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    let served = Arc::new(AtomicUsize::new(0));
    let count = served.clone();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let n = count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = socket.read(&mut buf).await;
                match BAD[n % BAD.len()] {
                    // Past the service's 500 ms timeout, then an otherwise valid empty list.
                    "slow" => {
                        tokio::time::sleep(Duration::from_secs(2)).await;
                        let ok = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\nconnection: close\r\n\r\n[]";
                        let _ = socket.write_all(ok.as_bytes()).await;
                    }
                    answer => {
                        let _ = socket.write_all(answer.as_bytes()).await;
                    }
                }
            });
        }
    });
    (url, served)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_answers_count_as_unreachable_and_never_drop_a_signal() {
    let (url, served) = garbage_replica().await;
    let world = world("sync-garbage", &[url], "").await;
    let service = world.service().await;
    assert_eq!(service.post(&scale_up("fp-garbage")).await, 200);
    // Every kind of bad answer twice.
    eventually("eight bad answers served", Duration::from_secs(30), || async {
        (served.load(Ordering::SeqCst) >= 8).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let metrics = service.metrics().await;
    assert!(has(&metrics, "k3s_autoscaler_alertmanager_fallback 1"), "garbage is unreachable");
    assert!(
        has(&metrics, r#"k3s_autoscaler_alert_sync_signals_total{change="removed"} 0"#),
        "nothing dropped"
    );
    assert!(
        has(&metrics, r#"k3s_autoscaler_active_signals{pool="workers",direction="scale-up"} 1"#),
        "the webhook's signal still acts"
    );
}
