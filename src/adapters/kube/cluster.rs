//! The Kubernetes edge: the pool's nodes, the pods that would have to move, cordon, evict,
//! delete, and Events on the Node so `kubectl describe node` tells the story.

use std::collections::HashMap;

use async_trait::async_trait;
use thiserror::Error;

use crate::core::drainability::PodFacts;
use crate::core::time::Timestamp;

/// Node label naming the pool (set by the worker user-data).
pub const LABEL_POOL: &str = "k3s-autoscaler/pool";

/// A node as the service needs it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct NodeSnapshot {
    /// Node name.
    pub name: String,
    /// `spec.providerID`, `aws:///<az>/<instance-id>` on our workers.
    pub provider_id: Option<String>,
    /// `Ready` condition is True.
    pub ready: bool,
    /// `lastTransitionTime` of the `Ready` condition: since when it is what it is.
    pub ready_since: Option<Timestamp>,
    /// `spec.unschedulable`.
    pub unschedulable: bool,
    /// Annotated scale-down-disabled.
    pub scale_down_disabled: bool,
    /// Creation time, for join latency.
    pub created_at: Timestamp,
}

impl NodeSnapshot {
    /// The EC2 instance id from the providerID, if it has the AWS form.
    pub fn instance_id(&self) -> Option<&str> {
        let rest = self.provider_id.as_deref()?.strip_prefix("aws:///")?;
        rest.rsplit('/').next().filter(|id| id.starts_with("i-"))
    }
}

/// The steps a node goes through, as Kubernetes Event reasons.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NodeEvent {
    /// The instance behind this node was launched by us.
    ScaleUpLaunched,
    /// The node became Ready.
    NodeJoined,
    /// The node did not become Ready in time; its instance is terminated.
    NodeJoinTimeout,
    /// Cordoned; evictions start.
    DrainStarted,
    /// Only DaemonSet and mirror pods remain.
    DrainCompleted,
    /// Gave up; uncordoned, nothing terminated.
    DrainAborted,
    /// A scale-up arrived before the instance was terminated; uncordoned, nothing terminated.
    DrainSuperseded,
    /// Instance terminated and Node deleted.
    NodeRemoved,
    /// An EC2 interruption notice arrived for the instance; the node is cordoned.
    InterruptionNotice,
    /// The interruption deadline passed with pods still on the node.
    InterruptionStranded,
    /// A rebalance drain stopped at a drain blocker; the node stays cordoned with its pods.
    InterruptionHeld,
    /// Node repair is due but the node holds local data: not terminated, a person decides.
    RepairBlocked,
}

impl NodeEvent {
    /// The Event reason.
    pub fn reason(self) -> &'static str {
        match self {
            NodeEvent::ScaleUpLaunched => "ScaleUpLaunched",
            NodeEvent::NodeJoined => "NodeJoined",
            NodeEvent::NodeJoinTimeout => "NodeJoinTimeout",
            NodeEvent::DrainStarted => "DrainStarted",
            NodeEvent::DrainCompleted => "DrainCompleted",
            NodeEvent::DrainAborted => "DrainAborted",
            NodeEvent::DrainSuperseded => "DrainSuperseded",
            NodeEvent::NodeRemoved => "NodeRemoved",
            NodeEvent::InterruptionNotice => "InterruptionNotice",
            NodeEvent::InterruptionStranded => "InterruptionStranded",
            NodeEvent::InterruptionHeld => "InterruptionHeld",
            NodeEvent::RepairBlocked => "RepairBlocked",
        }
    }

    /// Whether operators should look (Warning) or not (Normal).
    pub fn is_warning(self) -> bool {
        matches!(
            self,
            NodeEvent::NodeJoinTimeout
                | NodeEvent::DrainAborted
                | NodeEvent::InterruptionNotice
                | NodeEvent::InterruptionStranded
                | NodeEvent::InterruptionHeld
                | NodeEvent::RepairBlocked
        )
    }
}

/// What an eviction request achieved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EvictOutcome {
    /// Accepted; the pod terminates within its grace period.
    Evicted,
    /// Refused for now (429: a PDB allows no disruption); try again later.
    Blocked(String),
    /// The pod is already gone.
    Gone,
}

/// Why a Kubernetes call failed.
#[derive(Debug, Error)]
pub enum ClusterError {
    /// The API answered with an error status.
    #[error("{call}: API error {code} {reason}: {message}")]
    Api {
        /// What was attempted.
        call: &'static str,
        /// HTTP status.
        code: u16,
        /// Status reason.
        reason: String,
        /// Status message.
        message: String,
    },
    /// The API could not be reached.
    #[error("{call}: {message}")]
    Unavailable {
        /// What was attempted.
        call: &'static str,
        /// The error.
        message: String,
    },
}

impl ClusterError {
    /// The call that failed.
    pub fn call(&self) -> &'static str {
        match self {
            ClusterError::Api { call, .. } | ClusterError::Unavailable { call, .. } => call,
        }
    }

    /// Whether the object the call named does not exist (404): e.g. a Node deleted by an
    /// operator or by the cloud controller while an operation was using it.
    pub fn is_not_found(&self) -> bool {
        matches!(self, ClusterError::Api { code: 404, .. })
    }

    /// Low-cardinality label for metrics.
    pub fn label(&self) -> String {
        match self {
            ClusterError::Api { code, .. } => code.to_string(),
            ClusterError::Unavailable { .. } => "unavailable".into(),
        }
    }
}

/// The cluster operations the autoscaler uses; nothing else is ever written.
#[async_trait]
pub trait Cluster: Send + Sync {
    /// Nodes labelled with the pool.
    async fn pool_nodes(&self, pool: &str) -> Result<Vec<NodeSnapshot>, ClusterError>;
    /// Every Node, whatever its labels, listed live (no cache): what the never-joined cleanup
    /// checks before it terminates an instance the pool's node list does not show.
    async fn all_nodes_live(&self) -> Result<Vec<NodeSnapshot>, ClusterError>;
    /// Pods by node name, reduced to drain facts (PDBs evaluated). May be served from a
    /// cache a moment behind the API: good for choosing, not for terminating.
    async fn pods_by_node(&self) -> Result<HashMap<String, Vec<PodFacts>>, ClusterError>;
    /// The pods on `node` as the API has them now, reduced to drain facts; what a drain checks
    /// before it terminates the instance.
    async fn node_pods(&self, node: &str) -> Result<Vec<PodFacts>, ClusterError> {
        Ok(self.pods_by_node().await?.remove(node).unwrap_or_default())
    }
    /// Sets or clears `spec.unschedulable`.
    async fn set_unschedulable(&self, node: &str, unschedulable: bool) -> Result<(), ClusterError>;
    /// Evicts one pod through the Eviction API (never a delete).
    async fn evict(&self, namespace: &str, pod: &str) -> Result<EvictOutcome, ClusterError>;
    /// Deletes the Node object (absent is fine).
    async fn delete_node(&self, node: &str) -> Result<(), ClusterError>;
    /// Publishes an Event on the Node; failures are logged, never fatal.
    async fn node_event(&self, node: &str, event: NodeEvent, message: &str);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_id_comes_from_the_provider_id() {
        let node = |p: &str| NodeSnapshot { provider_id: Some(p.into()), ..NodeSnapshot::default() };
        assert_eq!(node("aws:///us-east-1a/i-0abc").instance_id(), Some("i-0abc"));
        assert_eq!(node("aws:///i-0abc").instance_id(), Some("i-0abc"));
        assert_eq!(node("k3s://ip-10-0-0-1").instance_id(), None);
        assert_eq!(node("aws:///us-east-1a/").instance_id(), None);
        assert_eq!(NodeSnapshot::default().instance_id(), None);
    }
}
