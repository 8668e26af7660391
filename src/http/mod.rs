//! The HTTP surface: `POST /v1/alerts` for Alertmanager, `POST /v1/events/ec2` for EventBridge, `/healthz`, `/readyz`, `/metrics`.
//! Handlers are thin: authenticate, parse at the edge, hand typed data to the service.
//! Every request is bounded: headers and body by read timeouts, the whole request by a
//! timeout, and the number handled at once by a limit ([`serve`]).

mod alerts;
mod auth;
mod error;
mod events;
mod health;
mod limits;
mod serve;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;
use axum::routing::{get, post};
use tower_http::trace::TraceLayer;

use crate::service::Service;

pub use error::ApiError;
pub use health::Readiness;
pub use serve::serve;

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    service: Service,
    readiness: Arc<Readiness>,
}

impl AppState {
    /// State for `service`; readiness is unknown until the first check.
    pub fn new(service: Service) -> Self {
        Self { service, readiness: Arc::new(Readiness::default()) }
    }

    /// Marks the process as going away, so `/readyz` fails while in-flight requests finish.
    pub fn set_shutting_down(&self) {
        self.readiness.set_shutting_down();
    }

    /// Asks the state store once and keeps the answer for `/readyz`.
    pub async fn check_readiness(&self) {
        self.readiness.check(self.service.store().as_ref()).await;
    }

    /// Checks readiness now and then every `server.readiness_interval`, so a probe (or anyone
    /// who can reach the port) never causes an AWS call. Abort the task to stop it.
    pub fn spawn_readiness_checks(&self) -> tokio::task::JoinHandle<()> {
        let state = self.clone();
        let interval = self.service.config().server.readiness_interval;
        tokio::spawn(async move {
            loop {
                state.check_readiness().await;
                tokio::time::sleep(interval).await;
            }
        })
    }
}

/// Builds the router; tests drive it without a socket.
pub fn router(state: AppState) -> Router {
    let config = state.service.config();
    let server = &config.server;
    let mut webhook = Router::new()
        .route("/v1/alerts", post(alerts::receive))
        .route_layer(middleware::from_fn_with_state(state.clone(), auth::require_credentials));
    // The notices route exists only with a credential of its own (auth.events_token_file).
    if config.auth.events_token.is_some() {
        webhook =
            webhook.merge(Router::new().route("/v1/events/ec2", post(events::receive)).route_layer(
                middleware::from_fn_with_state(state.clone(), auth::require_events_credentials),
            ));
    }
    let limited = limits::apply(
        webhook.layer(DefaultBodyLimit::max(server.body_limit_bytes)).route("/metrics", get(health::metrics)),
        server,
        state.service.clone(),
    );
    // Probes stay outside the concurrency limit: an overload must not fail liveness.
    Router::new()
        .merge(limited)
        .route("/healthz", get(health::live))
        .route("/readyz", get(health::ready))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

#[cfg(test)]
mod tests;
