//! Where the configuration comes from: layers given by `--config` (files, and SSM parameters
//! the stack writes), merged in order, then the environment layer over all of them.
//!
//! The stack knows the table, the launch template, the subnets, the queue and the log group,
//! and writes them to `/k3s-autoscaler/<cluster>/config`; the operator's file holds the rest.
//! `--config ssm:/k3s-autoscaler/prod/config --config /etc/k3s-autoscaler/config.toml` reads
//! both, the file winning key by key, so no value is typed twice.

use std::fmt;
use std::path::PathBuf;

use super::env::apply_env_overrides;
use super::file::RawConfig;
use super::{Config, ConfigError};
use crate::adapters::ssm::Parameters;
use crate::secrets::TokenFile;

/// Prefix of a `--config` value naming an SSM parameter instead of a file.
pub const SSM_PREFIX: &str = "ssm:";

/// One `--config` layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A TOML file.
    File(PathBuf),
    /// An SSM String parameter holding TOML.
    Parameter(String),
}

impl ConfigSource {
    /// `ssm:/name` is a parameter (its name checked as SSM does), anything else a file.
    pub fn parse(text: &str) -> Result<ConfigSource, String> {
        let Some(name) = text.strip_prefix(SSM_PREFIX) else {
            return if text.trim().is_empty() {
                Err("an empty --config value".into())
            } else {
                Ok(ConfigSource::File(PathBuf::from(text)))
            };
        };
        parameter_name_problem(name).map_or_else(|| Ok(ConfigSource::Parameter(name.into())), Err)
    }
}

impl fmt::Display for ConfigSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ConfigSource::File(path) => write!(f, "{}", path.display()),
            ConfigSource::Parameter(name) => write!(f, "{SSM_PREFIX}{name}"),
        }
    }
}

/// What is wrong with an SSM parameter name, if anything: a full path (`/a/b`), at most 1011
/// characters of letters, digits and `_.-/` (SSM's rules for a hierarchy name).
pub fn parameter_name_problem(name: &str) -> Option<String> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || "_.-/".contains(c);
    if !name.starts_with('/') || name.len() < 2 {
        Some(format!("SSM parameter name {name:?} must be a full path like /k3s-autoscaler/prod/config"))
    } else if name.len() > 1011 || !name.chars().all(allowed) {
        Some(format!(
            "SSM parameter name {:?} may hold only letters, digits and _.-/ (at most 1011)",
            crate::core::text::bounded(name, 80)
        ))
    } else {
        None
    }
}

/// Merges `upper` into `lower` key by key: tables merge, any other value replaces.
fn merge(lower: &mut toml::Table, upper: toml::Table) {
    for (key, value) in upper {
        match (lower.get_mut(&key), value) {
            (Some(toml::Value::Table(below)), toml::Value::Table(above)) => merge(below, above),
            (_, value) => {
                lower.insert(key, value);
            }
        }
    }
}

/// Parses each layer's text (an error names its source), merges them in order.
fn merged(layers: &[(ConfigSource, String)]) -> Result<toml::Table, ConfigError> {
    let mut table = toml::Table::new();
    for (source, text) in layers {
        let layer: toml::Table = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: source.to_string().into(), message: e.to_string() })?;
        merge(&mut table, layer);
    }
    Ok(table)
}

impl Config {
    /// The configuration of `layers` (later over earlier) with the environment over all;
    /// no I/O. Errors name the layer they come from; a key's problem names the key.
    pub fn from_layers(
        layers: &[(ConfigSource, String)],
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let origin: PathBuf =
            layers.iter().map(|(source, _)| source.to_string()).collect::<Vec<_>>().join(" + ").into();
        let mut table = merged(layers)?;
        apply_env_overrides(&mut table, env)
            .map_err(|message| ConfigError::Parse { path: origin.clone(), message })?;
        let raw: RawConfig = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse { path: origin, message: e.to_string() })?;
        raw.validate()
    }

    /// Reads every layer (files from disk, parameters from SSM through `parameters`), builds
    /// the configuration, and reads the webhook token from SSM when
    /// `auth.token_ssm_parameter` names one. A missing or unreadable layer or token refuses
    /// to start, naming it.
    pub async fn load_layers(
        sources: &[ConfigSource],
        env: Vec<(String, String)>,
        parameters: &dyn Parameters,
    ) -> Result<Config, ConfigError> {
        let mut layers = Vec::with_capacity(sources.len());
        for source in sources {
            let text = match source {
                ConfigSource::File(path) => std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.clone(), source })?,
                ConfigSource::Parameter(name) => parameters
                    .get(name)
                    .await
                    .map_err(|e| ConfigError::Parameter { name: name.clone(), message: e.to_string() })?,
            };
            layers.push((source.clone(), text));
        }
        let mut config = Config::from_layers(&layers, env)?;
        if let Some(name) = config.auth.token_ssm_parameter.clone() {
            let text = parameters
                .get(&name)
                .await
                .map_err(|e| ConfigError::Parameter { name: name.clone(), message: e.to_string() })?;
            let tokens = TokenFile::from_parameter(&name, &text)
                .map_err(|message| ConfigError::Parameter { name: name.clone(), message })?;
            if config.auth.events_token.as_ref().is_some_and(|events| events.shares_a_token_with(&tokens)) {
                return Err(ConfigError::Invalid(vec![format!(
                    "auth.events_token_file: holds a token of SSM parameter {name}; the EC2 notices route \
                     needs a credential of its own"
                )]));
            }
            config.auth.bearer_token = Some(tokens);
        }
        Ok(config)
    }

    /// The `[aws]` region and endpoint of the file layers and the environment, before any
    /// SSM layer is read: where the SSM client goes. `None` where not set (the AWS SDK's own
    /// chain then decides, e.g. `AWS_REGION`).
    pub fn bootstrap_aws(
        sources: &[ConfigSource],
        env: &[(String, String)],
    ) -> Result<(Option<String>, Option<String>), ConfigError> {
        let mut layers = Vec::new();
        for source in sources {
            if let ConfigSource::File(path) = source {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.clone(), source })?;
                layers.push((source.clone(), text));
            }
        }
        let mut table = merged(&layers)?;
        apply_env_overrides(&mut table, env.iter().cloned())
            .map_err(|message| ConfigError::Parse { path: "environment".into(), message })?;
        let aws = table.get("aws").and_then(toml::Value::as_table);
        let text = |key: &str| aws.and_then(|a| a.get(key)).and_then(toml::Value::as_str).map(str::to_string);
        Ok((text("region"), text("endpoint_url")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::ssm::fake::FakeParameters;
    use crate::config::fixture::Fixture;

    fn source(text: &str) -> ConfigSource {
        ConfigSource::parse(text).unwrap()
    }

    #[test]
    fn a_config_value_is_a_file_or_an_ssm_parameter_with_a_valid_name() {
        assert_eq!(
            source("/etc/k3s-autoscaler/config.toml"),
            ConfigSource::File("/etc/k3s-autoscaler/config.toml".into())
        );
        assert_eq!(
            source("ssm:/k3s-autoscaler/prod/config"),
            ConfigSource::Parameter("/k3s-autoscaler/prod/config".into())
        );
        assert_eq!(source("ssm:/k3s-autoscaler/prod/config").to_string(), "ssm:/k3s-autoscaler/prod/config");
        for bad in ["ssm:", "ssm:k3s/config", "ssm:/a b", "ssm:/a;rm", ""] {
            assert!(ConfigSource::parse(bad).is_err(), "{bad:?}");
        }
        assert!(ConfigSource::parse(&format!("ssm:/{}", "a".repeat(1011))).is_err());
    }

    #[test]
    fn later_layers_win_key_by_key_and_the_environment_wins_over_all() {
        let f = Fixture::new();
        let stack = "cluster_id = \"from-stack\"\n[aws]\nregion = \"us-west-2\"\ntable = \"stack-table\"\n\
                     [pools.workers]\nmin = 1\nmax = 9\nlaunch_template = \"lt-stack\"\n\
                     [pools.workers.subnets]\n\"us-east-1b\" = \"subnet-stack\"\n";
        let layers = vec![
            (source("ssm:/k3s-autoscaler/prod/config"), stack.to_string()),
            (source("/etc/k3s-autoscaler/config.toml"), f.toml("")),
        ];
        let c = Config::from_layers(&layers, [("K3S_AUTOSCALER__POOLS__WORKERS__MAX".into(), "7".into())])
            .unwrap();
        // The fixture file sets these too: it is the later layer.
        let file_only = Config::from_layers(&layers[1..], []).unwrap();
        assert_eq!(c.cluster_id, file_only.cluster_id);
        assert_eq!(c.aws.table, file_only.aws.table);
        assert_eq!(c.pools["workers"].max, 7, "the environment over both");
        // Tables merge: a subnet only the stack names is kept beside the file's.
        assert_eq!(c.pools["workers"].subnets.get("us-east-1b").map(String::as_str), Some("subnet-stack"));
        for (zone, subnet) in &file_only.pools["workers"].subnets {
            assert_eq!(c.pools["workers"].subnets.get(zone), Some(subnet));
        }
    }

    #[test]
    fn a_broken_layer_is_named_in_the_error() {
        let layers = vec![(source("ssm:/k3s-autoscaler/prod/config"), "cluster_id = ".to_string())];
        let error = Config::from_layers(&layers, []).unwrap_err().to_string();
        assert!(error.starts_with("config file ssm:/k3s-autoscaler/prod/config is not valid"), "{error}");
    }

    #[tokio::test]
    async fn layers_and_the_webhook_token_are_read_from_ssm() {
        let f = Fixture::new();
        let file = f.dir.path().join("config.toml");
        let text = f.toml("").replace(
            &format!("bearer_token_file = \"{}\"", f.dir.path().join("token").display()),
            "token_ssm_parameter = \"/k3s-autoscaler/prod/webhook-token\"",
        );
        std::fs::write(&file, text).unwrap();
        let ssm = FakeParameters::default();
        ssm.put("/k3s-autoscaler/prod/config", "[pools.workers]\nmax = 8\n");
        ssm.put("/k3s-autoscaler/prod/webhook-token", "old-token\nnew-token\n");
        let sources = [source("ssm:/k3s-autoscaler/prod/config"), ConfigSource::File(file.clone())];
        let c = Config::load_layers(&sources, vec![], &ssm).await.unwrap();
        let tokens = c.auth.bearer_token.as_ref().unwrap();
        assert!(tokens.accepts(b"old-token") && tokens.accepts(b"new-token"));
        assert!(!tokens.accepts(b"s3cret-token"));

        let missing = [source("ssm:/k3s-autoscaler/other/config"), ConfigSource::File(file.clone())];
        let error = Config::load_layers(&missing, vec![], &ssm).await.unwrap_err().to_string();
        assert!(error.contains("/k3s-autoscaler/other/config does not exist"), "{error}");

        ssm.put("/k3s-autoscaler/prod/webhook-token", "\n# nothing\n");
        let error = Config::load_layers(&sources, vec![], &ssm).await.unwrap_err().to_string();
        assert!(
            error.contains("/k3s-autoscaler/prod/webhook-token") && error.contains("no token"),
            "{error}"
        );

        ssm.down.store(true, std::sync::atomic::Ordering::SeqCst);
        let error = Config::load_layers(&sources, vec![], &ssm).await.unwrap_err().to_string();
        assert!(error.contains("could not be read"), "{error}");
    }

    /// Every `a.b.c` leaf key of a TOML text (tables flattened).
    fn leaf_keys(text: &str) -> std::collections::BTreeSet<String> {
        fn walk(prefix: &str, value: &toml::Value, keys: &mut std::collections::BTreeSet<String>) {
            match value {
                toml::Value::Table(table) => {
                    for (k, v) in table {
                        walk(&if prefix.is_empty() { k.clone() } else { format!("{prefix}.{k}") }, v, keys);
                    }
                }
                _ => {
                    keys.insert(prefix.to_string());
                }
            }
        }
        let mut keys = std::collections::BTreeSet::new();
        walk("", &toml::Value::Table(toml::from_str(text).unwrap()), &mut keys);
        keys
    }

    #[test]
    fn the_stack_layer_and_the_shipped_file_make_one_config_and_share_no_key() {
        let stack = crate::config::fixture::stack_layer();
        let file = include_str!("../../deploy/config.toml");
        let shared: Vec<String> = leaf_keys(&stack).intersection(&leaf_keys(file)).cloned().collect();
        assert!(shared.is_empty(), "deploy/config.toml would override the stack's {shared:?}");
        let layers = vec![
            (source("ssm:/k3s-autoscaler/prod/config"), stack),
            (source("deploy/config.toml"), file.to_string()),
        ];
        let error = Config::from_layers(&layers, []).unwrap_err().to_string();
        // Only the in-cluster events token file is missing here (the webhook token is in SSM).
        assert_eq!(
            error,
            "invalid configuration:\n  auth.events_token_file: cannot read /etc/k3s-autoscaler/events-token: No such file or directory (os error 2)"
        );
    }

    #[test]
    fn the_ssm_client_goes_where_the_file_layers_and_environment_say() {
        let f = Fixture::new();
        let file = f.dir.path().join("config.toml");
        std::fs::write(&file, f.toml("")).unwrap();
        let sources = [source("ssm:/k3s-autoscaler/prod/config"), ConfigSource::File(file)];
        let env =
            vec![("K3S_AUTOSCALER__AWS__ENDPOINT_URL".to_string(), "http://127.0.0.1:5000".to_string())];
        let (region, endpoint) = Config::bootstrap_aws(&sources, &env).unwrap();
        assert_eq!(region.as_deref(), Some("us-east-1"));
        assert_eq!(endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(Config::bootstrap_aws(&sources[..1], &[]).unwrap(), (None, None));
    }
}
