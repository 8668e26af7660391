//! Does Alertmanager route the scaling alerts to us? Alertmanager's `GET /api/v2/status`
//! returns its loaded configuration as the original YAML (`config.original`); this walks its
//! route tree the way Alertmanager's dispatcher does and names the receivers an alert with
//! the given labels reaches, and whether one of them posts to our webhook.
//!
//! Route semantics (prometheus/alertmanager `dispatch/route.go`): the root route matches
//! every alert; a child is tried in order and matches when all its matchers do (`match`,
//! `match_re` — anchored regular expressions — and `matchers`); the first matching child
//! wins unless it sets `continue: true`, in which case the next ones are tried too; when no
//! child matches, the route itself is the result.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The part of an Alertmanager configuration routing needs.
#[derive(Debug, Deserialize)]
pub struct AmConfig {
    route: Route,
    #[serde(default)]
    receivers: Vec<Receiver>,
}

#[derive(Debug, Deserialize)]
struct Route {
    receiver: Option<String>,
    #[serde(default, rename = "match")]
    match_eq: BTreeMap<String, String>,
    #[serde(default)]
    match_re: BTreeMap<String, String>,
    #[serde(default)]
    matchers: Vec<String>,
    #[serde(default)]
    routes: Vec<Route>,
    #[serde(default, rename = "continue")]
    continue_matching: bool,
}

#[derive(Debug, Deserialize)]
struct Receiver {
    name: String,
    #[serde(default)]
    webhook_configs: Vec<WebhookConfig>,
}

/// One `webhook_configs` entry, as far as the check needs it.
#[derive(Debug, Clone, Deserialize)]
pub struct WebhookConfig {
    /// Where Alertmanager posts.
    pub url: Option<String>,
    /// Resolved notifications sent too (Alertmanager's default for webhooks is true).
    #[serde(default = "yes")]
    pub send_resolved: bool,
    #[serde(default)]
    http_config: serde_json::Value,
}

fn yes() -> bool {
    true
}

impl WebhookConfig {
    /// Whether the post carries credentials (our webhook answers 401 without them).
    pub fn has_credentials(&self) -> bool {
        ["authorization", "basic_auth", "bearer_token", "bearer_token_file"]
            .iter()
            .any(|key| self.http_config.get(key).is_some_and(|v| !v.is_null()))
    }
}

/// Why a configuration text could not be read.
pub fn parse(yaml: &str) -> Result<AmConfig, String> {
    serde_saphyr::from_str(yaml).map_err(|e| crate::core::text::bounded(&e.to_string(), 512))
}

/// Where an alert with `labels` goes: the receivers' names, in order.
pub fn receivers_for(config: &AmConfig, labels: &BTreeMap<&str, &str>) -> Result<Vec<String>, String> {
    let mut found = Vec::new();
    walk(&config.route, None, labels, &mut found)?;
    Ok(found)
}

/// The webhook configs of the receivers an alert with `labels` reaches whose URL path is
/// `path` (our webhook's, `/v1/alerts`), with the receiver's name.
pub fn webhooks_reached<'a>(
    config: &'a AmConfig,
    labels: &BTreeMap<&str, &str>,
    path: &str,
) -> Result<Vec<(String, &'a WebhookConfig)>, String> {
    let receivers = receivers_for(config, labels)?;
    Ok(config
        .receivers
        .iter()
        .filter(|r| receivers.contains(&r.name))
        .flat_map(|r| r.webhook_configs.iter().map(move |w| (r.name.clone(), w)))
        .filter(|(_, w)| w.url.as_deref().is_some_and(|url| url_path(url) == path))
        .collect())
}

fn url_path(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let path = rest.find('/').map_or("", |at| &rest[at..]);
    path.split(['?', '#']).next().unwrap_or("").trim_end_matches('/')
}

/// Depth-first as the dispatcher, from a route that matched.
fn walk(
    route: &Route,
    inherited: Option<&str>,
    labels: &BTreeMap<&str, &str>,
    found: &mut Vec<String>,
) -> Result<(), String> {
    let receiver = route.receiver.as_deref().or(inherited);
    let mut child_matched = false;
    for child in &route.routes {
        if !matches(child, labels)? {
            continue;
        }
        walk(child, receiver, labels, found)?;
        child_matched = true;
        if !child.continue_matching {
            break;
        }
    }
    if !child_matched {
        if let Some(name) = receiver {
            found.push(name.to_string());
        }
    }
    Ok(())
}

/// An alert's label value; a missing label matches as the empty string, as in Alertmanager.
fn value<'a>(labels: &BTreeMap<&str, &'a str>, name: &str) -> &'a str {
    labels.get(name).copied().unwrap_or("")
}

fn matches(route: &Route, labels: &BTreeMap<&str, &str>) -> Result<bool, String> {
    for (name, want) in &route.match_eq {
        if value(labels, name) != want {
            return Ok(false);
        }
    }
    for (name, pattern) in &route.match_re {
        if !anchored(pattern)?.is_match(value(labels, name)) {
            return Ok(false);
        }
    }
    for text in &route.matchers {
        for matcher in split_matchers(text) {
            if !matcher_holds(&matcher, labels)? {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

fn anchored(pattern: &str) -> Result<regex::Regex, String> {
    regex::Regex::new(&format!("^(?:{pattern})$"))
        .map_err(|e| format!("bad regular expression {pattern:?}: {e}"))
}

/// `a="x", b=~"y"` (also within braces) → one text per matcher.
fn split_matchers(text: &str) -> Vec<String> {
    let text = text.trim().trim_start_matches('{').trim_end_matches('}');
    let (mut parts, mut current, mut quoted, mut escaped) = (Vec::new(), String::new(), false, false);
    for c in text.chars() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                parts.push(std::mem::take(&mut current));
                continue;
            }
            _ => {}
        }
        current.push(c);
    }
    parts.push(current);
    parts.into_iter().map(|p| p.trim().to_string()).filter(|p| !p.is_empty()).collect()
}

fn matcher_holds(matcher: &str, labels: &BTreeMap<&str, &str>) -> Result<bool, String> {
    let at = matcher.find(['=', '!']).ok_or_else(|| format!("bad matcher {matcher:?}"))?;
    let name = matcher[..at].trim();
    let rest = &matcher[at..];
    let (op, raw) = ["=~", "!~", "!=", "="]
        .iter()
        .find_map(|op| rest.strip_prefix(op).map(|raw| (*op, raw)))
        .ok_or_else(|| format!("bad matcher {matcher:?}"))?;
    let raw = raw.trim();
    let wanted = match raw.strip_prefix('"').and_then(|r| r.strip_suffix('"')) {
        Some(inner) => inner.replace("\\\"", "\"").replace("\\\\", "\\"),
        None => raw.to_string(),
    };
    let actual = value(labels, name);
    Ok(match op {
        "=" => actual == wanted,
        "!=" => actual != wanted,
        "=~" => anchored(&wanted)?.is_match(actual),
        _ => !anchored(&wanted)?.is_match(actual),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&'static str, &'static str)]) -> BTreeMap<&'static str, &'static str> {
        pairs.iter().copied().collect()
    }

    const SHIPPED: &str = include_str!("../../alertmanager/alertmanager.yml");

    #[test]
    fn the_shipped_config_sends_scaling_alerts_to_the_webhook_with_credentials() {
        let config = parse(SHIPPED).unwrap();
        for direction in ["scale-up", "scale-down"] {
            let alert =
                labels(&[("alertname", "WorkerCpuHigh"), ("autoscaler", direction), ("pool", "workers")]);
            assert_eq!(receivers_for(&config, &alert).unwrap(), ["k3s-autoscaler"]);
            let hooks = webhooks_reached(&config, &alert, "/v1/alerts").unwrap();
            assert_eq!(hooks.len(), 1);
            assert!(hooks[0].1.send_resolved && hooks[0].1.has_credentials());
        }
        let health = labels(&[("alertname", "K3sAutoscalerDown")]);
        assert_eq!(receivers_for(&config, &health).unwrap(), ["slack-k3s-autoscaler"]);
        assert!(webhooks_reached(&config, &health, "/v1/alerts").unwrap().is_empty());
    }

    #[test]
    fn first_matching_child_wins_unless_it_continues_and_the_parent_catches_the_rest() {
        let yaml = r#"
route:
  receiver: default
  routes:
    - receiver: team
      match: {team: a}
    - receiver: first
      match_re: {autoscaler: "scale-.*"}
      continue: true
    - receiver: second
      matchers: ['autoscaler!="scale-down"', 'pool=~"work.*"']
receivers: [{name: default}, {name: team}, {name: first}, {name: second}]
"#;
        let config = parse(yaml).unwrap();
        let up = labels(&[("autoscaler", "scale-up"), ("pool", "workers")]);
        assert_eq!(receivers_for(&config, &up).unwrap(), ["first", "second"]);
        let down = labels(&[("autoscaler", "scale-down"), ("pool", "workers")]);
        assert_eq!(receivers_for(&config, &down).unwrap(), ["first"]);
        assert_eq!(
            receivers_for(&config, &labels(&[("team", "a"), ("autoscaler", "scale-up")])).unwrap(),
            ["team"]
        );
        assert_eq!(receivers_for(&config, &labels(&[("x", "y")])).unwrap(), ["default"]);
        // A regular expression is anchored: "scale-upx" does not match "scale-up|scale-down".
        let anchored = parse("route: {receiver: d, routes: [{receiver: r, matchers: ['autoscaler=~\"scale-up|scale-down\"']}]}\nreceivers: [{name: d}, {name: r}]").unwrap();
        assert_eq!(receivers_for(&anchored, &labels(&[("autoscaler", "scale-upx")])).unwrap(), ["d"]);
    }

    #[test]
    fn a_webhook_elsewhere_or_a_route_that_misses_us_is_not_a_match() {
        let yaml = r#"
route:
  receiver: other
  routes:
    - receiver: k3s-autoscaler
      matchers: ['autoscaler="scale-down"']
receivers:
  - name: other
    webhook_configs: [{url: "http://chat.example/hook"}]
  - name: k3s-autoscaler
    webhook_configs: [{url: "http://k3s-autoscaler:8080/v1/alerts/", send_resolved: false}]
"#;
        let config = parse(yaml).unwrap();
        let up = labels(&[("autoscaler", "scale-up")]);
        assert!(webhooks_reached(&config, &up, "/v1/alerts").unwrap().is_empty(), "scale-up goes to `other`");
        let down = labels(&[("autoscaler", "scale-down")]);
        let hooks = webhooks_reached(&config, &down, "/v1/alerts").unwrap();
        assert_eq!(hooks.len(), 1);
        assert!(!hooks[0].1.send_resolved && !hooks[0].1.has_credentials());
        assert!(parse("route: [").is_err());
    }
}
