//! HTTP side of the fake API server: URL layout, verbs, list/watch, patch content types,
//! discovery, metadata-only (PartialObjectMetadata) answers and injected faults.

use std::collections::HashMap;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::{Body, Bytes, HttpBody};
use axum::extract::State as AxState;
use axum::http::{HeaderMap, Method, Response, StatusCode, Uri};
use base64::Engine;
use serde_json::{Value, json};

use super::patch;
use super::selectors::{FieldSelector, LabelSelector};
use super::store::{self, ApiError, DeleteOpts, Kind, Removal, State};

pub type Shared = Arc<Mutex<State>>;

pub fn lock(s: &Shared) -> MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|e| e.into_inner())
}

pub fn router(shared: Shared) -> axum::Router {
    axum::Router::new().fallback(handle).with_state(shared)
}

fn respond(code: u16, v: &Value) -> Response<Body> {
    Response::builder()
        .status(StatusCode::from_u16(code).expect("status"))
        .header("content-type", "application/json")
        .body(Body::from(serde_json::to_vec(v).expect("json")))
        .expect("response")
}

fn error(e: ApiError) -> Response<Body> {
    let mut r = respond(e.code, &e.body);
    // The API server turns details.retryAfterSeconds into a Retry-After header.
    if let Some(secs) =
        e.body.pointer("/details/retryAfterSeconds").and_then(Value::as_u64).filter(|s| *s > 0)
    {
        r.headers_mut().insert("retry-after", secs.to_string().parse().expect("header"));
    }
    r
}

fn fault(code: u16) -> ApiError {
    let reason = match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "InternalError",
    };
    ApiError::new(code, reason, format!("injected fault ({code} {reason})"), Some(json!({})))
}

fn decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < b.len() => {
                match u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16) {
                    Ok(v) => {
                        out.push(v);
                        i += 2;
                    }
                    Err(_) => out.push(b'%'),
                }
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn parse_query(q: &str) -> HashMap<String, String> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

enum Target {
    Collection { kind: Kind, ns: Option<String> },
    Item { kind: Kind, ns: Option<String>, name: String, sub: Option<String> },
}

fn discovery(path: &[&str]) -> Option<Value> {
    let groups = [("policy", "v1"), ("events.k8s.io", "v1")];
    let group_json = |g: &str, v: &str| {
        let gv = json!({"groupVersion": format!("{g}/{v}"), "version": v});
        json!({"name": g, "versions": [gv.clone()], "preferredVersion": gv})
    };
    Some(match path {
        ["version"] => json!({"major": "1", "minor": "33", "emulationMajor": "1", "emulationMinor": "33",
            "gitVersion": "v1.33.4+k3s1", "gitCommit": "0000000000000000000000000000000000000000",
            "gitTreeState": "clean", "buildDate": "2025-08-01T00:00:00Z", "goVersion": "go1.24.4",
            "compiler": "gc", "platform": "linux/amd64"}),
        ["api"] => json!({"kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443"}]}),
        ["apis"] => json!({"kind": "APIGroupList", "apiVersion": "v1",
            "groups": groups.iter().map(|(g, v)| group_json(g, v)).collect::<Vec<_>>()}),
        ["apis", g] => {
            let (g, v) = groups.iter().find(|(n, _)| n == g)?;
            let mut o = group_json(g, v);
            o["kind"] = json!("APIGroup");
            o["apiVersion"] = json!("v1");
            o
        }
        ["api", "v1"] => resource_list("", "v1"),
        ["apis", g, v] if groups.contains(&(*g, *v)) => resource_list(g, v),
        _ => return None,
    })
}

fn resource_list(group: &str, version: &str) -> Value {
    let mut resources = Vec::new();
    for k in Kind::ALL {
        let i = k.info();
        if i.group != group || i.version != version {
            continue;
        }
        resources.push(
            json!({"name": i.plural, "singularName": i.kind.to_lowercase(), "namespaced": i.namespaced,
                              "kind": i.kind, "verbs": i.verbs}),
        );
        if i.status {
            resources.push(
                json!({"name": format!("{}/status", i.plural), "singularName": "", "namespaced": i.namespaced,
                                  "kind": i.kind, "verbs": ["get", "patch", "update"]}),
            );
        }
        if k == Kind::Pod {
            resources.push(
                json!({"name": "pods/eviction", "singularName": "", "namespaced": true, "group": "policy",
                                  "version": "v1", "kind": "Eviction", "verbs": ["create"]}),
            );
        }
    }
    let gv = if group.is_empty() { version.to_string() } else { format!("{group}/{version}") };
    json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources})
}

fn target(path: &[&str]) -> Option<Target> {
    let (group, version, rest) = match path {
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return None,
    };
    let kind = |plural: &str| Kind::lookup(group, version, plural);
    let t = match rest {
        ["namespaces", ns, plural] => Target::Collection { kind: kind(plural)?, ns: Some(ns.to_string()) },
        ["namespaces", ns, plural, name] => {
            Target::Item { kind: kind(plural)?, ns: Some(ns.to_string()), name: name.to_string(), sub: None }
        }
        ["namespaces", ns, plural, name, sub] => Target::Item {
            kind: kind(plural)?,
            ns: Some(ns.to_string()),
            name: name.to_string(),
            sub: Some(sub.to_string()),
        },
        [plural] => Target::Collection { kind: kind(plural)?, ns: None },
        [plural, name] => Target::Item { kind: kind(plural)?, ns: None, name: name.to_string(), sub: None },
        [plural, name, sub] => {
            Target::Item { kind: kind(plural)?, ns: None, name: name.to_string(), sub: Some(sub.to_string()) }
        }
        _ => return None,
    };
    // Scope checks: a namespaced item needs a namespace, a cluster-scoped one must not have one.
    match &t {
        Target::Collection { kind, ns } | Target::Item { kind, ns, .. } => {
            if !kind.info().namespaced && ns.is_some() {
                return None;
            }
            if let Target::Item { .. } = t {
                if kind.info().namespaced && ns.is_none() {
                    return None;
                }
            }
        }
    }
    Some(t)
}

/// What the client asked for in Accept: full objects, or PartialObjectMetadata(List).
fn metadata_only(headers: &HeaderMap) -> bool {
    headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("as=PartialObjectMetadata"))
}

fn as_metadata(o: &Value) -> Value {
    json!({"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1", "metadata": o["metadata"].clone()})
}

fn shape(o: Value, meta: bool) -> Value {
    if meta { as_metadata(&o) } else { o }
}

async fn handle(
    AxState(shared): AxState<Shared>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response<Body> {
    let path = uri.path().to_string();
    let query = uri.query().unwrap_or("").to_string();
    // Logged with the query percent-decoded, e.g. "GET /api/v1/pods?fieldSelector=spec.nodeName=w1".
    let line = if query.is_empty() {
        format!("{method} {path}")
    } else {
        format!("{method} {path}?{}", decode(&query))
    };
    {
        let mut st = lock(&shared);
        st.requests.push(line.clone());
        let hit = st.faults.iter_mut().find(|f| {
            f.times > 0
                && (f.method.is_empty() || f.method.eq_ignore_ascii_case(method.as_str()))
                && line.contains(&f.needle)
        });
        if let Some(f) = hit {
            f.times -= 1;
            let code = f.code;
            if path.ends_with("/eviction") && method == Method::POST {
                let parts: Vec<&str> = path.split('/').collect();
                // "", api, v1, namespaces, <ns>, pods, <name>, eviction
                if parts.len() >= 8 {
                    let target = st.eviction_target(parts[4], parts[6]);
                    st.note_eviction(parts[4], parts[6], code, target);
                }
            }
            if method == Method::DELETE && path.contains("/pods") {
                st.pod_deletes += 1;
            }
            return error(fault(code));
        }
    }
    let q = parse_query(&query);
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    if method == Method::GET {
        if let ["healthz" | "readyz" | "livez"] = segs.as_slice() {
            return Response::builder()
                .status(200)
                .header("content-type", "text/plain")
                .body(Body::from("ok"))
                .expect("response");
        }
        if let Some(d) = discovery(&segs) {
            return respond(200, &d);
        }
    }
    if method == Method::POST && segs == ["apis", "authorization.k8s.io", "v1", "selfsubjectaccessreviews"] {
        return match parse_body(&body) {
            Ok(review) => respond(201, &access_review(&lock(&shared).denied, review)),
            Err(e) => error(e),
        };
    }
    let Some(t) = target(&segs) else {
        return error(ApiError::not_found_path());
    };
    let dry_run = q.get("dryRun").is_some_and(|v| v == "All");
    let meta = metadata_only(&headers);
    let result = match (method.clone(), t) {
        (Method::GET, Target::Collection { kind, ns }) => {
            if q.get("watch").is_some_and(|w| w == "true" || w == "1") {
                return watch(&shared, kind, ns, &q, meta);
            }
            list(&shared, kind, ns.as_deref(), &q, meta)
        }
        (Method::POST, Target::Collection { kind, ns }) => {
            if kind.info().namespaced && ns.is_none() {
                return error(ApiError::method_not_allowed());
            }
            let ns = ns.unwrap_or_default();
            parse_body(&body).and_then(|o| lock(&shared).create(kind, &ns, o, dry_run).map(|o| (201, o)))
        }
        (Method::DELETE, Target::Collection { kind, ns }) => {
            delete_collection(&shared, kind, ns.as_deref(), &q, &body)
        }
        (_, Target::Collection { .. }) => Err(ApiError::method_not_allowed()),
        (method, Target::Item { kind, ns, name, sub }) => {
            let ns = ns.unwrap_or_default();
            item(&shared, method, kind, &ns, &name, sub.as_deref(), &q, &headers, &body, dry_run)
                .map(|(c, o)| (c, shape(o, meta)))
        }
    };
    match result {
        Ok((code, v)) => respond(code, &v),
        Err(e) => error(e),
    }
}

fn parse_body(body: &Bytes) -> Result<Value, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::bad_request(format!(
            "the object provided is unrecognized or the body could not be decoded: {e}"
        ))
    })
}

fn selectors(kind: Kind, q: &HashMap<String, String>) -> Result<(LabelSelector, FieldSelector), ApiError> {
    let ls = LabelSelector::parse(q.get("labelSelector").map(String::as_str).unwrap_or(""))
        .map_err(ApiError::bad_request)?;
    let fs =
        FieldSelector::parse(q.get("fieldSelector").map(String::as_str).unwrap_or(""), kind.info().fields)
            .map_err(ApiError::bad_request)?;
    Ok((ls, fs))
}

fn key_of(o: &Value) -> (String, String) {
    (
        o.pointer("/metadata/namespace").and_then(Value::as_str).unwrap_or("").to_string(),
        store::name_of(o).to_string(),
    )
}

/// LIST: selectors, then `limit`/`continue` pagination (later pages from the first page's
/// snapshot; 410 Expired once a compaction passed it); items carry no kind/apiVersion, as in
/// the real API server's JSON lists.
fn list(
    shared: &Shared,
    kind: Kind,
    ns: Option<&str>,
    q: &HashMap<String, String>,
    meta: bool,
) -> Result<(u16, Value), ApiError> {
    let (ls, fs) = selectors(kind, q)?;
    let st = lock(shared);
    let mut items = st.list(kind, ns, &ls, &fs);
    let mut rv = st.rv;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    if let Some(tok) = q.get("continue").filter(|t| !t.is_empty()) {
        let parsed: Option<Value> = engine.decode(tok).ok().and_then(|b| serde_json::from_slice(&b).ok());
        let Some(parsed) = parsed else {
            return Err(ApiError::bad_request("continue key is not valid: illegal base64 data"));
        };
        rv = parsed["rv"].as_u64().unwrap_or(rv);
        if rv < st.compacted {
            // etcd compacted the revision the first page was read at (storage.ErrCodeExpired).
            return Err(ApiError::new(
                410,
                "Expired",
                "The provided continue parameter is too old to display a consistent list result. You can start a new list without the continue parameter.",
                Some(json!({})),
            ));
        }
        // The remaining pages come from the snapshot the first page was read at.
        items = st.list_at(rv, kind, ns, &ls, &fs);
        let after = (
            parsed["ns"].as_str().unwrap_or("").to_string(),
            parsed["name"].as_str().unwrap_or("").to_string(),
        );
        items.retain(|o| key_of(o) > after);
    }
    drop(st);
    let mut list_meta = json!({"resourceVersion": rv.to_string()});
    if let Some(limit) = q.get("limit").and_then(|l| l.parse::<usize>().ok()).filter(|l| *l > 0) {
        if items.len() > limit {
            let remaining = items.len() - limit;
            items.truncate(limit);
            let (ns, name) = key_of(items.last().expect("item"));
            let tok = json!({"v": "meta.k8s.io/v1", "rv": rv, "ns": ns, "name": name});
            list_meta["continue"] = json!(engine.encode(serde_json::to_vec(&tok).expect("json")));
            list_meta["remainingItemCount"] = json!(remaining);
        }
    }
    let items: Vec<Value> = items
        .into_iter()
        .map(|mut o| {
            if meta {
                return as_metadata(&o);
            }
            if let Some(m) = o.as_object_mut() {
                m.remove("kind");
                m.remove("apiVersion");
            }
            o
        })
        .collect();
    let (list_kind, api_version) = if meta {
        ("PartialObjectMetadataList".to_string(), "meta.k8s.io/v1".to_string())
    } else {
        (format!("{}List", kind.info().kind), kind.api_version())
    };
    Ok((200, json!({"kind": list_kind, "apiVersion": api_version, "metadata": list_meta, "items": items})))
}

fn delete_opts(q: &HashMap<String, String>, body: &Bytes) -> DeleteOpts {
    let mut o = if body.is_empty() {
        DeleteOpts::default()
    } else {
        serde_json::from_slice::<Value>(body).map(|v| DeleteOpts::from_json(&v)).unwrap_or_default()
    };
    if o.grace.is_none() {
        o.grace = q.get("gracePeriodSeconds").and_then(|g| g.parse().ok());
    }
    o.dry_run |= q.get("dryRun").is_some_and(|v| v == "All");
    o
}

/// Runs the later removals (kubelet finishing a graceful deletion, pod GC) in the background.
pub fn schedule(shared: &Shared, removals: Vec<Removal>) {
    for r in removals {
        let s = shared.clone();
        tokio::spawn(async move {
            tokio::time::sleep(r.after).await;
            lock(&s).finish_removal(&r);
        });
    }
}

fn delete_collection(
    shared: &Shared,
    kind: Kind,
    ns: Option<&str>,
    q: &HashMap<String, String>,
    body: &Bytes,
) -> Result<(u16, Value), ApiError> {
    let (ls, fs) = selectors(kind, q)?;
    let opts = delete_opts(q, body);
    let mut st = lock(shared);
    if kind == Kind::Pod {
        st.pod_deletes += 1;
    }
    let mut items = Vec::new();
    let mut later = Vec::new();
    for o in st.list(kind, ns, &ls, &fs) {
        let (ons, name) = key_of(&o);
        if let Ok((_, mut removals)) = st.delete(kind, &ons, &name, &opts) {
            later.append(&mut removals);
        }
        items.push(o);
    }
    let rv = st.rv;
    drop(st);
    schedule(shared, later);
    Ok((
        200,
        json!({"kind": format!("{}List", kind.info().kind), "apiVersion": kind.api_version(),
                    "metadata": {"resourceVersion": rv.to_string()}, "items": items}),
    ))
}

#[allow(clippy::too_many_arguments)]
fn item(
    shared: &Shared,
    method: Method,
    kind: Kind,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
    dry_run: bool,
) -> Result<(u16, Value), ApiError> {
    let status_sub = sub == Some("status") && kind.info().status;
    match (method, sub) {
        (Method::GET, None) => lock(shared)
            .get(kind, ns, name)
            .cloned()
            .map(|o| (200, o))
            .ok_or_else(|| ApiError::not_found(kind, name)),
        (Method::GET, Some(_)) if status_sub => lock(shared)
            .get(kind, ns, name)
            .cloned()
            .map(|o| (200, o))
            .ok_or_else(|| ApiError::not_found(kind, name)),
        (Method::PUT, s) if s.is_none() || status_sub => {
            let o = parse_body(body)?;
            lock(shared).update(kind, ns, name, sub, dry_run, move |_| Ok(o)).map(|o| (200, o))
        }
        (Method::PATCH, s) if s.is_none() || status_sub => {
            patch_item(shared, kind, ns, name, sub, q, headers, body, dry_run)
        }
        (Method::DELETE, None) => {
            let opts = delete_opts(q, body);
            let mut st = lock(shared);
            if kind == Kind::Pod {
                st.pod_deletes += 1;
            }
            let (out, removals) = st.delete(kind, ns, name, &opts)?;
            drop(st);
            schedule(shared, removals);
            Ok((200, out))
        }
        (Method::POST, Some("eviction")) if kind == Kind::Pod => {
            let mut st = lock(shared);
            let target = st.eviction_target(ns, name);
            let answer = parse_body(body).and_then(|ev| st.evict(ns, name, &ev, dry_run));
            let code = match &answer {
                Ok((c, _, _)) => *c,
                Err(e) => e.code,
            };
            st.note_eviction(ns, name, code, target);
            drop(st);
            let (code, body, removals) = answer?;
            schedule(shared, removals);
            Ok((code, body))
        }
        (_, None) => Err(ApiError::method_not_allowed()),
        (
            Method::GET | Method::PUT | Method::PATCH | Method::POST | Method::DELETE,
            Some("status" | "eviction"),
        ) => Err(ApiError::method_not_allowed()),
        _ => Err(ApiError::not_found_path()),
    }
}

#[allow(clippy::too_many_arguments)]
fn patch_item(
    shared: &Shared,
    kind: Kind,
    ns: &str,
    name: &str,
    sub: Option<&str>,
    q: &HashMap<String, String>,
    headers: &HeaderMap,
    body: &Bytes,
    dry_run: bool,
) -> Result<(u16, Value), ApiError> {
    let ct = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    let p: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("error decoding patch: {e}")))?;
    let invalid = |e: String| ApiError::new(422, "Invalid", e, Some(json!({})));
    let mut st = lock(shared);
    match ct.as_str() {
        "application/merge-patch+json" => st.update(kind, ns, name, sub, dry_run, |old| {
            let mut n = old.clone();
            patch::merge_patch(&mut n, &p);
            Ok(n)
        }),
        "application/strategic-merge-patch+json" => st.update(kind, ns, name, sub, dry_run, |old| {
            let mut n = old.clone();
            patch::strategic_merge_patch(&mut n, &p).map_err(invalid)?;
            Ok(n)
        }),
        "application/json-patch+json" => st.update(kind, ns, name, sub, dry_run, |old| {
            let mut n = old.clone();
            patch::json_patch(&mut n, &p).map_err(invalid)?;
            Ok(n)
        }),
        "application/apply-patch+yaml" => {
            if q.get("fieldManager").is_none_or(String::is_empty) {
                return Err(ApiError::invalid(kind, "", &[(
                    "fieldManager".into(),
                    "FieldValueRequired",
                    "Required value: is required for apply patch".into(),
                )]));
            }
            if st.get(kind, ns, name).is_none() {
                let mut o = p.clone();
                if o.get("metadata").is_some_and(Value::is_object) && o["metadata"].get("name").is_none() {
                    o["metadata"]["name"] = json!(name);
                }
                return st.create(kind, ns, o, dry_run).map(|o| (201, o));
            }
            st.update(kind, ns, name, sub, dry_run, |old| {
                let mut n = old.clone();
                patch::strategic_merge_patch(&mut n, &p).map_err(invalid)?;
                Ok(n)
            })
        }
        _ => Err(ApiError::new(
            415,
            "UnsupportedMediaType",
            format!("the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {ct:?})"),
            Some(json!({})),
        )),
    }
    .map(|o| (200, o))
}

fn line(v: &Value) -> Bytes {
    let mut s = serde_json::to_vec(v).expect("json");
    s.push(b'\n');
    Bytes::from(s)
}

fn bookmark(kind: Kind, rv: u64, initial_end: bool) -> Bytes {
    let mut meta = json!({"resourceVersion": rv.to_string()});
    if initial_end {
        meta["annotations"] = json!({"k8s.io/initial-events-end": "true"});
    }
    line(
        &json!({"type": "BOOKMARK", "object": {"kind": kind.info().kind, "apiVersion": kind.api_version(), "metadata": meta}}),
    )
}

fn expired(asked: u64, oldest: u64) -> Bytes {
    line(
        &json!({"type": "ERROR", "object": {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": format!("too old resource version: {asked} ({oldest})"), "reason": "Expired", "code": 410}}),
    )
}

/// WATCH: 200 and newline-delimited events: the current objects as ADDED when starting from
/// "" / "0" (or with sendInitialEvents), else every change after `resourceVersion` from the
/// kept history (410 Expired only below a `compact()`), then live changes until
/// `timeoutSeconds`; BOOKMARKs when allowed.
fn watch(
    shared: &Shared,
    kind: Kind,
    ns: Option<String>,
    q: &HashMap<String, String>,
    meta: bool,
) -> Response<Body> {
    let (ls, fs) = match selectors(kind, q) {
        Ok(s) => s,
        Err(e) => return error(e),
    };
    let timeout = Duration::from_secs(q.get("timeoutSeconds").and_then(|t| t.parse().ok()).unwrap_or(1800));
    let bookmarks = q.get("allowWatchBookmarks").is_some_and(|v| v == "true");
    let send_initial = q.get("sendInitialEvents").is_some_and(|v| v == "true");
    let asked = q.get("resourceVersion").cloned().unwrap_or_default();
    let mut first: Vec<Bytes> = Vec::new();
    let (start, mut rx, bookmark_every, generation) = {
        let st = lock(shared);
        let start = if asked.is_empty() || asked == "0" || send_initial {
            for o in st.list(kind, ns.as_deref(), &ls, &fs) {
                first.push(line(&json!({"type": "ADDED", "object": shape(o, meta)})));
            }
            if send_initial && bookmarks {
                first.push(bookmark(kind, st.rv, true));
            }
            st.rv
        } else {
            match asked.parse::<u64>() {
                Ok(rv) => rv,
                Err(_) => return error(ApiError::bad_request(format!("invalid resource version {asked:?}"))),
            }
        };
        (start, st.subscribe(), st.bookmark_interval, st.watch_generation)
    };
    let (tx, body) = tokio::sync::mpsc::channel::<Bytes>(64);
    let shared = shared.clone();
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        for b in first {
            if tx.send(b).await.is_err() {
                return;
            }
        }
        let mut last = start;
        let mut next_bookmark = tokio::time::Instant::now() + bookmark_every;
        loop {
            rx.borrow_and_update();
            let (lines, gone) = {
                let st = lock(&shared);
                if st.watch_generation != generation {
                    // The server closed the watch (`close_watches`): the stream just ends.
                    return;
                }
                if last < st.compacted {
                    (vec![expired(last, st.compacted)], true)
                } else {
                    let from = st.history.partition_point(|c| c.rv <= last);
                    let lines = st.history[from..]
                        .iter()
                        .filter(|c| c.kind == kind && ns.as_deref().is_none_or(|n| n == c.ns))
                        .filter_map(|c| store::watch_event(c, &ls, &fs))
                        .map(|(t, o)| line(&json!({"type": t, "object": shape(o, meta)})))
                        .collect::<Vec<_>>();
                    last = st.rv;
                    (lines, false)
                }
            };
            for b in lines {
                if tx.send(b).await.is_err() {
                    return;
                }
            }
            if gone {
                return;
            }
            tokio::select! {
                changed = rx.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep_until(deadline) => {
                    if bookmarks {
                        let _ = tx.send(bookmark(kind, last, false)).await;
                    }
                    return;
                }
                _ = tokio::time::sleep_until(next_bookmark) => {
                    next_bookmark = tokio::time::Instant::now() + bookmark_every;
                    if bookmarks && tx.send(bookmark(kind, last, false)).await.is_err() {
                        return;
                    }
                }
            }
        }
    });
    Response::builder()
        .status(200)
        .header("content-type", "application/json")
        .body(Body::new(WatchBody(body)))
        .expect("response")
}

/// `http_body::Frame` is not re-exported by any direct dependency; name the poll result
/// through http-body-util's `frame()` future instead.
type FrameResult =
    <http_body_util::combinators::Frame<'static, http_body_util::Full<Bytes>> as std::future::Future>::Output;

/// A streaming response body fed by the watch task (dropped when the client goes away).
struct WatchBody(tokio::sync::mpsc::Receiver<Bytes>);

impl HttpBody for WatchBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<FrameResult> {
        match self.0.poll_recv(cx) {
            Poll::Ready(Some(chunk)) => {
                // A one-chunk Full body yields exactly that data frame, at once.
                let mut full = http_body_util::Full::new(chunk);
                Pin::new(&mut full).poll_frame(cx)
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }
}

/// A SelfSubjectAccessReview answered as the API server does (created, not stored): the
/// review with `status.allowed`, denied for the (`resource[/subresource]`, verb) pairs in
/// `denied` (`*` matches any verb).
fn access_review(denied: &[(String, String)], mut review: Value) -> Value {
    let attributes = &review["spec"]["resourceAttributes"];
    let text = |key: &str| attributes.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    let resource = match text("subresource").as_str() {
        "" => text("resource"),
        sub => format!("{}/{sub}", text("resource")),
    };
    let verb = text("verb");
    let refused = denied.iter().any(|(r, v)| *r == resource && (*v == verb || v == "*"));
    review["status"] = if refused {
        json!({"allowed": false, "denied": true, "reason": format!("test: {verb} {resource} is denied")})
    } else {
        json!({"allowed": true, "reason": "test: allowed"})
    };
    review
}
