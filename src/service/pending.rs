//! Signal writes in flight, shared by the intake and the pool workers.
//!
//! The intake triggers the pool *before* its signal write finishes, so the reconcile's reads
//! (pool record, signal query, instances) run at the same time as the write instead of after
//! it. A reconcile takes the pending writes of its pool before it queries, waits for them to
//! settle alongside its reads, and merges the ones that succeeded into the queried signals:
//! nothing is acted on that is not durable, and a write that finished before the query is
//! seen by the (strongly consistent) query itself. A write that is registered after the
//! reconcile took its list has triggered another reconcile.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::core::model::{Direction, Signal};

/// What a pending write changes.
#[derive(Debug, Clone, PartialEq)]
pub(super) enum SignalChange {
    /// The signal is stored or refreshed.
    Fire(Signal),
    /// The signal with this fingerprint is removed.
    Resolve(String),
}

impl SignalChange {
    fn fingerprint(&self) -> &str {
        match self {
            SignalChange::Fire(signal) => &signal.fingerprint,
            SignalChange::Resolve(fingerprint) => fingerprint,
        }
    }
}

/// A write a reconcile can wait for: `Some(true)` once durable, `Some(false)` if it failed; a
/// closed channel (the intake was cancelled) counts as failed.
#[derive(Clone)]
pub(super) struct PendingWrite {
    id: u64,
    change: SignalChange,
    outcome: watch::Receiver<Option<bool>>,
}

#[derive(Default)]
struct Table {
    next_id: u64,
    by_pool: HashMap<String, Vec<PendingWrite>>,
}

/// The pending signal writes of every pool.
#[derive(Clone, Default)]
pub(super) struct PendingWrites {
    table: Arc<Mutex<Table>>,
}

impl PendingWrites {
    /// Registers a write about to start; the guard reports its outcome and unregisters it,
    /// also when the intake is dropped half-way.
    pub fn register(&self, pool: &str, change: SignalChange) -> WriteGuard {
        let (sender, outcome) = watch::channel(None);
        // A poisoned table only loses the overlap: the write is still awaited by the intake
        // and the next reconcile's query sees it.
        let id = match self.table.lock() {
            Ok(mut table) => {
                table.next_id += 1;
                let id = table.next_id;
                table.by_pool.entry(pool.to_string()).or_default().push(PendingWrite { id, change, outcome });
                id
            }
            Err(_) => 0,
        };
        WriteGuard { writes: self.clone(), pool: pool.to_string(), id, sender }
    }

    /// The writes of `pool` in flight now.
    pub fn of(&self, pool: &str) -> Vec<PendingWrite> {
        self.table.lock().map(|t| t.by_pool.get(pool).cloned().unwrap_or_default()).unwrap_or_default()
    }

    fn remove(&self, pool: &str, id: u64) {
        if let Ok(mut table) = self.table.lock()
            && let Some(writes) = table.by_pool.get_mut(pool)
        {
            writes.retain(|w| w.id != id);
            if writes.is_empty() {
                table.by_pool.remove(pool);
            }
        }
    }
}

/// Held by the intake for the duration of one signal write.
pub(super) struct WriteGuard {
    writes: PendingWrites,
    pool: String,
    id: u64,
    sender: watch::Sender<Option<bool>>,
}

impl WriteGuard {
    /// Reports the write's outcome to the reconciles waiting for it.
    pub fn finish(self, durable: bool) {
        self.sender.send_replace(Some(durable));
    }
}

impl Drop for WriteGuard {
    fn drop(&mut self) {
        self.writes.remove(&self.pool, self.id);
    }
}

/// Waits for `writes` to settle and returns the changes that became durable, in order.
pub(super) async fn settle(writes: Vec<PendingWrite>) -> Vec<SignalChange> {
    let mut durable = Vec::new();
    for mut write in writes {
        let ok = matches!(write.outcome.wait_for(Option::is_some).await.map(|o| *o), Ok(Some(true)));
        if ok {
            durable.push(write.change);
        }
    }
    durable
}

/// The changes of `writes` as if they had all succeeded, for a decision that is only acted on
/// once they did (`reconcile::launch_from_memory`); empty unless one of them fires a
/// scale-up, the one alert the fast path serves.
pub(super) fn fired_up(writes: &[PendingWrite]) -> Vec<SignalChange> {
    let up = |w: &PendingWrite| matches!(&w.change, SignalChange::Fire(s) if s.direction == Direction::Up);
    if !writes.iter().any(up) {
        return Vec::new();
    }
    writes.iter().map(|w| w.change.clone()).collect()
}

/// The active signals once the `durable` changes (newer than the query) are applied.
pub(super) fn merge(queried: Vec<Signal>, durable: &[SignalChange]) -> Vec<Signal> {
    let mut signals = queried;
    for change in durable {
        signals.retain(|s| s.fingerprint != change.fingerprint());
        if let SignalChange::Fire(signal) = change {
            signals.push(signal.clone());
        }
    }
    signals
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::model::Direction;

    fn signal(fingerprint: &str, direction: Direction) -> Signal {
        Signal {
            pool: "workers".into(),
            direction,
            step: 1,
            reason: "r".into(),
            fingerprint: fingerprint.into(),
            alertname: "A".into(),
        }
    }

    #[test]
    fn a_fresh_signal_joins_the_queried_ones_and_replaces_its_older_copy() {
        let queried = vec![signal("a", Direction::Down), signal("b", Direction::Down)];
        let merged = merge(queried, &[SignalChange::Fire(signal("a", Direction::Up))]);
        let fps: Vec<_> = merged.iter().map(|s| (s.fingerprint.as_str(), s.direction)).collect();
        assert_eq!(fps, vec![("b", Direction::Down), ("a", Direction::Up)]);
    }

    #[test]
    fn a_fresh_resolve_removes_the_queried_signal_and_the_last_change_wins() {
        let queried = vec![signal("a", Direction::Up)];
        assert!(merge(queried.clone(), &[SignalChange::Resolve("a".into())]).is_empty());
        let fire_then_resolve =
            [SignalChange::Fire(signal("c", Direction::Up)), SignalChange::Resolve("c".into())];
        assert_eq!(merge(queried, &fire_then_resolve).len(), 1);
    }

    #[tokio::test]
    async fn only_writes_that_became_durable_are_merged() {
        let writes = PendingWrites::default();
        let ok = writes.register("workers", SignalChange::Fire(signal("ok", Direction::Up)));
        let failed = writes.register("workers", SignalChange::Fire(signal("failed", Direction::Up)));
        let cancelled = writes.register("workers", SignalChange::Fire(signal("cancelled", Direction::Up)));
        let taken = writes.of("workers");
        assert_eq!(taken.len(), 3);
        assert!(writes.of("other").is_empty());
        let waiting = tokio::spawn(settle(taken));
        ok.finish(true);
        failed.finish(false);
        drop(cancelled);
        let durable = waiting.await.unwrap();
        assert_eq!(durable, vec![SignalChange::Fire(signal("ok", Direction::Up))]);
        assert!(writes.of("workers").is_empty(), "finished writes are unregistered");
    }
}
