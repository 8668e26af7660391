//! The interrupt worker's steps for one open `interrupt#<instance-id>` record: launch the
//! replacement, evict (for a spot warning the candidate rules do not apply; for a rebalance
//! they do, and a blocker holds the drain; PDBs always apply, through the Eviction API), then
//! terminate and delete the node — or, past the deadline, report what could not move.

use std::time::Duration;

use tracing::{info, warn};

use super::Service;
use super::interrupt::describe;
use super::launch::FleetCall;
use super::outcome::ReconcileError;
use crate::adapters::ComputeError;
use crate::adapters::kube::cluster::{EvictOutcome, NodeEvent, NodeSnapshot};
use crate::core::drainability::PodFacts;
use crate::core::interruption::{
    InterruptPhase, InterruptStep, Interruption, Replacement, StepFacts, drain_hold, next_step,
};
use crate::metrics::OperationLabels;

/// How often a record with pods still to move is looked at again: well inside the two-minute
/// notice, so a PDB that frees up is used.
pub(super) const RETRY: Duration = Duration::from_secs(5);

impl Service {
    /// One pass over every open interruption; returns whether any is still open.
    pub(super) async fn progress_interruptions(&self) -> Result<bool, ReconcileError> {
        if self.inner.config.dry_run {
            return Ok(false);
        }
        let open = self.inner.edges.store.open_interruptions().await?;
        let mut still_open = false;
        for (record, version) in open {
            let instance = record.instance_id.clone();
            match self.progress_interruption(record, version).await {
                Ok(open) => still_open |= open,
                Err(error) => {
                    still_open = true;
                    self.count_error(&error);
                    warn!(%instance, %error, "interruption step failed; retrying");
                }
            }
        }
        Ok(still_open)
    }

    /// Takes the next step of one record; returns whether it is still open.
    async fn progress_interruption(
        &self,
        mut record: Interruption,
        version: u64,
    ) -> Result<bool, ReconcileError> {
        let cluster = self.inner.edges.cluster.clone();
        let pods: Vec<PodFacts> = match (&cluster, &record.node) {
            // Live, not from the watch cache: this list decides when the instance is terminated.
            (Some(cluster), Some(node)) => cluster.node_pods(node).await?,
            _ => Vec::new(),
        };
        let to_move: Vec<&PodFacts> = pods.iter().filter(|p| p.must_move()).collect();
        let nodes = match &cluster {
            Some(cluster) => cluster.pool_nodes(&record.pool).await?,
            None => Vec::new(),
        };
        let own = nodes.iter().find(|n| Some(&n.name) == record.node.as_ref());
        let facts = StepFacts {
            pods_left: to_move.len(),
            replacement_ready: replacement_ready(&record, &nodes),
            ready_others: nodes
                .iter()
                .filter(|n| {
                    n.ready && !n.unschedulable && n.instance_id() != Some(record.instance_id.as_str())
                })
                .count(),
            min: self.inner.config.pools.get(&record.pool).map_or(0, |p| p.min),
            hold: drain_hold(own.is_some_and(|n| n.scale_down_disabled), &pods),
        };
        let now = self.now();
        match next_step(&record, &facts, now) {
            InterruptStep::Launch => {
                let replacement = self.launch_replacement(&record).await;
                if replacement == record.replacement {
                    return Ok(true); // outcome unknown: the next pass asks again
                }
                record.replacement = replacement;
                let launched = matches!(record.replacement, Replacement::Launched { .. });
                let reason = describe(&record);
                if self.save_interruption(&record, version).await? {
                    let outcome = if launched { "succeeded" } else { "failed" };
                    self.audit_interrupt(&record, "outcome", "replace", outcome, reason, false).await;
                }
                // Go on at once: the node drains while the replacement boots.
                self.trigger_interruptions();
                Ok(true)
            }
            InterruptStep::WaitForReplacement => Ok(true),
            InterruptStep::Evict => {
                // The notice's cordon may have failed, or something uncordoned the node. Cordon
                // unless the pool's list shows it cordoned: a node missing from that list (its
                // pool label removed by hand) is still this instance's node. A Node already
                // deleted has nothing left to cordon.
                let cordoned = own.is_some_and(|n| n.unschedulable);
                if let (false, Some(cluster), Some(node)) = (cordoned, &cluster, &record.node) {
                    match cluster.set_unschedulable(node, true).await {
                        Err(error) if error.is_not_found() => {}
                        other => other?,
                    }
                }
                let mut blocked = Vec::new();
                if let Some(cluster) = &cluster {
                    for pod in to_move.iter().filter(|p| !p.terminating) {
                        if let EvictOutcome::Blocked(why) = cluster.evict(&pod.namespace, &pod.name).await? {
                            blocked.push(format!("{}/{}: {why}", pod.namespace, pod.name));
                        }
                    }
                }
                info!(instance = %record.instance_id, node = ?record.node, remaining = to_move.len(), ?blocked, "interruption: evicting");
                Ok(true)
            }
            InterruptStep::Finish => self.finish_interruption(record, version).await,
            InterruptStep::GiveUp => {
                let stranded: Vec<String> =
                    to_move.iter().map(|p| format!("{}/{}", p.namespace, p.name)).collect();
                let reason = if stranded.is_empty() {
                    format!(
                        "deadline {} passed while waiting for the replacement to be Ready and for {} other \
                         Ready nodes (pool min); node left cordoned, nothing terminated",
                        record.deadline, facts.min
                    )
                } else {
                    format!(
                        "deadline {} passed; {} pods could not move: {}",
                        record.deadline,
                        stranded.len(),
                        stranded.join(", ")
                    )
                };
                warn!(instance = %record.instance_id, node = ?record.node, ?stranded, "interruption: pods stranded");
                self.inner.metrics.interruption_stranded_pods.inc_by(stranded.len() as u64);
                if let (Some(cluster), Some(node)) = (&cluster, &record.node) {
                    cluster.node_event(node, NodeEvent::InterruptionStranded, &reason).await;
                }
                self.close(record, version, "stranded", reason).await
            }
            InterruptStep::Held => {
                let hold = facts.hold.unwrap_or_default();
                let reason = format!(
                    "rebalance drain of node {} held by {hold}; node left cordoned with its pods, nothing \
                     evicted or terminated",
                    node_name(&record)
                );
                warn!(instance = %record.instance_id, node = ?record.node, %hold, "interruption: rebalance drain held by a drain blocker");
                if let (Some(cluster), Some(node)) = (&cluster, &record.node) {
                    cluster.node_event(node, NodeEvent::InterruptionHeld, &reason).await;
                }
                self.close(record, version, "held", reason).await
            }
            InterruptStep::Close => {
                let reason = format!(
                    "{}: node {} cordoned, pods left in place",
                    record.kind.label(),
                    node_name(&record)
                );
                self.close(record, version, "cordoned", reason).await
            }
        }
    }

    /// Nothing left to move: the instance is going anyway, so terminate it now and delete
    /// its Node rather than leave a NotReady node behind.
    async fn finish_interruption(&self, record: Interruption, version: u64) -> Result<bool, ReconcileError> {
        self.inner.edges.compute.terminate(std::slice::from_ref(&record.instance_id)).await?;
        if let (Some(cluster), Some(node)) = (&self.inner.edges.cluster, &record.node) {
            let message = format!("instance {} terminated after the interruption drain", record.instance_id);
            cluster.node_event(node, NodeEvent::NodeRemoved, &message).await;
            cluster.delete_node(node).await?;
        }
        let reason =
            format!("node {} drained, instance {} terminated", node_name(&record), record.instance_id);
        self.close(record, version, "drained", reason).await
    }

    async fn close(
        &self,
        mut record: Interruption,
        version: u64,
        outcome: &'static str,
        reason: String,
    ) -> Result<bool, ReconcileError> {
        record.phase = InterruptPhase::Done;
        record.outcome = Some(reason.clone());
        if !self.save_interruption(&record, version).await? {
            return Ok(false);
        }
        let labels = OperationLabels { pool: record.pool.clone(), kind: "interruption", outcome };
        self.inner.metrics.operations.get_or_create(&labels).inc();
        let took = self.now().since(record.received_at).as_secs_f64();
        self.inner.metrics.operation_duration.get_or_create(&labels).observe(took);
        info!(pool = %record.pool, instance = %record.instance_id, outcome, %reason, "interruption handled");
        self.audit_interrupt(&record, "outcome", "interrupt", outcome, reason, false).await;
        Ok(false)
    }

    /// CreateFleet for the planned replacement, market by market over the pool's open
    /// instance types. The ClientToken is derived from the interrupted instance, so a repeat
    /// returns the same instance instead of a new one.
    async fn launch_replacement(&self, record: &Interruption) -> Replacement {
        let Replacement::Planned { request } = &record.replacement else { return record.replacement.clone() };
        let Some(pool_config) = self.inner.config.pools.get(&record.pool) else {
            return Replacement::Failed { why: format!("pool {} is no longer configured", record.pool) };
        };
        let launch_id = record.launch_id();
        let mut errors = Vec::new();
        for market in &request.markets {
            let call = FleetCall {
                pool: &record.pool,
                config: pool_config,
                op_id: &launch_id,
                client_token: format!("{launch_id}-{}", market.as_str()),
                request,
                count: request.count,
                market: *market,
            };
            match self.launch_fleet(&call, &[]).await {
                Ok(outcome) if !outcome.instances.is_empty() => {
                    return Replacement::Launched { instances: outcome.instances };
                }
                Ok(outcome) => {
                    warn!(instance = %record.instance_id, az = %request.az, market = %market, errors = ?outcome.errors, "replacement not launched");
                    errors.extend(outcome.errors);
                }
                Err(error) => {
                    let unknown = matches!(error, ComputeError::Unavailable { .. });
                    errors.push(error.to_string());
                    if unknown && self.now() < record.deadline {
                        // EC2 may have launched it: the same ClientToken next pass finds out.
                        return record.replacement.clone();
                    }
                    if unknown {
                        // Past the deadline and EC2 may have launched it: another market
                        // would be a second replacement.
                        break;
                    }
                }
            }
        }
        Replacement::Failed { why: errors.join("; ") }
    }
}

fn node_name(record: &Interruption) -> &str {
    record.node.as_deref().unwrap_or("(none)")
}

/// Whether every replacement instance is a Ready node (a rebalance drains only then).
fn replacement_ready(record: &Interruption, nodes: &[NodeSnapshot]) -> bool {
    let Replacement::Launched { instances } = &record.replacement else { return false };
    instances.iter().all(|i| nodes.iter().any(|n| n.instance_id() == Some(i.instance_id.as_str()) && n.ready))
}
