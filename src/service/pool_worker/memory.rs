//! What this process remembers of each pool between reconciles, so an alert on a quiet pool
//! goes from the webhook to the launch request in two sequential AWS round trips (the
//! write-ahead, then the launch) instead of three (reads first).
//!
//! Remembered: the pool record and its signals as the last sweep read them, and the last
//! instance list. Trusting them is safe because of what the write-ahead checks: `begin` is
//! conditional on the remembered fencing token, and the record is only remembered when it
//! showed no lease and no operation. Every write to a pool record needs a lease, and taking one
//! moves the token on, so a `begin` that succeeds proves the record was exactly as remembered.
//! The instance list is only trusted when it was taken right after such a read with the same
//! token: then no operation of any replica can have launched or terminated since. What the
//! token cannot see (EC2 reclaiming a spot instance, a signal stored by another replica) is
//! caught by the fresh reads that run alongside the write-ahead: the launch goes out only when
//! they lead to the same decision (`PoolWorker::launch_from_memory` in `reconcile.rs`).

use std::time::Duration;

use crate::adapters::{ManagedInstance, PoolRecord};
use crate::core::model::Signal;
use crate::core::time::Timestamp;

/// How long a quiet pool (no operation, no active signal) goes between instance listings.
/// Sweeps in between read only the pool record and the signals (DynamoDB), which keeps a
/// sweep of a 1,000-node pool cheap; refilling below `min` and cleaning up instances that
/// never joined wait at most this long. Any signal or operation lists at once.
pub(super) const QUIET_REFRESH: Duration = Duration::from_secs(60);

/// The last instance list of a pool.
#[derive(Clone)]
struct Listing {
    instances: Vec<ManagedInstance>,
    at: Timestamp,
    /// The fencing token of the settled record read just before the list was taken; `None`
    /// when that record had a lease or an operation, or a write of ours has moved on since.
    token: Option<u64>,
}

/// A pool record read with no lease and no operation, and the signals read with it.
#[derive(Clone)]
struct Settled {
    record: PoolRecord,
    signals: Vec<Signal>,
}

/// What one pool's last reads showed (see the module doc); owned by that pool's worker.
#[derive(Default)]
pub(super) struct PoolMemory {
    settled: Option<Settled>,
    listing: Option<Listing>,
}

/// What a fast launch decides from: all three consistent with one fencing token.
pub(super) struct Basis {
    /// The record, with no lease and no operation.
    pub record: PoolRecord,
    /// The signals read with it.
    pub signals: Vec<Signal>,
    /// The pending or running instances listed right after it.
    pub instances: Vec<ManagedInstance>,
}

impl PoolMemory {
    /// Notes a read of the pool record and its signals.
    pub fn read(&mut self, record: &PoolRecord, signals: &[Signal]) {
        let settled = record.lease.is_none() && record.state.op.is_none();
        self.settled = settled.then(|| Settled { record: record.clone(), signals: signals.to_vec() });
    }

    /// Notes an instance list taken after reading `record` in the same reconcile.
    pub fn listed(&mut self, record: &PoolRecord, instances: &[ManagedInstance], at: Timestamp) {
        let settled = record.lease.is_none() && record.state.op.is_none();
        self.listing = Some(Listing {
            instances: instances.to_vec(),
            at,
            token: settled.then_some(record.fencing_token),
        });
    }

    /// Notes an instance list taken after a write of ours: it counts for
    /// [`PoolMemory::listed_at`], not as a basis.
    pub fn listed_after_write(&mut self, instances: &[ManagedInstance], at: Timestamp) {
        self.listing = Some(Listing { instances: instances.to_vec(), at, token: None });
    }

    /// Forgets the record after a write of ours to it (its token moved on); the time of the
    /// last list stays, for [`PoolMemory::listed_at`].
    pub fn wrote(&mut self) {
        self.settled = None;
        if let Some(listing) = &mut self.listing {
            listing.token = None;
        }
    }

    /// When the pool's instances were last listed.
    pub fn listed_at(&self) -> Option<Timestamp> {
        self.listing.as_ref().map(|l| l.at)
    }

    /// The record, signals and instances a launch may be decided from without reading first:
    /// `None` unless all three belong to one settled fencing token and the list is younger
    /// than [`QUIET_REFRESH`].
    pub fn basis(&self, now: Timestamp) -> Option<Basis> {
        let settled = self.settled.as_ref()?;
        let listing = self.listing.as_ref()?;
        let consistent = listing.token == Some(settled.record.fencing_token);
        (consistent && now.since(listing.at) < QUIET_REFRESH).then(|| Basis {
            record: settled.record.clone(),
            signals: settled.signals.clone(),
            instances: listing.instances.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::adapters::ec2::compute::InstanceState;
    use crate::core::model::{DrainOp, Market, Operation, OperationKind, PoolState};

    fn instance(id: &str) -> ManagedInstance {
        ManagedInstance {
            instance_id: id.into(),
            az: "us-east-1a".into(),
            market: Market::Spot,
            launched_at: Timestamp::from_millis(0),
            state: InstanceState::Running,
            pool: "w".into(),
            op_id: None,
            instance_type: Some("t3.small".into()),
        }
    }

    fn record(token: u64) -> PoolRecord {
        PoolRecord { fencing_token: token, ..PoolRecord::default() }
    }

    const T0: Timestamp = Timestamp::from_millis(1_000_000);

    #[test]
    fn a_settled_read_then_a_list_with_the_same_token_is_a_basis() {
        let mut memory = PoolMemory::default();
        memory.read(&record(7), &[]);
        memory.listed(&record(7), &[instance("i-1")], T0);
        let basis = memory.basis(T0.plus(Duration::from_secs(30))).expect("basis");
        assert_eq!(basis.record.fencing_token, 7);
        assert_eq!(basis.instances.len(), 1);
        assert!(memory.basis(T0.plus(QUIET_REFRESH)).is_none(), "a list as old as QUIET_REFRESH is not");
        assert!(PoolMemory::default().basis(T0).is_none(), "another pool's memory is its own worker's");
    }

    #[test]
    fn a_list_taken_under_a_lease_or_an_operation_is_never_a_basis() {
        let mut memory = PoolMemory::default();
        let leased = PoolRecord { lease: Some(("other".into(), T0)), ..record(7) };
        memory.listed(&leased, &[], T0);
        memory.read(&record(7), &[]);
        assert!(memory.basis(T0).is_none(), "listed while another replica held the lease");

        let op = Operation {
            id: "op-1".into(),
            kind: OperationKind::Drain(DrainOp {
                instance_id: "i-1".into(),
                node: "node-1".into(),
                az: "us-east-1a".into(),
                phase: Default::default(),
                repair: false,
            }),
            reason: String::new(),
            started_at: T0,
            deadline: T0,
        };
        let busy = PoolRecord { state: PoolState { op: Some(op), ..PoolState::default() }, ..record(8) };
        memory.read(&busy, &[]);
        memory.listed(&busy, &[], T0);
        // The operation ends under the same token: the list may miss what it changed.
        memory.read(&record(8), &[]);
        assert!(memory.basis(T0).is_none(), "listed while an operation was in flight");
    }

    #[test]
    fn a_newer_token_or_a_write_of_ours_ends_the_basis_but_not_the_list_time() {
        let mut memory = PoolMemory::default();
        memory.read(&record(7), &[]);
        memory.listed(&record(7), &[], T0);
        memory.read(&record(8), &[]);
        assert!(memory.basis(T0).is_none(), "another replica took a lease since the list");

        memory.read(&record(8), &[]);
        memory.listed(&record(8), &[], T0);
        memory.wrote();
        assert!(memory.basis(T0).is_none());
        assert_eq!(memory.listed_at(), Some(T0));
        memory.read(&record(9), &[]);
        assert!(memory.basis(T0).is_none(), "the list predates our own write");
    }
}
