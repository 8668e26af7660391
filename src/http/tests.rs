//! The router without a socket (`oneshot`): status codes, readiness and metrics.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

use super::{AppState, router};
use crate::adapters::ManualClock;
use crate::adapters::dynamodb::fake::MemoryStore;
use crate::adapters::ec2::fake::FakeCompute;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::service::{Edges, Service};

struct Fixture {
    state: AppState,
    store: Arc<MemoryStore>,
    _dir: tempfile::TempDir,
}

fn fixture() -> Fixture {
    fixture_with("")
}

/// A fixture with extra `[server]` lines.
fn fixture_with(server: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("token"), "tok\n").unwrap();
    std::fs::write(dir.path().join("events-token"), "evtok\n").unwrap();
    let text = format!(
        "cluster_id = \"t\"\n[server]\nbody_limit_bytes = 2048\n{server}[auth]\nbearer_token_file = \"{}\"\nevents_token_file = \"{}\"\n[aws]\nregion = \"us-east-1\"\ntable = \"t\"\n[pools.workers]\nmin = 0\nmax = 2\nlaunch_template = \"lt\"\n[pools.workers.subnets]\n\"a\" = \"subnet-a\"\n",
        dir.path().join("token").display(),
        dir.path().join("events-token").display(),
    );
    let config = Config::from_toml(&text, std::path::Path::new("t.toml"), Vec::new()).unwrap();
    let store = Arc::new(MemoryStore::default());
    let edges = Edges {
        store: store.clone(),
        compute: Arc::new(FakeCompute::default()),
        clock: Arc::new(ManualClock::at(1_000_000)),
        cluster: None,
        sink: None,
    };
    let service = Service::new(config, edges, Arc::new(Metrics::new()));
    Fixture { state: AppState::new(service), store, _dir: dir }
}

async fn call(state: &AppState, request: Request<Body>) -> (StatusCode, String) {
    let response = router(state.clone()).oneshot(request).await.unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn post(body: &str, auth: Option<&str>) -> Request<Body> {
    let mut builder = Request::post("/v1/alerts").header("content-type", "application/json");
    if let Some(auth) = auth {
        builder = builder.header("authorization", auth);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

const FIRING: &str = r#"{"version":"4","status":"firing","alerts":[{"status":"firing","labels":{"alertname":"Cpu","autoscaler":"scale-up"},"annotations":{"summary":"cpu 90%"},"fingerprint":"f1"}]}"#;

#[tokio::test]
async fn accepted_notification_answers_what_it_stored() {
    let f = fixture();
    let (status, body) = call(&f.state, post(FIRING, Some("Bearer tok"))).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body, r#"{"stored":1,"removed":0,"duplicates":0,"ignored":0}"#);
}

#[tokio::test]
async fn each_bad_input_has_its_status_and_a_clear_message() {
    let f = fixture();
    let (status, body) = call(&f.state, post(FIRING, None)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(body.contains("missing or invalid credentials"));
    let (status, body) = call(&f.state, post("{", Some("Bearer tok"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("malformed webhook body"), "{body}");
    let (status, body) = call(&f.state, post(r#"{"version":"3","alerts":[]}"#, Some("Bearer tok"))).await;
    assert_eq!(
        (status, body.contains("unsupported webhook payload version")),
        (StatusCode::BAD_REQUEST, true)
    );
    let (status, _) = call(&f.state, post(&" ".repeat(4096), Some("Bearer tok"))).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(f.store.writes.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing was written");
}

#[tokio::test]
async fn store_down_is_503_for_the_webhook_and_readiness_but_not_liveness() {
    let f = fixture();
    f.state.check_readiness().await;
    f.store.set_down(true);
    f.state.check_readiness().await;
    let (status, body) = call(&f.state, post(FIRING, Some("Bearer tok"))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert!(!body.contains("connection refused"), "internals are not leaked: {body}");
    assert_eq!(
        call(&f.state, Request::get("/readyz").body(Body::empty()).unwrap()).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    assert_eq!(call(&f.state, Request::get("/healthz").body(Body::empty()).unwrap()).await.0, StatusCode::OK);
    f.store.set_down(false);
    f.state.check_readiness().await;
    assert_eq!(call(&f.state, Request::get("/readyz").body(Body::empty()).unwrap()).await.0, StatusCode::OK);
}

#[tokio::test]
async fn a_store_rejection_is_422_never_an_outage() {
    let f = fixture();
    f.store.set_rejecting(true);
    let (status, body) = call(&f.state, post(FIRING, Some("Bearer tok"))).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(!body.contains("maximum"), "internals are not leaked: {body}");
    f.state.check_readiness().await;
    assert_eq!(call(&f.state, Request::get("/readyz").body(Body::empty()).unwrap()).await.0, StatusCode::OK);
    let (_, metrics) = call(&f.state, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert!(metrics.contains("k3s_autoscaler_webhook_requests_total{outcome=\"rejected\"} 1"), "{metrics}");
}

#[tokio::test]
async fn readiness_is_the_last_background_check_not_a_store_call_per_request() {
    let f = fixture();
    let readyz = || Request::get("/readyz").body(Body::empty()).unwrap();
    assert_eq!(call(&f.state, readyz()).await, (StatusCode::SERVICE_UNAVAILABLE, "not checked yet\n".into()));
    f.state.check_readiness().await;
    let ready = format!("ready\n{}\n", f.state.service.alert_sync_status().describe());
    f.store.set_down(true);
    for _ in 0..3 {
        assert_eq!(
            call(&f.state, readyz()).await,
            (StatusCode::OK, ready.clone()),
            "answered from the check"
        );
    }
    f.state.check_readiness().await;
    assert_eq!(call(&f.state, readyz()).await.0, StatusCode::SERVICE_UNAVAILABLE);
}

#[tokio::test]
async fn readiness_goes_false_on_shutdown() {
    let f = fixture();
    f.state.check_readiness().await;
    f.state.set_shutting_down();
    f.state.check_readiness().await;
    let (status, body) = call(&f.state, Request::get("/readyz").body(Body::empty()).unwrap()).await;
    assert_eq!((status, body.as_str()), (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n"));
}

#[tokio::test]
async fn metrics_count_requests_by_outcome() {
    let f = fixture();
    call(&f.state, post(FIRING, Some("Bearer tok"))).await;
    call(&f.state, post(FIRING, Some("Bearer nope"))).await;
    let (status, body) = call(&f.state, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains("k3s_autoscaler_webhook_requests_total{outcome=\"accepted\"} 1"), "{body}");
    assert!(body.contains("k3s_autoscaler_webhook_requests_total{outcome=\"unauthorized\"} 1"), "{body}");
    assert!(body.contains("k3s_autoscaler_alerts_received_total{kind=\"scale_up\"} 1"), "{body}");
}

fn post_event(body: &str, auth: Option<&str>) -> Request<Body> {
    let mut builder = Request::post("/v1/events/ec2").header("content-type", "application/json");
    if let Some(auth) = auth {
        builder = builder.header("authorization", auth);
    }
    builder.body(Body::from(body.to_string())).unwrap()
}

#[tokio::test]
async fn ec2_events_are_authenticated_parsed_and_unknown_ones_acknowledged() {
    let f = fixture();
    let spot = r#"{"detail-type":"EC2 Spot Instance Interruption Warning","detail":{"instance-id":"i-9","instance-action":"terminate"}}"#;
    assert_eq!(call(&f.state, post_event(spot, None)).await.0, StatusCode::UNAUTHORIZED);
    let (status, _) = call(&f.state, post_event(spot, Some("Bearer tok"))).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED, "the Alertmanager token is not a notices credential");
    assert_eq!(call(&f.state, post(FIRING, Some("Bearer evtok"))).await.0, StatusCode::UNAUTHORIZED);
    let (status, body) = call(&f.state, post_event("{", Some("Bearer evtok"))).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(body.contains("not an EventBridge event"), "{body}");
    let (status, body) = call(&f.state, post_event(spot, Some("Bearer evtok"))).await;
    assert_eq!(status, StatusCode::OK);
    assert!(body.contains(r#""outcome":"ignored""#) && body.contains("not managed"), "{body}");
    let other = r#"{"detail-type":"EC2 Instance State-change Notification","detail":{}}"#;
    let (status, body) = call(&f.state, post_event(other, Some("Bearer evtok"))).await;
    assert_eq!((status, body.contains(r#""outcome":"ignored""#)), (StatusCode::OK, true), "{body}");
    assert_eq!(f.store.writes.load(std::sync::atomic::Ordering::SeqCst), 0, "nothing was written");
}

#[tokio::test]
async fn without_an_events_token_the_notices_route_is_not_served() {
    let f = fixture();
    let text = f.state.service.config().clone();
    let mut config = text;
    config.auth.events_token = None;
    let edges = Edges {
        store: f.store.clone(),
        compute: Arc::new(FakeCompute::default()),
        clock: Arc::new(ManualClock::at(1_000_000)),
        cluster: None,
        sink: None,
    };
    let state = AppState::new(Service::new(config, edges, Arc::new(Metrics::new())));
    let spot = r#"{"detail-type":"EC2 Spot Instance Interruption Warning","detail":{"instance-id":"i-9"}}"#;
    for auth in ["Bearer tok", "Bearer evtok"] {
        assert_eq!(call(&state, post_event(spot, Some(auth))).await.0, StatusCode::NOT_FOUND, "{auth}");
    }
}

#[tokio::test]
async fn requests_beyond_the_concurrency_limit_are_refused_at_once_but_probes_are_not() {
    let f = fixture_with("max_concurrent_requests = 1\n");
    let app = router(f.state.clone());
    // A request whose body never ends holds the only slot.
    let (_sender, body) = tokio::sync::mpsc::channel::<Result<axum::body::Bytes, std::io::Error>>(1);
    let stream =
        futures_util::stream::unfold(body, |mut rx| async move { rx.recv().await.map(|item| (item, rx)) });
    let held = Request::post("/v1/alerts")
        .header("authorization", "Bearer tok")
        .body(Body::from_stream(stream))
        .unwrap();
    let holder = tokio::spawn(app.clone().oneshot(held));
    let mut refused = None;
    for _ in 0..100 {
        let response = app.clone().oneshot(post(FIRING, Some("Bearer tok"))).await.unwrap();
        if response.status() == StatusCode::SERVICE_UNAVAILABLE {
            refused = Some(response.into_body().collect().await.unwrap().to_bytes());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let refused = refused.expect("a second request is refused while the first holds the slot");
    assert!(String::from_utf8_lossy(&refused).contains("too many requests in flight"));
    let live = app.clone().oneshot(Request::get("/healthz").body(Body::empty()).unwrap()).await.unwrap();
    assert_eq!(live.status(), StatusCode::OK, "probes are outside the limit");
    let (_, metrics) = call(&f.state, Request::get("/metrics").body(Body::empty()).unwrap()).await;
    assert!(metrics.contains("k3s_autoscaler_webhook_requests_total{outcome=\"overloaded\"} 1"), "{metrics}");
    holder.abort();
}
