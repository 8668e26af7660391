//! The HTTP surface: `POST /v1/alerts` for Alertmanager, `POST /v1/events/ec2` for EventBridge, `/healthz`, `/readyz`, `/metrics`.
//! Handlers are thin: authenticate, parse at the edge, hand typed data to the service.

mod alerts;
mod auth;
mod error;
mod events;
mod health;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

use crate::service::Service;

pub use error::ApiError;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    service: Service,
    ready: Arc<AtomicBool>,
}

impl AppState {
    /// State for `service`; readiness starts true and goes false on shutdown.
    pub fn new(service: Service) -> Self {
        Self { service, ready: Arc::new(AtomicBool::new(true)) }
    }

    /// Marks the process as going away, so `/readyz` fails while in-flight requests finish.
    pub fn set_shutting_down(&self) {
        self.ready.store(false, Ordering::SeqCst);
    }
}

/// Builds the router; tests drive it without a socket.
pub fn router(state: AppState) -> Router {
    let body_limit = state.service.config().server.body_limit_bytes;
    let alerts = Router::new()
        .route("/v1/alerts", post(alerts::receive))
        .route("/v1/events/ec2", post(events::receive))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_credentials))
        .layer(DefaultBodyLimit::max(body_limit));
    Router::new()
        .merge(alerts)
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .route("/metrics", get(health::metrics))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

#[cfg(test)]
mod tests;
