//! Wake-ups of the background loops: one per pool worker and one for the interrupt worker.
//! Requests while a loop is busy coalesce into one more run, so a burst of notifications
//! costs one reconcile, not one each.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::Notify;

/// The loops' wake-ups; cheap to clone, handed to whoever may ask for a run.
#[derive(Clone)]
pub(super) struct Triggers {
    pools: Arc<HashMap<String, Arc<Notify>>>,
    interruptions: Arc<Notify>,
}

impl Triggers {
    /// One wake-up per pool, plus the interrupt worker's.
    pub(super) fn new<'a>(pools: impl IntoIterator<Item = &'a String>) -> Self {
        let pools = pools.into_iter().map(|pool| (pool.clone(), Arc::new(Notify::new()))).collect();
        Triggers { pools: Arc::new(pools), interruptions: Arc::new(Notify::new()) }
    }

    /// Asks the pool's worker to reconcile soon; unknown pools are ignored.
    pub(super) fn pool(&self, pool: &str) {
        if let Some(notify) = self.pools.get(pool) {
            notify.notify_one();
        }
    }

    /// Asks the interrupt worker to look at open interruptions soon.
    pub(super) fn interruptions(&self) {
        self.interruptions.notify_one();
    }

    /// Every pool and the interrupt worker (the sweep).
    pub(super) fn all(&self) {
        self.pools.values().for_each(|notify| notify.notify_one());
        self.interruptions();
    }

    /// The wake-up of each pool worker, to start it with.
    pub(super) fn of_pools(&self) -> impl Iterator<Item = (&String, &Arc<Notify>)> {
        self.pools.iter()
    }

    /// The interrupt worker's wake-up, to start it with.
    pub(super) fn of_interruptions(&self) -> Arc<Notify> {
        self.interruptions.clone()
    }
}
