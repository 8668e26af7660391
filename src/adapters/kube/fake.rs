//! A scriptable [`Cluster`] for the service's tests: nodes and pods in memory, evictions
//! held by a PDB budget, every write recorded.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

use super::cluster::{Cluster, ClusterError, EvictOutcome, NodeEvent, NodeSnapshot};
use crate::core::drainability::PodFacts;

/// Scriptable [`Cluster`]: nodes and pods in memory; evicting a pod removes it unless a PDB
/// blocks it; every write is recorded.
#[derive(Default)]
pub struct FakeCluster {
    pub nodes: Mutex<Vec<NodeSnapshot>>,
    pub pods: Mutex<HashMap<String, Vec<PodFacts>>>,
    pub evictions: Mutex<Vec<String>>,
    pub deleted_nodes: Mutex<Vec<String>>,
    pub events: Mutex<Vec<(String, &'static str)>>,
    /// Evictions PDB-covered pods may still have; `None` is unlimited.
    pub pdb_budget: Mutex<Option<usize>>,
    /// Names of nodes without the pool label: in `all_nodes_live`, not in `pool_nodes`.
    pub unlabelled: Mutex<Vec<String>>,
    /// Called on every live pod read of a node (e.g. to let another replica take the lease
    /// while this one waits on the API).
    pub during_node_pods: Mutex<Option<Box<dyn Fn() + Send + Sync>>>,
}

impl FakeCluster {
    pub fn add_node(&self, name: &str, az: &str, instance_id: &str, ready: bool) {
        self.nodes.lock().unwrap().push(NodeSnapshot {
            name: name.into(),
            provider_id: Some(format!("aws:///{az}/{instance_id}")),
            ready,
            ..NodeSnapshot::default()
        });
    }
    pub fn add_pod(&self, node: &str, pod: PodFacts) {
        self.pods.lock().unwrap().entry(node.into()).or_default().push(pod);
    }
    pub fn node(&self, name: &str) -> Option<NodeSnapshot> {
        self.nodes.lock().unwrap().iter().find(|n| n.name == name).cloned()
    }
    pub fn event_reasons(&self) -> Vec<&'static str> {
        self.events.lock().unwrap().iter().map(|(_, r)| *r).collect()
    }
}

#[async_trait]
impl Cluster for FakeCluster {
    async fn pool_nodes(&self, _pool: &str) -> Result<Vec<NodeSnapshot>, ClusterError> {
        let unlabelled = self.unlabelled.lock().unwrap();
        Ok(self.nodes.lock().unwrap().iter().filter(|n| !unlabelled.contains(&n.name)).cloned().collect())
    }
    async fn all_nodes_live(&self) -> Result<Vec<NodeSnapshot>, ClusterError> {
        Ok(self.nodes.lock().unwrap().clone())
    }
    async fn node_pods(&self, node: &str) -> Result<Vec<PodFacts>, ClusterError> {
        if let Some(hook) = self.during_node_pods.lock().unwrap().as_ref() {
            hook();
        }
        Ok(self.pods.lock().unwrap().get(node).cloned().unwrap_or_default())
    }
    async fn pods_by_node(&self) -> Result<HashMap<String, Vec<PodFacts>>, ClusterError> {
        Ok(self.pods.lock().unwrap().clone())
    }
    async fn set_unschedulable(&self, node: &str, unschedulable: bool) -> Result<(), ClusterError> {
        let mut nodes = self.nodes.lock().unwrap();
        let n = nodes.iter_mut().find(|n| n.name == node).ok_or_else(|| ClusterError::Api {
            call: "patch node",
            code: 404,
            reason: "NotFound".into(),
            message: format!("nodes \"{node}\" not found"),
        })?;
        n.unschedulable = unschedulable;
        Ok(())
    }
    async fn evict(&self, namespace: &str, pod: &str) -> Result<EvictOutcome, ClusterError> {
        self.evictions.lock().unwrap().push(format!("{namespace}/{pod}"));
        let mut pods = self.pods.lock().unwrap();
        for list in pods.values_mut() {
            if let Some(index) = list.iter().position(|p| p.namespace == namespace && p.name == pod) {
                let mut budget = self.pdb_budget.lock().unwrap();
                let exhausted = list[index].has_pdb && *budget == Some(0);
                if list[index].pdb_blocks || exhausted {
                    return Ok(EvictOutcome::Blocked(
                        "Cannot evict pod as it would violate the pod's disruption budget.".into(),
                    ));
                }
                if list[index].has_pdb {
                    *budget = budget.map(|b| b - 1);
                }
                list.remove(index);
                return Ok(EvictOutcome::Evicted);
            }
        }
        Ok(EvictOutcome::Gone)
    }
    async fn delete_node(&self, node: &str) -> Result<(), ClusterError> {
        self.nodes.lock().unwrap().retain(|n| n.name != node);
        self.deleted_nodes.lock().unwrap().push(node.into());
        Ok(())
    }
    async fn node_event(&self, node: &str, event: NodeEvent, _message: &str) {
        self.events.lock().unwrap().push((node.into(), event.reason()));
    }
}
