//! EC2 interruption notices (`POST /v1/events/ec2`): cordon at once, then drain and replace
//! outside the pool's one-operation rule.
//!
//! Why outside it: a spot instance goes two minutes after the warning, so its handling cannot
//! wait for an in-flight launch or drain, nor take the pool lease from its holder. Instead each
//! interrupted instance gets its own `interrupt#<instance-id>` record, created conditionally
//! (a repeated event finds it and does nothing) and moved on with a version check. Every step
//! is idempotent on its own — cordon, Eviction, RunInstances with a ClientToken derived from
//! the instance id, terminate of that one instance — so two replicas racing on a record can at
//! worst repeat a step, never double it. The interrupt worker (triggered by the event and by
//! every sweep) runs the steps.

use serde::Serialize;
use tracing::{info, warn};

use super::Service;
use super::reconcile::ReconcileError;
use crate::adapters::cluster::NodeEvent;
use crate::adapters::{AuditEvent, StoreError};
use crate::core::ec2_event::Ec2Event;
use crate::core::interruption::{
    InterruptInput, InterruptKind, InterruptPlan, Interruption, plan_interruption,
};
use crate::metrics::{DecisionLabels, Ec2EventLabels};

/// What a notice did, as answered to EventBridge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ec2EventSummary {
    /// handled, duplicate, ignored or dry_run.
    pub outcome: &'static str,
    /// Why, for ignored notices.
    pub reason: String,
}

impl Service {
    /// Handles one parsed EventBridge event: plan, record once, cordon now, wake the worker.
    pub async fn accept_ec2_event(&self, event: Ec2Event) -> Result<Ec2EventSummary, ReconcileError> {
        let (kind, instance_id) = match &event {
            Ec2Event::SpotInterruption { instance_id, .. } => (InterruptKind::Spot, instance_id),
            Ec2Event::Rebalance { instance_id, .. } => (InterruptKind::Rebalance, instance_id),
            Ec2Event::Other { detail_type } => {
                return Ok(self.ignored("other", format!("detail-type {detail_type:?} is not acted on")));
            }
        };
        let Some(pool) = self.pool_of(instance_id).await? else {
            let why = format!("instance {instance_id} is not managed by this autoscaler for this cluster");
            return Ok(self.ignored(kind.label(), why));
        };
        let policy = self.policy(&pool)?;
        let now = self.now();
        let record = self.inner.edges.store.read_pool(&pool).await?;
        let observed = self.observe_pool(&pool).await?;
        let snapshot = self.snapshot(&pool, observed, false).await?;
        let Some(interrupted) = snapshot.workers.iter().find(|w| &w.instance_id == instance_id) else {
            return Ok(self.ignored(kind.label(), format!("instance {instance_id} is no longer running")));
        };
        let Some(InterruptPlan { record: plan }) = plan_interruption(InterruptInput {
            kind,
            rebalance: self.inner.config.interruption.rebalance,
            interrupted,
            workers: &snapshot.workers,
            state: &record.state,
            policy: &policy,
            now,
        }) else {
            return Ok(self.ignored(kind.label(), "interruption.rebalance is off".into()));
        };
        if self.inner.config.dry_run {
            self.log_interrupt_decision(&plan);
            self.audit_interrupt(&plan, "decision", "interrupt", kind.label(), describe(&plan), true).await;
            return Ok(self.counted(kind.label(), "dry_run", String::new()));
        }
        if !self.inner.edges.store.create_interruption(&plan).await? {
            info!(instance = %instance_id, kind = kind.label(), "interruption already being handled; repeat ignored");
            return Ok(self.counted(kind.label(), "duplicate", String::new()));
        }
        self.log_interrupt_decision(&plan);
        self.audit_interrupt(&plan, "decision", "interrupt", kind.label(), describe(&plan), false).await;
        self.cordon_interrupted(&plan).await;
        self.trigger_interruptions();
        Ok(self.counted(kind.label(), "handled", String::new()))
    }

    /// The pool whose managed instances include `instance_id` (tags checked by the adapter).
    async fn pool_of(&self, instance_id: &str) -> Result<Option<String>, ReconcileError> {
        for pool in self.inner.config.pools.keys() {
            let instances = self.inner.edges.compute.list_pool(pool).await?;
            if instances.iter().any(|i| i.instance_id == instance_id) {
                return Ok(Some(pool.clone()));
            }
        }
        Ok(None)
    }

    /// Cordons the node so nothing new lands on it; a failure is retried by the worker.
    pub(super) async fn cordon_interrupted(&self, record: &Interruption) {
        let (Some(cluster), Some(node)) = (&self.inner.edges.cluster, &record.node) else { return };
        match cluster.set_unschedulable(node, true).await {
            Ok(()) => {
                let message = format!("{}: cordoned, {}", record.kind.label(), describe(record));
                cluster.node_event(node, NodeEvent::InterruptionNotice, &message).await;
            }
            Err(error) => {
                self.count_error(&ReconcileError::Cluster(error));
                warn!(node, instance = %record.instance_id, "cannot cordon the interrupted node yet");
            }
        }
    }

    fn ignored(&self, kind: &'static str, reason: String) -> Ec2EventSummary {
        info!(kind, %reason, "EC2 event ignored");
        self.counted(kind, "ignored", reason)
    }

    fn counted(&self, kind: &'static str, outcome: &'static str, reason: String) -> Ec2EventSummary {
        self.inner.metrics.ec2_events.get_or_create(&Ec2EventLabels { kind, outcome }).inc();
        Ec2EventSummary { outcome, reason }
    }

    /// The one structured event of an interruption decision.
    fn log_interrupt_decision(&self, plan: &Interruption) {
        let reason = plan.kind.label();
        let labels = DecisionLabels { pool: plan.pool.clone(), action: "interrupt", reason };
        self.inner.metrics.decisions.get_or_create(&labels).inc();
        info!(
            pool = %plan.pool, action = "interrupt", reason_label = reason, instance = %plan.instance_id,
            node = ?plan.node, reason = %describe(plan), "scaling decision"
        );
    }

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
    pub(super) async fn save_interruption(
        &self,
        record: &Interruption,
        version: u64,
    ) -> Result<bool, StoreError> {
        match self.inner.edges.store.save_interruption(record, version).await {
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
