//! What the demo shows: one line per event as it happens (load phase, alert pending / firing /
//! resolved, instance launched / terminated, node Ready / cordoned / removed, a status line
//! now and then), and the closing summary (node count over time, reaction times).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, SystemTime};

use crate::support::pipeline::Pipeline;
use crate::support::sim::{CONTROL_PLANE, workload};

/// A scaling alert's firing episode: when its condition became true and when it ended.
struct Episode {
    alert: String,
    scale_up: bool,
    active_at: SystemTime,
    resolved_at: Option<SystemTime>,
}

/// Follows the pipeline and prints what changes.
pub struct Watch {
    start: SystemTime,
    speed: u32,
    alerts: HashMap<String, (String, SystemTime, String)>,
    instances: BTreeMap<String, (SystemTime, String, bool)>,
    nodes: BTreeMap<String, (bool, bool)>,
    episodes: Vec<Episode>,
    join_delays: Vec<Duration>,
    samples: Vec<(Duration, usize)>,
    last_status: Option<Duration>,
    windows: HashMap<String, Duration>,
}

fn fmt_secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl Watch {
    pub fn new(pipeline: &Pipeline) -> Watch {
        Watch {
            start: SystemTime::now(),
            speed: pipeline.options.speed,
            alerts: HashMap::new(),
            instances: BTreeMap::new(),
            nodes: BTreeMap::new(),
            episodes: Vec::new(),
            join_delays: Vec::new(),
            samples: Vec::new(),
            last_status: None,
            windows: HashMap::new(),
        }
    }

    /// Prints one event line: demo time, the same moment in production time, kind, text.
    pub fn line(&self, elapsed: Duration, kind: &str, text: &str) {
        let production = elapsed.as_secs() * u64::from(self.speed);
        println!(
            "+{:>6}  (prod {:>2}m{:02}s)  {kind:<7} {text}",
            fmt_secs(elapsed),
            production / 60,
            production % 60
        );
    }

    fn since_start(&self, t: SystemTime) -> Duration {
        t.duration_since(self.start).unwrap_or_default()
    }

    /// Reads every source once and prints what changed since the last poll.
    pub async fn poll(&mut self, pipeline: &Pipeline, elapsed: Duration) {
        if self.windows.is_empty() {
            self.windows = pipeline.prometheus.windows().await;
        }
        self.poll_alerts(pipeline, elapsed).await;
        self.poll_instances(pipeline, elapsed).await;
        self.poll_nodes(pipeline, elapsed);
        let workers = pipeline.ready_workers();
        self.samples.push((elapsed, workers));
        if self.last_status.is_none_or(|last| elapsed >= last + Duration::from_secs(10)) {
            self.last_status = Some(elapsed);
            self.status(pipeline, elapsed, workers).await;
        }
    }

    async fn poll_alerts(&mut self, pipeline: &Pipeline, elapsed: Duration) {
        let mut now: HashMap<String, (String, SystemTime, String, usize)> = HashMap::new();
        for a in pipeline.prometheus.alerts().await.into_iter().filter(|a| a.name.starts_with("K3s")) {
            let entry =
                now.entry(a.name.clone()).or_insert((a.state.clone(), a.active_at, a.summary.clone(), 0));
            entry.3 += 1;
            if a.state == "firing" {
                entry.0 = a.state.clone();
            }
            entry.1 = entry.1.min(a.active_at);
        }
        for (name, (state, active_at, summary, count)) in &now {
            let before = self.alerts.get(name).map(|(s, _, _)| s.as_str());
            if before == Some(state.as_str()) {
                continue;
            }
            let many = if *count > 1 { format!(" ({count} alerts)") } else { String::new() };
            let text = match state.as_str() {
                "pending" => {
                    let window = self.windows.get(name).copied().unwrap_or_default();
                    format!(
                        "{name} pending: condition true, waiting out its {} for: window",
                        fmt_secs(window)
                    )
                }
                _ => {
                    self.episodes.push(Episode {
                        alert: name.clone(),
                        scale_up: name != "K3sWorkersCPULow",
                        active_at: *active_at,
                        resolved_at: None,
                    });
                    format!("{name} firing{many}: {summary}")
                }
            };
            self.line(elapsed, "alert", &text);
        }
        let gone: Vec<String> = self.alerts.keys().filter(|k| !now.contains_key(*k)).cloned().collect();
        for name in gone {
            let (state, _, _) = self.alerts.remove(&name).expect("known alert");
            if state == "firing" {
                if let Some(e) = self.episodes.iter_mut().rev().find(|e| e.alert == name) {
                    e.resolved_at = Some(SystemTime::now());
                }
                self.line(elapsed, "alert", &format!("{name} resolved"));
            }
        }
        for (name, (state, active_at, summary, _)) in now {
            self.alerts.insert(name, (state, active_at, summary));
        }
    }

    async fn poll_instances(&mut self, pipeline: &Pipeline, elapsed: Duration) {
        let live = pipeline.world.instances().await;
        for (id, az, spot) in &live {
            if !self.instances.contains_key(id) {
                let market = if *spot { "spot" } else { "on-demand" };
                if elapsed > Duration::ZERO && !self.samples.is_empty() {
                    self.line(elapsed, "ec2", &format!("launched {id} in {az} ({market})"));
                }
                self.instances.insert(id.clone(), (SystemTime::now(), az.clone(), *spot));
            }
        }
        let gone: Vec<String> =
            self.instances.keys().filter(|id| !live.iter().any(|(l, _, _)| l == *id)).cloned().collect();
        for id in gone {
            self.instances.remove(&id);
            self.line(elapsed, "ec2", &format!("terminated {id}"));
        }
    }

    fn poll_nodes(&mut self, pipeline: &Pipeline, elapsed: Duration) {
        let nodes = pipeline.world.kube.nodes();
        let mut seen = BTreeMap::new();
        for n in nodes.iter().filter(|n| n.metadata.name.as_deref() != Some(CONTROL_PLANE)) {
            let name = n.metadata.name.clone().unwrap_or_default();
            let (ready, cordoned) = (workload::is_ready(n), workload::is_cordoned(n));
            let before = self.nodes.get(&name).copied();
            if ready && before.is_none_or(|(r, _)| !r) && !self.samples.is_empty() {
                let id = name.trim_start_matches("node-");
                if let Some((launched, _, _)) = self.instances.get(id) {
                    let delay = launched.elapsed().unwrap_or_default();
                    self.join_delays.push(delay);
                    self.line(elapsed, "node", &format!("{name} Ready, {} after launch", fmt_secs(delay)));
                }
            }
            if cordoned && before.is_some_and(|(_, c)| !c) {
                self.line(elapsed, "node", &format!("{name} cordoned: draining through the Eviction API"));
            }
            seen.insert(name, (ready, cordoned));
        }
        for name in self.nodes.keys().filter(|n| !seen.contains_key(*n)) {
            self.line(elapsed, "node", &format!("{name} removed"));
        }
        self.nodes = seen;
    }

    async fn status(&self, pipeline: &Pipeline, elapsed: Duration, workers: usize) {
        let cpu = pipeline
            .prometheus
            .scalar(
                "avg(1 - avg by (node) (rate(node_cpu_seconds_total{mode=\"idle\",role=\"worker\"}[5s])))",
            )
            .await
            .map(|v| format!("{:.0}%", v * 100.0))
            .unwrap_or_else(|| "-".into());
        let pods = pipeline.world.kube.pods();
        let running =
            pods.iter().filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_some()).count();
        let text = format!(
            "{workers} workers Ready, worker CPU {cpu}, load {:.1} CPUs, pods {running} running / {} pending",
            pipeline.sim.load(),
            pods.len() - running
        );
        self.line(elapsed, "status", &text);
    }

    /// Prints the summary; false when the run did not scale up and back down to min.
    pub fn summary(&self, pipeline: &Pipeline, total: Duration) -> bool {
        println!();
        println!("Summary ({}x: 1 s here is {} s in production)", self.speed, self.speed);
        println!();
        println!("Worker nodes over time:");
        let rows = 16;
        for i in 0..=rows {
            let at = total * i / rows;
            let count = self.samples.iter().take_while(|(t, _)| *t <= at).last().or(self.samples.first());
            let count = count.map(|(_, c)| *c).unwrap_or(0);
            let production = at.as_secs() * u64::from(self.speed);
            println!(
                "  +{:>6} (prod {:>2}m{:02}s)  {:<8} {count}",
                fmt_secs(at),
                production / 60,
                production % 60,
                "█".repeat(count)
            );
        }
        println!();
        println!("Reaction times (condition true in Prometheus -> the autoscaler acting on it):");
        let (launches, terminations) = (pipeline.launches(), pipeline.terminations());
        for e in &self.episodes {
            let (actions, what) = if e.scale_up {
                (&launches, "CreateFleet")
            } else {
                (&terminations, "node drained, terminated")
            };
            let window = self.windows.get(&e.alert).copied().unwrap_or_default();
            // Only what followed the alert firing (condition + window) and came before it resolved.
            let fired = e.active_at + window - Duration::from_millis(100);
            let until = e.resolved_at.map(|r| r + Duration::from_secs(2));
            let served: Vec<_> =
                actions.iter().filter(|t| **t >= fired && until.is_none_or(|u| **t <= u)).collect();
            let action = served.first();
            let text = match action {
                Some(t) => {
                    let took = (**t).duration_since(e.active_at).unwrap_or_default();
                    let extra = took.saturating_sub(window);
                    let mut note = if extra > Duration::from_secs(3) {
                        " (it waited for the operation in flight or the cooldown)".to_string()
                    } else {
                        String::new()
                    };
                    if served.len() > 1 {
                        note += &format!(", then {} more while it fired", served.len() - 1);
                    }
                    format!(
                        "{} = its for: window {} + {}{note}",
                        fmt_secs(took),
                        fmt_secs(window),
                        fmt_secs(extra)
                    )
                }
                None => {
                    "nothing to do: the pool was at its bound, or an earlier action served it".to_string()
                }
            };
            println!(
                "  {:<21} at +{:>6} -> {what}: {text}",
                e.alert,
                fmt_secs(self.since_start(e.active_at))
            );
        }
        if !self.join_delays.is_empty() {
            let sum: Duration = self.join_delays.iter().sum();
            println!("  launch -> node Ready: {} on average", fmt_secs(sum / self.join_delays.len() as u32));
        }
        let peak = self.samples.iter().map(|(_, c)| *c).max().unwrap_or(0);
        let last = self.samples.last().map(|(_, c)| *c).unwrap_or(0);
        let terminations = terminations.len();
        println!();
        println!(
            "Totals: {} launches, {terminations} terminations, peak {peak} workers, {last} at the end (min {}).",
            launches.len(),
            pipeline.options.min
        );
        let scaled = !launches.is_empty() && terminations > 0 && last == pipeline.options.min as usize;
        if !scaled {
            println!("The run did not scale up and back down to min as expected: see the lines above.");
        }
        let within_max = peak <= pipeline.options.max as usize;
        if !within_max {
            println!("The pool went past its max of {}: peak {peak} workers.", pipeline.options.max);
        }
        let (unsafe_evictions, deletes) = (pipeline.unsafe_evictions(), pipeline.world.kube.pod_deletes());
        println!(
            "Evictions: {} (K3s add-ons among them: {}), pod deletes: {deletes}, unsafe evictions: {unsafe_evictions:?}.",
            pipeline.world.kube.evictions().len(),
            pipeline.evicted_addons().len()
        );
        let safe = unsafe_evictions.is_empty() && deletes == 0;
        if !safe {
            println!("A drain evicted a pod it must not move, or deleted a pod.");
        }
        scaled && within_max && safe
    }
}
