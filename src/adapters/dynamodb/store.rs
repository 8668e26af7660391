//! The state-store edge: signals, the per-pool record with its lease, and the audit trail.

use std::time::Duration;

use async_trait::async_trait;
use serde::Serialize;
use thiserror::Error;

use crate::core::interruption::Interruption;
use crate::core::model::{PoolState, Signal};
use crate::core::time::Timestamp;

/// The `state#<pool>` record: durable pool state plus lease bookkeeping.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolRecord {
    /// What the core needs.
    pub state: PoolState,
    /// Incremented on every lease acquisition; 0 when the record does not exist yet.
    pub fencing_token: u64,
    /// Current lease holder and its expiry, if held.
    pub lease: Option<(String, Timestamp)>,
    /// Workers counted at the last write (informational).
    pub node_count: u32,
    /// Direction of the last completed action, for `status`.
    pub last_scale_action: Option<String>,
}

impl PoolRecord {
    /// Whether someone other than `owner` holds an unexpired lease at `now`.
    pub fn leased_by_other(&self, owner: &str, now: Timestamp) -> bool {
        matches!(&self.lease, Some((holder, expires)) if holder != owner && *expires > now)
    }

    /// Whether anyone holds an unexpired lease at `now`: its holder may still save the record,
    /// so nothing may be written ahead from this read (see `StateStore::begin`).
    pub fn leased(&self, now: Timestamp) -> bool {
        matches!(&self.lease, Some((_, expires)) if *expires > now)
    }
}

/// Proof of holding a pool's lease; every write under it is conditional on the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    /// Pool the lease is on.
    pub pool: String,
    /// This process's owner id.
    pub owner: String,
    /// Fencing token taken with the lease.
    pub fencing_token: u64,
}

/// One audit record: a decision or an outcome.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditEvent {
    /// When it happened.
    pub at: Timestamp,
    /// Pool.
    pub pool: String,
    /// `decision` or `outcome`.
    pub kind: String,
    /// launch, drain, hold, or the outcome (succeeded, failed, …).
    pub action: String,
    /// Reason label (stable).
    pub reason_label: String,
    /// Human reason.
    pub reason: String,
    /// Operation id, if any.
    pub op_id: Option<String>,
    /// Extra detail (instances, zones, errors) as JSON.
    pub detail: serde_json::Value,
    /// True when nothing was really done (`--dry-run`).
    pub dry_run: bool,
}

/// Why a state-store call failed.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The store could not be reached or answered with an error; the caller may retry.
    #[error("state store unavailable during {operation}: {message}")]
    Unavailable {
        /// What was attempted.
        operation: &'static str,
        /// The error.
        message: String,
    },
    /// Someone else holds the lease, or took it since our read: back off, they will act.
    #[error("pool {pool} is leased by another holder or changed since it was read")]
    Contended {
        /// Pool.
        pool: String,
    },
    /// Our lease was taken over (fencing token moved): stop writing.
    #[error("lease on pool {pool} lost (fencing token {token} is stale)")]
    LeaseLost {
        /// Pool.
        pool: String,
        /// Our stale token.
        token: u64,
    },
    /// The store refused the request as invalid (DynamoDB `ValidationException`, e.g. an item
    /// over 400 KB): not an outage, and the same request will fail again.
    #[error("state store rejected {operation}: {message}")]
    Rejected {
        /// What was attempted.
        operation: &'static str,
        /// The store's message.
        message: String,
    },
    /// A stored item could not be understood.
    #[error("corrupt item {key}: {message}")]
    Corrupt {
        /// Sort key of the item.
        key: String,
        /// What is wrong.
        message: String,
    },
}

impl StoreError {
    /// Low-cardinality label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            StoreError::Unavailable { .. } => "unavailable",
            StoreError::Contended { .. } => "contended",
            StoreError::LeaseLost { .. } => "lease_lost",
            StoreError::Corrupt { .. } => "corrupt",
            StoreError::Rejected { .. } => "rejected",
        }
    }
}

/// What `save` writes besides the state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LeaseAction {
    /// Keep the lease and push its expiry out.
    Extend,
    /// Give the lease up in the same write.
    Release,
}

/// Durable state shared by every replica of the service.
#[async_trait]
pub trait StateStore: Send + Sync {
    /// Cheap reachability check for `/readyz`.
    async fn ping(&self) -> Result<(), StoreError>;
    /// Stores or refreshes a firing signal until `expires_at`.
    async fn put_signal(&self, signal: &Signal, expires_at: Timestamp) -> Result<(), StoreError>;
    /// Removes a resolved signal (absent is fine).
    async fn delete_signal(&self, pool: &str, fingerprint: &str) -> Result<(), StoreError>;
    /// Signals of `pool` that have not expired at `now`.
    async fn active_signals(&self, pool: &str, now: Timestamp) -> Result<Vec<Signal>, StoreError>;
    /// Strongly consistent read of the pool record (a default record if none exists).
    async fn read_pool(&self, pool: &str) -> Result<PoolRecord, StoreError>;
    /// Takes the lease and writes `state` (with its new operation) in one conditional write,
    /// only if nobody took the lease since the read that returned `seen_token`.
    async fn begin(
        &self,
        pool: &str,
        seen_token: u64,
        state: &PoolState,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Lease, StoreError>;
    /// Takes the lease if it is free, expired or ours, returning the fresh record.
    async fn acquire(
        &self,
        pool: &str,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<(Lease, PoolRecord), StoreError>;
    /// Writes the pool state under the lease (conditional on its fencing token); `node_count`
    /// only when the caller has just counted the workers.
    async fn save(
        &self,
        lease: &Lease,
        state: &PoolState,
        node_count: Option<u32>,
        lease_action: LeaseAction,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<(), StoreError>;
    /// Pushes the lease's expiry out, only if the lease is still ours (conditional on its
    /// fencing token): the check right before an irreversible act (TerminateInstances, a round
    /// of evictions), so a holder that stalled past `lease_ttl` and was replaced stops there
    /// (`LeaseLost`).
    async fn renew(&self, lease: &Lease, now: Timestamp, ttl: Duration) -> Result<(), StoreError>;
    /// Gives the lease up without changing state.
    async fn release(&self, lease: &Lease) -> Result<(), StoreError>;
    /// Appends an audit record (kept 30 days).
    async fn record_event(&self, event: &AuditEvent) -> Result<(), StoreError>;
    /// The most recent audit records of `pool`, newest first.
    async fn recent_events(&self, pool: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError>;
    /// Writes a new `interrupt#<instance-id>` record unless one exists: true when written,
    /// false for a repeat (EventBridge retries, both replicas receiving it).
    async fn create_interruption(&self, record: &Interruption) -> Result<bool, StoreError>;
    /// Interruption records still being handled, each with its version.
    async fn open_interruptions(&self) -> Result<Vec<(Interruption, u64)>, StoreError>;
    /// Every interruption record still kept (open and closed, two days after their deadline),
    /// each with its version: a spot warning upgrades a rebalance's record, and the rebalance
    /// cap counts the instances rebalances took out of service.
    async fn interruptions(&self) -> Result<Vec<(Interruption, u64)>, StoreError>;
    /// Replaces an interruption record if its version is still `seen` (`Contended` if another
    /// replica moved it on first).
    async fn save_interruption(&self, record: &Interruption, seen: u64) -> Result<(), StoreError>;
}
