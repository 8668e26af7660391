//! What a replay measured, the same way for the real pipeline and the baseline models: the
//! samples over the day, the figures computed from them, the printed table and the JSON.

use serde::Serialize;

use super::profile::Prices;

/// The cluster at one moment of the replayed day.
#[derive(Clone, Debug, Serialize)]
pub struct Sample {
    /// Production time since midnight, in hours.
    pub hour: f64,
    /// Offered load, in CPUs.
    pub load: f64,
    /// Worker instances running or booting: what is billed.
    pub nodes: usize,
    /// Of those, spot instances.
    pub spot: usize,
    /// Worker nodes Ready.
    pub ready: usize,
    /// Average busy share of the serving workers.
    pub cpu: f64,
    /// App pods waiting for room.
    pub pending: usize,
}

/// One replay (a rule set through the pipeline, or a baseline model): its samples and the
/// counts the samples cannot show.
#[derive(Clone, Debug, Default)]
pub struct Trace {
    pub name: String,
    pub samples: Vec<Sample>,
    /// Instances launched, and how many of them spot.
    pub launches: usize,
    pub spot_launches: usize,
    pub terminations: usize,
    pub drains: usize,
    pub evictions: usize,
}

/// The report's figures of one replay; `None` where there was nothing to measure (no
/// episode of demand above capacity that a new node ended).
#[derive(Clone, Debug, Serialize)]
pub struct Figures {
    pub name: String,
    pub node_hours: f64,
    pub cost_usd: f64,
    /// Share of the launched instances that were spot (`None`: nothing launched).
    pub spot_share: Option<f64>,
    pub pending_pod_minutes: f64,
    /// Minutes from app pods going Pending for lack of room to the next node Ready.
    pub to_ready_p50_min: Option<f64>,
    pub to_ready_p95_min: Option<f64>,
    pub to_ready_episodes: usize,
    pub launches: usize,
    pub terminations: usize,
    pub drains: usize,
    pub evictions: usize,
    pub min_nodes: usize,
    pub max_nodes: usize,
    pub peak_cpu: f64,
}

/// The `q` quantile (nearest rank) of `values`.
fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((q * sorted.len() as f64).ceil() as usize).max(1);
    sorted.get(rank - 1).copied()
}

/// Minutes from each rise of Pending pods (0 → some) to the next node turning Ready; a rise
/// that ends without a new node (the load fell back) is not counted.
fn to_ready_minutes(samples: &[Sample]) -> Vec<f64> {
    let mut out = Vec::new();
    let mut open: Option<f64> = None;
    for pair in samples.windows(2) {
        let (before, now) = (&pair[0], &pair[1]);
        if let Some(start) = open {
            if now.ready > before.ready {
                out.push((now.hour - start) * 60.0);
                open = None;
            } else if now.pending == 0 {
                open = None;
            }
        }
        if open.is_none() && before.pending == 0 && now.pending > 0 {
            open = Some(now.hour);
        }
    }
    out
}

impl Trace {
    /// The figures of this replay at `prices`.
    pub fn figures(&self, prices: &Prices) -> Figures {
        let (mut node_hours, mut cost, mut pending_minutes) = (0.0, 0.0, 0.0);
        for pair in self.samples.windows(2) {
            let (s, dt) = (&pair[0], pair[1].hour - pair[0].hour);
            node_hours += s.nodes as f64 * dt;
            let on_demand = s.nodes.saturating_sub(s.spot) as f64;
            cost += (on_demand * prices.on_demand + s.spot as f64 * prices.spot) * dt;
            pending_minutes += s.pending as f64 * dt * 60.0;
        }
        let episodes = to_ready_minutes(&self.samples);
        let nodes = self.samples.iter().map(|s| s.nodes);
        Figures {
            name: self.name.clone(),
            node_hours,
            cost_usd: cost,
            spot_share: (self.launches > 0).then(|| self.spot_launches as f64 / self.launches as f64),
            pending_pod_minutes: pending_minutes,
            to_ready_p50_min: quantile(&episodes, 0.5),
            to_ready_p95_min: quantile(&episodes, 0.95),
            to_ready_episodes: episodes.len(),
            launches: self.launches,
            terminations: self.terminations,
            drains: self.drains,
            evictions: self.evictions,
            min_nodes: nodes.clone().min().unwrap_or(0),
            max_nodes: nodes.max().unwrap_or(0),
            peak_cpu: self.samples.iter().map(|s| s.cpu).fold(0.0, f64::max),
        }
    }
}

/// What is missing or makes no sense in `f`, for a replay of `hours` hours on a pool of at
/// most `max` nodes; empty when the figures can be trusted.
pub fn problems(f: &Figures, hours: f64, max: usize) -> Vec<String> {
    let mut out = Vec::new();
    let mut check = |ok: bool, what: &str| {
        if !ok {
            out.push(format!("{}: {what}", f.name));
        }
    };
    let nodes_possible = f.min_nodes as f64 * hours * 0.9..=f.max_nodes as f64 * hours * 1.1;
    check(
        f.node_hours > 0.0 && nodes_possible.contains(&f.node_hours),
        "node-hours outside min..max × hours",
    );
    check(f.cost_usd > 0.0 && f.cost_usd.is_finite(), "cost missing");
    check(f.spot_share.is_none_or(|s| (0.0..=1.0).contains(&s)), "spot share outside 0..1");
    check(f.pending_pod_minutes >= 0.0 && f.pending_pod_minutes.is_finite(), "pending pod-minutes");
    check(
        f.min_nodes >= 1 && f.min_nodes <= f.max_nodes && f.max_nodes <= max,
        "node count outside the pool",
    );
    check((0.0..=1.0).contains(&f.peak_cpu) && f.peak_cpu > 0.0, "CPU outside 0..1");
    match (f.to_ready_p50_min, f.to_ready_p95_min) {
        (Some(p50), Some(p95)) => {
            check(0.0 < p50 && p50 <= p95 && p95 < hours * 60.0, "p50/p95 out of order")
        }
        (None, None) => {}
        _ => check(false, "one of p50/p95 missing"),
    }
    out
}

fn opt(v: Option<f64>, digits: usize) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.digits$}"))
}

/// The table, one row per replay.
pub fn table(figures: &[Figures]) -> String {
    let mut out = String::from(
        "| replay | node-hours | cost $ | spot share | pod-min Pending | Pending → node Ready p50 / p95 (min) | launches / terminations | drains | evictions | nodes min–max |\n|---|---|---|---|---|---|---|---|---|---|\n",
    );
    for f in figures {
        out += &format!(
            "| {} | {:.1} | {:.2} | {} | {:.0} | {} / {} ({} episodes) | {} / {} | {} | {} | {}–{} |\n",
            f.name,
            f.node_hours,
            f.cost_usd,
            f.spot_share.map_or_else(|| "-".into(), |s| format!("{:.0} %", s * 100.0)),
            f.pending_pod_minutes,
            opt(f.to_ready_p50_min, 1),
            opt(f.to_ready_p95_min, 1),
            f.to_ready_episodes,
            f.launches,
            f.terminations,
            f.drains,
            f.evictions,
            f.min_nodes,
            f.max_nodes,
        );
    }
    out
}

/// How far apart the node-hours of different speeds may be before the replay is not
/// trusted (issue 16): the speed factor must not change what the day costs.
pub const AGREEMENT_MAX_PCT: f64 = 5.0;

/// One rule set's node-hours at each speed, and how far apart they are: the difference of
/// the highest and the lowest as a share of the lowest, in percent.
#[derive(Clone, Debug)]
pub struct Agreement {
    pub name: String,
    pub node_hours: Vec<(u32, f64)>,
    pub apart_pct: f64,
}

impl Agreement {
    /// Within the limit.
    pub fn agrees(&self) -> bool {
        self.apart_pct <= AGREEMENT_MAX_PCT
    }
}

/// The agreement of the first `rule_sets` figures (the pipeline's runs; the baselines
/// after them are computed and the same at any speed) over `runs`, one per speed.
pub fn agreement(runs: &[(u32, Vec<Figures>)], rule_sets: usize) -> Vec<Agreement> {
    (0..rule_sets)
        .filter_map(|i| {
            let node_hours: Vec<(u32, f64)> = runs
                .iter()
                .map(|(speed, f)| f.get(i).map(|f| (*speed, f.node_hours)))
                .collect::<Option<_>>()?;
            let name = runs.first()?.1.get(i)?.name.clone();
            let (lo, hi) = node_hours
                .iter()
                .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (_, h)| (lo.min(*h), hi.max(*h)));
            let apart_pct = if lo > 0.0 { (hi - lo) / lo * 100.0 } else { f64::INFINITY };
            Some(Agreement { name, node_hours, apart_pct })
        })
        .collect()
}

/// The agreement table, one row per rule set.
pub fn agreement_table(rows: &[Agreement]) -> String {
    let Some(first) = rows.first() else { return String::new() };
    let speeds: Vec<String> = first.node_hours.iter().map(|(s, _)| format!("{s}x")).collect();
    let mut out = format!(
        "| rule set: node-hours at | {} | apart (limit {AGREEMENT_MAX_PCT:.0} %) |\n|---|{}---|\n",
        speeds.join(" | "),
        "---|".repeat(speeds.len())
    );
    for row in rows {
        let hours: Vec<String> = row.node_hours.iter().map(|(_, h)| format!("{h:.1}")).collect();
        let verdict = if row.agrees() { "" } else { " TOO FAR" };
        out += &format!("| {} | {} | {:.1} %{verdict} |\n", row.name, hours.join(" | "), row.apart_pct);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(hour: f64, nodes: usize, ready: usize, pending: usize) -> Sample {
        Sample { hour, load: 1.0, nodes, spot: 0, ready, cpu: 0.5, pending }
    }

    #[test]
    fn figures_integrate_the_samples() {
        let trace = Trace {
            name: "t".into(),
            samples: vec![
                sample(0.0, 2, 2, 0),
                sample(1.0, 3, 2, 4),
                sample(1.5, 3, 3, 0),
                sample(2.0, 3, 3, 0),
            ],
            launches: 1,
            ..Trace::default()
        };
        let f = trace.figures(&Prices { on_demand: 0.02, spot: 0.01 });
        assert!((f.node_hours - 5.0).abs() < 1e-9);
        assert!((f.cost_usd - 0.1).abs() < 1e-9);
        assert!((f.pending_pod_minutes - 120.0).abs() < 1e-9);
        assert_eq!(f.to_ready_p50_min, Some(30.0));
        assert_eq!((f.min_nodes, f.max_nodes, f.spot_share), (2, 3, Some(0.0)));
        assert!(problems(&f, 2.0, 10).is_empty(), "{:?}", problems(&f, 2.0, 10));
    }

    #[test]
    fn a_rise_that_recedes_without_a_node_is_not_an_episode() {
        let s = [sample(0.0, 2, 2, 0), sample(0.1, 2, 2, 3), sample(0.2, 2, 2, 0), sample(0.3, 3, 3, 0)];
        assert!(to_ready_minutes(&s).is_empty());
    }

    #[test]
    fn nonsense_figures_are_named() {
        let trace = Trace {
            name: "t".into(),
            samples: vec![sample(0.0, 0, 0, 0), sample(1.0, 0, 0, 0)],
            ..Trace::default()
        };
        let f = trace.figures(&Prices { on_demand: 0.02, spot: 0.01 });
        let found = problems(&f, 1.0, 10);
        assert!(found.iter().any(|p| p.contains("node-hours")), "{found:?}");
        assert!(found.iter().any(|p| p.contains("cost")), "{found:?}");
    }

    #[test]
    fn speeds_agree_by_the_rule_sets_node_hours() {
        let figures = |hours: &[f64]| -> Vec<Figures> {
            hours
                .iter()
                .enumerate()
                .map(|(i, h)| {
                    let trace = Trace {
                        name: format!("set {i}"),
                        samples: vec![sample(0.0, 1, 1, 0), sample(*h, 1, 1, 0)],
                        ..Trace::default()
                    };
                    trace.figures(&Prices { on_demand: 0.02, spot: 0.01 })
                })
                .collect()
        };
        // Two rule sets and a baseline (not compared) at two speeds.
        let runs = vec![(60, figures(&[14.7, 20.0, 120.0])), (120, figures(&[15.0, 22.0, 120.0]))];
        let rows = agreement(&runs, 2);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].node_hours, vec![(60, 14.7), (120, 15.0)]);
        assert!((rows[0].apart_pct - 0.3 / 14.7 * 100.0).abs() < 1e-9, "{rows:?}");
        assert!((rows[1].apart_pct - 10.0).abs() < 1e-9, "{rows:?}");
        let table = agreement_table(&rows);
        assert!(table.contains("| set 0 | 14.7 | 15.0 | 2.0 % |"), "{table}");
        assert!(table.contains("| set 1 | 20.0 | 22.0 | 10.0 % TOO FAR |"), "{table}");
    }

    #[test]
    fn quantiles_use_the_nearest_rank() {
        let v = [4.0, 1.0, 3.0, 2.0];
        assert_eq!(quantile(&v, 0.5), Some(2.0));
        assert_eq!(quantile(&v, 0.95), Some(4.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
