//! Limits on every request but the probes: a hard deadline for the body, a timeout for the
//! whole request and a cap on how many are handled at once. The header read timeout and the
//! connection cap live in [`super::serve`], where the connections are.

use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use tokio::sync::Semaphore;
use tower_http::timeout::DeadlineBody;

use crate::config::ServerConfig;
use crate::service::Service;

/// The limits one router enforces, shared by its requests.
#[derive(Clone)]
struct Limits {
    in_flight: Arc<Semaphore>,
    body_read_timeout: Duration,
    request_timeout: Duration,
    service: Service,
}

/// Wraps `router` in the limits of `server`.
pub(super) fn apply<S: Clone + Send + Sync + 'static>(
    router: axum::Router<S>,
    server: &ServerConfig,
    service: Service,
) -> axum::Router<S> {
    let limits = Limits {
        in_flight: Arc::new(Semaphore::new(server.max_concurrent_requests)),
        body_read_timeout: server.body_read_timeout,
        request_timeout: server.request_timeout,
        service,
    };
    router.layer(middleware::from_fn_with_state(limits, limit))
}

fn refuse(status: StatusCode, message: &str) -> Response {
    let mut response = (status, Json(json!({ "error": message }))).into_response();
    response.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
    response
}

/// 503 at once when `max_concurrent_requests` are in flight (Alertmanager and EventBridge
/// retry a 5xx); the body must arrive within `body_read_timeout` in total (a trickle does not
/// extend it; the body extractor then answers 400); 503 when the answer takes longer than
/// `request_timeout`.
async fn limit(State(limits): State<Limits>, request: Request, next: Next) -> Response {
    let Ok(_permit) = limits.in_flight.clone().try_acquire_owned() else {
        limits.service.metrics().webhook_request("overloaded");
        tracing::warn!("request refused: too many requests in flight (server.max_concurrent_requests)");
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "too many requests in flight; retry later");
    };
    let (parts, body) = request.into_parts();
    let body = Body::new(DeadlineBody::new(limits.body_read_timeout, body));
    match tokio::time::timeout(limits.request_timeout, next.run(Request::from_parts(parts, body))).await {
        Ok(response) => response,
        Err(_) => {
            limits.service.metrics().webhook_request("timeout");
            tracing::warn!(timeout = ?limits.request_timeout, "request timed out (server.request_timeout)");
            refuse(StatusCode::SERVICE_UNAVAILABLE, "request timed out; retry later")
        }
    }
}
