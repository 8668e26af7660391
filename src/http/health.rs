//! Liveness, readiness and metrics.

use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::AppState;

/// The process is up.
pub(super) async fn live() -> &'static str {
    "ok\n"
}

/// Ready when not shutting down and the state store answers. The second line says whether
/// signals follow Alertmanager's API or, degraded, expire by TTL; Alertmanager being down
/// never makes the service unready (the webhook still works).
pub(super) async fn ready(State(state): State<AppState>) -> (StatusCode, String) {
    if !state.ready.load(Ordering::SeqCst) {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into());
    }
    match state.service.store().ping().await {
        Ok(()) => (StatusCode::OK, format!("ready\n{}\n", state.service.alert_sync_status().describe())),
        Err(e) => {
            tracing::warn!(error = %e, "not ready: state store unreachable");
            (StatusCode::SERVICE_UNAVAILABLE, "state store unreachable\n".into())
        }
    }
}

/// Prometheus text exposition.
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.service.metrics().render(),
    )
}
