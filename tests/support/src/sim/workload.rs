//! The controllers a real cluster runs for the simulated apps, acting on the fake API
//! server's state: a ReplicaSet (`shop`, sized by the HPA from the load) and a Job
//! (`report`, batch pods), a scheduler that binds Pending pods to the least-allocated Ready,
//! schedulable, untainted worker or marks them Unschedulable, and pod GC for pods whose node
//! is gone. Evicted pods are recreated by the ReplicaSet and land where there is room.
//!
//! The cluster is a default K3s install: the add-on Deployments (coredns, metrics-server,
//! local-path-provisioner, traefik; one replica each, as K3s ships them) and an svclb
//! DaemonSet pod on every node. The add-ons tolerate the server's taint like the real ones,
//! but are spread over the Ready workers (fewest add-ons first), where a drain meets them; the
//! server is their place only while no worker can take them.

use std::collections::HashMap;

use k8s_openapi::api::core::v1::{Node, Pod};

use super::super::kube_api::{FakeKube, K3S_ADDONS, k3s_svclb_pod, pod};
use super::model::{REPORT_POD_MILLICORES, SHOP_POD_MILLICORES, WORKER_MILLICORES};

/// Namespace of the simulated apps.
pub const NAMESPACE: &str = "shop";

/// One app: its label, owner and pod size.
struct App {
    name: &'static str,
    owner_kind: &'static str,
    owner: &'static str,
    millicores: u32,
}

const SHOP: App =
    App { name: "shop", owner_kind: "ReplicaSet", owner: "shop-7c9d5b", millicores: SHOP_POD_MILLICORES };
const REPORT: App =
    App { name: "report", owner_kind: "Job", owner: "report", millicores: REPORT_POD_MILLICORES };

fn app_of(p: &Pod) -> Option<&str> {
    p.metadata.labels.as_ref()?.get("app").map(String::as_str)
}

fn millicores(p: &Pod) -> u32 {
    match app_of(p) {
        Some("shop") => SHOP.millicores,
        Some("report") => REPORT.millicores,
        _ => 0,
    }
}

fn terminating(p: &Pod) -> bool {
    p.metadata.deletion_timestamp.is_some()
}

fn node_of(p: &Pod) -> Option<&str> {
    p.spec.as_ref()?.node_name.as_deref()
}

fn name_of(p: &Pod) -> &str {
    p.metadata.name.as_deref().unwrap_or_default()
}

/// Whether the node is Ready.
pub fn is_ready(n: &Node) -> bool {
    let conditions = n.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Whether the node is cordoned.
pub fn is_cordoned(n: &Node) -> bool {
    n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false)
}

fn schedulable(n: &Node) -> bool {
    let tainted = n
        .spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|t| t.iter().any(|t| t.effect == "NoSchedule" || t.effect == "NoExecute"));
    is_ready(n) && !is_cordoned(n) && !tainted
}

/// One controller pass: GC, replica counts, scheduling.
pub fn reconcile(kube: &FakeKube, shop_replicas: usize, reports: usize) {
    let nodes = kube.nodes();
    let node_names: Vec<&str> = nodes.iter().filter_map(|n| n.metadata.name.as_deref()).collect();
    let mut pods: Vec<Pod> = Vec::new();
    for p in kube.pods() {
        match node_of(&p) {
            Some(n) if !node_names.contains(&n) => {
                kube.remove_pod(p.metadata.namespace.as_deref().unwrap_or("default"), name_of(&p))
            }
            _ if p.metadata.namespace.as_deref() == Some(NAMESPACE) => pods.push(p),
            _ => {}
        }
    }
    for (app, wanted) in [(&SHOP, shop_replicas), (&REPORT, reports)] {
        resize(kube, app, wanted, &pods);
    }
    schedule(kube, &nodes);
    run_k3s_addons(kube, &nodes);
}

/// The K3s add-on Deployments (one replica each, recreated when evicted) and their scheduling,
/// plus ServiceLB's svclb DaemonSet pod on every node.
fn run_k3s_addons(kube: &FakeKube, nodes: &[Node]) {
    const SYSTEM: &str = "kube-system";
    let pods: Vec<Pod> =
        kube.pods().into_iter().filter(|p| p.metadata.namespace.as_deref() == Some(SYSTEM)).collect();
    let hash = |p: &Pod| p.metadata.labels.as_ref()?.get("pod-template-hash").cloned();
    for addon in &K3S_ADDONS {
        if !pods.iter().any(|p| hash(p).as_deref() == Some(addon.hash) && !terminating(p)) {
            let suffix = &uuid::Uuid::new_v4().simple().to_string()[..5];
            kube.add_pod(addon.pod(suffix, None).build());
        }
    }
    for n in nodes.iter().filter_map(|n| n.metadata.name.as_deref()) {
        let svclb = k3s_svclb_pod(n).build();
        if !pods.iter().any(|p| p.metadata.name == svclb.metadata.name) {
            kube.add_pod(svclb);
        }
    }
    let placed = |n: &str| pods.iter().filter(|p| hash(p).is_some() && node_of(p) == Some(n)).count();
    let mut workers: Vec<(usize, &str)> = nodes
        .iter()
        .filter(|n| schedulable(n))
        .filter_map(|n| n.metadata.name.as_deref())
        .map(|n| (placed(n), n))
        .collect();
    let control_plane = |n: &&Node| {
        n.metadata.labels.as_ref().is_some_and(|l| l.contains_key("node-role.kubernetes.io/control-plane"))
    };
    let server = nodes.iter().filter(control_plane).find(|n| is_ready(n) && !is_cordoned(n));
    for p in pods.iter().filter(|p| hash(p).is_some() && node_of(p).is_none() && !terminating(p)) {
        workers.sort();
        let node = match workers.first_mut() {
            Some((count, n)) => {
                *count += 1;
                n.to_string()
            }
            None => match server.and_then(|s| s.metadata.name.clone()) {
                Some(n) => n,
                None => continue,
            },
        };
        let addon = K3S_ADDONS.iter().find(|a| hash(p).as_deref() == Some(a.hash)).expect("an add-on pod");
        let suffix = name_of(p).rsplit('-').next().unwrap_or_default();
        kube.add_pod(addon.pod(suffix, Some(&node)).build());
    }
}

fn resize(kube: &FakeKube, app: &App, wanted: usize, pods: &[Pod]) {
    let mut live: Vec<&Pod> =
        pods.iter().filter(|p| app_of(p) == Some(app.name) && !terminating(p)).collect();
    for _ in live.len()..wanted {
        let suffix = &uuid::Uuid::new_v4().simple().to_string()[..5];
        kube.add_pod(
            pod(NAMESPACE, &format!("{}-{suffix}", app.owner))
                .label("app", app.name)
                .owned_by(app.owner_kind, app.owner)
                .requests(&format!("{}m", app.millicores), "128Mi")
                .grace_period(1)
                .build(),
        );
    }
    // Scale in like a ReplicaSet: unscheduled pods first.
    live.sort_by_key(|p| node_of(p).is_some());
    for p in live.iter().take(live.len().saturating_sub(wanted)) {
        kube.remove_pod(NAMESPACE, name_of(p));
    }
}

fn schedule(kube: &FakeKube, nodes: &[Node]) {
    let pods = kube.pods();
    let mut free: HashMap<&str, i64> = nodes
        .iter()
        .filter(|n| schedulable(n))
        .filter_map(|n| n.metadata.name.as_deref())
        .map(|n| (n, i64::from(WORKER_MILLICORES)))
        .collect();
    for p in &pods {
        if let Some(room) = node_of(p).and_then(|n| free.get_mut(n)) {
            *room -= i64::from(millicores(p));
        }
    }
    let pending_app = |p: &&Pod| {
        p.metadata.namespace.as_deref() == Some(NAMESPACE) && node_of(p).is_none() && !terminating(p)
    };
    for p in pods.iter().filter(pending_app).filter(|p| app_of(p).is_some()) {
        let need = i64::from(millicores(p));
        let best = free.iter().filter(|(_, room)| **room >= need).max_by_key(|(n, room)| (**room, *n));
        let rebuilt = pod(NAMESPACE, name_of(p))
            .label("app", app_of(p).unwrap_or_default())
            .requests(&format!("{need}m"), "128Mi")
            .grace_period(1);
        let owner = p.metadata.owner_references.as_ref().and_then(|o| o.first());
        let rebuilt = match owner {
            Some(o) => rebuilt.owned_by(&o.kind, &o.name),
            None => rebuilt,
        };
        match best.map(|(n, _)| n.to_string()) {
            Some(node) => {
                *free.get_mut(node.as_str()).expect("chosen node") -= need;
                kube.add_pod(rebuilt.on_node(&node).build());
            }
            None if !unschedulable(p) => kube.add_pod(rebuilt.unschedulable().build()),
            None => {}
        }
    }
}

/// Whether the scheduler marked the pod Unschedulable.
pub fn unschedulable(p: &Pod) -> bool {
    let conditions = p.status.as_ref().and_then(|s| s.conditions.as_ref());
    conditions.is_some_and(|c| {
        c.iter().any(|c| {
            c.type_ == "PodScheduled" && c.status == "False" && c.reason.as_deref() == Some("Unschedulable")
        })
    })
}
