//! Spot interruptions and rebalance recommendations: what to do with the doomed node and
//! whether to launch a replacement, decided from plain data like every other decision.
//!
//! An interruption is not a pool operation: it cannot wait for one (the notice is two
//! minutes), so it is planned here without the one-op rule, and recorded in its own
//! `interrupt#<instance-id>` item (see `service::interrupt`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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
    /// Chosen; RunInstances is issued next (its ClientToken makes a repeat harmless).
    Planned {
        /// Zone, subnet and markets.
        request: LaunchRequest,
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
            Replacement::Planned { request } => {
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
            Ok(request) => Replacement::Planned { request },
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
        },
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
    let requested = match state.op.as_ref().map(|op| &op.kind) {
        Some(OperationKind::Launch(launch)) if launch.phase == LaunchPhase::Requested => {
            launch.requests.iter().map(|r| r.count as usize).sum()
        }
        _ => 0,
    };
    let counted = staying.len() + requested;
    if counted >= policy.max as usize {
        return Err(ReplacementSkip::AtMax { staying: counted, max: policy.max });
    }
    let backoffs: Vec<_> = state.live_backoffs(now).cloned().collect();
    plan_launch(1, policy, &staying, &backoffs, now).into_iter().next().ok_or(ReplacementSkip::NoCapacity)
}

/// The next thing to do for an open interruption.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InterruptStep {
    /// Issue the planned replacement launch.
    Launch,
    /// Rebalance: the replacement is not Ready yet; drain after it is.
    WaitForReplacement,
    /// Pods still have to move: evict them (PDBs may refuse; retried next pass).
    Evict,
    /// Nothing left to move: terminate the instance, delete the Node, close the record.
    Finish,
    /// The deadline passed with pods still on the node: report them, close the record.
    GiveUp,
    /// Cordon-only: close the record, the node stays.
    Close,
}

/// Chooses the next step from the record, the pods still on the node (terminating ones
/// included) and whether the replacement's nodes are Ready. The launch comes first so the
/// replacement boots while the node drains; only a rebalance waits for it to be Ready.
pub fn next_step(
    record: &Interruption,
    pods_left: usize,
    replacement_ready: bool,
    now: Timestamp,
) -> InterruptStep {
    if matches!(record.replacement, Replacement::Planned { .. }) {
        return InterruptStep::Launch;
    }
    if !record.drain {
        return InterruptStep::Close;
    }
    let waiting = record.kind == InterruptKind::Rebalance
        && matches!(record.replacement, Replacement::Launched { .. })
        && !replacement_ready;
    match (waiting, pods_left, now < record.deadline) {
        (true, _, true) => InterruptStep::WaitForReplacement,
        (_, 0, _) => InterruptStep::Finish,
        (false, _, true) => InterruptStep::Evict,
        // A rebalance whose replacement never got Ready leaves its pods where they are.
        _ => InterruptStep::GiveUp,
    }
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
        let Replacement::Planned { request } = &record.replacement else {
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
                az: "b".into(),
                market: Market::Spot,
                until: Timestamp::from_millis(5_000),
            }],
            ..PoolState::default()
        };
        let record = plan(InterruptKind::Spot, RebalanceMode::Off, &two_in_a(), &state).unwrap();
        let Replacement::Planned { request } = record.replacement else { panic!() };
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
        assert_eq!(next_step(&record, 3, false, before), InterruptStep::Launch);
        record.replacement = Replacement::Launched { instances: vec![] };
        // Spot does not wait for the replacement: the node has two minutes.
        assert_eq!(next_step(&record, 3, false, before), InterruptStep::Evict);
        assert_eq!(next_step(&record, 0, false, before), InterruptStep::Finish);
        assert_eq!(next_step(&record, 2, false, after), InterruptStep::GiveUp);
        assert_eq!(next_step(&record, 0, false, after), InterruptStep::Finish);
        record.replacement = Replacement::Skipped { why: ReplacementSkip::NoCapacity };
        assert_eq!(next_step(&record, 1, false, before), InterruptStep::Evict);
    }

    #[test]
    fn rebalance_replace_drains_only_once_the_replacement_is_ready() {
        let workers = two_in_a();
        let mut record =
            plan(InterruptKind::Rebalance, RebalanceMode::Replace, &workers, &PoolState::default()).unwrap();
        record.replacement = Replacement::Launched { instances: vec![] };
        let now = Timestamp::from_millis(2_000);
        assert_eq!(next_step(&record, 2, false, now), InterruptStep::WaitForReplacement);
        assert_eq!(next_step(&record, 2, true, now), InterruptStep::Evict);
        assert_eq!(next_step(&record, 2, false, record.deadline), InterruptStep::GiveUp);
        let cordon =
            plan(InterruptKind::Rebalance, RebalanceMode::CordonOnly, &workers, &PoolState::default())
                .unwrap();
        assert_eq!(next_step(&cordon, 2, false, now), InterruptStep::Close);
    }
}
