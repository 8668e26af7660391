//! Orchestration: the webhook's intake, the per-pool reconcile under the DynamoDB lease, and
//! the sweeper that keeps in-flight operations moving.

mod alert_sync;
mod drain;
mod intake;
mod interrupt;
mod interrupt_steps;
mod launch;
mod pending;
mod reconcile;
mod repair;
mod snapshot;
mod supersede;
mod sweeper;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::{Notify, watch};

use crate::adapters::cloudwatch::sink::EventSink;
use crate::adapters::kube::cluster::Cluster;
use crate::adapters::{Clock, Compute, StateStore};
use crate::config::Config;
use crate::metrics::Metrics;

pub use alert_sync::{SyncStatus, describe_silences};
pub use intake::{IntakeError, IntakeSummary};
pub use interrupt::Ec2EventSummary;
pub use reconcile::{ReconcileError, ReconcileOutcome};

/// The outside systems the service works through.
#[derive(Clone)]
pub struct Edges {
    /// State store (DynamoDB).
    pub store: Arc<dyn StateStore>,
    /// Compute (EC2).
    pub compute: Arc<dyn Compute>,
    /// Clock.
    pub clock: Arc<dyn Clock>,
    /// Kubernetes; without it launches finish when EC2 accepts them and nothing is drained.
    pub cluster: Option<Arc<dyn Cluster>>,
    /// Where scaling events are copied (CloudWatch Logs), if configured.
    pub sink: Option<Arc<dyn EventSink>>,
}

/// The running autoscaler: shared by the HTTP handlers, the pool workers and the sweeper.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    config: Config,
    edges: Edges,
    metrics: Arc<Metrics>,
    /// Identifies this process as a lease holder.
    owner: String,
    triggers: HashMap<String, Arc<Notify>>,
    /// Wakes the interrupt worker (an EC2 notice arrived, or a sweep).
    interrupt_trigger: Arc<Notify>,
    recent_signals: Mutex<intake::RecentSignals>,
    /// Signal writes in flight, merged by the reconciles that read meanwhile.
    pending: pending::PendingWrites,
    /// The last hold reason audited per pool, so a hold is recorded when it changes, not on
    /// every sweep.
    audited_holds: Mutex<HashMap<String, String>>,
    /// Nodes reported as holding node repair back, per pool.
    repair_reported: repair::RepairReported,
    /// When each pool's instances were last listed (see `reconcile::QUIET_REFRESH`).
    full_observations: Mutex<HashMap<String, crate::core::time::Timestamp>>,
    shutdown: watch::Sender<bool>,
    /// What the Alertmanager sync last saw (it owns the rest of its state).
    alert_sync: alert_sync::StatusHandle,
}

impl Service {
    /// Builds the service; call [`Service::start`] to run its background tasks.
    pub fn new(config: Config, edges: Edges, metrics: Arc<Metrics>) -> Self {
        let triggers = config.pools.keys().map(|pool| (pool.clone(), Arc::new(Notify::new()))).collect();
        let owner = format!("{}-{}", hostname(), uuid::Uuid::new_v4().simple());
        let (shutdown, _) = watch::channel(false);
        metrics.zero_pool_series(config.pools.keys());
        Service {
            inner: Arc::new(Inner {
                config,
                edges,
                metrics,
                owner,
                triggers,
                interrupt_trigger: Arc::new(Notify::new()),
                recent_signals: Mutex::new(intake::RecentSignals::default()),
                pending: pending::PendingWrites::default(),
                audited_holds: Mutex::new(HashMap::new()),
                repair_reported: Mutex::new(HashMap::new()),
                full_observations: Mutex::new(HashMap::new()),
                shutdown,
                alert_sync: watch::Sender::new(SyncStatus::default()),
            }),
        }
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    /// The metric families.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    /// The state store, for readiness checks.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.inner.edges.store
    }

    /// This process's lease owner id.
    pub fn owner(&self) -> &str {
        &self.inner.owner
    }

    /// Asks the pool's worker to reconcile soon; many requests while it runs coalesce into one.
    pub fn trigger(&self, pool: &str) {
        if let Some(notify) = self.inner.triggers.get(pool) {
            notify.notify_one();
        }
    }

    /// Asks the interrupt worker to look at open interruptions soon.
    pub fn trigger_interruptions(&self) {
        self.inner.interrupt_trigger.notify_one();
    }

    /// Starts one worker per pool, the interrupt worker and the sweeper; they stop on
    /// [`Service::shutdown`].
    pub fn start(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let mut tasks: Vec<_> = self
            .inner
            .triggers
            .iter()
            .map(|(pool, notify)| {
                tokio::spawn(sweeper::pool_worker(self.clone(), pool.clone(), notify.clone()))
            })
            .collect();
        tasks.push(tokio::spawn(sweeper::interrupt_worker(
            self.clone(),
            self.inner.interrupt_trigger.clone(),
        )));
        tasks.push(tokio::spawn(sweeper::sweep_loop(self.clone())));
        tasks
    }

    /// Stops the workers after their current reconcile.
    pub fn shutdown(&self) {
        self.inner.shutdown.send_replace(true);
    }

    fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.inner.shutdown.subscribe()
    }
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok().map(|h| h.trim().to_string()))
        .unwrap_or_else(|| "k3s-autoscaler".into())
}

#[cfg(test)]
mod tests;
