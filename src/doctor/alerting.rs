//! The alerting checks: each Alertmanager replica answers and routes the scaling alerts to
//! our webhook (`GET /api/v2/status`, its loaded configuration), and Prometheus has the
//! scaling rules loaded (`GET /api/v1/rules`).

use std::collections::BTreeMap;
use std::time::Duration;

use http_body_util::{BodyExt, Empty, Limited};
use hyper::body::Bytes;
use hyper::header::{ACCEPT, AUTHORIZATION, HeaderValue};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;

use super::{Check, routes};
use crate::config::Config;
use crate::core::text::bounded;

/// Largest answer read (a status page with a large configuration, or many rule groups).
const MAX_BODY: usize = 8 * 1024 * 1024;
/// The path Alertmanager must post the scaling alerts to.
const WEBHOOK_PATH: &str = "/v1/alerts";

pub(super) async fn checks(config: &Config) -> Vec<Check> {
    let timeout = config.alertmanager.timeout.max(Duration::from_secs(2));
    let mut checks = Vec::new();
    if config.alertmanager.urls.is_empty() {
        checks.push(Check::skip("Alertmanager", "alertmanager.urls is empty: its routing is not checked"));
    }
    let authorization = config.alertmanager.authorization();
    for url in &config.alertmanager.urls {
        let name = format!("Alertmanager {url}");
        let base = url.trim_end_matches('/');
        checks.push(match get(&format!("{base}/api/v2/status"), authorization.as_deref(), timeout).await {
            Ok(body) => route_verdict(name, &body),
            Err(e) => Check::fail(
                name,
                format!("not reachable: {e}"),
                "check alertmanager.urls and that Alertmanager runs",
            ),
        });
    }
    checks.push(match &config.prometheus.url {
        None => Check::skip("Prometheus rules", "prometheus.url not set: the scaling rules are not checked"),
        Some(url) => {
            let name = format!("Prometheus rules at {url}");
            let base = url.trim_end_matches('/');
            match get(&format!("{base}/api/v1/rules?type=alert"), None, timeout).await {
                Ok(body) => rules_verdict(name, &body),
                Err(e) => Check::fail(
                    name,
                    format!("not reachable: {e}"),
                    "check prometheus.url and that Prometheus runs",
                ),
            }
        }
    });
    checks
}

async fn get(url: &str, authorization: Option<&str>, timeout: Duration) -> Result<Bytes, String> {
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(timeout));
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector);
    let mut request = hyper::Request::get(url)
        .header(ACCEPT, "application/json")
        .body(Empty::new())
        .map_err(|e| format!("bad URL {url:?}: {e}"))?;
    if let Some(value) = authorization.and_then(|v| HeaderValue::from_str(v).ok()) {
        request.headers_mut().insert(AUTHORIZATION, value);
    }
    let response = tokio::time::timeout(timeout, client.request(request))
        .await
        .map_err(|_| format!("no answer within {timeout:?}"))?
        .map_err(|e| bounded(&format!("{e:?}"), 300))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    let body = Limited::new(response.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| bounded(&e.to_string(), 300))?;
    Ok(body.to_bytes())
}

#[derive(Deserialize)]
struct Status {
    config: StatusConfig,
}

#[derive(Deserialize)]
struct StatusConfig {
    original: String,
}

/// Both scaling directions must reach a receiver posting to `/v1/alerts`, with resolved
/// notifications and credentials.
fn route_verdict(name: String, status: &[u8]) -> Check {
    let fix = "route alerts with label autoscaler=~\"scale-up|scale-down\" to a webhook receiver posting to \
               http://<service>:8080/v1/alerts with send_resolved: true and the bearer token (alertmanager/alertmanager.yml)";
    let config = match serde_json::from_slice::<Status>(status) {
        Ok(status) => match routes::parse(&status.config.original) {
            Ok(config) => config,
            Err(e) => return Check::fail(name, format!("cannot read its configuration: {e}"), fix),
        },
        Err(e) => {
            return Check::fail(
                name,
                format!("not an Alertmanager status answer: {}", bounded(&e.to_string(), 200)),
                fix,
            );
        }
    };
    let mut problems = Vec::new();
    let mut reached = Vec::new();
    for direction in ["scale-up", "scale-down"] {
        let labels: BTreeMap<&str, &str> =
            [("alertname", "K3sAutoscalerDoctor"), ("autoscaler", direction), ("pool", "workers")]
                .into_iter()
                .collect();
        match routes::webhooks_reached(&config, &labels, WEBHOOK_PATH) {
            Err(e) => problems.push(format!("cannot evaluate its routes: {e}")),
            Ok(hooks) if hooks.is_empty() => {
                let receivers = routes::receivers_for(&config, &labels).unwrap_or_default();
                problems.push(format!(
                    "autoscaler={direction} goes to {} with no webhook to {WEBHOOK_PATH}",
                    if receivers.is_empty() { "no receiver".to_string() } else { receivers.join(", ") }
                ));
            }
            Ok(hooks) => {
                for (receiver, hook) in hooks {
                    if !hook.send_resolved {
                        problems.push(format!("receiver {receiver}: send_resolved is false"));
                    }
                    if !hook.has_credentials() {
                        problems
                            .push(format!("receiver {receiver}: no credentials (our webhook answers 401)"));
                    }
                    let url = hook.url.clone().unwrap_or_default();
                    if !reached.contains(&url) {
                        reached.push(url);
                    }
                }
            }
        }
    }
    if problems.is_empty() {
        Check::pass(name, format!("routes scale-up and scale-down alerts to {}", reached.join(", ")))
    } else {
        Check::fail(name, problems.join("; "), fix)
    }
}

#[derive(Deserialize)]
struct RulesAnswer {
    data: RulesData,
}

#[derive(Deserialize)]
struct RulesData {
    groups: Vec<RuleGroup>,
}

#[derive(Deserialize)]
struct RuleGroup {
    rules: Vec<Rule>,
}

#[derive(Deserialize)]
struct Rule {
    name: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    health: String,
    #[serde(default, rename = "lastError")]
    last_error: String,
    #[serde(default, rename = "type")]
    kind: String,
}

/// At least one alerting rule per direction carries the `autoscaler` label, and none of
/// them fails to evaluate.
fn rules_verdict(name: String, answer: &[u8]) -> Check {
    let fix = "load alert-rules/*.yaml into Prometheus (rule_files, or the PrometheusRule of deploy/) and reload it";
    let answer: RulesAnswer = match serde_json::from_slice(answer) {
        Ok(answer) => answer,
        Err(e) => {
            return Check::fail(
                name,
                format!("not a Prometheus rules answer: {}", bounded(&e.to_string(), 200)),
                fix,
            );
        }
    };
    let scaling: Vec<&Rule> = answer
        .data
        .groups
        .iter()
        .flat_map(|g| &g.rules)
        .filter(|r| r.kind.is_empty() || r.kind == "alerting")
        .filter(|r| r.labels.contains_key("autoscaler"))
        .collect();
    let count = |direction: &str| scaling.iter().filter(|r| r.labels["autoscaler"] == direction).count();
    let (up, down) = (count("scale-up"), count("scale-down"));
    let broken: Vec<String> = scaling
        .iter()
        .filter(|r| r.health == "err")
        .map(|r| format!("{} ({})", r.name, bounded(&r.last_error, 200)))
        .collect();
    if up == 0 || down == 0 {
        Check::fail(
            name,
            format!("{up} scale-up and {down} scale-down rules loaded; both directions need one"),
            fix,
        )
    } else if !broken.is_empty() {
        Check::fail(
            name,
            format!("failing to evaluate: {}", broken.join(", ")),
            "fix the rule's expression (promtool check rules alert-rules/)",
        )
    } else {
        Check::pass(name, format!("{up} scale-up and {down} scale-down rules loaded"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::doctor::Verdict;

    fn status(original: &str) -> Vec<u8> {
        serde_json::json!({"config": {"original": original}, "uptime": "2026-12-01T00:00:00Z"})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn the_shipped_route_passes_and_a_route_that_misses_us_fails() {
        let shipped =
            route_verdict("am".into(), &status(include_str!("../../alertmanager/alertmanager.yml")));
        assert_eq!(shipped.verdict, Verdict::Pass, "{}", shipped.detail);
        assert!(
            shipped.detail.contains("http://k3s-autoscaler.k3s-autoscaler.svc:8080/v1/alerts"),
            "{}",
            shipped.detail
        );
        let elsewhere = "route: {receiver: team}\nreceivers: [{name: team, webhook_configs: [{url: 'http://chat/hook'}]}]\n";
        let check = route_verdict("am".into(), &status(elsewhere));
        assert_eq!(check.verdict, Verdict::Fail);
        assert!(
            check.detail.contains("autoscaler=scale-up goes to team with no webhook to /v1/alerts"),
            "{}",
            check.detail
        );
        assert_eq!(route_verdict("am".into(), b"<html>").verdict, Verdict::Fail);
    }

    fn rules(rules: serde_json::Value) -> Vec<u8> {
        serde_json::json!({"status": "success", "data": {"groups": [{"name": "g", "rules": rules}]}})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn both_directions_must_be_loaded_and_healthy() {
        let up = serde_json::json!({"name": "Up", "type": "alerting", "health": "ok", "labels": {"autoscaler": "scale-up"}});
        let down = serde_json::json!({"name": "Down", "type": "alerting", "health": "ok", "labels": {"autoscaler": "scale-down"}});
        let other = serde_json::json!({"name": "Other", "type": "alerting", "health": "ok", "labels": {"severity": "page"}});
        assert_eq!(
            rules_verdict("p".into(), &rules(serde_json::json!([up, down, other]))).verdict,
            Verdict::Pass
        );
        let check = rules_verdict("p".into(), &rules(serde_json::json!([other])));
        assert_eq!(check.detail, "0 scale-up and 0 scale-down rules loaded; both directions need one");
        let mut broken = down.clone();
        broken["health"] = "err".into();
        broken["lastError"] = "bad expr".into();
        let check = rules_verdict("p".into(), &rules(serde_json::json!([up, broken])));
        assert!(
            check.verdict == Verdict::Fail && check.detail.contains("Down (bad expr)"),
            "{}",
            check.detail
        );
    }
}
