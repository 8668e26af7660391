//! `POST /v1/events/ec2`: EventBridge EC2 events through an API destination, authenticated
//! like the webhook. 200 for anything understood (acted on, repeated, or not ours), 400 for
//! a body that is not an EventBridge event, 503 when AWS or Kubernetes cannot be read (the
//! API destination retries).

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;

use super::{ApiError, AppState};
use crate::core::ec2_event::parse_ec2_event;
use crate::metrics::Ec2EventLabels;
use crate::service::Ec2EventSummary;

/// Parses the event and hands it to the service.
pub(super) async fn receive(
    State(state): State<AppState>,
    body: Bytes,
) -> Result<Json<Ec2EventSummary>, ApiError> {
    let service = &state.service;
    match parse_ec2_event(&body) {
        Err(error) => {
            tracing::warn!(%error, "rejected EC2 event");
            let labels = Ec2EventLabels { kind: "unparsed", outcome: "bad_request" };
            service.metrics().ec2_events.get_or_create(&labels).inc();
            Err(ApiError::BadEvent(error))
        }
        Ok(event) => service.accept_ec2_event(event).await.map(Json).map_err(ApiError::from),
    }
}
