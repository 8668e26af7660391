//! A scriptable [`Compute`] for the service's tests, with EC2's semantics that matter
//! (tag-scoped instances, per-market capacity failures, a lost answer after a launch).

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use async_trait::async_trait;

use super::compute::{Compute, ComputeError, InstanceState, ManagedInstance, RunSpec};
use crate::core::model::Market;
use crate::core::time::Timestamp;

/// Scriptable [`Compute`]: records every launch; failures are queued per market.
#[derive(Default)]
pub struct FakeCompute {
    pub instances: Mutex<Vec<ManagedInstance>>,
    pub launches: Mutex<Vec<RunSpec>>,
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
        });
    }
}

pub fn capacity_error() -> ComputeError {
    ComputeError::Capacity {
        api: "RunInstances",
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
    async fn launch(&self, spec: &RunSpec) -> Result<Vec<ManagedInstance>, ComputeError> {
        self.launches.lock().unwrap().push(spec.clone());
        if let Some(error) = self.failures.lock().unwrap().get_mut(&spec.market).and_then(|q| q.pop()) {
            return Err(error);
        }
        let created: Vec<ManagedInstance> = (0..spec.count)
            .map(|_| ManagedInstance {
                instance_id: format!("i-{:04}", self.next_id.fetch_add(1, Ordering::SeqCst)),
                az: spec.az.clone(),
                market: spec.market,
                launched_at: Timestamp::from_millis(0),
                state: InstanceState::Pending,
                pool: spec.pool.clone(),
                op_id: Some(spec.op_id.clone()),
            })
            .collect();
        self.instances.lock().unwrap().extend(created.clone());
        if self.lose_answers.load(Ordering::SeqCst) {
            return Err(ComputeError::Unavailable { api: "RunInstances", message: "timed out".into() });
        }
        Ok(created)
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
