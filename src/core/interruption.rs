//! Spot interruptions and rebalance recommendations: what to do with the doomed node and
//! whether to launch a replacement, decided from plain data like every other decision.
//!
//! An interruption is not a pool operation: it cannot wait for one (the notice is two
//! minutes), so it is planned here without the one-op rule, and recorded in its own
//! `interrupt#<instance-id>` item (see `service::interrupt`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::drainability::{Blocker, PodFacts, pod_blocker};
use super::model::{
    LaunchPhase, LaunchRequest, LaunchedInstance, Market, OperationKind, PoolPolicy, PoolState, Worker,
};
use super::placement::plan_launch;
use super::time::Timestamp;

/// EC2's spot interruption notice: the instance goes this long after the warning.
pub const SPOT_NOTICE: Duration = Duration::from_secs(120);

/// What a Rebalance Recommendation does (`interruption.rebalance`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RebalanceMode {
    /// Acknowledge and ignore.
    Off,
    /// Cordon the node so nothing new lands on it; leave its pods.
    CordonOnly,
    /// Launch a replacement, wait for it to be Ready, then drain the node.
    Replace,
}

/// Which notice an interruption came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InterruptKind {
    /// Spot Instance Interruption Warning: two minutes left.
    Spot,
    /// Rebalance Recommendation: elevated risk, no deadline from EC2.
    Rebalance,
}

impl InterruptKind {
    /// Label for metrics and records.
    pub fn label(self) -> &'static str {
        match self {
            InterruptKind::Spot => "spot_interruption",
            InterruptKind::Rebalance => "rebalance_recommendation",
        }
    }
}

/// Why no replacement is launched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "skip", rename_all = "kebab-case")]
pub enum ReplacementSkip {
    /// The configured handling does not replace (cordon-only).
    NotWanted,
    /// The pool would exceed `max` even with the interrupted node counted as leaving.
    AtMax {
        /// Workers staying (interrupted one excluded) plus launches in flight.
        staying: usize,
        /// The pool's maximum.
        max: u32,
    },
    /// Every zone's allowed markets are backed off.
    NoCapacity,
}

impl fmt::Display for ReplacementSkip {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ReplacementSkip::NotWanted => write!(f, "no replacement wanted"),
            ReplacementSkip::AtMax { staying, max } => {
                write!(f, "no replacement: {staying} staying workers is at max {max}")
            }
            ReplacementSkip::NoCapacity => write!(f, "no replacement: every zone and market is backed off"),
        }
    }
}

/// The replacement's progress, stored in the interruption record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "kebab-case")]
pub enum Replacement {
    /// Not launched, and not going to be.
    Skipped {
        /// Why.
        why: ReplacementSkip,
    },
    /// Chosen; CreateFleet is issued next (its ClientToken makes a repeat harmless).
    Planned {
        /// Zone, subnet and markets.
        request: LaunchRequest,
        /// The market whose request may have been sent, written before it is sent: a later
        /// pass (of any replica) asks this market again with the same ClientToken and moves
        /// on to the next only once this one's failure is known, so one interruption never
        /// gets replacements in two markets.
        #[serde(default)]
        asking: Option<Market>,
    },
    /// EC2 answered with these instances.
    Launched {
        /// The replacement.
        instances: Vec<LaunchedInstance>,
    },
    /// Every market failed.
    Failed {
        /// The errors.
        why: String,
    },
}

impl fmt::Display for Replacement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Replacement::Planned { request, .. } => {
                let markets: Vec<&str> = request.markets.iter().map(|m| m.as_str()).collect();
                write!(f, "replacement in {} ({})", request.az, markets.join(" then "))
            }
            Replacement::Launched { instances } => {
                let ids: Vec<&str> = instances.iter().map(|i| i.instance_id.as_str()).collect();
                write!(f, "replacement {}", ids.join(", "))
            }
            Replacement::Skipped { why } => write!(f, "{why}"),
            Replacement::Failed { why } => write!(f, "replacement failed: {why}"),
        }
    }
}

/// Where an interruption stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum InterruptPhase {
    /// Being handled: replacement and/or drain still to do.
    Open,
    /// Finished; kept so a repeated event is recognised.
    Done,
}

/// The durable record of one interrupted instance (`interrupt#<instance-id>`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Interruption {
    /// The doomed instance; also the record's key.
    pub instance_id: String,
    /// Its pool.
    pub pool: String,
    /// Its zone.
    pub az: String,
    /// Its market.
    pub market: Market,
    /// Its node, if it has one.
    pub node: Option<String>,
    /// Which notice.
    pub kind: InterruptKind,
    /// Whether its pods are evicted (false: cordon only).
    pub drain: bool,
    /// When the notice arrived.
    pub received_at: Timestamp,
    /// Spot: the reclaim time. Rebalance: when waiting for the replacement and drain stops.
    pub deadline: Timestamp,
    /// The replacement.
    pub replacement: Replacement,
    /// Open or done.
    pub phase: InterruptPhase,
    /// How it ended, once done.
    #[serde(default)]
    pub outcome: Option<String>,
    /// When a rebalance recommendation opened it, if a spot warning upgraded it since.
    #[serde(default)]
    pub rebalanced_at: Option<Timestamp>,
    /// The replica sending the replacement's CreateFleet, while it does.
    #[serde(default)]
    pub launch_claim: Option<LaunchClaim>,
}

/// One replica's hold on the replacement launch step, written (version-checked) before its
/// first CreateFleet and kept until the outcome is written. Others wait for it, so two
/// replicas never ask at once: EC2's ClientToken only makes a repeat of a request that
/// *succeeded* harmless, and a concurrent copy that failed would move the other replica on
/// to the next market. It expires after `timing.lease_ttl`, like a pool lease, so a replica
/// that died holding it delays the replacement, never blocks it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchClaim {
    /// The holder's lease owner id.
    pub owner: String,
    /// When others may take over.
    pub until: Timestamp,
}

/// Whether another replica holds an unexpired claim on the replacement launch.
pub fn launch_claimed_by_other(record: &Interruption, owner: &str, now: Timestamp) -> bool {
    record.launch_claim.as_ref().is_some_and(|claim| claim.owner != owner && claim.until > now)
}

/// The markets still to ask, in order: from the one that may have been sent (asked again with
/// the same ClientToken) onwards, or all of them before the first request.
pub fn markets_left(request: &LaunchRequest, asking: Option<Market>) -> &[Market] {
    let start = asking.and_then(|m| request.markets.iter().position(|&x| x == m)).unwrap_or(0);
    &request.markets[start..]
}

impl Interruption {
    /// Id of the replacement launch: `ClientToken` prefix and `op-id` tag, so a retried or
    /// duplicated handling launches nothing new.
    pub fn launch_id(&self) -> String {
        format!("interrupt-{}", self.instance_id)
    }
}

/// The facts an interruption is decided on.
#[derive(Debug, Clone, Copy)]
pub struct InterruptInput<'a> {
    /// Which notice.
    pub kind: InterruptKind,
    /// How rebalance recommendations are handled.
    pub rebalance: RebalanceMode,
    /// The interrupted worker.
    pub interrupted: &'a Worker,
    /// Every pending or running managed worker of its pool, the interrupted one included.
    pub workers: &'a [Worker],
    /// The pool's durable state (backoffs, in-flight launch).
    pub state: &'a PoolState,
    /// The pool's limits.
    pub policy: &'a PoolPolicy,
    /// Now.
    pub now: Timestamp,
}

/// What to do about a notice; `None` from [`plan_interruption`] means ignore it.
#[derive(Debug, Clone, PartialEq)]
pub struct InterruptPlan {
    /// The record to write, open, with its replacement chosen.
    pub record: Interruption,
}

/// Plans the handling of a notice for a managed worker: spot → drain now and replace;
/// rebalance → by `rebalance` mode. Returns `None` when the mode is `off`.
pub fn plan_interruption(input: InterruptInput<'_>) -> Option<InterruptPlan> {
    let InterruptInput { kind, rebalance, interrupted, workers, state, policy, now } = input;
    let (drain, replace, deadline) = match (kind, rebalance) {
        (InterruptKind::Spot, _) => (true, true, now.plus(SPOT_NOTICE)),
        (InterruptKind::Rebalance, RebalanceMode::Off) => return None,
        (InterruptKind::Rebalance, RebalanceMode::CordonOnly) => (false, false, now),
        (InterruptKind::Rebalance, RebalanceMode::Replace) => {
            (true, true, now.plus(policy.join_timeout + policy.drain_timeout))
        }
    };
    let replacement = if replace {
        match choose_replacement(interrupted, workers, state, policy, now) {
            Ok(request) => Replacement::Planned { request, asking: None },
            Err(why) => Replacement::Skipped { why },
        }
    } else {
        Replacement::Skipped { why: ReplacementSkip::NotWanted }
    };
    Some(InterruptPlan {
        record: Interruption {
            instance_id: interrupted.instance_id.clone(),
            pool: policy.name.clone(),
            az: interrupted.az.clone(),
            market: interrupted.market,
            node: interrupted.node.as_ref().map(|n| n.name.clone()),
            kind,
            drain,
            received_at: now,
            deadline,
            replacement,
            phase: InterruptPhase::Open,
            outcome: None,
            rebalanced_at: None,
            launch_claim: None,
        },
    })
}

/// A spot warning for an instance that already has a record: the upgraded record to write,
/// or `None` when the notice changes nothing (a repeat, a rebalance after anything, a
/// warning after a warning).
///
/// EC2 usually sends the rebalance recommendation first. Whatever that did (cordon only,
/// a held or open `replace`, a closed record), the warning turns it into a spot interruption:
/// drain now with the blockers overridden, deadline = warning + [`SPOT_NOTICE`], the record
/// open again. A replacement the rebalance planned, launched or failed to launch is kept:
/// its launch id is the same, so it is never launched twice; only a record without one
/// (`Skipped`) takes the replacement `warning` chose.
pub fn upgrade(existing: &Interruption, warning: &Interruption) -> Option<Interruption> {
    if warning.kind != InterruptKind::Spot || existing.kind != InterruptKind::Rebalance {
        return None;
    }
    let replacement = match &existing.replacement {
        Replacement::Skipped { .. } => warning.replacement.clone(),
        kept => kept.clone(),
    };
    Some(Interruption {
        node: existing.node.clone().or_else(|| warning.node.clone()),
        replacement,
        rebalanced_at: Some(existing.received_at),
        // A replica may be sending the kept replacement's request: the others still wait.
        launch_claim: existing.launch_claim.clone(),
        ..warning.clone()
    })
}

/// One replacement in the least-populated zone, counting the interrupted worker as gone and
/// a launch in flight whose instances EC2 has not returned yet as present; backed-off
/// (zone, market) pairs are skipped, so a zone where spot just failed gets on-demand.
pub fn choose_replacement(
    interrupted: &Worker,
    workers: &[Worker],
    state: &PoolState,
    policy: &PoolPolicy,
    now: Timestamp,
) -> Result<LaunchRequest, ReplacementSkip> {
    let staying: Vec<Worker> =
        workers.iter().filter(|w| w.instance_id != interrupted.instance_id).cloned().collect();
    replacement_fits(staying.len(), state, policy.max)?;
    let backoffs: Vec<_> = state.live_backoffs(now).cloned().collect();
    plan_launch(1, policy, &staying, &backoffs, now).into_iter().next().ok_or(ReplacementSkip::NoCapacity)
}

/// Whether one more instance fits under `max`, with `staying` workers (the interrupted one
/// excluded) and a launch in flight whose instances EC2 has not returned yet counted as
/// present. Checked when the replacement is planned and again, under the pool's lease, right
/// before it is launched: the pool may have scaled up in between.
pub fn replacement_fits(staying: usize, state: &PoolState, max: u32) -> Result<(), ReplacementSkip> {
    let requested = match state.op.as_ref().map(|op| &op.kind) {
        Some(OperationKind::Launch(launch)) if launch.phase == LaunchPhase::Requested => {
            launch.requests.iter().map(|r| r.count as usize).sum()
        }
        _ => 0,
    };
    let counted = staying + requested;
    if counted >= max as usize {
        return Err(ReplacementSkip::AtMax { staying: counted, max });
    }
    Ok(())
}

/// The next thing to do for an open interruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptStep {
    /// Issue the planned replacement launch.
    Launch,
    /// Another replica is sending the replacement's request: look again next pass.
    WaitForLaunch,
    /// Rebalance: the replacement is not Ready yet, or draining now would leave fewer than
    /// `min` Ready nodes; drain later.
    WaitForReplacement,
    /// Pods still have to move: evict them (PDBs may refuse; retried next pass).
    Evict,
    /// Nothing left to move: terminate the instance, delete the Node, close the record.
    Finish,
    /// The deadline passed with pods still on the node: report them, close the record.
    GiveUp,
    /// Cordon-only: close the record, the node stays.
    Close,
    /// Rebalance: a pod (or the node) may not be drained; close the record, the node stays
    /// cordoned with its pods.
    Held,
}

/// What one pass of the interrupt worker sees of the node and its pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StepFacts {
    /// Pods still to move off the node (terminating ones included).
    pub pods_left: usize,
    /// Every replacement instance is a Ready node.
    pub replacement_ready: bool,
    /// Ready, schedulable nodes of the pool other than the interrupted one.
    pub ready_others: usize,
    /// The pool's `min`.
    pub min: u32,
    /// What keeps the node from a scale-down drain, if anything (see [`drain_hold`]).
    pub hold: Option<String>,
    /// Another replica holds the launch claim (see [`launch_claimed_by_other`]).
    pub launch_claimed_elsewhere: bool,
}

/// Chooses the next step. The launch comes first so the replacement boots while the node
/// drains. A spot interruption then evicts past every candidate rule (the instance goes in
/// two minutes regardless; PDBs still apply through the Eviction API). A rebalance — which
/// EC2 cannot confirm and which may never be followed by a reclaim — drains like a
/// scale-down: it stops at the first blocker, waits for its replacement to be Ready and
/// never leaves fewer than `min` Ready nodes.
pub fn next_step(record: &Interruption, facts: &StepFacts, now: Timestamp) -> InterruptStep {
    if matches!(record.replacement, Replacement::Planned { .. }) {
        return if facts.launch_claimed_elsewhere {
            InterruptStep::WaitForLaunch
        } else {
            InterruptStep::Launch
        };
    }
    if !record.drain {
        return InterruptStep::Close;
    }
    let before_deadline = now < record.deadline;
    if record.kind == InterruptKind::Rebalance {
        if facts.hold.is_some() {
            return InterruptStep::Held;
        }
        let booting = matches!(record.replacement, Replacement::Launched { .. }) && !facts.replacement_ready;
        if booting || facts.ready_others < facts.min as usize {
            // A rebalance whose replacement never got Ready leaves its pods where they are.
            return if before_deadline { InterruptStep::WaitForReplacement } else { InterruptStep::GiveUp };
        }
    }
    match (facts.pods_left, before_deadline) {
        (0, _) => InterruptStep::Finish,
        (_, true) => InterruptStep::Evict,
        _ => InterruptStep::GiveUp,
    }
}

/// Why a rebalance may not drain this node, naming the pod: the scale-down candidate rules
/// of `core::drainability`, checked before every eviction round as a scale-down drain does.
/// A PDB that allows no disruption now is not a hold: the Eviction API waits it out.
pub fn drain_hold(scale_down_disabled: bool, pods: &[PodFacts]) -> Option<String> {
    if scale_down_disabled {
        return Some(format!("node: {}", Blocker::ScaleDownDisabled));
    }
    pods.iter().find_map(|pod| match pod_blocker(pod) {
        Some(blocker) if blocker != Blocker::PdbAllowsNoDisruption => {
            Some(format!("{}/{}: {blocker}", pod.namespace, pod.name))
        }
        _ => None,
    })
}

/// Why a notice was not acted on although it names a managed instance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unverified {
    /// EC2 reports the instance as on-demand: neither notice can be about it.
    NotSpot,
    /// A spot warning, but EC2 does not report the instance as marked for interruption.
    NotMarked {
        /// The spot request's status code, if it has a request at all.
        status: Option<String>,
    },
}

impl fmt::Display for Unverified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Unverified::NotSpot => write!(f, "EC2 reports the instance as on-demand, not spot"),
            Unverified::NotMarked { status: Some(code) } => {
                write!(
                    f,
                    "EC2 does not report the instance as marked for interruption (spot request status {code:?})"
                )
            }
            Unverified::NotMarked { status: None } => {
                write!(
                    f,
                    "EC2 reports no spot request for the instance, so it is not marked for interruption"
                )
            }
        }
    }
}

/// Spot request status codes EC2 sets while a running instance is being interrupted:
/// `marked-for-termination` (interruption behaviour terminate) and `marked-for-stop` (stop,
/// and hibernate, which is a stop). The codes of an instance already stopped or terminated
/// never reach here: only pending or running instances are handled.
pub const MARKED_FOR_INTERRUPTION: &[&str] = &["marked-for-termination", "marked-for-stop"];

/// Checks a notice against what EC2 itself says about the instance: its market (from
/// DescribeInstances `InstanceLifecycle`) and, for a spot warning, its spot request's status
/// code (DescribeSpotInstanceRequests). There is no EC2 API that confirms a rebalance
/// recommendation, so for one only the market is checked; what a forged one can do is bounded
/// elsewhere (drain blockers, `min`, [`rebalance_capped`]).
pub fn verify_notice(
    kind: InterruptKind,
    market: Market,
    spot_status: Option<&str>,
) -> Result<(), Unverified> {
    if market != Market::Spot {
        return Err(Unverified::NotSpot);
    }
    match (kind, spot_status) {
        (InterruptKind::Rebalance, _) => Ok(()),
        (InterruptKind::Spot, Some(code)) if MARKED_FOR_INTERRUPTION.contains(&code) => Ok(()),
        (InterruptKind::Spot, status) => Err(Unverified::NotMarked { status: status.map(str::to_string) }),
    }
}

/// Whether a new rebalance notice for `instance_id` must be refused because `cap` other
/// instances of the pool are already taken out of service by one: rebalance records whose
/// instance is still a worker with a cordoned node. Returns how many are, when capped.
pub fn rebalance_capped(
    records: &[Interruption],
    workers: &[Worker],
    instance_id: &str,
    cap: u32,
) -> Option<usize> {
    let busy = records
        .iter()
        .filter(|r| r.kind == InterruptKind::Rebalance && r.instance_id != instance_id)
        .filter(|r| {
            workers
                .iter()
                .any(|w| w.instance_id == r.instance_id && w.node.as_ref().is_some_and(|n| n.cordoned))
        })
        .count();
    (busy >= cap as usize).then_some(busy)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures::{policy, worker};
    use crate::core::model::{CapacityBackoff, LaunchOp, Operation};

    fn plan(
        kind: InterruptKind,
        mode: RebalanceMode,
        workers: &[Worker],
        state: &PoolState,
    ) -> Option<Interruption> {
        plan_interruption(InterruptInput {
            kind,
            rebalance: mode,
            interrupted: &workers[0],
            workers,
            state,
            policy: &policy(),
            now: Timestamp::from_millis(1_000),
        })
        .map(|p| p.record)
    }

    /// A pass with `pods` left, plenty of Ready nodes and nothing holding the drain.
    fn facts(pods: usize, replacement_ready: bool) -> StepFacts {
        StepFacts {
            pods_left: pods,
            replacement_ready,
            ready_others: 3,
            min: 1,
            hold: None,
            launch_claimed_elsewhere: false,
        }
    }

    fn two_in_a() -> Vec<Worker> {
        vec![worker("i-1").spot().node().build(), worker("i-2").node().build()]
    }

    #[test]
    fn spot_interruption_drains_within_the_notice_and_replaces_in_the_emptier_zone() {
        let record =
            plan(InterruptKind::Spot, RebalanceMode::Off, &two_in_a(), &PoolState::default()).unwrap();
        assert!(record.drain);
        assert_eq!(record.deadline, Timestamp::from_millis(121_000));
        assert_eq!(record.node.as_deref(), Some("node-i-1"));
        let Replacement::Planned { request, .. } = &record.replacement else {
            panic!("{:?}", record.replacement)
        };
        assert_eq!((request.az.as_str(), request.count), ("b", 1));
        assert_eq!(request.markets, vec![Market::Spot, Market::OnDemand]);
        assert_eq!(record.launch_id(), "interrupt-i-1");
    }

    #[test]
    fn a_zone_where_spot_just_failed_gets_on_demand() {
        let state = PoolState {
            backoffs: vec![CapacityBackoff {
                instance_type: None,
                code: String::new(),
                az: "b".into(),
                market: Market::Spot,
                until: Timestamp::from_millis(5_000),
            }],
            ..PoolState::default()
        };
        let record = plan(InterruptKind::Spot, RebalanceMode::Off, &two_in_a(), &state).unwrap();
        let Replacement::Planned { request, .. } = record.replacement else { panic!() };
        assert_eq!((request.az.as_str(), request.markets), ("b", vec![Market::OnDemand]));
    }

    #[test]
    fn max_counts_the_interrupted_node_as_leaving_and_in_flight_launches_as_coming() {
        let mut workers = two_in_a();
        workers.extend((3..=5).map(|i| worker(&format!("i-{i}")).in_az("b").node().build()));
        // 5 workers at max 5: the interrupted one leaves, so one replacement fits.
        let record = plan(InterruptKind::Spot, RebalanceMode::Off, &workers, &PoolState::default()).unwrap();
        assert!(matches!(record.replacement, Replacement::Planned { .. }));
        let launching = PoolState {
            op: Some(Operation {
                id: "op-1".into(),
                kind: OperationKind::Launch(LaunchOp {
                    requests: vec![LaunchRequest {
                        az: "a".into(),
                        subnet_id: "s".into(),
                        count: 1,
                        markets: vec![],
                    }],
                    instances: vec![],
                    phase: LaunchPhase::Requested,
                    failed: Vec::new(),
                }),
                reason: String::new(),
                started_at: Timestamp::default(),
                deadline: Timestamp::default(),
            }),
            ..PoolState::default()
        };
        let record = plan(InterruptKind::Spot, RebalanceMode::Off, &workers, &launching).unwrap();
        assert_eq!(
            record.replacement,
            Replacement::Skipped { why: ReplacementSkip::AtMax { staying: 5, max: 5 } }
        );
        // The drain still happens: the node is going regardless.
        assert!(record.drain);
    }

    #[test]
    fn every_market_backed_off_skips_the_replacement_but_still_drains() {
        let until = Timestamp::from_millis(5_000);
        let backoffs = ["a", "b"]
            .iter()
            .flat_map(|az| {
                [Market::Spot, Market::OnDemand].map(|market| CapacityBackoff {
                    instance_type: None,
                    code: String::new(),
                    az: az.to_string(),
                    market,
                    until,
                })
            })
            .collect();
        let state = PoolState { backoffs, ..PoolState::default() };
        let record = plan(InterruptKind::Spot, RebalanceMode::Off, &two_in_a(), &state).unwrap();
        assert_eq!(record.replacement, Replacement::Skipped { why: ReplacementSkip::NoCapacity });
        assert!(record.drain);
    }

    #[test]
    fn rebalance_follows_the_configured_mode() {
        let workers = two_in_a();
        let state = PoolState::default();
        assert_eq!(plan(InterruptKind::Rebalance, RebalanceMode::Off, &workers, &state), None);
        let cordon = plan(InterruptKind::Rebalance, RebalanceMode::CordonOnly, &workers, &state).unwrap();
        assert!(!cordon.drain);
        assert_eq!(cordon.replacement, Replacement::Skipped { why: ReplacementSkip::NotWanted });
        let replace = plan(InterruptKind::Rebalance, RebalanceMode::Replace, &workers, &state).unwrap();
        assert!(replace.drain);
        assert!(matches!(replace.replacement, Replacement::Planned { .. }));
        // join_timeout (10m) + drain_timeout (5m) after receipt.
        assert_eq!(replace.deadline, Timestamp::from_millis(1_000 + 900_000));
    }

    #[test]
    fn the_record_round_trips_through_json() {
        let record =
            plan(InterruptKind::Spot, RebalanceMode::Off, &two_in_a(), &PoolState::default()).unwrap();
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(serde_json::from_str::<Interruption>(&text).unwrap(), record);
    }
    #[test]
    fn steps_launch_first_then_evict_until_empty_or_the_deadline() {
        let mut record =
            plan(InterruptKind::Spot, RebalanceMode::Off, &two_in_a(), &PoolState::default()).unwrap();
        let before = Timestamp::from_millis(60_000);
        let after = Timestamp::from_millis(121_000);
        assert_eq!(next_step(&record, &facts(3, false), before), InterruptStep::Launch);
        record.replacement = Replacement::Launched { instances: vec![] };
        // Spot does not wait for the replacement: the node has two minutes.
        assert_eq!(next_step(&record, &facts(3, false), before), InterruptStep::Evict);
        assert_eq!(next_step(&record, &facts(0, false), before), InterruptStep::Finish);
        assert_eq!(next_step(&record, &facts(2, false), after), InterruptStep::GiveUp);
        assert_eq!(next_step(&record, &facts(0, false), after), InterruptStep::Finish);
        record.replacement = Replacement::Skipped { why: ReplacementSkip::NoCapacity };
        assert_eq!(next_step(&record, &facts(1, false), before), InterruptStep::Evict);
    }

    #[test]
    fn a_launch_claimed_by_another_replica_waits_until_it_expires() {
        let mut record =
            plan(InterruptKind::Spot, RebalanceMode::Off, &two_in_a(), &PoolState::default()).unwrap();
        let now = Timestamp::from_millis(10_000);
        assert!(!launch_claimed_by_other(&record, "me", now), "no claim yet");
        record.launch_claim =
            Some(LaunchClaim { owner: "other".into(), until: Timestamp::from_millis(20_000) });
        assert!(launch_claimed_by_other(&record, "other-not", now));
        assert!(!launch_claimed_by_other(&record, "other", now), "its own claim never blocks a replica");
        assert!(!launch_claimed_by_other(&record, "me", Timestamp::from_millis(20_000)), "expired");
        let claimed = StepFacts { launch_claimed_elsewhere: true, ..facts(3, false) };
        assert_eq!(next_step(&record, &claimed, now), InterruptStep::WaitForLaunch);
        record.replacement = Replacement::Launched { instances: vec![] };
        assert_eq!(next_step(&record, &claimed, now), InterruptStep::Evict, "only the launch step waits");
    }

    #[test]
    fn the_markets_left_start_at_the_one_that_may_have_been_sent() {
        let record =
            plan(InterruptKind::Spot, RebalanceMode::Off, &two_in_a(), &PoolState::default()).unwrap();
        let Replacement::Planned { request, .. } = &record.replacement else { panic!() };
        assert_eq!(markets_left(request, None), [Market::Spot, Market::OnDemand]);
        assert_eq!(markets_left(request, Some(Market::Spot)), [Market::Spot, Market::OnDemand]);
        assert_eq!(markets_left(request, Some(Market::OnDemand)), [Market::OnDemand]);
        let on_demand_only = LaunchRequest { markets: vec![Market::OnDemand], ..request.clone() };
        assert_eq!(markets_left(&on_demand_only, Some(Market::Spot)), [Market::OnDemand], "unknown: all");
    }

    #[test]
    fn a_warning_keeps_the_claim_of_the_replica_launching_the_rebalance_replacement() {
        let mut rebalance =
            plan(InterruptKind::Rebalance, RebalanceMode::Replace, &two_in_a(), &PoolState::default())
                .unwrap();
        let claim = LaunchClaim { owner: "r1".into(), until: Timestamp::from_millis(30_000) };
        rebalance.launch_claim = Some(claim.clone());
        let warning =
            plan(InterruptKind::Spot, RebalanceMode::Off, &two_in_a(), &PoolState::default()).unwrap();
        let upgraded = upgrade(&rebalance, &warning).unwrap();
        assert_eq!(upgraded.launch_claim, Some(claim));
        assert_eq!(upgraded.replacement, rebalance.replacement);
    }

    #[test]
    fn rebalance_replace_drains_only_once_the_replacement_is_ready() {
        let workers = two_in_a();
        let mut record =
            plan(InterruptKind::Rebalance, RebalanceMode::Replace, &workers, &PoolState::default()).unwrap();
        record.replacement = Replacement::Launched { instances: vec![] };
        let now = Timestamp::from_millis(2_000);
        assert_eq!(next_step(&record, &facts(2, false), now), InterruptStep::WaitForReplacement);
        assert_eq!(next_step(&record, &facts(2, true), now), InterruptStep::Evict);
        assert_eq!(next_step(&record, &facts(2, false), record.deadline), InterruptStep::GiveUp);
        let cordon =
            plan(InterruptKind::Rebalance, RebalanceMode::CordonOnly, &workers, &PoolState::default())
                .unwrap();
        assert_eq!(next_step(&cordon, &facts(2, false), now), InterruptStep::Close);
    }

    fn plan_at(kind: InterruptKind, mode: RebalanceMode, now: u64) -> Interruption {
        let workers = two_in_a();
        plan_interruption(InterruptInput {
            kind,
            rebalance: mode,
            interrupted: &workers[0],
            workers: &workers,
            state: &PoolState::default(),
            policy: &policy(),
            now: Timestamp::from_millis(now),
        })
        .unwrap()
        .record
    }

    #[test]
    fn a_spot_warning_upgrades_a_cordon_only_rebalance_open_or_closed() {
        let warning = plan_at(InterruptKind::Spot, RebalanceMode::Off, 60_000);
        let mut cordoned = plan_at(InterruptKind::Rebalance, RebalanceMode::CordonOnly, 1_000);
        for phase in [InterruptPhase::Open, InterruptPhase::Done] {
            cordoned.phase = phase;
            cordoned.outcome = (phase == InterruptPhase::Done).then(|| "cordoned".into());
            let up = upgrade(&cordoned, &warning).expect("upgraded");
            assert_eq!((up.kind, up.drain, up.phase), (InterruptKind::Spot, true, InterruptPhase::Open));
            assert_eq!(up.deadline, Timestamp::from_millis(60_000).plus(SPOT_NOTICE), "warning + 2 min");
            assert_eq!(up.outcome, None);
            assert_eq!(up.rebalanced_at, Some(Timestamp::from_millis(1_000)));
            // Cordon-only had no replacement: the warning's choice is taken.
            assert_eq!(up.replacement, warning.replacement);
            assert!(matches!(up.replacement, Replacement::Planned { .. }));
            assert_eq!(up.launch_id(), cordoned.launch_id());
        }
    }

    #[test]
    fn a_spot_warning_speeds_up_a_replace_rebalance_and_keeps_its_replacement() {
        let warning = plan_at(InterruptKind::Spot, RebalanceMode::Off, 60_000);
        let mut replace = plan_at(InterruptKind::Rebalance, RebalanceMode::Replace, 1_000);
        let launched = Replacement::Launched {
            instances: vec![LaunchedInstance {
                instance_id: "i-new".into(),
                az: "b".into(),
                market: Market::Spot,
                instance_type: None,
            }],
        };
        for kept in [replace.replacement.clone(), launched, Replacement::Failed { why: "none".into() }] {
            replace.replacement = kept.clone();
            let up = upgrade(&replace, &warning).expect("upgraded");
            assert_eq!(up.replacement, kept, "never a second replacement");
            assert_eq!(up.deadline, Timestamp::from_millis(180_000), "sooner than the rebalance's");
            assert_eq!(up.kind, InterruptKind::Spot);
        }
    }

    #[test]
    fn repeats_and_out_of_order_notices_upgrade_nothing() {
        let warning = plan_at(InterruptKind::Spot, RebalanceMode::Off, 60_000);
        let rebalance = plan_at(InterruptKind::Rebalance, RebalanceMode::CordonOnly, 1_000);
        let mut closed_warning = warning.clone();
        closed_warning.phase = InterruptPhase::Done;
        assert_eq!(upgrade(&warning, &warning), None, "warning twice");
        assert_eq!(upgrade(&closed_warning, &warning), None, "warning after a closed warning");
        assert_eq!(upgrade(&warning, &rebalance), None, "rebalance after the warning");
        assert_eq!(upgrade(&closed_warning, &rebalance), None, "rebalance after a closed warning");
        assert_eq!(upgrade(&rebalance, &rebalance), None, "rebalance twice");
    }

    #[test]
    fn a_rebalance_drain_stops_at_a_hold_and_never_goes_below_min_ready() {
        let mut record = plan_at(InterruptKind::Rebalance, RebalanceMode::Replace, 1_000);
        record.replacement = Replacement::Launched { instances: vec![] };
        let now = Timestamp::from_millis(2_000);
        let held = StepFacts { hold: Some("shop/bare: pod without a controller".into()), ..facts(1, true) };
        assert_eq!(next_step(&record, &held, now), InterruptStep::Held);
        let below_min = StepFacts { ready_others: 1, min: 2, ..facts(1, true) };
        assert_eq!(next_step(&record, &below_min, now), InterruptStep::WaitForReplacement);
        assert_eq!(
            next_step(&record, &StepFacts { pods_left: 0, ..below_min.clone() }, now),
            InterruptStep::WaitForReplacement,
            "not even an empty node is terminated"
        );
        assert_eq!(next_step(&record, &below_min, record.deadline), InterruptStep::GiveUp);
        assert_eq!(
            next_step(&record, &StepFacts { ready_others: 2, ..below_min }, now),
            InterruptStep::Evict
        );
        // The same facts on a spot warning: the instance goes anyway, so it drains.
        record.kind = InterruptKind::Spot;
        assert_eq!(next_step(&record, &held, now), InterruptStep::Evict);
        assert_eq!(
            next_step(&record, &StepFacts { ready_others: 0, min: 2, ..facts(1, false) }, now),
            InterruptStep::Evict
        );
    }

    #[test]
    fn drain_hold_names_the_node_or_the_first_blocking_pod_but_not_a_pdb() {
        let web = PodFacts {
            namespace: "shop".into(),
            name: "web".into(),
            controller_kind: Some("ReplicaSet".into()),
            ..PodFacts::default()
        };
        let bare = PodFacts { name: "bare".into(), controller_kind: None, ..web.clone() };
        let budget = PodFacts { name: "db".into(), has_pdb: true, pdb_blocks: true, ..web.clone() };
        assert_eq!(drain_hold(false, &[web.clone(), budget.clone()]), None);
        assert_eq!(
            drain_hold(false, &[web.clone(), bare]).as_deref(),
            Some("shop/bare: pod without a controller")
        );
        let pinned = PodFacts { name: "data".into(), safe_to_evict: Some(false), ..web.clone() };
        assert_eq!(
            drain_hold(false, &[pinned]).as_deref(),
            Some("shop/data: pod annotated safe-to-evict=false")
        );
        assert_eq!(drain_hold(true, &[web]).as_deref(), Some("node: node annotated scale-down-disabled"));
    }

    #[test]
    fn only_what_ec2_reports_verifies_a_notice() {
        use InterruptKind::{Rebalance, Spot};
        assert_eq!(
            verify_notice(Spot, Market::OnDemand, Some("marked-for-termination")),
            Err(Unverified::NotSpot)
        );
        assert_eq!(verify_notice(Rebalance, Market::OnDemand, None), Err(Unverified::NotSpot));
        assert_eq!(verify_notice(Rebalance, Market::Spot, None), Ok(()));
        assert_eq!(verify_notice(Spot, Market::Spot, Some("marked-for-termination")), Ok(()));
        assert_eq!(verify_notice(Spot, Market::Spot, Some("marked-for-stop")), Ok(()));
        assert_eq!(
            verify_notice(Spot, Market::Spot, Some("fulfilled")),
            Err(Unverified::NotMarked { status: Some("fulfilled".into()) })
        );
        assert_eq!(verify_notice(Spot, Market::Spot, None), Err(Unverified::NotMarked { status: None }));
    }

    #[test]
    fn the_rebalance_cap_counts_other_live_cordoned_rebalanced_instances_of_the_pool() {
        let rebalance = |id: &str| Interruption {
            instance_id: id.into(),
            ..plan_at(InterruptKind::Rebalance, RebalanceMode::CordonOnly, 1_000)
        };
        let workers = vec![
            worker("i-1").spot().node().cordoned().build(),
            worker("i-2").spot().node().build(),
            worker("i-3").spot().node().build(),
        ];
        let records = vec![rebalance("i-1"), rebalance("i-gone")];
        assert_eq!(rebalance_capped(&records, &workers, "i-2", 1), Some(1), "i-1 is still out of service");
        assert_eq!(rebalance_capped(&records, &workers, "i-2", 2), None);
        assert_eq!(
            rebalance_capped(&records, &workers, "i-1", 1),
            None,
            "a repeat is not counted against itself"
        );
        let uncordoned = vec![worker("i-1").spot().node().build()];
        assert_eq!(
            rebalance_capped(&records, &uncordoned, "i-2", 1),
            None,
            "uncordoned by an operator: free"
        );
        let mut upgraded = rebalance("i-1");
        upgraded.kind = InterruptKind::Spot;
        assert_eq!(rebalance_capped(&[upgraded], &workers, "i-2", 1), None, "spot warnings are not capped");
    }
}
