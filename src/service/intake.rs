//! Webhook intake: store or remove the notification's signals, then trigger reconciles.
//! [`Intake`] owns the recent alert states and is started with only what it needs: the
//! store, the clock, the metrics, the signal TTL, the pools' wake-ups and the pending-writes
//! channel the pool workers read.
//!
//! The answer to Alertmanager depends only on the signals being durable; scaling happens in
//! the pool workers. Identical repeats within a short window (HA replicas, retries) are
//! recognised in memory and cause no write at all.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use thiserror::Error;

use super::pending::{PendingWrites, SignalChange, WriteGuard};
use super::triggers::Triggers;
use crate::adapters::{Clock, StateStore, StoreError};
use crate::core::alert::Notification;
use crate::core::model::{Direction, Signal};
use crate::core::time::Timestamp;
use crate::metrics::{AlertKindLabels, Metrics};

/// Repeats of the same alert state within this window are not written again. It is far below
/// any sensible `group_interval`, so a real change of state is never hidden by it.
pub const DUPLICATE_WINDOW: Duration = Duration::from_secs(30);

/// What an accepted notification did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct IntakeSummary {
    /// Signals stored or refreshed.
    pub stored: usize,
    /// Signals removed.
    pub removed: usize,
    /// Repeats recognised without a write.
    pub duplicates: usize,
    /// Alerts that were not ours.
    pub ignored: usize,
}

/// Why a notification could not be taken.
#[derive(Debug, Error)]
pub enum IntakeError {
    /// The state store failed; Alertmanager should retry.
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, PartialEq)]
enum SeenState {
    Firing { direction: Direction, step: u32, reason: String },
    Resolved,
}

/// Alert states written recently, keyed by (pool, fingerprint).
#[derive(Debug, Default)]
struct RecentSignals {
    seen: HashMap<(String, String), (SeenState, Timestamp)>,
}

impl RecentSignals {
    fn is_duplicate(&self, key: &(String, String), state: &SeenState, now: Timestamp) -> bool {
        matches!(self.seen.get(key), Some((seen, at)) if seen == state && now.since(*at) < DUPLICATE_WINDOW)
    }

    fn remember(&mut self, key: (String, String), state: SeenState, now: Timestamp) {
        self.seen.retain(|_, (_, at)| now.since(*at) < DUPLICATE_WINDOW);
        self.seen.insert(key, (state, now));
    }
}

type SignalKey = (String, String);

/// One signal write of a notification.
#[derive(Clone, Copy)]
enum Write<'a> {
    Put(&'a Signal),
    Delete(&'a str, &'a str),
}

fn firing_state(signal: &Signal) -> SeenState {
    SeenState::Firing { direction: signal.direction, step: signal.step, reason: signal.reason.clone() }
}

/// The webhook's intake: makes signals durable and wakes the pools they concern.
pub(super) struct Intake {
    store: Arc<dyn StateStore>,
    clock: Arc<dyn Clock>,
    metrics: Arc<Metrics>,
    signal_ttl: Duration,
    triggers: Triggers,
    /// Signal writes in flight, read by the pool workers' reconciles.
    pending: PendingWrites,
    recent: Mutex<RecentSignals>,
}

impl Intake {
    /// An intake writing signals that live `signal_ttl` and waking the pools through
    /// `triggers`; `pending` carries its writes in flight to the pool workers.
    pub(super) fn new(
        store: Arc<dyn StateStore>,
        clock: Arc<dyn Clock>,
        metrics: Arc<Metrics>,
        signal_ttl: Duration,
        triggers: Triggers,
        pending: PendingWrites,
    ) -> Self {
        Intake { store, clock, metrics, signal_ttl, triggers, pending, recent: Mutex::default() }
    }

    /// Makes the notification's signals durable and triggers the pools it touched.
    ///
    /// The pools are triggered before the writes finish: their reconciles read at the same
    /// time and merge these writes once durable (see `super::pending`).
    pub(super) async fn accept(&self, notification: Notification) -> Result<IntakeSummary, IntakeError> {
        let now = self.clock.now();
        let mut summary = IntakeSummary { ignored: notification.ignored, ..IntakeSummary::default() };
        self.count_alerts(&notification);
        let mut writes = Vec::new();
        for signal in &notification.firing {
            let key = (signal.pool.clone(), signal.fingerprint.clone());
            if self.claim(&key, firing_state(signal), now) {
                let guard = self.pending.register(&signal.pool, SignalChange::Fire(signal.clone()));
                writes.push((key, Write::Put(signal), guard));
            } else {
                summary.duplicates += 1;
            }
        }
        for resolved in &notification.resolved {
            let key = (resolved.pool.clone(), resolved.fingerprint.clone());
            if self.claim(&key, SeenState::Resolved, now) {
                let change = SignalChange::Resolve(resolved.fingerprint.clone());
                let guard = self.pending.register(&resolved.pool, change);
                writes.push((key, Write::Delete(&resolved.pool, &resolved.fingerprint), guard));
            } else {
                summary.duplicates += 1;
            }
        }
        for pool in notification.pools() {
            self.triggers.pool(&pool);
        }
        self.write_all(writes, now, &mut summary).await?;
        self.metrics.last_notification.set(now.as_millis() as f64 / 1000.0);
        tracing::info!(
            stored = summary.stored,
            removed = summary.removed,
            duplicates = summary.duplicates,
            ignored = summary.ignored,
            "notification accepted"
        );
        Ok(summary)
    }

    /// Performs the claimed writes in order, reporting each outcome to waiting reconciles. On
    /// the first failure the rest are not attempted and their claims are given back.
    async fn write_all(
        &self,
        writes: Vec<(SignalKey, Write<'_>, WriteGuard)>,
        now: Timestamp,
        summary: &mut IntakeSummary,
    ) -> Result<(), IntakeError> {
        let store = &self.store;
        let expires_at = now.plus(self.signal_ttl);
        let mut failure = None;
        for (key, write, guard) in writes {
            if failure.is_some() {
                self.unclaim(&key);
                guard.finish(false);
                continue;
            }
            let result = match write {
                Write::Put(signal) => store.put_signal(signal, expires_at).await,
                Write::Delete(pool, fingerprint) => store.delete_signal(pool, fingerprint).await,
            };
            guard.finish(result.is_ok());
            match result {
                Ok(()) if matches!(write, Write::Put(_)) => summary.stored += 1,
                Ok(()) => summary.removed += 1,
                Err(e) => {
                    self.unclaim(&key);
                    failure = Some(e);
                }
            }
        }
        failure.map_or(Ok(()), |e| Err(e.into()))
    }

    /// Claims the write of this alert state: false when the same state was written (or is
    /// being written) within the window. Claiming before writing makes concurrent repeats
    /// skip too; a failed write gives the claim back so the retry writes.
    fn claim(&self, key: &(String, String), state: SeenState, now: Timestamp) -> bool {
        // A poisoned lock only loses the duplicate shortcut; every write still happens.
        let Ok(mut recent) = self.recent.lock() else { return true };
        if recent.is_duplicate(key, &state, now) {
            return false;
        }
        recent.remember(key.clone(), state, now);
        true
    }

    fn unclaim(&self, key: &(String, String)) {
        if let Ok(mut recent) = self.recent.lock() {
            recent.seen.remove(key);
        }
    }

    fn count_alerts(&self, notification: &Notification) {
        let count = |kind: &'static str, n: usize| {
            if n > 0 {
                self.metrics.alerts_received.get_or_create(&AlertKindLabels { kind }).inc_by(n as u64);
            }
        };
        let up = notification.firing.iter().filter(|s| s.direction == Direction::Up).count();
        count("scale_up", up);
        count("scale_down", notification.firing.len() - up);
        count("resolved", notification.resolved.len());
        count("ignored", notification.ignored);
    }
}
