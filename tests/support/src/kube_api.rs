//! A fake Kubernetes API server for the integration tests, faithful to the API semantics the
//! kube-rs client relies on, so the same client code works against K3s:
//!
//! - nodes, pods, PDBs (policy/v1), events (events.k8s.io/v1 and core/v1), namespaces,
//!   PVCs and PVs: get / list / watch / create / update / patch / delete;
//! - label selectors (`=`, `==`, `!=`, `in`, `notin`, exists, `!`, `>`/`<`) and field selectors
//!   (`=`, `==`, `!=`; unsupported fields are a 400 like the real server);
//! - merge, strategic merge (merge keys of these types), JSON patch, apply (approximated);
//! - resourceVersion from one counter bumped on every change; conflicts (409) on stale
//!   resourceVersions and preconditions; no-op writes keep the resourceVersion;
//! - graceful pod deletion: deletionTimestamp now + grace, then the simulated kubelet removes
//!   the pod (only while its node is Ready); pod GC removes pods of deleted nodes (40 s default);
//! - the Eviction subresource with PDBs (429 / 500 for several PDBs / 201), the disruption
//!   controller's PDB status, the node controller's unschedulable taint;
//! - watch with history from any resourceVersion (410 only below `compact()`), watches the
//!   server closes (`close_watches`); paginated lists served from the first page's snapshot, a
//!   continue token older than `compact()` → 410; selector
//!   transitions as ADDED/DELETED, bookmarks, sendInitialEvents, timeoutSeconds;
//! - errors as `Status` bodies; `fail_next` injects failures.
//!
//! Not modelled: controllers that recreate pods and the scheduler (an evicted pod just goes);
//! controller scale for a PDB's expected pods (`set_replicas`, else the pods present); field
//! ownership of server-side apply (applied as a strategic merge); snapshot reads
//! by `resourceVersion`/`resourceVersionMatch` on a first page (served from the current state);
//! taint-based eviction of NotReady nodes' pods; namespace deletion cascades; auth, RBAC,
//! admission, protobuf, Table output, aggregated (v2) discovery. Bookmarks come every second.
//!
//! The server runs on the test's tokio runtime: wait with `.await` (e.g. `support::eventually`),
//! never by blocking the thread, or it stops answering.
mod builders;
mod controllers;
mod patch;
mod selectors;
mod server;
mod store;
mod validate;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, PersistentVolume, PersistentVolumeClaim, Pod};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

#[allow(unused_imports)]
pub use builders::{
    Budget, K3S_ADDONS, K3S_SERVER_TAINT, K3sAddon, NodeBuilder, PodBuilder, k3s_server, k3s_svclb_pod, node,
    pdb, pod,
};
use server::{Shared, lock};
use store::{EvictionSeen, Kind, State};

/// A running fake API server on 127.0.0.1 (stops when dropped).
pub struct FakeKube {
    /// `http://127.0.0.1:<port>`
    pub url: String,
    shared: Shared,
    server: tokio::task::JoinHandle<()>,
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        self.server.abort();
    }
}

fn typed<T: DeserializeOwned>(v: &Value) -> T {
    serde_json::from_value(v.clone()).unwrap_or_else(|e| panic!("stored object does not parse: {e}: {v}"))
}

fn value<T: Serialize>(t: &T) -> Value {
    serde_json::to_value(t).expect("serialize")
}

impl FakeKube {
    /// Binds 127.0.0.1:0 and serves in a tokio task.
    pub async fn start() -> FakeKube {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake kube");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let shared: Shared = Arc::new(Mutex::new(State::new()));
        let app = server::router(shared.clone());
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake kube serve");
        });
        FakeKube { url, shared, server }
    }

    /// Writes a kubeconfig (server: `self.url`, no auth, namespace default) into `dir`.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join("kubeconfig");
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n\
             contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\n    namespace: default\n\
             current-context: fake\nusers:\n- name: fake\n  user: {{}}\npreferences: {{}}\n",
            self.url
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    /// `kube::Config::new(url)`: namespace "default", no auth, kube's defaults otherwise
    /// (including `default_retry = true`, see `client_with`).
    pub fn config(&self) -> kube::Config {
        kube::Config::new(self.url.parse().expect("url"))
    }

    /// A kube client pointed at this server, as `Client::try_from(self.config())` builds it.
    pub async fn client(&self) -> kube::Client {
        self.client_with(self.config())
    }

    /// A client with the middleware `kube::Client::try_from(config)` stacks (base URI, kube's
    /// default server retry when `config.default_retry` — it retries 429/503/504 up to 15
    /// times with exponential backoff —, auth, extra headers), over a reqwest HTTP/1.1
    /// transport instead of kube's rustls connector: that one panics in this crate while
    /// rustls has two crypto providers (ring from kube, aws-lc-rs from the AWS SDK) and
    /// none is installed as the process default.
    pub fn client_with(&self, config: kube::Config) -> kube::Client {
        use kube::client::ConfigExt;
        type BoxError = Box<dyn std::error::Error + Send + Sync>;
        let http = reqwest::Client::builder().no_proxy().build().expect("reqwest client");
        let transport = tower::service_fn(move |req: axum::http::Request<kube::client::Body>| {
            let http = http.clone();
            async move {
                let (parts, body) = req.into_parts();
                let bytes = http_body_util::BodyExt::collect(body).await?.to_bytes();
                let resp = http
                    .request(parts.method, parts.uri.to_string())
                    .headers(parts.headers)
                    .body(bytes)
                    .send()
                    .await?;
                Ok::<_, BoxError>(axum::http::Response::<reqwest::Body>::from(resp))
            }
        });
        let retry = config
            .default_retry
            .then(|| tower::retry::RetryLayer::new(kube::client::retry::RetryPolicy::server_retry()));
        let service = tower::ServiceBuilder::new()
            .layer(config.base_uri_layer())
            .option_layer(retry)
            .option_layer(config.auth_layer().expect("auth layer"))
            .layer(config.extra_headers_layer().expect("headers layer"))
            .service(transport);
        kube::Client::new(service, config.default_namespace.clone())
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        lock(&self.shared)
    }

    /// Creates or replaces an object directly (as if it already existed in the cluster),
    /// keeping a seeded creationTimestamp and the uid of an object it replaces.
    fn seed(&self, kind: Kind, v: Value) {
        self.seed_all(kind, vec![v]);
    }

    /// Seeds many objects with one pass of the controllers (bulk loading stays linear).
    fn seed_all(&self, kind: Kind, objects: Vec<Value>) {
        let mut st = self.state();
        for v in objects {
            let ns =
                v.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("default").to_string();
            let ns = if kind.info().namespaced { ns } else { String::new() };
            let name = v
                .pointer("/metadata/name")
                .and_then(Value::as_str)
                .expect("seeded object needs a name")
                .to_string();
            st.ensure_namespace(&ns);
            let mut o = v;
            st.stamp_new(kind, &ns, &mut o);
            if let Some(old) = st.get(kind, &ns, &name) {
                o["metadata"]["uid"] = old["metadata"]["uid"].clone();
            }
            if let Err(e) = store::validate(kind, &name, &o) {
                panic!("seeded {kind:?} {name} is invalid: {}", e.body);
            }
            st.write(kind, &ns, &name, o);
        }
        st.settle();
    }

    /// Seeds many nodes at once.
    pub fn add_nodes(&self, nodes: Vec<Node>) {
        self.seed_all(Kind::Node, nodes.iter().map(value).collect());
    }
    /// Seeds many pods at once.
    pub fn add_pods(&self, pods: Vec<Pod>) {
        self.seed_all(Kind::Pod, pods.iter().map(value).collect());
    }

    pub fn add_node(&self, node: Node) {
        self.seed(Kind::Node, value(&node));
    }
    pub fn add_pod(&self, pod: Pod) {
        self.seed(Kind::Pod, value(&pod));
    }
    pub fn add_pdb(&self, pdb: PodDisruptionBudget) {
        self.seed(Kind::Pdb, value(&pdb));
    }
    pub fn add_pvc(&self, pvc: PersistentVolumeClaim) {
        self.seed(Kind::Pvc, value(&pvc));
    }
    pub fn add_pv(&self, pv: PersistentVolume) {
        self.seed(Kind::Pv, value(&pv));
    }

    /// A bound claim `ns/claim` on a `local` PV pinned to `node` (what a pod's
    /// `.local_pv_claim(claim)` refers to).
    pub fn add_local_pv(&self, ns: &str, claim: &str, node: &str) {
        let pv = format!("pvc-{}", uuid::Uuid::new_v4());
        self.seed(Kind::Pv, json!({
            "metadata": {"name": pv, "annotations": {"pv.kubernetes.io/provisioned-by": "rancher.io/local-path"}},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                     "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "local-path",
                     "volumeMode": "Filesystem",
                     "local": {"path": format!("/var/lib/rancher/k3s/storage/{pv}_{ns}_{claim}")},
                     "claimRef": {"kind": "PersistentVolumeClaim", "namespace": ns, "name": claim, "apiVersion": "v1"},
                     "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                         {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
            "status": {"phase": "Bound"}
        }));
        self.seed(Kind::Pvc, json!({
            "metadata": {"name": claim, "namespace": ns,
                         "annotations": {"volume.kubernetes.io/selected-node": node, "pv.kubernetes.io/bind-completed": "yes"}},
            "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                     "storageClassName": "local-path", "volumeMode": "Filesystem", "volumeName": pv},
            "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}
        }));
    }

    /// A StatefulSet pod `shop/db-0` on `node` with its data on a `local-path` volume
    /// (claim `data-db-0`, see [`Self::add_local_path_pv`]).
    pub fn add_local_path_db(&self, node: &str) {
        self.add_local_path_pv("shop", "data-db-0", node);
        self.add_pod(
            builders::pod("shop", "db-0")
                .on_node(node)
                .owned_by("StatefulSet", "db")
                .local_pv_claim("data-db-0")
                .grace_period(0)
                .build(),
        );
    }

    /// A claim `ns/claim` of K3s's default `local-path` StorageClass, bound to the volume
    /// rancher/local-path-provisioner creates for it on `node`: a `hostPath` PV (not `local`)
    /// pinned by a required node affinity on `kubernetes.io/hostname`, as its provisioner.go
    /// and the PV controller's binding write them.
    pub fn add_local_path_pv(&self, ns: &str, claim: &str, node: &str) {
        let uid = uuid::Uuid::new_v4();
        let pv = format!("pvc-{uid}");
        let provisioner = "rancher.io/local-path";
        self.seed(
            Kind::Pv,
            json!({
                "metadata": {"name": pv, "finalizers": ["kubernetes.io/pv-protection"],
                             "annotations": {"local.path.provisioner/selected-node": node,
                                             "pv.kubernetes.io/provisioned-by": provisioner}},
                "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce"],
                         "persistentVolumeReclaimPolicy": "Delete", "storageClassName": "local-path",
                         "volumeMode": "Filesystem",
                         "hostPath": {"path": format!("/var/lib/rancher/k3s/storage/{pv}_{ns}_{claim}"),
                                      "type": "DirectoryOrCreate"},
                         "claimRef": {"kind": "PersistentVolumeClaim", "namespace": ns, "name": claim,
                                      "uid": uid.to_string(), "apiVersion": "v1"},
                         "nodeAffinity": {"required": {"nodeSelectorTerms": [{"matchExpressions": [
                             {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}]}]}}},
                "status": {"phase": "Bound"}
            }),
        );
        self.seed(
            Kind::Pvc,
            json!({
                "metadata": {"name": claim, "namespace": ns, "uid": uid.to_string(),
                             "finalizers": ["kubernetes.io/pvc-protection"],
                             "annotations": {"pv.kubernetes.io/bind-completed": "yes",
                                             "pv.kubernetes.io/bound-by-controller": "yes",
                                             "volume.beta.kubernetes.io/storage-provisioner": provisioner,
                                             "volume.kubernetes.io/storage-provisioner": provisioner,
                                             "volume.kubernetes.io/selected-node": node}},
                "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}},
                         "storageClassName": "local-path", "volumeMode": "Filesystem", "volumeName": pv},
                "status": {"phase": "Bound", "accessModes": ["ReadWriteOnce"], "capacity": {"storage": "1Gi"}}
            }),
        );
    }

    fn all<T: DeserializeOwned>(&self, kind: Kind) -> Vec<T> {
        self.state().objects.iter().filter(|((k, _, _), _)| *k == kind).map(|(_, v)| typed(v)).collect()
    }

    pub fn node(&self, name: &str) -> Option<Node> {
        self.state().get(Kind::Node, "", name).map(typed)
    }
    pub fn nodes(&self) -> Vec<Node> {
        self.all(Kind::Node)
    }
    pub fn pod(&self, ns: &str, name: &str) -> Option<Pod> {
        self.state().get(Kind::Pod, ns, name).map(typed)
    }
    pub fn pods(&self) -> Vec<Pod> {
        self.all(Kind::Pod)
    }
    pub fn pdb(&self, ns: &str, name: &str) -> Option<PodDisruptionBudget> {
        self.state().get(Kind::Pdb, ns, name).map(typed)
    }
    pub fn pdbs(&self) -> Vec<PodDisruptionBudget> {
        self.all(Kind::Pdb)
    }

    /// Flips the kubelet's Ready condition; the node controller's not-ready taints follow.
    /// Back to Ready, the kubelet finishes the overdue graceful deletions of its pods.
    pub fn set_node_ready(&self, name: &str, ready: bool) {
        let mut st = self.state();
        let Some(mut n) = st.get(Kind::Node, "", name).cloned() else {
            panic!("set_node_ready: no node {name}");
        };
        let conds = n.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
        let fresh = builders::ready_conditions(ready).pop().expect("ready condition");
        let mut conds: Vec<Value> = conds.into_iter().filter(|c| c["type"] != "Ready").collect();
        conds.push(fresh);
        n["status"]["conditions"] = json!(conds);
        let taints = n.pointer("/spec/taints").and_then(Value::as_array).cloned().unwrap_or_default();
        let mut taints: Vec<Value> =
            taints.into_iter().filter(|t| t["key"] != "node.kubernetes.io/not-ready").collect();
        if !ready {
            taints.extend(builders::not_ready_taints());
        }
        if taints.is_empty() {
            n["spec"].as_object_mut().expect("spec").remove("taints");
        } else {
            n["spec"]["taints"] = json!(taints);
        }
        st.write(Kind::Node, "", name, n);
        st.settle();
        if ready {
            for r in st.overdue_pods(name) {
                st.finish_removal(&r);
            }
        }
    }

    fn edit_pod(&self, ns: &str, name: &str, f: impl FnOnce(&mut Value)) {
        let mut st = self.state();
        let Some(mut p) = st.get(Kind::Pod, ns, name).cloned() else {
            panic!("no pod {ns}/{name}");
        };
        f(&mut p);
        st.write(Kind::Pod, ns, name, p);
        st.settle();
    }

    /// Sets the pod's Ready (and ContainersReady) condition.
    pub fn set_pod_ready(&self, ns: &str, name: &str, ready: bool) {
        self.edit_pod(ns, name, |p| {
            let s = if ready { "True" } else { "False" };
            let mut conds =
                p.pointer("/status/conditions").and_then(Value::as_array).cloned().unwrap_or_default();
            conds.retain(|c| c["type"] != "Ready" && c["type"] != "ContainersReady");
            conds.push(json!({"type": "Ready", "status": s, "lastTransitionTime": store::now()}));
            conds.push(json!({"type": "ContainersReady", "status": s, "lastTransitionTime": store::now()}));
            p["status"]["conditions"] = json!(conds);
        });
    }

    /// Sets status.phase (e.g. "Succeeded" for a finished Job pod).
    pub fn set_pod_phase(&self, ns: &str, name: &str, phase: &str) {
        self.edit_pod(ns, name, |p| p["status"]["phase"] = json!(phase));
    }

    /// Removes a node at once (the cloud controller saw its instance go); absent is fine.
    /// Pod GC then removes its pods after `set_pod_gc_delay`.
    pub fn remove_node(&self, name: &str) {
        let mut st = self.state();
        st.erase(Kind::Node, "", name);
        st.settle();
    }

    /// Removes a pod at once (a controller or the kubelet did it), not counted as a pod delete.
    pub fn remove_pod(&self, ns: &str, name: &str) {
        let mut st = self.state();
        st.erase(Kind::Pod, ns, name);
        st.settle();
    }

    /// The scale of a pod controller as the disruption controller would read it (for PDBs
    /// with maxUnavailable or a percentage); default: the number of its pods present.
    pub fn set_replicas(&self, ns: &str, kind: &str, name: &str, replicas: i64) {
        let mut st = self.state();
        st.replicas.insert((ns.into(), kind.into(), name.into()), replicas);
        st.settle();
    }

    /// Delay before pod GC removes the pods of a deleted node (default 40 s, like K3s).
    pub fn set_pod_gc_delay(&self, delay: Duration) {
        self.state().pod_gc_delay = delay;
    }

    /// Interval of BOOKMARK events on watches that allow them (default 1 s).
    pub fn set_bookmark_interval(&self, every: Duration) {
        self.state().bookmark_interval = every;
    }

    /// Forgets the change history (like an etcd compaction): watches from an older
    /// resourceVersion, and open watches that lag behind, get a 410 Expired ERROR event.
    pub fn compact(&self) {
        let mut st = self.state();
        st.compacted = st.rv;
        st.history.clear();
        st.settle();
    }

    /// Expires every open watch (like an API server restart that lost its watch cache): at the
    /// next change each one gets a 410 Expired ERROR event and ends, so watchers must relist.
    pub fn expire_watches(&self) {
        let mut st = self.state();
        st.compacted = st.rv + 1;
        st.history.clear();
    }

    /// Ends every open watch stream cleanly (as an API server does at its watch timeout or on
    /// shutdown): watchers must start a new watch from their last resourceVersion.
    pub fn close_watches(&self) {
        let mut st = self.state();
        st.watch_generation += 1;
        st.settle();
    }

    /// Removes a label from a Node (an operator's `kubectl label node <n> <key>-`).
    pub fn remove_node_label(&self, name: &str, key: &str) {
        let mut st = self.state();
        let Some(mut n) = st.get(Kind::Node, "", name).cloned() else { return };
        if let Some(labels) = n.pointer_mut("/metadata/labels").and_then(Value::as_object_mut) {
            labels.remove(key);
        }
        st.write(Kind::Node, "", name, n);
        st.settle();
    }

    /// Forgets every armed `fail_next` fault.
    pub fn clear_faults(&self) {
        self.state().faults.clear();
    }

    /// Every eviction request with the pod's node and whether it was cordoned then.
    pub fn eviction_log(&self) -> Vec<EvictionSeen> {
        self.state().eviction_log.clone()
    }

    /// The next `times` requests whose method is `method` ("" = any) and whose
    /// "METHOD path?query" contains `needle` are answered `code` with a Status body.
    pub fn fail_next(&self, method: &str, needle: &str, code: u16, times: usize) {
        self.state().faults.push(store::Fault { method: method.into(), needle: needle.into(), code, times });
    }

    /// SelfSubjectAccessReviews for `verb` on `resource` (`pods/eviction` for a subresource,
    /// `*` for any verb) answer "not allowed" from now on.
    pub fn deny_access(&self, resource: &str, verb: &str) {
        self.state().denied.push((resource.into(), verb.into()));
    }

    /// Every eviction request: ("ns/name", status answered).
    pub fn evictions(&self) -> Vec<(String, u16)> {
        self.state().evictions.clone()
    }

    /// DELETE requests on pods (single or collection), whatever their outcome.
    pub fn pod_deletes(&self) -> usize {
        self.state().pod_deletes
    }

    /// Events created (events.k8s.io/v1 and core/v1), in creation order, as currently stored.
    pub fn events(&self) -> Vec<Value> {
        let st = self.state();
        st.event_keys.iter().filter_map(|k| st.objects.get(k).cloned()).collect()
    }

    /// "METHOD path?query" of every request, in order.
    pub fn requests(&self) -> Vec<String> {
        self.state().requests.clone()
    }

    /// How many requests start with `method` and contain `needle`.
    pub fn count(&self, method: &str, needle: &str) -> usize {
        self.state()
            .requests
            .iter()
            .filter(|r| r.starts_with(&format!("{method} ")) && r.contains(needle))
            .count()
    }

    /// The current global resourceVersion.
    pub fn resource_version(&self) -> u64 {
        self.state().rv
    }
}
