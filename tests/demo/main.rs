//! The local demo: the whole pipeline on loopback through a flash sale, one line per event,
//! then a summary. Run it with `./scripts/demo.sh` (it installs and builds what it needs).
//!
//! moto (EC2, DynamoDB) ← k3s-autoscaler ← Alertmanager (alertmanager/alertmanager.yml)
//! ← Prometheus (alert-rules/autoscaler.rules.yaml) ← the cluster simulator (fake Kubernetes
//! API, kubelets for the instances, node-exporter / kube-state-metrics series from a load
//! model). Windows and timers are the production ones divided by `--speed` (default 30).

use k3s_autoscaler_testkit as support;

mod report;

use std::time::{Duration, Instant};

use support::pipeline::{Pipeline, PipelineOptions};
use support::sim::model::{Phase, load_at};

const MINUTE: Duration = Duration::from_secs(60);

/// The flash sale, in production time (divided by the speed when played).
fn flash_sale() -> Vec<Phase> {
    let phase = |name, minutes: u64, ramp: u64, load| Phase {
        name,
        duration: MINUTE * minutes as u32,
        ramp: MINUTE * ramp as u32,
        load,
    };
    vec![
        phase("quiet evening: 1.4 CPUs of load on 2 workers", 3, 0, 1.4),
        phase("flash sale starts: load climbs to 5.5 CPUs", 20, 1, 5.5),
        phase("sale over: load falls to 0.6 CPUs", 50, 1, 0.6),
    ]
}

fn speed_from_args() -> u32 {
    let args: Vec<String> = std::env::args().collect();
    match args.iter().position(|a| a == "--speed") {
        Some(i) => match args.get(i + 1).and_then(|s| s.parse().ok()) {
            Some(speed) if speed >= 1 => speed,
            _ => {
                eprintln!("demo: --speed needs a whole number >= 1 (windows are divided by it)");
                std::process::exit(2);
            }
        },
        None => 30,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let speed = speed_from_args();
    let phases: Vec<Phase> = flash_sale()
        .into_iter()
        .map(|p| Phase { duration: p.duration / speed, ramp: p.ramp / speed, ..p })
        .collect();
    println!("k3s-autoscaler demo: a flash sale, {speed}x faster than production");
    println!("starting moto, the cluster simulator, Prometheus, Alertmanager and k3s-autoscaler ...");
    let options = PipelineOptions {
        speed,
        workers: 2,
        min: 2,
        max: 6,
        load: phases[0].load,
        // About 90 s for an instance to boot and join K3s.
        boot: Duration::from_secs(90) / speed,
        ..PipelineOptions::new("demo")
    };
    let pipeline = Pipeline::start(options).await;
    println!(
        "  Prometheus    {}  (rules: alert-rules/autoscaler.rules.yaml, shortened)",
        pipeline.prometheus.url
    );
    println!(
        "  Alertmanager  {}  (config: alertmanager/alertmanager.yml, shortened)",
        pipeline.alertmanager.url
    );
    println!("  autoscaler    {}/metrics", pipeline.service.url);
    println!(
        "  simulator     {}/metrics  (fake Kubernetes API {})",
        pipeline.sim.metrics_url, pipeline.world.kube.url
    );
    println!("  pool workers: min 2, max 6; scale up above 70% CPU for 1m or a pod Pending for 3m,");
    println!("  down below 30% for 10m (shown here as {:?} and {:?})", MINUTE / speed, MINUTE * 10 / speed);
    println!();

    let mut watch = report::Watch::new(&pipeline);
    let start = Instant::now();
    let mut phase_seen = None;
    loop {
        let elapsed = start.elapsed();
        let Some((index, load)) = load_at(&phases, pipeline.options.load, elapsed) else { break };
        pipeline.sim.set_load(load);
        if phase_seen != Some(index) {
            phase_seen = Some(index);
            watch.line(elapsed, "load", phases[index].name);
        }
        watch.poll(&pipeline, elapsed).await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ok = watch.summary(&pipeline, start.elapsed());
    // exit() skips destructors: stop the child processes first.
    drop(pipeline);
    std::process::exit(if ok { 0 } else { 1 });
}
