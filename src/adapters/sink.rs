//! The event-sink edge: a copy of every scaling event (the audit trail's decisions and
//! outcomes) for an outside log. Sending never blocks or fails a scaling action: the call
//! only enqueues, and the adapter ships in the background and counts its failures.

use super::store::AuditEvent;

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
