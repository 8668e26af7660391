//! Pods reduced to drain facts. A pod's own facts are kept as a [`PodRecord`] (cached per pod);
//! the facts that depend on other objects — the PodDisruptionBudgets selecting it and whether
//! its claims are bound to PersistentVolumes that live on its node — are joined when read,
//! since those objects change on their own.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use super::cache::key_of;
use crate::core::drainability::{PodFacts, SAFE_TO_EVICT, SAFE_TO_EVICT_LOCAL_VOLUMES, deployment_of};

/// What a pod says about itself, for drain decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PodRecord {
    /// `spec.nodeName`.
    pub node: String,
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
    controller_kind: Option<String>,
    /// `namespace/name` of the Deployment owning it through its ReplicaSet, if any.
    deployment: Option<String>,
    mirror: bool,
    priority_class: Option<String>,
    /// hostPath or a disk-backed emptyDir not listed in safe-to-evict-local-volumes.
    local_storage: bool,
    /// Names of the PersistentVolumeClaims it mounts.
    claims: Vec<String>,
    safe_to_evict: Option<bool>,
    finished: bool,
    terminating: bool,
}

/// A PodDisruptionBudget as drain decisions see it.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct PdbRecord {
    namespace: String,
    selector: Option<LabelSelector>,
    allows_none: bool,
}

/// What pods are joined with: PDBs, where the volumes of bound (namespace, claim) pairs
/// live, for claims whose volume may live on one node, and the configured
/// `drain.movable_system_workloads` (`namespace/name` of Deployments).
#[derive(Debug, Default)]
pub(super) struct Joins {
    pub pdbs: Vec<PdbRecord>,
    pub local_claims: HashMap<(String, String), VolumeSite>,
    pub movable: Arc<BTreeSet<String>>,
}

/// Where a PersistentVolume's data lives, for volumes that may live on a single node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum VolumeSite {
    /// On whichever node mounts it: a `local` or `hostPath` source, or a required node
    /// affinity on `kubernetes.io/hostname` (what local-path-provisioner writes).
    OneNode,
    /// On the nodes whose name is among these values of its required node affinity (an
    /// affinity on another key, e.g. a provisioner's `nodeAffinityKey`, or on
    /// `metadata.name`). A zone name never equals a node name, so a zonal volume (EBS) that
    /// follows its pod to another node in the zone does not count.
    NodesNamed(BTreeSet<String>),
}

impl VolumeSite {
    /// Whether the data lives on `node`.
    pub fn on(&self, node: &str) -> bool {
        match self {
            VolumeSite::OneNode => true,
            VolumeSite::NodesNamed(names) => names.contains(node),
        }
    }
}

/// The node label every kubelet sets to its hostname.
const LABEL_HOSTNAME: &str = "kubernetes.io/hostname";
/// The pod label the Deployment controller sets to the suffix of its ReplicaSet's name.
const LABEL_POD_TEMPLATE_HASH: &str = "pod-template-hash";

/// Reduces a scheduled pod (unscheduled pods sit on no node and are left out).
pub(super) fn pod_record(pod: &Pod) -> Option<(String, PodRecord)> {
    let spec = pod.spec.as_ref()?;
    let node = spec.node_name.clone()?;
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    let may_lose: Vec<&str> = pod
        .annotations()
        .get(SAFE_TO_EVICT_LOCAL_VOLUMES)
        .map(|names| names.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let controller = pod.owner_references().iter().find(|o| o.controller == Some(true));
    let deployment = controller
        .filter(|o| o.kind == "ReplicaSet")
        .and_then(|o| deployment_of(&o.name, pod.labels().get(LABEL_POD_TEMPLATE_HASH).map(String::as_str)))
        .map(|d| format!("{}/{d}", pod.namespace().unwrap_or_default()));
    let record = PodRecord {
        node,
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        labels: pod.labels().clone(),
        controller_kind: controller.map(|o| o.kind.clone()),
        deployment,
        mirror: pod.annotations().contains_key("kubernetes.io/config.mirror"),
        priority_class: spec.priority_class_name.clone(),
        local_storage: volumes.iter().any(|v| {
            let local = v.host_path.is_some()
                || v.empty_dir.as_ref().is_some_and(|e| e.medium.as_deref() != Some("Memory"));
            local && !may_lose.contains(&v.name.as_str())
        }),
        claims: volumes
            .iter()
            .filter_map(|v| v.persistent_volume_claim.as_ref())
            .map(|c| c.claim_name.clone())
            .collect(),
        safe_to_evict: pod.annotations().get(SAFE_TO_EVICT).map(|v| v == "true"),
        finished: matches!(phase, Some("Succeeded" | "Failed")),
        terminating: pod.metadata.deletion_timestamp.is_some(),
    };
    Some((key_of(pod)?, record))
}

/// Reduces a PodDisruptionBudget.
pub(super) fn pdb_record(pdb: &PodDisruptionBudget) -> Option<(String, PdbRecord)> {
    let record = PdbRecord {
        namespace: pdb.namespace().unwrap_or_default(),
        selector: pdb.spec.as_ref().and_then(|s| s.selector.clone()),
        allows_none: pdb.status.as_ref().is_some_and(|s| s.disruptions_allowed <= 0),
    };
    Some((key_of(pdb)?, record))
}

/// A claim bound to a volume: `namespace/claim` → volume name.
pub(super) fn claim_volume(claim: &PersistentVolumeClaim) -> Option<(String, String)> {
    Some((key_of(claim)?, claim.spec.as_ref()?.volume_name.clone()?))
}

/// Where a PersistentVolume lives, if it may live on one node (other volumes are left out).
/// Only the required affinity counts: it is what the scheduler enforces for the volume.
pub(super) fn volume_site(volume: &PersistentVolume) -> Option<(String, VolumeSite)> {
    let spec = volume.spec.as_ref()?;
    let terms = spec
        .node_affinity
        .as_ref()
        .and_then(|a| a.required.as_ref())
        .map(|r| r.node_selector_terms.as_slice())
        .unwrap_or_default();
    let pins = |key: &str, operator: &str| key == LABEL_HOSTNAME && operator == "In";
    let by_hostname =
        terms.iter().any(|t| t.match_expressions.iter().flatten().any(|e| pins(&e.key, &e.operator)));
    let site = if spec.local.is_some() || spec.host_path.is_some() || by_hostname {
        VolumeSite::OneNode
    } else {
        let names: BTreeSet<String> = terms
            .iter()
            .flat_map(|t| t.match_expressions.iter().flatten().chain(t.match_fields.iter().flatten()))
            .filter(|e| e.operator == "In")
            .flat_map(|e| e.values.iter().flatten().cloned())
            .collect();
        if names.is_empty() {
            return None;
        }
        VolumeSite::NodesNamed(names)
    };
    Some((volume.name_any(), site))
}

/// Where the volumes of bound claims live, from `namespace/claim` → volume pairs and a lookup
/// of the volumes that may live on one node.
pub(super) fn local_claims<'a>(
    claims: impl Iterator<Item = (&'a String, &'a String)>,
    site: impl Fn(&str) -> Option<VolumeSite>,
) -> HashMap<(String, String), VolumeSite> {
    claims
        .filter_map(|(key, volume)| {
            let (ns, name) = key.split_once('/')?;
            Some(((ns.to_string(), name.to_string()), site(volume)?))
        })
        .collect()
}

impl PodRecord {
    /// The pod's drain facts with the PDBs and local volumes of `joins`.
    pub fn facts(&self, joins: &Joins) -> PodFacts {
        let covering: Vec<&PdbRecord> = joins
            .pdbs
            .iter()
            .filter(|p| p.namespace == self.namespace)
            .filter(|p| p.selector.as_ref().is_some_and(|sel| selects(sel, &self.labels)))
            .collect();
        let node_local_volume = self.claims.iter().any(|c| {
            joins.local_claims.get(&(self.namespace.clone(), c.clone())).is_some_and(|s| s.on(&self.node))
        });
        PodFacts {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            controller_kind: self.controller_kind.clone(),
            mirror: self.mirror,
            priority_class: self.priority_class.clone(),
            local_storage: self.local_storage,
            node_local_volume,
            safe_to_evict: self.safe_to_evict,
            has_pdb: !covering.is_empty(),
            pdb_blocks: covering.iter().any(|p| p.allows_none),
            finished: self.finished,
            terminating: self.terminating,
            movable_system_workload: self.deployment.as_ref().is_some_and(|d| joins.movable.contains(d)),
        }
    }
}

/// Whether `selector` selects `labels` (matchLabels and matchExpressions).
fn selects(selector: &LabelSelector, labels: &BTreeMap<String, String>) -> bool {
    let labels_match =
        selector.match_labels.as_ref().is_none_or(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)));
    let expressions_match = selector.match_expressions.as_ref().is_none_or(|exprs| {
        exprs.iter().all(|e| {
            let values = e.values.as_deref().unwrap_or_default();
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

    #[test]
    fn pdbs_and_local_claims_are_joined_when_read() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "db-0", "namespace": "apps", "labels": {"app": "db"}},
            "spec": {"nodeName": "w1", "containers": [],
                     "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "data-db-0"}}]}
        }))
        .unwrap();
        let (key, record) = pod_record(&pod).unwrap();
        assert_eq!((key.as_str(), record.node.as_str()), ("apps/db-0", "w1"));
        let plain = record.facts(&Joins::default());
        assert!(!plain.node_local_volume && !plain.has_pdb);
        let pdb = PdbRecord {
            namespace: "apps".into(),
            selector: Some(LabelSelector {
                match_labels: Some(labels(&[("app", "db")])),
                ..Default::default()
            }),
            allows_none: true,
        };
        let claim = ("apps".to_string(), "data-db-0".to_string());
        let joins = Joins {
            pdbs: vec![pdb],
            local_claims: [(claim.clone(), VolumeSite::OneNode)].into(),
            ..Joins::default()
        };
        let joined = record.facts(&joins);
        assert!(joined.node_local_volume && !joined.local_storage && joined.has_pdb && joined.pdb_blocks);
        let elsewhere = VolumeSite::NodesNamed(["w2".to_string()].into());
        let joins = Joins { pdbs: vec![], local_claims: [(claim, elsewhere)].into(), ..Joins::default() };
        assert!(!record.facts(&joins).node_local_volume, "pinned to another node: not this node's data");
    }

    fn pv(spec: serde_json::Value) -> PersistentVolume {
        serde_json::from_value(serde_json::json!({"metadata": {"name": "pvc-1"}, "spec": spec})).unwrap()
    }

    fn affinity(key: &str, values: &[&str]) -> serde_json::Value {
        serde_json::json!({"required": {"nodeSelectorTerms": [{"matchExpressions": [
            {"key": key, "operator": "In", "values": values}]}]}})
    }

    #[test]
    fn volumes_that_live_on_one_node_are_told_from_volumes_that_follow_their_pod() {
        let site = |spec| volume_site(&pv(spec)).map(|(_, s)| s);
        // As rancher/local-path-provisioner writes it (K3s's default StorageClass).
        let local_path = serde_json::json!({
            "hostPath": {"path": "/var/lib/rancher/k3s/storage/pvc-1_apps_data", "type": "DirectoryOrCreate"},
            "nodeAffinity": affinity("kubernetes.io/hostname", &["w1"]),
            "storageClassName": "local-path"});
        assert_eq!(site(local_path), Some(VolumeSite::OneNode));
        assert_eq!(site(serde_json::json!({"local": {"path": "/mnt/disk"}})), Some(VolumeSite::OneNode));
        assert_eq!(site(serde_json::json!({"hostPath": {"path": "/srv"}})), Some(VolumeSite::OneNode));
        let pinned = serde_json::json!({"csi": {"driver": "x", "volumeHandle": "v"},
                                        "nodeAffinity": affinity("kubernetes.io/hostname", &["w1"])});
        assert_eq!(site(pinned), Some(VolumeSite::OneNode));
        // A provisioner's own node key whose value is the node's name.
        let by_name = site(serde_json::json!({"csi": {"driver": "x", "volumeHandle": "v"},
                                              "nodeAffinity": affinity("example.com/node", &["w1"])}))
        .unwrap();
        assert!(by_name.on("w1") && !by_name.on("w2"));
        // An EBS volume is pinned to a zone only: it follows its pod to another node.
        let ebs = site(serde_json::json!({"csi": {"driver": "ebs.csi.aws.com", "volumeHandle": "vol-1"},
                                          "nodeAffinity": affinity("topology.kubernetes.io/zone", &["us-east-1a"])}))
        .unwrap();
        assert!(!ebs.on("w1"));
        assert_eq!(site(serde_json::json!({"nfs": {"server": "nas", "path": "/x"}})), None);
    }

    #[test]
    fn safe_to_evict_local_volumes_excuses_only_the_volumes_it_names() {
        let pod = |annotation: &str| -> PodRecord {
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": "traefik-1", "namespace": "kube-system",
                             "annotations": {SAFE_TO_EVICT_LOCAL_VOLUMES: annotation}},
                "spec": {"nodeName": "w1", "containers": [],
                         "volumes": [{"name": "data", "emptyDir": {}}, {"name": "tmp", "emptyDir": {}},
                                     {"name": "shm", "emptyDir": {"medium": "Memory"}}]}
            }))
            .unwrap();
            pod_record(&pod).unwrap().1
        };
        assert!(pod("").facts(&Joins::default()).local_storage);
        assert!(pod("data").facts(&Joins::default()).local_storage, "tmp is still on disk");
        assert!(!pod("data, tmp").facts(&Joins::default()).local_storage);
    }

    #[test]
    fn a_pod_of_a_listed_deployment_is_a_movable_system_workload() {
        let pod = |namespace: &str, owner_kind: &str, owner: &str| -> PodRecord {
            let pod: Pod = serde_json::from_value(serde_json::json!({
                "metadata": {"name": format!("{owner}-x2kq4"), "namespace": namespace,
                             "labels": {"k8s-app": "kube-dns", "pod-template-hash": "7b98449c4"},
                             "ownerReferences": [{"apiVersion": "apps/v1", "kind": owner_kind, "name": owner,
                                                  "uid": "u1", "controller": true}]},
                "spec": {"nodeName": "w1", "containers": []}
            }))
            .unwrap();
            pod_record(&pod).unwrap().1
        };
        let joins =
            Joins { movable: Arc::new(["kube-system/coredns".to_string()].into()), ..Joins::default() };
        assert!(pod("kube-system", "ReplicaSet", "coredns-7b98449c4").facts(&joins).movable_system_workload);
        for (ns, kind, owner) in [
            ("apps", "ReplicaSet", "coredns-7b98449c4"),
            ("kube-system", "DaemonSet", "coredns-7b98449c4"),
            ("kube-system", "ReplicaSet", "coredns-abcdef"),
            ("kube-system", "ReplicaSet", "metrics-server-7b98449c4"),
        ] {
            assert!(!pod(ns, kind, owner).facts(&joins).movable_system_workload, "{ns} {kind} {owner}");
        }
        let record = pod("kube-system", "ReplicaSet", "coredns-7b98449c4");
        assert!(!record.facts(&Joins::default()).movable_system_workload, "an empty list moves nothing");
    }
}
