//! The plain data the decision core reasons about: signals, workers, pool state and operations.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::time::Timestamp;

/// Which way an alert asks the pool to move.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// Add nodes (`autoscaler: scale-up`).
    Up,
    /// Remove a node (`autoscaler: scale-down`).
    Down,
}

impl Direction {
    /// The label value Alertmanager sends and records store.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::Up => "scale-up",
            Direction::Down => "scale-down",
        }
    }

    /// Parses the `autoscaler` label; anything else is not ours.
    pub fn from_label(value: &str) -> Option<Self> {
        match value {
            "scale-up" => Some(Direction::Up),
            "scale-down" => Some(Direction::Down),
            _ => None,
        }
    }
}

/// An active request to scale, distilled from one firing alert.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signal {
    /// Node pool the alert targets.
    pub pool: String,
    /// Scale up or down.
    pub direction: Direction,
    /// Nodes per action the alert asks for (capped later by the pool's `max_step`).
    pub step: u32,
    /// The human reason (`summary`/`description` annotation), copied into every record.
    pub reason: String,
    /// Alertmanager's fingerprint: identifies the alert across repeats and its resolution.
    pub fingerprint: String,
    /// Name of the alert rule, for logs and records.
    pub alertname: String,
}

/// How an instance is bought. Spot is cheaper but can be reclaimed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Market {
    /// EC2 spot capacity.
    Spot,
    /// Regular on-demand capacity.
    OnDemand,
}

impl Market {
    /// The spelling used in tags, node labels and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Market::Spot => "spot",
            Market::OnDemand => "on-demand",
        }
    }
}

impl fmt::Display for Market {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One managed worker as the core sees it: its instance, and its node once it has joined.
#[derive(Debug, Clone, PartialEq)]
pub struct Worker {
    /// EC2 instance id; the identity everything else maps to.
    pub instance_id: String,
    /// Availability zone of the instance.
    pub az: String,
    /// Spot or on-demand.
    pub market: Market,
    /// When EC2 launched it.
    pub launched_at: Timestamp,
    /// Its instance type, when EC2 said (a fleet may launch any of the pool's types).
    pub instance_type: Option<String>,
    /// The Kubernetes view of the node, absent until the node has registered.
    pub node: Option<NodeView>,
}

impl Worker {
    /// Whether the worker can take pods now: a Ready, schedulable node. What `min`, the
    /// unhealthy guard and the one-per-zone rule count.
    pub fn serves(&self) -> bool {
        self.node.as_ref().is_some_and(|n| n.ready && !n.cordoned)
    }
}

/// What Kubernetes says about a worker's node, reduced to what decisions need.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct NodeView {
    /// Node name (not used for identity; providerID is).
    pub name: String,
    /// `Ready` condition is True.
    pub ready: bool,
    /// `spec.unschedulable` is set.
    pub cordoned: bool,
    /// Pods that would have to move off the node (DaemonSet and mirror pods excluded).
    pub evictable_pods: usize,
    /// Why this node may not be drained; empty when it is a candidate.
    pub blockers: Vec<String>,
    /// When the `Ready` condition last changed, while it is not True: how long the node has
    /// been NotReady (node repair).
    pub not_ready_since: Option<Timestamp>,
    /// A pod on the node keeps data there (local storage or a node-local PersistentVolume):
    /// node repair never terminates such a node.
    pub holds_local_data: bool,
}

/// An operation that changes the pool and takes time; at most one per pool is in flight.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// Unique id; also the EC2 `ClientToken` prefix and the `op-id` tag of launched instances.
    pub id: String,
    /// What the operation does, with its progress.
    pub kind: OperationKind,
    /// Why it was started: the signal's reason.
    pub reason: String,
    /// When it was written ahead.
    pub started_at: Timestamp,
    /// Past this, the sweeper gives up on it (join timeout, drain timeout).
    pub deadline: Timestamp,
}

/// The two kinds of scaling operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum OperationKind {
    /// Launch instances, then wait for their nodes.
    Launch(LaunchOp),
    /// Drain one node, then terminate its instance.
    Drain(DrainOp),
}

impl OperationKind {
    /// Short name for logs and metrics.
    pub fn label(&self) -> &'static str {
        match self {
            OperationKind::Launch(_) => "launch",
            OperationKind::Drain(_) => "drain",
        }
    }
}

/// A launch: the placement chosen by the core, then the instances EC2 returned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LaunchOp {
    /// Where to launch, one request per availability zone.
    pub requests: Vec<LaunchRequest>,
    /// Instances launched so far; empty until RunInstances has answered.
    #[serde(default)]
    pub instances: Vec<LaunchedInstance>,
    /// Whether RunInstances has been issued and its answer recorded.
    pub phase: LaunchPhase,
    /// Markets EC2 answered with a failure, per request: written before the next market is
    /// tried, so a resumed launch re-issues exactly the call whose outcome is unknown (same
    /// market, same ClientToken) and never opens a second market for a request whose first
    /// call may have launched. Empty in records written before it existed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailedAttempt>,
}

/// A RunInstances call known to have failed: request `request` (its index) in `market`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedAttempt {
    /// Index of the request in [`LaunchOp::requests`].
    pub request: usize,
    /// The market that failed.
    pub market: Market,
}

/// Where a launch stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LaunchPhase {
    /// Written ahead; RunInstances may or may not have reached EC2.
    Requested,
    /// RunInstances answered; instances are booting.
    Launched,
}

/// Nodes to launch in one availability zone, in market order of preference.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchRequest {
    /// Availability zone.
    pub az: String,
    /// Subnet of the pool in that zone.
    pub subnet_id: String,
    /// Number of instances.
    pub count: u32,
    /// Markets to try in order (spot first, on-demand fallback).
    pub markets: Vec<Market>,
}

/// An instance a launch produced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaunchedInstance {
    /// EC2 instance id.
    pub instance_id: String,
    /// Availability zone.
    pub az: String,
    /// How it was bought.
    pub market: Market,
    /// Instance type, when EC2 said; absent in records written before fleets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
}

/// A drain of one node, identified by its instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DrainOp {
    /// EC2 instance id behind the node.
    pub instance_id: String,
    /// Node name at the time the drain was chosen.
    pub node: String,
    /// Availability zone, for balance accounting.
    pub az: String,
    /// How far the drain has come.
    #[serde(default)]
    pub phase: DrainPhase,
    /// A node repair drain of a NotReady node: its pods cannot confirm termination, so at
    /// the deadline the instance is terminated (no local data) instead of the drain aborted.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub repair: bool,
}

/// Where a drain stands; each step is idempotent, so a resumed drain repeats the last one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum DrainPhase {
    /// Chosen; the node is not cordoned yet.
    #[default]
    Started,
    /// Cordoned; evicting until only DaemonSet and mirror pods remain.
    Evicting,
    /// Empty of pods that must move, checked live: TerminateInstances is being issued. Written
    /// ahead of the call, so a pass that fails after terminating resumes here (re-terminates if
    /// needed) and is never taken for a drain that terminated nothing.
    Terminating,
    /// The instance is terminated; the Node object is deleted next.
    Terminated,
}

impl DrainPhase {
    /// Whether the drain has not reached TerminateInstances yet, so it can still be undone
    /// (uncordon) by a scale-up: `Terminating` may already have terminated the instance.
    pub fn before_terminate(self) -> bool {
        matches!(self, DrainPhase::Started | DrainPhase::Evicting)
    }
}

/// An offering (instance type, zone, market) that recently failed for lack of capacity and
/// is skipped until `until`. Without an instance type it covers every type of the (zone,
/// market): a pool that launches the launch template's own type, or a record written before
/// offerings were remembered per type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CapacityBackoff {
    /// Instance type that failed; `None` for every type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub instance_type: Option<String>,
    /// Availability zone.
    pub az: String,
    /// Market that failed there.
    pub market: Market,
    /// Skip it until this instant.
    pub until: Timestamp,
    /// EC2's error code, for `status` and metrics; empty in records written before it existed.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub code: String,
}

/// The last completed scaling action, which starts the cooldowns.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastScale {
    /// When the action completed.
    pub at: Timestamp,
    /// Which way it went.
    pub direction: Direction,
}

/// The durable per-pool state the core needs (the `state#<pool>` record minus the lease).
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PoolState {
    /// The operation in flight, if any.
    pub op: Option<Operation>,
    /// The last completed action.
    pub last_scale: Option<LastScale>,
    /// Capacity failures still remembered.
    pub backoffs: Vec<CapacityBackoff>,
}

impl PoolState {
    /// Backoffs still in force at `now`; expired ones are dropped when state is written.
    pub fn live_backoffs(&self, now: Timestamp) -> impl Iterator<Item = &CapacityBackoff> {
        self.backoffs.iter().filter(move |b| b.until > now)
    }
}

/// Which markets a pool may buy, in preference order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CapacityPreference {
    /// Spot, falling back to on-demand in the same notification.
    SpotFirst,
    /// On-demand only.
    OnDemand,
    /// Spot only; no fallback.
    SpotOnly,
}

impl CapacityPreference {
    /// Markets in the order they are tried.
    pub fn markets(self) -> &'static [Market] {
        match self {
            CapacityPreference::SpotFirst => &[Market::Spot, Market::OnDemand],
            CapacityPreference::OnDemand => &[Market::OnDemand],
            CapacityPreference::SpotOnly => &[Market::Spot],
        }
    }
}

/// The pool limits and timings the core enforces, copied out of the config.
#[derive(Debug, Clone, PartialEq)]
pub struct PoolPolicy {
    /// Pool name.
    pub name: String,
    /// Fewest workers the pool keeps.
    pub min: u32,
    /// Most workers the pool may have, counting in-flight launches.
    pub max: u32,
    /// Largest step one action may take.
    pub max_step: u32,
    /// Quiet time after a scale-up before the next scale-up.
    pub scale_up_cooldown: Duration,
    /// Quiet time after any scale action before a scale-down.
    pub scale_down_cooldown: Duration,
    /// Zone → subnet the pool may launch into.
    pub subnets: Vec<(String, String)>,
    /// Instance types a launch may use; empty: the launch template's own type.
    pub instance_types: Vec<String>,
    /// Which markets to buy.
    pub capacity: CapacityPreference,
    /// Time a launch may take until its node is Ready.
    pub join_timeout: Duration,
    /// Time a drain may take before it is aborted.
    pub drain_timeout: Duration,
    /// Above this share of NotReady nodes, no scale-down and no node repair.
    pub max_unready_share: f64,
    /// A node NotReady this long is replaced (node repair); `None` turns repair off.
    pub repair_after: Option<Duration>,
    /// Hourly prices by instance type: a scale-down removes the most expensive of the
    /// equally safe nodes.
    pub prices: super::prices::Prices,
}
