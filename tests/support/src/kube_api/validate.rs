//! The API server's validation of what is written, as far as the tests here need it.

use serde_json::Value;

use super::selectors;
use super::store::{ApiError, Kind};

/// ValidatePodUpdate: only images, activeDeadlineSeconds, added tolerations and
/// terminationGracePeriodSeconds may change in a pod's spec.
pub fn check_pod_update(name: &str, old: &Value, new: &Value) -> Result<(), ApiError> {
    let strip = |p: &Value| {
        let mut s = p.get("spec").cloned().unwrap_or(Value::Null);
        for list in ["containers", "initContainers"] {
            if let Some(cs) = s.get_mut(list).and_then(Value::as_array_mut) {
                for c in cs {
                    if let Some(c) = c.as_object_mut() {
                        c.remove("image");
                    }
                }
            }
        }
        if let Some(o) = s.as_object_mut() {
            o.remove("activeDeadlineSeconds");
            o.remove("tolerations");
            o.remove("terminationGracePeriodSeconds");
        }
        s
    };
    if strip(old) != strip(new) {
        return Err(ApiError::invalid(Kind::Pod, name, &[(
            "spec".into(),
            "FieldValueForbidden",
            "Forbidden: pod updates may not change fields other than `spec.containers[*].image`,`spec.initContainers[*].image`,`spec.activeDeadlineSeconds`,`spec.tolerations` (only additions to existing tolerations),`spec.terminationGracePeriodSeconds` (allow it to be set to 1 if it was previously negative)".into(),
        )]));
    }
    Ok(())
}

/// Schema (the typed k8s-openapi struct must accept it) and the validations that matter here.
pub fn validate(kind: Kind, name: &str, o: &Value) -> Result<(), ApiError> {
    use k8s_openapi::api::{core::v1 as core, events::v1 as events, policy::v1 as policy};
    let typed = match kind {
        Kind::Namespace => serde_json::from_value::<core::Namespace>(o.clone()).err(),
        Kind::Node => serde_json::from_value::<core::Node>(o.clone()).err(),
        Kind::Pod => serde_json::from_value::<core::Pod>(o.clone()).err(),
        Kind::Pdb => serde_json::from_value::<policy::PodDisruptionBudget>(o.clone()).err(),
        Kind::Event => serde_json::from_value::<events::Event>(o.clone()).err(),
        Kind::CoreEvent => serde_json::from_value::<core::Event>(o.clone()).err(),
        Kind::Pvc => serde_json::from_value::<core::PersistentVolumeClaim>(o.clone()).err(),
        Kind::Pv => serde_json::from_value::<core::PersistentVolume>(o.clone()).err(),
    };
    let mut causes: Vec<(String, &str, String)> = Vec::new();
    if let Some(e) = typed {
        causes.push(("<body>".into(), "FieldValueTypeInvalid", format!("Invalid value: {e}")));
    }
    for (field, map) in [("labels", true), ("annotations", false)] {
        if let Some(m) = o.pointer(&format!("/metadata/{field}")).and_then(Value::as_object) {
            for (k, v) in m {
                if !selectors::valid_label_key(k) {
                    causes.push((format!("metadata.{field}"), "FieldValueInvalid", format!("Invalid value: {k:?}: name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
                }
                if map && !v.as_str().is_some_and(selectors::valid_value) {
                    causes.push(("metadata.labels".to_string(), "FieldValueInvalid", format!("Invalid value: {v}: a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character")));
                }
            }
        }
    }
    match kind {
        Kind::Node => {
            if let Some(ts) = o.pointer("/spec/taints").and_then(Value::as_array) {
                for (i, t) in ts.iter().enumerate() {
                    let effect = t.get("effect").and_then(Value::as_str).unwrap_or("");
                    if !["NoSchedule", "PreferNoSchedule", "NoExecute"].contains(&effect) {
                        causes.push((format!("spec.taints[{i}].effect"), "FieldValueNotSupported", format!("Unsupported value: {effect:?}: supported values: \"NoSchedule\", \"PreferNoSchedule\", \"NoExecute\"")));
                    }
                    if !t.get("key").and_then(Value::as_str).is_some_and(selectors::valid_label_key) {
                        causes.push((
                            format!("spec.taints[{i}].key"),
                            "FieldValueInvalid",
                            "Invalid value: taint key must be a qualified name".into(),
                        ));
                    }
                }
            }
        }
        Kind::Pod if o.pointer("/spec/containers").and_then(Value::as_array).is_none_or(Vec::is_empty) => {
            causes.push(("spec.containers".into(), "FieldValueRequired", "Required value".into()));
        }
        Kind::Pdb => {
            let s = |f: &str| o.pointer(&format!("/spec/{f}")).is_some_and(|v| !v.is_null());
            if s("minAvailable") && s("maxUnavailable") {
                causes.push((
                    "spec".into(),
                    "FieldValueInvalid",
                    "Invalid value: minAvailable and maxUnavailable cannot be both set".into(),
                ));
            }
        }
        Kind::Event => {
            for f in ["reportingController", "reportingInstance", "action", "reason", "eventTime"] {
                if o.get(f).is_none_or(|v| v.is_null() || v == "") {
                    causes.push((f.into(), "FieldValueRequired", "Required value".into()));
                }
            }
            let t = o.get("type").and_then(Value::as_str).unwrap_or("");
            if t != "Normal" && t != "Warning" {
                causes.push((
                    "type".into(),
                    "FieldValueInvalid",
                    format!("Invalid value: {t:?}: has invalid value: {t}"),
                ));
            }
        }
        _ => {}
    }
    if causes.is_empty() { Ok(()) } else { Err(ApiError::invalid(kind, name, &causes)) }
}
