//! Node repair: a managed worker whose node has been NotReady for `repair_after` is replaced.
//!
//! Launch first, then drain: a NotReady node is paired with a worker launched after it went
//! NotReady (its replacement). Without one, a replacement is launched (at `max` the NotReady
//! node is drained first: it serves nothing, so `min` and zones are unaffected); once the
//! replacement serves, the NotReady node is drained and terminated. The pairing is derived
//! from launch times and node conditions, so it survives restarts without a stored mark.
//!
//! Bounded: no repair while Kubernetes was not seen, or while two or more nodes and more than
//! `max_unready_share` of the pool's nodes do not serve (a cluster-wide outage never triggers
//! mass replacement); one repair at a time (a pool operation, under the lease); an interrupted
//! instance belongs to the interrupt worker; a node that holds local data is never repaired,
//! only reported for a person to decide.

use std::fmt;
use std::time::Duration;

use super::drainability::PodFacts;
use super::model::{CapacityBackoff, DrainOp, DrainPhase, LaunchRequest, PoolPolicy, Worker};
use super::placement::plan_launch;
use super::time::Timestamp;

/// What node repair sees of a pool.
#[derive(Debug, Clone, Copy)]
pub struct RepairInput<'a> {
    /// Managed workers: every pending or running instance of the pool.
    pub workers: &'a [Worker],
    /// Instances with an open interruption record.
    pub interrupted: &'a [String],
    /// Whether Kubernetes answered for this snapshot.
    pub cluster_seen: bool,
    /// Limits and timings.
    pub policy: &'a PoolPolicy,
    /// Capacity backoffs in force.
    pub backoffs: &'a [CapacityBackoff],
    /// The current time.
    pub now: Timestamp,
}

/// What node repair wants now.
#[derive(Debug, Clone, PartialEq)]
pub enum RepairAction {
    /// Launch the replacement of `node`.
    Launch {
        /// The NotReady node being replaced.
        node: String,
        /// Where the replacement goes.
        requests: Vec<LaunchRequest>,
    },
    /// Drain and terminate the NotReady node (its replacement serves, or the pool is at max).
    Drain(DrainOp),
    /// Repair is needed but refused now; the reason says why.
    Refused(RepairRefusal),
}

/// Why a repair that is due does not happen.
#[derive(Debug, Clone, PartialEq)]
pub enum RepairRefusal {
    /// Kubernetes was not seen: NotReady could be our blindness, not the node's.
    ClusterNotSeen,
    /// Too many nodes do not serve: an outage, not a broken node.
    TooManyUnready {
        /// Registered nodes that do not serve.
        unready: usize,
        /// Registered nodes.
        nodes: usize,
    },
    /// The replacement has not joined yet.
    ReplacementJoining {
        /// The NotReady node.
        node: String,
    },
    /// Every due node holds local data; a person decides.
    LocalData {
        /// The nodes.
        nodes: Vec<String>,
    },
    /// No zone or market may launch the replacement now.
    NoCapacity {
        /// The NotReady node.
        node: String,
    },
}

impl RepairRefusal {
    /// Stable label for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            RepairRefusal::ClusterNotSeen => "repair_cluster_not_seen",
            RepairRefusal::TooManyUnready { .. } => "repair_too_many_unready",
            RepairRefusal::ReplacementJoining { .. } => "repair_replacement_joining",
            RepairRefusal::LocalData { .. } => "repair_blocked_local_data",
            RepairRefusal::NoCapacity { .. } => "no_capacity",
        }
    }
}

impl fmt::Display for RepairRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RepairRefusal::ClusterNotSeen => write!(f, "node repair refused: Kubernetes was not seen"),
            RepairRefusal::TooManyUnready { unready, nodes } => write!(
                f,
                "node repair refused: {unready} of {nodes} nodes NotReady or cordoned (an outage, not a broken node)"
            ),
            RepairRefusal::ReplacementJoining { node } => {
                write!(f, "node repair of {node}: waiting for its replacement to join")
            }
            RepairRefusal::LocalData { nodes } => write!(
                f,
                "node repair refused: {} NotReady but holds local data; a person decides",
                nodes.join(", ")
            ),
            RepairRefusal::NoCapacity { node } => {
                write!(f, "node repair of {node}: every zone and market is backed off")
            }
        }
    }
}

/// A NotReady node due for repair.
struct Due<'a> {
    worker: &'a Worker,
    name: &'a str,
    since: Timestamp,
    local_data: bool,
}

/// Nodes NotReady for at least `repair_after` that are neither interrupted nor repaired yet,
/// oldest first. Those that hold local data are included (they are reported).
fn due<'a>(input: &RepairInput<'a>, after: Duration) -> Vec<Due<'a>> {
    let mut due: Vec<Due<'a>> = input
        .workers
        .iter()
        .filter(|w| !input.interrupted.contains(&w.instance_id))
        .filter_map(|w| {
            let node = w.node.as_ref().filter(|n| !n.ready)?;
            let since = node.not_ready_since?;
            (input.now.since(since) >= after).then_some(Due {
                worker: w,
                name: &node.name,
                since,
                local_data: node.holds_local_data,
            })
        })
        .collect();
    due.sort_by(|a, b| a.since.cmp(&b.since).then_with(|| a.worker.instance_id.cmp(&b.worker.instance_id)));
    due
}

/// Nodes that hold local data and are due for repair: reported, never terminated.
pub fn blocked_nodes(input: &RepairInput<'_>) -> Vec<String> {
    let Some(after) = input.policy.repair_after else { return Vec::new() };
    due(input, after).into_iter().filter(|d| d.local_data).map(|d| d.name.to_string()).collect()
}

/// What node repair wants now; `None` when nothing is due. Pure.
pub fn assess(input: RepairInput<'_>) -> Option<RepairAction> {
    let after = input.policy.repair_after?;
    let due = due(&input, after);
    if due.is_empty() {
        return None;
    }
    if !input.cluster_seen {
        return Some(RepairAction::Refused(RepairRefusal::ClusterNotSeen));
    }
    let nodes = input.workers.iter().filter(|w| w.node.is_some()).count();
    let unready = input.workers.iter().filter(|w| w.node.is_some() && !w.serves()).count();
    if unready > 1 && unready as f64 > input.policy.max_unready_share * nodes as f64 {
        return Some(RepairAction::Refused(RepairRefusal::TooManyUnready { unready, nodes }));
    }
    // Pair each due node, oldest first, with a worker launched after it went NotReady that
    // serves or is still joining.
    let mut replacements: Vec<&Worker> =
        input.workers.iter().filter(|w| w.node.is_none() || w.serves()).collect();
    replacements
        .sort_by(|a, b| a.launched_at.cmp(&b.launched_at).then_with(|| a.instance_id.cmp(&b.instance_id)));
    let mut unpaired = None;
    for d in &due {
        let paired =
            replacements.iter().position(|r| r.launched_at > d.since).map(|i| replacements.remove(i));
        if d.local_data {
            continue;
        }
        match paired {
            Some(r) if r.serves() => return Some(RepairAction::Drain(drain(d))),
            Some(_) => {
                return Some(RepairAction::Refused(RepairRefusal::ReplacementJoining {
                    node: d.name.to_string(),
                }));
            }
            None => unpaired = unpaired.or(Some(d)),
        }
    }
    let Some(d) = unpaired else {
        let nodes = due.iter().map(|d| d.name.to_string()).collect();
        return Some(RepairAction::Refused(RepairRefusal::LocalData { nodes }));
    };
    if input.workers.len() >= input.policy.max as usize {
        return Some(RepairAction::Drain(drain(d)));
    }
    let requests = plan_launch(1, input.policy, input.workers, input.backoffs, input.now);
    if requests.is_empty() {
        return Some(RepairAction::Refused(RepairRefusal::NoCapacity { node: d.name.to_string() }));
    }
    Some(RepairAction::Launch { node: d.name.to_string(), requests })
}

/// Whether a pod on the node keeps data there (local storage or a node-local
/// PersistentVolume), unless it is annotated safe to evict: node repair never terminates such
/// a node, whatever other blocker the pod also has.
pub fn holds_local_data(pods: &[PodFacts]) -> bool {
    pods.iter()
        .any(|p| p.must_move() && p.safe_to_evict != Some(true) && (p.local_storage || p.node_local_volume))
}

fn drain(d: &Due<'_>) -> DrainOp {
    DrainOp {
        instance_id: d.worker.instance_id.clone(),
        node: d.name.to_string(),
        az: d.worker.az.clone(),
        phase: DrainPhase::Started,
        repair: true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures::{policy, worker};

    const MIN: u64 = 60_000;
    const NOW: Timestamp = Timestamp::from_millis(100 * MIN);

    fn run(
        workers: &[Worker],
        interrupted: &[String],
        cluster_seen: bool,
        p: &PoolPolicy,
    ) -> Option<RepairAction> {
        assess(RepairInput { workers, interrupted, cluster_seen, policy: p, backoffs: &[], now: NOW })
    }
    /// Two serving nodes launched at 0 and a node NotReady since minute `since`.
    fn pool_with_dead(since: u64) -> Vec<Worker> {
        vec![
            worker("i-0").in_az("a").node().build(),
            worker("i-1").in_az("b").node().build(),
            worker("i-dead").in_az("a").node().not_ready_since(since * MIN).build(),
        ]
    }

    #[test]
    fn a_node_not_ready_past_repair_after_gets_a_replacement_first() {
        let Some(RepairAction::Launch { node, requests }) = run(&pool_with_dead(80), &[], true, &policy())
        else {
            panic!("expected a launch");
        };
        assert_eq!(node, "node-i-dead");
        assert_eq!(requests.iter().map(|r| r.count).sum::<u32>(), 1);
    }

    #[test]
    fn a_node_not_ready_for_less_than_repair_after_is_left_alone() {
        assert_eq!(run(&pool_with_dead(95), &[], true, &policy()), None);
    }

    #[test]
    fn repair_off_does_nothing() {
        let p = PoolPolicy { repair_after: None, ..policy() };
        assert_eq!(run(&pool_with_dead(0), &[], true, &p), None);
    }

    #[test]
    fn a_not_ready_node_without_a_transition_time_is_not_due() {
        let workers = vec![worker("i-0").node().build(), worker("i-1").node().not_ready().build()];
        assert_eq!(run(&workers, &[], true, &policy()), None);
    }

    #[test]
    fn the_serving_replacement_lets_the_not_ready_node_be_drained() {
        let mut workers = pool_with_dead(80);
        workers.push(worker("i-new").in_az("b").launched(85 * MIN).node().build());
        let Some(RepairAction::Drain(drain)) = run(&workers, &[], true, &policy()) else {
            panic!("expected a drain");
        };
        assert_eq!(
            (drain.instance_id.as_str(), drain.node.as_str(), drain.repair),
            ("i-dead", "node-i-dead", true)
        );
    }

    #[test]
    fn a_joining_replacement_is_waited_for() {
        let mut workers = pool_with_dead(80);
        workers.push(worker("i-new").launched(85 * MIN).build());
        let r = run(&workers, &[], true, &policy());
        assert_eq!(
            r,
            Some(RepairAction::Refused(RepairRefusal::ReplacementJoining { node: "node-i-dead".into() }))
        );
        assert_eq!(
            RepairRefusal::ReplacementJoining { node: "n".into() }.label(),
            "repair_replacement_joining"
        );
    }

    #[test]
    fn a_worker_launched_before_the_node_went_not_ready_is_no_replacement() {
        let workers = pool_with_dead(80); // i-0 and i-1 launched at 0
        assert!(matches!(run(&workers, &[], true, &policy()), Some(RepairAction::Launch { .. })));
    }

    #[test]
    fn at_max_the_not_ready_node_is_drained_first() {
        let p = PoolPolicy { max: 3, ..policy() };
        let Some(RepairAction::Drain(drain)) = run(&pool_with_dead(80), &[], true, &p) else {
            panic!("expected a drain at max");
        };
        assert_eq!(drain.instance_id, "i-dead");
    }

    #[test]
    fn kubernetes_not_seen_refuses_repair() {
        let r = run(&pool_with_dead(0), &[], false, &policy());
        assert_eq!(r, Some(RepairAction::Refused(RepairRefusal::ClusterNotSeen)));
        assert_eq!(RepairRefusal::ClusterNotSeen.label(), "repair_cluster_not_seen");
    }

    #[test]
    fn three_of_four_not_ready_is_an_outage_and_nothing_is_repaired() {
        let workers = vec![
            worker("i-0").node().build(),
            worker("i-1").node().not_ready_since(0).build(),
            worker("i-2").node().not_ready_since(0).build(),
            worker("i-3").node().not_ready_since(0).build(),
        ];
        let r = run(&workers, &[], true, &policy());
        assert_eq!(r, Some(RepairAction::Refused(RepairRefusal::TooManyUnready { unready: 3, nodes: 4 })));
        assert_eq!(
            r.map(|r| matches!(r, RepairAction::Refused(x) if x.label() == "repair_too_many_unready")),
            Some(true)
        );
    }

    #[test]
    fn one_not_ready_node_of_two_is_repaired_one_at_a_time() {
        let workers = vec![worker("i-0").node().build(), worker("i-1").node().not_ready_since(0).build()];
        assert!(matches!(run(&workers, &[], true, &policy()), Some(RepairAction::Launch { .. })));
    }

    #[test]
    fn an_interrupted_node_belongs_to_the_interrupt_worker() {
        assert_eq!(run(&pool_with_dead(0), &["i-dead".into()], true, &policy()), None);
    }

    #[test]
    fn a_node_with_local_data_is_reported_never_repaired() {
        let mut workers = pool_with_dead(0);
        workers[2] = worker("i-dead").node().not_ready_since(0).local_data().build();
        workers.push(worker("i-new").launched(50 * MIN).node().build());
        let r = run(&workers, &[], true, &policy());
        assert_eq!(
            r,
            Some(RepairAction::Refused(RepairRefusal::LocalData { nodes: vec!["node-i-dead".into()] }))
        );
        let input = RepairInput {
            workers: &workers,
            interrupted: &[],
            cluster_seen: true,
            policy: &policy(),
            backoffs: &[],
            now: NOW,
        };
        assert_eq!(blocked_nodes(&input), vec!["node-i-dead".to_string()]);
        assert_eq!(RepairRefusal::LocalData { nodes: Vec::new() }.label(), "repair_blocked_local_data");
    }

    #[test]
    fn local_data_is_any_local_storage_or_node_local_volume_not_vouched_for() {
        let pod = |f: fn(&mut PodFacts)| {
            let mut p = PodFacts { controller_kind: Some("StatefulSet".into()), ..PodFacts::default() };
            f(&mut p);
            p
        };
        assert!(!holds_local_data(&[pod(|_| {})]));
        assert!(holds_local_data(&[pod(|p| p.node_local_volume = true)]));
        // No controller as well: still local data (the first blocker is not what counts).
        assert!(holds_local_data(&[pod(|p| {
            p.local_storage = true;
            p.controller_kind = None;
        })]));
        assert!(!holds_local_data(&[pod(|p| {
            p.local_storage = true;
            p.safe_to_evict = Some(true);
        })]));
    }

    #[test]
    fn with_every_zone_backed_off_the_repair_waits() {
        let backoffs: Vec<CapacityBackoff> = ["a", "b"]
            .iter()
            .flat_map(|az| {
                [super::super::model::Market::Spot, super::super::model::Market::OnDemand].map(|market| {
                    CapacityBackoff {
                        instance_type: None,
                        code: String::new(),
                        az: az.to_string(),
                        market,
                        until: NOW.plus(Duration::from_secs(60)),
                    }
                })
            })
            .collect();
        let workers = pool_with_dead(0);
        let p = policy();
        let r = assess(RepairInput {
            workers: &workers,
            interrupted: &[],
            cluster_seen: true,
            policy: &p,
            backoffs: &backoffs,
            now: NOW,
        });
        assert_eq!(r, Some(RepairAction::Refused(RepairRefusal::NoCapacity { node: "node-i-dead".into() })));
    }
}
