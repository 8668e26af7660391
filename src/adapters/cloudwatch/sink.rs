//! The event-sink edge: a copy of every scaling event (the audit trail's decisions and
//! outcomes) for an outside log. Sending never blocks or fails a scaling action: the call
//! only enqueues, and the adapter ships in the background and counts its failures.

use crate::adapters::AuditEvent;

/// Takes a copy of each scaling event; must return at once.
pub trait EventSink: Send + Sync {
    /// Enqueues one event; dropped (and counted) if the buffer is full.
    fn send(&self, event: &AuditEvent);
}

/// The one JSON record an event becomes, with the cluster it belongs to.
pub fn event_record(cluster_id: &str, event: &AuditEvent) -> String {
    let mut value = serde_json::to_value(event).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.insert("cluster_id".into(), serde_json::Value::String(cluster_id.to_string()));
        map.insert("at".into(), serde_json::Value::String(event.at.to_rfc3339()));
    }
    value.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::time::Timestamp;

    #[test]
    fn a_record_is_one_json_object_naming_its_cluster() {
        let event = AuditEvent {
            at: Timestamp::from_millis(1_700_000_000_000),
            pool: "workers".into(),
            kind: "decision".into(),
            action: "launch".into(),
            reason_label: "scale_up_signal".into(),
            reason: "scale up by 1: cpu".into(),
            op_id: Some("op-1".into()),
            detail: serde_json::json!({"launch": []}),
            dry_run: false,
        };
        let record: serde_json::Value = serde_json::from_str(&event_record("prod", &event)).unwrap();
        assert_eq!(record["cluster_id"], "prod");
        assert_eq!(record["at"], "2023-11-14T22:13:20.000Z");
        assert_eq!((record["kind"].as_str(), record["action"].as_str()), (Some("decision"), Some("launch")));
        assert_eq!(record["reason"], "scale up by 1: cpu");
    }
}
