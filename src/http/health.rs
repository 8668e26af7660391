//! Liveness, readiness and metrics. Readiness is answered from the last background check, so
//! `/readyz` costs no AWS call however often it is asked.

use std::sync::atomic::{AtomicU8, Ordering};

use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;

use super::AppState;
use crate::adapters::StateStore;

const UNKNOWN: u8 = 0;
const READY: u8 = 1;
const STORE_DOWN: u8 = 2;
const SHUTTING_DOWN: u8 = 3;

/// The last readiness verdict; shutting down is final.
#[derive(Debug)]
pub struct Readiness(AtomicU8);

impl Default for Readiness {
    fn default() -> Self {
        Self(AtomicU8::new(UNKNOWN))
    }
}

impl Readiness {
    /// Pings the store once and records the answer (unless shutting down).
    pub async fn check(&self, store: &dyn StateStore) {
        let verdict = match store.ping().await {
            Ok(()) => READY,
            Err(e) => {
                tracing::warn!(error = %e, "not ready: state store unreachable");
                STORE_DOWN
            }
        };
        let _ = self.0.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |now| {
            (now != SHUTTING_DOWN).then_some(verdict)
        });
    }

    /// From now on `/readyz` fails.
    pub fn set_shutting_down(&self) {
        self.0.store(SHUTTING_DOWN, Ordering::SeqCst);
    }
}

/// The process is up.
pub(super) async fn live() -> &'static str {
    "ok\n"
}

/// Ready when not shutting down and the last background check reached the state store (no
/// store call per request). The second line says whether signals follow Alertmanager's API
/// or, degraded, expire by TTL; Alertmanager being down never makes the service unready (the
/// webhook still works).
pub(super) async fn ready(State(state): State<AppState>) -> (StatusCode, String) {
    match state.readiness.0.load(Ordering::SeqCst) {
        READY => (StatusCode::OK, format!("ready\n{}\n", state.service.alert_sync_status().describe())),
        STORE_DOWN => (StatusCode::SERVICE_UNAVAILABLE, "state store unreachable\n".into()),
        SHUTTING_DOWN => (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n".into()),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "not checked yet\n".into()),
    }
}

/// Prometheus text exposition.
pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")],
        state.service.metrics().render(),
    )
}
