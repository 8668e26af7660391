//! An [`EventSink`] for the service's tests.

use std::sync::Mutex;

use super::sink::EventSink;
use crate::adapters::AuditEvent;

/// [`EventSink`] that keeps what it was sent.
#[derive(Default)]
pub struct RecordingSink(pub Mutex<Vec<AuditEvent>>);

impl EventSink for RecordingSink {
    fn send(&self, event: &AuditEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}
