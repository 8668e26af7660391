//! The audit trail's writer: every decision and outcome becomes an `event#` record in the
//! store and, when configured, a copy for the event sink (CloudWatch Logs). A failed write is
//! logged; it never fails the step that made the decision.

use std::sync::Arc;

use tracing::warn;

use crate::adapters::cloudwatch::sink::EventSink;
use crate::adapters::{AuditEvent, StateStore};

/// Writes audit records; cheap to clone, handed to every loop that decides.
#[derive(Clone)]
pub(super) struct Audit {
    store: Arc<dyn StateStore>,
    sink: Option<Arc<dyn EventSink>>,
}

impl Audit {
    /// Records go to `store`, and a copy to `sink` if there is one.
    pub(super) fn new(store: Arc<dyn StateStore>, sink: Option<Arc<dyn EventSink>>) -> Self {
        Audit { store, sink }
    }

    /// Records `event`.
    pub(super) async fn record(&self, event: AuditEvent) {
        if let Some(sink) = &self.sink {
            sink.send(&event);
        }
        if let Err(e) = self.store.record_event(&event).await {
            warn!(pool = %event.pool, error = %e, "cannot write audit event");
        }
    }
}
