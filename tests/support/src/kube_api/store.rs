//! The object store behind the fake API server: kinds, `Status` errors, resourceVersion and
//! watch history, create/update/delete with the registry's rules (see controllers.rs for
//! what happens around them).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

use super::selectors::{FieldSelector, LabelSelector};
use super::validate::check_pod_update;
pub use super::validate::validate;

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug)]
pub enum Kind {
    Namespace,
    Node,
    Pod,
    Pdb,
    Event,
    CoreEvent,
    Pvc,
    Pv,
}

pub struct KindInfo {
    pub kind: &'static str,
    pub group: &'static str,
    pub version: &'static str,
    pub plural: &'static str,
    pub namespaced: bool,
    /// Has a `status` subresource (main-resource writes keep the old status, and vice versa).
    pub status: bool,
    /// Field selectors supported besides metadata.name / metadata.namespace.
    pub fields: &'static [&'static str],
    pub verbs: &'static [&'static str],
}

const RW: &[&str] = &["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"];
const EVENT_FIELDS: &[&str] = &[
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
];

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Namespace,
        Kind::Node,
        Kind::Pod,
        Kind::Pdb,
        Kind::Event,
        Kind::CoreEvent,
        Kind::Pvc,
        Kind::Pv,
    ];

    pub fn info(self) -> KindInfo {
        let (kind, group, plural, namespaced, status, fields): (_, _, _, _, _, &'static [&'static str]) =
            match self {
                Kind::Namespace => ("Namespace", "", "namespaces", false, true, &["status.phase"]),
                Kind::Node => ("Node", "", "nodes", false, true, &["spec.unschedulable"]),
                Kind::Pod => (
                    "Pod",
                    "",
                    "pods",
                    true,
                    true,
                    &[
                        "spec.nodeName",
                        "spec.restartPolicy",
                        "spec.schedulerName",
                        "spec.serviceAccountName",
                        "spec.hostNetwork",
                        "status.phase",
                        "status.podIP",
                        "status.nominatedNodeName",
                    ],
                ),
                Kind::Pdb => ("PodDisruptionBudget", "policy", "poddisruptionbudgets", true, true, &[]),
                Kind::Event => ("Event", "events.k8s.io", "events", true, false, EVENT_FIELDS),
                Kind::CoreEvent => ("Event", "", "events", true, false, EVENT_FIELDS),
                Kind::Pvc => ("PersistentVolumeClaim", "", "persistentvolumeclaims", true, true, &[]),
                Kind::Pv => ("PersistentVolume", "", "persistentvolumes", false, true, &[]),
            };
        KindInfo { kind, group, version: "v1", plural, namespaced, status, fields, verbs: RW }
    }

    pub fn api_version(self) -> String {
        let i = self.info();
        if i.group.is_empty() { i.version.to_string() } else { format!("{}/{}", i.group, i.version) }
    }

    /// `pods`, `poddisruptionbudgets.policy`: how the API server names the resource in messages.
    pub fn qualified(self) -> String {
        let i = self.info();
        if i.group.is_empty() { i.plural.to_string() } else { format!("{}.{}", i.plural, i.group) }
    }

    pub fn lookup(group: &str, version: &str, plural: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| {
            let i = k.info();
            i.group == group && i.version == version && i.plural == plural
        })
    }
}

/// An error answered as a `Status` with HTTP `code`.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: u16,
    pub body: Value,
}

impl ApiError {
    pub fn new(code: u16, reason: &str, message: impl Into<String>, details: Option<Value>) -> ApiError {
        let mut body = json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
            "message": message.into(), "reason": reason, "code": code,
        });
        if let Some(d) = details {
            body["details"] = d;
        }
        if reason.is_empty() {
            body.as_object_mut().expect("object").remove("reason");
        }
        ApiError { code, body }
    }

    fn details(kind: Kind, name: &str) -> Value {
        let i = kind.info();
        let mut d = json!({"name": name, "kind": i.plural});
        if !i.group.is_empty() {
            d["group"] = json!(i.group);
        }
        d
    }

    pub fn not_found(kind: Kind, name: &str) -> ApiError {
        let msg = format!("{} {name:?} not found", kind.qualified());
        ApiError::new(404, "NotFound", msg, Some(Self::details(kind, name)))
    }

    pub fn already_exists(kind: Kind, name: &str) -> ApiError {
        let msg = format!("{} {name:?} already exists", kind.qualified());
        ApiError::new(409, "AlreadyExists", msg, Some(Self::details(kind, name)))
    }

    pub fn conflict(kind: Kind, name: &str, why: &str) -> ApiError {
        let msg = format!("Operation cannot be fulfilled on {} {name:?}: {why}", kind.qualified());
        ApiError::new(409, "Conflict", msg, Some(Self::details(kind, name)))
    }

    pub fn modified(kind: Kind, name: &str) -> ApiError {
        Self::conflict(
            kind,
            name,
            "the object has been modified; please apply your changes to the latest version and try again",
        )
    }

    /// 422 Invalid with `(field, cause reason, message)` causes.
    pub fn invalid(kind: Kind, name: &str, causes: &[(String, &str, String)]) -> ApiError {
        let i = kind.info();
        let text: Vec<String> = causes.iter().map(|(f, _, m)| format!("{f}: {m}")).collect();
        let msg = if text.len() == 1 {
            format!("{} {name:?} is invalid: {}", i.kind, text[0])
        } else {
            format!("{} {name:?} is invalid: [{}]", i.kind, text.join(", "))
        };
        let mut d = json!({"name": name, "kind": i.kind, "causes":
            causes.iter().map(|(f, r, m)| json!({"reason": r, "message": m, "field": f})).collect::<Vec<_>>()});
        if !i.group.is_empty() {
            d["group"] = json!(i.group);
        }
        ApiError::new(422, "Invalid", msg, Some(d))
    }

    pub fn bad_request(msg: impl Into<String>) -> ApiError {
        ApiError::new(400, "BadRequest", msg, None)
    }

    pub fn not_found_path() -> ApiError {
        ApiError::new(404, "NotFound", "the server could not find the requested resource", Some(json!({})))
    }

    pub fn method_not_allowed() -> ApiError {
        ApiError::new(
            405,
            "MethodNotAllowed",
            "the server does not allow this method on the requested resource",
            Some(json!({})),
        )
    }
}

pub type Key = (Kind, String, String);

/// One committed change, as the watch cache keeps it.
#[derive(Clone)]
pub struct Change {
    pub rv: u64,
    pub kind: Kind,
    pub ns: String,
    pub old: Option<Value>,
    pub new: Option<Value>,
}

/// A pod that the simulated kubelet (or pod GC) removes later.
#[derive(Debug, Clone)]
pub struct Removal {
    pub ns: String,
    pub name: String,
    pub uid: String,
    pub after: Duration,
    /// Pod GC force-deletes; the kubelet only finishes a graceful deletion on a Ready node.
    pub gc: bool,
}

/// DeleteOptions, from the query and/or the body.
#[derive(Debug, Default, Clone)]
pub struct DeleteOpts {
    pub grace: Option<i64>,
    pub uid: Option<String>,
    pub rv: Option<String>,
    pub dry_run: bool,
}

impl DeleteOpts {
    pub fn from_json(v: &Value) -> DeleteOpts {
        DeleteOpts {
            grace: v.get("gracePeriodSeconds").and_then(Value::as_i64),
            uid: v.pointer("/preconditions/uid").and_then(Value::as_str).map(String::from),
            rv: v.pointer("/preconditions/resourceVersion").and_then(Value::as_str).map(String::from),
            dry_run: v.get("dryRun").and_then(Value::as_array).is_some_and(|a| a.iter().any(|x| x == "All")),
        }
    }
}

/// An injected failure: the next `times` requests whose "METHOD path" contains `needle`.
pub struct Fault {
    pub method: String,
    pub needle: String,
    pub code: u16,
    pub times: usize,
}

/// One eviction request as the API server saw it: the pod, its node, whether that node was
/// cordoned (being drained) at that moment, and whether its Node object still existed (a
/// pod stays bound to a deleted Node's name until pod GC).
#[derive(Debug, Clone)]
pub struct EvictionSeen {
    pub pod: String,
    pub node: Option<String>,
    pub cordoned: bool,
    pub node_exists: bool,
    pub code: u16,
}

/// What `eviction_target` reads: the pod's node, whether it is cordoned, whether it exists.
pub type EvictionTarget = (Option<String>, bool, bool);

pub struct State {
    pub rv: u64,
    pub objects: BTreeMap<Key, Value>,
    pub history: Vec<Change>,
    /// Watches from a resourceVersion below this answer 410 Expired.
    pub compacted: u64,
    pub evictions: Vec<(String, u16)>,
    pub eviction_log: Vec<EvictionSeen>,
    /// Bumped by `close_watches`: open watches end their stream.
    pub watch_generation: u64,
    pub pod_deletes: usize,
    pub requests: Vec<String>,
    pub event_keys: Vec<Key>,
    pub faults: Vec<Fault>,
    pub replicas: HashMap<(String, String, String), i64>,
    pub pod_gc_delay: Duration,
    pub bookmark_interval: Duration,
    /// (`resource[/subresource]`, verb) SelfSubjectAccessReviews answer as denied.
    pub denied: Vec<(String, String)>,
    notify: tokio::sync::watch::Sender<u64>,
}

pub fn now() -> Value {
    json!(
        k8s_openapi::jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", Timestamp::now()).expect("format time")
    )
}

pub fn at(secs: i64) -> Value {
    let t = Timestamp::now().checked_add(SignedDuration::from_secs(secs)).expect("time");
    json!(k8s_openapi::jiff::fmt::strtime::format("%Y-%m-%dT%H:%M:%SZ", t).expect("format time"))
}

pub fn meta_str<'a>(o: &'a Value, field: &str) -> Option<&'a str> {
    o.get("metadata").and_then(|m| m.get(field)).and_then(Value::as_str)
}

pub fn name_of(o: &Value) -> &str {
    meta_str(o, "name").unwrap_or("")
}

pub fn random_suffix() -> String {
    const ALPHABET: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";
    let id = uuid::Uuid::new_v4();
    id.as_bytes()[..5].iter().map(|b| ALPHABET[*b as usize % ALPHABET.len()] as char).collect()
}

pub fn terminating(o: &Value) -> bool {
    o.pointer("/metadata/deletionTimestamp").is_some_and(|v| !v.is_null())
}

pub fn has_finalizers(o: &Value) -> bool {
    o.pointer("/metadata/finalizers").and_then(Value::as_array).is_some_and(|a| !a.is_empty())
}

impl State {
    pub fn new() -> State {
        let (notify, _) = tokio::sync::watch::channel(0);
        let mut s = State {
            rv: 0,
            objects: BTreeMap::new(),
            history: Vec::new(),
            compacted: 0,
            evictions: Vec::new(),
            eviction_log: Vec::new(),
            watch_generation: 0,
            pod_deletes: 0,
            requests: Vec::new(),
            event_keys: Vec::new(),
            faults: Vec::new(),
            replicas: HashMap::new(),
            pod_gc_delay: Duration::from_secs(40),
            bookmark_interval: Duration::from_secs(1),
            denied: Vec::new(),
            notify,
        };
        for ns in ["default", "kube-system", "kube-public", "kube-node-lease"] {
            s.ensure_namespace(ns);
        }
        s
    }

    /// The pod's node, whether that node is cordoned and whether it exists, read before an
    /// eviction is answered.
    pub fn eviction_target(&self, ns: &str, name: &str) -> EvictionTarget {
        let node = self
            .get(Kind::Pod, ns, name)
            .and_then(|p| p.pointer("/spec/nodeName"))
            .and_then(Value::as_str)
            .map(String::from);
        let object = node.as_deref().and_then(|n| self.get(Kind::Node, "", n));
        let cordoned = object
            .is_some_and(|n| n.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false));
        (node, cordoned, object.is_some())
    }

    /// Records an eviction request on `ns/name` answered `code`, with its `eviction_target`.
    pub fn note_eviction(&mut self, ns: &str, name: &str, code: u16, target: EvictionTarget) {
        let pod = format!("{ns}/{name}");
        self.evictions.push((pod.clone(), code));
        let (node, cordoned, node_exists) = target;
        self.eviction_log.push(EvictionSeen { pod, node, cordoned, node_exists, code });
    }

    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.notify.subscribe()
    }

    pub fn ensure_namespace(&mut self, ns: &str) {
        if !ns.is_empty() && self.get(Kind::Namespace, "", ns).is_none() {
            let mut o = json!({"metadata": {"name": ns, "labels": {"kubernetes.io/metadata.name": ns}},
                               "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}});
            self.stamp_new(Kind::Namespace, "", &mut o);
            self.write(Kind::Namespace, "", ns, o);
        }
    }

    pub fn get(&self, kind: Kind, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(&(kind, ns.to_string(), name.to_string()))
    }

    /// Every object of `kind` (in `ns` if given) matching the selectors, in storage order.
    pub fn list(&self, kind: Kind, ns: Option<&str>, ls: &LabelSelector, fs: &FieldSelector) -> Vec<Value> {
        self.objects
            .iter()
            .filter(|((k, n, _), _)| *k == kind && ns.is_none_or(|ns| ns == n))
            .filter(|(_, o)| matches(o, ls, fs))
            .map(|(_, o)| o.clone())
            .collect()
    }

    /// As `list`, as the objects were at resourceVersion `rv` (a continued list reads the
    /// snapshot its first page was read at): the kept history after `rv` is undone. The caller
    /// checks that `rv` is not below the last compaction.
    pub fn list_at(
        &self,
        rv: u64,
        kind: Kind,
        ns: Option<&str>,
        ls: &LabelSelector,
        fs: &FieldSelector,
    ) -> Vec<Value> {
        let mut objects: BTreeMap<(String, String), Value> = self
            .objects
            .iter()
            .filter(|((k, _, _), _)| *k == kind)
            .map(|((_, n, name), o)| ((n.clone(), name.clone()), o.clone()))
            .collect();
        for c in self.history.iter().rev().take_while(|c| c.rv > rv).filter(|c| c.kind == kind) {
            let name = c.new.as_ref().or(c.old.as_ref()).map(name_of).unwrap_or("").to_string();
            match &c.old {
                Some(old) => objects.insert((c.ns.clone(), name), old.clone()),
                None => objects.remove(&(c.ns.clone(), name)),
            };
        }
        objects
            .into_iter()
            .filter(|((n, _), o)| ns.is_none_or(|ns| ns == n) && matches(o, ls, fs))
            .map(|(_, o)| o)
            .collect()
    }

    /// Sets what the API server sets on create (kind, apiVersion, namespace, uid, timestamps,
    /// generation), keeping a creationTimestamp the test seeded.
    pub fn stamp_new(&mut self, kind: Kind, ns: &str, o: &mut Value) {
        o["kind"] = json!(kind.info().kind);
        o["apiVersion"] = json!(kind.api_version());
        if !o.get("metadata").is_some_and(Value::is_object) {
            o["metadata"] = json!({});
        }
        let m = &mut o["metadata"];
        if kind.info().namespaced {
            m["namespace"] = json!(ns);
        } else if let Some(mm) = m.as_object_mut() {
            mm.remove("namespace");
        }
        m["uid"] = json!(uuid::Uuid::new_v4().to_string());
        if m.get("creationTimestamp").is_none_or(Value::is_null) {
            m["creationTimestamp"] = now();
        }
        if let Some(mm) = m.as_object_mut() {
            mm.remove("deletionTimestamp");
            mm.remove("deletionGracePeriodSeconds");
            mm.remove("resourceVersion");
        }
        if kind == Kind::Pdb {
            m["generation"] = json!(1);
        }
        if kind == Kind::Pod {
            if o.pointer("/spec/terminationGracePeriodSeconds").is_none()
                && o.get("spec").is_some_and(Value::is_object)
            {
                o["spec"]["terminationGracePeriodSeconds"] = json!(30);
            }
            if o.pointer("/status/phase").is_none() {
                o["status"]["phase"] = json!("Pending");
            }
        }
    }

    /// Commits `o` under a new resourceVersion and records the change.
    pub fn write(&mut self, kind: Kind, ns: &str, name: &str, mut o: Value) -> Value {
        self.rv += 1;
        o["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        let key = (kind, ns.to_string(), name.to_string());
        let old = self.objects.insert(key.clone(), o.clone());
        if old.is_none() && matches!(kind, Kind::Event | Kind::CoreEvent) {
            self.event_keys.push(key);
        }
        self.history.push(Change { rv: self.rv, kind, ns: ns.to_string(), old, new: Some(o.clone()) });
        o
    }

    /// Removes the object, recording a DELETED change; returns the last state.
    pub fn erase(&mut self, kind: Kind, ns: &str, name: &str) -> Option<Value> {
        let old = self.objects.remove(&(kind, ns.to_string(), name.to_string()))?;
        self.rv += 1;
        self.history.push(Change {
            rv: self.rv,
            kind,
            ns: ns.to_string(),
            old: Some(old.clone()),
            new: None,
        });
        Some(old)
    }

    /// After a batch of writes: the disruption controller's pass, then wake the watches.
    pub fn settle(&mut self) {
        self.sync_unschedulable_taints();
        self.sync_pdbs();
        self.notify.send_replace(self.rv);
    }

    // ---------------------------------------------------------------- create / update

    pub fn create(&mut self, kind: Kind, ns: &str, mut o: Value, dry_run: bool) -> Result<Value, ApiError> {
        if !o.is_object() {
            return Err(ApiError::bad_request("the body of the request was not a JSON object"));
        }
        if let Some(body_ns) = meta_str(&o, "namespace") {
            if kind.info().namespaced && !body_ns.is_empty() && body_ns != ns {
                return Err(ApiError::bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request",
                ));
            }
        }
        if kind.info().namespaced && self.get(Kind::Namespace, "", ns).is_none() {
            return Err(ApiError::not_found(Kind::Namespace, ns));
        }
        let mut name = meta_str(&o, "name").unwrap_or("").to_string();
        if name.is_empty() {
            match meta_str(&o, "generateName") {
                Some(g) if !g.is_empty() => {
                    name = format!("{g}{}", random_suffix());
                    o["metadata"]["name"] = json!(name);
                }
                _ => {
                    return Err(ApiError::invalid(
                        kind,
                        "",
                        &[(
                            "metadata.name".into(),
                            "FieldValueRequired",
                            "Required value: name or generateName is required".into(),
                        )],
                    ));
                }
            }
        }
        self.stamp_new(kind, ns, &mut o);
        if kind == Kind::Pod {
            // PrepareForCreate: a new pod's status is the server's, not the client's.
            o["status"] = json!({"phase": "Pending"});
        }
        validate(kind, &name, &o)?;
        if self.get(kind, ns, &name).is_some() {
            return Err(ApiError::already_exists(kind, &name));
        }
        if dry_run {
            return Ok(o);
        }
        let out = self.write(kind, ns, &name, o);
        self.settle();
        Ok(self.get(kind, ns, &name).cloned().unwrap_or(out))
    }

    /// Read-modify-write with the registry's rules: `f` gets the current object and returns
    /// the desired one; resourceVersion precondition, immutable metadata, status subresource
    /// split, validation, no-op detection, finalizer completion.
    pub fn update(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        sub: Option<&str>,
        dry_run: bool,
        f: impl FnOnce(&Value) -> Result<Value, ApiError>,
    ) -> Result<Value, ApiError> {
        let old = self.get(kind, ns, name).cloned().ok_or_else(|| ApiError::not_found(kind, name))?;
        let mut new = f(&old)?;
        if !new.is_object() {
            return Err(ApiError::bad_request("the body of the request was not a JSON object"));
        }
        if !new.get("metadata").is_some_and(Value::is_object) {
            new["metadata"] = json!({});
        }
        if let Some(rv) = meta_str(&new, "resourceVersion") {
            if !rv.is_empty() && rv != meta_str(&old, "resourceVersion").unwrap_or("") {
                return Err(ApiError::modified(kind, name));
            }
        }
        let new_name = meta_str(&new, "name").unwrap_or(name);
        if new_name != name {
            return Err(ApiError::bad_request(format!(
                "the name of the object ({new_name}) does not match the name on the URL ({name})"
            )));
        }
        if let Some(uid) = meta_str(&new, "uid") {
            if uid != meta_str(&old, "uid").unwrap_or("") {
                return Err(ApiError::conflict(
                    kind,
                    name,
                    &format!(
                        "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                        meta_str(&old, "uid").unwrap_or("")
                    ),
                ));
            }
        }
        // Fields only the server sets.
        for f in [
            "uid",
            "creationTimestamp",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
            "generation",
            "namespace",
            "name",
        ] {
            match old["metadata"].get(f) {
                Some(v) => new["metadata"][f] = v.clone(),
                None => {
                    new["metadata"].as_object_mut().expect("object").remove(f);
                }
            }
        }
        new["kind"] = json!(kind.info().kind);
        new["apiVersion"] = json!(kind.api_version());
        if kind.info().status {
            match sub {
                Some("status") => {
                    // Status writes change status only (ResetObjectMetaForStatus + old spec).
                    let status = new.get("status").cloned();
                    new = old.clone();
                    match status {
                        Some(s) => new["status"] = s,
                        None => {
                            new.as_object_mut().expect("object").remove("status");
                        }
                    }
                }
                _ => match old.get("status") {
                    Some(s) => new["status"] = s.clone(),
                    None => {
                        new.as_object_mut().expect("object").remove("status");
                    }
                },
            }
        }
        if kind == Kind::Pod && sub.is_none() {
            check_pod_update(name, &old, &new)?;
        }
        if kind == Kind::Pdb && old.get("spec") != new.get("spec") {
            new["metadata"]["generation"] = json!(old["metadata"]["generation"].as_i64().unwrap_or(1) + 1);
        }
        validate(kind, name, &new)?;
        let mut same = new.clone();
        same["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        if same == old {
            return Ok(old); // a no-op write keeps the resourceVersion and emits no event
        }
        if dry_run {
            return Ok(same);
        }
        let pod_pending_kubelet = kind == Kind::Pod
            && new.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0) > 0;
        if terminating(&new) && !has_finalizers(&new) && !pod_pending_kubelet {
            // The last finalizer went away: the deletion completes now.
            let out = self.write(kind, ns, name, new);
            self.erase(kind, ns, name);
            self.settle();
            return Ok(out);
        }
        let out = self.write(kind, ns, name, new);
        self.settle();
        Ok(out)
    }

    // ---------------------------------------------------------------- delete

    /// DELETE: preconditions, graceful pod deletion (deletionTimestamp now + grace, removed
    /// later by the simulated kubelet), finalizers. Returns the HTTP body and later removals.
    pub fn delete(
        &mut self,
        kind: Kind,
        ns: &str,
        name: &str,
        opts: &DeleteOpts,
    ) -> Result<(Value, Vec<Removal>), ApiError> {
        let old = self.get(kind, ns, name).cloned().ok_or_else(|| ApiError::not_found(kind, name))?;
        check_preconditions(kind, name, &old, opts)?;
        if opts.dry_run {
            return Ok((old, vec![]));
        }
        if kind == Kind::Pod {
            return Ok(self.delete_pod(ns, name, old, opts.grace));
        }
        if has_finalizers(&old) {
            if terminating(&old) {
                return Ok((old, vec![]));
            }
            let mut o = old.clone();
            o["metadata"]["deletionTimestamp"] = now();
            o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            let out = self.write(kind, ns, name, o);
            self.settle();
            return Ok((out, vec![]));
        }
        let gone = self.erase(kind, ns, name).expect("present");
        let mut removals = vec![];
        if kind == Kind::Node {
            // The pod garbage collector deletes pods bound to a node that no longer exists.
            removals = self
                .objects
                .iter()
                .filter(|((k, _, _), p)| {
                    *k == Kind::Pod && p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(name)
                })
                .map(|((_, pns, pname), p)| Removal {
                    ns: pns.clone(),
                    name: pname.clone(),
                    uid: meta_str(p, "uid").unwrap_or("").into(),
                    after: self.pod_gc_delay,
                    gc: true,
                })
                .collect();
        }
        self.settle();
        let i = kind.info();
        let mut details =
            json!({"name": name, "kind": i.plural, "uid": meta_str(&gone, "uid").unwrap_or("")});
        if !i.group.is_empty() {
            details["group"] = json!(i.group);
        }
        Ok((
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}),
            removals,
        ))
    }
}

pub fn matches(o: &Value, ls: &LabelSelector, fs: &FieldSelector) -> bool {
    ls.matches(o.pointer("/metadata/labels").unwrap_or(&Value::Null)) && fs.matches(o)
}

pub fn check_preconditions(kind: Kind, name: &str, cur: &Value, opts: &DeleteOpts) -> Result<(), ApiError> {
    let uid = meta_str(cur, "uid").unwrap_or("");
    if let Some(want) = opts.uid.as_deref().filter(|u| !u.is_empty()) {
        if want != uid {
            return Err(ApiError::conflict(
                kind,
                name,
                &format!("Precondition failed: UID in precondition: {want}, UID in object meta: {uid}"),
            ));
        }
    }
    let rv = meta_str(cur, "resourceVersion").unwrap_or("");
    if let Some(want) = opts.rv.as_deref().filter(|r| !r.is_empty()) {
        if want != rv {
            return Err(ApiError::conflict(
                kind,
                name,
                &format!(
                    "Precondition failed: ResourceVersion in precondition: {want}, ResourceVersion in object meta: {rv}"
                ),
            ));
        }
    }
    Ok(())
}

/// The object for a watch event of `c` for a watcher with these selectors, with its type
/// (cacher semantics: an object leaving the selector is a DELETED of its previous state).
pub fn watch_event(c: &Change, ls: &LabelSelector, fs: &FieldSelector) -> Option<(&'static str, Value)> {
    let cur = c.new.as_ref().is_some_and(|o| matches(o, ls, fs));
    let prev = c.old.as_ref().is_some_and(|o| matches(o, ls, fs));
    match (cur, prev, c.old.is_some()) {
        (true, true, _) => Some(("MODIFIED", c.new.clone().expect("new"))),
        (true, false, _) => Some(("ADDED", c.new.clone().expect("new"))),
        (false, true, _) => {
            let mut o = c.old.clone().expect("old");
            o["metadata"]["resourceVersion"] = json!(c.rv.to_string());
            Some(("DELETED", o))
        }
        _ => None,
    }
}
