//! EC2 interruption notices (`POST /v1/events/ec2`): cordon at once, then drain and replace
//! outside the pool's one-operation rule.
//!
//! A notice is acted on only when EC2 confirms what it can: the instance is spot (both
//! notices) and, for the spot warning, marked for interruption; anything else is answered 200
//! and counted `unverified`. EC2 cannot confirm a rebalance, so those are capped per pool.
//!
//! Why outside it: a spot instance goes two minutes after the warning, so its handling cannot
//! wait for an in-flight launch or drain, nor take the pool lease from its holder. Instead each
//! interrupted instance gets its own `interrupt#<instance-id>` record, created conditionally
//! (a repeated event finds it and does nothing; a spot warning upgrades a rebalance's record)
//! and moved on with a version check. Every step
//! is idempotent on its own — cordon, Eviction, RunInstances with a ClientToken derived from
//! the instance id, terminate of that one instance — so two replicas racing on a record can at
//! worst repeat a step, never double it. The interrupt worker (triggered by the event and by
//! every sweep) runs the steps.

use std::sync::Arc;

use serde::Serialize;
use tokio::sync::Notify;
use tracing::{info, warn};

use super::outcome::ReconcileError;
use super::steps::Steps;
use crate::adapters::kube::cluster::NodeEvent;
use crate::adapters::{AuditEvent, ManagedInstance, StoreError};
use crate::core::ec2_event::Ec2Event;
use crate::core::interruption::{
    InterruptInput, InterruptKind, InterruptPlan, Interruption, Unverified, plan_interruption,
    rebalance_capped, upgrade, verify_notice,
};
use crate::core::model::Market;
use crate::metrics::{DecisionLabels, Ec2EventLabels};

/// How often a notice re-reads a record another writer moved on before it gives up (503, so
/// EventBridge retries).
const UPGRADE_ATTEMPTS: usize = 3;

/// What writing a notice's record did.
enum Recorded {
    /// A new record.
    Created,
    /// A rebalance's record turned into a spot interruption.
    Upgraded(Box<Interruption>),
    /// The record already says as much.
    Repeat,
}

/// What a notice did, as answered to EventBridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ec2EventSummary {
    /// handled, upgraded, duplicate, ignored, unverified, capped or dry_run.
    pub outcome: &'static str,
    /// Why, for ignored, unverified and capped notices.
    pub reason: String,
}

/// The intake of EC2 notices, from the webhook and from the notice poller: it keeps
/// nothing between notices (each one's record is in the store) and wakes the interrupt worker.
#[derive(Clone)]
pub(super) struct NoticeIntake {
    steps: Arc<Steps>,
    wake_interrupt_worker: Arc<Notify>,
}

impl NoticeIntake {
    /// An intake acting through `steps` that wakes the interrupt worker through
    /// `wake_interrupt_worker`.
    pub(super) fn new(steps: Arc<Steps>, wake_interrupt_worker: Arc<Notify>) -> Self {
        NoticeIntake { steps, wake_interrupt_worker }
    }

    /// Counts a notice that could not be handled (an AWS or Kubernetes error).
    pub(super) fn count_error(&self, error: &ReconcileError) {
        self.steps.count_error(error);
    }

    /// Handles one parsed EventBridge event: verify it with EC2, plan, record once (or upgrade
    /// a rebalance's record), cordon now, wake the worker.
    pub(super) async fn accept(&self, event: Ec2Event) -> Result<Ec2EventSummary, ReconcileError> {
        let (kind, instance_id) = match &event {
            Ec2Event::SpotInterruption { instance_id, .. } => (InterruptKind::Spot, instance_id),
            Ec2Event::Rebalance { instance_id, .. } => (InterruptKind::Rebalance, instance_id),
            Ec2Event::Other { detail_type } => {
                return Ok(self.ignored("other", format!("detail-type {detail_type:?} is not acted on")));
            }
        };
        let Some(instance) = self.managed_instance(instance_id).await? else {
            let why = format!("instance {instance_id} is not managed by this autoscaler for this cluster");
            return Ok(self.ignored(kind.label(), why));
        };
        if let Err(why) = self.verify(kind, &instance).await? {
            warn!(instance = %instance_id, pool = %instance.pool, kind = kind.label(), %why, "EC2 notice not verified; nothing done");
            return Ok(self.counted(kind.label(), "unverified", why.to_string()));
        }
        let pool = instance.pool;
        let policy = self.steps.policy(&pool)?;
        let now = self.steps.now();
        let record = self.steps.edges.store.read_pool(&pool).await?;
        let observed = self.steps.observe_pool(&pool).await?;
        let snapshot = self.steps.snapshot(&pool, observed, false).await?;
        let Some(interrupted) = snapshot.workers.iter().find(|w| &w.instance_id == instance_id) else {
            return Ok(self.ignored(kind.label(), format!("instance {instance_id} is no longer running")));
        };
        let Some(InterruptPlan { record: plan }) = plan_interruption(InterruptInput {
            kind,
            rebalance: self.steps.config.interruption.rebalance,
            interrupted,
            workers: &snapshot.workers,
            state: &record.state,
            policy: &policy,
            now,
        }) else {
            return Ok(self.ignored(kind.label(), "interruption.rebalance is off".into()));
        };
        if kind == InterruptKind::Rebalance {
            let cap = self.steps.config.interruption.max_rebalance_per_pool;
            let records: Vec<Interruption> =
                self.steps.edges.store.interruptions().await?.into_iter().map(|(r, _)| r).collect();
            if let Some(busy) = rebalance_capped(&records, &snapshot.workers, instance_id, cap) {
                let why = format!(
                    "{busy} instances of pool {pool} are already out of service for a rebalance \
                     (interruption.max_rebalance_per_pool = {cap})"
                );
                warn!(instance = %instance_id, %pool, %why, "rebalance recommendation capped; nothing done");
                return Ok(self.counted(kind.label(), "capped", why));
            }
        }
        if self.steps.config.dry_run {
            self.log_interrupt_decision(&plan);
            self.steps
                .audit_interrupt(&plan, "decision", "interrupt", kind.label(), describe(&plan), true)
                .await;
            return Ok(self.counted(kind.label(), "dry_run", String::new()));
        }
        let (handled, outcome) = match self.record_notice(&plan).await? {
            Recorded::Created => (plan, "handled"),
            Recorded::Upgraded(upgraded) => (*upgraded, "upgraded"),
            Recorded::Repeat => {
                info!(instance = %instance_id, kind = kind.label(), "interruption already being handled; repeat ignored");
                return Ok(self.counted(kind.label(), "duplicate", String::new()));
            }
        };
        self.log_interrupt_decision(&handled);
        self.steps
            .audit_interrupt(&handled, "decision", "interrupt", kind.label(), describe(&handled), false)
            .await;
        self.cordon_interrupted(&handled).await;
        self.wake_interrupt_worker.notify_one();
        Ok(self.counted(kind.label(), outcome, String::new()))
    }

    /// Writes the notice's record, or upgrades the record a rebalance left for the same
    /// instance when this is the spot warning. The upgrade is a conditional write on the
    /// record's version: if the interrupt worker or another replica moved it on meanwhile,
    /// the record is read again and the upgrade decided afresh.
    async fn record_notice(&self, plan: &Interruption) -> Result<Recorded, ReconcileError> {
        let store = &self.steps.edges.store;
        for _ in 0..UPGRADE_ATTEMPTS {
            if store.create_interruption(plan).await? {
                return Ok(Recorded::Created);
            }
            let existing =
                store.interruptions().await?.into_iter().find(|(r, _)| r.instance_id == plan.instance_id);
            // Gone between the two calls (expired): create it again.
            let Some((existing, version)) = existing else { continue };
            let Some(upgraded) = upgrade(&existing, plan) else { return Ok(Recorded::Repeat) };
            if self.steps.save_interruption(&upgraded, version).await? {
                return Ok(Recorded::Upgraded(Box::new(upgraded)));
            }
        }
        Err(StoreError::Contended { pool: plan.pool.clone() }.into())
    }

    /// The managed instance `instance_id`, with its pool (tags checked by the adapter).
    async fn managed_instance(&self, instance_id: &str) -> Result<Option<ManagedInstance>, ReconcileError> {
        for pool in self.steps.config.pools.keys() {
            let instances = self.steps.edges.compute.list_pool(pool).await?;
            if let Some(found) = instances.into_iter().find(|i| i.instance_id == instance_id) {
                return Ok(Some(found));
            }
        }
        Ok(None)
    }

    /// What EC2 itself says about the instance, checked against the notice: the market it
    /// reports (InstanceLifecycle, read with the instance) and, for a spot warning, whether
    /// the instance's spot request is marked for interruption.
    async fn verify(
        &self,
        kind: InterruptKind,
        instance: &ManagedInstance,
    ) -> Result<Result<(), Unverified>, ReconcileError> {
        let status = if kind == InterruptKind::Spot && instance.market == Market::Spot {
            self.steps.edges.compute.spot_request_status(&instance.instance_id).await.inspect_err(|e| {
                self.steps.metrics.aws_error(e.api(), e.code());
            })?
        } else {
            None
        };
        Ok(verify_notice(kind, instance.market, status.as_deref()))
    }

    /// Cordons the node so nothing new lands on it; a failure is retried by the worker.
    pub(super) async fn cordon_interrupted(&self, record: &Interruption) {
        let (Some(cluster), Some(node)) = (&self.steps.edges.cluster, &record.node) else { return };
        match cluster.set_unschedulable(node, true).await {
            Ok(()) => {
                let message = format!("{}: cordoned, {}", record.kind.label(), describe(record));
                cluster.node_event(node, NodeEvent::InterruptionNotice, &message).await;
            }
            Err(error) => {
                self.steps.count_error(&ReconcileError::Cluster(error));
                warn!(node, instance = %record.instance_id, "cannot cordon the interrupted node yet");
            }
        }
    }

    fn ignored(&self, kind: &'static str, reason: String) -> Ec2EventSummary {
        info!(kind, %reason, "EC2 event ignored");
        self.counted(kind, "ignored", reason)
    }

    fn counted(&self, kind: &'static str, outcome: &'static str, reason: String) -> Ec2EventSummary {
        self.steps.metrics.ec2_events.get_or_create(&Ec2EventLabels { kind, outcome }).inc();
        Ec2EventSummary { outcome, reason }
    }

    /// The one structured event of an interruption decision.
    fn log_interrupt_decision(&self, plan: &Interruption) {
        let reason = plan.kind.label();
        let labels = DecisionLabels { pool: plan.pool.clone(), action: "interrupt", reason };
        self.steps.metrics.decisions.get_or_create(&labels).inc();
        info!(
            pool = %plan.pool, action = "interrupt", reason_label = reason, instance = %plan.instance_id,
            node = ?plan.node, reason = %describe(plan), "scaling decision"
        );
    }
}

impl Steps {
    /// Appends an interruption decision or outcome to the audit trail.
    pub(super) async fn audit_interrupt(
        &self,
        record: &Interruption,
        kind: &str,
        action: &str,
        reason_label: &str,
        reason: String,
        dry_run: bool,
    ) {
        self.record(AuditEvent {
            at: self.now(),
            pool: record.pool.clone(),
            kind: kind.into(),
            action: action.into(),
            reason_label: reason_label.into(),
            reason,
            op_id: Some(record.launch_id()),
            detail: serde_json::json!({ "interruption": record }),
            dry_run,
        })
        .await;
    }

    /// Saves a record moved on; a replica that got there first wins and this pass stops.
    /// Whether `instance_id` has an open interruption: its node belongs to the interrupt
    /// worker, and a pool drain that ends must leave it cordoned.
    pub(super) async fn interruption_open(&self, instance_id: &str) -> Result<bool, StoreError> {
        let open = self.edges.store.open_interruptions().await?;
        Ok(open.iter().any(|(record, _)| record.instance_id == instance_id))
    }

    pub(super) async fn save_interruption(
        &self,
        record: &Interruption,
        version: u64,
    ) -> Result<bool, StoreError> {
        match self.edges.store.save_interruption(record, version).await {
            Ok(()) => Ok(true),
            Err(StoreError::Contended { .. }) => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// One line on what the handling will do.
pub(super) fn describe(record: &Interruption) -> String {
    let node = record.node.as_deref().unwrap_or("(no node)");
    let drain = if record.drain {
        format!("drain {node} by {}", record.deadline)
    } else {
        format!("cordon {node} only")
    };
    format!(
        "instance {} ({}, {}): {drain}; {}",
        record.instance_id, record.az, record.market, record.replacement
    )
}
