//! The outside systems, one folder each, with the trait the service uses beside its real
//! implementation and a test double (`fake.rs`, compiled for unit tests only):
//! [`ec2`] ([`Compute`]), [`dynamodb`] ([`StateStore`]), [`kube`] (`Cluster`, its watch
//! caches and pod facts), [`cloudwatch`] (`EventSink`), [`alertmanager`] (`AlertSource`),
//! [`sqs`] (`NoticeQueue`, the EC2 notice queue) and [`ssm`] (`Parameters`: settings and the
//! webhook token from Parameter Store).
//! [`aws`] builds the SDK configuration the AWS adapters share; [`Clock`] is "now".

pub mod alertmanager;
pub mod aws;
mod clock;
pub mod cloudwatch;
pub mod dynamodb;
pub mod ec2;
pub mod kube;
pub mod sqs;
pub mod ssm;

#[cfg(test)]
pub(crate) use clock::ManualClock;
pub use clock::{Clock, SystemClock};
pub use dynamodb::store::{AuditEvent, Lease, PoolRecord, StateStore, StoreError};
pub use ec2::compute::{
    Compute, ComputeError, FleetAnswer, FleetOverride, FleetSpec, ManagedInstance, OfferingError,
};
