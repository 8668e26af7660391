//! The baselines a replay compares the pipeline with, computed on the same load by the same
//! load model (tests/integration/support/sim/model.rs), without running anything:
//!
//! - **static**: the company's 5 workers, 24/7.
//! - **poller**: the seeds' design, a job that polls every 2 minutes and reads the workers'
//!   CPU averaged over the last 2 minutes and the Pending pods: one node more when the CPU is
//!   above 70 % or a pod is Pending, one node less when the CPU is below 30 % and nothing is
//!   Pending; the same pool bounds, boot time and cooldowns (3m after a scale-up, 10m after a
//!   scale-down) as the autoscaler; a drain takes no time and a terminated node's pods are
//!   evicted.

use std::time::Duration;

use super::profile::{Profile, Slice};
use super::report::{Sample, Trace};
use crate::support::sim::model::{SHOP_POD_MILLICORES, WORKER_MILLICORES, shop_replicas, worker_busy};

/// The model's time step.
const STEP: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_secs(120);
const UP_COOLDOWN: Duration = Duration::from_secs(180);
const DOWN_COOLDOWN: Duration = Duration::from_secs(600);

/// App pods that fit on one worker.
const PODS_PER_NODE: usize = (WORKER_MILLICORES / SHOP_POD_MILLICORES) as usize;

fn sample(t: Duration, load: f64, nodes: usize, ready: usize) -> Sample {
    let pending = shop_replicas(load).saturating_sub(ready * PODS_PER_NODE);
    Sample {
        hour: t.as_secs_f64() / 3600.0,
        load,
        nodes,
        spot: 0,
        ready,
        cpu: worker_busy(load, ready),
        pending,
    }
}

fn steps(slice: Slice) -> impl Iterator<Item = Duration> {
    let count = ((slice.to - slice.from).as_secs() / STEP.as_secs()) as u32;
    (0..=count).map(move |i| slice.from + STEP * i)
}

/// `workers` on-demand workers all day.
pub fn fixed(profile: &Profile, slice: Slice, workers: usize) -> Trace {
    let samples = steps(slice).map(|t| sample(t, profile.load_at(t), workers, workers)).collect();
    Trace { name: format!("baseline: {workers} static workers"), samples, ..Trace::default() }
}

/// The seeds' 2-minute poller (module docs), on-demand workers.
pub fn poller(profile: &Profile, slice: Slice) -> Trace {
    let (min, max) = (profile.pool.min as usize, profile.pool.max as usize);
    let boot = profile.boot();
    let mut trace = Trace { name: "baseline: 2-minute poller (seeds)".into(), ..Trace::default() };
    let mut ready = profile.initial_workers(slice.from) as usize;
    let mut booting: Vec<Duration> = Vec::new();
    let mut last_poll = slice.from;
    let (mut last_up, mut last_down): (Option<Duration>, Option<Duration>) = (None, None);
    let mut window: Vec<f64> = Vec::new();
    for t in steps(slice) {
        let load = profile.load_at(t);
        let joined = booting.iter().filter(|at| **at <= t).count();
        booting.retain(|at| *at > t);
        ready += joined;
        let now = sample(t, load, ready + booting.len(), ready);
        window.push(now.cpu);
        if t >= last_poll + POLL {
            last_poll = t;
            let cpu = window.iter().sum::<f64>() / window.len() as f64;
            window.clear();
            let since = |last: Option<Duration>, wait: Duration| last.is_none_or(|l| t >= l + wait);
            let calm = since(last_up, UP_COOLDOWN) && since(last_down, DOWN_COOLDOWN);
            if (cpu > 0.70 || now.pending > 0) && ready + booting.len() < max && since(last_up, UP_COOLDOWN) {
                booting.push(t + boot);
                trace.launches += 1;
                last_up = Some(t);
            } else if cpu < 0.30 && now.pending == 0 && ready > min && booting.is_empty() && calm {
                trace.evictions += shop_replicas(load).div_ceil(ready);
                ready -= 1;
                trace.drains += 1;
                trace.terminations += 1;
                last_down = Some(t);
            }
        }
        trace.samples.push(now);
    }
    trace
}

#[cfg(test)]
mod tests {
    use super::super::profile::default_day;
    use super::*;

    #[test]
    fn static_workers_cost_the_same_every_hour() {
        let day = default_day();
        let f = fixed(&day, Slice::DAY, 5).figures(&day.prices);
        assert!((f.node_hours - 120.0).abs() < 0.01, "{}", f.node_hours);
        assert_eq!((f.min_nodes, f.max_nodes, f.launches), (5, 5, 0));
        // The flash sale wants 60 app pods; 5 workers hold 40.
        assert!(f.pending_pod_minutes > 20.0 * 25.0, "{}", f.pending_pod_minutes);
    }

    #[test]
    fn poller_follows_the_day_within_its_bounds() {
        let day = default_day();
        let f = poller(&day, Slice::DAY).figures(&day.prices);
        assert_eq!((f.min_nodes, f.max_nodes), (2, 10));
        assert!(f.launches > 4 && f.drains > 4, "{f:?}");
        // After the sale the pool stays at 10 all afternoon: 7.5-8 CPUs on 10 workers is
        // 40 % busy, above the 30 % scale-down line (docs/cost.md).
        let trace = poller(&day, Slice::DAY);
        let afternoon = trace.samples.iter().filter(|s| (13.0..20.0).contains(&s.hour));
        assert!(afternoon.clone().all(|s| s.nodes == 10 && s.cpu > 0.30), "{f:?}");
        let p50 = f.to_ready_p50_min.expect("the sale makes pods wait for a node");
        // At least a poll's wait on average plus the boot, at most two polls plus the boot.
        assert!((1.5..=5.6).contains(&p50), "{p50}");
    }
}
