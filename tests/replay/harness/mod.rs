//! The day replay's harness, shared by the command (tests/replay/main.rs) and its smoke test
//! in the integration binary (tests/integration/replay.rs): the load profile (from a file or
//! from a Prometheus' history), the pipeline run, the baseline models, the figures and the
//! chart.

pub mod baseline;
pub mod chart;
pub mod history;
pub mod profile;
pub mod report;
pub mod run;

use std::path::Path;

use profile::{Profile, Slice};
use report::{Figures, Trace};
use run::RuleSet;

/// What to replay.
pub struct Plan {
    pub profile: Profile,
    pub slice: Slice,
    pub speed: u32,
    pub rule_sets: Vec<RuleSet>,
}

/// A finished replay: every trace (rule sets first, then baselines) and its figures.
pub struct Outcome {
    pub traces: Vec<Trace>,
    pub figures: Vec<Figures>,
    /// Figures of the rule sets' runs that are missing or make no sense.
    pub problems: Vec<String>,
}

/// Plays every rule set through the pipeline, one after the other, then the baselines.
pub async fn replay(plan: &Plan) -> Outcome {
    let mut traces = Vec::new();
    for rules in &plan.rule_sets {
        eprintln!("replaying {} ({}) ...", rules.name, rules.files.join(" + "));
        let started = std::time::Instant::now();
        traces.push(run::replay(&plan.profile, plan.slice, plan.speed, rules).await);
        eprintln!("  done in {:.0} s", started.elapsed().as_secs_f64());
    }
    let runs = traces.len();
    traces.push(baseline::fixed(&plan.profile, plan.slice, plan.profile.reference_workers as usize));
    traces.push(baseline::poller(&plan.profile, plan.slice));
    let figures: Vec<Figures> = traces.iter().map(|t| t.figures(&plan.profile.prices)).collect();
    let max = plan.profile.pool.max.max(plan.profile.reference_workers) as usize;
    let problems =
        figures.iter().take(runs).flat_map(|f| report::problems(f, plan.slice.hours(), max)).collect();
    Outcome { traces, figures, problems }
}

/// Writes `report.json` and `report.png` into `dir`.
pub fn write(dir: &Path, plan: &Plan, outcome: &Outcome, wall: std::time::Duration) -> Result<(), String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let json = serde_json::json!({
        "speed": plan.speed,
        "slice": [profile::clock(plan.slice.from), profile::clock(plan.slice.to)],
        "wall_seconds": wall.as_secs_f64(),
        "profile": plan.profile,
        "rule_sets": plan.rule_sets.iter().map(|r| serde_json::json!({"name": r.name, "files": r.files})).collect::<Vec<_>>(),
        "figures": outcome.figures,
        "problems": outcome.problems,
        "series": outcome.traces.iter().map(|t| serde_json::json!({"name": t.name, "samples": t.samples})).collect::<Vec<_>>(),
    });
    let path = dir.join("report.json");
    let text = serde_json::to_string_pretty(&json).map_err(|e| e.to_string())?;
    std::fs::write(&path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    let title = format!(
        "k3s-autoscaler day replay {}-{}, {}x",
        profile::clock(plan.slice.from),
        profile::clock(plan.slice.to),
        plan.speed
    );
    chart::draw(&dir.join("report.png"), &title, &outcome.traces)
}
