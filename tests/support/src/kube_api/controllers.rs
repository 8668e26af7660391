//! The controllers and the kubelet the fake simulates around the store: graceful pod
//! deletion and its completion, pod GC, the Eviction subresource, the node lifecycle
//! controller's unschedulable taint and the disruption controller's PDB status.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::{Value, json};

use super::selectors::{self, FieldSelector, LabelSelector};
use super::store::{
    ApiError, DeleteOpts, Key, Kind, Removal, State, at, check_preconditions, has_finalizers, meta_str,
    name_of, now, terminating,
};

/// IsPodReady: the Ready condition when present, else a Running phase.
pub fn pod_ready(p: &Value) -> bool {
    if let Some(c) = p
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c.get("type").and_then(Value::as_str) == Some("Ready")))
    {
        return c.get("status").and_then(Value::as_str) == Some("True");
    }
    p.pointer("/status/phase").and_then(Value::as_str) == Some("Running")
}

pub fn node_ready(n: &Value) -> bool {
    n.pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"))
        .is_some_and(|c| c["status"] == "True")
}

pub fn scaled(v: &Value, total: i64) -> Result<i64, String> {
    match v {
        Value::Number(n) => n.as_i64().ok_or_else(|| format!("invalid value {n}")),
        Value::String(s) => {
            let pct: i64 = s.strip_suffix('%').and_then(|p| p.parse().ok()).ok_or_else(|| {
                format!("invalid value for IntOrString: invalid type: string is not a percentage {s:?}")
            })?;
            Ok((pct * total + 99) / 100) // round up, as GetScaledValueFromIntOrPercent(.., true)
        }
        other => Err(format!("invalid value {other}")),
    }
}

impl State {
    /// The pod registry's graceful deletion (pods return the deleted object).
    pub(super) fn delete_pod(
        &mut self,
        ns: &str,
        name: &str,
        old: Value,
        grace: Option<i64>,
    ) -> (Value, Vec<Removal>) {
        let mut grace = grace
            .or_else(|| old.pointer("/spec/terminationGracePeriodSeconds").and_then(Value::as_i64))
            .unwrap_or(30)
            .max(0);
        let phase = old.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
        let node = old.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
        if node.is_empty() || phase == "Succeeded" || phase == "Failed" {
            grace = 0;
        }
        if terminating(&old) {
            let cur =
                old.pointer("/metadata/deletionGracePeriodSeconds").and_then(Value::as_i64).unwrap_or(0);
            if grace >= cur {
                return (old, vec![]); // already terminating at least as fast
            }
        }
        if grace == 0 && !has_finalizers(&old) {
            let gone = self.erase(Kind::Pod, ns, name).expect("present");
            self.settle();
            return (gone, vec![]);
        }
        let mut o = old.clone();
        o["metadata"]["deletionTimestamp"] = at(grace);
        o["metadata"]["deletionGracePeriodSeconds"] = json!(grace);
        let out = self.write(Kind::Pod, ns, name, o);
        self.settle();
        let removal = Removal {
            ns: ns.into(),
            name: name.into(),
            uid: meta_str(&out, "uid").unwrap_or("").into(),
            after: Duration::from_secs(grace as u64),
            gc: false,
        };
        (out, vec![removal])
    }

    /// A scheduled removal falls due: the kubelet finishes a graceful deletion if the pod's
    /// node is Ready (a NotReady node's pods stay Terminating; a pod on a node that was never
    /// seeded goes too, as pod GC would remove it); pod GC force-deletes.
    pub fn finish_removal(&mut self, r: &Removal) {
        let Some(p) = self.get(Kind::Pod, &r.ns, &r.name) else { return };
        if meta_str(p, "uid") != Some(r.uid.as_str()) {
            return;
        }
        if !r.gc {
            let node = p.pointer("/spec/nodeName").and_then(Value::as_str).unwrap_or("");
            let node_ready = self.get(Kind::Node, "", node).is_none_or(node_ready);
            if !terminating(p) || !node_ready {
                return;
            }
        }
        if has_finalizers(p) {
            // The final delete (grace 0) waits for the finalizers to go.
            let mut o = p.clone();
            if !terminating(p) {
                o["metadata"]["deletionTimestamp"] = now();
            }
            o["metadata"]["deletionGracePeriodSeconds"] = json!(0);
            if &o != p {
                self.write(Kind::Pod, &r.ns, &r.name, o);
            }
        } else {
            self.erase(Kind::Pod, &r.ns, &r.name);
        }
        self.settle();
    }

    /// Terminating pods on `node` whose grace period has passed (the kubelet came back).
    pub fn overdue_pods(&self, node: &str) -> Vec<Removal> {
        let now = Timestamp::now();
        self.objects
            .iter()
            .filter(|((k, _, _), p)| {
                *k == Kind::Pod && p.pointer("/spec/nodeName").and_then(Value::as_str) == Some(node)
            })
            .filter(|(_, p)| {
                p.pointer("/metadata/deletionTimestamp")
                    .and_then(Value::as_str)
                    .and_then(|s| s.parse::<Timestamp>().ok())
                    .is_some_and(|t| t <= now)
            })
            .map(|((_, ns, name), p)| Removal {
                ns: ns.clone(),
                name: name.clone(),
                uid: meta_str(p, "uid").unwrap_or("").into(),
                after: Duration::ZERO,
                gc: false,
            })
            .collect()
    }

    // ---------------------------------------------------------------- eviction

    /// POST pods/{name}/eviction, after pkg/registry/core/pod/storage/eviction.go.
    /// Returns (HTTP code, body, removals); errors are answered as they are.
    pub fn evict(
        &mut self,
        ns: &str,
        name: &str,
        body: &Value,
        query_dry_run: bool,
    ) -> Result<(u16, Value, Vec<Removal>), ApiError> {
        let ev_name = meta_str(body, "name").unwrap_or("");
        if ev_name != name {
            return Err(ApiError::bad_request("name in URL does not match name in Eviction object"));
        }
        let mut opts = body.get("deleteOptions").map(DeleteOpts::from_json).unwrap_or_default();
        opts.dry_run |= query_dry_run;
        let pod =
            self.get(Kind::Pod, ns, name).cloned().ok_or_else(|| ApiError::not_found(Kind::Pod, name))?;
        let success =
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "code": 201});
        let phase = pod.pointer("/status/phase").and_then(Value::as_str).unwrap_or("");
        let can_ignore_pdb = matches!(phase, "Succeeded" | "Failed" | "Pending") || terminating(&pod);
        if !can_ignore_pdb {
            let labels = pod.pointer("/metadata/labels").cloned().unwrap_or(Value::Null);
            let pdbs: Vec<Value> = self
                .list(Kind::Pdb, Some(ns), &LabelSelector::default(), &FieldSelector::default())
                .into_iter()
                .filter(|b| {
                    selectors::label_selector_object_matches(
                        b.pointer("/spec/selector").unwrap_or(&Value::Null),
                        &labels,
                    )
                })
                .collect();
            if pdbs.len() > 1 {
                let e = ApiError::new(
                    500,
                    "",
                    "This pod has more than one PodDisruptionBudget, which the eviction subresource does not support.",
                    None,
                );
                return Err(e);
            }
            if let Some(pdb) = pdbs.first() {
                let st = |f: &str| pdb.pointer(&format!("/status/{f}")).and_then(Value::as_i64).unwrap_or(0);
                let unhealthy_ok = !pod_ready(&pod)
                    && (pdb.pointer("/spec/unhealthyPodEvictionPolicy").and_then(Value::as_str)
                        == Some("AlwaysAllow")
                        || (st("currentHealthy") >= st("desiredHealthy") && st("desiredHealthy") > 0));
                if !unhealthy_ok && st("disruptionsAllowed") == 0 {
                    let e = ApiError::new(
                        429,
                        "TooManyRequests",
                        "Cannot evict pod as it would violate the pod's disruption budget.",
                        Some(json!({"causes": [{"reason": "DisruptionBudget", "message": format!(
                            "The disruption budget {} needs {} healthy pods and has {} currently",
                            name_of(pdb), st("desiredHealthy"), st("currentHealthy"))}]})),
                    );
                    return Err(e);
                }
            }
        }
        check_preconditions(Kind::Pod, name, &pod, &opts)?;
        if opts.dry_run {
            return Ok((201, success, vec![]));
        }
        // PodDisruptionConditions: mark the pod before deleting it.
        let mut marked = pod.clone();
        let cond = json!({"type": "DisruptionTarget", "status": "True", "reason": "EvictionByEvictionAPI",
                          "message": "Eviction API: evicting", "lastTransitionTime": now()});
        let conds = marked["status"]["conditions"].as_array().cloned().unwrap_or_default();
        let mut conds: Vec<Value> = conds.into_iter().filter(|c| c["type"] != "DisruptionTarget").collect();
        conds.push(cond);
        marked["status"]["conditions"] = json!(conds);
        let marked = if terminating(&pod) { pod } else { self.write(Kind::Pod, ns, name, marked) };
        let (_, removals) = self.delete_pod(ns, name, marked, opts.grace);
        Ok((201, success, removals))
    }

    /// The node lifecycle controller (TaintNodesByCondition) keeps the
    /// `node.kubernetes.io/unschedulable:NoSchedule` taint in step with spec.unschedulable.
    pub(super) fn sync_unschedulable_taints(&mut self) {
        const KEY: &str = "node.kubernetes.io/unschedulable";
        let keys: Vec<Key> = self.objects.keys().filter(|(k, _, _)| *k == Kind::Node).cloned().collect();
        for key in keys {
            let n = &self.objects[&key];
            let want = n.pointer("/spec/unschedulable").and_then(Value::as_bool).unwrap_or(false);
            let taints = n.pointer("/spec/taints").and_then(Value::as_array).cloned().unwrap_or_default();
            let has = taints.iter().any(|t| t["key"] == KEY);
            if want == has {
                continue;
            }
            let mut o = n.clone();
            let mut taints: Vec<Value> = taints.into_iter().filter(|t| t["key"] != KEY).collect();
            if want {
                taints.push(json!({"key": KEY, "effect": "NoSchedule", "timeAdded": now()}));
            }
            if taints.is_empty() {
                o["spec"].as_object_mut().expect("spec").remove("taints");
            } else {
                o["spec"]["taints"] = json!(taints);
            }
            self.write(Kind::Node, "", &key.2, o);
        }
    }

    // ---------------------------------------------------------------- disruption controller

    pub(super) fn sync_pdbs(&mut self) {
        let keys: Vec<Key> = self.objects.keys().filter(|(k, _, _)| *k == Kind::Pdb).cloned().collect();
        for (kind, ns, name) in keys {
            let pdb = self.objects[&(kind, ns.clone(), name.clone())].clone();
            let status = self.pdb_status(&pdb);
            if pdb.get("status") != Some(&status) {
                let mut o = pdb;
                o["status"] = status;
                self.write(kind, &ns, &name, o);
            }
        }
    }

    /// currentHealthy / desiredHealthy / expectedPods / disruptionsAllowed as the disruption
    /// controller computes them (expected count: see `expected_scale`).
    fn pdb_status(&self, pdb: &Value) -> Value {
        let ns = meta_str(pdb, "namespace").unwrap_or("");
        let selector = pdb.pointer("/spec/selector").cloned().unwrap_or(Value::Null);
        let pods: Vec<&Value> = self
            .objects
            .iter()
            .filter(|((k, n, _), _)| *k == Kind::Pod && n == ns)
            .map(|(_, p)| p)
            .filter(|p| {
                selectors::label_selector_object_matches(
                    &selector,
                    p.pointer("/metadata/labels").unwrap_or(&Value::Null),
                )
            })
            .collect();
        let healthy = pods.iter().filter(|p| !terminating(p) && pod_ready(p)).count() as i64;
        let spec = pdb.get("spec").cloned().unwrap_or(Value::Null);
        let (expected, desired) = if let Some(mu) = spec.get("maxUnavailable").filter(|v| !v.is_null()) {
            let expected = self.expected_scale(ns, &pods);
            (expected, (expected - scaled(mu, expected).unwrap_or(0)).max(0))
        } else if let Some(ma) = spec.get("minAvailable").filter(|v| !v.is_null()) {
            if ma.is_number() {
                (pods.len() as i64, ma.as_i64().unwrap_or(0))
            } else {
                let expected = self.expected_scale(ns, &pods);
                (expected, scaled(ma, expected).unwrap_or(0))
            }
        } else {
            (0, 0)
        };
        let mut allowed = healthy - desired;
        if expected <= 0 || allowed <= 0 {
            allowed = 0;
        }
        let (cstatus, reason) =
            if allowed > 0 { ("True", "SufficientPods") } else { ("False", "InsufficientPods") };
        let generation = pdb.pointer("/metadata/generation").cloned().unwrap_or(json!(1));
        let ltt = pdb
            .pointer("/status/conditions/0")
            .filter(|c| c["status"] == cstatus)
            .and_then(|c| c.get("lastTransitionTime").cloned())
            .unwrap_or_else(now);
        json!({
            "observedGeneration": generation,
            "disruptionsAllowed": allowed,
            "currentHealthy": healthy,
            "desiredHealthy": desired,
            "expectedPods": expected,
            "conditions": [{"type": "DisruptionAllowed", "status": cstatus, "reason": reason, "message": "",
                            "lastTransitionTime": ltt, "observedGeneration": generation}],
        })
    }

    /// The disruption controller sums the scale of the pods' controllers. Without controllers
    /// here, a controller's scale is `set_replicas` if given, else the number of its pods that
    /// exist (terminating ones included); pods without a controller are not counted.
    fn expected_scale(&self, ns: &str, pods: &[&Value]) -> i64 {
        let mut owners: BTreeMap<(String, String), i64> = BTreeMap::new();
        for p in pods {
            let Some(o) = p
                .pointer("/metadata/ownerReferences")
                .and_then(Value::as_array)
                .and_then(|os| os.iter().find(|o| o.get("controller") == Some(&json!(true))))
            else {
                continue;
            };
            let key =
                (o["kind"].as_str().unwrap_or("").to_string(), o["name"].as_str().unwrap_or("").to_string());
            *owners.entry(key).or_insert(0) += 1;
        }
        owners
            .into_iter()
            .map(|((kind, name), n)| *self.replicas.get(&(ns.to_string(), kind, name)).unwrap_or(&n))
            .sum()
    }
}
