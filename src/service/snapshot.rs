//! The pool as the core sees it: managed instances joined with their Nodes by providerID,
//! with drain facts when a scale-down is being considered.

use std::collections::HashMap;

use super::outcome::ReconcileError;
use super::steps::Steps;
use crate::adapters::ManagedInstance;
use crate::adapters::ec2::compute::InstanceState;
use crate::adapters::kube::cluster::NodeSnapshot;
use crate::core::drainability::{Blocker, node_blockers};
use crate::core::model::{NodeView, Worker};
use crate::core::repair::holds_local_data;
use crate::metrics::UnremovableLabels;

/// Instances, their nodes, and the workers built from both.
pub(super) struct PoolSnapshot {
    /// Pending or running managed instances.
    pub instances: Vec<ManagedInstance>,
    /// Nodes of the pool by instance id (only nodes that map to a managed instance).
    pub nodes: HashMap<String, NodeSnapshot>,
    /// What `decide` reasons about.
    pub workers: Vec<Worker>,
    /// Whether the Kubernetes side answered (false when it is not configured).
    pub cluster_seen: bool,
}

/// The pool's instances and nodes as read, before drain facts are added.
pub(super) struct Observed {
    instances: Vec<ManagedInstance>,
    /// `None` when Kubernetes is not configured.
    nodes: Option<Vec<NodeSnapshot>>,
}

impl Observed {
    /// Whether a node of the pool is NotReady (node repair then needs pod facts).
    pub(super) fn any_not_ready(&self) -> bool {
        self.nodes.as_ref().is_some_and(|nodes| nodes.iter().any(|n| !n.ready))
    }
}

impl Steps {
    /// Reads the pool's instances and nodes (at the same time: they are independent).
    pub(super) async fn observe_pool(&self, pool: &str) -> Result<Observed, ReconcileError> {
        let edges = &self.edges;
        let nodes = async {
            match &edges.cluster {
                Some(cluster) => cluster.pool_nodes(pool).await.map(Some),
                None => Ok(None),
            }
        };
        let (instances, nodes) = tokio::join!(edges.compute.list_pool(pool), nodes);
        let instances = instances?.into_iter().filter(|i| i.state != InstanceState::Gone).collect();
        Ok(Observed { instances, nodes: nodes? })
    }

    /// The pool with remembered `instances` (see `pool_worker/memory.rs`) and its nodes as read now
    /// (served from the watch cache when it runs).
    pub(super) async fn observe_with(
        &self,
        pool: &str,
        instances: Vec<ManagedInstance>,
    ) -> Result<Observed, ReconcileError> {
        let nodes = match &self.edges.cluster {
            Some(cluster) => Some(cluster.pool_nodes(pool).await?),
            None => None,
        };
        Ok(Observed { instances, nodes })
    }

    /// Joins what [`Steps::observe_pool`] read; `with_pods` adds drain facts.
    pub(super) async fn snapshot(
        &self,
        pool: &str,
        observed: Observed,
        with_pods: bool,
    ) -> Result<PoolSnapshot, ReconcileError> {
        let Observed { instances, nodes } = observed;
        let (Some(cluster), Some(nodes)) = (&self.edges.cluster, nodes) else {
            let workers = instances.iter().map(|i| worker(i, None)).collect();
            return Ok(PoolSnapshot { instances, nodes: HashMap::new(), workers, cluster_seen: false });
        };
        let nodes: HashMap<String, NodeSnapshot> = nodes
            .into_iter()
            .filter_map(|n| n.instance_id().map(|id| (id.to_string(), n.clone())))
            .filter(|(id, _)| instances.iter().any(|i| &i.instance_id == id))
            .collect();
        let pods = if with_pods { cluster.pods_by_node().await? } else { HashMap::new() };
        let mut unremovable: HashMap<Blocker, i64> = Blocker::ALL.iter().map(|b| (*b, 0)).collect();
        let workers = instances
            .iter()
            .map(|instance| {
                let view = nodes.get(&instance.instance_id).map(|node| {
                    let node_pods = pods.get(&node.name).map(Vec::as_slice).unwrap_or_default();
                    let blockers = node_blockers(node.scale_down_disabled, node_pods);
                    for blocker in &blockers {
                        *unremovable.entry(*blocker).or_default() += 1;
                    }
                    NodeView {
                        name: node.name.clone(),
                        ready: node.ready,
                        cordoned: node.unschedulable,
                        evictable_pods: node_pods.iter().filter(|p| p.must_move()).count(),
                        blockers: blockers.iter().map(ToString::to_string).collect(),
                        not_ready_since: node.ready_since.filter(|_| !node.ready),
                        holds_local_data: holds_local_data(node_pods),
                    }
                });
                worker(instance, view)
            })
            .collect();
        if with_pods {
            for (blocker, count) in unremovable {
                let labels = UnremovableLabels { pool: pool.to_string(), reason: blocker.label() };
                self.metrics.unremovable_nodes.get_or_create(&labels).set(count);
            }
        }
        Ok(PoolSnapshot { instances, nodes, workers, cluster_seen: true })
    }
}

fn worker(instance: &ManagedInstance, node: Option<NodeView>) -> Worker {
    Worker {
        instance_id: instance.instance_id.clone(),
        az: instance.az.clone(),
        market: instance.market,
        launched_at: instance.launched_at,
        instance_type: instance.instance_type.clone(),
        node,
    }
}
