//! The steps every loop takes through the outside systems: the lease and fenced writes, the
//! audit trail, the counters, and (in `launch.rs`, `drain.rs`, `supersede.rs`, `snapshot.rs`,
//! `interrupt.rs`, `repair.rs`) the operations themselves. [`Steps`] keeps nothing between
//! calls: what a loop remembers is the loop's own (see `pool_worker`), and what loops share
//! is in the store.

use std::sync::Arc;

use tracing::warn;

use super::Edges;
use super::audit::Audit;
use super::outcome::{Fresh, ReconcileError};
use crate::adapters::dynamodb::store::LeaseAction;
use crate::adapters::{AuditEvent, Lease, PoolRecord, StoreError};
use crate::config::Config;
use crate::core::decide::{Decision, Plan};
use crate::core::model::{OperationKind, PoolPolicy, PoolState};
use crate::core::time::Timestamp;
use crate::metrics::{Metrics, OperationLabels};

/// The configuration and edges the loops act through, and who they act as; cheap to share
/// (behind an `Arc`), never changed after start.
pub(super) struct Steps {
    pub(super) config: Config,
    pub(super) edges: Edges,
    pub(super) metrics: Arc<Metrics>,
    /// Identifies this process as a lease holder.
    pub(super) owner: String,
    /// Writes the audit trail (store and sink).
    pub(super) audit: Audit,
}

impl Steps {
    pub(super) fn policy(&self, pool: &str) -> Result<PoolPolicy, ReconcileError> {
        self.config.policy(pool).ok_or_else(|| ReconcileError::UnknownPool(pool.to_string()))
    }

    pub(super) fn now(&self) -> Timestamp {
        self.edges.clock.now()
    }

    /// Takes the pool's lease for an operation in flight, with the record as it is now;
    /// `None` when another holder has it.
    pub(super) async fn acquire(&self, pool: &str) -> Result<Option<(Lease, PoolRecord)>, StoreError> {
        let now = self.now();
        let ttl = self.config.timing.lease_ttl;
        match self.edges.store.acquire(pool, &self.owner, now, ttl).await {
            Err(StoreError::Contended { .. }) => Ok(None),
            Err(other) => Err(other),
            Ok(taken) => {
                self.metrics.set_lease_held(pool, true);
                Ok(Some(taken))
            }
        }
    }

    /// Runs (or resumes) the pool operation in `state` under `lease`.
    pub(super) async fn run_op(
        &self,
        policy: &PoolPolicy,
        lease: &Lease,
        state: PoolState,
        fresh: Fresh,
    ) -> Result<(), ReconcileError> {
        match state.op.as_ref().map(|op| &op.kind) {
            Some(OperationKind::Launch(_)) => self.run_launch(policy, lease, state, fresh).await,
            Some(OperationKind::Drain(_)) => self.run_drain(policy, lease, state).await,
            None => Ok(self.release(lease).await?),
        }
    }

    /// Counts a finished operation and how long it took.
    pub(super) fn count_operation(
        &self,
        pool: &str,
        kind: &'static str,
        outcome: &'static str,
        started_at: Timestamp,
    ) {
        let labels = OperationLabels { pool: pool.to_string(), kind, outcome };
        let metrics = &self.metrics;
        metrics.operations.get_or_create(&labels).inc();
        metrics.operation_duration.get_or_create(&labels).observe(self.now().since(started_at).as_secs_f64());
    }

    /// Counts a failed reconcile's AWS or Kubernetes error by call and code.
    pub(super) fn count_error(&self, error: &ReconcileError) {
        let metrics = &self.metrics;
        match error {
            ReconcileError::Compute(e) => metrics.aws_error(e.api(), e.code()),
            ReconcileError::Cluster(e) => {
                let labels = crate::metrics::ApiErrorLabels { api: e.call(), code: e.label() };
                metrics.kube_errors.get_or_create(&labels).inc();
            }
            ReconcileError::Store(StoreError::Unavailable { operation, .. }) => {
                metrics.aws_error(operation, "unavailable")
            }
            _ => {}
        }
    }

    /// Appends a decision or outcome to the audit trail; a failure is logged, never fatal.
    pub(super) async fn audit(
        &self,
        pool: &str,
        kind: &str,
        decision: &Decision,
        op_id: Option<&str>,
        dry_run: bool,
    ) {
        let detail = match &decision.plan {
            Plan::Launch(requests) => serde_json::json!({ "launch": requests }),
            Plan::Drain(drain) => serde_json::json!({ "drain": drain }),
            Plan::SupersedeDrain { drain, launch } => serde_json::json!({ "drain": drain, "launch": launch }),
            Plan::Hold => serde_json::Value::Null,
        };
        let event = AuditEvent {
            at: self.now(),
            pool: pool.to_string(),
            kind: kind.to_string(),
            action: plan_action(&decision.plan).to_string(),
            reason_label: decision.reason.label().to_string(),
            reason: decision.reason.to_string(),
            op_id: op_id.map(str::to_string),
            detail,
            dry_run,
        };
        self.record(event).await;
    }

    pub(super) async fn record(&self, event: AuditEvent) {
        self.audit.record(event).await;
    }

    pub(super) async fn save_state(
        &self,
        lease: &Lease,
        state: &PoolState,
        node_count: Option<u32>,
        action: LeaseAction,
    ) -> Result<(), StoreError> {
        let now = self.now();
        let ttl = self.config.timing.lease_ttl;
        let saved = self.edges.store.save(lease, state, node_count, action, now, ttl).await;
        let held = saved.is_ok() && action == LeaseAction::Extend;
        self.metrics.set_lease_held(&lease.pool, held);
        if saved.is_ok() {
            self.metrics.observe_backoffs(&lease.pool, &state.backoffs, now);
        }
        saved
    }

    /// The fenced lease check right before an irreversible act (`before` names it): renews the
    /// lease if it is still ours. A lease lost meanwhile (this pass stalled past `lease_ttl`,
    /// e.g. in a slow API call, and another replica took over) stops the pass here, logged.
    pub(super) async fn fence(&self, lease: &Lease, before: &'static str) -> Result<(), StoreError> {
        let ttl = self.config.timing.lease_ttl;
        let renewed = self.edges.store.renew(lease, self.now(), ttl).await;
        if let Err(StoreError::LeaseLost { .. }) = &renewed {
            self.metrics.set_lease_held(&lease.pool, false);
            warn!(pool = %lease.pool, fencing_token = lease.fencing_token, before,
                  "lease lost to another replica: stopping this pass before acting; the new holder carries on");
        }
        renewed
    }

    /// Gives the lease up and says so in `lease_held`.
    pub(super) async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.metrics.set_lease_held(&lease.pool, false);
        self.edges.store.release(lease).await
    }
}

/// The action a plan names in logs, metrics and the audit trail.
pub(super) fn plan_action(plan: &Plan) -> &'static str {
    match plan {
        Plan::Launch(_) => "launch",
        Plan::Drain(_) => "drain",
        Plan::SupersedeDrain { .. } => "supersede_drain",
        Plan::Hold => "hold",
    }
}
