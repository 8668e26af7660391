//! Entry point: parse the command line, load the config, wire the edges, run.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use k3s_autoscaler::adapters::alertmanager::HttpAlertSource;
use k3s_autoscaler::adapters::cloudwatch::CloudWatchSink;
use k3s_autoscaler::adapters::cloudwatch::sink::EventSink;
use k3s_autoscaler::adapters::dynamodb::DynamoStore;
use k3s_autoscaler::adapters::ec2::Ec2Compute;
use k3s_autoscaler::adapters::kube::KubeCluster;
use k3s_autoscaler::adapters::sqs::SqsNoticeQueue;
use k3s_autoscaler::adapters::ssm::{LazySsmParameters, SsmParameters};
use k3s_autoscaler::adapters::{SystemClock, aws};
use k3s_autoscaler::cli::{Cli, Command, ServeArgs, StatusArgs};
use k3s_autoscaler::config::Config;
use k3s_autoscaler::http::{AppState, router};
use k3s_autoscaler::metrics::Metrics;
use k3s_autoscaler::secrets::TokenRefresher;
use k3s_autoscaler::service::{Edges, Service};
use k3s_autoscaler::{doctor, status, telemetry};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(Outcome::Done) => std::process::ExitCode::SUCCESS,
        Ok(Outcome::ChecksFailed) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

/// How a command that ran ended: done, or (`doctor`) with checks failed (exit 1; a
/// command that could not run exits 2).
enum Outcome {
    Done,
    ChecksFailed,
}

async fn run(cli: Cli) -> anyhow::Result<Outcome> {
    let env: Vec<(String, String)> = std::env::vars().collect();
    let (region, endpoint) = Config::bootstrap_aws(&cli.config, &env)?;
    let parameters = LazySsmParameters::new(region, endpoint);
    let mut config = Config::load_layers(&cli.config, env, &parameters).await?;
    match cli.command {
        Command::CheckConfig => {
            for warning in config.warnings() {
                eprintln!("warning: {warning}");
            }
            print!("{}", config.to_redacted_toml());
            Ok(Outcome::Done)
        }
        Command::InitTable => {
            let store = dynamo(&config).await;
            let created = store.create_table().await.context("creating the DynamoDB table")?;
            println!("table {} {}", config.aws.table, if created { "created" } else { "already exists" });
            Ok(Outcome::Done)
        }
        Command::Status(args) => print_status(&config, args).await.map(|()| Outcome::Done),
        Command::Doctor => {
            let checks = doctor::run(&config).await;
            print!("{}", doctor::render(&checks));
            Ok(if doctor::all_passed(&checks) { Outcome::Done } else { Outcome::ChecksFailed })
        }
        Command::Serve(args) => {
            if args.dry_run {
                config.dry_run = true;
            }
            if let Some(path) = &args.kubeconfig {
                config.kubernetes.kubeconfig = Some(path.clone());
            }
            serve(config, args).await.map(|()| Outcome::Done)
        }
    }
}

async fn dynamo(config: &Config) -> DynamoStore {
    let sdk = aws::sdk_config(&config.aws).await;
    DynamoStore::new(aws_sdk_dynamodb::Client::new(&sdk), &config.aws.table, &config.cluster_id)
}

async fn print_status(config: &Config, args: StatusArgs) -> anyhow::Result<()> {
    let store = dynamo(config).await;
    let mut report =
        status::collect(&store, config, args.events).await.context("reading state from DynamoDB")?;
    if !config.alertmanager.urls.is_empty() {
        status::add_alertmanager(&mut report, &HttpAlertSource::new(&config.alertmanager), config).await;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print!("{}", status::render_text(&report));
    }
    Ok(())
}

async fn serve(config: Config, args: ServeArgs) -> anyhow::Result<()> {
    let listen = args.listen.unwrap_or(config.server.listen);
    let sdk = aws::sdk_config(&config.aws).await;
    let metrics = Arc::new(Metrics::new());
    let sink = config.cloudwatch.clone().map(|cloudwatch| {
        let client = aws_sdk_cloudwatchlogs::Client::new(&sdk);
        Arc::new(CloudWatchSink::start(client, cloudwatch, &config.cluster_id, metrics.clone()))
            as Arc<dyn EventSink>
    });
    let edges = Edges {
        store: Arc::new(DynamoStore::new(
            aws_sdk_dynamodb::Client::new(&sdk),
            &config.aws.table,
            &config.cluster_id,
        )),
        compute: Arc::new(Ec2Compute::from_sdk(&sdk, &config.cluster_id)),
        clock: Arc::new(SystemClock),
        cluster: Some(Arc::new(
            KubeCluster::connect(
                config.kubernetes.kubeconfig.as_deref(),
                k3s_autoscaler::adapters::kube::request_timeout(config.timing.lease_ttl),
            )
            .await
            .context("connecting to the Kubernetes API (kubernetes.kubeconfig, KUBECONFIG or in-cluster)")?
            .with_movable_system_workloads(&config.drain.movable_system_workloads),
        )),
        sink,
    };
    for warning in config.warnings() {
        tracing::warn!(%warning, "configuration");
    }
    let token_refresh = match (&config.auth.token_ssm_parameter, &config.auth.bearer_token) {
        (Some(name), Some(tokens)) => {
            let refresher = TokenRefresher::new(
                Arc::new(SsmParameters::new(&sdk)),
                name.clone(),
                tokens.clone(),
                config.auth.token_ssm_refresh_interval,
                metrics.token_refresh_failures.clone(),
            );
            Some(tokio::spawn(refresher.run()))
        }
        _ => None,
    };
    let service = Service::new(config, edges, metrics);
    let state = AppState::new(service.clone());
    let listener =
        tokio::net::TcpListener::bind(listen).await.with_context(|| format!("binding {listen}"))?;
    let bound = listener.local_addr().context("reading the bound address")?;
    tracing::info!(%bound, owner = service.owner(), dry_run = service.config().dry_run, "k3s-autoscaler serving");
    // Tests and scripts read the real port (listen on :0) from this line.
    println!("listening on {bound}");
    let mut tasks = service.start();
    if !service.config().alertmanager.urls.is_empty() {
        let source = Arc::new(HttpAlertSource::new(&service.config().alertmanager));
        tasks.push(service.start_alert_sync(source));
    }
    if let Some(queue_url) = &service.config().interruption.queue_url {
        let queue = SqsNoticeQueue::new(&sdk, queue_url, service.config().aws.call_timeout);
        tasks.push(service.start_notice_poller(Arc::new(queue)));
    }
    let readiness = state.spawn_readiness_checks();
    let shutdown_state = state.clone();
    let server = service.config().server.clone();
    k3s_autoscaler::http::serve(listener, router(state), &server, async move {
        shutdown_signal().await;
        tracing::info!("shutting down: readiness off, finishing in-flight requests");
        shutdown_state.set_shutting_down();
    })
    .await;
    readiness.abort();
    if let Some(refresh) = token_refresh {
        refresh.abort();
    }
    service.shutdown();
    for task in tasks {
        let _ = task.await;
    }
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for ctrl-c");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = terminate => {}
    }
}
