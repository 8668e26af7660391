//! EventBridge EC2 events → the two notices the autoscaler acts on.
//!
//! Only the envelope's `detail-type` and the detail's `instance-id` / `instance-action` are
//! read. Anything else well-formed is [`Ec2Event::Other`] (acknowledged, ignored, counted);
//! a body that is not such an envelope is rejected whole, so nothing acts on half a message.

use serde::Deserialize;
use thiserror::Error;

use super::text::{NAME_MAX, bounded};

/// Longest instance id accepted (`i-` and 17 hex digits today).
const INSTANCE_ID_MAX: usize = 32;

/// `detail-type` of the two-minute spot reclaim notice.
pub const SPOT_INTERRUPTION: &str = "EC2 Spot Instance Interruption Warning";
/// `detail-type` of the early "this spot instance is at elevated risk" notice.
pub const REBALANCE_RECOMMENDATION: &str = "EC2 Instance Rebalance Recommendation";

#[derive(Debug, Deserialize)]
struct Envelope {
    #[serde(rename = "detail-type")]
    detail_type: String,
    #[serde(default)]
    id: Option<String>,
    #[serde(default)]
    detail: serde_json::Value,
}

/// What an EventBridge event asks of us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ec2Event {
    /// Spot will reclaim the instance in about two minutes.
    SpotInterruption {
        /// The instance.
        instance_id: String,
        /// `terminate`, `stop` or `hibernate`, as EC2 announced it.
        action: String,
        /// EventBridge's event id (the same on a retry), for logs.
        event_id: Option<String>,
    },
    /// EC2 recommends moving work off the instance before it is interrupted.
    Rebalance {
        /// The instance.
        instance_id: String,
        /// EventBridge's event id, for logs.
        event_id: Option<String>,
    },
    /// A detail-type we do not act on.
    Other {
        /// The detail-type, for the ignored counter's log line.
        detail_type: String,
    },
}

impl Ec2Event {
    /// The instance the event is about, if it is one we act on.
    pub fn instance_id(&self) -> Option<&str> {
        match self {
            Ec2Event::SpotInterruption { instance_id, .. } | Ec2Event::Rebalance { instance_id, .. } => {
                Some(instance_id)
            }
            Ec2Event::Other { .. } => None,
        }
    }
}

/// Why an event body was rejected (400: EventBridge would resend the same body in vain).
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Ec2EventError {
    /// Not JSON, or no `detail-type`.
    #[error("not an EventBridge event: {0}")]
    Malformed(String),
    /// A detail-type we act on, without a usable `detail.instance-id`.
    #[error("{detail_type} without a detail.instance-id")]
    NoInstance {
        /// The event's detail-type.
        detail_type: String,
    },
}

/// Parses one EventBridge event as delivered by an API destination (the event itself as the
/// body, no input transformer).
pub fn parse_ec2_event(body: &[u8]) -> Result<Ec2Event, Ec2EventError> {
    let envelope: Envelope = serde_json::from_slice(body)
        .map_err(|e| Ec2EventError::Malformed(bounded(&e.to_string(), NAME_MAX)))?;
    let field = |name: &str| envelope.detail.get(name).and_then(|v| v.as_str()).map(str::to_string);
    let event_id = envelope.id.as_deref().map(|id| bounded(id, NAME_MAX));
    let instance = || {
        field("instance-id").filter(|id| id.starts_with("i-") && id.len() <= INSTANCE_ID_MAX).ok_or_else(
            || Ec2EventError::NoInstance { detail_type: bounded(&envelope.detail_type, NAME_MAX) },
        )
    };
    match envelope.detail_type.as_str() {
        SPOT_INTERRUPTION => Ok(Ec2Event::SpotInterruption {
            instance_id: instance()?,
            action: field("instance-action").map_or_else(|| "terminate".into(), |a| bounded(&a, NAME_MAX)),
            event_id,
        }),
        REBALANCE_RECOMMENDATION => Ok(Ec2Event::Rebalance { instance_id: instance()?, event_id }),
        _ => Ok(Ec2Event::Other { detail_type: bounded(&envelope.detail_type, NAME_MAX) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(detail_type: &str, detail: serde_json::Value) -> Vec<u8> {
        serde_json::json!({
            "version": "0", "id": "e-1", "detail-type": detail_type, "source": "aws.ec2",
            "account": "123456789012", "time": "2024-01-01T00:00:00Z", "region": "us-east-1",
            "resources": [], "detail": detail,
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn spot_interruption_warning_names_instance_and_action() {
        let body =
            event(SPOT_INTERRUPTION, serde_json::json!({"instance-id": "i-1", "instance-action": "stop"}));
        assert_eq!(
            parse_ec2_event(&body),
            Ok(Ec2Event::SpotInterruption {
                instance_id: "i-1".into(),
                action: "stop".into(),
                event_id: Some("e-1".into())
            })
        );
    }

    #[test]
    fn missing_instance_action_means_terminate() {
        let body = event(SPOT_INTERRUPTION, serde_json::json!({"instance-id": "i-1"}));
        assert!(
            matches!(parse_ec2_event(&body), Ok(Ec2Event::SpotInterruption { action, .. }) if action == "terminate")
        );
    }

    #[test]
    fn rebalance_recommendation_names_instance() {
        let body = event(REBALANCE_RECOMMENDATION, serde_json::json!({"instance-id": "i-2"}));
        assert_eq!(parse_ec2_event(&body).unwrap().instance_id(), Some("i-2"));
    }

    #[test]
    fn other_detail_types_are_recognised_not_rejected() {
        let body = event("EC2 Instance State-change Notification", serde_json::json!({"state": "running"}));
        assert_eq!(
            parse_ec2_event(&body),
            Ok(Ec2Event::Other { detail_type: "EC2 Instance State-change Notification".into() })
        );
    }

    #[test]
    fn bad_bodies_are_rejected() {
        assert!(matches!(parse_ec2_event(b"{not json"), Err(Ec2EventError::Malformed(_))));
        assert!(matches!(parse_ec2_event(b"{\"detail\": {}}"), Err(Ec2EventError::Malformed(_))));
        let no_instance = event(SPOT_INTERRUPTION, serde_json::json!({"instance-action": "terminate"}));
        assert!(matches!(parse_ec2_event(&no_instance), Err(Ec2EventError::NoInstance { .. })));
        let bad_instance = event(REBALANCE_RECOMMENDATION, serde_json::json!({"instance-id": "x"}));
        assert!(matches!(parse_ec2_event(&bad_instance), Err(Ec2EventError::NoInstance { .. })));
    }

    #[test]
    fn texts_copied_from_an_event_are_bounded() {
        let huge = "x".repeat(100_000);
        let body = |detail_type: &str, detail| {
            let mut body: serde_json::Value = serde_json::from_slice(&event(detail_type, detail)).unwrap();
            body["id"] = serde_json::json!(huge);
            body.to_string().into_bytes()
        };
        let spot =
            body(SPOT_INTERRUPTION, serde_json::json!({"instance-id": "i-1", "instance-action": huge}));
        let Ok(Ec2Event::SpotInterruption { action, event_id, .. }) = parse_ec2_event(&spot) else {
            panic!("not a spot warning")
        };
        assert!(action.len() <= NAME_MAX && event_id.unwrap().len() <= NAME_MAX);
        let Ok(Ec2Event::Other { detail_type }) = parse_ec2_event(&body(&huge, serde_json::json!({}))) else {
            panic!("not other")
        };
        assert!(detail_type.len() <= NAME_MAX);
        let long_id = body(REBALANCE_RECOMMENDATION, serde_json::json!({"instance-id": format!("i-{huge}")}));
        assert!(parse_ec2_event(&long_id).unwrap_err().to_string().len() < 1024);
    }
}
