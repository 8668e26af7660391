//! Executing a drain: cordon, evict through the Eviction API until only DaemonSet and mirror
//! pods remain, terminate the instance, delete the Node. Each pass does one step and returns;
//! the sweeper comes back. Past the deadline the node is uncordoned and nothing is terminated.

use tracing::{info, warn};

use super::outcome::ReconcileError;
use super::steps::Steps;
use crate::adapters::dynamodb::store::LeaseAction;
use crate::adapters::kube::cluster::{Cluster, ClusterError, EvictOutcome, NodeEvent};
use crate::adapters::{AuditEvent, Lease};
use crate::core::drainability::{Blocker, pod_blocker};
use crate::core::model::{
    Direction, DrainOp, DrainPhase, LastScale, Operation, OperationKind, PoolPolicy, PoolState,
};
use crate::core::repair::holds_local_data;

impl Steps {
    /// One step of the drain in `state.op`.
    pub(super) async fn run_drain(
        &self,
        policy: &PoolPolicy,
        lease: &Lease,
        mut state: PoolState,
    ) -> Result<(), ReconcileError> {
        let Some(op) = state.op.clone() else { return Ok(()) };
        let OperationKind::Drain(mut drain) = op.kind.clone() else { return Ok(()) };
        let Some(cluster) = self.edges.cluster.clone() else {
            warn!(pool = %policy.name, op_id = %op.id, "a drain is in flight but Kubernetes is not configured");
            self.release(lease).await?;
            return Ok(());
        };
        let now = self.now();
        let committed = matches!(drain.phase, DrainPhase::Terminating | DrainPhase::Terminated);
        // A repair drain's pods cannot confirm termination on a NotReady node (service::repair).
        let mut repair_expired = false;
        if !committed && now >= op.deadline {
            repair_expired =
                drain.repair && self.repair_may_terminate(policy, cluster.as_ref(), &drain).await?;
            if !repair_expired {
                let why = format!("not empty after {}", humantime::format_duration(policy.drain_timeout));
                return self.abort_drain(policy, lease, state, &op, &drain, cluster.as_ref(), why).await;
            }
        }
        // What the drain found out on the way, for the outcome record.
        let mut vanished = false;
        if matches!(drain.phase, DrainPhase::Started | DrainPhase::Evicting) {
            // Cordoning again on every pass keeps the node cordoned if someone uncordoned it,
            // and is how a drain learns that its Node object was deleted under it.
            if !node_exists(cluster.set_unschedulable(&drain.node, true).await)? {
                vanished = true;
                let pods = cluster.node_pods(&drain.node).await?;
                let bound = pods.iter().filter(|p| p.must_move()).count();
                if bound > 0 {
                    return self.node_vanished(policy, lease, state, &op, &drain, bound).await;
                }
                warn!(pool = %policy.name, op_id = %op.id, node = %drain.node, "drained node's Node object was deleted and no pod is bound to it: terminating its instance");
            } else if drain.phase == DrainPhase::Started {
                cluster
                    .node_event(
                        &drain.node,
                        NodeEvent::DrainStarted,
                        &format!("cordoned by {}: {}", op.id, op.reason),
                    )
                    .await;
                info!(pool = %policy.name, op_id = %op.id, node = %drain.node, "drain started: node cordoned");
                drain.phase = DrainPhase::Evicting;
            }
        }
        if drain.phase == DrainPhase::Evicting && !vanished {
            let pods = cluster.node_pods(&drain.node).await?;
            let to_move: Vec<_> = pods.iter().filter(|p| p.must_move()).collect();
            // A pod that must not be evicted may have arrived since the decision: give up
            // rather than lose it. PDB refusals are waited out instead.
            // A repair drain stops only for local data: the other pods are not running anyway.
            if let Some((pod, blocker)) =
                to_move.iter().filter_map(|p| pod_blocker(p).map(|b| (p, b))).find(|(p, b)| {
                    match drain.repair {
                        true => holds_local_data(std::slice::from_ref(p)),
                        false => *b != Blocker::PdbAllowsNoDisruption,
                    }
                })
            {
                let why = format!("{}/{}: {blocker}", pod.namespace, pod.name);
                return self.abort_drain(policy, lease, state, &op, &drain, cluster.as_ref(), why).await;
            }
            if !to_move.is_empty() && !repair_expired {
                // The pod list may have taken long: evict only while the lease is still ours.
                self.fence(lease, "evictions").await?;
                let mut blocked = Vec::new();
                for pod in to_move.iter().filter(|p| !p.terminating) {
                    if let EvictOutcome::Blocked(message) = cluster.evict(&pod.namespace, &pod.name).await? {
                        blocked.push(format!("{}/{}: {message}", pod.namespace, pod.name));
                    }
                }
                info!(pool = %policy.name, op_id = %op.id, node = %drain.node, remaining = to_move.len(), blocked = ?blocked, "evicting");
                state.op = Some(Operation { kind: OperationKind::Drain(drain), ..op });
                self.save_state(lease, &state, None, LeaseAction::Release).await?;
                return Ok(());
            }
            let completed = match repair_expired {
                true => {
                    "NotReady past drain_timeout with no local data: its pods are not running; terminating"
                }
                false => "only DaemonSet and mirror pods remain",
            };
            cluster.node_event(&drain.node, NodeEvent::DrainCompleted, completed).await;
        }
        if matches!(drain.phase, DrainPhase::Started | DrainPhase::Evicting) {
            // Written ahead (and fenced): from here on the drain is never aborted as "nothing
            // terminated", whatever fails after the call.
            drain.phase = DrainPhase::Terminating;
            state.op = Some(Operation { kind: OperationKind::Drain(drain.clone()), ..op.clone() });
            self.save_state(lease, &state, None, LeaseAction::Extend).await?;
        }
        let mut terminated_now = true;
        if drain.phase == DrainPhase::Terminating {
            terminated_now = self.terminate_drained(policy, lease, &op, &drain).await?;
            drain.phase = DrainPhase::Terminated;
        }
        let what = if terminated_now { "terminated" } else { "was already terminated" };
        let message = format!("instance {} {what}; node deleted", drain.instance_id);
        if !vanished {
            cluster.node_event(&drain.node, NodeEvent::NodeRemoved, &message).await;
        }
        cluster.delete_node(&drain.node).await?;
        let reason = if vanished {
            format!(
                "node {} was deleted outside the autoscaler during the drain and no pod was bound to it; instance {} {what}",
                drain.node, drain.instance_id
            )
        } else {
            format!("node {} drained, {}", drain.node, message)
        };
        self.finish_drain(policy, lease, state, &op, "succeeded", reason).await
    }

    /// Terminates the drained instance, unless an earlier pass already did (its save failed
    /// after the call, or something else terminated it): an instance EC2 no longer lists as
    /// live is not terminated again. True when this call terminated it.
    async fn terminate_drained(
        &self,
        policy: &PoolPolicy,
        lease: &Lease,
        op: &Operation,
        drain: &DrainOp,
    ) -> Result<bool, ReconcileError> {
        let compute = &self.edges.compute;
        let live = compute.list_pool(&policy.name).await?;
        if live.iter().any(|i| i.instance_id == drain.instance_id) {
            self.fence(lease, "TerminateInstances").await?;
            compute.terminate(std::slice::from_ref(&drain.instance_id)).await?;
            info!(pool = %policy.name, op_id = %op.id, node = %drain.node, instance = %drain.instance_id, "instance terminated");
            return Ok(true);
        }
        info!(pool = %policy.name, op_id = %op.id, instance = %drain.instance_id, "instance already terminated");
        Ok(false)
    }

    /// The Node was deleted during the drain (an operator's `kubectl delete node`, the
    /// interruption worker) while pods are still bound to its name: there is nothing to
    /// uncordon and nothing safe to terminate, so the drain ends and the pool is free. A
    /// running kubelet registers the Node again and the pool sees it at the next sweep.
    async fn node_vanished(
        &self,
        policy: &PoolPolicy,
        lease: &Lease,
        state: PoolState,
        op: &Operation,
        drain: &DrainOp,
        bound: usize,
    ) -> Result<(), ReconcileError> {
        let reason = format!(
            "node {} was deleted outside the autoscaler during the drain; nothing to uncordon; \
             {bound} pod(s) that must move are still bound to it, so instance {} is left running",
            drain.node, drain.instance_id
        );
        warn!(pool = %policy.name, op_id = %op.id, node = %drain.node, bound, "drained node vanished: drain ended, nothing terminated");
        self.finish_drain(policy, lease, state, op, "node_vanished", reason).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn abort_drain(
        &self,
        policy: &PoolPolicy,
        lease: &Lease,
        state: PoolState,
        op: &Operation,
        drain: &DrainOp,
        cluster: &dyn Cluster,
        why: String,
    ) -> Result<(), ReconcileError> {
        let reason = if self.interruption_open(&drain.instance_id).await? {
            // The interrupt worker is draining it for EC2: uncordoning would let pods land
            // on a node that goes in two minutes, and its evictions hit an uncordoned node.
            format!(
                "drain of {} aborted, node left cordoned (an interruption of instance {} is draining it), \
                 nothing terminated: {why}",
                drain.node, drain.instance_id
            )
        } else if node_exists(cluster.set_unschedulable(&drain.node, false).await)? {
            let reason =
                format!("drain of {} aborted, node uncordoned, nothing terminated: {why}", drain.node);
            cluster.node_event(&drain.node, NodeEvent::DrainAborted, &reason).await;
            reason
        } else {
            format!(
                "drain of {} aborted, Node already deleted (nothing to uncordon), nothing terminated: {why}",
                drain.node
            )
        };
        warn!(pool = %policy.name, op_id = %op.id, node = %drain.node, %why, "drain aborted");
        self.finish_drain(policy, lease, state, op, "aborted", reason).await
    }

    /// Clears the op and records the outcome. An aborted drain also starts the scale-down
    /// cooldown, so the same node is not retried at once.
    async fn finish_drain(
        &self,
        policy: &PoolPolicy,
        lease: &Lease,
        mut state: PoolState,
        op: &Operation,
        outcome: &'static str,
        reason: String,
    ) -> Result<(), ReconcileError> {
        let now = self.now();
        state.op = None;
        state.last_scale = Some(LastScale { at: now, direction: Direction::Down });
        let workers = self.edges.compute.list_pool(&policy.name).await.ok().map(|w| w.len() as u32);
        self.save_state(lease, &state, workers, LeaseAction::Release).await?;
        self.count_operation(&policy.name, "drain", outcome, op.started_at);
        info!(pool = %policy.name, op_id = %op.id, outcome, %reason, "drain finished");
        self.record(AuditEvent {
            at: now,
            pool: policy.name.clone(),
            kind: "outcome".into(),
            action: "drain".into(),
            reason_label: outcome.into(),
            reason,
            op_id: Some(op.id.clone()),
            detail: serde_json::json!({ "drain": op.kind }),
            dry_run: false,
        })
        .await;
        Ok(())
    }
}

/// A Node write's answer as "did the Node exist": a 404 is no error here.
fn node_exists(written: Result<(), ClusterError>) -> Result<bool, ClusterError> {
    match written {
        Ok(()) => Ok(true),
        Err(e) if e.is_not_found() => Ok(false),
        Err(e) => Err(e),
    }
}
