//! Alertmanager webhook payloads (version "4") → signal changes, per the alert contract.
//!
//! Parsing is all-or-nothing: a payload that breaks the contract is rejected whole with a
//! message naming the alert and the problem, so nothing is stored from a half-understood batch.
//! Alerts that are simply not ours (no or unknown `autoscaler` label) are counted and ignored.

use std::collections::BTreeMap;

use serde::Deserialize;
use thiserror::Error;

use super::model::{Direction, Signal};
use super::text::{NAME_MAX, REASON_MAX, bounded};

/// Label naming the scaling direction.
pub const LABEL_AUTOSCALER: &str = "autoscaler";
/// Label naming the pool.
pub const LABEL_POOL: &str = "pool";
/// Label naming the nodes per action.
pub const LABEL_STEP: &str = "step";
/// Longest fingerprint accepted: Alertmanager's are 16 hex digits; the fingerprint is part of
/// a DynamoDB sort key (at most 1 KiB).
const FINGERPRINT_MAX: usize = 64;

/// The parts of Alertmanager's webhook body that we read.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Payload {
    version: String,
    #[serde(default)]
    alerts: Vec<AlertPayload>,
}

#[derive(Debug, Deserialize)]
struct AlertPayload {
    status: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default)]
    fingerprint: String,
}

/// What one notification asks for.
#[derive(Debug, Default, PartialEq)]
pub struct Notification {
    /// Firing alerts: store or refresh these signals.
    pub firing: Vec<Signal>,
    /// Resolved alerts: remove these signals.
    pub resolved: Vec<ResolvedSignal>,
    /// Alerts that carry no scaling label of ours.
    pub ignored: usize,
}

impl Notification {
    /// Pools this notification touched, each once, for triggering reconciles.
    pub fn pools(&self) -> Vec<String> {
        let mut pools: Vec<String> = self
            .firing
            .iter()
            .map(|s| s.pool.clone())
            .chain(self.resolved.iter().map(|r| r.pool.clone()))
            .collect();
        pools.sort();
        pools.dedup();
        pools
    }
}

/// A resolved alert: the signal with this key goes away.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedSignal {
    /// Pool of the signal.
    pub pool: String,
    /// Alertmanager fingerprint of the alert.
    pub fingerprint: String,
    /// Direction, for logs and counters.
    pub direction: Direction,
}

/// Why a payload was rejected. Alertmanager does not retry these (4xx), so each says exactly
/// what to fix in the rule or the Alertmanager config.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum AlertError {
    /// The body is not the JSON Alertmanager sends.
    #[error("malformed webhook body: {0}")]
    Malformed(String),
    /// A payload version other than "4".
    #[error("unsupported webhook payload version {0:?} (expected \"4\")")]
    UnsupportedVersion(String),
    /// An alert breaks the alert contract.
    #[error("alert {index} ({alertname}): {problem}")]
    InvalidAlert {
        /// Position in the `alerts` array.
        index: usize,
        /// The alert's `alertname` label.
        alertname: String,
        /// What is wrong.
        problem: String,
    },
}

/// Parses a webhook body. `default_pool` fills a missing `pool` label; `known_pool` says
/// whether a pool exists in the config.
pub fn parse_notification(
    body: &[u8],
    default_pool: &str,
    known_pool: impl Fn(&str) -> bool,
) -> Result<Notification, AlertError> {
    let payload: Payload =
        serde_json::from_slice(body).map_err(|e| AlertError::Malformed(bounded(&e.to_string(), NAME_MAX)))?;
    if payload.version != "4" {
        return Err(AlertError::UnsupportedVersion(bounded(&payload.version, NAME_MAX)));
    }
    let mut notification = Notification::default();
    for (index, alert) in payload.alerts.into_iter().enumerate() {
        let Some(direction) =
            alert.labels.get(LABEL_AUTOSCALER).and_then(|value| Direction::from_label(value))
        else {
            notification.ignored += 1;
            continue;
        };
        let alertname =
            bounded(alert.labels.get("alertname").map(String::as_str).unwrap_or_default(), NAME_MAX);
        let invalid =
            |problem: String| AlertError::InvalidAlert { index, alertname: alertname.clone(), problem };
        if alert.fingerprint.is_empty() {
            return Err(invalid("no fingerprint".into()));
        }
        if alert.fingerprint.len() > FINGERPRINT_MAX {
            return Err(invalid(format!(
                "fingerprint of {} bytes (Alertmanager's are 16 hex digits)",
                alert.fingerprint.len()
            )));
        }
        let pool = alert.labels.get(LABEL_POOL).map(String::as_str).unwrap_or(default_pool).to_string();
        if !known_pool(&pool) {
            let pool = bounded(&pool, NAME_MAX);
            return Err(invalid(format!("unknown pool {pool:?} (not in the config's pools)")));
        }
        match alert.status.as_str() {
            "firing" => {
                let step = parse_step(alert.labels.get(LABEL_STEP)).map_err(invalid)?;
                let reason = reason_of(&alert.annotations, &alertname);
                notification.firing.push(Signal {
                    pool,
                    direction,
                    step,
                    reason,
                    fingerprint: alert.fingerprint,
                    alertname,
                });
            }
            "resolved" => {
                notification.resolved.push(ResolvedSignal { pool, fingerprint: alert.fingerprint, direction })
            }
            other => return Err(invalid(format!("unknown status {:?}", bounded(other, NAME_MAX)))),
        }
    }
    Ok(notification)
}

/// The human reason of an alert: its `summary`, else its `description`, else its name; bounded.
pub(crate) fn reason_of(annotations: &BTreeMap<String, String>, alertname: &str) -> String {
    let text = annotations.get("summary").or_else(|| annotations.get("description"));
    bounded(text.map_or(alertname, String::as_str), REASON_MAX)
}

/// The `step` label: absent means 1; anything but a whole number >= 1 breaks the contract.
pub(crate) fn parse_step(value: Option<&String>) -> Result<u32, String> {
    let Some(text) = value else { return Ok(1) };
    match text.trim().parse::<u32>() {
        Ok(step) if step >= 1 => Ok(step),
        _ => Err(format!("label step={:?} is not a whole number of nodes >= 1", bounded(text, NAME_MAX))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(alerts: serde_json::Value) -> Vec<u8> {
        json!({"version": "4", "status": "firing", "receiver": "k3s-autoscaler", "alerts": alerts})
            .to_string()
            .into_bytes()
    }

    fn alert(status: &str, labels: serde_json::Value) -> serde_json::Value {
        json!({"status": status, "labels": labels, "annotations": {"summary": "CPU at 85%"},
               "fingerprint": "fp1", "startsAt": "2026-11-23T23:04:54.949Z",
               "endsAt": "0001-01-01T00:00:00Z"})
    }

    fn parse(body: &[u8]) -> Result<Notification, AlertError> {
        parse_notification(body, "workers", |p| p == "workers" || p == "gpu")
    }

    #[test]
    fn captured_alertmanager_payloads_parse_and_are_ignored_without_our_label() {
        let captured: [&[u8]; 2] = [
            include_bytes!("../../tests/fixtures/alertmanager/am-0.25-firing.json"),
            include_bytes!("../../tests/fixtures/alertmanager/am-0.25-resolved.json"),
        ];
        for bytes in captured {
            let n = parse(bytes).unwrap();
            assert_eq!((n.firing.len(), n.resolved.len(), n.ignored), (0, 0, 1));
        }
    }

    #[test]
    fn captured_payload_with_our_labels_becomes_signals() {
        let text =
            std::str::from_utf8(include_bytes!("../../tests/fixtures/alertmanager/am-0.25-firing.json"))
                .unwrap()
                .replace("\"action\": \"scale_out\"", "\"autoscaler\": \"scale-up\"");
        let n = parse(text.as_bytes()).unwrap();
        assert_eq!(n.firing.len(), 1);
        assert_eq!(n.firing[0].fingerprint, "a8d355e00d586d1e");
        assert_eq!(n.firing[0].reason, "CPU high on i-demo1");
    }

    #[test]
    fn firing_scale_up_becomes_a_signal_with_defaults() {
        let n =
            parse(&body(json!([alert("firing", json!({"alertname": "HighCpu", "autoscaler": "scale-up"}))])))
                .unwrap();
        assert_eq!(
            n.firing,
            vec![Signal {
                pool: "workers".into(),
                direction: Direction::Up,
                step: 1,
                reason: "CPU at 85%".into(),
                fingerprint: "fp1".into(),
                alertname: "HighCpu".into(),
            }]
        );
        assert_eq!(n.pools(), vec!["workers".to_string()]);
    }

    #[test]
    fn step_and_pool_labels_are_read() {
        let n = parse(&body(json!([alert(
            "firing",
            json!({"alertname": "Pending", "autoscaler": "scale-up", "pool": "gpu", "step": "3"})
        )])))
        .unwrap();
        assert_eq!((n.firing[0].pool.as_str(), n.firing[0].step), ("gpu", 3));
    }

    #[test]
    fn description_is_the_reason_when_summary_is_missing() {
        let mut a = alert("firing", json!({"alertname": "X", "autoscaler": "scale-down"}));
        a["annotations"] = json!({"description": "idle"});
        let n = parse(&body(json!([a]))).unwrap();
        assert_eq!(n.firing[0].reason, "idle");
        a["annotations"] = json!({});
        let n = parse(&body(json!([a]))).unwrap();
        assert_eq!(n.firing[0].reason, "X");
    }

    #[test]
    fn resolved_alert_removes_its_signal() {
        let n =
            parse(&body(json!([alert("resolved", json!({"alertname": "X", "autoscaler": "scale-down"}))])))
                .unwrap();
        assert_eq!(
            n.resolved,
            vec![ResolvedSignal {
                pool: "workers".into(),
                fingerprint: "fp1".into(),
                direction: Direction::Down
            }]
        );
        assert!(n.firing.is_empty());
    }

    #[test]
    fn foreign_and_unknown_autoscaler_values_are_ignored_and_counted() {
        let n = parse(&body(json!([
            alert("firing", json!({"alertname": "Disk"})),
            alert("firing", json!({"alertname": "X", "autoscaler": "scale-sideways"})),
        ])))
        .unwrap();
        assert_eq!((n.firing.len(), n.ignored), (0, 2));
    }

    #[test]
    fn bad_step_rejects_the_whole_payload_naming_the_alert() {
        for step in ["0", "-1", "two", ""] {
            let err = parse(&body(json!([
                alert("firing", json!({"alertname": "Ok", "autoscaler": "scale-up"})),
                alert("firing", json!({"alertname": "Bad", "autoscaler": "scale-up", "step": step})),
            ])))
            .unwrap_err();
            assert!(
                matches!(&err, AlertError::InvalidAlert { index: 1, alertname, .. } if alertname == "Bad"),
                "{err}"
            );
            assert!(err.to_string().contains("step"), "{err}");
        }
    }

    #[test]
    fn unknown_pool_is_rejected() {
        let err = parse(&body(json!([alert(
            "firing",
            json!({"alertname": "X", "autoscaler": "scale-up", "pool": "nope"})
        )])))
        .unwrap_err();
        assert!(err.to_string().contains("unknown pool \"nope\""), "{err}");
    }

    #[test]
    fn unsupported_version_and_malformed_json_are_rejected() {
        let v3 = json!({"version": "3", "alerts": []}).to_string();
        assert_eq!(parse(v3.as_bytes()).unwrap_err(), AlertError::UnsupportedVersion("3".into()));
        assert!(matches!(parse(b"{not json").unwrap_err(), AlertError::Malformed(_)));
        assert!(matches!(parse(b"[]").unwrap_err(), AlertError::Malformed(_)));
    }

    #[test]
    fn missing_fingerprint_and_unknown_status_are_rejected() {
        let mut a = alert("firing", json!({"alertname": "X", "autoscaler": "scale-up"}));
        a["fingerprint"] = json!("");
        assert!(parse(&body(json!([a]))).unwrap_err().to_string().contains("fingerprint"));
        let a = alert("pending", json!({"alertname": "X", "autoscaler": "scale-up"}));
        assert!(parse(&body(json!([a]))).unwrap_err().to_string().contains("status"));
    }

    #[test]
    fn texts_copied_from_an_alert_are_bounded() {
        let huge = "pod-x ".repeat(100_000);
        let mut a = alert("firing", json!({"alertname": huge.clone(), "autoscaler": "scale-up"}));
        a["annotations"] = json!({"summary": huge.clone(), "description": huge.clone()});
        let n = parse(&body(json!([a]))).unwrap();
        let signal = &n.firing[0];
        assert!(signal.reason.len() <= crate::core::text::REASON_MAX, "{}", signal.reason.len());
        assert!(signal.reason.ends_with("[cut, 600000 bytes]"), "the reason says it was cut");
        assert!(signal.alertname.len() <= crate::core::text::NAME_MAX);
        let bad = alert("firing", json!({"alertname": "X", "autoscaler": "scale-up", "pool": huge.clone()}));
        assert!(parse(&body(json!([bad]))).unwrap_err().to_string().len() < 1024);
        let bad = alert("firing", json!({"alertname": "X", "autoscaler": "scale-up", "step": huge.clone()}));
        assert!(parse(&body(json!([bad]))).unwrap_err().to_string().len() < 1024);
        let version = json!({"version": huge, "alerts": []}).to_string();
        assert!(parse(version.as_bytes()).unwrap_err().to_string().len() < 1024);
    }

    #[test]
    fn a_fingerprint_longer_than_alertmanager_writes_is_rejected() {
        let mut a = alert("firing", json!({"alertname": "X", "autoscaler": "scale-up"}));
        a["fingerprint"] = json!("f".repeat(2000));
        assert!(parse(&body(json!([a]))).unwrap_err().to_string().contains("fingerprint of 2000 bytes"));
    }
}
