//! Orchestration: the webhook's intake, the per-pool reconcile under the DynamoDB lease, and
//! the sweeper that keeps in-flight operations moving.
//!
//! [`Service`] is the handle the HTTP layer calls; it starts the loops. Each loop is a type
//! that owns its state and is started with only the edges it needs: the intake (`intake.rs`),
//! one pool worker per pool (`pool_worker.rs`, its reconcile in `reconcile.rs`), the
//! interrupt worker (`interrupt_worker.rs`), the EC2 notice intake (`interrupt.rs`) and its
//! SQS poller (`notice_poller.rs`), the Alertmanager sync (`alert_sync.rs`) and the sweeper
//! (`sweeper.rs`). What they share travels as wake-ups (`triggers.rs`), writes in flight
//! (`pending.rs`) and records in the store; the steps they take through the edges
//! (`steps.rs`) keep nothing between calls.

mod alert_sync;
mod audit;
mod drain;
mod intake;
mod interrupt;
mod interrupt_worker;
mod launch;
mod notice_poller;
mod outcome;
mod pending;
mod pool_worker;
mod repair;
mod snapshot;
mod steps;
mod supersede;
mod sweeper;
mod triggers;

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;

use crate::adapters::alertmanager::AlertSource;
use crate::adapters::cloudwatch::sink::EventSink;
use crate::adapters::kube::cluster::Cluster;
use crate::adapters::sqs::NoticeQueue;
use crate::adapters::{Clock, Compute, StateStore};
use crate::config::Config;
use crate::core::alert::Notification;
use crate::core::ec2_event::Ec2Event;
use crate::metrics::Metrics;

use alert_sync::{AlertSync, SyncEdges, SyncSettings};
pub use alert_sync::{SyncStatus, describe_silences};
use audit::Audit;
use intake::Intake;
pub use intake::{IntakeError, IntakeSummary};
pub use interrupt::Ec2EventSummary;
use interrupt::NoticeIntake;
use interrupt_worker::InterruptWorker;
use notice_poller::NoticePoller;
pub use outcome::{ReconcileError, ReconcileOutcome};
use pending::PendingWrites;
use pool_worker::{PoolWorker, SharedPoolWorker};
use steps::Steps;
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

/// The running autoscaler: the handle the HTTP handlers call and that starts the loops.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

/// The loops (each owning its state) and the ways to reach them.
struct Inner {
    /// What every loop acts through; keeps nothing between calls.
    steps: Arc<Steps>,
    /// Wakes the pool workers and the interrupt worker.
    triggers: Triggers,
    /// The webhook's intake (owns the recent alert states).
    intake: Intake,
    /// Signal writes in flight (the intake's), for tests that hold one open.
    #[cfg(test)]
    pending: PendingWrites,
    /// One worker per pool.
    pool_workers: HashMap<String, SharedPoolWorker>,
    interrupt_worker: Arc<InterruptWorker>,
    /// The EC2 notice intake (webhook and SQS).
    notices: NoticeIntake,
    shutdown: watch::Sender<bool>,
    /// What the Alertmanager sync last saw (it owns the rest of its state).
    alert_sync: alert_sync::StatusHandle,
}

impl Service {
    /// Builds the service; call [`Service::start`] to run its background tasks.
    pub fn new(config: Config, edges: Edges, metrics: Arc<Metrics>) -> Self {
        let triggers = Triggers::new(config.pools.keys());
        let audit = Audit::new(edges.store.clone(), edges.sink.clone());
        let pending = PendingWrites::default();
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
        let steps = Arc::new(Steps { config, edges, metrics, owner, audit });
        let pool_workers = steps
            .config
            .pools
            .keys()
            .map(|pool| {
                let worker = PoolWorker::new(pool.clone(), steps.clone(), pending.clone());
                (pool.clone(), Arc::new(tokio::sync::Mutex::new(worker)))
            })
            .collect();
        let wake_interrupts = triggers.of_interruptions();
        Service {
            inner: Arc::new(Inner {
                interrupt_worker: Arc::new(InterruptWorker::new(steps.clone(), wake_interrupts.clone())),
                notices: NoticeIntake::new(steps.clone(), wake_interrupts),
                steps,
                triggers,
                intake,
                #[cfg(test)]
                pending,
                pool_workers,
                shutdown,
                alert_sync: watch::Sender::new(SyncStatus::default()),
            }),
        }
    }

    /// The validated configuration.
    pub fn config(&self) -> &Config {
        &self.inner.steps.config
    }

    /// The metric families.
    pub fn metrics(&self) -> &Metrics {
        &self.inner.steps.metrics
    }

    /// The state store, for readiness checks.
    pub fn store(&self) -> &Arc<dyn StateStore> {
        &self.inner.steps.edges.store
    }

    /// This process's lease owner id.
    pub fn owner(&self) -> &str {
        &self.inner.steps.owner
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

    /// Handles one EC2 notice (see `interrupt`): verify, record once, cordon, wake the
    /// interrupt worker.
    pub async fn accept_ec2_event(&self, event: Ec2Event) -> Result<Ec2EventSummary, ReconcileError> {
        self.inner.notices.accept(event).await
    }

    /// Reconciles `pool` once, in its worker (after the reconcile it may be running): progress
    /// its in-flight operation, or decide and start one.
    pub async fn reconcile(&self, pool: &str) -> Result<ReconcileOutcome, ReconcileError> {
        let worker =
            self.inner.pool_workers.get(pool).ok_or_else(|| ReconcileError::UnknownPool(pool.to_string()))?;
        worker.lock().await.reconcile().await
    }

    /// Starts one worker per pool, the interrupt worker and the sweeper; they stop on
    /// [`Service::shutdown`].
    pub fn start(&self) -> Vec<tokio::task::JoinHandle<()>> {
        let inner = &self.inner;
        let mut tasks: Vec<_> = inner
            .triggers
            .of_pools()
            .filter_map(|(pool, wake)| {
                let worker = inner.pool_workers.get(pool)?.clone();
                Some(tokio::spawn(pool_worker::run(worker, wake.clone(), self.shutdown_signal())))
            })
            .collect();
        tasks.push(tokio::spawn(inner.interrupt_worker.clone().run(self.shutdown_signal())));
        let sweeper = Sweeper::new(
            inner.steps.config.timing.sweep_interval,
            inner.triggers.clone(),
            self.shutdown_signal(),
        );
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
        let steps = &inner.steps;
        AlertSync::new(
            SyncSettings::of(&steps.config),
            SyncEdges {
                source,
                store: steps.edges.store.clone(),
                clock: steps.edges.clock.clone(),
                audit: steps.audit.clone(),
                metrics: steps.metrics.clone(),
                triggers: inner.triggers.clone(),
                status: inner.alert_sync.clone(),
                shutdown: self.shutdown_signal(),
            },
        )
    }

    /// Starts the notice poller on `queue`; it stops on [`Service::shutdown`].
    pub fn start_notice_poller(&self, queue: Arc<dyn NoticeQueue>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(self.notice_poller(queue).run())
    }

    /// The notice poller, with exactly the edges it needs.
    fn notice_poller(&self, queue: Arc<dyn NoticeQueue>) -> NoticePoller {
        let inner = &self.inner;
        NoticePoller::new(inner.notices.clone(), inner.steps.metrics.clone(), queue, self.shutdown_signal())
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

    /// One pass of the interrupt worker, for tests that step it.
    #[cfg(test)]
    async fn progress_interruptions(&self) -> Result<bool, ReconcileError> {
        self.inner.interrupt_worker.progress_interruptions().await
    }

    #[cfg(test)]
    fn now(&self) -> crate::core::time::Timestamp {
        self.inner.steps.now()
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
