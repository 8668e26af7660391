//! The invariants, checked from the outside only: moto through its own API (not through the
//! proxy), the fake API server's state and request log, the proxy's view of each call as it
//! went out. Never the service's word (its metrics or logs).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use aws_sdk_dynamodb::types::AttributeValue;
use k8s_openapi::api::core::v1::{Node, Pod};

use crate::support::World;
use crate::support::joiner::node_name;
use crate::support::kube_api::FakeKube;

/// The pod label the soak puts on the drain blockers it binds to some nodes.
pub const BLOCKER_LABEL: &str = "soak-blocker";

/// `namespace/name` prefix of those blockers.
pub const BLOCKER_PREFIX: &str = "soak/blocker-";

/// The timings the bounds are computed from.
#[derive(Clone, Copy)]
pub struct Bounds {
    pub max: usize,
    pub min: usize,
    pub join_timeout: Duration,
    pub drain_timeout: Duration,
    pub sweep: Duration,
    pub lease_ttl: Duration,
}

/// Shared between the checker, the proxy's call hook and the runner.
#[derive(Default)]
pub struct Seen {
    pub violations: Vec<String>,
    /// Instances whose spot interruption warning was sent (their drain may break the rules).
    pub spot_warned: BTreeSet<String>,
    /// Op id → (subnet → largest TotalTargetCapacity of its CreateFleet calls there).
    pub launch_requests: BTreeMap<String, BTreeMap<String, u32>>,
    /// Periods when no replica could act (DynamoDB down, or every replica dead).
    pub outages: Vec<(Instant, Option<Instant>)>,
}

impl Seen {
    /// How long the service could not act since `since`.
    pub fn outage_since(&self, since: Instant) -> Duration {
        let now = Instant::now();
        self.outages
            .iter()
            .map(|(from, to)| {
                let (from, to) = ((*from).max(since), to.unwrap_or(now));
                to.saturating_duration_since(from)
            })
            .sum()
    }
}

pub type SharedSeen = Arc<Mutex<Seen>>;

fn form(body: &[u8]) -> HashMap<String, String> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.replace("%2F", "/")))
        .collect()
}

fn provider_instance(n: &Node) -> Option<&str> {
    n.spec.as_ref()?.provider_id.as_deref()?.rsplit('/').next()
}

fn ready(n: &Node) -> bool {
    let conditions = n.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn is_blocker(p: &Pod) -> bool {
    p.metadata.labels.as_ref().is_some_and(|l| l.contains_key(BLOCKER_LABEL))
}

/// A pod that still runs and a drain must move first: not a DaemonSet or mirror pod, not
/// finished. A terminating pod still runs until its grace period ends.
fn still_runs(p: &Pod) -> bool {
    let daemon =
        p.metadata.owner_references.as_ref().is_some_and(|o| o.iter().any(|o| o.kind == "DaemonSet"));
    let mirror =
        p.metadata.annotations.as_ref().is_some_and(|a| a.contains_key("kubernetes.io/config.mirror"));
    let phase = p.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("");
    !daemon && !mirror && phase != "Succeeded" && phase != "Failed"
}

/// The proxy's hook: records what each CreateFleet asked for, and checks every
/// TerminateInstances against what still runs on the instances' nodes at that moment.
pub fn on_call(kube: Arc<FakeKube>, seen: SharedSeen) -> impl Fn(&str, &[u8]) + Send + Sync + 'static {
    move |api, body| {
        let fields = form(body);
        if api == "CreateFleet" {
            let op = fields
                .iter()
                .find(|(k, v)| k.ends_with(".Key") && *v == "k3s-autoscaler/op-id")
                .and_then(|(k, _)| fields.get(&k.replace(".Key", ".Value")))
                .cloned()
                .unwrap_or_default();
            // One call per zone: every override names the same subnet.
            let subnet = fields
                .iter()
                .find(|(k, _)| k.ends_with(".SubnetId"))
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            let count = fields
                .get("TargetCapacitySpecification.TotalTargetCapacity")
                .and_then(|c| c.parse().ok())
                .unwrap_or(0);
            let mut seen = seen.lock().unwrap();
            let asked = seen.launch_requests.entry(op).or_default().entry(subnet).or_default();
            *asked = (*asked).max(count);
        }
        if api == "TerminateInstances" {
            let ids: Vec<&String> =
                fields.iter().filter(|(k, _)| k.starts_with("InstanceId.")).map(|(_, v)| v).collect();
            let pods = kube.pods();
            let mut seen = seen.lock().unwrap();
            for id in ids {
                if seen.spot_warned.contains(id) {
                    continue;
                }
                let node = node_name(id);
                let on_node: Vec<&Pod> = pods
                    .iter()
                    .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some(&node))
                    .collect();
                let running: Vec<String> = on_node
                    .iter()
                    .filter(|p| still_runs(p))
                    .map(|p| {
                        format!(
                            "{}/{}",
                            p.metadata.namespace.clone().unwrap_or_default(),
                            p.metadata.name.clone().unwrap_or_default()
                        )
                    })
                    .collect();
                if on_node.iter().any(|p| is_blocker(p)) {
                    seen.violations.push(format!(
                        "{id} terminated while its node {node} holds a drain blocker: {running:?}"
                    ));
                } else if !running.is_empty() {
                    seen.violations
                        .push(format!("{id} terminated while pods still run on {node}: {running:?}"));
                }
            }
        }
    }
}

/// The continuous checker.
pub struct Checker {
    bounds: Bounds,
    seen: SharedSeen,
    /// Instance → since when it has had no Ready node.
    unjoined_since: HashMap<String, Instant>,
    /// Op id → when it was first seen in flight, and whether it was reported.
    ops: HashMap<String, (Instant, bool)>,
    evictions_checked: usize,
    reported_orphans: BTreeSet<String>,
    pub peak: usize,
    pub samples: usize,
    /// The run's start: violations say when they were seen, to find them in the history.
    started: Instant,
}

impl Checker {
    pub fn new(bounds: Bounds, seen: SharedSeen, started: Instant) -> Checker {
        Checker {
            started,
            bounds,
            seen,
            unjoined_since: HashMap::new(),
            ops: HashMap::new(),
            evictions_checked: 0,
            reported_orphans: BTreeSet::new(),
            peak: 0,
            samples: 0,
        }
    }

    fn violation(&self, text: String) {
        let at = self.started.elapsed().as_secs_f64();
        self.seen.lock().unwrap().violations.push(format!("at {at:.2}s: {text}"));
    }

    /// Allowed time without a Ready node: join_timeout + one sweep + a lease expiry + the
    /// time nothing could act, plus 5 s for the joiner and this poll.
    fn orphan_bound(&self, since: Instant) -> Duration {
        let b = self.bounds;
        b.join_timeout
            + b.sweep
            + b.lease_ttl * 2
            + Duration::from_secs(5)
            + self.seen.lock().unwrap().outage_since(since)
    }

    /// Allowed time in flight: the longer of the op timeouts, plus the same margins.
    fn op_bound(&self, since: Instant) -> Duration {
        let b = self.bounds;
        b.join_timeout.max(b.drain_timeout)
            + b.sweep * 3
            + b.lease_ttl * 2
            + Duration::from_secs(5)
            + self.seen.lock().unwrap().outage_since(since)
    }

    /// One look at the world.
    pub async fn check(&mut self, world: &World) {
        self.samples += 1;
        let now = Instant::now();
        let live = world.instances().await;
        // An instance EC2 has warned is already going (reclaimed two minutes later): its
        // replacement is launched at once, counting it as gone (scaling-algorithm.md §11).
        let counted: Vec<&String> = {
            let seen = self.seen.lock().unwrap();
            live.iter().map(|(id, _, _)| id).filter(|id| !seen.spot_warned.contains(*id)).collect()
        };
        self.peak = self.peak.max(counted.len());
        if counted.len() > self.bounds.max {
            self.violation(format!(
                "{} managed instances besides spot-warned ones, max is {}: {counted:?}",
                counted.len(),
                self.bounds.max
            ));
        }
        let nodes = world.kube.nodes();
        let ready_ids: BTreeSet<&str> =
            nodes.iter().filter(|n| ready(n)).filter_map(provider_instance).collect();
        self.unjoined_since.retain(|id, _| live.iter().any(|(l, _, _)| l == id));
        for (id, _, _) in &live {
            if ready_ids.contains(id.as_str()) {
                self.unjoined_since.remove(id);
                continue;
            }
            let since = *self.unjoined_since.entry(id.clone()).or_insert(now);
            if now - since > self.orphan_bound(since) && self.reported_orphans.insert(id.clone()) {
                self.violation(format!("orphan: {id} has had no Ready node for {:?}", now - since));
            }
        }
        self.check_evictions(&world.kube);
        self.check_op(world, now).await;
    }

    fn check_evictions(&mut self, kube: &FakeKube) {
        let log = kube.eviction_log();
        for e in &log[self.evictions_checked.min(log.len())..] {
            let Some(node) = &e.node else { continue };
            let instance = node.strip_prefix("node-").unwrap_or(node);
            let warned = self.seen.lock().unwrap().spot_warned.contains(instance);
            // A pod still bound to a deleted Node (EC2 reclaimed the instance, the Node went)
            // runs nowhere: evicting it takes nothing from a serving node.
            if e.node_exists && !e.cordoned {
                self.violation(format!("eviction of {} from {node}, which is not being drained", e.pod));
            }
            if e.pod.starts_with(BLOCKER_PREFIX) && !warned {
                self.violation(format!("eviction of drain blocker {} on {node}", e.pod));
            }
        }
        self.evictions_checked = log.len();
    }

    async fn check_op(&mut self, world: &World, now: Instant) {
        let state = world.aws.items(&world.config.table, &world.config.cluster_id, "state#workers").await;
        let Some(AttributeValue::M(op)) = state.first().and_then(|s| s.get("op")) else { return };
        let Some(AttributeValue::S(id)) = op.get("id") else { return };
        let (since, reported) = *self.ops.entry(id.clone()).or_insert((now, false));
        if !reported && now - since > self.op_bound(since) {
            self.ops.insert(id.clone(), (since, true));
            self.violation(format!("operation {id} in flight for {:?}", now - since));
        }
    }

    /// At the end: no op launched more than it asked for, and the audit trail matches moto.
    pub async fn check_history(&self, world: &World) -> usize {
        let all = world.aws.all_instances(&world.config.cluster_id).await;
        let requests = self.seen.lock().unwrap().launch_requests.clone();
        let mut by_op: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (id, _, op) in &all {
            by_op.entry(op.as_str()).or_default().push(id);
        }
        for (op, ids) in &by_op {
            let asked: u32 = requests.get(*op).map(|r| r.values().sum()).unwrap_or(0);
            if ids.len() > asked as usize {
                self.violation(format!(
                    "operation {op} launched {} instances, asked for {asked}: {ids:?}",
                    ids.len()
                ));
            }
        }
        let events = world.aws.items(&world.config.table, &world.config.cluster_id, "event#").await;
        let mut launches = 0;
        for event in &events {
            let text = |k: &str| match event.get(k) {
                Some(AttributeValue::S(s)) => s.clone(),
                _ => String::new(),
            };
            if text("kind") != "outcome" || text("reason_label") != "succeeded" {
                continue;
            }
            let named = instance_ids(event.get("detail"));
            match text("action").as_str() {
                "launch" => {
                    launches += 1;
                    for id in &named {
                        let found = all.iter().find(|(i, _, _)| i == id);
                        if found.is_none_or(|(_, _, op)| *op != text("op_id")) {
                            self.violation(format!(
                                "audit: launch {} names {id}, which moto has not under that op",
                                text("op_id")
                            ));
                        }
                    }
                }
                "drain" => {
                    for id in &named {
                        if all
                            .iter()
                            .any(|(i, state, _)| i == id && (state == "pending" || state == "running"))
                        {
                            self.violation(format!(
                                "audit: drain {} succeeded but {id} still runs",
                                text("op_id")
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        launches
    }
}

/// Every `i-…` string inside an audit record's detail.
fn instance_ids(detail: Option<&AttributeValue>) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack: Vec<&AttributeValue> = detail.into_iter().collect();
    while let Some(v) = stack.pop() {
        match v {
            AttributeValue::S(s) if s.starts_with("i-") => out.push(s.clone()),
            AttributeValue::M(m) => stack.extend(m.values()),
            AttributeValue::L(l) => stack.extend(l.iter()),
            _ => {}
        }
    }
    out
}
