//! The cluster simulator for the end-to-end tests and the local demo (never part of the
//! product binary). Around the fake Kubernetes API server it runs:
//! - the workloads' controllers and a scheduler (`workload`), sized from an offered load;
//! - node-exporter / kube-state-metrics style metrics (`exporter`) on its own `/metrics`;
//! - with `joiner::Joiner` (started by the caller), the kubelets of the EC2 instances.
//!
//! The load model (`model`) is deliberately simple: the offered load spreads evenly over the
//! Ready, uncordoned workers; the shop app's replicas follow it like an HPA; batch `report`
//! pods are set directly. A drained node serves nothing, a new one takes its share at once.

pub mod exporter;
pub mod model;
pub mod workload;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::kube_api::{FakeKube, k3s_server};

/// The name of the control-plane node.
pub const CONTROL_PLANE: &str = "k3s-server";

struct Knobs {
    load: f64,
    reports: usize,
}

/// A running simulator; stops on drop.
pub struct Simulator {
    knobs: Arc<Mutex<Knobs>>,
    meters: Arc<Mutex<exporter::Meters>>,
    /// `http://127.0.0.1:<port>` serving `/metrics`.
    pub metrics_url: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Simulator {
    /// Adds the K3s server node (tainted as infra/userdata/server.sh does) to `kube` and starts
    /// the controllers (the K3s add-ons among them) and the exporter.
    pub async fn start(kube: Arc<FakeKube>, load: f64) -> Simulator {
        kube.set_pod_gc_delay(Duration::from_secs(1));
        kube.add_node(k3s_server(CONTROL_PLANE).build());
        let knobs = Arc::new(Mutex::new(Knobs { load, reports: 0 }));
        let meters = Arc::new(Mutex::new(exporter::Meters::default()));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind simulator exporter");
        let metrics_url = format!("http://{}", listener.local_addr().expect("exporter addr"));
        let scrape = meters.clone();
        let app = axum::Router::new().route(
            "/metrics",
            axum::routing::get(move || {
                let body = scrape.lock().unwrap().render();
                async move { body }
            }),
        );
        let server = tokio::spawn(async move { axum::serve(listener, app).await.expect("exporter serve") });
        let ticker = tokio::spawn(tick_forever(kube, knobs.clone(), meters.clone()));
        Simulator { knobs, meters, metrics_url, tasks: vec![server, ticker] }
    }

    /// Sets the offered load, in CPUs.
    pub fn set_load(&self, cpus: f64) {
        self.knobs.lock().unwrap().load = cpus;
    }

    /// Sets how many batch pods (1 CPU each) want to run.
    pub fn set_reports(&self, pods: usize) {
        self.knobs.lock().unwrap().reports = pods;
    }

    /// The offered load now.
    pub fn load(&self) -> f64 {
        self.knobs.lock().unwrap().load
    }

    /// The current scrape body.
    pub fn render(&self) -> String {
        self.meters.lock().unwrap().render()
    }
}

async fn tick_forever(kube: Arc<FakeKube>, knobs: Arc<Mutex<Knobs>>, meters: Arc<Mutex<exporter::Meters>>) {
    loop {
        let (load, reports) = {
            let k = knobs.lock().unwrap();
            (k.load, k.reports)
        };
        workload::reconcile(&kube, model::shop_replicas(load), reports);
        let nodes = kube.nodes();
        let serving =
            nodes.iter().filter(|n| is_worker(n) && workload::is_ready(n) && !workload::is_cordoned(n));
        let serving = serving.count();
        let busy: Vec<_> = nodes
            .into_iter()
            .map(|n| {
                let share = if !is_worker(&n) {
                    model::CONTROL_PLANE_BUSY
                } else if workload::is_ready(&n) && !workload::is_cordoned(&n) {
                    model::worker_busy(load, serving)
                } else {
                    model::WORKER_IDLE_BUSY
                };
                (n, share)
            })
            .collect();
        let pods = kube.pods();
        {
            let mut m = meters.lock().unwrap();
            m.load = load;
            m.advance(&busy, &pods);
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

fn is_worker(n: &k8s_openapi::api::core::v1::Node) -> bool {
    n.metadata.labels.as_ref().is_some_and(|l| !l.contains_key("node-role.kubernetes.io/control-plane"))
}

impl Drop for Simulator {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}
