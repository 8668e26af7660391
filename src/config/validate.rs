//! Validation: the raw file shape becomes the effective settings, and every problem is
//! collected with its key (`pools.workers.min: 5 is above max 3`) so an operator fixes a
//! file in one pass.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use super::effective::{
    AlertmanagerConfig, AuthConfig, AwsConfig, CloudWatchConfig, Config, DrainConfig, InterruptionConfig,
    KubernetesConfig, PoolConfig, PrometheusConfig, ServerConfig, TimingConfig,
};
use super::file::{
    DEFAULT_ALERTMANAGER_TIMEOUT, RawAlertmanager, RawAuth, RawCloudWatch, RawConfig, RawDrain, RawPool,
};
use super::{ConfigError, Secret};
use crate::core::prices::{Prices, TypePrices};
use crate::secrets::TokenFile;

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
            Ok(text) => Some(Secret::new(text.trim())),
            Err(e) => {
                self.add(key, format!("cannot read {}: {e}", path.display()));
                None
            }
        }
    }
}

impl RawConfig {
    pub(super) fn validate(self) -> Result<Config, ConfigError> {
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

/// `auth.token_ssm_refresh_interval` by default: a rotated token is accepted within a minute.
const DEFAULT_TOKEN_REFRESH: &str = "60s";

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
        if let Some(name) = &self.token_ssm_parameter {
            if self.bearer_token_file.is_some() {
                p.add("auth.token_ssm_parameter", "set it or bearer_token_file, not both");
            }
            if let Some(problem) = super::parameter_name_problem(name) {
                p.add("auth.token_ssm_parameter", problem);
            }
        }
        let token_ssm_refresh_interval = p.duration(
            "auth.token_ssm_refresh_interval",
            self.token_ssm_refresh_interval.as_deref().unwrap_or(DEFAULT_TOKEN_REFRESH),
        );
        if self.token_ssm_refresh_interval.is_some() && self.token_ssm_parameter.is_none() {
            p.add("auth.token_ssm_refresh_interval", "only applies with auth.token_ssm_parameter");
        }
        let bearer = self.bearer_token_file.is_some() || self.token_ssm_parameter.is_some();
        if !bearer && self.basic_username.is_none() {
            p.add(
                "auth",
                "set bearer_token_file or token_ssm_parameter, and/or basic_username + basic_password_file;                  the webhook never runs open",
            );
        }
        AuthConfig {
            bearer_token_file: self.bearer_token_file,
            token_ssm_parameter: self.token_ssm_parameter,
            token_ssm_refresh_interval,
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
        let given = self.instance_types.is_some();
        let instance_types = self.instance_types.unwrap_or_default();
        check_instance_types(&key("instance_types"), given, &instance_types, p);
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
            instance_types,
            capacity: self.capacity,
            capacity_backoff: p.duration(&key("capacity_backoff"), &self.capacity_backoff),
            join_timeout: p.duration(&key("join_timeout"), &self.join_timeout),
            drain_timeout: p.duration(&key("drain_timeout"), &self.drain_timeout),
            max_unready_share: self.max_unready_share,
            repair_after: match self.repair_after.trim() {
                "off" => None,
                text => Some(p.duration(&key("repair_after"), text)),
            },
            prices: check_prices(&key("prices"), self.prices, p),
            subnets: self.subnets,
        }
    }
}

/// Each entry names an instance type and gives at least one finite price of zero or more.
fn check_prices(key: &str, prices: BTreeMap<String, TypePrices>, p: &mut Problems) -> Prices {
    for (name, entry) in &prices {
        if !is_instance_type(name) {
            p.add(key, format!("{name:?} is not an instance type name such as \"t3.small\""));
        }
        if entry.on_demand.is_none() && entry.spot.is_none() {
            p.add(&format!("{key}.{name}"), "give on_demand and/or spot, the price per hour");
        }
        for (market, price) in [("on_demand", entry.on_demand), ("spot", entry.spot)] {
            if let Some(price) = price.filter(|v| !v.is_finite() || *v < 0.0) {
                p.add(
                    &format!("{key}.{name}.{market}"),
                    format!("{price} is not a price (a number of zero or more)"),
                );
            }
        }
    }
    Prices(prices)
}

/// An empty list (when given), a repeated type or a name that is not `family.size` (such as
/// `t3.small`, `m7i-flex.large`) is a configuration error.
fn check_instance_types(key: &str, given: bool, types: &[String], p: &mut Problems) {
    if given && types.is_empty() {
        p.add(
            key,
            "empty; list at least one instance type, or leave the key out to use the launch template's",
        );
    }
    for (index, name) in types.iter().enumerate() {
        if !is_instance_type(name) {
            p.add(key, format!("{name:?} is not an instance type name such as \"t3.small\""));
        } else if types[..index].contains(name) {
            p.add(key, format!("{name:?} is listed twice"));
        }
    }
}

fn is_instance_type(name: &str) -> bool {
    let Some((family, size)) = name.split_once('.') else { return false };
    let part = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    name.len() <= 32 && family.starts_with(|c: char| c.is_ascii_lowercase()) && part(family) && part(size)
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
    use crate::config::fixture::Fixture;
    use crate::core::interruption::RebalanceMode;

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
    fn prices_are_optional_and_checked() {
        let f = Fixture::new();
        assert!(f.load(&f.toml(""), &[]).unwrap().pools["workers"].prices.0.is_empty());
        let priced = f.toml("[pools.workers.prices]\n\"t3.small\" = { on_demand = 0.0208, spot = 0.0075 }\n\"m7i.large\" = { on_demand = 0.1008 }");
        let c = f.load(&priced, &[]).unwrap();
        let prices = &c.pools["workers"].prices;
        assert_eq!(
            prices.hourly_micros(Some("m7i.large"), crate::core::model::Market::OnDemand),
            Some(100_800)
        );
        assert_eq!(c.policy("workers").unwrap().prices, *prices, "the decision core gets them");
        let bad = f.toml("[pools.workers.prices]\n\"t3 small\" = { on_demand = 1.0 }\n\"t3.micro\" = {}\n\"t3.nano\" = { spot = -1.0 }");
        let err = f.load(&bad, &[]).unwrap_err().to_string();
        for expected in [
            "pools.workers.prices: \"t3 small\" is not an instance type name",
            "pools.workers.prices.t3.micro: give on_demand and/or spot",
            "pools.workers.prices.t3.nano.spot: -1 is not a price",
        ] {
            assert!(err.contains(expected), "missing {expected:?} in {err}");
        }
        let unknown = f.toml("[pools.workers.prices]\n\"t3.small\" = { ondemand = 1.0 }");
        assert!(f.load(&unknown, &[]).unwrap_err().to_string().contains("unknown field `ondemand`"));
    }

    #[test]
    fn instance_types_are_optional_and_checked() {
        let f = Fixture::new();
        assert!(f.load(&f.toml(""), &[]).unwrap().pools["workers"].instance_types.is_empty());
        let three = f.toml("instance_types = [\"t3.small\", \"t3a.small\", \"m7i-flex.large\"]");
        assert_eq!(
            f.load(&three, &[]).unwrap().pools["workers"].instance_types,
            vec!["t3.small", "t3a.small", "m7i-flex.large"]
        );
        let policy = f.load(&three, &[]).unwrap().policy("workers").unwrap();
        assert_eq!(policy.instance_types.len(), 3);
        for (value, expected) in [
            ("[]", "pools.workers.instance_types: empty; list at least one instance type"),
            ("[\"t3.small\", \"t3.small\"]", "pools.workers.instance_types: \"t3.small\" is listed twice"),
            ("[\"t3small\"]", "pools.workers.instance_types: \"t3small\" is not an instance type name"),
            ("[\"T3.Small\"]", "\"T3.Small\" is not an instance type name"),
            ("[\"t3.\"]", "\"t3.\" is not an instance type name"),
            ("[\"3t.small\"]", "\"3t.small\" is not an instance type name"),
            ("[\"t3.small xl\"]", "\"t3.small xl\" is not an instance type name"),
        ] {
            let err = f.load(&f.toml(&format!("instance_types = {value}")), &[]).unwrap_err().to_string();
            assert!(err.contains(expected), "{value}: {err}");
        }
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
