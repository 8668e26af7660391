//! The business day, replayed: a day's load (tests/replay/day.toml, `--profile FILE`, or
//! your own history with `--from-prometheus URL`) through the whole real pipeline for each
//! rule set — the shipped rules, the shipped rules plus alert-rules/optional.rules.yaml, and
//! any `--rules FILE` — next to two baselines computed on the same load (5 static workers;
//! the seeds' 2-minute poller). Prints a table, writes report.json and report.png into
//! `--out` (default target/replay). `--speeds 60,120` replays at each speed and fails when a
//! rule set's node-hours differ by more than 5 %. docs/cost.md.
//!
//! cargo run --example replay -- [--speed N | --speeds N,M] [--profile FILE] [--rules FILE]...
//!     [--sets shipped,optional] [--slice HH:MM-HH:MM] [--out DIR]
//!     [--from-prometheus URL [--since DUR] [--until TIME] [--step DUR] [--reference-workers N]]

use k3s_autoscaler_testkit as support;

#[path = "harness/mod.rs"]
mod harness;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime};

use harness::history::{self, Source};
use harness::profile::{Profile, Slice, default_day};
use harness::run::RuleSet;
use harness::{Plan, report};
use support::pipeline::SHIPPED_RULES;

const USAGE: &str = "usage: replay [--speed N | --speeds N,M,...] [--profile FILE] [--rules FILE]... [--sets shipped,optional|none] [--slice HH:MM-HH:MM] [--out DIR]
              [--from-prometheus URL [--since DUR] [--until TIME] [--step DUR] [--reference-workers N]]
  --from-prometheus URL    the load is this Prometheus' history: CPU used by the workers plus CPU
                           requested by Pending pods, the busiest day of the window at each time of
                           day (UTC); pool and prices stay those of the default day or --profile
  --since DUR              how far back (default 7d)          --until TIME  RFC 3339 end (default now)
  --step DUR               between two points (default 5m)    --reference-workers N  workers whose
                           2 CPUs each are 100 % (default: the profile's reference_workers, 5)
  --speeds N,M             replay at each speed; exit 1 if a rule set's node-hours differ by more than 5 %";

struct Args {
    plan: Plan,
    out: PathBuf,
    /// `--from-prometheus`: the load to read before the replay.
    history: Option<History>,
    /// `--speeds`: replay at each, and compare.
    speeds: Vec<u32>,
}

struct History {
    source: Source,
    reference_workers: Option<u32>,
}

fn positive(flag: &str, text: &str) -> Result<u32, String> {
    text.parse()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("{flag} needs a whole number >= 1, not {text:?}"))
}

fn duration(flag: &str, text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("{flag} {text:?}: {e}"))
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut speed = 120;
    let mut profile = None;
    let mut extra = Vec::new();
    let mut sets = "shipped,optional".to_string();
    let mut slice = Slice::DAY;
    let mut out = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/replay"));
    let (mut speeds, mut speed_given) = (Vec::new(), false);
    let mut from = None;
    let (mut since, mut until, mut step, mut reference_workers) = (None, None, None, None);
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--speed" => {
                speed = positive(flag, &value()?)?;
                speed_given = true;
            }
            "--speeds" => {
                speeds = value()?.split(',').map(|s| positive(flag, s.trim())).collect::<Result<_, _>>()?;
                let mut distinct = speeds.clone();
                distinct.sort_unstable();
                distinct.dedup();
                if distinct.len() < 2 {
                    return Err("--speeds needs two different speeds or more, e.g. 60,120".into());
                }
            }
            "--from-prometheus" => from = Some(value()?),
            "--since" => since = Some(duration(flag, &value()?)?),
            "--until" => {
                let text = value()?;
                until = Some(humantime::parse_rfc3339_weak(&text).map_err(|e| {
                    format!("--until {text:?}: {e} (an RFC 3339 time, e.g. 2026-11-30T00:00:00Z)")
                })?)
            }
            "--step" => step = Some(duration(flag, &value()?)?),
            "--reference-workers" => reference_workers = Some(positive(flag, &value()?)?),
            "--profile" => {
                let file = value()?;
                let text = std::fs::read_to_string(&file).map_err(|e| format!("{file}: {e}"))?;
                profile = Some(Profile::parse(&text).map_err(|e| format!("{file}: {e}"))?);
            }
            "--rules" => extra.push(value()?),
            "--sets" => sets = value()?,
            "--slice" => slice = Slice::parse(&value()?)?,
            "--out" => out = PathBuf::from(value()?),
            _ => return Err(format!("unknown argument {flag}")),
        }
    }
    let mut rule_sets = Vec::new();
    for set in sets.split(',').filter(|s| *s != "none") {
        rule_sets.push(match set {
            "shipped" => RuleSet { name: "shipped rules".into(), files: vec![SHIPPED_RULES.into()] },
            "optional" => RuleSet {
                name: "shipped + optional rules".into(),
                files: vec![SHIPPED_RULES.into(), "alert-rules/optional.rules.yaml".into()],
            },
            other => return Err(format!("--sets: unknown rule set {other:?}")),
        });
    }
    for file in extra {
        let path = std::fs::canonicalize(&file).map_err(|e| format!("{file}: {e}"))?;
        rule_sets.push(RuleSet { name: format!("rules {file}"), files: vec![path.display().to_string()] });
    }
    if speed_given && !speeds.is_empty() {
        return Err("--speed and --speeds do not go together".into());
    }
    let history = match from {
        Some(url) => {
            let step = step.unwrap_or(Duration::from_secs(300));
            let since = since.unwrap_or(Duration::from_secs(7 * 86_400));
            let until = until.unwrap_or_else(SystemTime::now);
            Some(History { source: Source { url, since, until, step }, reference_workers })
        }
        None if since.is_some() || until.is_some() || step.is_some() || reference_workers.is_some() => {
            return Err("--since, --until, --step and --reference-workers go with --from-prometheus".into());
        }
        None => None,
    };
    let profile = profile.unwrap_or_else(default_day);
    Ok(Args { plan: Plan { profile, slice, speed, rule_sets }, out, history, speeds })
}

/// One line on the profile read from Prometheus, so the operator sees what will be played.
fn describe(source: &Source, profile: &Profile) -> String {
    let step = profile.step();
    let at = |i: usize| harness::profile::clock(step * i as u32);
    let by_load = |a: &(usize, &f64), b: &(usize, &f64)| a.1.total_cmp(b.1);
    let points = profile.load.iter().enumerate();
    let (hi, hi_load) = points.clone().max_by(by_load).unwrap_or((0, &0.0));
    let (lo, lo_load) = points.min_by(by_load).unwrap_or((0, &0.0));
    format!(
        "load from {}: {} up to {}, every {}, the busiest day at each time of day (UTC): highest {} at {:.0} %, lowest {} at {:.0} % of {} workers' CPUs",
        source.url,
        humantime::format_duration(source.since),
        humantime::format_rfc3339_seconds(source.until),
        humantime::format_duration(step),
        at(hi),
        hi_load * 100.0,
        at(lo),
        lo_load * 100.0,
        profile.reference_workers
    )
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Args { mut plan, out, history, speeds } = match parse_args(&argv) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("replay: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    // The service's own log is not part of the report (TEST_SERVICE_LOG=info shows it). Set
    // before any thread starts; the service processes inherit it.
    if std::env::var_os("TEST_SERVICE_LOG").is_none() {
        // SAFETY: single-threaded here: no other thread reads or writes the environment.
        unsafe { std::env::set_var("TEST_SERVICE_LOG", "off") };
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    if let Some(History { source, reference_workers }) = history {
        let workers = reference_workers.unwrap_or(plan.profile.reference_workers);
        match runtime.block_on(history::profile(&source, &plan.profile, workers)) {
            Ok(profile) => {
                println!("{}", describe(&source, &profile));
                plan.profile = profile;
            }
            Err(e) => {
                eprintln!("replay: {e}");
                return ExitCode::from(2);
            }
        }
    }
    let compare = !speeds.is_empty();
    let speeds = if compare { speeds } else { vec![plan.speed] };
    let mut ok = true;
    let mut runs = Vec::new();
    for speed in speeds {
        plan.speed = speed;
        let dir = if compare { out.join(format!("{speed}x")) } else { out.clone() };
        let (figures, clean) = replay_once(&runtime, &plan, &dir);
        ok &= clean;
        runs.push((speed, figures));
    }
    if compare {
        let rows = report::agreement(&runs, plan.rule_sets.len());
        println!("\nnode-hours of each rule set at each speed:\n{}", report::agreement_table(&rows));
        for row in rows.iter().filter(|r| !r.agrees()) {
            eprintln!(
                "{}: the speeds are {:.1} % apart, more than {:.0} %",
                row.name,
                row.apart_pct,
                report::AGREEMENT_MAX_PCT
            );
            ok = false;
        }
    }
    drop(runtime);
    if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// One replay of `plan` at its speed: prints its table, writes its report into `out`;
/// the figures, and whether they were all sound and written.
fn replay_once(
    runtime: &tokio::runtime::Runtime,
    plan: &Plan,
    out: &std::path::Path,
) -> (Vec<report::Figures>, bool) {
    let span = plan.slice.to - plan.slice.from;
    println!(
        "k3s-autoscaler day replay: {}-{} at {}x (1 s here is {} s of the day; {:.1} min per rule set), load average {}",
        harness::profile::clock(plan.slice.from),
        harness::profile::clock(plan.slice.to),
        plan.speed,
        plan.speed,
        (span / plan.speed).as_secs_f64() / 60.0,
        load_average()
    );
    let started = Instant::now();
    let outcome = runtime.block_on(harness::replay(plan));
    let wall = started.elapsed();
    println!();
    print!("{}", report::table(&outcome.figures));
    println!(
        "replay took {:.1} min at {}x, load average {} at the end; report.json and report.png in {}",
        wall.as_secs_f64() / 60.0,
        plan.speed,
        load_average(),
        out.display()
    );
    let written = harness::write(out, plan, &outcome, wall);
    if let Err(e) = &written {
        eprintln!("replay: {e}");
    }
    for problem in &outcome.problems {
        eprintln!("figure missing or nonsensical: {problem}");
    }
    (outcome.figures, written.is_ok() && outcome.problems.is_empty())
}
