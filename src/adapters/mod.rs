//! The outside systems, each behind one small trait: [`Compute`] (EC2), [`StateStore`]
//! (DynamoDB), [`sink::EventSink`] (CloudWatch Logs), `Cluster` (Kubernetes) and [`Clock`].
//! Real adapters live beside the traits; test doubles in `fakes`.

pub mod alertmanager;
pub mod aws;
pub mod cloudwatch;
pub mod cluster;
pub mod compute;
pub mod dynamodb;
pub mod ec2;
pub mod kube;
mod kube_cache;
mod kube_pods;
pub mod sink;
pub mod sqs;
pub mod store;

#[cfg(test)]
pub(crate) mod fakes;

use crate::core::time::Timestamp;

pub use compute::{Compute, ComputeError, ManagedInstance, RunSpec};
pub use store::{AuditEvent, Lease, PoolRecord, StateStore, StoreError};

/// Source of "now", so the service can be driven by a test clock.
pub trait Clock: Send + Sync {
    /// The current wall-clock time.
    fn now(&self) -> Timestamp;
}

/// The real clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_system(std::time::SystemTime::now())
    }
}
