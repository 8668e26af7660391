//! The whole alerting pipeline on loopback, as the end-to-end tests and the demo run it:
//! the cluster simulator (fake API server, kubelets for moto's instances, metrics from a
//! load model) → the real Prometheus with the project's rules → the real Alertmanager with
//! the project's config → k3s-autoscaler → moto (through the counting proxy).
//!
//! Everything runs `speed` times faster than in production, by one documented transform
//! applied to the real files (`scripts/shorten-rules.sh SPEED`: rule windows, evaluation
//! interval, Alertmanager timers) and the same division of the autoscaler's production
//! timings (deploy/config.toml). No second copy of a rule or route is kept anywhere.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, SystemTime};

use super::alertmanager::Alertmanager;
use super::joiner::JoinOptions;
use super::kube_api::K3S_ADDONS;
use super::prometheus::{Prometheus, RuleAlert};
use super::service::{Service, TOKEN};
use super::sim::Simulator;
use super::{World, eventually};

/// How a pipeline starts.
#[derive(Clone, Debug)]
pub struct PipelineOptions {
    pub cluster: String,
    /// Every window and timer is divided by this.
    pub speed: u32,
    /// Managed workers running before the autoscaler starts.
    pub workers: usize,
    pub min: u32,
    pub max: u32,
    /// Offered load at the start, in CPUs.
    pub load: f64,
    /// From instance launch to Node Ready.
    pub boot: Duration,
    /// Rule files Prometheus loads (repository-relative or absolute), each shortened.
    pub rules: Vec<String>,
    /// Prometheus' scrape interval; range windows are kept at 5 scrapes or more.
    pub scrape: Duration,
    /// The service's sweep interval.
    pub sweep: Duration,
    /// The pool's `scale_down_cooldown` in production time (divided by `speed` like the rest).
    pub scale_down_cooldown: Duration,
}

impl PipelineOptions {
    /// 30× faster than production: the scale-up window of 5m becomes 10s, the
    /// scale-down one 20s, Alertmanager's group_wait 1s.
    pub fn new(cluster: &str) -> PipelineOptions {
        PipelineOptions {
            cluster: cluster.into(),
            speed: 30,
            workers: 2,
            min: 2,
            max: 4,
            load: 1.4,
            boot: Duration::from_secs(2),
            rules: vec![SHIPPED_RULES.into()],
            scrape: Duration::from_secs(1),
            sweep: Duration::from_secs(1),
            scale_down_cooldown: Duration::from_secs(10 * 60),
        }
    }
}

/// A running pipeline; everything stops on drop.
pub struct Pipeline {
    pub world: World,
    pub sim: Simulator,
    pub service: Service,
    pub alertmanager: Alertmanager,
    pub prometheus: Prometheus,
    pub options: PipelineOptions,
}

/// The scaling rules the project ships.
pub const SHIPPED_RULES: &str = "alert-rules/autoscaler.rules.yaml";

/// `scripts/shorten-rules.sh` applied to a file of the repository.
pub fn shortened(file: &str, speed: u32) -> String {
    shortened_to(file, speed, Duration::from_secs(5))
}

/// As [`shortened`], with range windows kept at `min_range` or more (a few scrapes).
pub fn shortened_to(file: &str, speed: u32, min_range: Duration) -> String {
    let min_range = format!("{}ms", min_range.as_millis());
    let source = std::fs::File::open(crate::repo().join(file)).unwrap_or_else(|e| panic!("open {file}: {e}"));
    let out = Command::new("bash")
        .arg(crate::repo().join("scripts/shorten-rules.sh"))
        .args(["--min-range", &min_range, &speed.to_string()])
        .stdin(source)
        .stderr(Stdio::inherit())
        .output()
        .expect("run shorten-rules.sh");
    assert!(out.status.success(), "shorten-rules.sh failed on {file}");
    let text = String::from_utf8(out.stdout).expect("utf-8");
    scale_seconds_lines(&text, speed)
}

/// Divides plain numbers of seconds standing on a line of their own (predict_linear's
/// horizon `15 * 60`), which shorten-rules.sh leaves alone: a forecast of the shortened rule
/// then looks as far ahead, in production time, as the real one.
fn scale_seconds_lines(text: &str, speed: u32) -> String {
    let product = |s: &str| !s.is_empty() && s.split('*').all(|f| f.trim().parse::<u64>().is_ok());
    let lines: Vec<String> = text
        .lines()
        .map(|line| if product(line.trim()) { format!("{line} / {speed}") } else { line.to_string() })
        .collect();
    lines.join("\n") + "\n"
}

/// A production duration divided by `speed`, as a humantime string (at least 1s; whole
/// milliseconds, so 3m at 120x stays 1.5s).
fn scaled(production: Duration, speed: u32) -> String {
    let d = (production / speed).max(Duration::from_secs(1));
    humantime::format_duration(Duration::from_millis(d.as_millis() as u64)).to_string()
}

/// Points the value of every `key:` line of `config` at `value`; panics when none matches,
/// so a changed source file is noticed instead of silently misrouted.
fn point(config: &str, key: &str, value: &str) -> String {
    let mut found = false;
    let out: Vec<String> = config
        .lines()
        .map(|line| {
            let body = line.trim_start();
            let item = body.strip_prefix("- ").unwrap_or(body);
            if item.starts_with(key) {
                found = true;
                format!("{}{key} {value}", &line[..line.len() - item.len()])
            } else {
                line.to_string()
            }
        })
        .collect();
    assert!(found, "alertmanager/alertmanager.yml has no `{key}` line any more");
    out.join("\n") + "\n"
}

/// The project's alertmanager.yml for loopback: shortened, the webhook pointed at `webhook`,
/// secrets read from files in `dir`.
pub fn local_alertmanager_config(speed: u32, webhook: &str, dir: &Path) -> String {
    let token = dir.join("k3s-autoscaler-token");
    std::fs::write(&token, TOKEN).expect("write token");
    let slack = dir.join("slack-url");
    // Nothing listens there: health alerts are not part of these runs.
    std::fs::write(&slack, "http://127.0.0.1:9/slack").expect("write slack url");
    let config = shortened("alertmanager/alertmanager.yml", speed);
    let config = point(&config, "url:", webhook);
    let config = point(&config, "credentials_file:", &token.display().to_string());
    point(&config, "api_url_file:", &slack.display().to_string())
}

fn prometheus_config(
    rules: &[PathBuf],
    scrape: Duration,
    alertmanager: &str,
    sim: &str,
    service: &str,
) -> String {
    let host = |url: &str| url.trim_start_matches("http://").to_string();
    let rules: Vec<String> = rules.iter().map(|r| format!("\"{}\"", r.display())).collect();
    format!(
        "global:\n  scrape_interval: {scrape}ms\n  evaluation_interval: 1s\n\
         rule_files: [{rules}]\n\
         alerting:\n  alertmanagers:\n    - static_configs: [{{targets: [\"{am}\"]}}]\n\
         scrape_configs:\n\
         \x20 - job_name: cluster-sim\n    static_configs: [{{targets: [\"{sim}\"]}}]\n\
         \x20 - job_name: k3s-autoscaler\n    static_configs: [{{targets: [\"{service}\"]}}]\n",
        scrape = scrape.as_millis(),
        rules = rules.join(", "),
        am = host(alertmanager),
        sim = host(sim),
        service = host(service),
    )
}

impl Pipeline {
    /// Starts everything and waits until the initial workers are Ready.
    pub async fn start(options: PipelineOptions) -> Pipeline {
        let speed = options.speed;
        let minutes = |m: u64| scaled(Duration::from_secs(m * 60), speed);
        let join = JoinOptions { boot: options.boot, remove_terminated: true };
        let (min, max) = (options.min, options.max);
        let scale_down_cooldown = scaled(options.scale_down_cooldown, speed);
        let sweep = humantime::format_duration(options.sweep).to_string();
        // Alertmanager's port is chosen first: the service reads its API (`[alertmanager]`).
        let am_port = super::moto::free_port();
        let world = World::with_joiner(&options.cluster, join, |c| {
            c.min = min;
            c.max = max;
            c.sweep_interval = sweep;
            c.scale_up_cooldown = minutes(3);
            c.extra_pool = format!(
                "scale_down_cooldown = \"{}\"\njoin_timeout = \"{}\"\ndrain_timeout = \"{}\"\ncapacity_backoff = \"{}\"\nmax_step = 3",
                scale_down_cooldown,
                minutes(10),
                minutes(5),
                minutes(5)
            );
            c.extra_timing = format!("signal_ttl = \"{}\"", minutes(120));
            c.extra_top = format!("[alertmanager]\nurls = [\"http://127.0.0.1:{am_port}\"]");
        })
        .await;
        for i in 0..options.workers {
            let subnet = &world.fixtures.subnets[i % world.fixtures.subnets.len()].1;
            world.aws.seed_instance(&options.cluster, subnet, true).await;
        }
        let pipeline_workers = options.workers;
        let kube = world.kube.clone();
        eventually("initial workers Ready", Duration::from_secs(30), || async {
            (ready_workers(&kube) == pipeline_workers).then_some(())
        })
        .await;
        // After the workers: K3s's add-ons are spread over them, where drains meet them.
        let sim = Simulator::start(world.kube.clone(), options.load).await;
        let service = world.service().await;
        let am_dir = tempfile::tempdir().expect("tempdir");
        let am_config =
            local_alertmanager_config(speed, &format!("{}/v1/alerts", service.url), am_dir.path());
        let alertmanager = Alertmanager::with_config_on(am_dir, &am_config, am_port).await;
        let prom_dir = tempfile::tempdir().expect("tempdir");
        let mut rules = Vec::new();
        for (i, file) in options.rules.iter().enumerate() {
            let path = prom_dir.path().join(format!("rules-{i}.yaml"));
            let text = shortened_to(file, speed, options.scrape * 5);
            std::fs::write(&path, text).expect("write rules");
            rules.push(path);
        }
        let config =
            prometheus_config(&rules, options.scrape, &alertmanager.url, &sim.metrics_url, &service.url);
        let prometheus = Prometheus::start(prom_dir, &config).await;
        Pipeline { world, sim, service, alertmanager, prometheus, options }
    }

    /// Worker nodes that are Ready.
    pub fn ready_workers(&self) -> usize {
        ready_workers(&self.world.kube)
    }

    /// When each CreateFleet reached EC2.
    pub fn launches(&self) -> Vec<SystemTime> {
        self.world.proxy.times("CreateFleet")
    }

    /// When each TerminateInstances reached EC2.
    pub fn terminations(&self) -> Vec<SystemTime> {
        self.world.proxy.times("TerminateInstances")
    }

    /// A production window divided by the pipeline's speed.
    pub fn window(&self, production: Duration) -> Duration {
        production / self.options.speed
    }

    /// Pods an eviction was asked for that no drain may move: anything but the shop's and
    /// the report Job's pods (namespace `shop`) and K3s's movable add-ons (svclb, a DaemonSet
    /// pod, among them). Empty when every drain was safe.
    pub fn unsafe_evictions(&self) -> Vec<String> {
        let movable = |pod: &str| {
            pod.starts_with(&format!("{}/", super::sim::workload::NAMESPACE))
                || K3S_ADDONS
                    .iter()
                    .any(|a| pod.starts_with(&format!("kube-system/{}-{}-", a.deployment, a.hash)))
        };
        self.world.kube.evictions().into_iter().map(|(pod, _)| pod).filter(|pod| !movable(pod)).collect()
    }

    /// Evicted K3s add-on pods (`namespace/name`), each attempt once.
    pub fn evicted_addons(&self) -> Vec<String> {
        let addon =
            |pod: &str| K3S_ADDONS.iter().any(|a| pod.starts_with(&format!("kube-system/{}-", a.deployment)));
        self.world.kube.evictions().into_iter().map(|(pod, _)| pod).filter(|pod| addon(pod)).collect()
    }

    /// Waits for `name` to fire in Prometheus.
    pub async fn firing(&self, name: &str, timeout: Duration) -> RuleAlert {
        eventually(&format!("{name} firing"), timeout, || self.prometheus.alert(name, "firing")).await
    }
}

/// Ready worker nodes (not the control plane).
pub fn ready_workers(kube: &super::kube_api::FakeKube) -> usize {
    kube.nodes()
        .iter()
        .filter(|n| n.metadata.name.as_deref() != Some(super::sim::CONTROL_PLANE))
        .filter(|n| super::sim::workload::is_ready(n))
        .count()
}
