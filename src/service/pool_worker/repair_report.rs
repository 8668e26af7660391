//! The pool worker's report of nodes node repair may not touch (the rule is
//! `core::repair`; the repair drain's end is in `service/repair.rs`).

use tracing::warn;

use super::PoolWorker;
use crate::adapters::kube::cluster::NodeEvent;
use crate::core::model::{PoolPolicy, Worker};
use crate::core::repair::{RepairInput, blocked_nodes};
use crate::core::time::Timestamp;
use crate::metrics::PoolLabels;

impl PoolWorker {
    /// Sets `repair_blocked_nodes{pool}` and sends a Warning event to each node that newly
    /// holds node repair back because of its local data.
    pub(super) async fn report_repair_blocked(
        &mut self,
        policy: &PoolPolicy,
        workers: &[Worker],
        interrupted: &[String],
        cluster_seen: bool,
        now: Timestamp,
    ) {
        let input = RepairInput { workers, interrupted, cluster_seen, policy, backoffs: &[], now };
        let blocked = blocked_nodes(&input);
        let labels = PoolLabels { pool: policy.name.clone() };
        self.steps.metrics.repair_blocked_nodes.get_or_create(&labels).set(blocked.len() as i64);
        let before = std::mem::replace(&mut self.repair_reported, blocked.clone());
        let fresh: Vec<String> = blocked.into_iter().filter(|n| !before.contains(n)).collect();
        let Some(cluster) = &self.steps.edges.cluster else { return };
        for node in fresh {
            let message = "NotReady past repair_after, but a pod keeps local data here (local storage or a \
                           node-local PersistentVolume): node repair will not terminate it; a person decides";
            warn!(pool = %policy.name, %node, "node repair blocked: the node holds local data");
            cluster.node_event(&node, NodeEvent::RepairBlocked, message).await;
        }
    }
}
