//! Command line: `serve`, `check-config`, `init-table`, `status`, `doctor`, `--version`.

use clap::{Args, Parser, Subcommand};

use crate::config::ConfigSource;
use crate::telemetry::LogFormat;

/// Scales the worker nodes of a K3s cluster on EC2 from Prometheus alerts.
#[derive(Debug, Parser)]
#[command(name = "k3s-autoscaler", version, about)]
pub struct Cli {
    /// Configuration layers (TOML), later over earlier: a file, or `ssm:/name` for an SSM
    /// parameter (the stack writes `ssm:/k3s-autoscaler/<cluster>/config`). Repeat the flag
    /// or separate with commas; keys can be overridden with K3S_AUTOSCALER__SECTION__KEY.
    #[arg(
        long,
        env = "K3S_AUTOSCALER_CONFIG",
        default_value = "/etc/k3s-autoscaler/config.toml",
        value_delimiter = ',',
        value_parser = ConfigSource::parse,
        global = true
    )]
    pub config: Vec<ConfigSource>,
    /// Log format on stderr.
    #[arg(long, env = "K3S_AUTOSCALER_LOG_FORMAT", value_enum, default_value = "json", global = true)]
    pub log_format: LogFormat,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the webhook, the pool workers and the sweeper.
    Serve(ServeArgs),
    /// Validate the configuration and print it with secrets redacted.
    CheckConfig,
    /// Create the DynamoDB table (on-demand, TTL on expires_at) for local use.
    InitTable,
    /// Print each pool's lease, in-flight operation, signals and last decisions.
    Status(StatusArgs),
    /// Check AWS, Kubernetes, Alertmanager and Prometheus live, one line per check; exit 0
    /// only if none fails.
    Doctor,
}

/// Options of `serve`.
#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Listen address, overriding `server.listen`.
    #[arg(long, env = "K3S_AUTOSCALER_LISTEN")]
    pub listen: Option<std::net::SocketAddr>,
    /// Kubeconfig to use, overriding `kubernetes.kubeconfig` (else in-cluster or KUBECONFIG).
    #[arg(long)]
    pub kubeconfig: Option<std::path::PathBuf>,
    /// Decide and record, but never write to EC2 or Kubernetes (overrides `dry_run`).
    #[arg(long)]
    pub dry_run: bool,
}

/// Options of `status`.
#[derive(Debug, Args)]
pub struct StatusArgs {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
    /// How many recent decisions to show per pool.
    #[arg(long, default_value_t = 10)]
    pub events: usize,
}
