//! `POST /v1/alerts`: Alertmanager's webhook.

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;

use super::{ApiError, AppState};
use crate::core::alert::parse_notification;
use crate::service::IntakeSummary;

/// Parses the notification, makes its signals durable and triggers the pools (200), or says
/// why not (400 bad payload, 503 store down).
pub(super) async fn receive(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<IntakeSummary>, ApiError> {
    let service = &state.service;
    let config = service.config();
    let result = match parse_notification(&body, &config.default_pool, |pool| config.pools.contains_key(pool))
    {
        Err(error) => {
            tracing::warn!(%error, "rejected webhook payload");
            Err(ApiError::BadRequest(error))
        }
        Ok(notification) => service.accept(notification).await.map(Json).map_err(ApiError::from),
    };
    service.metrics().webhook_request(match &result {
        Ok(_) => "accepted",
        Err(e) => e.outcome(),
    });
    result
}
