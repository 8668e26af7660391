//! The load model, as plain functions of the offered load: how busy the workers are and how
//! many pods the web workload wants. Kept apart from the fake cluster so the numbers a
//! scenario produces can be read (and reasoned about) without running anything.

/// CPUs of every simulated worker (the builders' nodes: 2 CPU, 2000m allocatable).
pub const WORKER_CPUS: f64 = 2.0;
/// Allocatable millicores per worker.
pub const WORKER_MILLICORES: u32 = 2000;
/// Requests of one `shop` pod.
pub const SHOP_POD_MILLICORES: u32 = 250;
/// Load one `shop` pod serves at its HPA target (so replicas follow the load).
pub const SHOP_POD_LOAD: f64 = 0.3;
/// Requests of one `report` batch pod (one fits beside a few shop pods).
pub const REPORT_POD_MILLICORES: u32 = 1000;
/// Busy share of the control-plane node: high on purpose, so a rule that forgot to
/// exclude it would see the average rise.
pub const CONTROL_PLANE_BUSY: f64 = 0.9;
/// Baseline busy share of an idle worker (kubelet, containerd, DaemonSets).
pub const WORKER_IDLE_BUSY: f64 = 0.03;

/// Busy share of each Ready worker for `load` CPUs of offered load spread by the load
/// balancer over `workers` nodes: saturated at 1.
pub fn worker_busy(load: f64, workers: usize) -> f64 {
    if workers == 0 {
        return 0.0;
    }
    (WORKER_IDLE_BUSY + load / (workers as f64 * WORKER_CPUS)).min(1.0)
}

/// Replicas the HPA keeps for `load` (at least 1, at most 60).
pub fn shop_replicas(load: f64) -> usize {
    ((load / SHOP_POD_LOAD).ceil() as usize).clamp(1, 60)
}

/// One phase of a scenario: the load moves linearly from the previous phase's end value to
/// `load` over `ramp`, then holds for the rest of `duration`.
#[derive(Clone, Debug)]
pub struct Phase {
    pub name: &'static str,
    pub duration: std::time::Duration,
    pub ramp: std::time::Duration,
    pub load: f64,
}

/// The load at `elapsed` into `phases`, starting from `start`; `None` past the end.
pub fn load_at(phases: &[Phase], start: f64, elapsed: std::time::Duration) -> Option<(usize, f64)> {
    let mut from = start;
    let mut t = elapsed;
    for (i, p) in phases.iter().enumerate() {
        if t < p.duration {
            let share =
                if p.ramp.is_zero() { 1.0 } else { (t.as_secs_f64() / p.ramp.as_secs_f64()).min(1.0) };
            return Some((i, from + (p.load - from) * share));
        }
        t -= p.duration;
        from = p.load;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn busy_share_spreads_over_workers_and_saturates() {
        assert!((worker_busy(2.0, 2) - 0.53).abs() < 1e-9);
        assert_eq!(worker_busy(10.0, 2), 1.0);
        assert_eq!(worker_busy(1.0, 0), 0.0);
    }

    #[test]
    fn replicas_follow_the_load_within_bounds() {
        assert_eq!(shop_replicas(0.0), 1);
        assert_eq!(shop_replicas(3.0), 10);
        assert_eq!(shop_replicas(100.0), 60);
    }

    #[test]
    fn load_ramps_then_holds_then_ends() {
        let s = |d, r, l| Phase {
            name: "p",
            duration: Duration::from_secs(d),
            ramp: Duration::from_secs(r),
            load: l,
        };
        let phases = [s(10, 0, 1.0), s(10, 4, 3.0)];
        assert_eq!(load_at(&phases, 0.5, Duration::from_secs(3)), Some((0, 1.0)));
        assert_eq!(load_at(&phases, 0.5, Duration::from_secs(12)), Some((1, 2.0)));
        assert_eq!(load_at(&phases, 0.5, Duration::from_secs(19)), Some((1, 3.0)));
        assert_eq!(load_at(&phases, 0.5, Duration::from_secs(20)), None);
    }
}
