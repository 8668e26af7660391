//! Pods reduced to drain facts. A pod's own facts are kept as a [`PodRecord`] (cached per pod);
//! the facts that depend on other objects — the PodDisruptionBudgets selecting it and whether
//! its claims are bound to local PersistentVolumes — are joined when read, since those objects
//! change on their own.

use std::collections::{BTreeMap, HashSet};

use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::ResourceExt;

use super::kube_cache::key_of;
use crate::core::drainability::{PodFacts, SAFE_TO_EVICT};

/// What a pod says about itself, for drain decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct PodRecord {
    /// `spec.nodeName`.
    pub node: String,
    namespace: String,
    name: String,
    labels: BTreeMap<String, String>,
    controller_kind: Option<String>,
    mirror: bool,
    priority_class: Option<String>,
    /// hostPath or a disk-backed emptyDir.
    node_local_volume: bool,
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

/// What pods are joined with: PDBs and the (namespace, claim) pairs bound to local PVs.
#[derive(Debug, Default)]
pub(super) struct Joins {
    pub pdbs: Vec<PdbRecord>,
    pub local_claims: HashSet<(String, String)>,
}

/// Reduces a scheduled pod (unscheduled pods sit on no node and are left out).
pub(super) fn pod_record(pod: &Pod) -> Option<(String, PodRecord)> {
    let spec = pod.spec.as_ref()?;
    let node = spec.node_name.clone()?;
    let volumes = spec.volumes.as_deref().unwrap_or_default();
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    let record = PodRecord {
        node,
        namespace: pod.namespace().unwrap_or_default(),
        name: pod.name_any(),
        labels: pod.labels().clone(),
        controller_kind: pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.kind.clone()),
        mirror: pod.annotations().contains_key("kubernetes.io/config.mirror"),
        priority_class: spec.priority_class_name.clone(),
        node_local_volume: volumes.iter().any(|v| {
            v.host_path.is_some()
                || v.empty_dir.as_ref().is_some_and(|e| e.medium.as_deref() != Some("Memory"))
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

/// A `local` PersistentVolume (other volumes are left out).
pub(super) fn local_volume(volume: &PersistentVolume) -> Option<(String, ())> {
    volume.spec.as_ref()?.local.as_ref()?;
    Some((volume.name_any(), ()))
}

/// (namespace, claim) pairs whose volume is local, from `namespace/claim` → volume pairs.
pub(super) fn local_claims<'a>(
    claims: impl Iterator<Item = (&'a String, &'a String)>,
    is_local: impl Fn(&str) -> bool,
) -> HashSet<(String, String)> {
    claims
        .filter(|(_, volume)| is_local(volume))
        .filter_map(|(key, _)| key.split_once('/').map(|(ns, name)| (ns.to_string(), name.to_string())))
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
        let local_claim =
            self.claims.iter().any(|c| joins.local_claims.contains(&(self.namespace.clone(), c.clone())));
        PodFacts {
            namespace: self.namespace.clone(),
            name: self.name.clone(),
            controller_kind: self.controller_kind.clone(),
            mirror: self.mirror,
            priority_class: self.priority_class.clone(),
            local_storage: self.node_local_volume || local_claim,
            safe_to_evict: self.safe_to_evict,
            has_pdb: !covering.is_empty(),
            pdb_blocks: covering.iter().any(|p| p.allows_none),
            finished: self.finished,
            terminating: self.terminating,
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
        assert!(!plain.local_storage && !plain.has_pdb);
        let pdb = PdbRecord {
            namespace: "apps".into(),
            selector: Some(LabelSelector {
                match_labels: Some(labels(&[("app", "db")])),
                ..Default::default()
            }),
            allows_none: true,
        };
        let joins =
            Joins { pdbs: vec![pdb], local_claims: [("apps".to_string(), "data-db-0".to_string())].into() };
        let joined = record.facts(&joins);
        assert!(joined.local_storage && joined.has_pdb && joined.pdb_blocks);
    }
}
