//! An in-memory [`StateStore`] for the service's tests, with DynamoDB's semantics that matter
//! (lease conditions, fencing tokens, conditional interrupt records).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::store::{AuditEvent, Lease, LeaseAction, PoolRecord, StateStore, StoreError};
use crate::core::interruption::{InterruptPhase, Interruption};
use crate::core::model::{PoolState, Signal};
use crate::core::time::Timestamp;

#[derive(Default)]
struct StoreData {
    signals: HashMap<(String, String), (Signal, Timestamp)>,
    pools: HashMap<String, PoolRecord>,
    events: Vec<AuditEvent>,
    interruptions: HashMap<String, (Interruption, u64)>,
}

/// In-memory [`StateStore`]; `set_down(true)` makes every call fail as unreachable.
#[derive(Default)]
pub struct MemoryStore {
    data: Mutex<StoreData>,
    down: AtomicBool,
    /// Writes are refused as invalid (DynamoDB's ValidationException).
    rejecting: AtomicBool,
    pub writes: AtomicU64,
    /// GetItem calls of a pool record.
    pub record_reads: AtomicU64,
    /// Another writer's change that lands right after the next read of a pool record.
    after_next_read: Mutex<Option<RecordChange>>,
}

/// A change to a stored pool record, made by a writer the test plays.
type RecordChange = Box<dyn FnOnce(&mut PoolRecord) + Send>;

impl MemoryStore {
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
    pub fn set_rejecting(&self, rejecting: bool) {
        self.rejecting.store(rejecting, Ordering::SeqCst);
    }
    pub fn events(&self) -> Vec<AuditEvent> {
        self.data.lock().unwrap().events.clone()
    }
    pub fn interruption(&self, instance_id: &str) -> Option<Interruption> {
        self.data.lock().unwrap().interruptions.get(instance_id).map(|(r, _)| r.clone())
    }
    pub fn interruption_with_version(&self, instance_id: &str) -> Option<(Interruption, u64)> {
        self.data.lock().unwrap().interruptions.get(instance_id).cloned()
    }
    pub fn record(&self, pool: &str) -> PoolRecord {
        self.data.lock().unwrap().pools.get(pool).cloned().unwrap_or_default()
    }
    pub fn set_record(&self, pool: &str, record: PoolRecord) {
        self.data.lock().unwrap().pools.insert(pool.into(), record);
    }
    /// Applies `change` to the stored record right after the next read of a pool record has
    /// answered: another writer that got in between the read and what follows it.
    pub fn after_next_read(&self, change: impl FnOnce(&mut PoolRecord) + Send + 'static) {
        *self.after_next_read.lock().unwrap() = Some(Box::new(change));
    }
    fn check(
        &self,
        operation: &'static str,
        write: bool,
    ) -> Result<std::sync::MutexGuard<'_, StoreData>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable { operation, message: "connection refused".into() });
        }
        if write && self.rejecting.load(Ordering::SeqCst) {
            return Err(StoreError::Rejected {
                operation,
                message: "Item size has exceeded the maximum".into(),
            });
        }
        if write {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        Ok(self.data.lock().unwrap())
    }
}

/// The fencing condition of every write under a lease: same token, same owner.
fn still_mine(record: &PoolRecord, lease: &Lease) -> Result<(), StoreError> {
    let mine = record.fencing_token == lease.fencing_token
        && record.lease.as_ref().is_some_and(|(holder, _)| holder == &lease.owner);
    if !mine {
        return Err(StoreError::LeaseLost { pool: lease.pool.clone(), token: lease.fencing_token });
    }
    Ok(())
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.check("DescribeTable", false).map(|_| ())
    }
    async fn put_signal(&self, signal: &Signal, expires_at: Timestamp) -> Result<(), StoreError> {
        let mut d = self.check("PutItem", true)?;
        d.signals.insert((signal.pool.clone(), signal.fingerprint.clone()), (signal.clone(), expires_at));
        Ok(())
    }
    async fn delete_signal(&self, pool: &str, fingerprint: &str) -> Result<(), StoreError> {
        let mut d = self.check("DeleteItem", true)?;
        d.signals.remove(&(pool.to_string(), fingerprint.to_string()));
        Ok(())
    }
    async fn active_signals(&self, pool: &str, now: Timestamp) -> Result<Vec<Signal>, StoreError> {
        let d = self.check("Query", false)?;
        Ok(d.signals
            .values()
            .filter(|(s, exp)| s.pool == pool && *exp > now)
            .map(|(s, _)| s.clone())
            .collect())
    }
    async fn read_pool(&self, pool: &str) -> Result<PoolRecord, StoreError> {
        let mut d = self.check("GetItem", false)?;
        self.record_reads.fetch_add(1, Ordering::SeqCst);
        let answer = d.pools.get(pool).cloned().unwrap_or_default();
        if let Some(change) = self.after_next_read.lock().unwrap().take() {
            change(d.pools.entry(pool.into()).or_default());
        }
        Ok(answer)
    }
    async fn begin(
        &self,
        pool: &str,
        seen_token: u64,
        state: &PoolState,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        let mut d = self.check("UpdateItem", true)?;
        let record = d.pools.entry(pool.into()).or_default();
        let lease_free = record.lease.as_ref().is_none_or(|(_, exp)| *exp < now);
        if record.fencing_token != seen_token || !lease_free || record.state.op.is_some() {
            return Err(StoreError::Contended { pool: pool.into() });
        }
        record.fencing_token += 1;
        record.lease = Some((owner.into(), now.plus(ttl)));
        record.state.op = state.op.clone();
        record.state.backoffs = state.backoffs.clone();
        Ok(Lease { pool: pool.into(), owner: owner.into(), fencing_token: record.fencing_token })
    }
    async fn acquire(
        &self,
        pool: &str,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<(Lease, PoolRecord), StoreError> {
        let mut d = self.check("UpdateItem", true)?;
        let record = d.pools.entry(pool.into()).or_default();
        let free = record.lease.as_ref().is_none_or(|(holder, exp)| *exp < now || holder == owner);
        if !free {
            return Err(StoreError::Contended { pool: pool.into() });
        }
        record.fencing_token += 1;
        record.lease = Some((owner.into(), now.plus(ttl)));
        let lease = Lease { pool: pool.into(), owner: owner.into(), fencing_token: record.fencing_token };
        Ok((lease, record.clone()))
    }
    async fn save(
        &self,
        lease: &Lease,
        state: &PoolState,
        node_count: Option<u32>,
        lease_action: LeaseAction,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut d = self.check("UpdateItem", true)?;
        let record = d.pools.entry(lease.pool.clone()).or_default();
        still_mine(record, lease)?;
        record.state = PoolState { backoffs: state.live_backoffs(now).cloned().collect(), ..state.clone() };
        if let Some(count) = node_count {
            record.node_count = count;
        }
        record.lease = match lease_action {
            LeaseAction::Extend => Some((lease.owner.clone(), now.plus(ttl))),
            LeaseAction::Release => None,
        };
        Ok(())
    }
    async fn renew(&self, lease: &Lease, now: Timestamp, ttl: Duration) -> Result<(), StoreError> {
        let mut d = self.check("UpdateItem", true)?;
        let record = d.pools.entry(lease.pool.clone()).or_default();
        still_mine(record, lease)?;
        record.lease = Some((lease.owner.clone(), now.plus(ttl)));
        Ok(())
    }
    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut d = self.check("UpdateItem", true)?;
        let record = d.pools.entry(lease.pool.clone()).or_default();
        if record.fencing_token == lease.fencing_token {
            record.lease = None;
        }
        Ok(())
    }
    async fn record_event(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let mut d = self.check("PutItem", true)?;
        d.events.push(event.clone());
        Ok(())
    }
    async fn recent_events(&self, pool: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let d = self.check("Query", false)?;
        Ok(d.events.iter().rev().filter(|e| e.pool == pool).take(limit).cloned().collect())
    }
    async fn create_interruption(&self, record: &Interruption) -> Result<bool, StoreError> {
        let mut d = self.check("PutItem", true)?;
        if d.interruptions.contains_key(&record.instance_id) {
            return Ok(false);
        }
        d.interruptions.insert(record.instance_id.clone(), (record.clone(), 1));
        Ok(true)
    }
    async fn open_interruptions(&self) -> Result<Vec<(Interruption, u64)>, StoreError> {
        let d = self.check("Query", false)?;
        Ok(d.interruptions.values().filter(|(r, _)| r.phase == InterruptPhase::Open).cloned().collect())
    }
    async fn interruptions(&self) -> Result<Vec<(Interruption, u64)>, StoreError> {
        let d = self.check("Query", false)?;
        Ok(d.interruptions.values().cloned().collect())
    }
    async fn save_interruption(&self, record: &Interruption, seen: u64) -> Result<(), StoreError> {
        let mut d = self.check("PutItem", true)?;
        match d.interruptions.get_mut(&record.instance_id) {
            Some(entry) if entry.1 == seen => {
                *entry = (record.clone(), seen + 1);
                Ok(())
            }
            _ => Err(StoreError::Contended { pool: record.pool.clone() }),
        }
    }
}
