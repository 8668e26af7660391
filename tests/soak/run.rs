//! One soak run: the world (moto behind the fault proxy, the fake API server with kubelets,
//! workload controllers and drain blockers), three replicas of the binary, the schedule played
//! against them while the checker looks every 250 ms, then the faults stop and the pool must
//! converge to what the active signals ask.

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;

use crate::invariants::{BLOCKER_LABEL, Bounds, Checker, SharedSeen};
use crate::schedule::{Action, Rng, schedule};
use crate::support::joiner::{JoinOptions, Joiner};
use crate::support::kube_api::{Budget, FakeKube, pdb, pod};
use crate::support::service::{EVENTS_TOKEN, Service, TOKEN};
use crate::support::sim::Simulator;
use crate::support::{World, payload};

/// Production timings divided by this (the sweep's 15 s becomes 1 s): one wall second is
/// `SPEED` seconds of simulated production time.
pub const SPEED: u32 = 15;

/// EC2's spot interruption notice: the instance is reclaimed this long after the warning.
const SPOT_NOTICE: Duration = Duration::from_secs(120);

/// The pool of every run.
const MIN: u32 = 1;
const MAX: u32 = 6;

/// What one run did.
pub struct Report {
    pub seed: u64,
    pub faults: BTreeMap<String, usize>,
    pub alerts: usize,
    pub notices: usize,
    pub launches: usize,
    pub terminations: usize,
    pub evictions: usize,
    pub peak: usize,
    pub samples: usize,
    pub violations: Vec<String>,
    pub history: Vec<String>,
    /// Seconds from the faults' end to the pool at max, if it got there.
    pub converged: Option<f64>,
}

/// The three replicas; `None` while killed.
type Replicas = Arc<tokio::sync::Mutex<[Option<Service>; 3]>>;

struct Run {
    world: Arc<World>,
    replicas: Replicas,
    seen: SharedSeen,
    started: Instant,
    history: Arc<Mutex<VecDeque<String>>>,
    http: reqwest::Client,
    dynamo_down: Arc<std::sync::atomic::AtomicBool>,
    /// The prepared config, shared with the restart tasks.
    prepared: Arc<(tempfile::TempDir, std::path::PathBuf)>,
}

impl Run {
    fn note(&self, text: String) {
        note(&self.history, self.started, text);
    }

    /// The live replicas' URLs, starting from `first`.
    async fn urls(&self, first: usize) -> Vec<String> {
        let replicas = self.replicas.lock().await;
        (0..3).filter_map(|i| replicas[(first + i) % 3].as_ref().map(|s| s.url.clone())).collect()
    }

    /// Posts to the first live replica from `first` (Alertmanager reaches the service through
    /// its Kubernetes Service, which routes to a live pod); the status, or 0 if none answered.
    async fn post(&self, first: usize, path: &str, token: &str, body: &serde_json::Value) -> u16 {
        for url in self.urls(first).await {
            let sent = self
                .http
                .post(format!("{url}{path}"))
                .bearer_auth(token)
                .json(body)
                .timeout(Duration::from_secs(5))
                .send()
                .await;
            if let Ok(response) = sent {
                return response.status().as_u16();
            }
        }
        0
    }

    async fn fire(&self, up: bool, fingerprint: &str, step: u32, copies: usize) {
        let direction = if up { "scale-up" } else { "scale-down" };
        let labels = json!({"alertname": "Soak", "autoscaler": direction, "step": step.to_string()});
        let body = payload("firing", labels, fingerprint);
        for copy in 0..copies {
            let status = self.post(copy, "/v1/alerts", TOKEN, &body).await;
            self.note(format!("alert {fingerprint} {direction} step {step} firing (copy {copy}): {status}"));
        }
    }

    async fn resolve(&self, fingerprint: &str) {
        let direction = if fingerprint.starts_with("fp-up") { "scale-up" } else { "scale-down" };
        let body = payload("resolved", json!({"alertname": "Soak", "autoscaler": direction}), fingerprint);
        let status = self.post(0, "/v1/alerts", TOKEN, &body).await;
        self.note(format!("alert {fingerprint} resolved: {status}"));
    }

    async fn notice(&self, spot_warning: bool, pick: u64, copies: usize) -> bool {
        let mut spot: Vec<String> = self
            .world
            .instances()
            .await
            .into_iter()
            .filter(|(_, _, spot)| *spot)
            .map(|(id, _, _)| id)
            .collect();
        spot.sort();
        if spot.is_empty() {
            return false;
        }
        let id = spot[(pick % spot.len() as u64) as usize].clone();
        let (kind, body) = if spot_warning {
            let first = self.seen.lock().unwrap().spot_warned.insert(id.clone());
            if first {
                self.reclaim_after_the_notice(id.clone());
            }
            self.world.proxy.spot_request_status(&id, "marked-for-termination");
            let body = json!({
                "version": "0", "id": format!("evt-{id}"),
                "detail-type": "EC2 Spot Instance Interruption Warning", "source": "aws.ec2",
                "account": "123456789012", "time": "2026-11-24T08:00:00Z", "region": "us-east-1",
                "resources": [format!("arn:aws:ec2:us-east-1:instance/{id}")],
                "detail": {"instance-id": id, "instance-action": "terminate"}
            });
            ("spot warning", body)
        } else {
            let body = json!({
                "version": "0", "id": format!("rebalance-{id}"),
                "detail-type": "EC2 Instance Rebalance Recommendation", "source": "aws.ec2",
                "account": "123456789012", "time": "2026-11-24T07:58:00Z", "region": "us-east-1",
                "resources": [format!("arn:aws:ec2:us-east-1:instance/{id}")],
                "detail": {"instance-id": id}
            });
            ("rebalance", body)
        };
        for copy in 0..copies {
            let status = self.post(copy, "/v1/events/ec2", EVENTS_TOKEN, &body).await;
            self.note(format!("{kind} for {id} (copy {copy}): {status}"));
        }
        true
    }

    /// EC2 reclaims a warned spot instance two minutes after the warning, whatever the
    /// service did with it (upstream-facts.md: EC2's order of notices).
    fn reclaim_after_the_notice(&self, id: String) {
        let (world, history, started) = (self.world.clone(), self.history.clone(), self.started);
        tokio::spawn(async move {
            tokio::time::sleep(SPOT_NOTICE / SPEED).await;
            let live = world.aws.is_live(&id).await;
            if live {
                world.aws.reclaim(&id).await;
            }
            note(
                &history,
                started,
                format!("EC2 reclaims {id} two minutes after its warning (was live: {live})"),
            );
        });
    }

    fn outage_edge(&self, start: bool) {
        let mut seen = self.seen.lock().unwrap();
        match start {
            true => seen.outages.push((Instant::now(), None)),
            false => {
                if let Some(open) = seen.outages.iter_mut().rev().find(|(_, end)| end.is_none()) {
                    open.1 = Some(Instant::now());
                }
            }
        }
    }

    async fn kill(&self, replica: usize) -> bool {
        let mut replicas = self.replicas.lock().await;
        let Some(mut service) = replicas[replica].take() else { return false };
        service.kill();
        if replicas.iter().all(Option::is_none) {
            self.outage_edge(true);
        }
        true
    }

    /// Starts the replica in the background once DynamoDB answers (it must pass readiness).
    fn restart(&self, replica: usize) {
        let (replicas, prepared, down) =
            (self.replicas.clone(), self.prepared.clone(), self.dynamo_down.clone());
        let (history, started, seen) = (self.history.clone(), self.started, self.seen.clone());
        tokio::spawn(async move {
            if replicas.lock().await[replica].is_some() {
                return;
            }
            while down.load(std::sync::atomic::Ordering::SeqCst) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let service = Service::start(&prepared).await;
            let mut replicas = replicas.lock().await;
            let was_none = replicas.iter().all(Option::is_none);
            if replicas[replica].is_none() {
                replicas[replica] = Some(service);
                note(&history, started, format!("replica {replica} started"));
                if was_none {
                    let mut seen = seen.lock().unwrap();
                    if let Some(open) = seen.outages.iter_mut().rev().find(|(_, end)| end.is_none()) {
                        open.1 = Some(Instant::now());
                    }
                }
            }
        });
    }

    /// Plays one action; false when it found nothing to act on.
    async fn play(&self, action: &Action) -> bool {
        let kube = &self.world.kube;
        match action {
            Action::Fire { up, fingerprint, step, copies } => {
                self.fire(*up, fingerprint, *step, *copies).await
            }
            Action::Resolve { fingerprint, lost: true } => {
                self.note(format!("alert {fingerprint} resolved: post lost"))
            }
            Action::Resolve { fingerprint, lost: false } => self.resolve(fingerprint).await,
            Action::Notice { spot_warning, pick, copies } => {
                return self.notice(*spot_warning, *pick, *copies).await;
            }
            Action::Kill { replica } => return self.kill(*replica).await,
            Action::Restart { replica } => self.restart(*replica),
            Action::Aws { api, zone, spot, fault, times } => {
                let subnet = zone.map(|z| format!("SubnetId={}", self.world.fixtures.subnets[z].1));
                let market = match spot {
                    Some(true) => "DefaultTargetCapacityType=spot",
                    _ => "",
                };
                let needles: Vec<&str> = subnet.iter().map(String::as_str).chain([market]).collect();
                self.world.proxy.fail_next(api, &needles, fault.clone(), *times);
            }
            Action::DynamoDown => {
                self.dynamo_down.store(true, std::sync::atomic::Ordering::SeqCst);
                self.world.proxy.dynamodb_down(true);
                self.outage_edge(true);
            }
            Action::DynamoUp => {
                self.world.proxy.dynamodb_down(false);
                self.dynamo_down.store(false, std::sync::atomic::Ordering::SeqCst);
                self.outage_edge(false);
            }
            Action::Kube { method, needle, code, times } => kube.fail_next(method, needle, *code, *times),
            Action::Compact => kube.compact(),
            Action::CloseWatches => kube.close_watches(),
            Action::DeleteDrainingNode { pick } => {
                let draining: Vec<String> = managed_nodes(kube, true);
                if draining.is_empty() {
                    return false;
                }
                let name = &draining[(pick % draining.len() as u64) as usize];
                kube.remove_node(name);
                self.note(format!("deleted draining node {name}"));
            }
            Action::RemovePoolLabel { pick } => {
                let nodes = managed_nodes(kube, false);
                if nodes.is_empty() {
                    return false;
                }
                let name = &nodes[(pick % nodes.len() as u64) as usize];
                kube.remove_node_label(name, "k3s-autoscaler/pool");
                self.note(format!("removed the pool label of {name}"));
            }
        }
        true
    }
}

fn note(history: &Mutex<VecDeque<String>>, started: Instant, text: String) {
    let mut history = history.lock().unwrap();
    history.push_back(format!("{:>8.2}s {text}", started.elapsed().as_secs_f64()));
    if history.len() > 400 {
        history.pop_front();
    }
}

/// Managed nodes by name, sorted; only cordoned ones when `cordoned`.
fn managed_nodes(kube: &FakeKube, cordoned: bool) -> Vec<String> {
    let mut names: Vec<String> = kube
        .nodes()
        .into_iter()
        .filter(|n| n.metadata.labels.as_ref().is_some_and(|l| l.contains_key("k3s-autoscaler/managed")))
        .filter(|n| !cordoned || n.spec.as_ref().and_then(|s| s.unschedulable).unwrap_or(false))
        .filter_map(|n| n.metadata.name)
        .collect();
    names.sort();
    names
}

/// Binds a drain blocker to about a third of the joining nodes, before the Node exists: a bare
/// pod, a StatefulSet pod on a local-path volume, a system-cluster-critical pod, or a pod
/// whose PDB allows no disruption.
fn blockers(kube: Arc<FakeKube>, seed: u64) -> Arc<dyn Fn(&str) + Send + Sync> {
    let rng = Mutex::new(Rng::new(seed ^ 0xB10C));
    Arc::new(move |node: &str| {
        let roll = rng.lock().unwrap().below(12);
        let name = |kind: &str| format!("blocker-{kind}-{node}");
        let blocker = |p: crate::support::kube_api::PodBuilder| {
            p.on_node(node).label(BLOCKER_LABEL, "true").grace_period(0)
        };
        match roll {
            0 => kube.add_pod(blocker(pod("soak", &name("bare"))).build()),
            1 => {
                let claim = format!("data-{node}");
                kube.add_local_path_pv("soak", &claim, node);
                kube.add_pod(
                    blocker(pod("soak", &name("db")))
                        .owned_by("StatefulSet", "db")
                        .local_pv_claim(&claim)
                        .build(),
                );
            }
            2 => kube.add_pod(
                blocker(pod("soak", &name("critical")))
                    .owned_by("ReplicaSet", "agent-5d8f")
                    .priority_class("system-cluster-critical")
                    .build(),
            ),
            3 => {
                let app = name("guarded");
                kube.add_pod(
                    blocker(pod("soak", &app)).owned_by("ReplicaSet", &app).label("app", &app).build(),
                );
                kube.add_pdb(pdb("soak", &app, &[("app", &app)], Budget::MinAvailable(1)));
            }
            _ => {}
        }
    })
}

/// The service's timings: production's divided by `SPEED`.
fn tune(c: &mut crate::support::service::ServiceConfig) {
    c.min = MIN;
    c.max = MAX;
    c.scale_up_cooldown = "4s".into();
    c.extra_timing = "signal_ttl = \"12s\"\n".into();
    c.extra_pool = "scale_down_cooldown = \"4s\"\njoin_timeout = \"20s\"\ndrain_timeout = \"30s\"\ncapacity_backoff = \"12s\"\n".into();
}

/// Runs seed `seed` for `length` of wall time with faults about every `fault_every`.
pub async fn run(seed: u64, length: Duration, fault_every: Duration) -> Report {
    let join = JoinOptions { boot: Duration::from_secs(1), remove_terminated: true };
    let mut world = World::with_joiner(&format!("soak{seed}"), join, tune).await;
    let sim = Simulator::start(world.kube.clone(), 2.0).await;
    world.joiner = Joiner::start_with_hook(
        world.aws.clone(),
        world.kube.clone(),
        &world.config.cluster_id,
        join,
        blockers(world.kube.clone(), seed),
    );
    let seen: SharedSeen = Arc::default();
    world.proxy.on_call(crate::invariants::on_call(world.kube.clone(), seen.clone()));
    let bounds = Bounds {
        max: MAX as usize,
        min: MIN as usize,
        join_timeout: Duration::from_secs(20),
        drain_timeout: Duration::from_secs(30),
        sweep: Duration::from_secs(1),
        lease_ttl: Duration::from_secs(3),
    };
    let replicas: Replicas = Arc::new(tokio::sync::Mutex::new([
        Some(world.service().await),
        Some(world.service().await),
        Some(world.service().await),
    ]));
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.toml");
    std::fs::copy(&world.prepared.1, &config).expect("copy config");
    let world = Arc::new(world);
    let run_started = Instant::now();
    // The checker looks every 250 ms, the whole run long, in its own task.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let checking = {
        let (world, stop, mut checker) =
            (world.clone(), stop.clone(), Checker::new(bounds, seen.clone(), run_started));
        tokio::spawn(async move {
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                checker.check(&world).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            checker
        })
    };
    let run = Arc::new(Run {
        prepared: Arc::new((dir, config)),
        world,
        replicas,
        seen: seen.clone(),
        started: run_started,
        history: Arc::default(),
        http: reqwest::Client::new(),
        dynamo_down: Arc::default(),
    });
    let events = schedule(seed, length, fault_every, run.world.fixtures.subnets.len());
    let mut faults: BTreeMap<String, usize> = BTreeMap::new();
    let mut alerts = 0;
    let notices = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut posting = Vec::new();
    for event in events {
        tokio::time::sleep_until((run.started + event.at).into()).await;
        match (&event.action, event.action.fault_kind()) {
            // Posts run beside the schedule (a slow answer must not delay the next fault).
            (action @ (Action::Fire { .. } | Action::Resolve { .. } | Action::Notice { .. }), _) => {
                alerts += usize::from(matches!(action, Action::Fire { .. } | Action::Resolve { .. }));
                let (run, notices, action) = (run.clone(), notices.clone(), action.clone());
                posting.push(tokio::spawn(async move {
                    if run.play(&action).await && matches!(action, Action::Notice { .. }) {
                        notices.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    }
                }));
            }
            (action, kind) => {
                if run.play(action).await {
                    if let Some(kind) = kind {
                        run.note(format!("fault: {kind}"));
                        *faults.entry(kind).or_default() += 1;
                    }
                }
            }
        }
    }
    for post in posting {
        post.await.expect("a post task");
    }
    let notices = notices.load(std::sync::atomic::Ordering::SeqCst);
    let converged = converge(&run, &bounds).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let checker = checking.await.expect("the checker task");
    let launches = checker.check_history(&run.world).await;
    drop(sim);
    let seen = seen.lock().unwrap();
    Report {
        seed,
        faults,
        alerts,
        notices,
        launches,
        terminations: run.world.proxy.count("TerminateInstances"),
        evictions: run.world.kube.eviction_log().len(),
        peak: checker.peak,
        samples: checker.samples,
        violations: seen.violations.clone(),
        history: run.history.lock().unwrap().iter().cloned().collect(),
        converged,
    }
}

/// The faults stop; every replica runs again; every alert resolves and one scale-up fires:
/// within a bound the pool must be at `max`, every instance a Ready node, nothing in flight.
async fn converge(run: &Run, bounds: &Bounds) -> Option<f64> {
    run.world.proxy.clear_faults();
    run.world.kube.clear_faults();
    run.world.proxy.dynamodb_down(false);
    run.dynamo_down.store(false, std::sync::atomic::Ordering::SeqCst);
    for replica in 0..3 {
        run.restart(replica);
    }
    run.outage_edge(false);
    run.note("faults stop".into());
    let deadline = Instant::now() + Duration::from_secs(30);
    while run.urls(0).await.len() < 3 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // A scale-up outranks every signal left (scale-downs whose resolved post was lost).
    run.fire(true, "fp-final-up", 2, 3).await;
    let bound = Duration::from_secs(75);
    let started = Instant::now();
    let mut converged = None;
    let mut repeat = Instant::now();
    loop {
        // Alertmanager repeats a firing alert (repeat_interval, compressed): no Alertmanager
        // API is configured, so the stored signal lives only signal_ttl after each post.
        if repeat.elapsed() > Duration::from_secs(3) {
            run.fire(true, "fp-final-up", 2, 1).await;
            repeat = Instant::now();
        }
        let live = run.world.instances().await;
        let ready = ready_instances(&run.world.kube, &live);
        if live.len() == bounds.max && ready == bounds.max && run.world.op_finished().await {
            converged = Some(started.elapsed().as_secs_f64());
            run.note(format!("converged at max {} in {:.1}s", bounds.max, started.elapsed().as_secs_f64()));
            break;
        }
        if started.elapsed() > bound {
            run.seen.lock().unwrap().violations.push(format!(
                "no convergence to max {} within {bound:?} after the faults stopped: {} instances, {ready} Ready nodes",
                bounds.max,
                live.len()
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    if ready_instances(&run.world.kube, &run.world.instances().await) < bounds.min {
        run.seen
            .lock()
            .unwrap()
            .violations
            .push(format!("fewer than min {} Ready nodes at the end", bounds.min));
    }
    converged
}

fn ready_instances(kube: &FakeKube, live: &[(String, String, bool)]) -> usize {
    let nodes = kube.nodes();
    live.iter()
        .filter(|(id, _, _)| {
            nodes.iter().any(|n| {
                n.spec
                    .as_ref()
                    .and_then(|s| s.provider_id.as_deref())
                    .is_some_and(|p| p.ends_with(&format!("/{id}")))
                    && n.status
                        .as_ref()
                        .and_then(|s| s.conditions.as_ref())
                        .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
            })
        })
        .count()
}
