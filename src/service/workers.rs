//! The workers' loops: one per pool runs that pool's reconciles when woken, one runs the
//! interruption steps. The sweeper (`sweeper.rs`) and the intake wake them.

use std::sync::Arc;

use tokio::sync::Notify;
use tracing::{debug, warn};

use super::Service;

/// Runs the reconciles of one pool, one at a time, until shutdown.
pub(super) async fn pool_worker(service: Service, pool: String, trigger: Arc<Notify>) {
    let mut shutdown = service.shutdown_signal();
    loop {
        tokio::select! {
            _ = trigger.notified() => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        match service.reconcile(&pool).await {
            Ok(outcome) => debug!(pool, ?outcome, "reconcile done"),
            Err(error) => {
                service.count_error(&error);
                warn!(pool, %error, label = %error.label(), "reconcile failed; retrying at the next sweep")
            }
        }
    }
}

/// Runs the interruption steps when triggered, and every few seconds while a record is
/// open, so evictions refused by a PDB are retried well inside the two-minute notice.
pub(super) async fn interrupt_worker(service: Service, trigger: Arc<Notify>) {
    let mut shutdown = service.shutdown_signal();
    let mut open = false;
    loop {
        let retry = async {
            if open {
                tokio::time::sleep(super::interrupt_steps::RETRY).await
            } else {
                std::future::pending::<()>().await
            }
        };
        tokio::select! {
            _ = trigger.notified() => {}
            _ = retry => {}
            _ = shutdown.wait_for(|stop| *stop) => return,
        }
        open = match service.progress_interruptions().await {
            Ok(open) => open,
            Err(error) => {
                service.count_error(&error);
                warn!(%error, label = %error.label(), "cannot read interruptions; retrying at the next sweep");
                false
            }
        };
    }
}
