//! The effective configuration: validated, typed settings the service runs with, loaded from
//! the file and the environment; `check-config` prints it with secrets redacted.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Serialize, Serializer};

use super::env::apply_env_overrides;
use super::file::RawConfig;
use super::{ConfigError, Secret};
use crate::core::interruption::RebalanceMode;
use crate::core::model::{CapacityPreference, PoolPolicy};
use crate::secrets::TokenFile;

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
    /// SSM SecureString holding the bearer tokens instead of a file (one per line).
    pub token_ssm_parameter: Option<String>,
    /// How often that parameter is read again, so a rotation needs no restart.
    #[serde(serialize_with = "as_humantime")]
    pub token_ssm_refresh_interval: Duration,
    /// The bearer tokens of `/v1/alerts` (from the file, or from SSM once loaded).
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
    /// Instance types one launch may use (CreateFleet overrides); empty: the launch
    /// template's own type. More types keep spot launches alive when one pool is short.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub instance_types: Vec<String>,
    /// Markets to buy.
    pub capacity: CapacityPreference,
    /// How long a failing (instance type, zone, market) offering is skipped.
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
    /// Hourly prices by instance type (`[pools.<name>.prices]`): a scale-down removes the
    /// most expensive of the equally safe nodes.
    pub prices: crate::core::prices::Prices,
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
    /// One TOML text (`origin` names it in errors) with the `K3S_AUTOSCALER__…` overrides of
    /// `env`, its secret files read and everything validated; [`Config::load_layers`] is
    /// what the binary uses.
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
            instance_types: p.instance_types.clone(),
            capacity: p.capacity,
            join_timeout: p.join_timeout,
            drain_timeout: p.drain_timeout,
            max_unready_share: p.max_unready_share,
            repair_after: p.repair_after,
            prices: p.prices.clone(),
        })
    }

    /// The effective configuration as TOML, secrets redacted (for `check-config`).
    pub fn to_redacted_toml(&self) -> String {
        toml::to_string_pretty(self).unwrap_or_else(|e| format!("# cannot render config: {e}\n"))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::fixture::Fixture;

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
    fn redacted_output_hides_secrets_and_shows_effective_values() {
        let f = Fixture::new();
        let c = f.load(&f.toml(""), &[]).unwrap();
        let shown = c.to_redacted_toml();
        assert!(!shown.contains("s3cret-token"), "{shown}");
        assert!(shown.contains("bearer_token = \"<redacted>\""), "{shown}");
        assert!(shown.contains("scale_up_cooldown = \"3m\""), "{shown}");
        assert_eq!(format!("{:?}", c.auth.bearer_token), "Some(<redacted>)");
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
        let text = include_str!("../../alertmanager/alertmanager.yml");
        let route = &text[text.find("receiver: k3s-autoscaler").expect("the scaling route")..];
        let value = |key: &str| {
            let line = route.lines().find(|l| l.trim_start().starts_with(key)).expect(key);
            humantime::parse_duration(line.split_once(':').unwrap().1.trim()).unwrap()
        };
        assert_eq!(value("repeat_interval:"), SHIPPED_REPEAT_INTERVAL);
        assert_eq!(value("group_interval:"), SHIPPED_GROUP_INTERVAL);
    }
}
