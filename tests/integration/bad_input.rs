//! Every bad input gets its status code and changes nothing in moto or the table.

use std::time::Duration;

use base64::Engine;
use serde_json::json;

use crate::support::{World, eventually, payload, scale_up};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_are_refused_and_change_nothing() {
    let world = World::new("bad", |_| {}).await;
    let service = world.service().await;
    let good = scale_up("fp-bad").to_string().into_bytes();
    let bearer = format!("Bearer {}", crate::support::service::TOKEN);
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("am:integration-token"));
    let cases: Vec<(&str, Vec<u8>, Option<&str>, u16)> = vec![
        ("no credentials", good.clone(), None, 401),
        ("wrong token", good.clone(), Some("Bearer nope"), 401),
        ("basic auth not configured", good.clone(), Some(&basic), 401),
        ("malformed JSON", b"{\"version\": \"4\", \"alerts\": [".to_vec(), Some(&bearer), 400),
        (
            "unsupported version",
            json!({"version": "3", "alerts": []}).to_string().into_bytes(),
            Some(&bearer),
            400,
        ),
        (
            "bad step",
            payload("firing", json!({"alertname": "X", "autoscaler": "scale-up", "step": "lots"}), "fp")
                .to_string()
                .into_bytes(),
            Some(&bearer),
            400,
        ),
        (
            "unknown pool",
            payload("firing", json!({"alertname": "X", "autoscaler": "scale-up", "pool": "gpu"}), "fp")
                .to_string()
                .into_bytes(),
            Some(&bearer),
            400,
        ),
        ("body over the limit", vec![b' '; 70_000], Some(&bearer), 413),
    ];
    for (what, body, auth, expected) in cases {
        assert_eq!(service.post_raw(body, auth).await, expected, "{what}");
    }
    // Not ours: accepted, ignored, counted.
    let foreign = payload("firing", json!({"alertname": "DiskFull"}), "fp-disk");
    assert_eq!(service.post(&foreign).await, 200);
    let ignored = "k3s_autoscaler_alerts_received_total{kind=\"ignored\"}";
    eventually("the foreign alert counted", Duration::from_secs(5), || async {
        (service.metric(ignored).await == Some(1.0)).then_some(())
    })
    .await;
    world.sweeps_pass(2).await;
    assert!(world.instances().await.is_empty());
    assert_eq!(world.items("signal#").await, 0);
    assert_eq!(world.proxy.count("CreateFleet"), 0);
    let metrics = service.metrics().await;
    for line in [
        "k3s_autoscaler_webhook_requests_total{outcome=\"unauthorized\"} 3",
        "k3s_autoscaler_webhook_requests_total{outcome=\"bad_request\"} 4",
        "k3s_autoscaler_alerts_received_total{kind=\"ignored\"} 1",
    ] {
        assert!(metrics.contains(line), "missing {line} in\n{metrics}");
    }
}

/// A templated annotation can outgrow DynamoDB's 400 KB item limit (a description listing
/// every Pending pod). The text is cut where it is copied; the alert still scales the pool.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_alert_with_a_500_kb_annotation_still_scales_up() {
    let world = World::new("longtext", |c| c.body_limit = 1024 * 1024).await;
    let service = world.service().await;
    let mut alert = scale_up("fp-long");
    let pending: String = (0..36_000).map(|i| format!("app/pod-{i:05} ")).collect();
    assert!(pending.len() > 500_000);
    alert["alerts"][0]["annotations"]["summary"] = json!(pending);
    assert_eq!(service.post(&alert).await, 200, "the alert is taken, not answered as an outage");
    world.expect_instances(1, Duration::from_millis(500)).await;
    let signals = world.aws.items(&world.config.table, &world.config.cluster_id, "signal#").await;
    let events = world.aws.items(&world.config.table, &world.config.cluster_id, "event#").await;
    let stored: Vec<&String> = signals
        .iter()
        .chain(&events)
        .flat_map(|item| item.values())
        .filter_map(|v| v.as_s().ok())
        .filter(|text| text.contains("app/pod-00000"))
        .collect();
    assert!(!stored.is_empty(), "the reason is recorded");
    for text in stored {
        assert!(text.len() <= 1200, "stored text of {} bytes", text.len());
        assert!(text.contains("[cut"), "says it was cut: {}", &text[text.len() - 60..]);
    }
    let metrics = service.metrics().await;
    assert!(metrics.contains("k3s_autoscaler_webhook_requests_total{outcome=\"accepted\"} 1"), "{metrics}");
}
