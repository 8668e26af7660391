//! Test doubles of the edges, with the same semantics as the real adapters (lease conditions,
//! fencing tokens, tag-scoped instances), so the service can be unit-tested without I/O.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;

use super::Clock;
use super::cluster::{Cluster, ClusterError, EvictOutcome, NodeEvent, NodeSnapshot};
use super::compute::{
    Compute, ComputeError, FleetAnswer, FleetSpec, InstanceState, ManagedInstance, OfferingError,
};
use super::sink::EventSink;
use super::store::{AuditEvent, Lease, LeaseAction, PoolRecord, StateStore, StoreError};
use crate::core::drainability::PodFacts;
use crate::core::interruption::{InterruptPhase, Interruption};
use crate::core::model::{Market, PoolState, Signal};
use crate::core::time::Timestamp;

/// A clock the test moves by hand.
pub struct ManualClock(AtomicU64);

impl ManualClock {
    pub fn at(millis: u64) -> Self {
        Self(AtomicU64::new(millis))
    }
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.0.load(Ordering::SeqCst))
    }
}

#[derive(Default)]
struct StoreData {
    signals: HashMap<(String, String), (Signal, Timestamp)>,
    pools: HashMap<String, PoolRecord>,
    events: Vec<AuditEvent>,
    interruptions: HashMap<String, (Interruption, u64)>,
}

/// In-memory [`StateStore`]; `set_down(true)` makes every call fail as unreachable.
#[derive(Default)]
pub struct MemoryStore {
    data: Mutex<StoreData>,
    down: AtomicBool,
    /// Writes are refused as invalid (DynamoDB's ValidationException).
    rejecting: AtomicBool,
    pub writes: AtomicU64,
}

impl MemoryStore {
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }
    pub fn set_rejecting(&self, rejecting: bool) {
        self.rejecting.store(rejecting, Ordering::SeqCst);
    }
    pub fn events(&self) -> Vec<AuditEvent> {
        self.data.lock().unwrap().events.clone()
    }
    pub fn interruption(&self, instance_id: &str) -> Option<Interruption> {
        self.data.lock().unwrap().interruptions.get(instance_id).map(|(r, _)| r.clone())
    }
    pub fn record(&self, pool: &str) -> PoolRecord {
        self.data.lock().unwrap().pools.get(pool).cloned().unwrap_or_default()
    }
    pub fn set_record(&self, pool: &str, record: PoolRecord) {
        self.data.lock().unwrap().pools.insert(pool.into(), record);
    }
    fn check(
        &self,
        operation: &'static str,
        write: bool,
    ) -> Result<std::sync::MutexGuard<'_, StoreData>, StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Unavailable { operation, message: "connection refused".into() });
        }
        if write && self.rejecting.load(Ordering::SeqCst) {
            return Err(StoreError::Rejected {
                operation,
                message: "Item size has exceeded the maximum".into(),
            });
        }
        if write {
            self.writes.fetch_add(1, Ordering::SeqCst);
        }
        Ok(self.data.lock().unwrap())
    }
}

/// The fencing condition of every write under a lease: same token, same owner.
fn still_mine(record: &PoolRecord, lease: &Lease) -> Result<(), StoreError> {
    let mine = record.fencing_token == lease.fencing_token
        && record.lease.as_ref().is_some_and(|(holder, _)| holder == &lease.owner);
    if !mine {
        return Err(StoreError::LeaseLost { pool: lease.pool.clone(), token: lease.fencing_token });
    }
    Ok(())
}

#[async_trait]
impl StateStore for MemoryStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.check("DescribeTable", false).map(|_| ())
    }
    async fn put_signal(&self, signal: &Signal, expires_at: Timestamp) -> Result<(), StoreError> {
        let mut d = self.check("PutItem", true)?;
        d.signals.insert((signal.pool.clone(), signal.fingerprint.clone()), (signal.clone(), expires_at));
        Ok(())
    }
    async fn delete_signal(&self, pool: &str, fingerprint: &str) -> Result<(), StoreError> {
        let mut d = self.check("DeleteItem", true)?;
        d.signals.remove(&(pool.to_string(), fingerprint.to_string()));
        Ok(())
    }
    async fn active_signals(&self, pool: &str, now: Timestamp) -> Result<Vec<Signal>, StoreError> {
        let d = self.check("Query", false)?;
        Ok(d.signals
            .values()
            .filter(|(s, exp)| s.pool == pool && *exp > now)
            .map(|(s, _)| s.clone())
            .collect())
    }
    async fn read_pool(&self, pool: &str) -> Result<PoolRecord, StoreError> {
        let d = self.check("GetItem", false)?;
        Ok(d.pools.get(pool).cloned().unwrap_or_default())
    }
    async fn begin(
        &self,
        pool: &str,
        seen_token: u64,
        state: &PoolState,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        let mut d = self.check("UpdateItem", true)?;
        let record = d.pools.entry(pool.into()).or_default();
        let lease_free = record.lease.as_ref().is_none_or(|(_, exp)| *exp < now);
        if record.fencing_token != seen_token || !lease_free || record.state.op.is_some() {
            return Err(StoreError::Contended { pool: pool.into() });
        }
        record.fencing_token += 1;
        record.lease = Some((owner.into(), now.plus(ttl)));
        record.state.op = state.op.clone();
        record.state.backoffs = state.backoffs.clone();
        Ok(Lease { pool: pool.into(), owner: owner.into(), fencing_token: record.fencing_token })
    }
    async fn acquire(
        &self,
        pool: &str,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<(Lease, PoolRecord), StoreError> {
        let mut d = self.check("UpdateItem", true)?;
        let record = d.pools.entry(pool.into()).or_default();
        let free = record.lease.as_ref().is_none_or(|(holder, exp)| *exp < now || holder == owner);
        if !free {
            return Err(StoreError::Contended { pool: pool.into() });
        }
        record.fencing_token += 1;
        record.lease = Some((owner.into(), now.plus(ttl)));
        let lease = Lease { pool: pool.into(), owner: owner.into(), fencing_token: record.fencing_token };
        Ok((lease, record.clone()))
    }
    async fn save(
        &self,
        lease: &Lease,
        state: &PoolState,
        node_count: Option<u32>,
        lease_action: LeaseAction,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let mut d = self.check("UpdateItem", true)?;
        let record = d.pools.entry(lease.pool.clone()).or_default();
        still_mine(record, lease)?;
        record.state = PoolState { backoffs: state.live_backoffs(now).cloned().collect(), ..state.clone() };
        if let Some(count) = node_count {
            record.node_count = count;
        }
        record.lease = match lease_action {
            LeaseAction::Extend => Some((lease.owner.clone(), now.plus(ttl))),
            LeaseAction::Release => None,
        };
        Ok(())
    }
    async fn renew(&self, lease: &Lease, now: Timestamp, ttl: Duration) -> Result<(), StoreError> {
        let mut d = self.check("UpdateItem", true)?;
        let record = d.pools.entry(lease.pool.clone()).or_default();
        still_mine(record, lease)?;
        record.lease = Some((lease.owner.clone(), now.plus(ttl)));
        Ok(())
    }
    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        let mut d = self.check("UpdateItem", true)?;
        let record = d.pools.entry(lease.pool.clone()).or_default();
        if record.fencing_token == lease.fencing_token {
            record.lease = None;
        }
        Ok(())
    }
    async fn record_event(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let mut d = self.check("PutItem", true)?;
        d.events.push(event.clone());
        Ok(())
    }
    async fn recent_events(&self, pool: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let d = self.check("Query", false)?;
        Ok(d.events.iter().rev().filter(|e| e.pool == pool).take(limit).cloned().collect())
    }
    async fn create_interruption(&self, record: &Interruption) -> Result<bool, StoreError> {
        let mut d = self.check("PutItem", true)?;
        if d.interruptions.contains_key(&record.instance_id) {
            return Ok(false);
        }
        d.interruptions.insert(record.instance_id.clone(), (record.clone(), 1));
        Ok(true)
    }
    async fn open_interruptions(&self) -> Result<Vec<(Interruption, u64)>, StoreError> {
        let d = self.check("Query", false)?;
        Ok(d.interruptions.values().filter(|(r, _)| r.phase == InterruptPhase::Open).cloned().collect())
    }
    async fn interruptions(&self) -> Result<Vec<(Interruption, u64)>, StoreError> {
        let d = self.check("Query", false)?;
        Ok(d.interruptions.values().cloned().collect())
    }
    async fn save_interruption(&self, record: &Interruption, seen: u64) -> Result<(), StoreError> {
        let mut d = self.check("PutItem", true)?;
        match d.interruptions.get_mut(&record.instance_id) {
            Some(entry) if entry.1 == seen => {
                *entry = (record.clone(), seen + 1);
                Ok(())
            }
            _ => Err(StoreError::Contended { pool: record.pool.clone() }),
        }
    }
}

/// Scriptable [`Compute`]: records every fleet launch; failures are queued per market (a
/// capacity failure answers, as EC2's instant fleet does, with an error per offering and no
/// instance), and single offerings can be made short.
#[derive(Default)]
pub struct FakeCompute {
    pub instances: Mutex<Vec<ManagedInstance>>,
    pub launches: Mutex<Vec<FleetSpec>>,
    /// (instance type, market) offerings with no capacity: answered as per-offering errors.
    pub short: Mutex<Vec<(String, Market)>>,
    failures: Mutex<HashMap<Market, Vec<ComputeError>>>,
    /// When set, a launch creates its instances and then reports an unknown outcome.
    pub lose_answers: AtomicBool,
    /// Called after every successful terminate (e.g. to take the store down right after it).
    pub after_terminate: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
    next_id: AtomicU64,
    /// Spot request status code by instance id, as DescribeSpotInstanceRequests reports it.
    spot_status: Mutex<HashMap<String, String>>,
}

impl FakeCompute {
    /// The next launch in `market` fails with `error`.
    pub fn fail_next(&self, market: Market, error: ComputeError) {
        self.failures.lock().unwrap().entry(market).or_default().push(error);
    }
    pub fn list_pool_now(&self) -> Vec<ManagedInstance> {
        self.instances.lock().unwrap().iter().filter(|i| i.state != InstanceState::Gone).cloned().collect()
    }
    pub fn launch_count(&self) -> usize {
        self.launches.lock().unwrap().len()
    }
    pub fn add_instance(&self, instance_id: &str, az: &str, pool: &str) {
        self.add_instance_in(instance_id, az, pool, Market::OnDemand);
    }
    pub fn add_spot_instance(&self, instance_id: &str, az: &str, pool: &str) {
        self.add_instance_in(instance_id, az, pool, Market::Spot);
    }
    /// EC2 now reports the instance's spot request with this status code.
    pub fn set_spot_status(&self, instance_id: &str, code: &str) {
        self.spot_status.lock().unwrap().insert(instance_id.into(), code.into());
    }
    fn add_instance_in(&self, instance_id: &str, az: &str, pool: &str, market: Market) {
        self.instances.lock().unwrap().push(ManagedInstance {
            instance_id: instance_id.into(),
            az: az.into(),
            market,
            launched_at: Timestamp::from_millis(0),
            state: InstanceState::Running,
            pool: pool.into(),
            op_id: None,
            instance_type: None,
        });
    }
}

pub fn capacity_error() -> ComputeError {
    ComputeError::Capacity {
        api: "CreateFleet",
        code: "InsufficientInstanceCapacity".into(),
        message: "none".into(),
    }
}

#[async_trait]
impl Compute for FakeCompute {
    async fn list_pool(&self, pool: &str) -> Result<Vec<ManagedInstance>, ComputeError> {
        Ok(self
            .instances
            .lock()
            .unwrap()
            .iter()
            .filter(|i| i.pool == pool && i.state != InstanceState::Gone)
            .cloned()
            .collect())
    }
    async fn find_by_op(&self, op_id: &str) -> Result<Vec<ManagedInstance>, ComputeError> {
        Ok(self
            .instances
            .lock()
            .unwrap()
            .iter()
            .filter(|i| i.op_id.as_deref() == Some(op_id))
            .cloned()
            .collect())
    }
    async fn launch(&self, spec: &FleetSpec) -> Result<FleetAnswer, ComputeError> {
        self.launches.lock().unwrap().push(spec.clone());
        let offering_error = |instance_type: Option<String>, code: &str, message: &str| OfferingError {
            instance_type,
            code: code.into(),
            message: message.into(),
        };
        match self.failures.lock().unwrap().get_mut(&spec.market).and_then(|q| q.pop()) {
            Some(ComputeError::Capacity { code, message, .. }) => {
                let errors = spec
                    .overrides
                    .iter()
                    .map(|o| offering_error(o.instance_type.clone(), &code, &message))
                    .collect();
                return Ok(FleetAnswer { instances: Vec::new(), errors });
            }
            Some(error) => return Err(error),
            None => {}
        }
        let short = self.short.lock().unwrap().clone();
        let is_short =
            |t: &Option<String>| short.iter().any(|(s, m)| Some(s) == t.as_ref() && *m == spec.market);
        let errors: Vec<OfferingError> = spec
            .overrides
            .iter()
            .filter(|o| is_short(&o.instance_type))
            .map(|o| offering_error(o.instance_type.clone(), "InsufficientInstanceCapacity", "short"))
            .collect();
        let Some(chosen) = spec.overrides.iter().find(|o| !is_short(&o.instance_type)) else {
            return Ok(FleetAnswer { instances: Vec::new(), errors });
        };
        let created: Vec<ManagedInstance> = (0..spec.count)
            .map(|_| ManagedInstance {
                instance_id: format!("i-{:04}", self.next_id.fetch_add(1, Ordering::SeqCst)),
                az: spec.az.clone(),
                market: spec.market,
                launched_at: Timestamp::from_millis(0),
                state: InstanceState::Pending,
                pool: spec.pool.clone(),
                op_id: Some(spec.op_id.clone()),
                instance_type: chosen.instance_type.clone(),
            })
            .collect();
        self.instances.lock().unwrap().extend(created.clone());
        if self.lose_answers.load(Ordering::SeqCst) {
            return Err(ComputeError::Unavailable { api: "CreateFleet", message: "timed out".into() });
        }
        Ok(FleetAnswer { instances: created, errors })
    }
    async fn terminate(&self, instance_ids: &[String]) -> Result<(), ComputeError> {
        let mut instances = self.instances.lock().unwrap();
        for id in instance_ids {
            let instance = instances
                .iter_mut()
                .find(|i| &i.instance_id == id)
                .ok_or_else(|| ComputeError::NotManaged(id.clone()))?;
            instance.state = InstanceState::Gone;
        }
        drop(instances);
        if let Some(hook) = self.after_terminate.lock().unwrap().as_ref() {
            hook();
        }
        Ok(())
    }
    async fn spot_request_status(&self, instance_id: &str) -> Result<Option<String>, ComputeError> {
        Ok(self.spot_status.lock().unwrap().get(instance_id).cloned())
    }
}

/// Scriptable [`Cluster`]: nodes and pods in memory; evicting a pod removes it unless a PDB
/// blocks it; every write is recorded.
#[derive(Default)]
pub struct FakeCluster {
    pub nodes: Mutex<Vec<NodeSnapshot>>,
    pub pods: Mutex<HashMap<String, Vec<PodFacts>>>,
    pub evictions: Mutex<Vec<String>>,
    pub deleted_nodes: Mutex<Vec<String>>,
    pub events: Mutex<Vec<(String, &'static str)>>,
    /// Evictions PDB-covered pods may still have; `None` is unlimited.
    pub pdb_budget: Mutex<Option<usize>>,
    /// Names of nodes without the pool label: in `all_nodes_live`, not in `pool_nodes`.
    pub unlabelled: Mutex<Vec<String>>,
    /// Called on every live pod read of a node (e.g. to let another replica take the lease
    /// while this one waits on the API).
    pub during_node_pods: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

impl FakeCluster {
    pub fn add_node(&self, name: &str, az: &str, instance_id: &str, ready: bool) {
        self.nodes.lock().unwrap().push(NodeSnapshot {
            name: name.into(),
            provider_id: Some(format!("aws:///{az}/{instance_id}")),
            ready,
            ..NodeSnapshot::default()
        });
    }
    pub fn add_pod(&self, node: &str, pod: PodFacts) {
        self.pods.lock().unwrap().entry(node.into()).or_default().push(pod);
    }
    pub fn node(&self, name: &str) -> Option<NodeSnapshot> {
        self.nodes.lock().unwrap().iter().find(|n| n.name == name).cloned()
    }
    pub fn event_reasons(&self) -> Vec<&'static str> {
        self.events.lock().unwrap().iter().map(|(_, r)| *r).collect()
    }
}

#[async_trait]
impl Cluster for FakeCluster {
    async fn pool_nodes(&self, _pool: &str) -> Result<Vec<NodeSnapshot>, ClusterError> {
        let unlabelled = self.unlabelled.lock().unwrap();
        Ok(self.nodes.lock().unwrap().iter().filter(|n| !unlabelled.contains(&n.name)).cloned().collect())
    }
    async fn all_nodes_live(&self) -> Result<Vec<NodeSnapshot>, ClusterError> {
        Ok(self.nodes.lock().unwrap().clone())
    }
    async fn node_pods(&self, node: &str) -> Result<Vec<PodFacts>, ClusterError> {
        if let Some(hook) = self.during_node_pods.lock().unwrap().as_ref() {
            hook();
        }
        Ok(self.pods.lock().unwrap().get(node).cloned().unwrap_or_default())
    }
    async fn pods_by_node(&self) -> Result<HashMap<String, Vec<PodFacts>>, ClusterError> {
        Ok(self.pods.lock().unwrap().clone())
    }
    async fn set_unschedulable(&self, node: &str, unschedulable: bool) -> Result<(), ClusterError> {
        let mut nodes = self.nodes.lock().unwrap();
        let n = nodes.iter_mut().find(|n| n.name == node).ok_or_else(|| ClusterError::Api {
            call: "patch node",
            code: 404,
            reason: "NotFound".into(),
            message: format!("nodes \"{node}\" not found"),
        })?;
        n.unschedulable = unschedulable;
        Ok(())
    }
    async fn evict(&self, namespace: &str, pod: &str) -> Result<EvictOutcome, ClusterError> {
        self.evictions.lock().unwrap().push(format!("{namespace}/{pod}"));
        let mut pods = self.pods.lock().unwrap();
        for list in pods.values_mut() {
            if let Some(index) = list.iter().position(|p| p.namespace == namespace && p.name == pod) {
                let mut budget = self.pdb_budget.lock().unwrap();
                let exhausted = list[index].has_pdb && *budget == Some(0);
                if list[index].pdb_blocks || exhausted {
                    return Ok(EvictOutcome::Blocked(
                        "Cannot evict pod as it would violate the pod's disruption budget.".into(),
                    ));
                }
                if list[index].has_pdb {
                    *budget = budget.map(|b| b - 1);
                }
                list.remove(index);
                return Ok(EvictOutcome::Evicted);
            }
        }
        Ok(EvictOutcome::Gone)
    }
    async fn delete_node(&self, node: &str) -> Result<(), ClusterError> {
        self.nodes.lock().unwrap().retain(|n| n.name != node);
        self.deleted_nodes.lock().unwrap().push(node.into());
        Ok(())
    }
    async fn node_event(&self, node: &str, event: NodeEvent, _message: &str) {
        self.events.lock().unwrap().push((node.into(), event.reason()));
    }
}

/// [`EventSink`] that keeps what it was sent.
#[derive(Default)]
pub struct RecordingSink(pub Mutex<Vec<AuditEvent>>);

impl EventSink for RecordingSink {
    fn send(&self, event: &AuditEvent) {
        self.0.lock().unwrap().push(event.clone());
    }
}
