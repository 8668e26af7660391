//! Orchestration: the webhook's intake, the per-pool reconcile under the DynamoDB lease, and
//! the sweeper that keeps in-flight operations moving.
//!
//! [`Service`] is the handle the HTTP layer calls; it starts the loops. The intake
//! (`intake.rs`), the sweeper (`sweeper.rs`) and the Alertmanager sync (`alert_sync.rs`) own
//! their state and are started with only the edges they need; what they share travels as
//! wake-ups (`triggers.rs`), writes in flight (`pending.rs`) and records in the store. The
//! pool worker and the interrupt worker (`workers.rs`) still run their steps as methods of
//! `Service`.

mod alert_sync;
mod audit;
mod drain;
mod intake;
mod interrupt;
mod interrupt_steps;
mod launch;
mod notice_poller;
mod outcome;
mod pending;
mod pool_memory;
mod reconcile;
mod repair;
mod snapshot;
mod supersede;
mod sweeper;
mod triggers;
mod workers;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::adapters::alertmanager::AlertSource;
use crate::adapters::cloudwatch::sink::EventSink;
use crate::adapters::kube::cluster::Cluster;
use crate::adapters::{Clock, Compute, StateStore};
use crate::config::Config;
use crate::core::alert::Notification;
use crate::metrics::Metrics;

use alert_sync::{AlertSync, SyncEdges, SyncSettings};
pub use alert_sync::{SyncStatus, describe_silences};
use audit::Audit;
use intake::Intake;
pub use intake::{IntakeError, IntakeSummary};
pub use interrupt::Ec2EventSummary;
pub use outcome::{ReconcileError, ReconcileOutcome};
use sweeper::Sweeper;
use triggers::Triggers;

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
    /// Wakes the pool workers and the interrupt worker.
    triggers: Triggers,
    /// Writes the audit trail (store and sink).
    audit: Audit,
    /// The webhook's intake (owns the recent alert states).
    intake: Intake,
    /// Signal writes in flight (the intake's), merged by the reconciles that read meanwhile.
    pending: pending::PendingWrites,
    /// The last hold reason audited per pool, so a hold is recorded when it changes, not on
    /// every sweep.
    audited_holds: Mutex<HashMap<String, String>>,
    /// Nodes reported as holding node repair back, per pool.
    repair_reported: repair::RepairReported,
    /// The last reads of each pool: when its instances were listed (see
    /// `reconcile::QUIET_REFRESH`) and what a launch may be decided from without reading.
    memory: pool_memory::PoolMemory,
    shutdown: watch::Sender<bool>,
    /// What the Alertmanager sync last saw (it owns the rest of its state).
    alert_sync: alert_sync::StatusHandle,
}

impl Service {
    /// Builds the service; call [`Service::start`] to run its background tasks.
    pub fn new(config: Config, edges: Edges, metrics: Arc<Metrics>) -> Self {
        let triggers = Triggers::new(config.pools.keys());
        let audit = Audit::new(edges.store.clone(), edges.sink.clone());
        let pending = pending::PendingWrites::default();
        let intake = Intake::new(
            edges.store.clone(),
            edges.clock.clone(),
            metrics.clone(),
            config.timing.signal_ttl,
            triggers.clone(),
            pending.clone(),
        );
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
                audit,
                intake,
                pending,
                audited_holds: Mutex::new(HashMap::new()),
                repair_reported: Mutex::new(HashMap::new()),
                memory: pool_memory::PoolMemory::default(),
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
        self.inner.triggers.pool(pool);
    }

    /// Asks the interrupt worker to look at open interruptions soon.
    pub fn trigger_interruptions(&self) {
        self.inner.triggers.interruptions();
    }

    /// Makes the notification's signals durable and triggers the pools it touched (see
    /// `intake`).
    pub async fn accept(&self, notification: Notification) -> Result<IntakeSummary, IntakeError> {
        self.inner.intake.accept(notification).await
    }

    /// Starts one worker per pool, the interrupt worker and the sweeper; they stop on
    /// [`Service::shutdown`].
    pub fn start(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let triggers = &self.inner.triggers;
        let mut tasks: Vec<_> = triggers
            .of_pools()
            .map(|(pool, notify)| {
                tokio::spawn(workers::pool_worker(self.clone(), pool.clone(), notify.clone()))
            })
            .collect();
        tasks.push(tokio::spawn(workers::interrupt_worker(self.clone(), triggers.of_interruptions())));
        let sweeper =
            Sweeper::new(self.inner.config.timing.sweep_interval, triggers.clone(), self.shutdown_signal());
        tasks.push(tokio::spawn(sweeper.run()));
        tasks
    }

    /// Starts the Alertmanager sync; it stops on [`Service::shutdown`].
    pub fn start_alert_sync(&self, source: Arc<dyn AlertSource>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.alert_sync(source).run())
    }

    /// The Alertmanager sync, with exactly the edges it needs.
    fn alert_sync(&self, source: Arc<dyn AlertSource>) -> AlertSync {
        let inner = &self.inner;
        AlertSync::new(
            SyncSettings::of(&inner.config),
            SyncEdges {
                source,
                store: inner.edges.store.clone(),
                clock: inner.edges.clock.clone(),
                audit: inner.audit.clone(),
                metrics: inner.metrics.clone(),
                triggers: inner.triggers.clone(),
                status: inner.alert_sync.clone(),
                shutdown: self.shutdown_signal(),
            },
        )
    }

    /// What the Alertmanager sync last saw.
    pub fn alert_sync_status(&self) -> SyncStatus {
        self.inner.alert_sync.borrow().clone()
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
