//! The interrupt worker's steps for one open `interrupt#<instance-id>` record: launch the
//! replacement, evict (for a spot warning the candidate rules do not apply; for a rebalance
//! they do, and a blocker holds the drain; PDBs always apply, through the Eviction API), then
//! terminate and delete the node — or, past the deadline, report what could not move.

use tracing::{info, warn};

use super::InterruptWorker;
use crate::adapters::kube::cluster::{EvictOutcome, NodeEvent, NodeSnapshot};
use crate::adapters::{ComputeError, StoreError};
use crate::core::drainability::PodFacts;
use crate::core::interruption::{
    InterruptPhase, InterruptStep, Interruption, LaunchClaim, Replacement, StepFacts, drain_hold,
    launch_claimed_by_other, markets_left, next_step, replacement_fits,
};
use crate::core::model::{LaunchedInstance, PoolState};
use crate::metrics::OperationLabels;
use crate::service::interrupt::describe;
use crate::service::launch::FleetCall;
use crate::service::outcome::ReconcileError;

impl InterruptWorker {
    /// One pass over every open interruption; returns whether any is still open.
    pub(in crate::service) async fn progress_interruptions(&self) -> Result<bool, ReconcileError> {
        if self.steps.config.dry_run {
            return Ok(false);
        }
        let open = self.steps.edges.store.open_interruptions().await?;
        let mut still_open = false;
        for (record, version) in open {
            let instance = record.instance_id.clone();
            match self.progress_interruption(record, version).await {
                Ok(open) => still_open |= open,
                Err(error) => {
                    still_open = true;
                    self.steps.count_error(&error);
                    warn!(%instance, %error, "interruption step failed; retrying");
                }
            }
        }
        Ok(still_open)
    }

    /// Takes the next step of one record; returns whether it is still open.
    async fn progress_interruption(
        &self,
        record: Interruption,
        version: u64,
    ) -> Result<bool, ReconcileError> {
        let cluster = self.steps.edges.cluster.clone();
        let pods: Vec<PodFacts> = match (&cluster, &record.node) {
            // Live, not from the watch cache: this list decides when the instance is terminated.
            (Some(cluster), Some(node)) => cluster.node_pods(node).await?,
            _ => Vec::new(),
        };
        let to_move: Vec<&PodFacts> = pods.iter().filter(|p| p.must_move()).collect();
        let now = self.steps.now();
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
            min: self.steps.config.pools.get(&record.pool).map_or(0, |p| p.min),
            hold: drain_hold(own.is_some_and(|n| n.scale_down_disabled), &pods),
            launch_claimed_elsewhere: launch_claimed_by_other(&record, &self.steps.owner, now),
        };
        match next_step(&record, &facts, now) {
            InterruptStep::Launch => self.launch_replacement(record, version).await,
            InterruptStep::WaitForLaunch => Ok(true),
            InterruptStep::WaitForReplacement => Ok(true),
            InterruptStep::Evict => {
                // The notice's cordon may have failed, or something uncordoned the node since
                // (an operator; a view read from a watch cache may not show it yet): cordon on
                // every round, right before evicting, whatever the pool's list says. A node
                // missing from that list (its pool label removed by hand) is still this
                // instance's node. A Node already deleted has nothing left to cordon.
                if let (Some(cluster), Some(node)) = (&cluster, &record.node) {
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
                self.steps.metrics.interruption_stranded_pods.inc_by(stranded.len() as u64);
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
        self.steps.edges.compute.terminate(std::slice::from_ref(&record.instance_id)).await?;
        if let (Some(cluster), Some(node)) = (&self.steps.edges.cluster, &record.node) {
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
        if !self.steps.save_interruption(&record, version).await? {
            return Ok(false);
        }
        let labels = OperationLabels { pool: record.pool.clone(), kind: "interruption", outcome };
        self.steps.metrics.operations.get_or_create(&labels).inc();
        let took = self.steps.now().since(record.received_at).as_secs_f64();
        self.steps.metrics.operation_duration.get_or_create(&labels).observe(took);
        info!(pool = %record.pool, instance = %record.instance_id, outcome, %reason, "interruption handled");
        self.steps.audit_interrupt(&record, "outcome", "interrupt", outcome, reason, false).await;
        Ok(false)
    }

    /// The replacement launch step, under the pool's lease for just this step: a pool
    /// scale-up and a replacement never decide on the same count, so together they never pass
    /// `max`. A pool busy this moment is asked again on the next pass (within seconds).
    async fn launch_replacement(&self, record: Interruption, version: u64) -> Result<bool, ReconcileError> {
        let store = &self.steps.edges.store;
        let ttl = self.steps.config.timing.lease_ttl;
        let (lease, pool) = match store.acquire(&record.pool, &self.steps.owner, self.steps.now(), ttl).await
        {
            Ok(taken) => taken,
            Err(StoreError::Contended { .. }) => return Ok(true),
            Err(error) => return Err(error.into()),
        };
        let result = self.launch_replacement_leased(record, version, &pool.state).await;
        if let Err(error) = store.release(&lease).await {
            warn!(pool = %lease.pool, %error, "pool lease not released after the replacement step; it expires");
        }
        result
    }

    /// CreateFleet for the planned replacement, market by market over the pool's open
    /// instance types, under this replica's launch claim. First a replacement EC2 already
    /// holds (tagged with the launch id: an answer lost earlier) is adopted, and `max` is
    /// checked again against the pool as EC2 lists it now. Each request is preceded by a
    /// version-checked write naming its market, so a replica that lost the record to another
    /// stops before asking, and a later pass resumes at the market that may have been sent.
    /// The ClientToken is derived from the interrupted instance and the market, so a repeat
    /// returns the same instance instead of a new one.
    async fn launch_replacement_leased(
        &self,
        mut record: Interruption,
        mut version: u64,
        pool_state: &PoolState,
    ) -> Result<bool, ReconcileError> {
        let Replacement::Planned { request, asking } = record.replacement.clone() else { return Ok(true) };
        let Some(pool_config) = self.steps.config.pools.get(&record.pool) else {
            let why = format!("pool {} is no longer configured", record.pool);
            return self.record_replacement(record, version, Replacement::Failed { why }).await;
        };
        let launch_id = record.launch_id();
        let instances = self.steps.edges.compute.list_pool(&record.pool).await?;
        let (own, others): (Vec<_>, Vec<_>) =
            instances.into_iter().partition(|i| i.op_id.as_deref() == Some(launch_id.as_str()));
        if !own.is_empty() {
            let adopted = own
                .into_iter()
                .map(|i| LaunchedInstance {
                    instance_id: i.instance_id,
                    az: i.az,
                    market: i.market,
                    instance_type: i.instance_type,
                })
                .collect();
            return self
                .record_replacement(record, version, Replacement::Launched { instances: adopted })
                .await;
        }
        let staying = others.iter().filter(|i| i.instance_id != record.instance_id).count();
        if let Err(why) = replacement_fits(staying, pool_state, pool_config.max) {
            info!(instance = %record.instance_id, %why, "replacement no longer fits the pool");
            return self.record_replacement(record, version, Replacement::Skipped { why }).await;
        }
        let launch_id = record.launch_id();
        let mut errors = Vec::new();
        for &market in markets_left(&request, asking) {
            record.replacement = Replacement::Planned { request: request.clone(), asking: Some(market) };
            record.launch_claim = Some(LaunchClaim {
                owner: self.steps.owner.clone(),
                until: self.steps.now().plus(self.steps.config.timing.lease_ttl),
            });
            if !self.steps.save_interruption(&record, version).await? {
                info!(instance = %record.instance_id, %market, "replacement launch taken over by another replica");
                return Ok(true);
            }
            version += 1;
            let call = FleetCall {
                pool: &record.pool,
                config: pool_config,
                op_id: &launch_id,
                client_token: format!("{launch_id}-{}", market.as_str()),
                request: &request,
                count: request.count,
                market,
            };
            match self.steps.launch_fleet(&call, &[]).await {
                Ok(outcome) if !outcome.instances.is_empty() => {
                    let launched = Replacement::Launched { instances: outcome.instances };
                    return self.record_replacement(record, version, launched).await;
                }
                Ok(outcome) => {
                    warn!(instance = %record.instance_id, az = %request.az, %market, errors = ?outcome.errors, "replacement not launched");
                    errors.extend(outcome.errors);
                }
                Err(error) => {
                    let unknown = matches!(error, ComputeError::Unavailable { .. });
                    errors.push(error.to_string());
                    if unknown && self.steps.now() < record.deadline {
                        // EC2 may have launched it: the next pass asks this market again with
                        // the same ClientToken. The claim goes so any replica may.
                        record.launch_claim = None;
                        self.steps.save_interruption(&record, version).await?;
                        return Ok(true);
                    }
                    if unknown {
                        // Past the deadline and EC2 may have launched it: another market
                        // would be a second replacement.
                        break;
                    }
                }
            }
        }
        self.record_replacement(record, version, Replacement::Failed { why: errors.join("; ") }).await
    }

    /// Writes the replacement's outcome (releasing the launch claim) and audits it; the drain
    /// goes on at once, while the replacement boots.
    async fn record_replacement(
        &self,
        mut record: Interruption,
        version: u64,
        replacement: Replacement,
    ) -> Result<bool, ReconcileError> {
        let outcome = match replacement {
            Replacement::Launched { .. } => "succeeded",
            Replacement::Skipped { .. } => "skipped",
            Replacement::Planned { .. } | Replacement::Failed { .. } => "failed",
        };
        record.replacement = replacement;
        record.launch_claim = None;
        let reason = describe(&record);
        if self.steps.save_interruption(&record, version).await? {
            self.steps.audit_interrupt(&record, "outcome", "replace", outcome, reason, false).await;
        }
        self.wake.notify_one();
        Ok(true)
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
