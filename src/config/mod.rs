//! The configuration file (TOML) with environment overrides, validated into typed settings.
//!
//! Every problem is reported at once, each naming its key (`pools.workers.min: 5 is above
//! max 3`), so an operator fixes a file in one pass. Secrets are read from files and never
//! printed: `check-config` shows them as `<redacted>`.

//!
//! By concern: `file` is the TOML shape (serde structs and their defaults), `env` the
//! `K3S_AUTOSCALER__…` layer over it, `validate` turns the raw shape into the effective
//! settings of `effective`, which the rest of the crate uses (re-exported here); `layers`
//! reads and merges the `--config` layers (files and SSM parameters).

mod effective;
mod env;
mod file;
#[cfg(test)]
mod fixture;
mod layers;
mod validate;

use std::fmt;
use std::path::PathBuf;

use serde::{Serialize, Serializer};
use thiserror::Error;

pub use effective::{
    AlertmanagerConfig, AuthConfig, AwsConfig, CloudWatchConfig, Config, DrainConfig, InterruptionConfig,
    KubernetesConfig, PoolConfig, PrometheusConfig, SHIPPED_GROUP_INTERVAL, SHIPPED_REPEAT_INTERVAL,
    ServerConfig, TimingConfig,
};
pub use env::ENV_PREFIX;
pub use layers::{ConfigSource, SSM_PREFIX, parameter_name_problem};

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
    /// An SSM parameter (a config layer or the webhook token) could not be used.
    #[error("cannot use SSM parameter {name}: {message}")]
    Parameter {
        /// The parameter.
        name: String,
        /// What is wrong, and what to do.
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
