//! Node repair in the service: reporting nodes repair may not touch, and the end of a repair
//! drain. The rule itself is `core::repair`; its launches and drains are ordinary pool
//! operations under the lease.
//!
//! The pods of a NotReady node cannot confirm their termination (the kubelet that would is
//! gone), so a repair drain evicts through the Eviction API as usual (PDBs respected) and, at
//! `drain_timeout`, terminates the instance instead of aborting, provided the node is still
//! NotReady and none of its pods keeps local data. Cluster Autoscaler removes unready nodes
//! after `scale-down-unready-time` the same way, and Karpenter's node repair terminates
//! without waiting for PDBs; here the PDBs get the drain timeout first.

use std::collections::HashMap;

use tracing::{info, warn};

use super::Service;
use super::reconcile::ReconcileError;
use crate::adapters::kube::cluster::{Cluster, NodeEvent};
use crate::core::model::{DrainOp, PoolPolicy, Worker};
use crate::core::repair::{RepairInput, blocked_nodes, holds_local_data};
use crate::core::time::Timestamp;
use crate::metrics::PoolLabels;

/// Nodes already reported as blocked, per pool, so each gets one event, not one per sweep.
pub(super) type RepairReported = std::sync::Mutex<HashMap<String, Vec<String>>>;

impl Service {
    /// Sets `repair_blocked_nodes{pool}` and sends a Warning event to each node that newly
    /// holds node repair back because of its local data.
    pub(super) async fn report_repair_blocked(
        &self,
        policy: &PoolPolicy,
        workers: &[Worker],
        interrupted: &[String],
        cluster_seen: bool,
        now: Timestamp,
    ) {
        let input = RepairInput { workers, interrupted, cluster_seen, policy, backoffs: &[], now };
        let blocked = blocked_nodes(&input);
        let labels = PoolLabels { pool: policy.name.clone() };
        self.inner.metrics.repair_blocked_nodes.get_or_create(&labels).set(blocked.len() as i64);
        let fresh: Vec<String> = match self.inner.repair_reported.lock() {
            Ok(mut reported) => {
                let before = reported.insert(policy.name.clone(), blocked.clone()).unwrap_or_default();
                blocked.into_iter().filter(|n| !before.contains(n)).collect()
            }
            Err(_) => blocked,
        };
        let Some(cluster) = &self.inner.edges.cluster else { return };
        for node in fresh {
            let message = "NotReady past repair_after, but a pod keeps local data here (local storage or a \
                           node-local PersistentVolume): node repair will not terminate it; a person decides";
            warn!(pool = %policy.name, %node, "node repair blocked: the node holds local data");
            cluster.node_event(&node, NodeEvent::RepairBlocked, message).await;
        }
    }

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
