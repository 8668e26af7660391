//! The pool worker: one per pool, it runs that pool's reconciles one at a time when woken (by
//! the intake, the Alertmanager sync or the sweeper) and owns what the pool's reconciles
//! remember between runs. The reconcile itself is in `reconcile.rs`, what the last reads
//! showed in `memory.rs`, the node-repair report in `repair_report.rs`; the operations it
//! starts are [`Steps`].

use std::sync::Arc;

use tokio::sync::{Mutex, Notify, watch};
use tracing::{debug, warn};

use super::pending::PendingWrites;
use super::steps::Steps;
use memory::PoolMemory;

mod memory;
mod reconcile;
mod repair_report;

/// One pool's worker and everything only it keeps.
pub(super) struct PoolWorker {
    pool: String,
    steps: Arc<Steps>,
    /// The intake's signal writes in flight, merged by the reconciles that read meanwhile.
    pending: PendingWrites,
    /// What the last reads showed: when the instances were listed (see [`memory::QUIET_REFRESH`])
    /// and what a launch may be decided from without reading.
    memory: PoolMemory,
    /// The last hold reason audited, so a hold is recorded when it changes, not on every
    /// sweep.
    audited_hold: Option<String>,
    /// Nodes already reported as holding node repair back, so each gets one event, not one
    /// per sweep.
    repair_reported: Vec<String>,
}

/// A pool worker shared by its loop and [`super::Service::reconcile`]; the lock keeps its
/// reconciles one at a time.
pub(super) type SharedPoolWorker = Arc<Mutex<PoolWorker>>;

impl PoolWorker {
    /// A worker for `pool` that remembers nothing yet.
    pub(super) fn new(pool: String, steps: Arc<Steps>, pending: PendingWrites) -> Self {
        PoolWorker {
            pool,
            steps,
            pending,
            memory: PoolMemory::default(),
            audited_hold: None,
            repair_reported: Vec::new(),
        }
    }
}

/// Runs the worker's reconciles, one per wake-up (wake-ups while one runs coalesce), until
/// shutdown.
pub(super) async fn run(worker: SharedPoolWorker, trigger: Arc<Notify>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = trigger.notified() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        let mut worker = worker.lock().await;
        match worker.reconcile().await {
            Ok(outcome) => debug!(pool = %worker.pool, ?outcome, "reconcile done"),
            Err(error) => {
                worker.steps.count_error(&error);
                warn!(pool = %worker.pool, %error, label = %error.label(), "reconcile failed; retrying at the next sweep")
            }
        }
    }
}
