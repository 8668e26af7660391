//! [`Cluster`] on the Kubernetes API through kube-rs. Lists are label/field-selected; pods
//! and PDBs are listed once per call and grouped, so API requests do not grow with nodes.

use std::collections::{BTreeMap, HashMap, HashSet};

use async_trait::async_trait;
use k8s_openapi::api::core::v1::{Node, ObjectReference, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, ResourceExt};
use serde_json::json;

use super::cluster::{Cluster, ClusterError, EvictOutcome, LABEL_POOL, NodeEvent, NodeSnapshot};
use crate::core::drainability::{PodFacts, SAFE_TO_EVICT, SCALE_DOWN_DISABLED};
use crate::core::time::Timestamp;

/// Kubernetes-backed cluster access.
#[derive(Clone)]
pub struct KubeCluster {
    client: Client,
    recorder: Recorder,
}

impl KubeCluster {
    /// Cluster access through `client`; Events are reported as `k3s-autoscaler`.
    pub fn new(client: Client) -> Self {
        let reporter =
            Reporter { controller: "k3s-autoscaler".into(), instance: std::env::var("HOSTNAME").ok() };
        let recorder = Recorder::new(client.clone(), reporter);
        Self { client, recorder }
    }

    /// A client from the kubeconfig at `path`, else in-cluster config or `KUBECONFIG`.
    ///
    /// kube's built-in retry is turned off: it would retry an eviction's 429 (a PDB saying
    /// "not now") for minutes inside one call; the sweeper retries at its own pace instead.
    pub async fn connect(path: Option<&std::path::Path>) -> Result<Self, kube::Error> {
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
        Ok(Self::new(Client::try_from(config)?))
    }
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
    let ready = node
        .status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|cs| cs.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True");
    NodeSnapshot {
        name: node.name_any(),
        provider_id: node.spec.as_ref().and_then(|s| s.provider_id.clone()),
        ready,
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

/// Whether `selector` selects `labels` (matchLabels and matchExpressions).
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match =
        selector.match_labels.as_ref().is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let expressions_match = selector.match_expressions.as_ref().is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let values = e.values.clone().unwrap_or_default();
            match e.operator.as_str() {
                "In" => labels.get(&e.key).is_some_and(|v| values.contains(v)),
                "NotIn" => labels.get(&e.key).is_none_or(|v| !values.contains(v)),
                "Exists" => labels.contains_key(&e.key),
                "DoesNotExist" => !labels.contains_key(&e.key),
                _ => false,
            }
        })
    });
    labels_match && expressions_match
}

/// `local_claims`: (namespace, claim) pairs bound to a `local` PersistentVolume.
fn pod_facts(pod: &Pod, pdbs: &[PodDisruptionBudget], local_claims: &HashSet<(String, String)>) -> PodFacts {
    let namespace = pod.namespace().unwrap_or_default();
    let controller_kind =
        pod.owner_references().iter().find(|o| o.controller == Some(true)).map(|o| o.kind.clone());
    let spec = pod.spec.as_ref();
    let local_storage = spec.and_then(|s| s.volumes.as_ref()).is_some_and(|volumes| {
        volumes.iter().any(|v| {
            v.host_path.is_some()
                || v.empty_dir.as_ref().is_some_and(|e| e.medium.as_deref() != Some("Memory"))
                || v.persistent_volume_claim
                    .as_ref()
                    .is_some_and(|c| local_claims.contains(&(namespace.clone(), c.claim_name.clone())))
        })
    });
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let covering: Vec<&PodDisruptionBudget> = pdbs
        .iter()
        .filter(|p| p.namespace().as_deref() == Some(namespace.as_str()))
        .filter(|p| {
            p.spec.as_ref().and_then(|s| s.selector.as_ref()).is_some_and(|sel| selects(sel, pod.labels()))
        })
        .collect();
    PodFacts {
        namespace,
        name: pod.name_any(),
        controller_kind,
        mirror: pod.annotations().contains_key("kubernetes.io/config.mirror"),
        priority_class: spec.and_then(|s| s.priority_class_name.clone()),
        local_storage,
        safe_to_evict: pod.annotations().get(SAFE_TO_EVICT).map(|v| v == "true"),
        has_pdb: !covering.is_empty(),
        pdb_blocks: covering.iter().any(|p| p.status.as_ref().is_some_and(|s| s.disruptions_allowed <= 0)),
        finished: matches!(phase, Some("Succeeded" | "Failed")),
        terminating: pod.metadata.deletion_timestamp.is_some(),
    }
}

#[async_trait]
impl Cluster for KubeCluster {
    async fn pool_nodes(&self, pool: &str) -> Result<Vec<NodeSnapshot>, ClusterError> {
        let nodes: Api<Node> = Api::all(self.client.clone());
        let list = nodes
            .list(&ListParams::default().labels(&format!("{LABEL_POOL}={pool}")))
            .await
            .map_err(api_error("list nodes"))?;
        Ok(list.items.iter().map(snapshot).collect())
    }

    async fn pods_by_node(&self) -> Result<HashMap<String, Vec<PodFacts>>, ClusterError> {
        let pods: Api<Pod> = Api::all(self.client.clone());
        let pdbs: Api<PodDisruptionBudget> = Api::all(self.client.clone());
        let claims: Api<PersistentVolumeClaim> = Api::all(self.client.clone());
        let volumes: Api<PersistentVolume> = Api::all(self.client.clone());
        let all = ListParams::default();
        let (pods, pdbs, claims, volumes) = tokio::try_join!(
            async { pods.list(&all).await.map_err(api_error("list pods")) },
            async { pdbs.list(&all).await.map_err(api_error("list poddisruptionbudgets")) },
            async { claims.list(&all).await.map_err(api_error("list persistentvolumeclaims")) },
            async { volumes.list(&all).await.map_err(api_error("list persistentvolumes")) },
        )?;
        let local_volumes: HashSet<String> = volumes
            .items
            .iter()
            .filter(|v| v.spec.as_ref().is_some_and(|s| s.local.is_some()))
            .map(|v| v.name_any())
            .collect();
        let local_claims: HashSet<(String, String)> = claims
            .items
            .iter()
            .filter(|c| {
                c.spec
                    .as_ref()
                    .and_then(|s| s.volume_name.as_ref())
                    .is_some_and(|v| local_volumes.contains(v))
            })
            .map(|c| (c.namespace().unwrap_or_default(), c.name_any()))
            .collect();
        let mut by_node: HashMap<String, Vec<PodFacts>> = HashMap::new();
        for pod in &pods.items {
            if let Some(node) = pod.spec.as_ref().and_then(|s| s.node_name.clone()) {
                by_node.entry(node).or_default().push(pod_facts(pod, &pdbs.items, &local_claims));
            }
        }
        Ok(by_node)
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
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelectorRequirement;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn label_selectors_match_like_the_api_server() {
        let sel = LabelSelector {
            match_labels: Some(labels(&[("app", "web")])),
            match_expressions: Some(vec![
                LabelSelectorRequirement {
                    key: "tier".into(),
                    operator: "In".into(),
                    values: Some(vec!["a".into(), "b".into()]),
                },
                LabelSelectorRequirement {
                    key: "canary".into(),
                    operator: "DoesNotExist".into(),
                    values: None,
                },
            ]),
        };
        assert!(selects(&sel, &labels(&[("app", "web"), ("tier", "a")])));
        assert!(!selects(&sel, &labels(&[("app", "web"), ("tier", "c")])));
        assert!(!selects(&sel, &labels(&[("app", "web"), ("tier", "a"), ("canary", "1")])));
        assert!(!selects(&sel, &labels(&[("tier", "a")])));
        assert!(selects(&LabelSelector::default(), &labels(&[])), "an empty selector selects everything");
    }
}
