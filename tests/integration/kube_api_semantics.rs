//! The fake Kubernetes API server (support::kube_api) driven by the real kube-rs client:
//! the calls the autoscaler makes must behave as they do against K3s.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod};
use k8s_openapi::api::events::v1::Event as K8sEvent;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use kube::api::{Api, DeleteParams, EvictParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde_json::json;

use crate::support::kube_api::{Budget, FakeKube, node, pdb, pod};

const POOL: &str = "k3s-autoscaler/pool";

/// `StreamExt::next` without the futures crate: WatchStreamExt's supertrait is Stream.
async fn next<S>(s: &mut S) -> Option<S::Item>
where
    S: WatchStreamExt + Unpin,
{
    let fut = std::future::poll_fn(|cx| std::pin::Pin::new(&mut *s).poll_next(cx));
    tokio::time::timeout(Duration::from_secs(3), fut).await.expect("stream item within 3 s")
}

fn api_code(e: kube::Error) -> u16 {
    match e {
        kube::Error::Api(s) => s.code,
        other => panic!("expected an API error, got {other:?}"),
    }
}

async fn seeded() -> (FakeKube, kube::Client) {
    let k = FakeKube::start().await;
    k.add_node(node("server").label("node-role.kubernetes.io/control-plane", "true").build());
    k.add_node(
        node("w1").provider_id("aws:///us-east-1a/i-1").label(POOL, "workers").label("zone", "a").build(),
    );
    k.add_node(
        node("w2").provider_id("aws:///us-east-1b/i-2").label(POOL, "workers").label("zone", "b").build(),
    );
    k.add_node(node("g1").provider_id("aws:///us-east-1a/i-3").label(POOL, "gpu").label("zone", "a").build());
    let c = k.client().await;
    (k, c)
}

fn names<K: ResourceExt>(items: &[K]) -> Vec<String> {
    items.iter().map(|o| o.name_any()).collect()
}

#[tokio::test]
async fn list_nodes_by_label_and_field_selector() {
    let (k, c) = seeded().await;
    let nodes: Api<Node> = Api::all(c);
    let list = |s: &'static str| {
        let nodes = nodes.clone();
        async move { names(&nodes.list(&ListParams::default().labels(s)).await.unwrap().items) }
    };
    assert_eq!(list("k3s-autoscaler/pool=workers").await, ["w1", "w2"]);
    assert_eq!(list("k3s-autoscaler/pool==workers,zone=a").await, ["w1"]);
    assert_eq!(list("k3s-autoscaler/pool,k3s-autoscaler/pool!=workers").await, ["g1"]);
    assert_eq!(list("!k3s-autoscaler/pool").await, ["server"]);
    assert_eq!(list("zone in (b, c)").await, ["w2"]);
    assert_eq!(list("k3s-autoscaler/pool, zone notin (a)").await, ["w2"]);
    let by_name = nodes.list(&ListParams::default().fields("metadata.name=w2")).await.unwrap();
    assert_eq!(names(&by_name.items), ["w2"]);
    assert!(by_name.metadata.resource_version.is_some_and(|rv| rv.parse::<u64>().unwrap() > 0));
    // Paginated like the watcher's initial list.
    let page = nodes.list(&ListParams::default().limit(3)).await.unwrap();
    assert_eq!(names(&page.items), ["g1", "server", "w1"]);
    let token = page.metadata.continue_.clone().expect("continue token");
    let rest = nodes.list(&ListParams::default().limit(3).continue_token(&token)).await.unwrap();
    assert_eq!(names(&rest.items), ["w2"]);
    assert!(rest.metadata.continue_.is_none());
    // A bad selector is a 400, an unsupported field a 400, like the real server.
    assert_eq!(api_code(nodes.list(&ListParams::default().labels("a b=c")).await.unwrap_err()), 400);
    assert_eq!(
        api_code(nodes.list(&ListParams::default().fields("spec.providerID=x")).await.unwrap_err()),
        400
    );
    let uid = nodes.get("w1").await.unwrap().metadata.uid;
    assert!(uid.is_some() && k.node("w1").unwrap().metadata.creation_timestamp.is_some());
}

#[tokio::test]
async fn patch_node_merge_and_strategic() {
    let (k, c) = seeded().await;
    let nodes: Api<Node> = Api::all(c);
    let before = nodes.get("w1").await.unwrap();
    let rv0: u64 = before.resource_version().unwrap().parse().unwrap();

    let cordon =
        json!({"spec": {"unschedulable": true}, "metadata": {"labels": {"k3s-autoscaler/draining": "true"}}});
    let patched = nodes.patch("w1", &PatchParams::default(), &Patch::Merge(&cordon)).await.unwrap();
    assert_eq!(patched.spec.as_ref().unwrap().unschedulable, Some(true));
    assert!(patched.resource_version().unwrap().parse::<u64>().unwrap() > rv0);
    assert_eq!(patched.labels()["k3s-autoscaler/draining"], "true");
    assert_eq!(patched.labels()[POOL], "workers", "merge patch keeps other labels");
    // The node controller's taint follows spec.unschedulable.
    let stored = k.node("w1").unwrap();
    let taints = stored.spec.unwrap().taints.unwrap();
    assert!(taints.iter().any(|t| t.key == "node.kubernetes.io/unschedulable" && t.effect == "NoSchedule"));

    // A no-op patch keeps the resourceVersion.
    let again = nodes.patch("w1", &PatchParams::default(), &Patch::Merge(&cordon)).await.unwrap();
    assert_eq!(again.resource_version(), k.node("w1").unwrap().resource_version());

    // Strategic merge: taints replace (atomic list), labels merge, null removes.
    let smp = json!({"metadata": {"labels": {"k3s-autoscaler/draining": null}},
                     "spec": {"unschedulable": false, "taints": [{"key": "k3s-autoscaler/drain", "effect": "NoSchedule"}]}});
    let un = nodes.patch("w1", &PatchParams::default(), &Patch::Strategic(&smp)).await.unwrap();
    assert_eq!(un.spec.as_ref().unwrap().unschedulable, Some(false));
    assert!(!un.labels().contains_key("k3s-autoscaler/draining"));
    let taints = k.node("w1").unwrap().spec.unwrap().taints.unwrap();
    assert_eq!(taints.iter().map(|t| t.key.as_str()).collect::<Vec<_>>(), ["k3s-autoscaler/drain"]);

    // Optimistic concurrency: a stale resourceVersion in the patch is a 409 Conflict.
    let stale = json!({"metadata": {"resourceVersion": rv0.to_string()}, "spec": {"unschedulable": true}});
    let err = nodes.patch("w1", &PatchParams::default(), &Patch::Merge(&stale)).await.unwrap_err();
    assert_eq!(api_code(err), 409);
    // Invalid values are a 422; a missing node a 404.
    let bad = json!({"spec": {"taints": [{"key": "x", "effect": "Sometimes"}]}});
    assert_eq!(
        api_code(nodes.patch("w1", &PatchParams::default(), &Patch::Merge(&bad)).await.unwrap_err()),
        422
    );
    assert_eq!(
        api_code(nodes.patch("nope", &PatchParams::default(), &Patch::Merge(&cordon)).await.unwrap_err()),
        404
    );
    // JSON patch (kube's Patch::Json) too, including a failed test op (422).
    let ops = json!([{"op": "test", "path": "/spec/unschedulable", "value": false},
                     {"op": "add", "path": "/metadata/annotations", "value": {"a": "b"}}]);
    let jp = nodes
        .patch("w1", &PatchParams::default(), &Patch::Json::<()>(serde_json::from_value(ops).unwrap()))
        .await
        .unwrap();
    assert_eq!(jp.annotations()["a"], "b");
    let ops = json!([{"op": "test", "path": "/spec/unschedulable", "value": true}]);
    let err = nodes
        .patch("w1", &PatchParams::default(), &Patch::Json::<()>(serde_json::from_value(ops).unwrap()))
        .await
        .unwrap_err();
    assert_eq!(api_code(err), 422);
}

#[tokio::test]
async fn list_pods_by_node_and_phase() {
    let (k, c) = seeded().await;
    k.add_pod(
        pod("default", "web-1").on_node("w1").owned_by("ReplicaSet", "web-abc").label("app", "web").build(),
    );
    k.add_pod(
        pod("default", "web-2").on_node("w2").owned_by("ReplicaSet", "web-abc").label("app", "web").build(),
    );
    k.add_pod(pod("kube-system", "ds-w1").on_node("w1").daemonset("svclb").build());
    k.add_pod(pod("batch", "done").on_node("w1").owned_by("Job", "j").phase("Succeeded").build());
    k.add_pod(pod("default", "pending").build());
    let all: Api<Pod> = Api::all(c.clone());
    let on = |f: &'static str| {
        let all = all.clone();
        async move { names(&all.list(&ListParams::default().fields(f)).await.unwrap().items) }
    };
    assert_eq!(on("spec.nodeName=w1").await, ["done", "web-1", "ds-w1"]);
    assert_eq!(on("spec.nodeName=w1,status.phase!=Succeeded,status.phase!=Failed").await, ["web-1", "ds-w1"]);
    assert_eq!(on("spec.nodeName=").await, ["pending"]);
    let default_ns: Api<Pod> = Api::namespaced(c.clone(), "default");
    let l =
        default_ns.list(&ListParams::default().fields("spec.nodeName=w1").labels("app=web")).await.unwrap();
    assert_eq!(names(&l.items), ["web-1"]);
    let one = default_ns.get("web-2").await.unwrap();
    assert_eq!(one.spec.unwrap().node_name.as_deref(), Some("w2"));
    assert_eq!(api_code(default_ns.get("nope").await.unwrap_err()), 404);
    // Metadata-only lists (PartialObjectMetadataList) work too.
    let meta = all.list_metadata(&ListParams::default().labels("app=web")).await.unwrap();
    assert_eq!(meta.items.len(), 2);
}

#[tokio::test]
async fn evict_pod_then_it_goes_after_its_grace_period() {
    let (k, c) = seeded().await;
    k.add_pod(
        pod("default", "web-1").on_node("w1").owned_by("ReplicaSet", "web-abc").grace_period(1).build(),
    );
    k.add_pod(
        pod("default", "stuck").on_node("w2").owned_by("ReplicaSet", "web-abc").grace_period(1).build(),
    );
    k.set_node_ready("w2", false);
    let pods: Api<Pod> = Api::namespaced(c, "default");
    assert_eq!(pods.evict("stuck", &EvictParams::default()).await.unwrap().code, 201);
    let status = pods.evict("web-1", &EvictParams::default()).await.unwrap();
    assert_eq!(status.code, 201);
    let terminating = pods.get("web-1").await.unwrap();
    assert!(terminating.metadata.deletion_timestamp.is_some());
    assert_eq!(terminating.metadata.deletion_grace_period_seconds, Some(1));
    let conds = terminating.status.unwrap().conditions.unwrap();
    assert!(
        conds
            .iter()
            .any(|c| c.type_ == "DisruptionTarget" && c.reason.as_deref() == Some("EvictionByEvictionAPI"))
    );
    // Evicting a terminating pod again is accepted (idempotent).
    assert_eq!(pods.evict("web-1", &EvictParams::default()).await.unwrap().code, 201);
    crate::support::eventually("pod removed", Duration::from_secs(3), || async {
        k.pod("default", "web-1").is_none().then_some(())
    })
    .await;
    assert_eq!(api_code(pods.evict("web-1", &EvictParams::default()).await.unwrap_err()), 404);
    assert_eq!(
        k.evictions()[1..],
        [("default/web-1".to_string(), 201), ("default/web-1".into(), 201), ("default/web-1".into(), 404)]
    );
    assert_eq!(k.pod_deletes(), 0);
    // No kubelet on a NotReady node finishes the deletion: the pod stays Terminating until
    // the node is back.
    assert!(k.pod("default", "stuck").unwrap().metadata.deletion_timestamp.is_some());
    k.set_node_ready("w2", true);
    assert!(k.pod("default", "stuck").is_none());
}

#[tokio::test]
async fn eviction_blocked_by_pdb_is_429_and_the_pod_stays() {
    let (k, c) = seeded().await;
    for (n, node) in [("web-1", "w1"), ("web-2", "w2")] {
        k.add_pod(
            pod("default", n)
                .on_node(node)
                .owned_by("ReplicaSet", "web-abc")
                .label("app", "web")
                .grace_period(0)
                .build(),
        );
    }
    k.add_pdb(pdb("default", "web", &[("app", "web")], Budget::MinAvailable(2)));
    let pdbs: Api<PodDisruptionBudget> = Api::namespaced(c.clone(), "default");
    let st = pdbs.get("web").await.unwrap().status.unwrap();
    assert_eq!(
        (st.current_healthy, st.desired_healthy, st.expected_pods, st.disruptions_allowed),
        (2, 2, 2, 0)
    );
    let listed = Api::<PodDisruptionBudget>::all(c.clone()).list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&listed.items), ["web"]);

    // kube's default client retries 429s itself (15 times, exponential backoff from 5 ms):
    // a blocked eviction does not come back for minutes.
    let retrying: Api<Pod> = Api::namespaced(c.clone(), "default");
    let waited =
        tokio::time::timeout(Duration::from_millis(1500), retrying.evict("web-1", &EvictParams::default()))
            .await;
    assert!(waited.is_err(), "kube retried the 429 instead of returning it");
    let retried = k.evictions().len();
    assert!(retried >= 3, "the fake answered {retried} 429s");
    k.add_pod(
        pod("default", "web-1")
            .on_node("w1")
            .owned_by("ReplicaSet", "web-abc")
            .label("app", "web")
            .grace_period(0)
            .build(),
    );

    // With default_retry = false the 429 surfaces as kube::Error::Api at once.
    let mut cfg = k.config();
    cfg.default_retry = false;
    let pods: Api<Pod> = Api::namespaced(k.client_with(cfg), "default");
    let before = k.evictions().len();
    let err = pods.evict("web-1", &EvictParams::default()).await.unwrap_err();
    let kube::Error::Api(s) = err else { panic!("not an API error") };
    assert_eq!((s.code, s.reason.as_str()), (429, "TooManyRequests"));
    assert_eq!(s.message, "Cannot evict pod as it would violate the pod's disruption budget.");
    let cause = &s.details.unwrap().causes[0];
    assert_eq!(cause.reason, "DisruptionBudget");
    assert_eq!(cause.message, "The disruption budget web needs 2 healthy pods and has 2 currently");
    assert!(k.pod("default", "web-1").unwrap().metadata.deletion_timestamp.is_none());

    // Loosen the budget: one disruption allowed, then none (the evicted pod is gone).
    pdbs.patch("web", &PatchParams::default(), &Patch::Merge(json!({"spec": {"minAvailable": 1}})))
        .await
        .unwrap();
    assert_eq!(pdbs.get("web").await.unwrap().status.unwrap().disruptions_allowed, 1);
    assert_eq!(pods.evict("web-1", &EvictParams::default()).await.unwrap().code, 201);
    assert!(k.pod("default", "web-1").is_none(), "grace 0: removed at once");
    assert_eq!(api_code(pods.evict("web-2", &EvictParams::default()).await.unwrap_err()), 429);
    assert_eq!(k.evictions()[before..].iter().map(|e| e.1).collect::<Vec<_>>(), [429, 201, 429]);
    assert!(k.evictions().iter().all(|(p, _)| p.starts_with("default/web-")));

    // Two PDBs over one pod: the eviction subresource refuses with a 500.
    k.add_pdb(pdb("default", "web-too", &[("app", "web")], Budget::MaxUnavailable(1)));
    assert_eq!(api_code(pods.evict("web-2", &EvictParams::default()).await.unwrap_err()), 500);
    // A pod delete is honoured (and counted): the autoscaler must never make one.
    pods.delete("web-2", &DeleteParams::default()).await.unwrap();
    assert_eq!(k.pod_deletes(), 1);
}

#[tokio::test]
async fn delete_node_then_get_is_404() {
    let (k, c) = seeded().await;
    let nodes: Api<Node> = Api::all(c);
    let gone = nodes.delete("w2", &DeleteParams::default()).await.unwrap();
    let status = gone.right().expect("nodes answer a Status on delete");
    assert_eq!(status.details.unwrap().name, "w2");
    let err = nodes.get("w2").await.unwrap_err();
    let kube::Error::Api(s) = err else { panic!("not an API error") };
    assert_eq!((s.code, s.reason.as_str(), s.message.as_str()), (404, "NotFound", "nodes \"w2\" not found"));
    assert!(nodes.get_opt("w2").await.unwrap().is_none());
    assert_eq!(api_code(nodes.delete("w2", &DeleteParams::default()).await.unwrap_err()), 404);
    assert!(k.node("w2").is_none() && k.nodes().len() == 3);
    // Unknown paths answer a 404 Status as well.
    let r = reqwest::get(format!("{}/apis/apps/v1/deployments", k.url)).await.unwrap();
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!((body["kind"].as_str(), body["reason"].as_str()), (Some("Status"), Some("NotFound")));
}

#[tokio::test]
async fn watcher_sees_nodes_added_and_modified() {
    let (k, c) = seeded().await;
    let nodes: Api<Node> = Api::all(c);
    let cfg = watcher::Config::default().labels("k3s-autoscaler/pool=workers");
    let mut events = Box::pin(watcher(nodes.clone(), cfg));
    let mut initial = vec![];
    loop {
        match next(&mut events).await.unwrap().unwrap() {
            watcher::Event::Init => {}
            watcher::Event::InitApply(n) => initial.push(n.name_any()),
            watcher::Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(initial, ["w1", "w2"]);
    let list_rv = k.resource_version();

    k.add_node(node("w3").label(POOL, "workers").build());
    let applied = |e: watcher::Event<Node>| match e {
        watcher::Event::Apply(n) => n,
        other => panic!("expected Apply, got {other:?}"),
    };
    let added = applied(next(&mut events).await.unwrap().unwrap());
    assert_eq!(added.name_any(), "w3");
    nodes
        .patch("w3", &PatchParams::default(), &Patch::Merge(json!({"spec": {"unschedulable": true}})))
        .await
        .unwrap();
    let modified = applied(next(&mut events).await.unwrap().unwrap());
    assert_eq!(modified.spec.unwrap().unschedulable, Some(true));
    // The node controller's taint is a second modification.
    let tainted = applied(next(&mut events).await.unwrap().unwrap());
    assert!(tainted.spec.unwrap().taints.is_some());
    // Leaving the selector is a Delete for this watcher.
    nodes
        .patch("w3", &PatchParams::default(), &Patch::Merge(json!({"metadata": {"labels": {POOL: "gpu"}}})))
        .await
        .unwrap();
    match next(&mut events).await.unwrap().unwrap() {
        watcher::Event::Delete(n) => assert_eq!(n.name_any(), "w3"),
        other => panic!("expected Delete, got {other:?}"),
    }
    let watches = k.requests().into_iter().filter(|r| r.contains("watch=true")).collect::<Vec<_>>();
    assert_eq!(watches.len(), 1, "no relist or 410: {watches:?}");
    // The watch resumed from the resourceVersion of the (paginated) list.
    assert!(k.requests()[0].starts_with("GET /api/v1/nodes?") && k.requests()[0].contains("limit=500"));
    assert!(watches[0].ends_with(&format!("resourceVersion={list_rv}")), "{watches:?}");
}

#[tokio::test]
async fn recorder_events_are_stored() {
    let (k, c) = seeded().await;
    let recorder = Recorder::new(
        c.clone(),
        Reporter { controller: "k3s-autoscaler".into(), instance: Some("test".into()) },
    );
    let n = Api::<Node>::all(c.clone()).get("w1").await.unwrap();
    let ev = Event {
        type_: EventType::Normal,
        reason: "ScaleDown".into(),
        note: Some("draining w1: average worker CPU 12%".into()),
        action: "Drain".into(),
        secondary: None,
    };
    recorder.publish(&ev, &n.object_ref(&())).await.unwrap();
    recorder.publish(&ev, &n.object_ref(&())).await.unwrap(); // a repeat patches the series
    let stored = k.events();
    assert_eq!(stored.len(), 1, "{stored:?}");
    let e = &stored[0];
    assert_eq!(
        (e["apiVersion"].as_str(), e["reason"].as_str()),
        (Some("events.k8s.io/v1"), Some("ScaleDown"))
    );
    assert_eq!(e["regarding"]["name"], "w1");
    assert_eq!(e["series"]["count"], 2);
    assert_eq!(e["metadata"]["namespace"], "default");
    assert_eq!(k.count("POST", "/apis/events.k8s.io/v1/namespaces/default/events"), 1);
    assert_eq!(k.count("PATCH", "/apis/events.k8s.io/v1/namespaces/default/events/"), 1);
    // The API reads them back like the real server.
    let listed =
        Api::<K8sEvent>::namespaced(c.clone(), "default").list(&ListParams::default()).await.unwrap();
    assert_eq!(listed.items.len(), 1);
    // Core v1 events are accepted too.
    let core = json!({"metadata": {"generateName": "w1."}, "involvedObject": {"kind": "Node", "name": "w1"},
                      "reason": "ScaleDown", "message": "m", "type": "Normal"});
    let created = Api::<k8s_openapi::api::core::v1::Event>::namespaced(c, "default")
        .create(&PostParams::default(), &serde_json::from_value(core).unwrap())
        .await
        .unwrap();
    assert!(created.name_any().starts_with("w1."));
    assert_eq!(k.events().len(), 2);
}

#[tokio::test]
async fn kubeconfig_client_and_faults() {
    let k = FakeKube::start().await;
    k.add_node(node("w1").build());
    let dir = tempfile::tempdir().unwrap();
    let path = k.kubeconfig(dir.path());
    let kc = kube::config::Kubeconfig::read_from(&path).unwrap();
    let cfg =
        kube::Config::from_custom_kubeconfig(kc, &kube::config::KubeConfigOptions::default()).await.unwrap();
    assert_eq!(cfg.cluster_url.to_string(), format!("{}/", k.url));
    assert_eq!(cfg.default_namespace, "default");
    let c = k.client_with(cfg);
    assert_eq!(c.apiserver_version().await.unwrap().git_version, "v1.33.4+k3s1");
    let nodes: Api<Node> = Api::all(c);
    let p = Patch::Merge(json!({"spec": {"unschedulable": true}}));
    // A 503 is retried by kube's default client; without the retry it surfaces.
    k.fail_next("PATCH", "/api/v1/nodes/w1", 503, 1);
    assert!(nodes.patch("w1", &PatchParams::default(), &p).await.is_ok());
    assert_eq!(k.count("PATCH", "/api/v1/nodes/w1"), 2);
    let mut cfg = k.config();
    cfg.default_retry = false;
    let once: Api<Node> = Api::all(k.client_with(cfg));
    k.fail_next("PATCH", "/api/v1/nodes/w1", 503, 1);
    assert_eq!(api_code(once.patch("w1", &PatchParams::default(), &p).await.unwrap_err()), 503);

    k.set_node_ready("w1", false);
    let n = nodes.get("w1").await.unwrap();
    let ready = n.status.unwrap().conditions.unwrap().into_iter().find(|c| c.type_ == "Ready").unwrap();
    assert_eq!(ready.status, "False");
    let taints = n.spec.unwrap().taints.unwrap();
    assert!(taints.iter().any(|t| t.key == "node.kubernetes.io/not-ready" && t.effect == "NoExecute"));
}

/// `kube::Client::try_from(config)` (what `KubeCluster::connect` does) builds kube's rustls
/// connector; it used to panic while rustls saw two crypto providers (kube's `ring`, the AWS
/// SDK's `aws-lc-rs`) and no process default. kube now uses `aws-lc-rs` too.
#[tokio::test]
async fn kube_api_client_try_from_works() {
    let k = FakeKube::start().await;
    k.add_node(node("w1").build());
    let c = kube::Client::try_from(k.config()).unwrap();
    assert_eq!(Api::<Node>::all(c).list(&ListParams::default()).await.unwrap().items.len(), 1);
}

#[tokio::test]
async fn watch_wire_format_history_and_expiry() {
    let (k, c) = seeded().await;
    k.add_pod(
        pod("default", "web-1").on_node("w1").owned_by("ReplicaSet", "web-abc").grace_period(0).build(),
    );
    k.add_pod(pod("default", "web-2").on_node("w2").owned_by("ReplicaSet", "web-abc").build());
    let rv = k.resource_version();
    k.set_node_ready("w1", false);
    let mut cfg = k.config();
    cfg.default_retry = false;
    Api::<Pod>::namespaced(k.client_with(cfg), "default")
        .evict("web-1", &EvictParams::default())
        .await
        .unwrap();

    // Changes after `rv` come from history; the stream ends at timeoutSeconds with a bookmark.
    let get = |path: String| async move {
        let text = reqwest::get(path).await.unwrap().text().await.unwrap();
        text.lines().map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()).collect::<Vec<_>>()
    };
    let (nodes, pods) = tokio::join!(
        get(format!(
            "{}/api/v1/nodes?watch=true&resourceVersion={rv}&timeoutSeconds=1&allowWatchBookmarks=true",
            k.url
        )),
        get(format!(
            "{}/api/v1/pods?watch=1&resourceVersion={rv}&timeoutSeconds=1&fieldSelector=spec.nodeName%3Dw1",
            k.url
        )),
    );
    let kinds: Vec<(&str, &str)> = nodes
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), e["object"]["metadata"]["name"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(kinds.first(), Some(&("MODIFIED", "w1")));
    assert_eq!(kinds.last().map(|k| k.0), Some("BOOKMARK"));
    let types: Vec<&str> = pods.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["MODIFIED", "DELETED"], "DisruptionTarget condition, then the grace-0 deletion");
    let deleted_rv: u64 = pods[1]["object"]["metadata"]["resourceVersion"].as_str().unwrap().parse().unwrap();
    assert!(deleted_rv > rv);

    // After a compaction an old resourceVersion is 410 Expired, as an ERROR event.
    k.compact();
    let expired = get(format!("{}/api/v1/nodes?watch=true&resourceVersion={rv}", k.url)).await;
    assert_eq!(expired.len(), 1);
    assert_eq!(
        (expired[0]["type"].as_str(), expired[0]["object"]["code"].as_u64()),
        (Some("ERROR"), Some(410))
    );

    // kube's watcher in streaming-list mode (sendInitialEvents + initial-events-end bookmark).
    let cfg = watcher::Config::default().streaming_lists().fields("spec.nodeName=w2");
    let mut events = Box::pin(watcher(Api::<Pod>::all(c), cfg));
    let mut seen = vec![];
    loop {
        match next(&mut events).await.unwrap().unwrap() {
            watcher::Event::Init => {}
            watcher::Event::InitApply(p) => seen.push(p.name_any()),
            watcher::Event::InitDone => break,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, ["web-2"]);
    k.remove_pod("default", "web-2");
    match next(&mut events).await.unwrap().unwrap() {
        watcher::Event::Delete(p) => assert_eq!(p.name_any(), "web-2"),
        other => panic!("expected Delete, got {other:?}"),
    }
}

#[tokio::test]
async fn self_subject_access_review_answers_allowed_or_denied_in_the_api_shape() {
    use k8s_openapi::api::authorization::v1::{
        ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
    };
    let (k, client) = seeded().await;
    let reviews: Api<SelfSubjectAccessReview> = Api::all(client);
    let ask = |resource: &str, subresource: Option<&str>, verb: &str| SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                group: Some(String::new()),
                resource: Some(resource.into()),
                subresource: subresource.map(str::to_string),
                verb: Some(verb.into()),
                ..ResourceAttributes::default()
            }),
            ..SelfSubjectAccessReviewSpec::default()
        },
        ..SelfSubjectAccessReview::default()
    };
    let allowed =
        reviews.create(&PostParams::default(), &ask("pods", Some("eviction"), "create")).await.unwrap();
    let status = allowed.status.expect("status");
    assert!(status.allowed && status.denied != Some(true));
    assert_eq!(
        allowed.spec.resource_attributes.and_then(|a| a.verb).as_deref(),
        Some("create"),
        "spec echoed"
    );

    k.deny_access("pods/eviction", "create");
    let denied =
        reviews.create(&PostParams::default(), &ask("pods", Some("eviction"), "create")).await.unwrap();
    let status = denied.status.expect("status");
    assert!(!status.allowed && status.denied == Some(true) && !status.reason.unwrap_or_default().is_empty());
    let other = reviews.create(&PostParams::default(), &ask("pods", None, "create")).await.unwrap();
    assert!(other.status.expect("status").allowed, "only the denied subresource is refused");
    assert!(k.requests().iter().any(|r| r == "POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews"));
}

/// A paginated list is one snapshot: a node added after the first page is not on the next
/// page; once history is compacted past the first page, the continue token answers 410.
#[tokio::test]
async fn paginated_lists_are_a_snapshot_and_an_expired_continue_token_is_410() {
    let (k, c) = seeded().await;
    let nodes: Api<Node> = Api::all(c);
    let first = nodes.list(&ListParams::default().limit(2)).await.unwrap();
    assert_eq!(names(&first.items), ["g1", "server"]);
    let token = first.metadata.continue_.clone().expect("a continue token");
    k.add_node(node("w0").build());
    k.remove_node("w2");
    let rest = nodes.list(&ListParams::default().limit(10).continue_token(&token)).await.unwrap();
    assert_eq!(names(&rest.items), ["w1", "w2"], "the snapshot of the first page, not w0, still w2");
    k.compact();
    let expired = nodes.list(&ListParams::default().limit(10).continue_token(&token)).await.unwrap_err();
    assert_eq!(api_code(expired), 410);
    let fresh = nodes.list(&ListParams::default()).await.unwrap();
    assert_eq!(names(&fresh.items), ["g1", "server", "w0", "w1"]);
}

/// The server closes every open watch: kube-rs's watcher starts a new watch from where it
/// was and misses nothing.
#[tokio::test]
async fn a_watch_the_server_closes_is_resumed_by_the_watcher() {
    let (k, c) = seeded().await;
    let nodes: Api<Node> = Api::all(c);
    let mut stream = Box::pin(watcher(nodes, watcher::Config::default()).applied_objects());
    for _ in 0..4 {
        next(&mut stream).await.expect("an initial node").unwrap();
    }
    let watches = k.count("GET", "watch=true");
    k.close_watches();
    k.add_node(node("w9").build());
    let seen = next(&mut stream).await.expect("the new node").unwrap();
    assert_eq!(seen.name_any(), "w9");
    assert!(k.count("GET", "watch=true") > watches, "a new watch was opened: {:?}", k.requests());
}

/// Evictions answer what the API server may: 409 (the pod changed meanwhile) and 429 (a PDB,
/// or one the disruption controller has not observed yet); kube-rs surfaces each code when
/// its retry is off, and the eviction log records the pod's node and cordon state.
#[tokio::test]
async fn evictions_can_answer_409_and_429_and_are_logged_with_their_node() {
    let k = FakeKube::start().await;
    k.add_node(node("w1").unschedulable(true).build());
    k.add_pod(
        pod("default", "web-1").on_node("w1").owned_by("ReplicaSet", "web-abc").grace_period(0).build(),
    );
    let mut cfg = k.config();
    cfg.default_retry = false;
    let pods: Api<Pod> = Api::namespaced(k.client_with(cfg), "default");
    for code in [409, 429] {
        k.fail_next("POST", "/eviction", code, 1);
        assert_eq!(api_code(pods.evict("web-1", &EvictParams::default()).await.unwrap_err()), code);
    }
    pods.evict("web-1", &EvictParams::default()).await.unwrap();
    let log: Vec<(String, Option<String>, bool, u16)> =
        k.eviction_log().into_iter().map(|e| (e.pod, e.node, e.cordoned, e.code)).collect();
    let seen = |code| ("default/web-1".to_string(), Some("w1".to_string()), true, code);
    assert_eq!(log, [seen(409), seen(429), seen(201)]);
}
