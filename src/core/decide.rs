//! `decide`: the one place that says what a pool should do now, and why.
//!
//! Rules, in order: one operation in flight per pool, except that a scale-up signal supersedes
//! a drain that has not terminated its instance yet (the drain is undone and the scale-up
//! decided at once); a pool below `min` is refilled; a
//! scale-up signal outranks node repair (`core::repair`), which outranks a scale-down signal;
//! a scale-up signal outranks any scale-down signal; the step is capped by `max_step` and by
//! `max`; a scale-up waits out `scale_up_cooldown` after the last scale-up; a scale-down keeps
//! `min` of Ready, schedulable nodes, is refused while an interruption is open or a worker has
//! not joined, waits out `scale_down_cooldown` after any action, is refused while too many
//! nodes are NotReady or cordoned, and removes one safe node per operation.
//!
//! Two counts, on purpose: `max` and the below-`min` refill count every pending or running
//! instance (a booting one is capacity on its way, so a refill never launches again while its
//! nodes join, and an interrupted or NotReady one is replaced by its own path: the interrupt
//! worker or node repair); a scale-down counts only the nodes that serve (Ready, not
//! cordoned, not interrupted), so it never removes the last node that can take pods.

use std::fmt;
use std::time::Duration;

use super::model::{Direction, DrainOp, LaunchRequest, OperationKind, PoolPolicy, PoolState, Signal, Worker};
use super::placement::{choose_drain_candidate, plan_launch};
use super::repair::{RepairAction, RepairInput, RepairRefusal, assess};
use super::time::Timestamp;

/// Everything a decision depends on, all plain data.
#[derive(Debug, Clone, Copy)]
pub struct DecideInput<'a> {
    /// Active (unexpired) signals of this pool.
    pub signals: &'a [Signal],
    /// The pool's durable state.
    pub state: &'a PoolState,
    /// Managed workers: every pending or running instance of the pool.
    pub workers: &'a [Worker],
    /// Instances of the pool with an open interruption record (`interrupt#<instance-id>`).
    pub interrupted: &'a [String],
    /// Whether Kubernetes answered for `workers` (node repair needs it).
    pub cluster_seen: bool,
    /// Limits and timings.
    pub policy: &'a PoolPolicy,
    /// The current time.
    pub now: Timestamp,
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Plan {
    /// Launch instances as requested, one request per zone.
    Launch(Vec<LaunchRequest>),
    /// Drain this node and terminate its instance.
    Drain(DrainOp),
    /// Undo the drain in flight (uncordon, nothing terminated), then launch `launch` (empty
    /// when the scale-up itself holds: at max, cooling down, no capacity).
    SupersedeDrain {
        /// The drain being undone.
        drain: DrainOp,
        /// What the scale-up launches in the same pass.
        launch: Vec<LaunchRequest>,
    },
    /// Nothing now.
    Hold,
}

/// Why: every decision carries one, for the log line, the audit record and the metric label.
#[derive(Debug, Clone, PartialEq)]
pub enum Reason {
    /// No signal is active.
    NoSignal,
    /// Another operation of this pool has not finished.
    OperationInFlight {
        /// Its id.
        op_id: String,
    },
    /// The pool has fewer workers than `min`.
    BelowMin {
        /// Workers now.
        workers: usize,
        /// The pool's minimum.
        min: u32,
    },
    /// A scale-up signal asked for nodes.
    ScaleUp {
        /// Nodes launched.
        count: u32,
        /// Nodes the signal asked for.
        requested: u32,
        /// The signal's alert name and reason.
        cause: String,
    },
    /// Scale-up wanted, but the pool is at `max`.
    AtMax {
        /// Workers now.
        workers: usize,
        /// The pool's maximum.
        max: u32,
    },
    /// Scale-down wanted, but the pool is at `min`.
    AtMin {
        /// Workers now.
        workers: usize,
        /// The pool's minimum.
        min: u32,
    },
    /// Wanted, but the cooldown after the last action still runs.
    Cooldown {
        /// Direction that is waiting.
        direction: Direction,
        /// Time left.
        remaining: Duration,
    },
    /// Every zone's allowed markets are backed off after capacity errors.
    NoCapacity,
    /// A scale-down signal asked for a node to go.
    ScaleDown {
        /// The signal's alert name and reason.
        cause: String,
    },
    /// Too many of the pool's nodes are NotReady or cordoned to remove one safely.
    Unhealthy {
        /// NotReady or cordoned nodes.
        unready: usize,
        /// Registered nodes.
        nodes: usize,
    },
    /// Scale-down wanted, but an interruption of the pool is still being handled.
    InterruptionOpen {
        /// Interrupted instances.
        instances: usize,
    },
    /// Scale-down wanted, but a worker has not joined as a node yet.
    WorkerJoining {
        /// Instances without a node.
        instances: usize,
    },
    /// No worker may be drained; the summary lists why.
    NoDrainCandidate {
        /// Counts of reasons.
        summary: String,
    },
    /// Node repair launches the replacement of a node NotReady for `repair_after`.
    RepairLaunch {
        /// The NotReady node.
        node: String,
    },
    /// Node repair drains and terminates a NotReady node (replaced, or the pool is at max).
    RepairDrain {
        /// The NotReady node.
        node: String,
    },
    /// Node repair is due but held; no signal is active.
    RepairHeld(RepairRefusal),
}

impl Reason {
    /// Stable, low-cardinality label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Reason::NoSignal => "no_signal",
            Reason::OperationInFlight { .. } => "operation_in_flight",
            Reason::BelowMin { .. } => "below_min",
            Reason::ScaleUp { .. } => "scale_up_signal",
            Reason::AtMax { .. } => "at_max",
            Reason::AtMin { .. } => "at_min",
            Reason::Cooldown { direction: Direction::Up, .. } => "scale_up_cooldown",
            Reason::Cooldown { direction: Direction::Down, .. } => "scale_down_cooldown",
            Reason::NoCapacity => "no_capacity",
            Reason::ScaleDown { .. } => "scale_down_signal",
            Reason::Unhealthy { .. } => "unhealthy",
            Reason::InterruptionOpen { .. } => "interruption_open",
            Reason::WorkerJoining { .. } => "worker_joining",
            Reason::NoDrainCandidate { .. } => "no_drain_candidate",
            Reason::RepairLaunch { .. } => "repair_launch",
            Reason::RepairDrain { .. } => "repair_drain",
            Reason::RepairHeld(refusal) => refusal.label(),
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Reason::NoSignal => write!(f, "no active signal"),
            Reason::OperationInFlight { op_id } => write!(f, "operation {op_id} still in flight"),
            Reason::BelowMin { workers, min } => write!(f, "{workers} workers is below min {min}"),
            Reason::ScaleUp { count, requested, cause } if count == requested => {
                write!(f, "scale up by {count}: {cause}")
            }
            Reason::ScaleUp { count, requested, cause } => {
                write!(f, "scale up by {count} (asked {requested}, capped): {cause}")
            }
            Reason::AtMax { workers, max } => {
                write!(f, "scale-up wanted but {workers} workers is at max {max}")
            }
            Reason::AtMin { workers, min } => {
                write!(f, "scale-down wanted but {workers} Ready, schedulable nodes is at min {min}")
            }
            Reason::Cooldown { direction, remaining } => write!(
                f,
                "{} wanted but cooling down for {}",
                direction.as_str(),
                humantime::format_duration(Duration::from_secs(remaining.as_secs().max(1)))
            ),
            Reason::NoCapacity => write!(f, "scale-up wanted but every zone and market is backed off"),
            Reason::ScaleDown { cause } => write!(f, "scale down by 1: {cause}"),
            Reason::Unhealthy { unready, nodes } => {
                write!(f, "scale-down refused: {unready} of {nodes} nodes NotReady or cordoned")
            }
            Reason::InterruptionOpen { instances } => {
                write!(f, "scale-down refused: {instances} interrupted instances still being handled")
            }
            Reason::WorkerJoining { instances } => {
                write!(f, "scale-down refused: {instances} instances have not joined as nodes yet")
            }
            Reason::NoDrainCandidate { summary } => {
                write!(f, "scale-down wanted but no node may go ({summary})")
            }
            Reason::RepairLaunch { node } => {
                write!(f, "node repair: launch the replacement of NotReady {node}")
            }
            Reason::RepairDrain { node } => write!(f, "node repair: drain and terminate NotReady {node}"),
            Reason::RepairHeld(refusal) => write!(f, "{refusal}"),
        }
    }
}

/// A plan with its reason.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// What to do.
    pub plan: Plan,
    /// Why.
    pub reason: Reason,
}

impl Decision {
    fn hold(reason: Reason) -> Self {
        Decision { plan: Plan::Hold, reason }
    }
}

/// Decides what the pool should do now. Pure: same input, same decision.
pub fn decide(input: DecideInput<'_>) -> Decision {
    let DecideInput { signals, state, workers, policy, interrupted, cluster_seen, now } = input;
    let backoffs: Vec<_> = state.live_backoffs(now).cloned().collect();
    let strongest_up = signals
        .iter()
        .filter(|s| s.direction == Direction::Up)
        .max_by(|a, b| a.step.cmp(&b.step).then_with(|| b.fingerprint.cmp(&a.fingerprint)));
    if let Some(op) = &state.op {
        return match (&op.kind, strongest_up) {
            (OperationKind::Drain(drain), Some(signal)) if drain.phase.before_terminate() => {
                let then = decide_up(signal, state, workers, policy, &backoffs, now);
                let launch = match then.plan {
                    Plan::Launch(requests) => requests,
                    _ => Vec::new(),
                };
                Decision { plan: Plan::SupersedeDrain { drain: drain.clone(), launch }, reason: then.reason }
            }
            _ => Decision::hold(Reason::OperationInFlight { op_id: op.id.clone() }),
        };
    }
    let current = workers.len();
    if current < policy.min as usize {
        let missing = policy.min - current as u32;
        let requests = plan_launch(missing, policy, workers, &backoffs, now);
        if requests.is_empty() {
            return Decision::hold(Reason::NoCapacity);
        }
        return Decision {
            plan: Plan::Launch(requests),
            reason: Reason::BelowMin { workers: current, min: policy.min },
        };
    }

    if let Some(signal) = strongest_up {
        return decide_up(signal, state, workers, policy, &backoffs, now);
    }
    let repair = assess(RepairInput { workers, interrupted, cluster_seen, policy, backoffs: &backoffs, now });
    let repair = match repair {
        Some(RepairAction::Launch { node, requests }) => {
            return Decision { plan: Plan::Launch(requests), reason: Reason::RepairLaunch { node } };
        }
        Some(RepairAction::Drain(drain)) => {
            let node = drain.node.clone();
            return Decision { plan: Plan::Drain(drain), reason: Reason::RepairDrain { node } };
        }
        Some(RepairAction::Refused(refusal)) => Some(refusal),
        None => None,
    };
    match signals
        .iter()
        .filter(|s| s.direction == Direction::Down)
        .min_by(|a, b| a.fingerprint.cmp(&b.fingerprint))
    {
        Some(signal) => decide_down(signal, state, workers, interrupted, policy, now),
        None => Decision::hold(repair.map_or(Reason::NoSignal, Reason::RepairHeld)),
    }
}

fn cause(signal: &Signal) -> String {
    if signal.alertname.is_empty() || signal.alertname == signal.reason {
        signal.reason.clone()
    } else {
        format!("{}: {}", signal.alertname, signal.reason)
    }
}

fn cooldown_remaining(
    state: &PoolState,
    applies_after: &[Direction],
    cooldown: Duration,
    now: Timestamp,
) -> Option<Duration> {
    let last = state.last_scale.filter(|l| applies_after.contains(&l.direction))?;
    let elapsed = now.since(last.at);
    (elapsed < cooldown).then(|| cooldown - elapsed)
}

fn decide_up(
    signal: &Signal,
    state: &PoolState,
    workers: &[Worker],
    policy: &PoolPolicy,
    backoffs: &[super::model::CapacityBackoff],
    now: Timestamp,
) -> Decision {
    let current = workers.len();
    let room = (policy.max as usize).saturating_sub(current) as u32;
    if room == 0 {
        return Decision::hold(Reason::AtMax { workers: current, max: policy.max });
    }
    if let Some(remaining) = cooldown_remaining(state, &[Direction::Up], policy.scale_up_cooldown, now) {
        return Decision::hold(Reason::Cooldown { direction: Direction::Up, remaining });
    }
    let count = signal.step.min(policy.max_step).min(room);
    let requests = plan_launch(count, policy, workers, backoffs, now);
    if requests.is_empty() {
        return Decision::hold(Reason::NoCapacity);
    }
    Decision {
        plan: Plan::Launch(requests),
        reason: Reason::ScaleUp { count, requested: signal.step, cause: cause(signal) },
    }
}

fn decide_down(
    signal: &Signal,
    state: &PoolState,
    workers: &[Worker],
    interrupted: &[String],
    policy: &PoolPolicy,
    now: Timestamp,
) -> Decision {
    let interrupted = workers.iter().filter(|w| interrupted.contains(&w.instance_id)).count();
    if interrupted > 0 {
        return Decision::hold(Reason::InterruptionOpen { instances: interrupted });
    }
    let joining = workers.iter().filter(|w| w.node.is_none()).count();
    if joining > 0 {
        return Decision::hold(Reason::WorkerJoining { instances: joining });
    }
    let serving = workers.iter().filter(|w| w.serves()).count();
    if serving <= policy.min as usize {
        return Decision::hold(Reason::AtMin { workers: serving, min: policy.min });
    }
    let any = [Direction::Up, Direction::Down];
    if let Some(remaining) = cooldown_remaining(state, &any, policy.scale_down_cooldown, now) {
        return Decision::hold(Reason::Cooldown { direction: Direction::Down, remaining });
    }
    let nodes = workers.len();
    let unready = nodes - serving;
    if unready as f64 > policy.max_unready_share * nodes as f64 {
        return Decision::hold(Reason::Unhealthy { unready, nodes });
    }
    match choose_drain_candidate(workers, &policy.prices) {
        Ok(drain) => {
            Decision { plan: Plan::Drain(drain), reason: Reason::ScaleDown { cause: cause(signal) } }
        }
        Err(none) => Decision::hold(Reason::NoDrainCandidate { summary: none.summary() }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures::{policy, worker};
    use crate::core::model::{
        CapacityBackoff, DrainPhase, LastScale, LaunchOp, LaunchPhase, Market, Operation,
    };

    const NOW: Timestamp = Timestamp::from_millis(10_000_000);

    fn signal(direction: Direction, step: u32, fp: &str) -> Signal {
        Signal {
            pool: "workers".into(),
            direction,
            step,
            reason: format!("reason {fp}"),
            fingerprint: fp.into(),
            alertname: format!("Alert{fp}"),
        }
    }
    fn up(step: u32) -> Signal {
        signal(Direction::Up, step, "up")
    }
    fn down() -> Signal {
        signal(Direction::Down, 1, "down")
    }
    fn workers(n: usize) -> Vec<Worker> {
        (0..n)
            .map(|i| worker(&format!("i-{i}")).in_az(if i % 2 == 0 { "a" } else { "b" }).node().build())
            .collect()
    }
    fn run(signals: &[Signal], state: &PoolState, workers: &[Worker], policy: &PoolPolicy) -> Decision {
        decide(DecideInput {
            signals,
            state,
            workers,
            policy,
            interrupted: &[],
            cluster_seen: true,
            now: NOW,
        })
    }
    fn launched(d: &Decision) -> u32 {
        match &d.plan {
            Plan::Launch(requests) => requests.iter().map(|r| r.count).sum(),
            other => panic!("expected a launch, got {other:?} ({})", d.reason),
        }
    }
    fn last(direction: Direction, ago_secs: u64) -> PoolState {
        PoolState {
            last_scale: Some(LastScale {
                at: Timestamp::from_millis(NOW.as_millis() - ago_secs * 1000),
                direction,
            }),
            ..PoolState::default()
        }
    }

    #[test]
    fn no_signal_holds() {
        let d = run(&[], &PoolState::default(), &workers(2), &policy());
        assert_eq!(d, Decision::hold(Reason::NoSignal));
        assert_eq!(d.reason.label(), "no_signal");
    }

    #[test]
    fn scale_up_launches_the_step() {
        let d = run(&[up(2)], &PoolState::default(), &workers(2), &policy());
        assert_eq!(launched(&d), 2);
        assert_eq!(d.reason, Reason::ScaleUp { count: 2, requested: 2, cause: "Alertup: reason up".into() });
        assert_eq!(d.reason.to_string(), "scale up by 2: Alertup: reason up");
    }

    #[test]
    fn step_is_capped_by_max_step_and_by_room_under_max() {
        let p = policy(); // max 5, max_step 3
        let d = run(&[up(10)], &PoolState::default(), &workers(1), &p);
        assert_eq!(launched(&d), 3);
        assert!(d.reason.to_string().contains("asked 10, capped"));
        let d = run(&[up(3)], &PoolState::default(), &workers(4), &p);
        assert_eq!(launched(&d), 1);
    }

    #[test]
    fn at_max_holds_and_counts_booting_instances_without_nodes() {
        let mut pool = workers(3);
        pool.push(worker("i-booting-1").build());
        pool.push(worker("i-booting-2").build());
        let d = run(&[up(1)], &PoolState::default(), &pool, &policy());
        assert_eq!(d, Decision::hold(Reason::AtMax { workers: 5, max: 5 }));
    }

    #[test]
    fn the_strongest_scale_up_signal_wins() {
        let d =
            run(&[up(1), signal(Direction::Up, 2, "pending")], &PoolState::default(), &workers(1), &policy());
        assert_eq!(launched(&d), 2);
        assert!(d.reason.to_string().contains("reason pending"));
    }

    #[test]
    fn scale_up_outranks_scale_down() {
        let d = run(&[down(), up(1)], &PoolState::default(), &workers(3), &policy());
        assert_eq!(launched(&d), 1);
    }

    #[test]
    fn one_operation_in_flight_per_pool() {
        // A launch in flight holds every signal (a drain in flight yields to a scale-up, below).
        let state = PoolState {
            op: Some(Operation {
                id: "op-1".into(),
                kind: OperationKind::Launch(LaunchOp {
                    requests: Vec::new(),
                    instances: Vec::new(),
                    phase: LaunchPhase::Requested,
                    failed: Vec::new(),
                }),
                reason: "r".into(),
                started_at: NOW,
                deadline: NOW,
            }),
            ..PoolState::default()
        };
        for signals in [vec![up(1)], vec![down()], vec![]] {
            let d = run(&signals, &state, &workers(0), &policy());
            assert_eq!(d, Decision::hold(Reason::OperationInFlight { op_id: "op-1".into() }));
        }
    }

    fn draining(phase: DrainPhase) -> PoolState {
        PoolState {
            op: Some(Operation {
                id: "op-drain".into(),
                kind: OperationKind::Drain(DrainOp {
                    instance_id: "i-0".into(),
                    node: "node-i-0".into(),
                    az: "a".into(),
                    phase,
                    repair: false,
                }),
                reason: "r".into(),
                started_at: NOW,
                deadline: NOW,
            }),
            ..PoolState::default()
        }
    }

    #[test]
    fn a_scale_up_supersedes_a_drain_that_has_not_terminated_and_launches_at_once() {
        for phase in [DrainPhase::Started, DrainPhase::Evicting] {
            let d = run(&[down(), up(2)], &draining(phase), &workers(3), &policy());
            let Plan::SupersedeDrain { drain, launch } = &d.plan else { panic!("{d:?}") };
            assert_eq!(drain.instance_id, "i-0");
            // The drained node stays and counts: 3 workers, max 5, step 2.
            assert_eq!(launch.iter().map(|r| r.count).sum::<u32>(), 2);
            assert_eq!(d.reason.label(), "scale_up_signal");
        }
    }

    #[test]
    fn a_superseded_drain_launches_only_what_the_scale_up_rules_allow() {
        let d = run(&[up(1)], &draining(DrainPhase::Evicting), &workers(5), &policy());
        assert!(matches!(&d.plan, Plan::SupersedeDrain { launch, .. } if launch.is_empty()), "{d:?}");
        assert_eq!(d.reason, Reason::AtMax { workers: 5, max: 5 });
        let mut state = draining(DrainPhase::Evicting);
        state.last_scale = last(Direction::Up, 10).last_scale;
        let d = run(&[up(1)], &state, &workers(2), &policy());
        assert!(matches!(&d.plan, Plan::SupersedeDrain { launch, .. } if launch.is_empty()), "{d:?}");
        assert_eq!(d.reason.label(), "scale_up_cooldown");
    }

    #[test]
    fn a_drain_that_terminated_its_instance_finishes_and_a_scale_down_never_supersedes() {
        // `terminating`: TerminateInstances may already have gone out; never undone either.
        for phase in [DrainPhase::Terminating, DrainPhase::Terminated] {
            let d = run(&[up(1)], &draining(phase), &workers(3), &policy());
            assert_eq!(
                d,
                Decision::hold(Reason::OperationInFlight { op_id: "op-drain".into() }),
                "{phase:?}"
            );
        }
        let d = run(&[down()], &draining(DrainPhase::Evicting), &workers(3), &policy());
        assert_eq!(d, Decision::hold(Reason::OperationInFlight { op_id: "op-drain".into() }));
    }

    #[test]
    fn below_min_refills_without_a_signal_and_ignores_cooldown() {
        let mut p = policy();
        p.min = 3;
        let d = run(&[], &last(Direction::Up, 1), &workers(1), &p);
        assert_eq!(launched(&d), 2);
        assert_eq!(d.reason, Reason::BelowMin { workers: 1, min: 3 });
    }

    #[test]
    fn below_min_with_no_capacity_holds() {
        let mut p = policy();
        p.min = 1;
        let state = PoolState {
            backoffs: ["a", "b"]
                .iter()
                .flat_map(|az| {
                    [Market::Spot, Market::OnDemand].map(|market| CapacityBackoff {
                        instance_type: None,
                        code: String::new(),
                        az: az.to_string(),
                        market,
                        until: NOW.plus(Duration::from_secs(60)),
                    })
                })
                .collect(),
            ..PoolState::default()
        };
        assert_eq!(run(&[], &state, &[], &p), Decision::hold(Reason::NoCapacity));
        assert_eq!(run(&[up(1)], &state, &workers(2), &p), Decision::hold(Reason::NoCapacity));
    }

    #[test]
    fn scale_up_cooldown_applies_only_after_a_scale_up() {
        let p = policy(); // scale_up_cooldown 60 s
        let d = run(&[up(1)], &last(Direction::Up, 20), &workers(2), &p);
        assert_eq!(
            d,
            Decision::hold(Reason::Cooldown { direction: Direction::Up, remaining: Duration::from_secs(40) })
        );
        assert_eq!(d.reason.label(), "scale_up_cooldown");
        assert_eq!(launched(&run(&[up(1)], &last(Direction::Up, 60), &workers(2), &p)), 1);
        assert_eq!(launched(&run(&[up(1)], &last(Direction::Down, 1), &workers(2), &p)), 1);
    }

    #[test]
    fn scale_down_drains_one_node() {
        let d = run(&[down()], &PoolState::default(), &workers(3), &policy());
        assert!(matches!(d.plan, Plan::Drain(_)), "{d:?}");
        assert_eq!(d.reason.to_string(), "scale down by 1: Alertdown: reason down");
    }

    #[test]
    fn scale_down_keeps_min_counting_ready_schedulable_nodes() {
        let p = policy(); // min 1
        assert_eq!(
            run(&[down()], &PoolState::default(), &workers(1), &p),
            Decision::hold(Reason::AtMin { workers: 1, min: 1 })
        );
        // A NotReady or a cordoned node takes no pods: the Ready one is the last that serves.
        for other in [
            worker("i-sick").in_az("b").node().not_ready().build(),
            worker("i-off").in_az("b").node().cordoned().build(),
        ] {
            let pool = vec![workers(1).remove(0), other];
            let d = run(&[down()], &PoolState::default(), &pool, &p);
            assert_eq!(d, Decision::hold(Reason::AtMin { workers: 1, min: 1 }), "{pool:?}");
        }
    }

    #[test]
    fn scale_down_waits_for_workers_to_join() {
        // min 1, one Ready node and one booting instance: the Ready node is the only one
        // that serves, so it stays.
        let mut pool = workers(1);
        pool.push(worker("i-booting").build());
        let d = run(&[down()], &PoolState::default(), &pool, &policy());
        assert_eq!(d, Decision::hold(Reason::WorkerJoining { instances: 1 }));
        assert_eq!(d.reason.label(), "worker_joining");
        // Even with room above min.
        let mut pool = workers(3);
        pool.push(worker("i-booting").build());
        assert_eq!(
            run(&[down()], &PoolState::default(), &pool, &policy()),
            Decision::hold(Reason::WorkerJoining { instances: 1 })
        );
    }

    #[test]
    fn scale_down_waits_while_an_interruption_is_open() {
        // min 2: a spot node cordoned by a warning, its replacement booting, two Ready nodes.
        let mut p = policy();
        p.min = 2;
        let mut pool = workers(2);
        pool.push(worker("i-doomed").in_az("b").spot().node().cordoned().build());
        pool.push(worker("i-replacement").in_az("b").build());
        let interrupted = ["i-doomed".to_string()];
        let signals = [down()];
        let state = PoolState::default();
        let input = |pool| DecideInput {
            signals: &signals,
            state: &state,
            workers: pool,
            policy: &p,
            interrupted: &interrupted,
            cluster_seen: true,
            now: NOW,
        };
        let d = decide(input(&pool));
        assert_eq!(d, Decision::hold(Reason::InterruptionOpen { instances: 1 }));
        assert_eq!(d.reason.label(), "interruption_open");
        // The record of an instance that is no longer in the pool does not hold it.
        assert!(matches!(decide(input(&workers(3))).plan, Plan::Drain(_)));
    }

    #[test]
    fn below_min_refill_counts_booting_nodes_as_coming() {
        let mut p = policy();
        p.min = 3;
        // Two nodes and one instance still joining: no second launch while it boots.
        let mut pool = workers(2);
        pool.push(worker("i-booting").build());
        assert_eq!(run(&[], &PoolState::default(), &pool, &p), Decision::hold(Reason::NoSignal));
    }

    #[test]
    fn scale_down_cooldown_applies_after_any_action() {
        let p = policy(); // scale_down_cooldown 600 s
        for direction in [Direction::Up, Direction::Down] {
            let d = run(&[down()], &last(direction, 100), &workers(3), &p);
            assert_eq!(
                d,
                Decision::hold(Reason::Cooldown {
                    direction: Direction::Down,
                    remaining: Duration::from_secs(500)
                })
            );
        }
        assert!(matches!(run(&[down()], &last(Direction::Up, 600), &workers(3), &p).plan, Plan::Drain(_)));
    }

    #[test]
    fn unhealthy_pool_refuses_scale_down() {
        let mut pool = workers(4);
        pool[0].node.as_mut().unwrap().ready = false;
        pool[1].node.as_mut().unwrap().ready = false;
        let d = run(&[down()], &PoolState::default(), &pool, &policy());
        assert_eq!(d, Decision::hold(Reason::Unhealthy { unready: 2, nodes: 4 }));
        pool[1].node.as_mut().unwrap().ready = true; // 1 of 4 = 25 % <= 45 %
        assert!(matches!(run(&[down()], &PoolState::default(), &pool, &policy()).plan, Plan::Drain(_)));
        pool[1].node.as_mut().unwrap().cordoned = true; // a cordoned node counts as not serving
        assert_eq!(
            run(&[down()], &PoolState::default(), &pool, &policy()),
            Decision::hold(Reason::Unhealthy { unready: 2, nodes: 4 })
        );
    }

    #[test]
    fn no_drain_candidate_reports_why() {
        let pool = vec![
            worker("i-1").node().blocked("pod without controller").build(),
            worker("i-2").node().blocked("pod without controller").build(),
        ];
        let d = run(&[down()], &PoolState::default(), &pool, &policy());
        assert_eq!(
            d,
            Decision::hold(Reason::NoDrainCandidate {
                summary: "2 workers: 2 pod without controller".into()
            })
        );
    }

    #[test]
    fn expired_backoffs_do_not_count() {
        let state = PoolState {
            backoffs: vec![CapacityBackoff {
                instance_type: None,
                code: String::new(),
                az: "a".into(),
                market: Market::Spot,
                until: NOW,
            }],
            ..PoolState::default()
        };
        let d = run(&[up(1)], &state, &[], &policy());
        assert!(matches!(&d.plan, Plan::Launch(r) if r[0].markets == vec![Market::Spot, Market::OnDemand]));
    }

    #[test]
    fn every_reason_has_a_distinct_label() {
        let reasons = [
            Reason::NoSignal,
            Reason::OperationInFlight { op_id: "x".into() },
            Reason::BelowMin { workers: 0, min: 1 },
            Reason::ScaleUp { count: 1, requested: 1, cause: "c".into() },
            Reason::AtMax { workers: 1, max: 1 },
            Reason::AtMin { workers: 1, min: 1 },
            Reason::Cooldown { direction: Direction::Up, remaining: Duration::ZERO },
            Reason::Cooldown { direction: Direction::Down, remaining: Duration::ZERO },
            Reason::NoCapacity,
            Reason::ScaleDown { cause: "c".into() },
            Reason::Unhealthy { unready: 1, nodes: 1 },
            Reason::InterruptionOpen { instances: 1 },
            Reason::WorkerJoining { instances: 1 },
            Reason::NoDrainCandidate { summary: "s".into() },
        ];
        let mut labels: Vec<&str> = reasons.iter().map(Reason::label).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), reasons.len());
        assert!(reasons.iter().all(|r| !r.to_string().is_empty()));
    }

    #[test]
    fn node_repair_comes_after_a_scale_up_and_before_a_scale_down() {
        let mut pool = workers(2);
        pool.push(worker("i-dead").node().not_ready_since(0).build());
        let d = run(&[down()], &PoolState::default(), &pool, &policy());
        assert_eq!(d.reason, Reason::RepairLaunch { node: "node-i-dead".into() });
        assert_eq!((launched(&d), d.reason.label()), (1, "repair_launch"));
        let d = run(&[up(1)], &PoolState::default(), &pool, &policy());
        assert_eq!(d.reason.label(), "scale_up_signal");
        pool.push(worker("i-new").launched(1).node().build());
        let d = run(&[], &PoolState::default(), &pool, &policy());
        assert_eq!(d.reason, Reason::RepairDrain { node: "node-i-dead".into() });
        assert_eq!(d.reason.label(), "repair_drain");
        assert!(matches!(d.plan, Plan::Drain(DrainOp { repair: true, .. })));
    }

    #[test]
    fn a_held_repair_is_the_reason_when_no_signal_is_active() {
        let pool = vec![
            worker("i-0").node().build(),
            worker("i-1").node().not_ready_since(0).build(),
            worker("i-2").node().not_ready_since(0).build(),
        ];
        let d = run(&[], &PoolState::default(), &pool, &policy());
        assert_eq!(d.plan, Plan::Hold);
        assert_eq!(d.reason.label(), "repair_too_many_unready");
        assert!(d.reason.to_string().contains("2 of 3 nodes"), "{}", d.reason);
    }
}
