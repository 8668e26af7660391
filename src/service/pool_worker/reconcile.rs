//! One reconcile of one pool: read, decide, and act under the lease.
//!
//! A reconcile that only holds writes nothing: the lease is taken (optimistically, in the same
//! write as the operation) only when there is something to do, so duplicate notifications
//! cost reads, never writes. A scale-up alert on a quiet pool does not even read first: see
//! `PoolWorker::launch_from_memory` and `memory.rs`.

use tracing::{Level, info, warn};

use super::PoolWorker;
use super::memory::QUIET_REFRESH;
use crate::adapters::dynamodb::store::LeaseAction;
use crate::adapters::{AuditEvent, Lease, ManagedInstance, StoreError};
use crate::core::decide::{DecideInput, Decision, Plan, Reason, decide};
use crate::core::model::{
    Direction, LaunchOp, LaunchPhase, Operation, OperationKind, PoolPolicy, PoolState, Signal, Worker,
};
use crate::core::time::Timestamp;
use crate::metrics::{DecisionLabels, PoolLabels, SignalLabels};
use crate::service::outcome::{Fresh, ReconcileError, ReconcileOutcome, new_op_id};
use crate::service::pending;
use crate::service::snapshot::PoolSnapshot;
use crate::service::steps::plan_action;

impl PoolWorker {
    /// Reconciles `pool` once: progress its in-flight operation, or decide and start one.
    #[tracing::instrument(skip(self), fields(pool = %self.pool, owner = %self.steps.owner))]
    pub(in crate::service) async fn reconcile(&mut self) -> Result<ReconcileOutcome, ReconcileError> {
        let (steps, pool) = (self.steps.clone(), self.pool.clone());
        let pool = pool.as_str();
        let policy = steps.policy(pool)?;
        let edges = &steps.edges;
        let now = self.steps.now();
        // Taken before the query: a write finishing later is merged below, one that finished
        // earlier is in the query's answer.
        let pending = self.pending.of(pool);
        if !pending.is_empty() {
            if let Some(outcome) = self.launch_from_memory(pool, &policy, &pending, now).await? {
                return Ok(outcome);
            }
        }
        let (record, signals, observed, durable) = if pending.is_empty() {
            // A sweep (no alert just arrived): state and signals first, and the instance list
            // only when there is something to decide or the last one is getting old.
            let (record, signals) =
                tokio::join!(edges.store.read_pool(pool), edges.store.active_signals(pool, now));
            let (record, signals) = (record?, signals?);
            self.memory.read(&record, &signals);
            if record.state.op.is_none() && signals.is_empty() && self.observed_recently(now) {
                self.observe_signals(pool, &signals);
                return Ok(ReconcileOutcome::Held(Reason::NoSignal.label()));
            }
            (record, Ok(signals), self.steps.observe_pool(pool).await, Vec::new())
        } else {
            // An alert is being stored and the pool is not remembered well enough to decide
            // from: the reads are independent, so they go out together (one round trip, not
            // three), alongside the intake's signal write.
            let (record, signals, observed, durable) = tokio::join!(
                edges.store.read_pool(pool),
                edges.store.active_signals(pool, now),
                self.steps.observe_pool(pool),
                pending::settle(pending),
            );
            let record = record?;
            if let Ok(signals) = &signals {
                self.memory.read(&record, signals);
            }
            (record, signals, observed, durable)
        };
        if let Some(op) = &record.state.op {
            if self.steps.config.dry_run {
                tracing::debug!(pool, op_id = %op.id, "dry-run: leaving the in-flight operation alone");
                return Ok(ReconcileOutcome::DryRun);
            }
            if record.leased_by_other(&self.steps.owner, now) {
                return Ok(ReconcileOutcome::Contended);
            }
            // A drain that a scale-up may supersede goes through `decide`; any other op is
            // progressed.
            let scale_up = signals.as_ref().is_ok_and(|s| {
                pending::merge(s.clone(), &durable).iter().any(|s| s.direction == Direction::Up)
            });
            if !(scale_up && supersedable(op)) {
                if self.steps.still_joining(&policy, op, now).await? {
                    return Ok(ReconcileOutcome::Held("operation_in_flight"));
                }
                return self.progress(pool, &policy).await;
            }
        }
        // A lease without an operation: its holder (an interruption's replacement launch, a
        // never-joined cleanup) may still save the record, and once it has released, a
        // write-ahead on this read's token would succeed and put this read's copy over what it
        // saved (a capacity backoff). The next sweep or alert reads again.
        if record.state.op.is_none() && record.leased(now) {
            tracing::debug!(pool, "the pool lease is held without an operation: deciding after its holder");
            return Ok(ReconcileOutcome::Contended);
        }
        let signals = pending::merge(signals?, &durable);
        let considering_scale_down = signals.iter().any(|s| s.direction == Direction::Down)
            && !signals.iter().any(|s| s.direction == Direction::Up);
        let observed = observed?;
        // Node repair needs the same facts as a scale-down: pods and interruptions.
        let repair_watch = policy.repair_after.is_some() && observed.any_not_ready();
        let considering_scale_down = considering_scale_down || repair_watch;
        let snapshot = self.steps.snapshot(pool, observed, considering_scale_down).await?;
        self.memory.listed(&record, &snapshot.instances, now);
        // Cleanup waits while an operation is in flight (its instances are its own to handle).
        if record.state.op.is_none() && self.clean_up_never_joined(&policy, &snapshot).await {
            return Ok(ReconcileOutcome::Progressed);
        }
        self.observe(pool, &signals, &snapshot.workers);
        let interrupted =
            if considering_scale_down { self.interrupted_instances(pool).await? } else { Vec::new() };
        let decision = decide(DecideInput {
            signals: &signals,
            state: &record.state,
            workers: &snapshot.workers,
            policy: &policy,
            interrupted: &interrupted,
            cluster_seen: snapshot.cluster_seen,
            now,
        });
        self.report_repair_blocked(&policy, &snapshot.workers, &interrupted, snapshot.cluster_seen, now)
            .await;
        self.log_decision(pool, &decision);
        match decision.plan.clone() {
            Plan::Hold => {
                self.audit_hold_if_changed(pool, &decision).await;
                return Ok(ReconcileOutcome::Held(decision.reason.label()));
            }
            Plan::SupersedeDrain { drain, launch } => {
                return self.steps.supersede_drain(&policy, &decision, &drain, launch).await;
            }
            _ if self.steps.config.dry_run => {
                self.steps.audit(pool, "decision", &decision, None, true).await;
                return Ok(ReconcileOutcome::DryRun);
            }
            Plan::Launch(_) | Plan::Drain(_) => {}
        }
        let Some(state) = write_ahead(&record.state, &decision, &policy, now) else {
            return Ok(ReconcileOutcome::Held(decision.reason.label()));
        };
        let ttl = self.steps.config.timing.lease_ttl;
        let begun = edges.store.begin(pool, record.fencing_token, &state, &self.steps.owner, now, ttl).await;
        self.memory.wrote();
        let lease = match begun {
            Err(StoreError::Contended { .. }) => return Ok(ReconcileOutcome::Contended),
            other => other?,
        };
        self.act(&policy, &lease, state, &decision).await
    }

    /// Runs the operation just written ahead, alongside its decision's audit record.
    async fn act(
        &self,
        policy: &PoolPolicy,
        lease: &Lease,
        state: PoolState,
        decision: &Decision,
    ) -> Result<ReconcileOutcome, ReconcileError> {
        self.steps.metrics.set_lease_held(&policy.name, true);
        let op_id = state.op.as_ref().map(|op| op.id.clone()).unwrap_or_default();
        let (acted, _) = tokio::join!(
            self.steps.run_op(policy, lease, state, Fresh::Yes),
            self.steps.audit(&policy.name, "decision", decision, Some(&op_id), false),
        );
        acted?;
        Ok(ReconcileOutcome::Acted { op_id })
    }

    /// The fast path of an alert on a quiet pool: two sequential round trips to the launch
    /// request instead of three. The launch is decided from what the last sweep read (see
    /// `memory.rs`) and written ahead at once, conditional on the remembered fencing token;
    /// the fresh reads (signals, instances, the alert's own signal write) go out alongside
    /// that write, and the launch is only sent when they lead to the same decision. A token
    /// that moved on costs the one failed write; fresh reads that disagree cost one more write
    /// that takes the operation back. Either way the ordinary path then decides from fresh
    /// reads. `None` when the fast path does not apply or gave way.
    async fn launch_from_memory(
        &mut self,
        pool: &str,
        policy: &PoolPolicy,
        pending: &[pending::PendingWrite],
        now: Timestamp,
    ) -> Result<Option<ReconcileOutcome>, ReconcileError> {
        let fired = pending::fired_up(pending);
        if fired.is_empty() || self.steps.config.dry_run {
            return Ok(None);
        }
        let Some(basis) = self.memory.basis(now) else { return Ok(None) };
        let observed = self.steps.observe_with(pool, basis.instances).await?;
        if policy.repair_after.is_some() && observed.any_not_ready() {
            return Ok(None); // node repair needs pod facts: the ordinary path gathers them
        }
        let snapshot = self.steps.snapshot(pool, observed, false).await?;
        // The same decision twice: from memory, then from the fresh reads.
        let state = &basis.record.state;
        let decide_from = |signals: &[Signal], snapshot: &PoolSnapshot| {
            let (workers, cluster_seen) = (&snapshot.workers, snapshot.cluster_seen);
            decide(DecideInput { signals, state, workers, policy, interrupted: &[], cluster_seen, now })
        };
        let guess = decide_from(&pending::merge(basis.signals.clone(), &fired), &snapshot);
        if !matches!(guess.plan, Plan::Launch(_)) {
            return Ok(None);
        }
        let Some(written) = write_ahead(state, &guess, policy, now) else { return Ok(None) };
        let edges = &self.steps.edges;
        let ttl = self.steps.config.timing.lease_ttl;
        let (begun, signals, observed, durable) = tokio::join!(
            edges.store.begin(pool, basis.record.fencing_token, &written, &self.steps.owner, now, ttl),
            edges.store.active_signals(pool, now),
            self.steps.observe_pool(pool),
            pending::settle(pending.to_vec()),
        );
        self.memory.wrote();
        let lease = match begun {
            Err(StoreError::Contended { .. }) => {
                tracing::debug!(pool, "the remembered pool record is stale: deciding from fresh reads");
                return Ok(None);
            }
            other => other?,
        };
        let fresh = match (signals, observed) {
            (Ok(signals), Ok(observed)) => match self.steps.snapshot(pool, observed, false).await {
                Ok(snapshot) => {
                    let signals = pending::merge(signals, &durable);
                    self.memory.listed_after_write(&snapshot.instances, now);
                    self.observe(pool, &signals, &snapshot.workers);
                    Some(decide_from(&signals, &snapshot))
                }
                Err(_) => None,
            },
            _ => None,
        };
        if fresh.as_ref() != Some(&guess) {
            // Taken back before anything irreversible; the ordinary path decides again.
            let mut undone = written;
            undone.op = None;
            self.steps.save_state(&lease, &undone, None, LeaseAction::Release).await?;
            info!(pool, guessed = %guess.reason, fresh = ?fresh.map(|d| d.reason.to_string()),
                  "a launch decided from the remembered pool was taken back: the fresh reads disagree");
            return Ok(None);
        }
        self.log_decision(pool, &guess);
        self.act(policy, &lease, written, &guess).await.map(Some)
    }

    /// Moves the in-flight operation on under the lease.
    async fn progress(&self, pool: &str, policy: &PoolPolicy) -> Result<ReconcileOutcome, ReconcileError> {
        let Some((lease, record)) = self.steps.acquire(pool).await? else {
            return Ok(ReconcileOutcome::Contended);
        };
        if record.state.op.is_none() {
            self.steps.release(&lease).await?;
            return Ok(ReconcileOutcome::Progressed);
        }
        self.steps.run_op(policy, &lease, record.state, Fresh::No).await?;
        Ok(ReconcileOutcome::Progressed)
    }

    /// Terminates managed instances that never became nodes within `join_timeout` (left by
    /// an operation whose record was lost). Only when Kubernetes answered, so an unreachable
    /// API never looks like a pool of orphans; and only after a live list of every Node
    /// (whatever its labels) shows no Node for the instance: the pool's node list is
    /// label-filtered and may come from a cache, so an instance missing from it may still be a
    /// working node (its label removed, a template naming another pool). Such a node is
    /// reported, never terminated. The terminate is done under the pool's lease. True when it
    /// took the lease (the record's fencing token moved on: the caller decides next sweep).
    async fn clean_up_never_joined(&self, policy: &PoolPolicy, snapshot: &PoolSnapshot) -> bool {
        let (Some(cluster), true, false) =
            (&self.steps.edges.cluster, snapshot.cluster_seen, self.steps.config.dry_run)
        else {
            return false;
        };
        let now = self.steps.now();
        let pool = policy.name.as_str();
        let candidates: Vec<&ManagedInstance> = snapshot
            .instances
            .iter()
            .filter(|i| !snapshot.nodes.contains_key(&i.instance_id))
            .filter(|i| now.since(i.launched_at) > policy.join_timeout)
            .collect();
        let report_unlabelled = |count: usize| {
            let labels = PoolLabels { pool: pool.into() };
            self.steps.metrics.nodes_without_pool_label.get_or_create(&labels).set(count as i64);
        };
        if candidates.is_empty() {
            report_unlabelled(0);
            return false;
        }
        let nodes = match cluster.all_nodes_live().await {
            Ok(nodes) => nodes,
            Err(error) => {
                warn!(pool, %error, "cannot list nodes live: no never-joined cleanup this pass");
                return false;
            }
        };
        let (registered, orphans): (Vec<&ManagedInstance>, Vec<&ManagedInstance>) = candidates
            .into_iter()
            .partition(|i| nodes.iter().any(|n| n.instance_id() == Some(i.instance_id.as_str())));
        report_unlabelled(registered.len());
        for instance in &registered {
            let node = nodes.iter().find(|n| n.instance_id() == Some(instance.instance_id.as_str()));
            warn!(pool, instance = %instance.instance_id, node = ?node.map(|n| &n.name),
                  "managed instance is a registered Node without this pool's label: left alone (check the node's labels and the launch template's pool)");
        }
        if orphans.is_empty() {
            return false;
        }
        let store = &self.steps.edges.store;
        let ttl = self.steps.config.timing.lease_ttl;
        let (lease, record) = match store.acquire(pool, &self.steps.owner, now, ttl).await {
            Ok(taken) => taken,
            Err(error) => {
                tracing::debug!(pool, %error, "no lease: never-joined cleanup left to the holder");
                return false;
            }
        };
        self.terminate_never_joined(policy, &lease, record.state.op.is_none(), &orphans).await;
        if let Err(error) = self.steps.release(&lease).await {
            warn!(pool, %error, "cannot release the lease after never-joined cleanup");
        }
        true
    }

    /// The terminate of [`PoolWorker::clean_up_never_joined`], under `lease`; skipped when an
    /// operation started since the snapshot (its instances are its own to handle).
    async fn terminate_never_joined(
        &self,
        policy: &PoolPolicy,
        lease: &Lease,
        idle: bool,
        orphans: &[&ManagedInstance],
    ) {
        let pool = policy.name.as_str();
        if !idle {
            tracing::debug!(pool, "an operation started since the snapshot: no never-joined cleanup");
            return;
        }
        let ids: Vec<String> = orphans.iter().map(|i| i.instance_id.clone()).collect();
        match self.steps.edges.compute.terminate(&ids).await {
            Ok(()) => {
                warn!(pool, instances = ?ids, fencing_token = lease.fencing_token, "terminated instances that never joined within join_timeout");
                self.steps
                    .record(AuditEvent {
                        at: self.steps.now(),
                        pool: pool.to_string(),
                        kind: "outcome".into(),
                        action: "terminate".into(),
                        reason_label: "never_joined".into(),
                        reason: format!(
                            "instances never joined within {} and no Node has their providerID",
                            humantime::format_duration(policy.join_timeout)
                        ),
                        op_id: None,
                        detail: serde_json::json!({ "instances": ids }),
                        dry_run: false,
                    })
                    .await;
            }
            Err(error) => {
                self.steps.metrics.aws_error("TerminateInstances", error.code());
                warn!(pool, %error, "cannot terminate instances that never joined");
            }
        }
    }

    /// Instances of `pool` whose interruption record is still open: a scale-down waits for
    /// them (read only when a scale-down is considered; it is one query).
    async fn interrupted_instances(&self, pool: &str) -> Result<Vec<String>, StoreError> {
        let open = self.steps.edges.store.open_interruptions().await?;
        Ok(open.into_iter().filter(|(r, _)| r.pool == pool).map(|(r, _)| r.instance_id).collect())
    }

    /// Whether the pool's instances were listed within [`QUIET_REFRESH`].
    fn observed_recently(&self, now: Timestamp) -> bool {
        self.memory.listed_at().is_some_and(|at| now.since(at) < QUIET_REFRESH)
    }

    fn observe(&self, pool: &str, signals: &[Signal], workers: &[Worker]) {
        self.observe_signals(pool, signals);
        let metrics = &self.steps.metrics;
        metrics.pool_workers.get_or_create(&PoolLabels { pool: pool.to_string() }).set(workers.len() as i64);
        if let Some(config) = self.steps.config.pools.get(pool) {
            let zones = config.subnets.keys().map(String::as_str);
            metrics.observe_pool_nodes(
                pool,
                zones,
                workers.iter().map(|w| (w.az.as_str(), w.market.as_str())),
            );
        }
    }

    fn observe_signals(&self, pool: &str, signals: &[Signal]) {
        let metrics = &self.steps.metrics;
        for direction in [Direction::Up, Direction::Down] {
            let n = signals.iter().filter(|s| s.direction == direction).count();
            metrics
                .active_signals
                .get_or_create(&SignalLabels { pool: pool.to_string(), direction: direction.as_str() })
                .set(n as i64);
        }
    }

    fn log_decision(&self, pool: &str, decision: &Decision) {
        let action = plan_action(&decision.plan);
        self.steps
            .metrics
            .decisions
            .get_or_create(&DecisionLabels {
                pool: pool.to_string(),
                action,
                reason: decision.reason.label(),
            })
            .inc();
        let quiet = matches!(decision.plan, Plan::Hold)
            && matches!(decision.reason.label(), "no_signal" | "operation_in_flight");
        let reason = decision.reason.to_string();
        if quiet {
            tracing::event!(Level::DEBUG, pool, action, reason_label = decision.reason.label(), %reason, "scaling decision");
        } else {
            info!(pool, action, reason_label = decision.reason.label(), %reason, "scaling decision");
        }
    }

    /// Records a hold that keeps an active signal from acting for a lasting reason (no drain
    /// candidate, unhealthy, at max or min, no capacity) when its reason differs from the last
    /// one recorded for the pool. Routine holds (no signal, in flight, cooldown) are only
    /// logged, so repeats and sweeps cost no writes.
    async fn audit_hold_if_changed(&mut self, pool: &str, decision: &Decision) {
        let lasting = matches!(
            decision.reason.label(),
            "no_drain_candidate" | "unhealthy" | "at_max" | "at_min" | "no_capacity"
        ) || matches!(decision.reason, Reason::RepairHeld(_));
        if !lasting {
            self.audited_hold = None;
            return;
        }
        let reason = decision.reason.to_string();
        if self.audited_hold.replace(reason.clone()).as_deref() != Some(reason.as_str()) {
            self.steps.audit(pool, "decision", decision, None, self.steps.config.dry_run).await;
        }
    }
}

/// The pool state with the decision's operation in it, as `begin` writes it ahead; `None` for
/// a plan that starts no operation.
fn write_ahead(
    state: &PoolState,
    decision: &Decision,
    policy: &PoolPolicy,
    now: Timestamp,
) -> Option<PoolState> {
    let (kind, deadline) = match decision.plan.clone() {
        Plan::Launch(requests) => (
            OperationKind::Launch(LaunchOp {
                requests,
                instances: Vec::new(),
                phase: LaunchPhase::Requested,
                failed: Vec::new(),
            }),
            now.plus(policy.join_timeout),
        ),
        Plan::Drain(drain) => (OperationKind::Drain(drain), now.plus(policy.drain_timeout)),
        Plan::Hold | Plan::SupersedeDrain { .. } => return None,
    };
    let op =
        Operation { id: new_op_id(), kind, reason: decision.reason.to_string(), started_at: now, deadline };
    let mut state = state.clone();
    state.backoffs.retain(|b| b.until > now);
    state.op = Some(op);
    Some(state)
}

/// A drain that has not terminated its instance yet: a scale-up may still undo it.
fn supersedable(op: &Operation) -> bool {
    matches!(&op.kind, OperationKind::Drain(drain) if drain.phase.before_terminate())
}
