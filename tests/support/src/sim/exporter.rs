//! What node-exporter and kube-state-metrics would export for the simulated cluster, in the
//! Prometheus text format: `node_cpu_seconds_total` counters integrated from each node's
//! busy share (with the `node`, `role` and `pool` labels the scrape config's relabelling
//! gives real series), and the pod phase / unschedulable gauges the scaling rules read.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Node, Pod};

use super::workload::unschedulable;

/// CPUs per node in the exported series.
const CPUS: usize = 2;

/// Per-node CPU counters (seconds per CPU).
struct NodeMeter {
    role: &'static str,
    pool: Option<String>,
    idle: f64,
    busy: f64,
    /// Busy share since the last tick, so a scrape between ticks reads the exact integral.
    share: f64,
}

/// The exported state, advanced by the simulator's tick and read by scrapes.
pub struct Meters {
    nodes: BTreeMap<String, NodeMeter>,
    pods: Vec<(String, String, String, bool)>,
    last: Instant,
    pub load: f64,
}

impl Default for Meters {
    fn default() -> Meters {
        Meters { nodes: BTreeMap::new(), pods: Vec::new(), last: Instant::now(), load: 0.0 }
    }
}

impl Meters {
    /// Integrates the time since the last tick at each node's `busy` share, and takes the
    /// pods' phases as they are now. Nodes that left stop being exported.
    pub fn advance(&mut self, nodes: &[(Node, f64)], pods: &[Pod]) {
        let now = Instant::now();
        let dt = now.duration_since(self.last).as_secs_f64();
        self.last = now;
        let mut next = BTreeMap::new();
        for (n, busy) in nodes {
            let name = n.metadata.name.clone().unwrap_or_default();
            let labels = n.metadata.labels.clone().unwrap_or_default();
            let mut meter = self.nodes.remove(&name).unwrap_or(NodeMeter {
                role: if labels.contains_key("node-role.kubernetes.io/control-plane") {
                    "control-plane"
                } else {
                    "worker"
                },
                pool: labels.get("k3s-autoscaler/pool").cloned(),
                idle: 0.0,
                busy: 0.0,
                share: *busy,
            });
            meter.idle += dt * (1.0 - meter.share);
            meter.busy += dt * meter.share;
            meter.share = *busy;
            next.insert(name, meter);
        }
        self.nodes = next;
        self.pods = pods
            .iter()
            .map(|p| {
                (
                    p.metadata.namespace.clone().unwrap_or_default(),
                    p.metadata.name.clone().unwrap_or_default(),
                    p.status.as_ref().and_then(|s| s.phase.clone()).unwrap_or_else(|| "Pending".into()),
                    unschedulable(p),
                )
            })
            .collect();
    }

    /// The scrape body, with the counters integrated up to now: a scrape between two ticks
    /// must not see the load move in tick-sized steps (that would be rate() noise).
    pub fn render(&self) -> String {
        let dt = self.last.elapsed().as_secs_f64();
        let mut out = String::from(
            "# HELP node_cpu_seconds_total Seconds the CPUs spent in each mode.\n# TYPE node_cpu_seconds_total counter\n",
        );
        for (node, m) in &self.nodes {
            let pool = m.pool.as_ref().map(|p| format!(",pool=\"{p}\"")).unwrap_or_default();
            for cpu in 0..CPUS {
                let (idle, busy) = (m.idle + dt * (1.0 - m.share), m.busy + dt * m.share);
                for (mode, value) in [("idle", idle), ("user", busy)] {
                    let _ = writeln!(
                        out,
                        "node_cpu_seconds_total{{cpu=\"{cpu}\",mode=\"{mode}\",node=\"{node}\"{pool},role=\"{}\"}} {value:.4}",
                        m.role
                    );
                }
            }
        }
        out.push_str(
            "# HELP kube_pod_status_phase The pods current phase.\n# TYPE kube_pod_status_phase gauge\n",
        );
        for (ns, pod, phase, _) in &self.pods {
            for p in ["Pending", "Running", "Succeeded", "Failed", "Unknown"] {
                let v = u8::from(p == phase);
                let _ = writeln!(
                    out,
                    "kube_pod_status_phase{{namespace=\"{ns}\",phase=\"{p}\",pod=\"{pod}\"}} {v}"
                );
            }
        }
        out.push_str(
            "# HELP kube_pod_status_unschedulable Describes the unschedulable status for the pod.\n# TYPE kube_pod_status_unschedulable gauge\n",
        );
        for (ns, pod, _, _) in self.pods.iter().filter(|p| p.3) {
            let _ = writeln!(out, "kube_pod_status_unschedulable{{namespace=\"{ns}\",pod=\"{pod}\"}} 1");
        }
        let _ = writeln!(
            out,
            "# HELP sim_offered_load_cpus Load offered to the shop app.\n# TYPE sim_offered_load_cpus gauge\nsim_offered_load_cpus {}",
            self.load
        );
        out
    }
}
