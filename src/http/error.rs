//! One mapping from failures to HTTP answers. Alertmanager retries 5xx and gives up on 4xx,
//! so the status code tells it whether trying again can help. Internals are logged, not sent.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::adapters::StoreError;
use crate::core::alert::AlertError;
use crate::core::ec2_event::Ec2EventError;
use crate::service::{IntakeError, ReconcileError};

/// An error answer of the webhook.
#[derive(Debug)]
pub enum ApiError {
    /// Missing or wrong credentials (401).
    Unauthorized,
    /// The payload breaks the webhook contract (400; not retried).
    BadRequest(AlertError),
    /// The body is not an EventBridge event (400).
    BadEvent(Ec2EventError),
    /// The state store cannot be reached (503; retried).
    Unavailable,
    /// The state store refused what this request would write as invalid (422; not retried:
    /// the same request would be refused again, and an outage answer would make Alertmanager
    /// retry it forever).
    Rejected,
    /// Something we did not expect (500; retried).
    Internal,
}

impl From<IntakeError> for ApiError {
    fn from(error: IntakeError) -> Self {
        match error {
            IntakeError::Store(StoreError::Unavailable { operation, message }) => {
                tracing::warn!(operation, %message, "state store unavailable; asking Alertmanager to retry");
                ApiError::Unavailable
            }
            IntakeError::Store(StoreError::Rejected { operation, message }) => {
                tracing::error!(operation, %message, "state store rejected the signals; not an outage");
                ApiError::Rejected
            }
            IntakeError::Store(other) => {
                tracing::error!(error = %other, "cannot store signals");
                ApiError::Internal
            }
        }
    }
}

impl From<ReconcileError> for ApiError {
    /// AWS, Kubernetes or the store could not be read: the sender should retry.
    fn from(error: ReconcileError) -> Self {
        match error {
            ReconcileError::Store(StoreError::Unavailable { .. })
            | ReconcileError::Compute(_)
            | ReconcileError::Cluster(_) => {
                tracing::warn!(%error, "cannot handle the EC2 event now; asking the sender to retry");
                ApiError::Unavailable
            }
            ReconcileError::Store(StoreError::Rejected { .. }) => {
                tracing::error!(%error, "state store rejected the EC2 event's records; not an outage");
                ApiError::Rejected
            }
            other => {
                tracing::error!(error = %other, "cannot handle the EC2 event");
                ApiError::Internal
            }
        }
    }
}

impl ApiError {
    /// Metric label of the outcome.
    pub fn outcome(&self) -> &'static str {
        match self {
            ApiError::Unauthorized => "unauthorized",
            ApiError::BadRequest(_) | ApiError::BadEvent(_) => "bad_request",
            ApiError::Unavailable => "unavailable",
            ApiError::Rejected => "rejected",
            ApiError::Internal => "internal_error",
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, message) = match &self {
            ApiError::Unauthorized => {
                (StatusCode::UNAUTHORIZED, "missing or invalid credentials".to_string())
            }
            ApiError::BadRequest(e) => (StatusCode::BAD_REQUEST, e.to_string()),
            ApiError::BadEvent(e) => (StatusCode::BAD_REQUEST, e.to_string()),
            ApiError::Unavailable => {
                (StatusCode::SERVICE_UNAVAILABLE, "dependency unavailable; retry later".to_string())
            }
            ApiError::Rejected => (
                StatusCode::UNPROCESSABLE_ENTITY,
                "the state store refused this request as invalid".to_string(),
            ),
            ApiError::Internal => {
                (StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the service log".to_string())
            }
        };
        let mut response = (status, Json(json!({ "error": message }))).into_response();
        if matches!(self, ApiError::Unauthorized) {
            response.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Bearer"));
        }
        response
    }
}
