//! The configuration file (TOML) with environment overrides, validated into typed settings.
//!
//! Every problem is reported at once, each naming its key (`pools.workers.min: 5 is above
//! max 3`), so an operator fixes a file in one pass. Secrets are read from files and never
//! printed: `check-config` shows them as `<redacted>`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize, Serializer};
use thiserror::Error;

use crate::core::interruption::RebalanceMode;
use crate::core::model::{CapacityPreference, PoolPolicy};
use crate::secrets::TokenFile;

/// Prefix of environment overrides: `K3S_AUTOSCALER__POOLS__WORKERS__MAX=8`.
pub const ENV_PREFIX: &str = "K3S_AUTOSCALER__";

/// Why a configuration could not be used.
#[derive(Debug, Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown or mistyped keys.
    #[error("config file {path} is not valid: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What the parser said, with line and key.
        message: String,
    },
    /// Keys that parse but make no sense, one line each.
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

/// A secret read from a file; prints as `<redacted>` everywhere.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value (tests and token files).
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }
    /// The secret itself, for constant-time comparison only.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("<redacted>")
    }
}

impl Serialize for Secret {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str("<redacted>")
    }
}

// === raw file shape ===

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    cluster_id: String,
    #[serde(default = "default_pool_name")]
    default_pool: String,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    auth: RawAuth,
    aws: RawAws,
    #[serde(default)]
    kubernetes: RawKubernetes,
    #[serde(default)]
    timing: RawTiming,
    #[serde(default)]
    interruption: RawInterruption,
    #[serde(default)]
    cloudwatch: RawCloudWatch,
    #[serde(default)]
    drain: RawDrain,
    #[serde(default)]
    pools: BTreeMap<String, RawPool>,
    #[serde(default)]
    alertmanager: RawAlertmanager,
    #[serde(default)]
    prometheus: RawPrometheus,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrometheus {
    url: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAlertmanager {
    #[serde(default)]
    urls: Vec<String>,
    sync_interval: Option<String>,
    timeout: Option<String>,
    bearer_token_file: Option<PathBuf>,
    basic_username: Option<String>,
    basic_password_file: Option<PathBuf>,
}

/// Default limit per Alertmanager request (or the sync interval, if shorter).
const DEFAULT_ALERTMANAGER_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDrain {
    #[serde(default = "default_movable_system_workloads")]
    movable_system_workloads: Vec<String>,
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
struct RawInterruption {
    #[serde(default = "default_rebalance")]
    rebalance: RebalanceMode,
    #[serde(default = "default_max_rebalance_per_pool")]
    max_rebalance_per_pool: u32,
    queue_url: Option<String>,
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
struct RawCloudWatch {
    log_group: Option<String>,
    log_stream: Option<String>,
}

fn default_pool_name() -> String {
    "workers".into()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawServer {
    #[serde(default = "default_listen")]
    listen: String,
    #[serde(default = "default_body_limit")]
    body_limit_bytes: u64,
    #[serde(default = "default_header_read_timeout")]
    header_read_timeout: String,
    #[serde(default = "default_body_read_timeout")]
    body_read_timeout: String,
    #[serde(default = "default_request_timeout")]
    request_timeout: String,
    #[serde(default = "default_max_concurrent_requests")]
    max_concurrent_requests: u32,
    #[serde(default = "default_max_connections")]
    max_connections: u32,
    #[serde(default = "default_readiness_interval")]
    readiness_interval: String,
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
struct RawAuth {
    bearer_token_file: Option<PathBuf>,
    basic_username: Option<String>,
    basic_password_file: Option<PathBuf>,
    events_token_file: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawAws {
    region: String,
    endpoint_url: Option<String>,
    table: String,
    #[serde(default = "default_call_timeout")]
    call_timeout: String,
}

fn default_call_timeout() -> String {
    "3s".into()
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKubernetes {
    kubeconfig: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTiming {
    #[serde(default = "default_signal_ttl")]
    signal_ttl: String,
    #[serde(default = "default_lease_ttl")]
    lease_ttl: String,
    #[serde(default = "default_sweep_interval")]
    sweep_interval: String,
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
struct RawPool {
    min: u32,
    max: u32,
    #[serde(default = "default_max_step")]
    max_step: u32,
    #[serde(default = "default_scale_up_cooldown")]
    scale_up_cooldown: String,
    #[serde(default = "default_scale_down_cooldown")]
    scale_down_cooldown: String,
    launch_template: String,
    #[serde(default = "default_template_version")]
    launch_template_version: String,
    #[serde(default = "default_capacity")]
    capacity: CapacityPreference,
    #[serde(default = "default_capacity_backoff")]
    capacity_backoff: String,
    #[serde(default = "default_join_timeout")]
    join_timeout: String,
    #[serde(default = "default_drain_timeout")]
    drain_timeout: String,
    #[serde(default = "default_max_unready_share")]
    max_unready_share: f64,
    #[serde(default = "default_repair_after")]
    repair_after: String,
    #[serde(default)]
    subnets: BTreeMap<String, String>,
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

// === validated settings ===

/// The validated configuration the service runs with.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Names the cluster in tags, labels and the table's partition key.
    pub cluster_id: String,
    /// Pool for alerts without a `pool` label.
    pub default_pool: String,
    /// Compute and record every decision, but write nothing to EC2 or Kubernetes.
    pub dry_run: bool,
    /// HTTP listener.
    pub server: ServerConfig,
    /// Webhook credentials.
    pub auth: AuthConfig,
    /// AWS clients.
    pub aws: AwsConfig,
    /// Kubernetes client.
    pub kubernetes: KubernetesConfig,
    /// Signal, lease and sweep timings.
    pub timing: TimingConfig,
    /// How EventBridge interruption notices are handled.
    pub interruption: InterruptionConfig,
    /// Where scaling events are also sent, if anywhere.
    pub cloudwatch: Option<CloudWatchConfig>,
    /// What a drain may move.
    pub drain: DrainConfig,
    /// Node pools by name.
    pub pools: BTreeMap<String, PoolConfig>,
    /// Alertmanager's API, whose view the stored signals follow.
    pub alertmanager: AlertmanagerConfig,
    /// Prometheus's API, which `doctor` asks whether the scaling rules are loaded.
    pub prometheus: PrometheusConfig,
}

/// Prometheus, as `doctor` reaches it; the service itself never calls it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PrometheusConfig {
    /// Base URL (`http://prometheus:9090`); none: `doctor` skips the rules check.
    pub url: Option<String>,
}

/// Alertmanager's API v2: each sweep the stored signals are checked against what its replicas
/// report as active, silenced and inhibited (see `core::sync`).
#[derive(Debug, Clone, Serialize)]
pub struct AlertmanagerConfig {
    /// One base URL per replica (`http://alertmanager:9093`); empty: webhook only.
    pub urls: Vec<String>,
    /// How often the replicas are read.
    #[serde(serialize_with = "as_humantime")]
    pub sync_interval: Duration,
    /// Limit per request; a slower replica counts as unreachable.
    #[serde(serialize_with = "as_humantime")]
    pub timeout: Duration,
    /// File the API bearer token was read from.
    pub bearer_token_file: Option<PathBuf>,
    /// The API bearer token.
    pub bearer_token: Option<Secret>,
    /// Basic-auth user name for the API.
    pub basic_username: Option<String>,
    /// File the basic-auth password was read from.
    pub basic_password_file: Option<PathBuf>,
    /// The basic-auth password.
    pub basic_password: Option<Secret>,
}

impl AlertmanagerConfig {
    /// The `Authorization` header value for the API, if credentials are set.
    pub fn authorization(&self) -> Option<String> {
        use base64::Engine;
        if let Some(token) = &self.bearer_token {
            return Some(format!("Bearer {}", token.expose()));
        }
        let (user, password) = (self.basic_username.as_ref()?, self.basic_password.as_ref()?);
        let pair = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{}", password.expose()));
        Some(format!("Basic {pair}"))
    }
}

/// The shipped alertmanager/alertmanager.yml timings of the scaling route; a unit test keeps
/// them equal to the file.
pub const SHIPPED_REPEAT_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// See [`SHIPPED_REPEAT_INTERVAL`].
pub const SHIPPED_GROUP_INTERVAL: Duration = Duration::from_secs(60);

/// Drain settings shared by all pools.
#[derive(Debug, Clone, Serialize)]
pub struct DrainConfig {
    /// `namespace/name` of Deployments whose pods drain like ordinary replicated pods although
    /// they run in kube-system with a critical priority and emptyDir scratch volumes (K3s's
    /// add-ons); empty: every such pod holds its node.
    pub movable_system_workloads: Vec<String>,
}

/// Handling of `POST /v1/events/ec2` notices.
#[derive(Debug, Clone, Serialize)]
pub struct InterruptionConfig {
    /// What a Rebalance Recommendation does; spot interruption warnings always drain and replace.
    pub rebalance: RebalanceMode,
    /// How many instances of one pool rebalance recommendations may hold out of service
    /// (cordoned) at once: EC2 cannot confirm a rebalance, so this bounds what forged ones do.
    pub max_rebalance_per_pool: u32,
    /// The SQS queue EventBridge delivers EC2 notices to; none: no poller (notices arrive
    /// only through `POST /v1/events/ec2`).
    pub queue_url: Option<String>,
}

/// CloudWatch Logs destination of the scaling events (one JSON record each).
#[derive(Debug, Clone, Serialize)]
pub struct CloudWatchConfig {
    /// Log group; must exist (infra creates it with its retention).
    pub log_group: String,
    /// Log stream; created when missing.
    pub log_stream: String,
}

/// HTTP listener settings.
#[derive(Debug, Clone, Serialize)]
pub struct ServerConfig {
    /// Address to bind.
    pub listen: SocketAddr,
    /// Largest request body accepted.
    pub body_limit_bytes: usize,
    /// Time a client has to send a request's headers; then the connection is closed.
    #[serde(serialize_with = "as_humantime")]
    pub header_read_timeout: Duration,
    /// Time a client has to send a whole request body (a hard deadline, not an idle timer).
    #[serde(serialize_with = "as_humantime")]
    pub body_read_timeout: Duration,
    /// Time a request may take from its headers to the answer (503 after it).
    #[serde(serialize_with = "as_humantime")]
    pub request_timeout: Duration,
    /// Requests handled at once (probes excluded); more are refused with 503 at once.
    pub max_concurrent_requests: usize,
    /// Open connections at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// How often the readiness check asks the state store; `/readyz` answers from its result.
    #[serde(serialize_with = "as_humantime")]
    pub readiness_interval: Duration,
}

/// Credentials the webhook accepts; at least one is required.
#[derive(Debug, Clone, Default, Serialize)]
pub struct AuthConfig {
    /// File the bearer tokens are read from (one per line, re-read when it changes).
    pub bearer_token_file: Option<PathBuf>,
    /// The bearer tokens of `/v1/alerts`.
    pub bearer_token: Option<TokenFile>,
    /// Basic-auth user name.
    pub basic_username: Option<String>,
    /// File the basic-auth password was read from.
    pub basic_password_file: Option<PathBuf>,
    /// The basic-auth password.
    pub basic_password: Option<Secret>,
    /// File of the tokens `POST /v1/events/ec2` accepts; without it that route is not served.
    pub events_token_file: Option<PathBuf>,
    /// The bearer tokens of `/v1/events/ec2`, never accepted on `/v1/alerts` (nor the reverse).
    pub events_token: Option<TokenFile>,
}

/// AWS client settings.
#[derive(Debug, Clone, Serialize)]
pub struct AwsConfig {
    /// Region of the cluster.
    pub region: String,
    /// Endpoint override for local stacks (moto).
    pub endpoint_url: Option<String>,
    /// DynamoDB table.
    pub table: String,
    /// Per-call timeout.
    #[serde(serialize_with = "as_humantime")]
    pub call_timeout: Duration,
}

/// Kubernetes client settings.
#[derive(Debug, Clone, Default, Serialize)]
pub struct KubernetesConfig {
    /// Kubeconfig path; in-cluster config (or `KUBECONFIG`) when absent.
    pub kubeconfig: Option<PathBuf>,
}

/// Timings shared by all pools.
#[derive(Debug, Clone, Serialize)]
pub struct TimingConfig {
    /// How long a firing alert stays active without a repeat.
    #[serde(serialize_with = "as_humantime")]
    pub signal_ttl: Duration,
    /// Lease duration on a pool's state.
    #[serde(serialize_with = "as_humantime")]
    pub lease_ttl: Duration,
    /// Sweeper period.
    #[serde(serialize_with = "as_humantime")]
    pub sweep_interval: Duration,
}

/// One pool's settings.
#[derive(Debug, Clone, Serialize)]
pub struct PoolConfig {
    /// Lower bound of workers.
    pub min: u32,
    /// Upper bound of workers.
    pub max: u32,
    /// Largest step per action.
    pub max_step: u32,
    /// Quiet time after a scale-up before the next scale-up.
    #[serde(serialize_with = "as_humantime")]
    pub scale_up_cooldown: Duration,
    /// Quiet time after any action before a scale-down.
    #[serde(serialize_with = "as_humantime")]
    pub scale_down_cooldown: Duration,
    /// Worker launch template, by id (`lt-…`) or name.
    pub launch_template: String,
    /// Launch template version, a number: `$Latest`/`$Default` would let whoever can add or
    /// promote a template version change every future node.
    pub launch_template_version: String,
    /// Markets to buy.
    pub capacity: CapacityPreference,
    /// How long a failing (zone, market) is skipped.
    #[serde(serialize_with = "as_humantime")]
    pub capacity_backoff: Duration,
    /// Time a new instance has to become a Ready node.
    #[serde(serialize_with = "as_humantime")]
    pub join_timeout: Duration,
    /// Time a drain may take before it is aborted.
    #[serde(serialize_with = "as_humantime")]
    pub drain_timeout: Duration,
    /// Above this share of NotReady nodes, no scale-down.
    pub max_unready_share: f64,
    /// A node NotReady this long is replaced (node repair); `None` (`"off"`) turns it off.
    #[serde(serialize_with = "as_humantime_or_off")]
    pub repair_after: Option<Duration>,
    /// Zone → subnet.
    pub subnets: BTreeMap<String, String>,
}

fn as_humantime_or_off<S: Serializer>(d: &Option<Duration>, serializer: S) -> Result<S::Ok, S::Error> {
    match d {
        Some(d) => as_humantime(d, serializer),
        None => serializer.serialize_str("off"),
    }
}

fn as_humantime<S: Serializer>(d: &Duration, serializer: S) -> Result<S::Ok, S::Error> {
    serializer.serialize_str(&humantime::format_duration(*d).to_string())
}

impl Config {
    /// Loads `path`, applies `K3S_AUTOSCALER__…` overrides from `env`, reads the secret files
    /// and validates everything.
    pub fn load(path: &Path, env: impl IntoIterator<Item = (String, String)>) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|source| ConfigError::Read { path: path.into(), source })?;
        Config::from_toml(&text, path, env)
    }

    /// Same as [`Config::load`] from text; `origin` names the file in errors.
    pub fn from_toml(
        text: &str,
        origin: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let parse_error = |message: String| ConfigError::Parse { path: origin.into(), message };
        let mut table: toml::Table = toml::from_str(text).map_err(|e| parse_error(e.to_string()))?;
        apply_env_overrides(&mut table, env).map_err(parse_error)?;
        let raw: RawConfig = table.try_into().map_err(|e: toml::de::Error| parse_error(e.to_string()))?;
        raw.validate()
    }

    /// The pool policies the decision core enforces.
    pub fn policy(&self, pool: &str) -> Option<PoolPolicy> {
        self.pools.get(pool).map(|p| PoolPolicy {
            name: pool.to_string(),
            min: p.min,
            max: p.max,
            max_step: p.max_step,
            scale_up_cooldown: p.scale_up_cooldown,
            scale_down_cooldown: p.scale_down_cooldown,
            subnets: p.subnets.iter().map(|(az, s)| (az.clone(), s.clone())).collect(),
            capacity: p.capacity,
            join_timeout: p.join_timeout,
            drain_timeout: p.drain_timeout,
            max_unready_share: p.max_unready_share,
            repair_after: p.repair_after,
        })
    }

    /// The effective configuration as TOML, secrets redacted (for `check-config`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
    }
}

/// Sets `a.b.c = value` for each `K3S_AUTOSCALER__A__B__C=value`. Values that parse as TOML
/// (numbers, booleans, arrays, quoted strings) keep their type; anything else is a string.
fn apply_env_overrides(
    table: &mut toml::Table,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<(), String> {
    let mut overrides: Vec<(String, String)> =
        env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX)).collect();
    overrides.sort();
    for (key, raw) in overrides {
        let path: Vec<String> = key[ENV_PREFIX.len()..].split("__").map(str::to_lowercase).collect();
        if path.iter().any(String::is_empty) {
            return Err(format!("environment override {key} has an empty key segment"));
        }
        let value = toml::from_str::<toml::Table>(&format!("v = {raw}"))
            .ok()
            .and_then(|mut t| t.remove("v"))
            .unwrap_or_else(|| toml::Value::String(raw.clone()));
        let (last, parents) = path.split_last().expect("path has at least one segment");
        let mut cursor = &mut *table;
        for segment in parents {
            let entry =
                cursor.entry(segment.clone()).or_insert_with(|| toml::Value::Table(toml::Table::new()));
            cursor = entry
                .as_table_mut()
                .ok_or_else(|| format!("environment override {key}: `{segment}` is not a table"))?;
        }
        cursor.insert(last.clone(), value);
    }
    Ok(())
}

/// Collects problems as `key: problem` lines.
#[derive(Default)]
struct Problems(Vec<String>);

impl Problems {
    fn add(&mut self, key: &str, problem: impl fmt::Display) {
        self.0.push(format!("{key}: {problem}"));
    }

    fn duration(&mut self, key: &str, text: &str) -> Duration {
        match humantime::parse_duration(text) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                self.add(key, "must be longer than zero");
                Duration::ZERO
            }
            Err(e) => {
                self.add(key, format!("{text:?} is not a duration like \"30s\" or \"5m\" ({e})"));
                Duration::ZERO
            }
        }
    }

    fn token_file(&mut self, key: &str, path: &Path) -> Option<TokenFile> {
        TokenFile::load(path).map_err(|problem| self.add(key, problem)).ok()
    }

    fn secret_file(&mut self, key: &str, path: &Path) -> Option<Secret> {
        match std::fs::read_to_string(path) {
            Ok(text) if text.trim().is_empty() => {
                self.add(key, format!("{} is empty", path.display()));
                None
            }
            Ok(text) => Some(Secret(text.trim().to_string())),
            Err(e) => {
                self.add(key, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }
}

impl RawConfig {
    fn validate(self) -> Result<Config, ConfigError> {
        let mut p = Problems::default();
        if !is_identifier(&self.cluster_id) {
            p.add("cluster_id", "must be 1-63 characters of a-z, 0-9 and '-'");
        }
        let listen = self.server.listen.parse::<SocketAddr>().unwrap_or_else(|e| {
            p.add(
                "server.listen",
                format!("{:?} is not an address like 0.0.0.0:8080 ({e})", self.server.listen),
            );
            SocketAddr::from(([0, 0, 0, 0], 8080))
        });
        if self.server.body_limit_bytes < 1024 {
            p.add("server.body_limit_bytes", "must be at least 1024");
        }
        let header_read_timeout = p.duration("server.header_read_timeout", &self.server.header_read_timeout);
        let body_read_timeout = p.duration("server.body_read_timeout", &self.server.body_read_timeout);
        let request_timeout = p.duration("server.request_timeout", &self.server.request_timeout);
        let readiness_interval = p.duration("server.readiness_interval", &self.server.readiness_interval);
        if self.server.max_concurrent_requests == 0 {
            p.add("server.max_concurrent_requests", "must be at least 1");
        }
        if self.server.max_connections < self.server.max_concurrent_requests {
            p.add("server.max_connections", "must be at least server.max_concurrent_requests");
        }
        let auth = self.auth.validate(&mut p);
        if self.aws.region.trim().is_empty() {
            p.add("aws.region", "must not be empty");
        }
        if self.aws.table.trim().is_empty() {
            p.add("aws.table", "must not be empty");
        }
        if let Some(url) = &self.aws.endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                p.add("aws.endpoint_url", format!("{url:?} must start with http:// or https://"));
            }
        }
        let aws = AwsConfig {
            region: self.aws.region,
            endpoint_url: self.aws.endpoint_url,
            table: self.aws.table,
            call_timeout: p.duration("aws.call_timeout", &self.aws.call_timeout),
        };
        let timing = TimingConfig {
            signal_ttl: p.duration("timing.signal_ttl", &self.timing.signal_ttl),
            lease_ttl: p.duration("timing.lease_ttl", &self.timing.lease_ttl),
            sweep_interval: p.duration("timing.sweep_interval", &self.timing.sweep_interval),
        };
        if self.pools.is_empty() {
            p.add("pools", "at least one pool is required, e.g. [pools.workers]");
        } else if !self.pools.contains_key(&self.default_pool) {
            p.add(
                "default_pool",
                format!("unknown pool {:?} (pools: {})", self.default_pool, keys(&self.pools)),
            );
        }
        let pools = self
            .pools
            .into_iter()
            .map(|(name, raw)| {
                let pool = raw.validate(&name, &mut p);
                (name, pool)
            })
            .collect();
        let cloudwatch = self.cloudwatch.validate(&mut p);
        let alertmanager = self.alertmanager.validate(timing.sweep_interval, &mut p);
        let drain = self.drain.validate(&mut p);
        if let Some(url) = &self.interruption.queue_url {
            if !url.starts_with("https://") && !url.starts_with("http://") {
                p.add(
                    "interruption.queue_url",
                    format!(
                        "{url:?} is not a queue URL like https://sqs.<region>.amazonaws.com/<account>/<name>"
                    ),
                );
            }
        }
        if let Some(url) = &self.prometheus.url {
            if !(url.starts_with("http://") || url.starts_with("https://")) || url.contains(['?', '#', ' ']) {
                p.add("prometheus.url", format!("{url:?} must be a base URL like http://prometheus:9090"));
            }
        }
        if !p.0.is_empty() {
            return Err(ConfigError::Invalid(p.0));
        }
        Ok(Config {
            cluster_id: self.cluster_id,
            default_pool: self.default_pool,
            dry_run: self.dry_run,
            server: ServerConfig {
                listen,
                body_limit_bytes: self.server.body_limit_bytes as usize,
                header_read_timeout,
                body_read_timeout,
                request_timeout,
                max_concurrent_requests: self.server.max_concurrent_requests as usize,
                max_connections: self.server.max_connections as usize,
                readiness_interval,
            },
            auth,
            aws,
            kubernetes: KubernetesConfig { kubeconfig: self.kubernetes.kubeconfig },
            timing,
            interruption: InterruptionConfig {
                rebalance: self.interruption.rebalance,
                max_rebalance_per_pool: self.interruption.max_rebalance_per_pool,
                queue_url: self.interruption.queue_url,
            },
            prometheus: PrometheusConfig { url: self.prometheus.url },
            cloudwatch,
            drain,
            pools,
            alertmanager,
        })
    }
}

impl RawAlertmanager {
    fn validate(self, sweep_interval: Duration, p: &mut Problems) -> AlertmanagerConfig {
        for (i, url) in self.urls.iter().enumerate() {
            let host = url.strip_prefix("http://").unwrap_or_default();
            if host.is_empty() || url.contains(['?', '#', ' ']) {
                p.add(
                    &format!("alertmanager.urls[{i}]"),
                    format!("{url:?} must be a base URL like http://alertmanager:9093 (plain HTTP)"),
                );
            }
        }
        let sync_interval = match &self.sync_interval {
            Some(text) => p.duration("alertmanager.sync_interval", text),
            None => sweep_interval,
        };
        let timeout = match &self.timeout {
            Some(text) => {
                let timeout = p.duration("alertmanager.timeout", text);
                if !sync_interval.is_zero() && timeout > sync_interval {
                    p.add("alertmanager.timeout", "must not be longer than alertmanager.sync_interval");
                }
                timeout
            }
            None => DEFAULT_ALERTMANAGER_TIMEOUT.min(sync_interval),
        };
        let bearer_token = self
            .bearer_token_file
            .as_deref()
            .and_then(|f| p.secret_file("alertmanager.bearer_token_file", f));
        let basic_password = self
            .basic_password_file
            .as_deref()
            .and_then(|f| p.secret_file("alertmanager.basic_password_file", f));
        if self.basic_username.is_some() != self.basic_password_file.is_some() {
            p.add("alertmanager", "set basic_username and basic_password_file together");
        }
        AlertmanagerConfig {
            urls: self.urls,
            sync_interval,
            timeout,
            bearer_token_file: self.bearer_token_file,
            bearer_token,
            basic_username: self.basic_username,
            basic_password_file: self.basic_password_file,
            basic_password,
        }
    }
}

impl Config {
    /// Settings that work but disagree with the shipped Alertmanager config, one line each
    /// (`check-config` prints them; `serve` logs them).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        let ttl = self.timing.signal_ttl;
        let shortest = SHIPPED_REPEAT_INTERVAL + SHIPPED_GROUP_INTERVAL;
        let fmt = |d: Duration| humantime::format_duration(d).to_string();
        if ttl < shortest {
            warnings.push(format!(
                "timing.signal_ttl {} is shorter than the shipped Alertmanager repeat_interval + group_interval ({}): live signals expire between repeats whenever Alertmanager's API cannot be read",
                fmt(ttl),
                fmt(shortest)
            ));
        } else if ttl > shortest * 2 {
            warnings.push(format!(
                "timing.signal_ttl {} is over twice the shipped Alertmanager repeat_interval + group_interval ({}): without Alertmanager's API a lost `resolved` post keeps scaling that long",
                fmt(ttl),
                fmt(shortest)
            ));
        }
        if self.alertmanager.urls.is_empty() {
            warnings.push("alertmanager.urls is empty: a silence or a lost `resolved` post is only noticed when timing.signal_ttl runs out".into());
        }
        warnings
    }
}

impl RawDrain {
    fn validate(self, p: &mut Problems) -> DrainConfig {
        for entry in &self.movable_system_workloads {
            let valid = entry.split_once('/').is_some_and(|(ns, name)| {
                !ns.is_empty()
                    && !name.is_empty()
                    && !name.contains('/')
                    && !entry.contains(char::is_whitespace)
            });
            if !valid {
                p.add("drain.movable_system_workloads", format!("{entry:?} is not \"namespace/deployment\""));
            }
        }
        DrainConfig { movable_system_workloads: self.movable_system_workloads }
    }
}

impl RawCloudWatch {
    fn validate(self, p: &mut Problems) -> Option<CloudWatchConfig> {
        match (self.log_group, self.log_stream) {
            (None, None) => None,
            (Some(group), Some(stream)) if !group.trim().is_empty() && !stream.trim().is_empty() => {
                Some(CloudWatchConfig { log_group: group, log_stream: stream })
            }
            _ => {
                p.add("cloudwatch", "set both log_group and log_stream (non-empty), or neither");
                None
            }
        }
    }
}

impl RawAuth {
    fn validate(self, p: &mut Problems) -> AuthConfig {
        let bearer_token =
            self.bearer_token_file.as_deref().and_then(|f| p.token_file("auth.bearer_token_file", f));
        let events_token =
            self.events_token_file.as_deref().and_then(|f| p.token_file("auth.events_token_file", f));
        if let (Some(alerts), Some(events)) = (&bearer_token, &events_token) {
            if alerts.shares_a_token_with(events) {
                p.add(
                    "auth.events_token_file",
                    "holds a token of auth.bearer_token_file; the EC2 notices route needs a credential of its own",
                );
            }
        }
        let basic_password =
            self.basic_password_file.as_deref().and_then(|f| p.secret_file("auth.basic_password_file", f));
        match (&self.basic_username, &self.basic_password_file) {
            (Some(_), None) => p.add("auth.basic_password_file", "required when basic_username is set"),
            (None, Some(_)) => p.add("auth.basic_username", "required when basic_password_file is set"),
            _ => {}
        }
        if self.bearer_token_file.is_none() && self.basic_username.is_none() {
            p.add("auth", "set bearer_token_file and/or basic_username + basic_password_file; the webhook never runs open");
        }
        AuthConfig {
            bearer_token_file: self.bearer_token_file,
            bearer_token,
            basic_username: self.basic_username,
            basic_password_file: self.basic_password_file,
            basic_password,
            events_token_file: self.events_token_file,
            events_token,
        }
    }
}

impl RawPool {
    fn validate(self, name: &str, p: &mut Problems) -> PoolConfig {
        let key = |field: &str| format!("pools.{name}.{field}");
        if !is_identifier(name) {
            p.add(&format!("pools.{name}"), "pool names must be 1-63 characters of a-z, 0-9 and '-'");
        }
        if self.min > self.max {
            p.add(&key("min"), format!("{} is above max {}", self.min, self.max));
        }
        if self.max_step == 0 {
            p.add(&key("max_step"), "must be at least 1");
        }
        if self.launch_template.trim().is_empty() {
            p.add(&key("launch_template"), "must name a launch template (id or name)");
        }
        if !is_pinned_version(&self.launch_template_version) {
            p.add(
                &key("launch_template_version"),
                format!(
                    "{:?} is not a version number; pin one (\"$Latest\" and \"$Default\" follow whoever changes the template)",
                    self.launch_template_version
                ),
            );
        }
        if !(0.0..=1.0).contains(&self.max_unready_share) {
            p.add(
                &key("max_unready_share"),
                format!("{} is not a share between 0 and 1", self.max_unready_share),
            );
        }
        if self.subnets.is_empty() {
            p.add(&key("subnets"), "no subnet for any availability zone; add \"<az>\" = \"subnet-…\"");
        }
        for (az, subnet) in &self.subnets {
            if subnet.trim().is_empty() {
                p.add(&key(&format!("subnets.{az}")), "no subnet for this availability zone");
            }
        }
        PoolConfig {
            min: self.min,
            max: self.max,
            max_step: self.max_step,
            scale_up_cooldown: p.duration(&key("scale_up_cooldown"), &self.scale_up_cooldown),
            scale_down_cooldown: p.duration(&key("scale_down_cooldown"), &self.scale_down_cooldown),
            launch_template: self.launch_template,
            launch_template_version: self.launch_template_version,
            capacity: self.capacity,
            capacity_backoff: p.duration(&key("capacity_backoff"), &self.capacity_backoff),
            join_timeout: p.duration(&key("join_timeout"), &self.join_timeout),
            drain_timeout: p.duration(&key("drain_timeout"), &self.drain_timeout),
            max_unready_share: self.max_unready_share,
            repair_after: match self.repair_after.trim() {
                "off" => None,
                text => Some(p.duration(&key("repair_after"), text)),
            },
            subnets: self.subnets,
        }
    }
}

fn is_pinned_version(text: &str) -> bool {
    !text.is_empty() && text.len() <= 18 && text.bytes().all(|b| b.is_ascii_digit()) && !text.starts_with('0')
}

fn is_identifier(text: &str) -> bool {
    (1..=63).contains(&text.len())
        && text.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !text.starts_with('-')
}

fn keys<V>(map: &BTreeMap<String, V>) -> String {
    map.keys().cloned().collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        dir: tempfile::TempDir,
    }

    impl Fixture {
        fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            std::fs::write(dir.path().join("token"), "s3cret-token\n").unwrap();
            Fixture { dir }
        }
        fn toml(&self, extra_pool: &str) -> String {
            format!(
                r#"
cluster_id = "demo"
[auth]
bearer_token_file = "{token}"
[aws]
region = "us-east-1"
table = "t"
[pools.workers]
min = 1
max = 4
launch_template = "lt-1"
{extra_pool}
[pools.workers.subnets]
"us-east-1a" = "subnet-a"
"#,
                token = self.dir.path().join("token").display()
            )
        }
        fn load(&self, text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
            let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
            Config::from_toml(text, Path::new("test.toml"), env)
        }
    }

    #[test]
    fn minimal_file_gets_documented_defaults() {
        let f = Fixture::new();
        let c = f.load(&f.toml(""), &[]).unwrap();
        let pool = &c.pools["workers"];
        assert_eq!(pool.scale_up_cooldown, Duration::from_secs(180));
        assert_eq!(pool.join_timeout, Duration::from_secs(600));
        assert_eq!(pool.drain_timeout, Duration::from_secs(300));
        assert_eq!(pool.max_unready_share, 0.45);
        assert_eq!(pool.repair_after, Some(Duration::from_secs(600)));
        assert_eq!(c.timing.sweep_interval, Duration::from_secs(15));
        assert!(c.auth.bearer_token.as_ref().unwrap().accepts(b"s3cret-token"));
        assert!(c.auth.events_token.is_none(), "no notices route unless it has its own token");
        assert_eq!(c.server.header_read_timeout, Duration::from_secs(5));
        assert_eq!(c.server.body_read_timeout, Duration::from_secs(10));
        assert_eq!(c.server.request_timeout, Duration::from_secs(20));
        assert_eq!((c.server.max_concurrent_requests, c.server.max_connections), (64, 1024));
        assert_eq!(c.server.readiness_interval, Duration::from_secs(5));
        assert_eq!(c.default_pool, "workers");
        assert_eq!(c.interruption.rebalance, RebalanceMode::CordonOnly);
        assert_eq!(c.interruption.max_rebalance_per_pool, 1);
        assert!(c.cloudwatch.is_none());
    }

    #[test]
    fn movable_system_workloads_default_to_the_k3s_addons_and_may_be_emptied() {
        let f = Fixture::new();
        let c = f.load(&f.toml(""), &[]).unwrap();
        assert_eq!(
            c.drain.movable_system_workloads,
            [
                "kube-system/coredns",
                "kube-system/metrics-server",
                "kube-system/local-path-provisioner",
                "kube-system/traefik"
            ]
        );
        let empty = format!("{}\n[drain]\nmovable_system_workloads = []\n", f.toml(""));
        assert!(f.load(&empty, &[]).unwrap().drain.movable_system_workloads.is_empty());
        let env = [("K3S_AUTOSCALER__DRAIN__MOVABLE_SYSTEM_WORKLOADS", r#"["apps/web"]"#)];
        assert_eq!(f.load(&f.toml(""), &env).unwrap().drain.movable_system_workloads, ["apps/web"]);
        let bad =
            format!("{}\n[drain]\nmovable_system_workloads = [\"coredns\", \"a/b/c\", \"/x\"]\n", f.toml(""));
        let message = f.load(&bad, &[]).unwrap_err().to_string();
        for entry in ["\"coredns\"", "\"a/b/c\"", "\"/x\""] {
            assert!(
                message.contains(&format!("drain.movable_system_workloads: {entry} is not")),
                "{message}"
            );
        }
    }

    #[test]
    fn repair_after_takes_a_duration_or_off() {
        let f = Fixture::new();
        let c = f.load(&f.toml("repair_after = \"off\""), &[]).unwrap();
        assert_eq!(c.pools["workers"].repair_after, None);
        assert!(c.to_redacted_toml().contains("repair_after = \"off\""));
        let c = f.load(&f.toml("repair_after = \"20m\""), &[]).unwrap();
        assert_eq!(c.policy("workers").unwrap().repair_after, Some(Duration::from_secs(1200)));
        let err = f.load(&f.toml("repair_after = \"never\""), &[]).unwrap_err().to_string();
        assert!(err.contains("pools.workers.repair_after: \"never\" is not a duration"), "{err}");
    }

    #[test]
    fn cloudwatch_needs_both_group_and_stream() {
        let f = Fixture::new();
        let half = f.toml("").replace("[aws]", "[cloudwatch]\nlog_group = \"/g\"\n[aws]");
        let err = f.load(&half, &[]).unwrap_err().to_string();
        assert!(err.contains("cloudwatch: set both log_group and log_stream"), "{err}");
        let both = f.toml("").replace(
            "[aws]",
            "[cloudwatch]\nlog_group = \"/g\"\nlog_stream = \"s\"\n[interruption]\nrebalance = \"replace\"\n[aws]",
        );
        let c = f.load(&both, &[]).unwrap();
        assert_eq!(c.cloudwatch.map(|w| (w.log_group, w.log_stream)), Some(("/g".into(), "s".into())));
        assert_eq!(c.interruption.rebalance, RebalanceMode::Replace);
    }

    #[test]
    fn environment_overrides_keys_with_types() {
        let f = Fixture::new();
        let c = f
            .load(
                &f.toml(""),
                &[
                    ("K3S_AUTOSCALER__POOLS__WORKERS__MAX", "9"),
                    ("K3S_AUTOSCALER__POOLS__WORKERS__SCALE_UP_COOLDOWN", "45s"),
                    ("K3S_AUTOSCALER__AWS__ENDPOINT_URL", "http://127.0.0.1:5000"),
                    ("K3S_AUTOSCALER__DRY_RUN", "true"),
                    ("UNRELATED", "x"),
                ],
            )
            .unwrap();
        assert_eq!(c.pools["workers"].max, 9);
        assert_eq!(c.pools["workers"].scale_up_cooldown, Duration::from_secs(45));
        assert_eq!(c.aws.endpoint_url.as_deref(), Some("http://127.0.0.1:5000"));
        assert!(c.dry_run);
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let f = Fixture::new();
        let text = f
            .toml("scale_down_cooldown = \"ten minutes\"\nmax_unready_share = 2.0")
            .replace("min = 1", "min = 7");
        let err = f.load(&text, &[("K3S_AUTOSCALER__DEFAULT_POOL", "gpu")]).unwrap_err().to_string();
        for expected in [
            "pools.workers.min: 7 is above max 4",
            "pools.workers.scale_down_cooldown: \"ten minutes\" is not a duration",
            "pools.workers.max_unready_share: 2 is not a share",
            "default_pool: unknown pool \"gpu\" (pools: workers)",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
    }

    #[test]
    fn missing_subnets_and_unreadable_token_are_named() {
        let f = Fixture::new();
        let text = f.toml("").replace("\"us-east-1a\" = \"subnet-a\"", "\"us-east-1a\" = \"\"");
        let text = text.replace("token\"", "missing-token\"");
        let err = f.load(&text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("pools.workers.subnets.us-east-1a: no subnet for this availability zone"),
            "{err}"
        );
        assert!(err.contains("auth.bearer_token_file: cannot read"), "{err}");
        let no_subnets = f.toml("").replace("[pools.workers.subnets]\n\"us-east-1a\" = \"subnet-a\"", "");
        let err = f.load(&no_subnets, &[]).unwrap_err().to_string();
        assert!(err.contains("pools.workers.subnets: no subnet for any availability zone"), "{err}");
    }

    #[test]
    fn unknown_keys_and_open_webhooks_are_refused() {
        let f = Fixture::new();
        let err = f.load(&f.toml("maxx = 3"), &[]).unwrap_err().to_string();
        assert!(err.contains("maxx"), "{err}");
        let open = f
            .toml("")
            .replace(&format!("bearer_token_file = \"{}\"", f.dir.path().join("token").display()), "");
        let err = f.load(&open, &[]).unwrap_err().to_string();
        assert!(err.contains("auth: set bearer_token_file"), "{err}");
        let half_basic = f.toml("").replace("[auth]", "[auth]\nbasic_username = \"am\"");
        assert!(f.load(&half_basic, &[]).unwrap_err().to_string().contains("basic_password_file: required"));
    }

    #[test]
    fn the_notices_route_may_not_share_the_alertmanager_token() {
        let f = Fixture::new();
        let events = f.dir.path().join("events-token");
        std::fs::write(&events, "other\ns3cret-token\n").unwrap();
        let text =
            f.toml("").replace("[aws]", &format!("events_token_file = \"{}\"\n[aws]", events.display()));
        let err = f.load(&text, &[]).unwrap_err().to_string();
        assert!(err.contains("auth.events_token_file: holds a token of auth.bearer_token_file"), "{err}");
        std::fs::write(&events, "other\n").unwrap();
        let c = f.load(&text, &[]).unwrap();
        let events = c.auth.events_token.unwrap();
        assert!(events.accepts(b"other") && !events.accepts(b"s3cret-token"));
    }

    #[test]
    fn the_launch_template_version_must_be_pinned() {
        let f = Fixture::new();
        assert_eq!(f.load(&f.toml(""), &[]).unwrap().pools["workers"].launch_template_version, "1");
        assert_eq!(
            f.load(&f.toml("launch_template_version = \"12\""), &[]).unwrap().pools["workers"]
                .launch_template_version,
            "12"
        );
        for floating in ["$Latest", "$Default", "", "0", "1.0"] {
            let text = f.toml(&format!("launch_template_version = \"{floating}\""));
            let err = f.load(&text, &[]).unwrap_err().to_string();
            assert!(err.contains("pools.workers.launch_template_version:"), "{floating}: {err}");
        }
    }

    #[test]
    fn server_limits_must_make_sense() {
        let f = Fixture::new();
        let text = f.toml("").replace(
            "[auth]",
            "[server]\nheader_read_timeout = \"0s\"\nmax_concurrent_requests = 0\nmax_connections = 0\n[auth]",
        );
        let err = f.load(&text, &[]).unwrap_err().to_string();
        for expected in [
            "server.header_read_timeout: must be longer than zero",
            "server.max_concurrent_requests: must be at least 1",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in:\n{err}");
        }
        let text = f.toml("").replace("[auth]", "[server]\nmax_connections = 10\n[auth]");
        let err = f.load(&text, &[]).unwrap_err().to_string();
        assert!(
            err.contains("server.max_connections: must be at least server.max_concurrent_requests"),
            "{err}"
        );
    }

    #[test]
    fn empty_token_file_is_refused() {
        let f = Fixture::new();
        std::fs::write(f.dir.path().join("token"), "\n").unwrap();
        assert!(f.load(&f.toml(""), &[]).unwrap_err().to_string().contains("is empty"));
    }

    #[test]
    fn redacted_output_hides_secrets_and_shows_effective_values() {
        let f = Fixture::new();
        let c = f.load(&f.toml(""), &[]).unwrap();
        let shown = c.to_redacted_toml();
        assert!(!shown.contains("s3cret-token"), "{shown}");
        assert!(shown.contains("bearer_token = \"<redacted>\""), "{shown}");
        assert!(shown.contains("scale_up_cooldown = \"3m\""), "{shown}");
        assert_eq!(format!("{:?}", c.auth.bearer_token), "Some(<redacted>)");
    }

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
                toml::Value::Table(table) if !prefix.ends_with(".subnets") => {
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
        let readme = include_str!("../README.md");
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
        let text = include_str!("../deploy/config.toml");
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
        let err = Config::from_toml(&uncommented, Path::new("deploy/config.toml"), Vec::new())
            .unwrap_err()
            .to_string();
        // Only the in-cluster secret files are missing here; no key is unknown.
        assert!(!err.contains("unknown field"), "{err}");
        assert!(err.contains("/etc/k3s-autoscaler/token"), "{err}");
    }

    #[test]
    fn alertmanager_section_defaults_to_webhook_only_and_the_sweep_interval() {
        let f = Fixture::new();
        let c = f.load(&f.toml(""), &[]).unwrap();
        assert!(c.alertmanager.urls.is_empty());
        assert_eq!(c.alertmanager.sync_interval, c.timing.sweep_interval);
        assert_eq!(c.alertmanager.timeout, Duration::from_secs(2));
        assert_eq!(c.alertmanager.authorization(), None);
        assert_eq!(c.timing.signal_ttl, Duration::from_secs(35 * 60));
        let text = f.toml("").replace(
            "[aws]",
            &format!(
                "[alertmanager]\nurls = [\"http://am-0:9093\", \"http://am-1:9093/\"]\nsync_interval = \"30s\"\nbearer_token_file = \"{}\"\n[aws]",
                f.dir.path().join("token").display()
            ),
        );
        let c = f.load(&text, &[]).unwrap();
        assert_eq!(c.alertmanager.urls.len(), 2);
        assert_eq!(c.alertmanager.sync_interval, Duration::from_secs(30));
        let fast = f.load(&text, &[("K3S_AUTOSCALER__ALERTMANAGER__SYNC_INTERVAL", "1s")]).unwrap();
        assert_eq!(
            fast.alertmanager.timeout,
            Duration::from_secs(1),
            "the default never exceeds the interval"
        );
        assert_eq!(c.alertmanager.authorization().as_deref(), Some("Bearer s3cret-token"));
        assert!(!c.to_redacted_toml().contains("s3cret-token"));
    }

    #[test]
    fn alertmanager_urls_and_timeout_are_checked() {
        let f = Fixture::new();
        let text = f.toml("").replace(
            "[aws]",
            "[alertmanager]\nurls = [\"am:9093\", \"https://am:9093\", \"http://am?x\"]\ntimeout = \"1m\"\n[aws]",
        );
        let err = f.load(&text, &[]).unwrap_err().to_string();
        for key in ["urls[0]", "urls[1]", "urls[2]", "alertmanager.timeout"] {
            assert!(err.contains(key), "{key}: {err}");
        }
    }

    #[test]
    fn check_config_warns_when_signal_ttl_disagrees_with_the_shipped_alertmanager() {
        let f = Fixture::new();
        let with = |ttl: &str| {
            let text = f.toml("").replace(
                "[aws]",
                &format!(
                    "[timing]\nsignal_ttl = \"{ttl}\"\n[alertmanager]\nurls = [\"http://am:9093\"]\n[aws]"
                ),
            );
            f.load(&text, &[]).unwrap().warnings()
        };
        assert!(with("35m").is_empty(), "{:?}", with("35m"));
        assert!(with("20m")[0].contains("shorter than"), "{:?}", with("20m"));
        assert!(with("2h")[0].contains("over twice"), "{:?}", with("2h"));
        let webhook_only = f.load(&f.toml(""), &[]).unwrap().warnings();
        assert!(webhook_only[0].contains("alertmanager.urls is empty"), "{webhook_only:?}");
    }

    #[test]
    fn the_shipped_alertmanager_timings_are_the_ones_the_warning_assumes() {
        let text = include_str!("../alertmanager/alertmanager.yml");
        let route = &text[text.find("receiver: k3s-autoscaler").expect("the scaling route")..];
        let value = |key: &str| {
            let line = route.lines().find(|l| l.trim_start().starts_with(key)).expect(key);
            humantime::parse_duration(line.split_once(':').unwrap().1.trim()).unwrap()
        };
        assert_eq!(value("repeat_interval:"), SHIPPED_REPEAT_INTERVAL);
        assert_eq!(value("group_interval:"), SHIPPED_GROUP_INTERVAL);
    }

    #[test]
    fn the_shipped_example_config_parses_apart_from_its_token_file() {
        let text = include_str!("../deploy/config.toml");
        let err =
            Config::from_toml(text, Path::new("deploy/config.toml"), Vec::new()).unwrap_err().to_string();
        // The example points at the in-cluster token paths, which do not exist here.
        assert_eq!(
            err,
            "invalid configuration:\n  auth.bearer_token_file: cannot read /etc/k3s-autoscaler/token: No such file or directory (os error 2)\n  auth.events_token_file: cannot read /etc/k3s-autoscaler/events-token: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn notice_queue_and_prometheus_urls_are_optional_and_checked() {
        let f = Fixture::new();
        let c = f.load(&f.toml(""), &[]).unwrap();
        assert_eq!((c.interruption.queue_url, c.prometheus.url), (None, None), "no poller, no rules check");
        let queue = "https://sqs.us-east-1.amazonaws.com/123456789012/k3s-autoscaler-demo-notices";
        let c = f
            .load(
                &f.toml(""),
                &[
                    ("K3S_AUTOSCALER__INTERRUPTION__QUEUE_URL", queue),
                    ("K3S_AUTOSCALER__PROMETHEUS__URL", "http://prometheus:9090"),
                ],
            )
            .unwrap();
        assert_eq!(c.interruption.queue_url.as_deref(), Some(queue));
        assert_eq!(c.prometheus.url.as_deref(), Some("http://prometheus:9090"));
        let err = f
            .load(
                &f.toml(""),
                &[
                    ("K3S_AUTOSCALER__INTERRUPTION__QUEUE_URL", "k3s-autoscaler-notices"),
                    ("K3S_AUTOSCALER__PROMETHEUS__URL", "prometheus:9090"),
                ],
            )
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("interruption.queue_url: \"k3s-autoscaler-notices\" is not a queue URL"),
            "{err}"
        );
        assert!(err.contains("prometheus.url: \"prometheus:9090\" must be a base URL"), "{err}");
    }
}
