//! A scriptable [`Compute`] for the service's tests, with EC2's semantics that matter
//! (tag-scoped instances, per-market capacity failures, a lost answer after a launch).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::compute::{
    Compute, ComputeError, FleetAnswer, FleetSpec, InstanceState, ManagedInstance, OfferingError,
};
use crate::core::model::Market;
use crate::core::time::Timestamp;

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
    /// Instances launched per ClientToken: as EC2 does, a repeat of a request that launched
    /// answers with the same instances and launches nothing more. A request that failed is
    /// not remembered, so its repeat may succeed.
    launched_by_token: Mutex<HashMap<String, Vec<ManagedInstance>>>,
    /// When set, each launch waits for a permit before EC2 "processes" it: holds a request
    /// in flight while the test runs something else.
    pub gate: Mutex<Option<Arc<tokio::sync::Semaphore>>>,
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
        let gate = self.gate.lock().unwrap().clone();
        if let Some(gate) = gate {
            gate.acquire().await.unwrap().forget();
        }
        if let Some(earlier) = self.launched_by_token.lock().unwrap().get(&spec.client_token) {
            return Ok(FleetAnswer { instances: earlier.clone(), errors: Vec::new() });
        }
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
        self.launched_by_token.lock().unwrap().insert(spec.client_token.clone(), created.clone());
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
