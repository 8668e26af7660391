//! Short builders for the objects tests seed: K3s-like worker nodes, pods of the shapes the
//! drain rules care about, and PodDisruptionBudgets.

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde_json::{Value, json};

use super::store::now;

fn build<T: serde::de::DeserializeOwned>(v: Value) -> T {
    serde_json::from_value(v.clone())
        .unwrap_or_else(|e| panic!("builder produced an invalid object {v}: {e}"))
}

pub struct NodeBuilder {
    v: Value,
    ready: bool,
}

/// A Ready K3s worker `name` (hostname/os/arch labels, 2 CPU / 4Gi / 110 pods).
pub fn node(name: &str) -> NodeBuilder {
    NodeBuilder {
        v: json!({
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "beta.kubernetes.io/os": "linux", "beta.kubernetes.io/arch": "amd64"}},
            "spec": {},
            "status": {
                "capacity": {"cpu": "2", "memory": "4026608Ki", "pods": "110", "ephemeral-storage": "20134592Ki"},
                "allocatable": {"cpu": "2", "memory": "4026608Ki", "pods": "110", "ephemeral-storage": "19586931083"},
                "nodeInfo": {"kubeletVersion": "v1.33.4+k3s1", "kubeProxyVersion": "v1.33.4+k3s1",
                    "containerRuntimeVersion": "containerd://2.0.5-k3s2", "operatingSystem": "linux",
                    "architecture": "amd64", "osImage": "Debian GNU/Linux 12 (bookworm)",
                    "kernelVersion": "6.1.0-37-cloud-amd64", "machineID": "", "systemUUID": "", "bootID": ""},
            },
        }),
        ready: true,
    }
}

impl NodeBuilder {
    pub fn provider_id(mut self, id: &str) -> Self {
        self.v["spec"]["providerID"] = json!(id);
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.v["metadata"]["labels"][k] = json!(v);
        self
    }
    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.v["metadata"]["annotations"][k] = json!(v);
        self
    }
    pub fn ready(mut self, ready: bool) -> Self {
        self.ready = ready;
        self
    }
    pub fn unschedulable(mut self, on: bool) -> Self {
        if on {
            // The server adds the node.kubernetes.io/unschedulable taint, as the node controller does.
            self.v["spec"]["unschedulable"] = json!(true);
        } else {
            self.v["spec"].as_object_mut().expect("spec").remove("unschedulable");
        }
        self
    }
    pub fn taint(mut self, key: &str, value: &str, effect: &str) -> Self {
        let mut t = json!({"key": key, "effect": effect});
        if !value.is_empty() {
            t["value"] = json!(value);
        }
        if !self.v["spec"]["taints"].is_array() {
            self.v["spec"]["taints"] = json!([]);
        }
        self.v["spec"]["taints"].as_array_mut().expect("taints").push(t);
        self
    }
    /// creationTimestamp (RFC 3339, e.g. "2026-01-01T00:00:00Z"); default: when seeded.
    pub fn created(mut self, rfc3339: &str) -> Self {
        self.v["metadata"]["creationTimestamp"] = json!(rfc3339);
        self
    }
    pub fn build(self) -> Node {
        let mut v = self.v;
        v["status"]["conditions"] = json!(ready_conditions(self.ready));
        if !self.ready {
            let taints = v["spec"]["taints"].as_array().cloned().unwrap_or_default();
            let mut taints: Vec<Value> = taints;
            taints.extend(not_ready_taints());
            v["spec"]["taints"] = json!(taints);
        }
        build(v)
    }
}

/// The kubelet's node conditions with Ready = `ready`.
pub fn ready_conditions(ready: bool) -> Vec<Value> {
    let t = now();
    let cond = |ty: &str, status: &str, reason: &str, msg: &str| {
        json!({"type": ty, "status": status, "reason": reason, "message": msg,
               "lastHeartbeatTime": t, "lastTransitionTime": t})
    };
    vec![
        cond(
            "MemoryPressure",
            "False",
            "KubeletHasSufficientMemory",
            "kubelet has sufficient memory available",
        ),
        cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
        cond("PIDPressure", "False", "KubeletHasSufficientPID", "kubelet has sufficient PID available"),
        if ready {
            cond("Ready", "True", "KubeletReady", "kubelet is posting ready status")
        } else {
            cond("Ready", "False", "KubeletNotReady", "container runtime network not ready")
        },
    ]
}

/// What the node lifecycle controller puts on a NotReady node.
pub fn not_ready_taints() -> Vec<Value> {
    vec![
        json!({"key": "node.kubernetes.io/not-ready", "effect": "NoSchedule"}),
        json!({"key": "node.kubernetes.io/not-ready", "effect": "NoExecute", "timeAdded": now()}),
    ]
}

pub struct PodBuilder {
    v: Value,
    node: Option<String>,
    mirror: bool,
    ready: Option<bool>,
    phase: Option<String>,
    unschedulable: bool,
}

/// A pod `ns/name` with one container; Pending until `.on_node(..)` (then Running and Ready).
pub fn pod(ns: &str, name: &str) -> PodBuilder {
    PodBuilder {
        v: json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": ns},
            "spec": {
                "containers": [{"name": "app", "image": "registry.k8s.io/pause:3.10",
                                "resources": {"requests": {"cpu": "100m", "memory": "64Mi"}}}],
                "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
                "schedulerName": "default-scheduler", "serviceAccountName": "default", "priority": 0,
            },
            "status": {},
        }),
        node: None,
        mirror: false,
        ready: None,
        phase: None,
        unschedulable: false,
    }
}

impl PodBuilder {
    pub fn on_node(mut self, node: &str) -> Self {
        self.node = Some(node.to_string());
        self
    }
    /// A controller ownerReference (ReplicaSet, StatefulSet, DaemonSet, Job, ...).
    pub fn owned_by(mut self, kind: &str, name: &str) -> Self {
        let api_version = match kind {
            "Job" | "CronJob" => "batch/v1",
            "ReplicationController" | "Node" => "v1",
            _ => "apps/v1",
        };
        self.v["metadata"]["ownerReferences"] = json!([{"apiVersion": api_version, "kind": kind, "name": name,
            "uid": uuid::Uuid::new_v4().to_string(), "controller": true, "blockOwnerDeletion": true}]);
        self
    }
    pub fn daemonset(self, ds: &str) -> Self {
        self.owned_by("DaemonSet", ds)
    }
    /// A static pod's mirror: config.mirror annotation and the Node as controller.
    pub fn mirror(mut self) -> Self {
        self.mirror = true;
        self.v["metadata"]["annotations"]["kubernetes.io/config.mirror"] =
            json!(uuid::Uuid::new_v4().simple().to_string());
        self.v["metadata"]["annotations"]["kubernetes.io/config.source"] = json!("file");
        self.v["metadata"]["annotations"]["kubernetes.io/config.hash"] =
            json!(uuid::Uuid::new_v4().simple().to_string());
        self
    }
    /// priorityClassName, with the priority the admission plugin would set.
    pub fn priority_class(mut self, class: &str) -> Self {
        let priority = match class {
            "system-node-critical" => 2_000_001_000,
            "system-cluster-critical" => 2_000_000_000,
            _ => 1000,
        };
        self.v["spec"]["priorityClassName"] = json!(class);
        self.v["spec"]["priority"] = json!(priority);
        self
    }
    fn volume(mut self, v: Value) -> Self {
        if !self.v["spec"]["volumes"].is_array() {
            self.v["spec"]["volumes"] = json!([]);
        }
        let n = self.v["spec"]["volumes"].as_array().expect("volumes").len();
        let mut v = v;
        v["name"] = json!(format!("vol{n}"));
        self.v["spec"]["volumes"].as_array_mut().expect("volumes").push(v);
        self
    }
    pub fn empty_dir(self, medium_memory: bool) -> Self {
        self.volume(if medium_memory {
            json!({"emptyDir": {"medium": "Memory"}})
        } else {
            json!({"emptyDir": {}})
        })
    }
    pub fn host_path(self) -> Self {
        self.volume(json!({"hostPath": {"path": "/var/lib/app", "type": "DirectoryOrCreate"}}))
    }
    /// A persistentVolumeClaim volume (seed the claim/PV with `FakeKube::add_local_pv`).
    pub fn local_pv_claim(self, claim: &str) -> Self {
        self.volume(json!({"persistentVolumeClaim": {"claimName": claim}}))
    }
    pub fn annotation(mut self, k: &str, v: &str) -> Self {
        self.v["metadata"]["annotations"][k] = json!(v);
        self
    }
    pub fn label(mut self, k: &str, v: &str) -> Self {
        self.v["metadata"]["labels"][k] = json!(v);
        self
    }
    pub fn grace_period(mut self, secs: i64) -> Self {
        self.v["spec"]["terminationGracePeriodSeconds"] = json!(secs);
        self
    }
    /// Ready condition (default: Ready when on a node).
    pub fn ready(mut self, ready: bool) -> Self {
        self.ready = Some(ready);
        self
    }
    /// Phase (default: Running when on a node, else Pending).
    pub fn phase(mut self, phase: &str) -> Self {
        self.phase = Some(phase.to_string());
        self
    }
    /// The scheduler found no node for it (PodScheduled False, reason Unschedulable).
    pub fn unschedulable(mut self) -> Self {
        self.unschedulable = true;
        self
    }
    pub fn requests(mut self, cpu: &str, memory: &str) -> Self {
        self.v["spec"]["containers"][0]["resources"]["requests"] = json!({"cpu": cpu, "memory": memory});
        self
    }
    pub fn build(self) -> Pod {
        let mut v = self.v;
        let t = now();
        let phase = self
            .phase
            .unwrap_or_else(|| if self.node.is_some() { "Running".into() } else { "Pending".into() });
        v["status"]["phase"] = json!(phase);
        v["status"]["qosClass"] = json!("Burstable");
        if let Some(n) = &self.node {
            v["spec"]["nodeName"] = json!(n);
            v["status"]["startTime"] = t.clone();
            v["status"]["hostIP"] = json!("10.0.0.10");
            v["status"]["podIP"] = json!("10.42.0.10");
            if self.mirror {
                v["metadata"]["ownerReferences"] = json!([{"apiVersion": "v1", "kind": "Node", "name": n,
                    "uid": uuid::Uuid::new_v4().to_string(), "controller": true}]);
            }
            let ready = self.ready.unwrap_or(phase == "Running");
            let s = |b: bool| if b { "True" } else { "False" };
            v["status"]["conditions"] = json!([
                {"type": "PodReadyToStartContainers", "status": "True", "lastTransitionTime": t},
                {"type": "Initialized", "status": "True", "lastTransitionTime": t},
                {"type": "Ready", "status": s(ready), "lastTransitionTime": t},
                {"type": "ContainersReady", "status": s(ready), "lastTransitionTime": t},
                {"type": "PodScheduled", "status": "True", "lastTransitionTime": t},
            ]);
            let running = phase == "Running";
            v["status"]["containerStatuses"] = json!([{"name": "app", "image": "registry.k8s.io/pause:3.10",
                "imageID": "", "ready": ready, "restartCount": 0, "started": running,
                "state": if running { json!({"running": {"startedAt": t}}) } else { json!({"terminated": {"exitCode": 0, "reason": "Completed"}}) }}]);
        } else if self.unschedulable {
            v["status"]["conditions"] = json!([{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                "message": "0/3 nodes are available: insufficient cpu.", "lastTransitionTime": t}]);
        } else if let Some(r) = self.ready {
            v["status"]["conditions"] = json!([{"type": "Ready", "status": if r { "True" } else { "False" }, "lastTransitionTime": t}]);
        }
        build(v)
    }
}

/// minAvailable / maxUnavailable of a PDB.
#[derive(Debug, Clone, Copy)]
pub enum Budget {
    MinAvailable(i32),
    MaxUnavailable(i32),
    MinAvailablePercent(u32),
    MaxUnavailablePercent(u32),
}

/// A policy/v1 PDB selecting `selector` (matchLabels); its status is computed by the server.
pub fn pdb(ns: &str, name: &str, selector: &[(&str, &str)], budget: Budget) -> PodDisruptionBudget {
    let labels: serde_json::Map<String, Value> =
        selector.iter().map(|(k, v)| (k.to_string(), json!(v))).collect();
    let mut spec = json!({"selector": {"matchLabels": labels}});
    match budget {
        Budget::MinAvailable(n) => spec["minAvailable"] = json!(n),
        Budget::MaxUnavailable(n) => spec["maxUnavailable"] = json!(n),
        Budget::MinAvailablePercent(p) => spec["minAvailable"] = json!(format!("{p}%")),
        Budget::MaxUnavailablePercent(p) => spec["maxUnavailable"] = json!(format!("{p}%")),
    }
    build(json!({"apiVersion": "policy/v1", "kind": "PodDisruptionBudget",
                 "metadata": {"name": name, "namespace": ns}, "spec": spec}))
}

/// One add-on Deployment of a default K3s install, as k3s's `manifests/` (and the traefik
/// HelmChart's values) define its pod template.
#[derive(Debug, Clone, Copy)]
pub struct K3sAddon {
    /// The Deployment in kube-system.
    pub deployment: &'static str,
    /// Its ReplicaSet's `pod-template-hash` (fixed: one revision per test cluster).
    pub hash: &'static str,
    /// The pod template's labels.
    pub labels: &'static [(&'static str, &'static str)],
    pub priority_class: &'static str,
    /// emptyDir volumes (on disk) the pod mounts, by name.
    pub empty_dirs: &'static [&'static str],
    /// ConfigMap volumes: (volume name, ConfigMap).
    pub config_maps: &'static [(&'static str, &'static str)],
}

/// coredns, metrics-server, local-path-provisioner and traefik, as a default K3s install
/// runs them in kube-system: critical priorities, no PDB, tolerating the server's taint.
pub const K3S_ADDONS: [K3sAddon; 4] = [
    K3sAddon {
        deployment: "coredns",
        hash: "ccb96694c",
        labels: &[("k8s-app", "kube-dns")],
        priority_class: "system-cluster-critical",
        empty_dirs: &[],
        config_maps: &[("config-volume", "coredns"), ("custom-config-volume", "coredns-custom")],
    },
    K3sAddon {
        deployment: "metrics-server",
        hash: "5985cbc9d7",
        labels: &[("k8s-app", "metrics-server")],
        priority_class: "system-node-critical",
        empty_dirs: &["tmp-dir"],
        config_maps: &[],
    },
    K3sAddon {
        deployment: "local-path-provisioner",
        hash: "5cf85fd84d",
        labels: &[("app", "local-path-provisioner")],
        priority_class: "system-node-critical",
        empty_dirs: &[],
        config_maps: &[("config-volume", "local-path-config")],
    },
    K3sAddon {
        deployment: "traefik",
        hash: "5d45fc8cc9",
        labels: &[
            ("app.kubernetes.io/name", "traefik"),
            ("app.kubernetes.io/instance", "traefik-kube-system"),
        ],
        priority_class: "system-cluster-critical",
        empty_dirs: &["data", "tmp"],
        config_maps: &[],
    },
];

/// The taint infra/userdata/server.sh gives the K3s server (`--node-taint`).
pub const K3S_SERVER_TAINT: (&str, &str, &str) =
    ("node-role.kubernetes.io/control-plane", "true", "NoSchedule");

/// What the K3s add-ons tolerate: CriticalAddonsOnly and the control-plane/master taints.
fn k3s_addon_tolerations() -> Value {
    json!([
        {"key": "CriticalAddonsOnly", "operator": "Exists"},
        {"key": "node-role.kubernetes.io/control-plane", "operator": "Exists", "effect": "NoSchedule"},
        {"key": "node-role.kubernetes.io/master", "operator": "Exists", "effect": "NoSchedule"},
    ])
}

/// The K3s server node `name`: control-plane role labels and the taint server.sh sets.
pub fn k3s_server(name: &str) -> NodeBuilder {
    let (key, value, effect) = K3S_SERVER_TAINT;
    node(name)
        .label("node-role.kubernetes.io/control-plane", "true")
        .label("node-role.kubernetes.io/master", "true")
        .taint(key, value, effect)
}

impl K3sAddon {
    /// The add-on by Deployment name.
    pub fn named(deployment: &str) -> K3sAddon {
        *K3S_ADDONS
            .iter()
            .find(|a| a.deployment == deployment)
            .unwrap_or_else(|| panic!("{deployment} is not a K3s add-on"))
    }

    /// Its pod `suffix` (the ReplicaSet's random suffix), owned by ReplicaSet
    /// `<deployment>-<hash>` with the `pod-template-hash` label, on `node` if given.
    pub fn pod(&self, suffix: &str, node: Option<&str>) -> PodBuilder {
        let replica_set = format!("{}-{}", self.deployment, self.hash);
        let mut b = pod("kube-system", &format!("{replica_set}-{suffix}"))
            .owned_by("ReplicaSet", &replica_set)
            .label("pod-template-hash", self.hash)
            .priority_class(self.priority_class)
            .grace_period(0);
        for (k, v) in self.labels {
            b = b.label(k, v);
        }
        if let Some(node) = node {
            b = b.on_node(node);
        }
        b.v["spec"]["tolerations"] = k3s_addon_tolerations();
        b.v["spec"]["nodeSelector"] = json!({"kubernetes.io/os": "linux"});
        let mut volumes: Vec<Value> =
            self.empty_dirs.iter().map(|n| json!({"name": n, "emptyDir": {}})).collect();
        volumes.extend(self.config_maps.iter().map(|(n, cm)| json!({"name": n, "configMap": {"name": cm}})));
        if !volumes.is_empty() {
            b.v["spec"]["volumes"] = json!(volumes);
        }
        b
    }
}

/// The svclb pod ServiceLB runs on `node` for traefik's LoadBalancer Service: a DaemonSet
/// pod in kube-system that stays with its node.
pub fn k3s_svclb_pod(node: &str) -> PodBuilder {
    let mut b = pod("kube-system", &format!("svclb-traefik-4f5c6a1b-{node}"))
        .daemonset("svclb-traefik-4f5c6a1b")
        .label("app", "svclb-traefik-4f5c6a1b")
        .label("svccontroller.k3s.cattle.io/svcname", "traefik")
        .label("svccontroller.k3s.cattle.io/svcnamespace", "kube-system")
        .priority_class("system-node-critical")
        .grace_period(0)
        .on_node(node);
    b.v["spec"]["tolerations"] = k3s_addon_tolerations();
    b
}
