//! Builders for core tests: `worker("i-1").in_az("a").node().pods(3).build()`.

use std::time::Duration;

use super::model::{CapacityPreference, Market, NodeView, PoolPolicy, Worker};
use super::time::Timestamp;

/// A two-zone pool (zones "a" and "b"), min 1, max 5, max step 3, spot first.
pub fn policy() -> PoolPolicy {
    PoolPolicy {
        name: "workers".into(),
        min: 1,
        max: 5,
        max_step: 3,
        scale_up_cooldown: Duration::from_secs(60),
        scale_down_cooldown: Duration::from_secs(600),
        subnets: vec![("a".into(), "subnet-a".into()), ("b".into(), "subnet-b".into())],
        instance_types: Vec::new(),
        capacity: CapacityPreference::SpotFirst,
        join_timeout: Duration::from_secs(600),
        drain_timeout: Duration::from_secs(300),
        max_unready_share: 0.45,
        repair_after: Some(Duration::from_secs(600)),
        prices: Default::default(),
    }
}

/// Starts a worker: on-demand, zone "a", no node yet.
pub fn worker(instance_id: &str) -> WorkerBuilder {
    WorkerBuilder(Worker {
        instance_id: instance_id.into(),
        az: "a".into(),
        market: Market::OnDemand,
        launched_at: Timestamp::from_millis(0),
        instance_type: None,
        node: None,
    })
}

/// Fluent edits of a test worker.
pub struct WorkerBuilder(Worker);

impl WorkerBuilder {
    pub fn in_az(mut self, az: &str) -> Self {
        self.0.az = az.into();
        self
    }
    pub fn of_type(mut self, instance_type: &str) -> Self {
        self.0.instance_type = Some(instance_type.into());
        self
    }
    pub fn spot(mut self) -> Self {
        self.0.market = Market::Spot;
        self
    }
    pub fn launched(mut self, millis: u64) -> Self {
        self.0.launched_at = Timestamp::from_millis(millis);
        self
    }
    /// Gives the worker a Ready, uncordoned, unblocked node with no pods.
    pub fn node(mut self) -> Self {
        self.0.node = Some(NodeView {
            name: format!("node-{}", self.0.instance_id),
            ready: true,
            ..NodeView::default()
        });
        self
    }
    fn node_mut(&mut self) -> &mut NodeView {
        self.0.node.as_mut().expect("call .node() first")
    }
    pub fn not_ready(mut self) -> Self {
        self.node_mut().ready = false;
        self
    }
    /// NotReady since `millis`.
    pub fn not_ready_since(mut self, millis: u64) -> Self {
        self.node_mut().ready = false;
        self.node_mut().not_ready_since = Some(Timestamp::from_millis(millis));
        self
    }
    pub fn local_data(mut self) -> Self {
        self.node_mut().holds_local_data = true;
        self
    }
    pub fn cordoned(mut self) -> Self {
        self.node_mut().cordoned = true;
        self
    }
    pub fn pods(mut self, n: usize) -> Self {
        self.node_mut().evictable_pods = n;
        self
    }
    pub fn blocked(mut self, reason: &str) -> Self {
        self.node_mut().blockers.push(reason.into());
        self
    }
    pub fn build(self) -> Worker {
        self.0
    }
}
