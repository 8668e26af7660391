//! Node repair in the service: the end of a repair drain (the pool worker reports the nodes
//! repair may not touch, `pool_worker/repair_report.rs`). The rule itself is `core::repair`; its
//! launches and drains are ordinary pool operations under the lease.
//!
//! The pods of a NotReady node cannot confirm their termination (the kubelet that would is
//! gone), so a repair drain evicts through the Eviction API as usual (PDBs respected) and, at
//! `drain_timeout`, terminates the instance instead of aborting, provided the node is still
//! NotReady and none of its pods keeps local data. Cluster Autoscaler removes unready nodes
//! after `scale-down-unready-time` the same way, and Karpenter's node repair terminates
//! without waiting for PDBs; here the PDBs get the drain timeout first.

use tracing::{info, warn};

use super::outcome::ReconcileError;
use super::steps::Steps;
use crate::adapters::kube::cluster::Cluster;
use crate::core::model::{DrainOp, PoolPolicy};
use crate::core::repair::holds_local_data;

impl Steps {
    /// At the deadline of a repair drain: whether the instance may be terminated with pods
    /// still bound to it (the node is still NotReady and no pod keeps local data there).
    pub(super) async fn repair_may_terminate(
        &self,
        policy: &PoolPolicy,
        cluster: &dyn Cluster,
        drain: &DrainOp,
    ) -> Result<bool, ReconcileError> {
        let nodes = cluster.pool_nodes(&policy.name).await?;
        let not_ready = nodes.iter().any(|n| n.name == drain.node && !n.ready);
        if !not_ready {
            info!(pool = %policy.name, node = %drain.node, "repair drain: the node is Ready again or gone; not terminating");
            return Ok(false);
        }
        let pods = cluster.node_pods(&drain.node).await?;
        if holds_local_data(&pods) {
            warn!(pool = %policy.name, node = %drain.node, "repair drain: a pod keeps local data here; not terminating");
            return Ok(false);
        }
        Ok(true)
    }
}
