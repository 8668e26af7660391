//! [`Cluster`] on the Kubernetes API through kube-rs. Sweeps read nodes, pods, PDBs and
//! volumes from watch-backed caches (no request per sweep); until a cache has listed, they
//! are listed directly. A drain re-reads its node's pods live before it terminates anything.

mod cache;
pub mod cluster;
#[cfg(test)]
pub(crate) mod fake;
mod pods;

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde_json::json;

use self::cache::{Cache, key_of};
use self::cluster::{Cluster, ClusterError, EvictOutcome, LABEL_POOL, NodeEvent, NodeSnapshot};
use self::pods::{
    Joins, PdbRecord, PodRecord, VolumeSite, claim_volume, local_claims, pdb_record, pod_record, volume_site,
};
use crate::core::drainability::{PodFacts, SCALE_DOWN_DISABLED};
use crate::core::time::Timestamp;

/// Kubernetes-backed cluster access.
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    recorder: Recorder,
    caches: Arc<Caches>,
    /// `drain.movable_system_workloads`: Deployments whose pods drain like ordinary ones.
    movable: Arc<BTreeSet<String>>,
}

/// The watched objects: pool nodes (with their pool), pods, PDBs, claims → volumes, and
/// where the volumes that may live on one node live.
struct Caches {
    nodes: Cache<(String, NodeSnapshot)>,
    pods: Cache<PodRecord>,
    pdbs: Cache<PdbRecord>,
    claims: Cache<String>,
    volume_sites: Cache<VolumeSite>,
}

impl Caches {
    fn start(client: &Client) -> Self {
        let all = watcher::Config::default;
        Caches {
            nodes: Cache::spawn(Api::all(client.clone()), all().labels(LABEL_POOL), pool_node, "nodes"),
            // Small pages: a list's transient objects set the process's peak memory.
            pods: Cache::spawn(Api::all(client.clone()), all().page_size(250), pod_record, "pods"),
            pdbs: Cache::spawn(Api::all(client.clone()), all(), pdb_record, "poddisruptionbudgets"),
            claims: Cache::spawn(Api::all(client.clone()), all(), claim_volume, "persistentvolumeclaims"),
            volume_sites: Cache::spawn(Api::all(client.clone()), all(), volume_site, "persistentvolumes"),
        }
    }

    /// PDBs and local claims from the caches, once all three have listed.
    fn joins(&self) -> Option<Joins> {
        let pdbs = self.pdbs.read(|m| m.values().cloned().collect())?;
        let local_claims = self
            .volume_sites
            .read(|sites| self.claims.read(|m| local_claims(m.iter(), |v| sites.get(v).cloned())))
            .flatten()?;
        Some(Joins { pdbs, local_claims, movable: Arc::default() })
    }
}

fn pool_node(node: &Node) -> Option<(String, (String, NodeSnapshot))> {
    let pool = node.labels().get(LABEL_POOL)?.clone();
    Some((key_of(node)?, (pool, snapshot(node))))
}

/// The timeout of every Kubernetes request (not the watches) for a given `lease_ttl`: a
/// third of it, between 1 and 10 seconds. A call that hangs fails well before the lease could
/// pass to another replica, and the fenced checks before terminating and evicting catch the
/// rest.
pub fn request_timeout(lease_ttl: Duration) -> Duration {
    (lease_ttl / 3).clamp(Duration::from_secs(1), Duration::from_secs(10))
}

impl KubeCluster {
    /// Cluster access through `client` (requests) and `watches` (the caches' long-lived
    /// watches, which must not carry the requests' timeout); Events are reported as
    /// `k3s-autoscaler`. Starts the watches, so it must be called on a tokio runtime.
    pub fn new(client: Client, watches: Client) -> Self {
        let reporter =
            Reporter { controller: "k3s-autoscaler".into(), instance: std::env::var("HOSTNAME").ok() };
        let recorder = Recorder::new(client.clone(), reporter);
        let caches = Arc::new(Caches::start(&watches));
        Self { client, recorder, caches, movable: Arc::default() }
    }

    /// Pods of these Deployments (`namespace/name`) drain like ordinary replicated pods
    /// (`drain.movable_system_workloads`).
    pub fn with_movable_system_workloads(mut self, deployments: &[String]) -> Self {
        self.movable = Arc::new(deployments.iter().cloned().collect());
        self
    }

    /// Lists PDBs, claims and volumes directly (caches not listed yet).
    async fn list_joins(&self) -> Result<Joins, ClusterError> {
        let all = ListParams::default();
        let pdbs: Api<PodDisruptionBudget> = Api::all(self.client.clone());
        let claims: Api<PersistentVolumeClaim> = Api::all(self.client.clone());
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let (pdbs, claims, volumes) = tokio::try_join!(
            async { pdbs.list(&all).await.map_err(api_error("list poddisruptionbudgets")) },
            async { claims.list(&all).await.map_err(api_error("list persistentvolumeclaims")) },
            async { volumes.list(&all).await.map_err(api_error("list persistentvolumes")) },
        )?;
        let sites: HashMap<String, VolumeSite> = volumes.items.iter().filter_map(volume_site).collect();
        let claims: HashMap<String, String> = claims.items.iter().filter_map(claim_volume).collect();
        Ok(Joins {
            pdbs: pdbs.items.iter().filter_map(pdb_record).map(|(_, r)| r).collect(),
            local_claims: local_claims(claims.iter(), |v| sites.get(v).cloned()),
            movable: Arc::default(),
        })
    }

    async fn joins(&self) -> Result<Joins, ClusterError> {
        let joins = match self.caches.joins() {
            Some(joins) => joins,
            None => self.list_joins().await?,
        };
        Ok(Joins { movable: self.movable.clone(), ..joins })
    }

    /// Lists pods directly (`params` may select a node), reduced.
    async fn list_pods(&self, params: &ListParams) -> Result<Vec<PodRecord>, ClusterError> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let list = pods.list(params).await.map_err(api_error("list pods"))?;
        Ok(list.items.iter().filter_map(pod_record).map(|(_, r)| r).collect())
    }

    /// A client from the kubeconfig at `path`, else in-cluster config or `KUBECONFIG`.
    ///
    /// kube's built-in retry is turned off: it would retry an eviction's 429 (a PDB saying
    /// "not now") for minutes inside one call; the sweeper retries at its own pace instead.
    /// Every request (connect, send, answer) times out after `timeout`; the watches keep
    /// kube's own idle handling.
    pub async fn connect(path: Option<&std::path::Path>, timeout: Duration) -> Result<Self, kube::Error> {
        let config = client_config(path).await?;
        let watches = Client::try_from(config.clone())?;
        Ok(Self::new(Client::try_from(with_timeouts(config, timeout))?, watches))
    }
}

/// A client as the service's (kubeconfig, `KUBECONFIG` or in-cluster; per-request
/// timeouts), for `doctor`.
pub async fn client(path: Option<&std::path::Path>, timeout: Duration) -> Result<Client, kube::Error> {
    Client::try_from(with_timeouts(client_config(path).await?, timeout))
}

async fn client_config(path: Option<&std::path::Path>) -> Result<kube::Config, kube::Error> {
    let mut config = match path {
        Some(path) => {
            let kubeconfig =
                kube::config::Kubeconfig::read_from(path).map_err(kube::Error::InferKubeconfig)?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .map_err(kube::Error::InferKubeconfig)?
        }
        None => kube::Config::infer().await.map_err(kube::Error::InferConfig)?,
    };
    config.default_retry = false;
    Ok(config)
}

fn with_timeouts(mut config: kube::Config, timeout: Duration) -> kube::Config {
    config.connect_timeout = Some(timeout);
    config.read_timeout = Some(timeout);
    config.write_timeout = Some(timeout);
    // The read timeout counts from the request, not from when a pooled connection went idle.
    config.reset_reader_on_write = true;
    config
}

fn api_error(call: &'static str) -> impl Fn(kube::Error) -> ClusterError {
    move |e| match e {
        kube::Error::Api(status) => ClusterError::Api {
            call,
            code: status.code,
            reason: status.reason.clone(),
            message: status.message.clone(),
        },
        other => ClusterError::Unavailable { call, message: other.to_string() },
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(status) if status.code == 404)
}

fn snapshot(node: &Node) -> NodeSnapshot {
    let condition = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"));
    NodeSnapshot {
        name: node.name_any(),
        provider_id: node.spec.as_ref().and_then(|s| s.provider_id.clone()),
        ready: condition.is_some_and(|c| c.status == "True"),
        ready_since: condition
            .and_then(|c| c.last_transition_time.as_ref())
            .map(|t| Timestamp::from_millis(t.0.as_millisecond().max(0) as u64)),
        unschedulable: node.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false),
        scale_down_disabled: node.annotations().get(SCALE_DOWN_DISABLED).is_some_and(|v| v == "true"),
        created_at: node
            .metadata
            .creation_timestamp
            .as_ref()
            .map(|t| Timestamp::from_millis(t.0.as_millisecond().max(0) as u64))
            .unwrap_or_default(),
    }
}

#[async_trait]
impl Cluster for KubeCluster {
    async fn pool_nodes(&self, pool: &str) -> Result<Vec<NodeSnapshot>, ClusterError> {
        let cached = self
            .caches
            .nodes
            .read(|nodes| nodes.values().filter(|(p, _)| p == pool).map(|(_, node)| node.clone()).collect());
        if let Some(nodes) = cached {
            return Ok(nodes);
        }
        let nodes: Api<Node> = Api::all(self.client.clone());
        let list = nodes
            .list(&ListParams::default().labels(&format!("{LABEL_POOL}={pool}")))
            .await
            .map_err(api_error("list nodes"))?;
        Ok(list.items.iter().map(snapshot).collect())
    }

    async fn all_nodes_live(&self) -> Result<Vec<NodeSnapshot>, ClusterError> {
        // Field selectors cannot select spec.providerID: one list of every Node.
        let nodes: Api<Node> = Api::all(self.client.clone());
        let list = nodes.list(&ListParams::default()).await.map_err(api_error("list nodes"))?;
        Ok(list.items.iter().map(snapshot).collect())
    }

    async fn pods_by_node(&self) -> Result<HashMap<String, Vec<PodFacts>>, ClusterError> {
        let joins = self.joins().await?;
        let group = |pods: &mut dyn Iterator<Item = &PodRecord>| {
            let mut by_node: HashMap<String, Vec<PodFacts>> = HashMap::new();
            for pod in pods {
                by_node.entry(pod.node.clone()).or_default().push(pod.facts(&joins));
            }
            by_node
        };
        if let Some(by_node) = self.caches.pods.read(|pods| group(&mut pods.values())) {
            return Ok(by_node);
        }
        let pods = self.list_pods(&ListParams::default()).await?;
        Ok(group(&mut pods.iter()))
    }

    /// A live, node-selected list: a drain never terminates on what a cache believed.
    async fn node_pods(&self, node: &str) -> Result<Vec<PodFacts>, ClusterError> {
        let on_node = ListParams::default().fields(&format!("spec.nodeName={node}"));
        let (pods, joins) = tokio::try_join!(self.list_pods(&on_node), self.joins())?;
        Ok(pods.iter().map(|p| p.facts(&joins)).collect())
    }

    async fn set_unschedulable(&self, node: &str, unschedulable: bool) -> Result<(), ClusterError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let patch =
            json!({ "spec": { "unschedulable": if unschedulable { json!(true) } else { json!(null) } } });
        nodes
            .patch(node, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(api_error("patch node"))?;
        Ok(())
    }

    async fn evict(&self, namespace: &str, pod: &str) -> Result<EvictOutcome, ClusterError> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        match pods.evict(pod, &EvictParams::default()).await {
            Ok(_) => Ok(EvictOutcome::Evicted),
            Err(kube::Error::Api(status)) if status.code == 429 => {
                Ok(EvictOutcome::Blocked(status.message.clone()))
            }
            Err(e) if is_not_found(&e) => Ok(EvictOutcome::Gone),
            Err(e) => Err(api_error("evict pod")(e)),
        }
    }

    async fn delete_node(&self, node: &str) -> Result<(), ClusterError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        match nodes.delete(node, &DeleteParams::default()).await {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(api_error("delete node")(e)),
        }
    }

    async fn node_event(&self, node: &str, event: NodeEvent, message: &str) {
        let reference = ObjectReference {
            api_version: Some(<Node as k8s_openapi::Resource>::API_VERSION.to_string()),
            kind: Some(<Node as k8s_openapi::Resource>::KIND.to_string()),
            name: Some(node.to_string()),
            ..ObjectReference::default()
        };
        let ev = Event {
            type_: if event.is_warning() { EventType::Warning } else { EventType::Normal },
            reason: event.reason().into(),
            note: Some(message.chars().take(1000).collect()),
            action: event.reason().into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &reference).await {
            tracing::warn!(node, reason = event.reason(), error = %e, "cannot publish node event");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_time_out_well_inside_the_lease() {
        assert_eq!(request_timeout(Duration::from_secs(30)), Duration::from_secs(10));
        assert_eq!(request_timeout(Duration::from_secs(3)), Duration::from_secs(1));
        assert_eq!(request_timeout(Duration::from_secs(300)), Duration::from_secs(10));
    }
}
