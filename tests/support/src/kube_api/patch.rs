//! The three patch formats the API server accepts for built-in types: JSON merge patch
//! (RFC 7386), strategic merge patch (merge keys / primitive merge for the list fields of
//! the types served here, `$patch`, `$retainKeys`, `$deleteFromPrimitiveList`), and JSON
//! patch (RFC 6902).

use serde_json::{Map, Value};

/// RFC 7386: objects merge recursively, `null` deletes, everything else replaces.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            let t = target.as_object_mut().expect("object");
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        other => *target = other.clone(),
    }
}

enum ListStrategy {
    /// Lists of objects merged by this key (`patchStrategy:"merge" patchMergeKey:...`).
    Key(&'static str),
    /// Lists of scalars merged as a set (`patchStrategy:"merge"` on []string).
    Primitive,
}

/// Merge strategies of the list fields of Node, Pod, PDB, Event, Namespace, PV(C) (paths without
/// list indices). Lists not named here are atomic (replaced), e.g. spec.taints, spec.tolerations.
fn strategy(path: &str) -> Option<ListStrategy> {
    use ListStrategy::*;
    Some(match path {
        "metadata.finalizers" | "spec.podCIDRs" | "spec.finalizers" => Primitive,
        "metadata.ownerReferences" => Key("uid"),
        "spec.containers"
        | "spec.initContainers"
        | "spec.ephemeralContainers"
        | "spec.volumes"
        | "spec.imagePullSecrets" => Key("name"),
        "spec.containers.env" | "spec.initContainers.env" => Key("name"),
        "spec.containers.ports" | "spec.initContainers.ports" => Key("containerPort"),
        "spec.containers.volumeMounts" | "spec.initContainers.volumeMounts" => Key("mountPath"),
        "status.conditions" | "status.addresses" => Key("type"),
        _ => return None,
    })
}

/// Strategic merge patch as the API server applies it to built-in types.
pub fn strategic_merge_patch(target: &mut Value, patch: &Value) -> Result<(), String> {
    smp(target, patch, "")
}

fn join(path: &str, k: &str) -> String {
    if path.is_empty() { k.to_string() } else { format!("{path}.{k}") }
}

fn smp(target: &mut Value, patch: &Value, path: &str) -> Result<(), String> {
    let Value::Object(p) = patch else {
        *target = patch.clone();
        return Ok(());
    };
    match p.get("$patch").and_then(Value::as_str) {
        Some("replace") => {
            let mut clean = p.clone();
            clean.remove("$patch");
            *target = Value::Object(clean);
            return Ok(());
        }
        Some("delete") => {
            *target = Value::Null;
            return Ok(());
        }
        Some(other) => return Err(format!("Unknown patch type: {other}")),
        None => {}
    }
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    for (k, v) in p {
        if k == "$patch" || k == "$retainKeys" || k.starts_with("$setElementOrder/") {
            continue;
        }
        if let Some(field) = k.strip_prefix("$deleteFromPrimitiveList/") {
            let drop: Vec<Value> = v.as_array().cloned().unwrap_or_default();
            if let Some(list) = target.get_mut(field).and_then(Value::as_array_mut) {
                list.retain(|x| !drop.contains(x));
            }
            continue;
        }
        let t = target.as_object_mut().expect("object");
        if v.is_null() {
            t.remove(k);
            continue;
        }
        let sub = join(path, k);
        match (v, strategy(&sub)) {
            (Value::Array(items), Some(strat)) => {
                let cur = t.entry(k.clone()).or_insert(Value::Array(vec![]));
                if !cur.is_array() {
                    *cur = Value::Array(vec![]);
                }
                merge_list(cur.as_array_mut().expect("array"), items, strat, &sub)?;
            }
            (Value::Object(o), _) if o.get("$patch").and_then(Value::as_str) == Some("delete") => {
                t.remove(k);
            }
            (Value::Object(_), _) => {
                let cur = t.entry(k.clone()).or_insert(Value::Null);
                smp(cur, v, &sub)?;
            }
            _ => {
                t.insert(k.clone(), v.clone());
            }
        }
    }
    if let Some(keep) = p.get("$retainKeys").and_then(Value::as_array) {
        let keep: Vec<&str> = keep.iter().filter_map(Value::as_str).collect();
        if let Some(t) = target.as_object_mut() {
            t.retain(|k, _| keep.contains(&k.as_str()));
        }
    }
    Ok(())
}

fn merge_list(cur: &mut Vec<Value>, items: &[Value], strat: ListStrategy, path: &str) -> Result<(), String> {
    if items.iter().any(|i| i.get("$patch").and_then(Value::as_str) == Some("replace")) {
        *cur = items.iter().filter(|i| i.get("$patch").is_none()).cloned().collect();
        return Ok(());
    }
    match strat {
        ListStrategy::Primitive => {
            for i in items {
                if !cur.contains(i) {
                    cur.push(i.clone());
                }
            }
        }
        ListStrategy::Key(key) => {
            for i in items {
                let Some(kv) = i.get(key) else {
                    return Err(format!("map: {i} does not contain declared merge key: {key}"));
                };
                let pos = cur.iter().position(|c| c.get(key) == Some(kv));
                if i.get("$patch").and_then(Value::as_str) == Some("delete") {
                    cur.retain(|c| c.get(key) != Some(kv));
                } else if let Some(pos) = pos {
                    smp(&mut cur[pos], i, path)?;
                } else {
                    let mut fresh = Value::Null;
                    smp(&mut fresh, i, path)?;
                    cur.push(fresh);
                }
            }
        }
    }
    Ok(())
}

/// RFC 6902 JSON patch (add, remove, replace, move, copy, test).
pub fn json_patch(target: &mut Value, ops: &Value) -> Result<(), String> {
    let ops = ops.as_array().ok_or("json patch must be an array of operations")?;
    for op in ops {
        let kind = op.get("op").and_then(Value::as_str).ok_or("missing op")?;
        let path = op.get("path").and_then(Value::as_str).ok_or("missing path")?;
        let value = || op.get("value").cloned().ok_or_else(|| format!("missing value for {kind} {path}"));
        match kind {
            "add" => add(target, path, value()?)?,
            "remove" => {
                remove(target, path)?;
            }
            "replace" => {
                remove(target, path)?;
                add(target, path, value()?)?;
            }
            "move" | "copy" => {
                let from = op.get("from").and_then(Value::as_str).ok_or("missing from")?;
                let v = if kind == "move" {
                    remove(target, from)?
                } else {
                    target.pointer(from).cloned().ok_or_else(|| format!("{from}: missing value"))?
                };
                add(target, path, v)?;
            }
            "test" => {
                if target.pointer(path) != Some(&value()?) {
                    return Err(format!("testing value {path} failed: test failed"));
                }
            }
            other => return Err(format!("Unexpected kind: {other}")),
        }
    }
    Ok(())
}

fn split_pointer(path: &str) -> Result<(String, String), String> {
    let i = path.rfind('/').ok_or_else(|| format!("invalid path {path:?}"))?;
    let last = path[i + 1..].replace("~1", "/").replace("~0", "~");
    Ok((path[..i].to_string(), last))
}

fn add(target: &mut Value, path: &str, v: Value) -> Result<(), String> {
    if path.is_empty() {
        *target = v;
        return Ok(());
    }
    let (parent, last) = split_pointer(path)?;
    let container = target
        .pointer_mut(&parent)
        .ok_or_else(|| format!("add operation does not apply: doc is missing path: {path:?}"))?;
    match container {
        Value::Object(m) => {
            m.insert(last, v);
        }
        Value::Array(a) => {
            if last == "-" {
                a.push(v);
            } else {
                let i: usize = last.parse().map_err(|_| format!("invalid index {last:?}"))?;
                if i > a.len() {
                    return Err(format!("add operation does not apply: index {i} out of bounds"));
                }
                a.insert(i, v);
            }
        }
        _ => return Err(format!("add operation does not apply: doc is missing path: {path:?}")),
    }
    Ok(())
}

fn remove(target: &mut Value, path: &str) -> Result<Value, String> {
    let (parent, last) = split_pointer(path)?;
    let missing = || format!("remove operation does not apply: doc is missing path: {path:?}");
    match target.pointer_mut(&parent).ok_or_else(missing)? {
        Value::Object(m) => m.remove(&last).ok_or_else(missing),
        Value::Array(a) => {
            let i: usize = last.parse().map_err(|_| missing())?;
            if i < a.len() { Ok(a.remove(i)) } else { Err(missing()) }
        }
        _ => Err(missing()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merge_and_strategic() {
        let mut n = json!({"metadata": {"labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
                           "spec": {"taints": [{"key": "k", "effect": "NoSchedule"}]},
                           "status": {"conditions": [{"type": "Ready", "status": "True"}, {"type": "DiskPressure", "status": "False"}]}});
        let mut m = n.clone();
        merge_patch(
            &mut m,
            &json!({"metadata": {"labels": {"a": null, "c": "3"}}, "spec": {"unschedulable": true}}),
        );
        assert_eq!(m["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert_eq!(m["spec"]["unschedulable"], json!(true));
        strategic_merge_patch(
            &mut n,
            &json!({"metadata": {"finalizers": ["y"]}, "spec": {"taints": [{"key": "z", "effect": "NoExecute"}]},
                    "status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
        )
        .unwrap();
        assert_eq!(n["metadata"]["finalizers"], json!(["x", "y"]));
        assert_eq!(n["spec"]["taints"], json!([{"key": "z", "effect": "NoExecute"}]));
        assert_eq!(n["status"]["conditions"][0]["status"], json!("False"));
        assert_eq!(n["status"]["conditions"][1]["type"], json!("DiskPressure"));
    }

    #[test]
    fn json_patch_ops() {
        let mut v = json!({"spec": {"taints": [{"key": "a"}]}});
        json_patch(
            &mut v,
            &json!([{"op": "add", "path": "/spec/taints/-", "value": {"key": "b"}},
                                   {"op": "test", "path": "/spec/taints/0/key", "value": "a"},
                                   {"op": "remove", "path": "/spec/taints/0"},
                                   {"op": "add", "path": "/spec/unschedulable", "value": true}]),
        )
        .unwrap();
        assert_eq!(v, json!({"spec": {"taints": [{"key": "b"}], "unschedulable": true}}));
        assert!(
            json_patch(&mut v, &json!([{"op": "test", "path": "/spec/unschedulable", "value": false}]))
                .is_err()
        );
    }
}
