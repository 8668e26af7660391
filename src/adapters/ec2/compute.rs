//! The compute edge: launch, find and terminate the pool's managed instances.

use async_trait::async_trait;
use thiserror::Error;

use crate::core::model::Market;
use crate::core::time::Timestamp;

/// Tag and label key prefix of everything this autoscaler owns.
pub const TAG_MANAGED_BY: &str = "k3s-autoscaler/managed-by";
/// Value of [`TAG_MANAGED_BY`].
pub const MANAGED_BY_VALUE: &str = "k3s-autoscaler";
/// Tag naming the cluster.
pub const TAG_CLUSTER: &str = "k3s-autoscaler/cluster";
/// Tag naming the pool.
pub const TAG_POOL: &str = "k3s-autoscaler/pool";
/// Tag naming the operation that launched the instance (idempotency on resume).
pub const TAG_OP_ID: &str = "k3s-autoscaler/op-id";

/// One CreateFleet `instant` call: `count` instances in one zone and market, EC2 choosing
/// among the overrides (spot `price-capacity-optimized`, on-demand `lowest-price`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetSpec {
    /// Pool the instances join.
    pub pool: String,
    /// Operation id, tagged on the instances.
    pub op_id: String,
    /// Idempotency token: the same token never launches twice.
    pub client_token: String,
    /// Availability zone (for logs and error attribution; the subnet decides).
    pub az: String,
    /// Instances wanted; EC2 may launch fewer and say why per offering.
    pub count: u32,
    /// Spot or on-demand.
    pub market: Market,
    /// The (instance type, subnet) pairs EC2 may choose from; the launch template supplies
    /// everything else (AMI, user-data, IMDSv2, security groups, profile).
    pub overrides: Vec<FleetOverride>,
    /// Launch template id (`lt-…`) or name.
    pub launch_template: String,
    /// Launch template version.
    pub launch_template_version: String,
}

/// One override of a fleet request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FleetOverride {
    /// Instance type; `None` keeps the launch template's.
    pub instance_type: Option<String>,
    /// Subnet to launch into.
    pub subnet_id: String,
}

/// What an `instant` fleet answered: the instances it launched and, per offering it could not
/// fill, EC2's error.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FleetAnswer {
    /// Instances launched (tagged, pending).
    pub instances: Vec<ManagedInstance>,
    /// Per-offering errors.
    pub errors: Vec<OfferingError>,
}

/// EC2's error for one offering of a fleet request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfferingError {
    /// Instance type of the offering, when the answer names one.
    pub instance_type: Option<String>,
    /// EC2 error code (`InsufficientInstanceCapacity`, …).
    pub code: String,
    /// EC2 message, bounded.
    pub message: String,
}

impl OfferingError {
    /// Whether the offering lacked capacity (remembered and skipped) rather than the request
    /// being wrong.
    pub fn is_capacity(&self) -> bool {
        CAPACITY_ERROR_CODES.contains(&self.code.as_str())
    }
}

/// Lifecycle of a managed instance, reduced to what matters here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InstanceState {
    /// Booting.
    Pending,
    /// Running.
    Running,
    /// Stopping, stopped, shutting down or terminated: no longer a worker.
    Gone,
}

/// A managed instance as EC2 reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ManagedInstance {
    /// Instance id.
    pub instance_id: String,
    /// Availability zone.
    pub az: String,
    /// Spot or on-demand.
    pub market: Market,
    /// Launch time.
    pub launched_at: Timestamp,
    /// Lifecycle state.
    pub state: InstanceState,
    /// Pool tag.
    pub pool: String,
    /// Operation tag, if any.
    pub op_id: Option<String>,
    /// Instance type, when EC2 said.
    pub instance_type: Option<String>,
}

impl ManagedInstance {
    /// The node's `spec.providerID` per the node identity contract.
    pub fn provider_id(&self) -> String {
        format!("aws:///{}/{}", self.az, self.instance_id)
    }
}

/// Why a compute call failed, sorted by what the caller should do about it.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ComputeError {
    /// No capacity for the whole request: try the next market, remember the offerings.
    #[error("{api}: no capacity ({code}): {message}")]
    Capacity {
        /// API that failed.
        api: &'static str,
        /// EC2 error code.
        code: String,
        /// EC2 message.
        message: String,
    },
    /// EC2 refused the request; retrying the same request will not help.
    #[error("{api} rejected ({code}): {message}")]
    Rejected {
        /// API that failed.
        api: &'static str,
        /// EC2 error code.
        code: String,
        /// EC2 message.
        message: String,
    },
    /// The outcome is unknown (timeout, network, throttling, 5xx): the call may have happened.
    #[error("{api} unavailable: {message}")]
    Unavailable {
        /// API that failed.
        api: &'static str,
        /// What went wrong.
        message: String,
    },
    /// Refused to touch an instance this autoscaler does not manage.
    #[error("instance {0} is not managed by this autoscaler for this cluster; not touching it")]
    NotManaged(String),
}

impl ComputeError {
    /// The API call that failed.
    pub fn api(&self) -> &'static str {
        match self {
            ComputeError::Capacity { api, .. }
            | ComputeError::Rejected { api, .. }
            | ComputeError::Unavailable { api, .. } => api,
            ComputeError::NotManaged(_) => "TerminateInstances",
        }
    }

    /// Low-cardinality label for metrics.
    pub fn code(&self) -> String {
        match self {
            ComputeError::Capacity { code, .. } | ComputeError::Rejected { code, .. } => code.clone(),
            ComputeError::Unavailable { .. } => "unavailable".into(),
            ComputeError::NotManaged(_) => "not_managed".into(),
        }
    }
}

/// EC2 error codes that mean "no capacity here now" rather than "wrong request".
pub const CAPACITY_ERROR_CODES: &[&str] = &[
    "InsufficientInstanceCapacity",
    "SpotMaxPriceTooLow",
    "MaxSpotInstanceCountExceeded",
    "UnfulfillableCapacity",
    "InsufficientCapacity",
    "InsufficientHostCapacity",
];

/// Launches and finds the pool's instances.
#[async_trait]
pub trait Compute: Send + Sync {
    /// Pending and running instances of `pool` managed by this autoscaler for this cluster.
    async fn list_pool(&self, pool: &str) -> Result<Vec<ManagedInstance>, ComputeError>;
    /// Instances (not terminated) tagged with this operation id: did a launch already happen?
    async fn find_by_op(&self, op_id: &str) -> Result<Vec<ManagedInstance>, ComputeError>;
    /// One CreateFleet `instant` call; never followed by DeleteFleets, which would terminate
    /// the fleet's instances.
    async fn launch(&self, spec: &FleetSpec) -> Result<FleetAnswer, ComputeError>;
    /// Terminates managed instances; refuses any instance not managed for this cluster.
    async fn terminate(&self, instance_ids: &[String]) -> Result<(), ComputeError>;
    /// The status code of the spot request behind `instance_id` (`marked-for-termination`
    /// once EC2 has decided to interrupt it), `None` when EC2 knows no request for it: what
    /// verifies a spot interruption warning before anything is drained.
    async fn spot_request_status(&self, instance_id: &str) -> Result<Option<String>, ComputeError>;
}
