//! The interrupt worker: runs the steps of every open `interrupt#<instance-id>` record
//! (`steps.rs`) when the EC2 notice intake or the sweeper wakes it, and every
//! [`RETRY`] while a record is open, so evictions refused by a PDB are retried well inside the
//! two-minute notice. What it works on lives in the store (the records), so any replica's
//! worker can carry a record on.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{Notify, watch};
use tracing::warn;

use super::steps::Steps;

mod steps;

/// How often a record with pods still to move is looked at again: well inside the two-minute
/// notice, so a PDB that frees up is used.
pub(super) const RETRY: Duration = Duration::from_secs(5);

/// The interrupt worker and the schedule only it keeps.
pub(super) struct InterruptWorker {
    steps: Arc<Steps>,
    /// Its own wake-up: a step that frees the next one (a replacement recorded) asks for
    /// another pass at once.
    wake: Arc<Notify>,
}

impl InterruptWorker {
    /// A worker acting through `steps`, woken by `wake`.
    pub(super) fn new(steps: Arc<Steps>, wake: Arc<Notify>) -> Self {
        InterruptWorker { steps, wake }
    }

    /// Runs passes when woken, and every [`RETRY`] while a record is open, until shutdown.
    pub(super) async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        let mut open = false;
        loop {
            let retry = async {
                if open { tokio::time::sleep(RETRY).await } else { std::future::pending::<()>().await }
            };
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = retry => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            open = match self.progress_interruptions().await {
                Ok(open) => open,
                Err(error) => {
                    self.steps.count_error(&error);
                    warn!(%error, label = %error.label(), "cannot read interruptions; retrying at the next sweep");
                    false
                }
            };
        }
    }
}
