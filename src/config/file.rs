//! The configuration file's shape: serde structs that refuse unknown keys, with the
//! documented defaults. Durations are still text here; `validate` parses them.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::core::interruption::RebalanceMode;
use crate::core::model::CapacityPreference;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    pub(super) cluster_id: String,
    #[serde(default = "default_pool_name")]
    pub(super) default_pool: String,
    #[serde(default)]
    pub(super) dry_run: bool,
    #[serde(default)]
    pub(super) server: RawServer,
    #[serde(default)]
    pub(super) auth: RawAuth,
    pub(super) aws: RawAws,
    #[serde(default)]
    pub(super) kubernetes: RawKubernetes,
    #[serde(default)]
    pub(super) timing: RawTiming,
    #[serde(default)]
    pub(super) interruption: RawInterruption,
    #[serde(default)]
    pub(super) cloudwatch: RawCloudWatch,
    #[serde(default)]
    pub(super) drain: RawDrain,
    #[serde(default)]
    pub(super) pools: BTreeMap<String, RawPool>,
    #[serde(default)]
    pub(super) alertmanager: RawAlertmanager,
    #[serde(default)]
    pub(super) prometheus: RawPrometheus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPrometheus {
    pub(super) url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAlertmanager {
    #[serde(default)]
    pub(super) urls: Vec<String>,
    pub(super) sync_interval: Option<String>,
    pub(super) timeout: Option<String>,
    pub(super) bearer_token_file: Option<PathBuf>,
    pub(super) basic_username: Option<String>,
    pub(super) basic_password_file: Option<PathBuf>,
}

/// Default limit per Alertmanager request (or the sync interval, if shorter).
pub(super) const DEFAULT_ALERTMANAGER_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDrain {
    #[serde(default = "default_movable_system_workloads")]
    pub(super) movable_system_workloads: Vec<String>,
}

impl Default for RawDrain {
    fn default() -> Self {
        Self { movable_system_workloads: default_movable_system_workloads() }
    }
}

/// The stateless add-ons a default K3s install runs as Deployments in kube-system.
fn default_movable_system_workloads() -> Vec<String> {
    ["coredns", "metrics-server", "local-path-provisioner", "traefik"]
        .iter()
        .map(|name| format!("kube-system/{name}"))
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInterruption {
    #[serde(default = "default_rebalance")]
    pub(super) rebalance: RebalanceMode,
    #[serde(default = "default_max_rebalance_per_pool")]
    pub(super) max_rebalance_per_pool: u32,
    pub(super) queue_url: Option<String>,
}

impl Default for RawInterruption {
    fn default() -> Self {
        Self {
            rebalance: default_rebalance(),
            max_rebalance_per_pool: default_max_rebalance_per_pool(),
            queue_url: None,
        }
    }
}

fn default_max_rebalance_per_pool() -> u32 {
    1
}

fn default_rebalance() -> RebalanceMode {
    RebalanceMode::CordonOnly
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCloudWatch {
    pub(super) log_group: Option<String>,
    pub(super) log_stream: Option<String>,
}

fn default_pool_name() -> String {
    "workers".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawServer {
    #[serde(default = "default_listen")]
    pub(super) listen: String,
    #[serde(default = "default_body_limit")]
    pub(super) body_limit_bytes: u64,
    #[serde(default = "default_header_read_timeout")]
    pub(super) header_read_timeout: String,
    #[serde(default = "default_body_read_timeout")]
    pub(super) body_read_timeout: String,
    #[serde(default = "default_request_timeout")]
    pub(super) request_timeout: String,
    #[serde(default = "default_max_concurrent_requests")]
    pub(super) max_concurrent_requests: u32,
    #[serde(default = "default_max_connections")]
    pub(super) max_connections: u32,
    #[serde(default = "default_readiness_interval")]
    pub(super) readiness_interval: String,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            body_limit_bytes: default_body_limit(),
            header_read_timeout: default_header_read_timeout(),
            body_read_timeout: default_body_read_timeout(),
            request_timeout: default_request_timeout(),
            max_concurrent_requests: default_max_concurrent_requests(),
            max_connections: default_max_connections(),
            readiness_interval: default_readiness_interval(),
        }
    }
}

fn default_header_read_timeout() -> String {
    "5s".into()
}
fn default_body_read_timeout() -> String {
    "10s".into()
}
fn default_request_timeout() -> String {
    "20s".into()
}
fn default_max_concurrent_requests() -> u32 {
    64
}
fn default_max_connections() -> u32 {
    1024
}
fn default_readiness_interval() -> String {
    "5s".into()
}

fn default_listen() -> String {
    "0.0.0.0:8080".into()
}
fn default_body_limit() -> u64 {
    1024 * 1024
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAuth {
    pub(super) bearer_token_file: Option<PathBuf>,
    pub(super) token_ssm_parameter: Option<String>,
    pub(super) token_ssm_refresh_interval: Option<String>,
    pub(super) basic_username: Option<String>,
    pub(super) basic_password_file: Option<PathBuf>,
    pub(super) events_token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAws {
    pub(super) region: String,
    pub(super) endpoint_url: Option<String>,
    pub(super) table: String,
    #[serde(default = "default_call_timeout")]
    pub(super) call_timeout: String,
}

fn default_call_timeout() -> String {
    "3s".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawKubernetes {
    pub(super) kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTiming {
    #[serde(default = "default_signal_ttl")]
    pub(super) signal_ttl: String,
    #[serde(default = "default_lease_ttl")]
    pub(super) lease_ttl: String,
    #[serde(default = "default_sweep_interval")]
    pub(super) sweep_interval: String,
}

impl Default for RawTiming {
    fn default() -> Self {
        Self {
            signal_ttl: default_signal_ttl(),
            lease_ttl: default_lease_ttl(),
            sweep_interval: default_sweep_interval(),
        }
    }
}

fn default_signal_ttl() -> String {
    "35m".into()
}
fn default_lease_ttl() -> String {
    "30s".into()
}
fn default_sweep_interval() -> String {
    "15s".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPool {
    pub(super) min: u32,
    pub(super) max: u32,
    #[serde(default = "default_max_step")]
    pub(super) max_step: u32,
    #[serde(default = "default_scale_up_cooldown")]
    pub(super) scale_up_cooldown: String,
    #[serde(default = "default_scale_down_cooldown")]
    pub(super) scale_down_cooldown: String,
    pub(super) launch_template: String,
    #[serde(default = "default_template_version")]
    pub(super) launch_template_version: String,
    pub(super) instance_types: Option<Vec<String>>,
    #[serde(default = "default_capacity")]
    pub(super) capacity: CapacityPreference,
    #[serde(default = "default_capacity_backoff")]
    pub(super) capacity_backoff: String,
    #[serde(default = "default_join_timeout")]
    pub(super) join_timeout: String,
    #[serde(default = "default_drain_timeout")]
    pub(super) drain_timeout: String,
    #[serde(default = "default_max_unready_share")]
    pub(super) max_unready_share: f64,
    #[serde(default = "default_repair_after")]
    pub(super) repair_after: String,
    #[serde(default)]
    pub(super) subnets: BTreeMap<String, String>,
    #[serde(default)]
    pub(super) prices: BTreeMap<String, crate::core::prices::TypePrices>,
}

fn default_max_step() -> u32 {
    3
}
fn default_scale_up_cooldown() -> String {
    "3m".into()
}
fn default_scale_down_cooldown() -> String {
    "10m".into()
}
fn default_template_version() -> String {
    "1".into()
}
fn default_capacity() -> CapacityPreference {
    CapacityPreference::SpotFirst
}
fn default_capacity_backoff() -> String {
    "5m".into()
}
fn default_join_timeout() -> String {
    "10m".into()
}
fn default_drain_timeout() -> String {
    "5m".into()
}
fn default_max_unready_share() -> f64 {
    0.45
}
fn default_repair_after() -> String {
    "10m".into()
}

#[cfg(test)]
mod tests {
    use crate::config::fixture::Fixture;
    use crate::config::{Config, ConfigSource};

    /// Every key the binary accepts, as `section.key`, with pool keys as `pools.<name>.key`
    /// and the pool's subnet table as one key. Secrets read from files are not keys.
    fn accepted_keys() -> std::collections::BTreeSet<String> {
        let f = Fixture::new();
        let token = f.dir.path().join("token");
        let events = f.dir.path().join("events-token");
        std::fs::write(&events, "events\n").unwrap();
        // Every optional key set, so the effective config shows them all.
        let text = format!(
            r#"
cluster_id = "demo"
[auth]
bearer_token_file = "{token}"
basic_username = "am"
basic_password_file = "{token}"
events_token_file = "{events}"
[aws]
region = "us-east-1"
table = "t"
endpoint_url = "http://localhost:5000"
[kubernetes]
kubeconfig = "/k"
[cloudwatch]
log_group = "/k3s-autoscaler"
log_stream = "demo"
[alertmanager]
urls = ["http://am:9093"]
bearer_token_file = "{token}"
basic_username = "am"
basic_password_file = "{token}"
[interruption]
queue_url = "https://sqs.us-east-1.amazonaws.com/123456789012/notices"
[prometheus]
url = "http://prometheus:9090"
[pools.workers]
min = 1
max = 4
launch_template = "lt-1"
instance_types = ["t3.small"]
[pools.workers.subnets]
"us-east-1a" = "subnet-a"
"#,
            token = token.display(),
            events = events.display()
        );
        let config = f.load(&text, &[]).unwrap();
        let value = toml::Value::try_from(&config).unwrap();
        let mut keys = std::collections::BTreeSet::new();
        fn walk(prefix: &str, value: &toml::Value, keys: &mut std::collections::BTreeSet<String>) {
            match value {
                toml::Value::Table(table)
                    if !prefix.ends_with(".subnets") && !prefix.ends_with(".prices") =>
                {
                    for (k, v) in table {
                        let path = if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") };
                        walk(&path, v, keys);
                    }
                }
                _ => {
                    keys.insert(prefix.replace("pools.workers.", "pools.<name>."));
                }
            }
        }
        walk("", &value, &mut keys);
        keys.remove("auth.bearer_token");
        keys.remove("auth.basic_password");
        keys.remove("alertmanager.bearer_token");
        keys.remove("alertmanager.basic_password");
        keys.remove("auth.events_token");
        // Set instead of auth.bearer_token_file, never with it, so not in the sample above.
        keys.insert("auth.token_ssm_parameter".into());
        keys
    }

    /// Backticked keys in a markdown table's first cell; `.max` continues the previous key.
    fn readme_table_keys(text: &str) -> std::collections::BTreeSet<String> {
        let mut keys = std::collections::BTreeSet::new();
        let start = text.find("| key | default | meaning |").expect("the README has the config table");
        for line in text[start..].lines().skip(2).take_while(|l| l.starts_with('|')) {
            let cell = line.split('|').nth(1).unwrap_or_default();
            let mut previous = String::new();
            for token in cell.split('`').skip(1).step_by(2) {
                let key = match token.strip_prefix('.') {
                    Some(rest) => {
                        format!("{}.{rest}", previous.rsplit_once('.').map(|(p, _)| p).unwrap_or_default())
                    }
                    None => token.to_string(),
                };
                previous = key.clone();
                keys.insert(key);
            }
        }
        keys
    }

    #[test]
    fn readme_config_table_lists_exactly_the_keys_the_binary_accepts() {
        let readme = include_str!("../../README.md");
        assert_eq!(readme_table_keys(readme), accepted_keys());
    }

    #[test]
    fn config_keys_named_in_docs_exist() {
        let accepted = accepted_keys();
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs");
        let mut checked = 0;
        for entry in std::fs::read_dir(&dir).expect("docs/") {
            let path = entry.unwrap().path();
            if path.extension().and_then(|e| e.to_str()) != Some("md") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for token in text.split('`').skip(1).step_by(2) {
                let token = token.trim();
                let is_key = [
                    "server.",
                    "auth.",
                    "aws.",
                    "kubernetes.",
                    "timing.",
                    "pools.",
                    "interruption.",
                    "cloudwatch.",
                    "prometheus.",
                ]
                .iter()
                .any(|p| token.starts_with(p))
                    && token
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.' || c == '<' || c == '>');
                let is_file = [".rs", ".md", ".yaml", ".yml", ".json", ".toml", ".sh", ".py"]
                    .iter()
                    .any(|e| token.ends_with(e));
                if !is_key || is_file {
                    continue;
                }
                // Any pool placeholder (`pools.<p>.min`) or the example pool means "a pool".
                let key = match token.strip_prefix("pools.<").and_then(|rest| rest.split_once(">.")) {
                    Some((_, field)) => format!("pools.<name>.{field}"),
                    None => token.replace("pools.workers.", "pools.<name>."),
                };
                let known =
                    accepted.contains(&key) || accepted.iter().any(|a| a.starts_with(&format!("{key}.")));
                assert!(
                    known,
                    "{} names config key `{token}`, which the binary does not accept",
                    path.display()
                );
                checked += 1;
            }
        }
        assert!(checked > 10, "docs name config keys; found only {checked}");
    }

    #[test]
    fn every_key_in_the_shipped_example_is_accepted_even_commented_ones() {
        let text = include_str!("../../deploy/config.toml");
        let uncommented: String = text
            .lines()
            .map(|l| match l.strip_prefix("# ") {
                Some(rest)
                    if rest
                        .split_once(" = ")
                        .is_some_and(|(k, _)| k.chars().all(|c| c.is_ascii_lowercase() || c == '_')) =>
                {
                    rest
                }
                _ => l,
            })
            .collect::<Vec<_>>()
            .join("\n");
        // Under the stack's SSM layer, as the Deployment reads it.
        let layers = vec![
            (
                ConfigSource::Parameter("/k3s-autoscaler/prod/config".into()),
                crate::config::fixture::stack_layer(),
            ),
            (ConfigSource::File("deploy/config.toml".into()), uncommented),
        ];
        let err = Config::from_layers(&layers, Vec::new()).unwrap_err().to_string();
        // Only the in-cluster secret files are missing here; no key is unknown.
        assert!(!err.contains("unknown field"), "{err}");
        assert!(err.contains("/etc/k3s-autoscaler/events-token"), "{err}");
    }
}
