//! Executing a launch operation: one CreateFleet `instant` per zone over the pool's instance
//! types, spot first, on-demand for what spot did not fill in the same pass, short offerings
//! (instance type, zone, market) remembered, and a resume path that never launches twice: it
//! adopts what the op launched, or re-issues exactly the call whose outcome is unknown.

use std::collections::HashMap;
use std::time::Duration;

use tracing::{info, warn};

use super::outcome::{Fresh, ReconcileError};
use super::steps::Steps;
use crate::adapters::dynamodb::store::LeaseAction;
use crate::adapters::kube::cluster::{NodeEvent, NodeSnapshot};
use crate::adapters::{AuditEvent, ComputeError, FleetOverride, FleetSpec, Lease};
use crate::config::PoolConfig;
use crate::core::model::{
    CapacityBackoff, Direction, FailedAttempt, LastScale, LaunchOp, LaunchPhase, LaunchRequest,
    LaunchedInstance, Market, Operation, OperationKind, PoolPolicy, PoolState,
};
use crate::core::offerings;
use crate::core::time::Timestamp;
use crate::metrics::OperationLabels;

impl Steps {
    /// Runs (or resumes) the launch in `state.op` and records its outcome under `lease`.
    pub(super) async fn run_launch(
        &self,
        policy: &PoolPolicy,
        lease: &Lease,
        mut state: PoolState,
        fresh: Fresh,
    ) -> Result<(), ReconcileError> {
        let pool = policy.name.as_str();
        let Some(mut op) = state.op.clone() else { return Ok(()) };
        let OperationKind::Launch(launch) = &op.kind else { return Ok(()) };
        let mut launch: LaunchOp = launch.clone();
        let compute = &self.edges.compute;
        let pool_config = &self.config.pools[pool];

        if launch.phase == LaunchPhase::Requested {
            // After a crash or an unknown outcome, instances of this op may already exist:
            // adopt them (EC2's ClientToken makes a repeated CreateFleet return them too).
            let existing = match fresh {
                Fresh::Yes => Vec::new(),
                Fresh::No => compute.find_by_op(&op.id).await?,
            };
            let mut errors = Vec::new();
            let mut unknown_outcome = false;
            for (index, request) in launch.requests.clone().iter().enumerate() {
                let in_zone =
                    |launch: &LaunchOp| launch.instances.iter().filter(|i| i.az == request.az).count() as u32;
                if in_zone(&launch) >= request.count {
                    continue; // launched and recorded by an earlier pass
                }
                let adopted: Vec<_> = existing
                    .iter()
                    .filter(|i| {
                        i.az == request.az && !launch.instances.iter().any(|l| l.instance_id == i.instance_id)
                    })
                    .collect();
                if !adopted.is_empty() {
                    info!(pool, op_id = %op.id, az = %request.az, count = adopted.len(), "adopting instances of an earlier attempt");
                    launch.instances.extend(adopted.into_iter().map(|i| LaunchedInstance {
                        instance_id: i.instance_id.clone(),
                        az: i.az.clone(),
                        market: i.market,
                        instance_type: i.instance_type.clone(),
                    }));
                    continue;
                }
                // A market EC2 refused (or filled only in part) is not asked again; the first
                // one left is either new or the call whose outcome is unknown, re-issued as it
                // was (same ClientToken, same count).
                let failed =
                    |m: &Market| launch.failed.contains(&FailedAttempt { request: index, market: *m });
                let markets: Vec<Market> = request.markets.iter().filter(|m| !failed(m)).copied().collect();
                if markets.is_empty() {
                    errors.push(format!("{}: every market failed", request.az));
                }
                for (position, market) in markets.iter().enumerate() {
                    if position > 0 {
                        // Written ahead (fenced): the previous market is known to be done, so a
                        // resumed pass starts from this one, never from both.
                        op.kind = OperationKind::Launch(launch.clone());
                        state.op = Some(op.clone());
                        self.save_state(lease, &state, None, LeaseAction::Extend).await?;
                    }
                    let call = FleetCall {
                        pool,
                        config: pool_config,
                        op_id: &op.id,
                        client_token: format!("{}-{index}-{}", op.id, market.as_str()),
                        request,
                        count: request.count - in_zone(&launch),
                        market: *market,
                    };
                    match self.launch_fleet(&call, &state.backoffs).await {
                        Ok(outcome) => {
                            let now = self.now();
                            for short in outcome.short {
                                offerings::remember(&mut state.backoffs, short, now);
                            }
                            errors.extend(outcome.errors);
                            launch.instances.extend(outcome.instances);
                            if in_zone(&launch) >= request.count {
                                break;
                            }
                            // Short of instances: the next market gets the rest.
                            launch.failed.push(FailedAttempt { request: index, market: *market });
                        }
                        Err(error) => {
                            // Capacity and rejections both move on to the next market and are
                            // remembered, so a broken spot setup (or template) is not retried on
                            // every sweep; an unknown outcome stops here and is resumed.
                            let next_market = matches!(
                                error,
                                ComputeError::Capacity { .. } | ComputeError::Rejected { .. }
                            );
                            if next_market {
                                launch.failed.push(FailedAttempt { request: index, market: *market });
                                let now = self.now();
                                for short in call.refused(&state.backoffs, &error.code(), now) {
                                    offerings::remember(&mut state.backoffs, short, now);
                                }
                            }
                            unknown_outcome |= matches!(error, ComputeError::Unavailable { .. });
                            errors.push(error.to_string());
                            if !next_market {
                                break;
                            }
                        }
                    }
                }
            }
            let now = self.now();
            if unknown_outcome && now < op.deadline {
                // EC2 may have launched: keep the op, let the next sweep look for its instances
                // (or re-issue the same call). Also when another zone did launch: marked
                // launched now, a late instance of the unknown call would never be counted.
                op.kind = OperationKind::Launch(launch);
                state.op = Some(op);
                self.save_state(lease, &state, None, LeaseAction::Release).await?;
                return Ok(());
            }
            launch.phase = LaunchPhase::Launched;
            if launch.instances.is_empty() {
                let reason = format!("launch failed: {}", errors.join("; "));
                return self.finish_launch(pool, lease, state, &op.id, launch, "failed", reason).await;
            }
            op.kind = OperationKind::Launch(launch.clone());
            state.op = Some(op.clone());
            if self.edges.cluster.is_some() {
                // Done only when the nodes are Ready: the sweeper comes back for them.
                self.save_state(lease, &state, None, LeaseAction::Release).await?;
                return Ok(());
            }
        }
        if self.edges.cluster.is_none() {
            // Without the Kubernetes side, a launch is done once EC2 accepted it.
            let reason = format!("launched {}", ids(&launch).join(", "));
            return self.finish_launch(pool, lease, state, &op.id, launch, "succeeded", reason).await;
        }
        self.await_join(policy, lease, state, op, launch).await
    }

    /// Whether `op` is a launch whose nodes are not all Ready yet and whose deadline has not
    /// passed: a read-only check, so waiting passes take no lease and write nothing.
    pub(super) async fn still_joining(
        &self,
        policy: &PoolPolicy,
        op: &Operation,
        now: Timestamp,
    ) -> Result<bool, ReconcileError> {
        let (OperationKind::Launch(launch), Some(cluster)) = (&op.kind, &self.edges.cluster) else {
            return Ok(false);
        };
        if launch.phase != LaunchPhase::Launched || now >= op.deadline {
            return Ok(false);
        }
        let nodes = cluster.pool_nodes(&policy.name).await?;
        let ready = |id: &str| nodes.iter().any(|n| n.instance_id() == Some(id) && n.ready);
        Ok(!launch.instances.iter().all(|i| ready(&i.instance_id)))
    }

    /// Finishes the launch once every instance is a Ready node; past the deadline, terminates
    /// the instances that did not join and backs off their offering (type, zone, market).
    async fn await_join(
        &self,
        policy: &PoolPolicy,
        lease: &Lease,
        mut state: PoolState,
        op: Operation,
        launch: LaunchOp,
    ) -> Result<(), ReconcileError> {
        let pool = policy.name.as_str();
        let Some(cluster) = self.edges.cluster.clone() else { return Ok(()) };
        let nodes: HashMap<String, NodeSnapshot> = cluster
            .pool_nodes(pool)
            .await?
            .into_iter()
            .filter_map(|n| n.instance_id().map(|id| (id.to_string(), n.clone())))
            .collect();
        let now = self.now();
        let ready = |i: &LaunchedInstance| nodes.get(&i.instance_id).is_some_and(|n| n.ready);
        let (joined, waiting): (Vec<&LaunchedInstance>, Vec<&LaunchedInstance>) =
            launch.instances.iter().partition(|i| ready(i));
        if !waiting.is_empty() && now < op.deadline {
            self.save_state(lease, &state, None, LeaseAction::Release).await?;
            return Ok(());
        }
        let took = humantime::format_duration(Duration::from_secs(now.since(op.started_at).as_secs()));
        for instance in &joined {
            let node = &nodes[&instance.instance_id].name;
            let launched = format!(
                "instance {} ({}, {}) launched by {}: {}",
                instance.instance_id, instance.az, instance.market, op.id, op.reason
            );
            cluster.node_event(node, NodeEvent::ScaleUpLaunched, &launched).await;
            cluster.node_event(node, NodeEvent::NodeJoined, &format!("Ready {took} after launch")).await;
        }
        if waiting.is_empty() {
            let reason = format!("{} Ready {took} after launch", ids(&launch).join(", "));
            return self.finish_launch(pool, lease, state, &op.id, launch, "succeeded", reason).await;
        }
        let unjoined: Vec<String> = waiting.iter().map(|i| i.instance_id.clone()).collect();
        self.fence(lease, "TerminateInstances").await?;
        if let Err(error) = self.edges.compute.terminate(&unjoined).await {
            self.metrics.aws_error("TerminateInstances", error.code());
            warn!(pool, op_id = %op.id, %error, "cannot terminate instances that did not join; retrying");
            self.save_state(lease, &state, None, LeaseAction::Release).await?;
            return Ok(());
        }
        let backoff = self.config.pools[pool].capacity_backoff;
        for instance in &waiting {
            let failed = CapacityBackoff {
                instance_type: instance.instance_type.clone(),
                az: instance.az.clone(),
                market: instance.market,
                until: now.plus(backoff),
                code: "JoinTimeout".into(),
            };
            offerings::remember(&mut state.backoffs, failed, now);
            if let Some(node) = nodes.get(&instance.instance_id) {
                let message = format!(
                    "not Ready within {}; instance {} terminated",
                    humantime::format_duration(policy.join_timeout),
                    instance.instance_id
                );
                cluster.node_event(&node.name, NodeEvent::NodeJoinTimeout, &message).await;
            }
        }
        let reason = format!(
            "{} did not become Ready within {}; terminated",
            unjoined.join(", "),
            humantime::format_duration(policy.join_timeout)
        );
        self.finish_launch(pool, lease, state, &op.id, launch, "join_timeout", reason).await
    }

    #[allow(clippy::too_many_arguments)]
    async fn finish_launch(
        &self,
        pool: &str,
        lease: &Lease,
        mut state: PoolState,
        op_id: &str,
        launch: LaunchOp,
        outcome: &'static str,
        reason: String,
    ) -> Result<(), ReconcileError> {
        let now = self.now();
        let started_at = state.op.as_ref().map(|op| op.started_at).unwrap_or(now);
        state.op = None;
        if outcome != "failed" {
            state.last_scale = Some(LastScale { at: now, direction: Direction::Up });
        }
        let workers = self.edges.compute.list_pool(pool).await.ok().map(|w| w.len() as u32);
        self.save_state(lease, &state, workers, LeaseAction::Release).await?;
        let labels = OperationLabels { pool: pool.to_string(), kind: "launch", outcome };
        self.metrics.operations.get_or_create(&labels).inc();
        self.metrics.operation_duration.get_or_create(&labels).observe(now.since(started_at).as_secs_f64());
        info!(pool, op_id, outcome, instances = ?ids(&launch), %reason, "launch finished");
        self.record(AuditEvent {
            at: now,
            pool: pool.to_string(),
            kind: "outcome".into(),
            action: "launch".into(),
            reason_label: outcome.into(),
            reason,
            op_id: Some(op_id.to_string()),
            detail: serde_json::json!({ "instances": launch.instances }),
            dry_run: false,
        })
        .await;
        Ok(())
    }
}

/// One CreateFleet call of a launch (or interruption replacement): `count` instances of
/// `request` in `market`, over the pool's instance types still open in that zone.
pub(super) struct FleetCall<'a> {
    pub pool: &'a str,
    pub config: &'a PoolConfig,
    pub op_id: &'a str,
    pub client_token: String,
    pub request: &'a LaunchRequest,
    pub count: u32,
    pub market: Market,
}

impl FleetCall<'_> {
    /// The request: one override per open (type, subnet) of the zone, or `None` when every
    /// offering there is backed off.
    fn spec(&self, backoffs: &[CapacityBackoff], now: Timestamp) -> Option<FleetSpec> {
        let open =
            offerings::open_types(&self.config.instance_types, &self.request.az, self.market, backoffs, now);
        (!open.is_empty()).then(|| FleetSpec {
            pool: self.pool.to_string(),
            op_id: self.op_id.to_string(),
            client_token: self.client_token.clone(),
            az: self.request.az.clone(),
            count: self.count,
            market: self.market,
            overrides: open
                .into_iter()
                .map(|instance_type| FleetOverride {
                    instance_type,
                    subnet_id: self.request.subnet_id.clone(),
                })
                .collect(),
            launch_template: self.config.launch_template.clone(),
            launch_template_version: self.config.launch_template_version.clone(),
        })
    }

    /// The offerings to remember when EC2 refused the whole request with `code`.
    fn refused(&self, backoffs: &[CapacityBackoff], code: &str, now: Timestamp) -> Vec<CapacityBackoff> {
        offerings::open_types(&self.config.instance_types, &self.request.az, self.market, backoffs, now)
            .into_iter()
            .map(|instance_type| self.backoff(instance_type, code, now))
            .collect()
    }

    fn backoff(&self, instance_type: Option<String>, code: &str, now: Timestamp) -> CapacityBackoff {
        CapacityBackoff {
            instance_type,
            az: self.request.az.clone(),
            market: self.market,
            until: now.plus(self.config.capacity_backoff),
            code: code.to_string(),
        }
    }
}

/// What one fleet call produced.
pub(super) struct FleetOutcome {
    /// Instances launched.
    pub instances: Vec<LaunchedInstance>,
    /// Offerings EC2 answered an error for, to remember for `capacity_backoff`.
    pub short: Vec<CapacityBackoff>,
    /// One line per offering error, for the outcome record.
    pub errors: Vec<String>,
}

impl Steps {
    /// Issues `call` as one CreateFleet `instant`, reads its per-offering errors (counted by
    /// code) and returns what launched and which offerings to skip next time.
    pub(super) async fn launch_fleet(
        &self,
        call: &FleetCall<'_>,
        backoffs: &[CapacityBackoff],
    ) -> Result<FleetOutcome, ComputeError> {
        let now = self.now();
        let Some(spec) = call.spec(backoffs, now) else {
            return Ok(FleetOutcome {
                instances: Vec::new(),
                short: Vec::new(),
                errors: vec![format!("{} {}: every offering is backed off", call.request.az, call.market)],
            });
        };
        let answer = match self.edges.compute.launch(&spec).await {
            Ok(answer) => answer,
            Err(error) => {
                self.metrics.aws_error("CreateFleet", error.code());
                warn!(pool = call.pool, op_id = call.op_id, az = %spec.az, market = %spec.market, %error, "fleet request failed");
                return Err(error);
            }
        };
        let mut short = Vec::new();
        let mut errors = Vec::new();
        for error in &answer.errors {
            self.metrics.aws_error("CreateFleet", error.code.clone());
            let offering = error.instance_type.as_deref().unwrap_or("template type");
            errors
                .push(format!("{offering} {} {}: {} ({})", spec.az, spec.market, error.code, error.message));
            short.push(call.backoff(error.instance_type.clone(), &error.code, now));
        }
        if answer.instances.is_empty() && answer.errors.is_empty() {
            errors.push(format!("{} {}: no instance and no error in the answer", spec.az, spec.market));
        }
        info!(pool = call.pool, op_id = call.op_id, az = %spec.az, market = %spec.market,
              asked = spec.count, offerings = spec.overrides.len(),
              instances = ?answer.instances.iter().map(|i| &i.instance_id).collect::<Vec<_>>(),
              errors = ?errors, "fleet answered");
        let instances = answer
            .instances
            .into_iter()
            .map(|i| LaunchedInstance {
                instance_id: i.instance_id,
                az: i.az,
                market: spec.market,
                instance_type: i.instance_type,
            })
            .collect();
        Ok(FleetOutcome { instances, short, errors })
    }
}

fn ids(launch: &LaunchOp) -> Vec<String> {
    launch.instances.iter().map(|i| i.instance_id.clone()).collect()
}
