//! One rule set through the whole real pipeline (tests/integration/support/pipeline.rs): the
//! simulator offered the profile's load, Prometheus with the rule set, Alertmanager with the
//! project's route, the service and moto, every window and timer divided by the speed. The
//! cluster is sampled every 250 ms of real time.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use super::profile::{Profile, Slice};
use super::report::{Sample, Trace};
use crate::support::pipeline::{Pipeline, PipelineOptions};
use crate::support::sim::CONTROL_PLANE;
use crate::support::sim::model::worker_busy;
use crate::support::sim::workload::{self, NAMESPACE};

/// Production interval between two scrapes, and between two sweeps of the service (both
/// 15 s in production).
const SCRAPE: Duration = Duration::from_secs(15);
/// Real time between two samples of the cluster (the fake API server, in process).
const SAMPLE: Duration = Duration::from_millis(250);
/// Real time between two reads of the instances (moto, shared with the service: read less
/// often so the harness does not slow the service it measures).
const DESCRIBE: Duration = Duration::from_secs(1);

/// Rule files played together, under a name for the report.
#[derive(Clone, Debug)]
pub struct RuleSet {
    pub name: String,
    pub files: Vec<String>,
}

/// Replays `slice` of `profile` through the pipeline with `rules`, `speed` times faster.
pub async fn replay(profile: &Profile, slice: Slice, speed: u32, rules: &RuleSet) -> Trace {
    let initial = profile.initial_workers(slice.from);
    let options = PipelineOptions {
        speed,
        workers: initial as usize,
        min: profile.pool.min,
        max: profile.pool.max,
        load: profile.load_at(slice.from),
        boot: profile.boot() / speed,
        rules: rules.files.clone(),
        scrape: (SCRAPE / speed).max(Duration::from_millis(50)),
        // At most two sweeps a second: each reads moto, which a shared 2-core machine
        // cannot serve faster (calls time out and the service reports the store down).
        sweep: (SCRAPE / speed).max(Duration::from_millis(500)),
        ..PipelineOptions::new(&format!("replay-{}", uuid::Uuid::new_v4().simple()))
    };
    let pipeline = Pipeline::start(options).await;
    let mut watch =
        Watch { trace: Trace { name: rules.name.clone(), ..Trace::default() }, ..Watch::default() };
    let start = Instant::now();
    loop {
        let t = slice.from + start.elapsed() * speed;
        if t >= slice.to {
            break;
        }
        let load = profile.load_at(t);
        pipeline.sim.set_load(load);
        watch.sample(&pipeline, t, load).await;
        tokio::time::sleep(SAMPLE).await;
    }
    watch.trace.evictions = pipeline.world.kube.evictions().len();
    watch.trace
}

/// Follows the cluster: instances launched and gone, nodes cordoned.
#[derive(Default)]
struct Watch {
    trace: Trace,
    instances: Option<BTreeMap<String, bool>>,
    described: Option<Instant>,
    cordoned: BTreeSet<String>,
}

impl Watch {
    async fn sample(&mut self, pipeline: &Pipeline, t: Duration, load: f64) {
        let due = self.described.is_none_or(|at| at.elapsed() >= DESCRIBE);
        let live: BTreeMap<String, bool> = match &self.instances {
            Some(known) if !due => known.clone(),
            _ => {
                self.described = Some(Instant::now());
                pipeline.world.instances().await.into_iter().map(|(id, _, spot)| (id, spot)).collect()
            }
        };
        if let Some(known) = self.instances.as_ref().filter(|_| due) {
            for spot in live.iter().filter(|(id, _)| !known.contains_key(*id)).map(|(_, s)| *s) {
                self.trace.launches += 1;
                self.trace.spot_launches += usize::from(spot);
            }
            self.trace.terminations += known.keys().filter(|id| !live.contains_key(*id)).count();
        }
        let nodes = pipeline.world.kube.nodes();
        let workers: Vec<_> =
            nodes.iter().filter(|n| n.metadata.name.as_deref() != Some(CONTROL_PLANE)).collect();
        let ready = workers.iter().filter(|n| workload::is_ready(n)).count();
        let serving = workers.iter().filter(|n| workload::is_ready(n) && !workload::is_cordoned(n)).count();
        for n in workers.iter().filter(|n| workload::is_cordoned(n)) {
            if self.cordoned.insert(n.metadata.name.clone().unwrap_or_default()) {
                self.trace.drains += 1;
            }
        }
        let pending = pipeline
            .world
            .kube
            .pods()
            .iter()
            .filter(|p| p.metadata.namespace.as_deref() == Some(NAMESPACE))
            .filter(|p| p.spec.as_ref().and_then(|s| s.node_name.as_ref()).is_none())
            .count();
        self.trace.samples.push(Sample {
            hour: t.as_secs_f64() / 3600.0,
            load,
            nodes: live.len(),
            spot: live.values().filter(|s| **s).count(),
            ready,
            cpu: worker_busy(load, serving),
            pending,
        });
        self.instances = Some(live);
    }
}
