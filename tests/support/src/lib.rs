//! The test world of k3s-autoscaler (see README.md): moto behind the fault proxy, AWS
//! fixtures, the fake Kubernetes API server with its kubelets and controllers, the cluster
//! simulator, Prometheus and Alertmanager launchers, and the service process. Used by the
//! integration tests, the demo and the benchmark.

pub mod alertmanager;
pub mod aws;
pub mod joiner;
pub mod kube_api;
pub mod moto;
pub mod notices;
pub mod pipeline;
pub mod prometheus;
pub mod proxy;
pub mod service;
pub mod sim;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// The repository root (this crate lives in `tests/support`), for the files the test world
/// runs: alert rules, the Alertmanager config, scripts, the moto virtualenv.
pub fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(start.elapsed() < timeout, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// An Alertmanager v4 payload with one alert.
pub fn payload(status: &str, labels: serde_json::Value, fingerprint: &str) -> serde_json::Value {
    serde_json::json!({
        "version": "4",
        "status": status,
        "receiver": "k3s-autoscaler",
        "groupKey": "{}:{alertname=\"WorkerCpuHigh\"}",
        "alerts": [{
            "status": status,
            "labels": labels,
            "annotations": {"summary": "average worker CPU 85%"},
            "startsAt": "2026-11-24T08:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "fingerprint": fingerprint
        }]
    })
}

/// A firing scale-up alert for the default pool.
pub fn scale_up(fingerprint: &str) -> serde_json::Value {
    payload(
        "firing",
        serde_json::json!({"alertname": "WorkerCpuHigh", "autoscaler": "scale-up"}),
        fingerprint,
    )
}

/// moto + proxy + the fake Kubernetes API (with a joiner playing the kubelets) + fixtures +
/// a prepared (table created) service config.
pub struct World {
    _moto: moto::Moto,
    /// moto itself, for fixtures the proxy should not see.
    pub moto_url: String,
    pub proxy: proxy::Proxy,
    pub aws: std::sync::Arc<aws::Aws>,
    pub kube: std::sync::Arc<kube_api::FakeKube>,
    pub joiner: joiner::Joiner,
    pub fixtures: aws::Fixtures,
    pub prepared: (tempfile::TempDir, std::path::PathBuf),
    pub config: service::ServiceConfig,
}

impl World {
    /// Sets everything up for `cluster`; `tune` edits the service config first.
    pub async fn new(cluster: &str, tune: impl FnOnce(&mut service::ServiceConfig)) -> World {
        let join = joiner::JoinOptions { boot: Duration::from_millis(300), remove_terminated: false };
        World::with_joiner(cluster, join, tune).await
    }

    /// As `new`, with the kubelets joining as `join` says.
    pub async fn with_joiner(
        cluster: &str,
        join: joiner::JoinOptions,
        tune: impl FnOnce(&mut service::ServiceConfig),
    ) -> World {
        let moto = moto::Moto::start();
        let proxy = proxy::Proxy::start(&moto.url).await;
        let aws = std::sync::Arc::new(aws::Aws::new(&moto.url).await);
        let fixtures = aws.fixtures().await;
        let kube = std::sync::Arc::new(kube_api::FakeKube::start().await);
        let joiner = joiner::Joiner::start_with(aws.clone(), kube.clone(), cluster, join);
        let mut config = service::ServiceConfig::new(cluster, &proxy.url);
        tune(&mut config);
        let prepared = service::prepare(&config, &fixtures, &kube);
        World {
            moto_url: moto.url.clone(),
            _moto: moto,
            proxy,
            aws,
            kube,
            joiner,
            fixtures,
            prepared,
            config,
        }
    }

    pub async fn service(&self) -> service::Service {
        service::Service::start(&self.prepared).await
    }

    pub async fn instances(&self) -> Vec<(String, String, bool)> {
        self.aws.instances(&self.config.cluster_id).await
    }

    /// Waits until exactly `n` instances exist, then checks they stay at `n` for `settle`.
    pub async fn expect_instances(&self, n: usize, settle: Duration) -> Vec<(String, String, bool)> {
        eventually(&format!("{n} instances"), Duration::from_secs(30), || async {
            let found = self.instances().await;
            (found.len() == n).then_some(())
        })
        .await;
        tokio::time::sleep(settle).await;
        let found = self.instances().await;
        assert_eq!(found.len(), n, "instances after settling: {found:?}");
        found
    }

    /// Waits until `n` more sweeps have read the pools' signals (DynamoDB Query at the proxy):
    /// the positive sign that the service looked again, for tests that then assert nothing
    /// else happened (instead of sleeping).
    pub async fn sweeps_pass(&self, n: usize) {
        let before = self.proxy.count("Query");
        let timeout = Duration::from_secs(10 * n as u64);
        eventually(&format!("{n} more sweeps"), timeout, || async {
            (self.proxy.count("Query") >= before + n).then_some(())
        })
        .await;
    }

    pub async fn items(&self, prefix: &str) -> usize {
        self.aws.items(&self.config.table, &self.config.cluster_id, prefix).await.len()
    }

    /// The pool's state item has no operation in flight.
    pub async fn op_finished(&self) -> bool {
        let state = self.aws.items(&self.config.table, &self.config.cluster_id, "state#workers").await;
        state.first().is_some_and(|s| !s.contains_key("op"))
    }
}
