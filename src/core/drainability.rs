//! Which pods keep a node from being drained, per the Cluster Autoscaler conventions users
//! already know. Plain data in, a reason out: the adapter reduces Kubernetes objects to
//! [`PodFacts`], and every "not a candidate" rule lives here.

use std::fmt;

/// Annotation that marks a pod safe (`"true"`) or unsafe (`"false"`) to evict.
pub const SAFE_TO_EVICT: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict";
/// Pod annotation listing (comma-separated) the hostPath/emptyDir volumes whose data may be
/// lost, so they no longer block the drain (Cluster Autoscaler's convention).
pub const SAFE_TO_EVICT_LOCAL_VOLUMES: &str = "cluster-autoscaler.kubernetes.io/safe-to-evict-local-volumes";
/// Node annotation that excludes the node from scale-down when `"true"`.
pub const SCALE_DOWN_DISABLED: &str = "cluster-autoscaler.kubernetes.io/scale-down-disabled";

/// What drain decisions need to know about one pod.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PodFacts {
    /// Namespace.
    pub namespace: String,
    /// Name.
    pub name: String,
    /// Kind of the controlling owner reference (`ReplicaSet`, `DaemonSet`, …), if any.
    pub controller_kind: Option<String>,
    /// A static pod mirrored by the kubelet (`kubernetes.io/config.mirror` annotation).
    pub mirror: bool,
    /// `spec.priorityClassName`.
    pub priority_class: Option<String>,
    /// Uses a hostPath or disk-backed emptyDir volume not listed in
    /// [`SAFE_TO_EVICT_LOCAL_VOLUMES`].
    pub local_storage: bool,
    /// Mounts a PersistentVolume that lives on this node (`local`, `hostPath` — what K3s's
    /// `local-path` StorageClass creates — or pinned here by its node affinity): evicted, the
    /// pod could never start elsewhere and its data goes with the node.
    pub node_local_volume: bool,
    /// The safe-to-evict annotation: `Some(true)`, `Some(false)`, or absent.
    pub safe_to_evict: Option<bool>,
    /// Some PodDisruptionBudget selects this pod.
    pub has_pdb: bool,
    /// A PodDisruptionBudget selecting it allows no disruption right now.
    pub pdb_blocks: bool,
    /// Phase Succeeded or Failed: nothing to move.
    pub finished: bool,
    /// Already evicted and inside its grace period: wait for it, do not evict it again.
    pub terminating: bool,
    /// Owned (through its ReplicaSet) by a Deployment listed in
    /// `drain.movable_system_workloads`: a stateless add-on (K3s's coredns, traefik, …) its
    /// Deployment recreates elsewhere, so the kube-system, critical-priority and
    /// emptyDir/hostPath rules do not hold it; safe-to-evict "false", node-local PVs and PDBs
    /// still do.
    pub movable_system_workload: bool,
}

impl PodFacts {
    /// DaemonSet and mirror pods stay on the node until it goes; they are never evicted.
    pub fn stays_with_node(&self) -> bool {
        self.mirror || self.controller_kind.as_deref() == Some("DaemonSet")
    }

    /// Pods a drain has to evict.
    pub fn must_move(&self) -> bool {
        !self.stays_with_node() && !self.finished
    }
}

/// Why a node may not be drained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Blocker {
    /// The node is annotated scale-down-disabled.
    ScaleDownDisabled,
    /// A pod annotated safe-to-evict "false".
    AnnotatedNotSafe,
    /// A system-critical pod (not a DaemonSet).
    CriticalPriority,
    /// A non-DaemonSet kube-system pod without a PDB.
    KubeSystemWithoutPdb,
    /// A pod without a controller would be lost for good.
    NoController,
    /// A pod with local storage would lose its data.
    LocalStorage,
    /// A PDB allows no disruption now.
    PdbAllowsNoDisruption,
    /// A pod's PersistentVolume lives on the node: its data would go with it.
    NodeLocalVolume,
}

impl Blocker {
    /// Every blocker, for exporting zeroes and for tests.
    pub const ALL: [Blocker; 8] = [
        Blocker::ScaleDownDisabled,
        Blocker::AnnotatedNotSafe,
        Blocker::CriticalPriority,
        Blocker::KubeSystemWithoutPdb,
        Blocker::NoController,
        Blocker::LocalStorage,
        Blocker::PdbAllowsNoDisruption,
        Blocker::NodeLocalVolume,
    ];

    /// Stable label for `unremovable_nodes{reason}`.
    pub fn label(self) -> &'static str {
        match self {
            Blocker::ScaleDownDisabled => "scale_down_disabled",
            Blocker::AnnotatedNotSafe => "safe_to_evict_false",
            Blocker::CriticalPriority => "system_critical_pod",
            Blocker::KubeSystemWithoutPdb => "kube_system_pod_without_pdb",
            Blocker::NoController => "pod_without_controller",
            Blocker::LocalStorage => "pod_with_local_storage",
            Blocker::PdbAllowsNoDisruption => "pdb_allows_no_disruption",
            Blocker::NodeLocalVolume => "pod_with_node_local_volume",
        }
    }
}

impl fmt::Display for Blocker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Blocker::ScaleDownDisabled => "node annotated scale-down-disabled",
            Blocker::AnnotatedNotSafe => "pod annotated safe-to-evict=false",
            Blocker::CriticalPriority => "system-critical pod",
            Blocker::KubeSystemWithoutPdb => "kube-system pod without a PodDisruptionBudget",
            Blocker::NoController => "pod without a controller",
            Blocker::LocalStorage => "pod with local storage",
            Blocker::PdbAllowsNoDisruption => "PodDisruptionBudget allows no disruption",
            Blocker::NodeLocalVolume => "pod with a PersistentVolume on the node",
        })
    }
}

/// The Deployment that owns a pod through `replica_set`: the Deployment controller names
/// its ReplicaSets `<deployment>-<pod-template-hash>` and labels their pods with that hash.
/// `None` when the name does not end in the pod's hash (a ReplicaSet made by hand).
pub fn deployment_of<'a>(replica_set: &'a str, pod_template_hash: Option<&str>) -> Option<&'a str> {
    let hash = pod_template_hash.filter(|h| !h.is_empty())?;
    replica_set.strip_suffix(hash)?.strip_suffix('-').filter(|d| !d.is_empty())
}

/// Why this pod keeps its node, if it does. `safe-to-evict: "true"` lifts the kube-system,
/// no-controller and both local-storage rules (as in Cluster Autoscaler), never the critical
/// priority or PDB rules. A movable system workload is an ordinary replicated pod: the
/// kube-system, critical-priority and emptyDir/hostPath rules are lifted, never the
/// safe-to-evict "false", node-local PV or PDB rules.
pub fn pod_blocker(pod: &PodFacts) -> Option<Blocker> {
    if !pod.must_move() {
        return None;
    }
    if pod.safe_to_evict == Some(false) {
        return Some(Blocker::AnnotatedNotSafe);
    }
    let movable = pod.movable_system_workload;
    if !movable
        && matches!(pod.priority_class.as_deref(), Some("system-cluster-critical" | "system-node-critical"))
    {
        return Some(Blocker::CriticalPriority);
    }
    let vouched = pod.safe_to_evict == Some(true);
    if !vouched && !movable && pod.namespace == "kube-system" && !pod.has_pdb {
        return Some(Blocker::KubeSystemWithoutPdb);
    }
    if !vouched && pod.controller_kind.is_none() {
        return Some(Blocker::NoController);
    }
    if !vouched && pod.node_local_volume {
        return Some(Blocker::NodeLocalVolume);
    }
    if !vouched && !movable && pod.local_storage {
        return Some(Blocker::LocalStorage);
    }
    if pod.pdb_blocks {
        return Some(Blocker::PdbAllowsNoDisruption);
    }
    None
}

/// Every reason the node may not be drained (deduplicated, in a stable order).
pub fn node_blockers(scale_down_disabled: bool, pods: &[PodFacts]) -> Vec<Blocker> {
    let mut blockers: Vec<Blocker> = pods.iter().filter_map(pod_blocker).collect();
    if scale_down_disabled {
        blockers.push(Blocker::ScaleDownDisabled);
    }
    blockers.sort();
    blockers.dedup();
    blockers
}

#[cfg(test)]
mod tests {
    use super::*;

    fn web() -> PodFacts {
        PodFacts {
            namespace: "shop".into(),
            name: "web-1".into(),
            controller_kind: Some("ReplicaSet".into()),
            ..PodFacts::default()
        }
    }

    #[test]
    fn an_ordinary_replicated_pod_blocks_nothing() {
        assert_eq!(pod_blocker(&web()), None);
        assert!(web().must_move());
    }

    #[test]
    fn daemonset_mirror_and_finished_pods_are_ignored_whatever_they_carry() {
        for pod in [
            PodFacts { controller_kind: Some("DaemonSet".into()), local_storage: true, ..web() },
            PodFacts { mirror: true, controller_kind: None, namespace: "kube-system".into(), ..web() },
            PodFacts { finished: true, controller_kind: None, ..web() },
        ] {
            assert_eq!(pod_blocker(&pod), None, "{pod:?}");
            assert!(!pod.must_move());
        }
        let ds = PodFacts {
            controller_kind: Some("DaemonSet".into()),
            priority_class: Some("system-node-critical".into()),
            ..web()
        };
        assert_eq!(pod_blocker(&ds), None, "critical DaemonSets stay with the node");
    }

    #[test]
    fn each_rule_blocks_with_its_reason() {
        let cases = [
            (PodFacts { safe_to_evict: Some(false), ..web() }, Blocker::AnnotatedNotSafe),
            (
                PodFacts { priority_class: Some("system-cluster-critical".into()), ..web() },
                Blocker::CriticalPriority,
            ),
            (
                PodFacts { priority_class: Some("system-node-critical".into()), ..web() },
                Blocker::CriticalPriority,
            ),
            (PodFacts { namespace: "kube-system".into(), ..web() }, Blocker::KubeSystemWithoutPdb),
            (PodFacts { controller_kind: None, ..web() }, Blocker::NoController),
            (PodFacts { local_storage: true, ..web() }, Blocker::LocalStorage),
            (PodFacts { node_local_volume: true, ..web() }, Blocker::NodeLocalVolume),
            (PodFacts { node_local_volume: true, local_storage: true, ..web() }, Blocker::NodeLocalVolume),
            (PodFacts { has_pdb: true, pdb_blocks: true, ..web() }, Blocker::PdbAllowsNoDisruption),
        ];
        for (pod, expected) in cases {
            assert_eq!(pod_blocker(&pod), Some(expected), "{pod:?}");
        }
    }

    #[test]
    fn kube_system_pod_with_a_pdb_may_move() {
        assert_eq!(pod_blocker(&PodFacts { namespace: "kube-system".into(), has_pdb: true, ..web() }), None);
    }

    #[test]
    fn safe_to_evict_true_lifts_storage_controller_and_kube_system_rules_only() {
        let vouched = |p: PodFacts| PodFacts { safe_to_evict: Some(true), ..p };
        assert_eq!(pod_blocker(&vouched(PodFacts { local_storage: true, ..web() })), None);
        assert_eq!(pod_blocker(&vouched(PodFacts { node_local_volume: true, ..web() })), None);
        assert_eq!(pod_blocker(&vouched(PodFacts { controller_kind: None, ..web() })), None);
        assert_eq!(pod_blocker(&vouched(PodFacts { namespace: "kube-system".into(), ..web() })), None);
        assert_eq!(
            pod_blocker(&vouched(PodFacts {
                priority_class: Some("system-cluster-critical".into()),
                ..web()
            })),
            Some(Blocker::CriticalPriority)
        );
        assert_eq!(
            pod_blocker(&vouched(PodFacts { has_pdb: true, pdb_blocks: true, ..web() })),
            Some(Blocker::PdbAllowsNoDisruption)
        );
    }

    /// A K3s add-on pod as installed: kube-system, critical, emptyDir scratch volumes, no PDB.
    fn k3s_addon() -> PodFacts {
        PodFacts {
            namespace: "kube-system".into(),
            name: "traefik-7f7b8dc6f9-x2kq4".into(),
            priority_class: Some("system-cluster-critical".into()),
            local_storage: true,
            ..web()
        }
    }

    #[test]
    fn a_k3s_addon_is_held_unless_listed_as_movable() {
        let pod = k3s_addon();
        assert_eq!(pod_blocker(&pod), Some(Blocker::CriticalPriority));
        let listed = PodFacts { movable_system_workload: true, ..pod };
        assert_eq!(pod_blocker(&listed), None, "{listed:?}");
    }

    #[test]
    fn a_movable_system_workload_lifts_each_kube_system_critical_and_scratch_rule() {
        let movable = |p: PodFacts| PodFacts { movable_system_workload: true, ..p };
        for pod in [
            PodFacts { namespace: "kube-system".into(), ..web() },
            PodFacts { priority_class: Some("system-cluster-critical".into()), ..web() },
            PodFacts { priority_class: Some("system-node-critical".into()), ..web() },
            PodFacts { local_storage: true, ..web() },
        ] {
            assert!(pod_blocker(&pod).is_some(), "held when not listed: {pod:?}");
            assert_eq!(pod_blocker(&movable(pod.clone())), None, "{pod:?}");
        }
    }

    #[test]
    fn a_movable_system_workload_keeps_the_annotation_node_local_volume_and_pdb_rules() {
        let movable = |p: PodFacts| PodFacts { movable_system_workload: true, ..p };
        let cases = [
            (PodFacts { safe_to_evict: Some(false), ..k3s_addon() }, Blocker::AnnotatedNotSafe),
            (PodFacts { node_local_volume: true, ..k3s_addon() }, Blocker::NodeLocalVolume),
            (PodFacts { has_pdb: true, pdb_blocks: true, ..k3s_addon() }, Blocker::PdbAllowsNoDisruption),
            (PodFacts { controller_kind: None, ..k3s_addon() }, Blocker::NoController),
        ];
        for (pod, expected) in cases {
            assert_eq!(pod_blocker(&movable(pod.clone())), Some(expected), "{pod:?}");
        }
        let ds = PodFacts { controller_kind: Some("DaemonSet".into()), ..movable(k3s_addon()) };
        assert!(!ds.must_move(), "DaemonSet pods (svclb) stay with their node either way");
    }

    #[test]
    fn the_deployment_is_the_replica_set_name_minus_the_pod_template_hash() {
        assert_eq!(deployment_of("coredns-7b98449c4", Some("7b98449c4")), Some("coredns"));
        assert_eq!(
            deployment_of("local-path-provisioner-6c86858495", Some("6c86858495")),
            Some("local-path-provisioner")
        );
        assert_eq!(deployment_of("coredns-7b98449c4", None), None, "no hash label");
        assert_eq!(deployment_of("coredns-7b98449c4", Some("")), None);
        assert_eq!(deployment_of("coredns-abc", Some("7b98449c4")), None, "hand-made ReplicaSet");
        assert_eq!(deployment_of("coredns7b98449c4", Some("7b98449c4")), None, "no separator");
        assert_eq!(deployment_of("-7b98449c4", Some("7b98449c4")), None);
    }

    #[test]
    fn node_blockers_collects_node_and_pod_reasons_once() {
        let pods = [
            PodFacts { controller_kind: None, ..web() },
            PodFacts { controller_kind: None, name: "b".into(), ..web() },
        ];
        assert_eq!(node_blockers(true, &pods), vec![Blocker::ScaleDownDisabled, Blocker::NoController]);
        assert!(node_blockers(false, &[web()]).is_empty());
    }

    #[test]
    fn labels_are_distinct_and_texts_readable() {
        let mut labels: Vec<&str> = Blocker::ALL.iter().map(|b| b.label()).collect();
        labels.sort();
        labels.dedup();
        assert_eq!(labels.len(), Blocker::ALL.len());
        assert_eq!(Blocker::LocalStorage.to_string(), "pod with local storage");
    }
}
