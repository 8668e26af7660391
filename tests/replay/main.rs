//! The business day, replayed: a day's load (tests/replay/day.toml, or `--profile FILE`)
//! through the whole real pipeline for each rule set — the shipped rules, the shipped rules
//! plus alert-rules/optional.rules.yaml, and any `--rules FILE` — next to two baselines
//! computed on the same load (5 static workers; the seeds' 2-minute poller). Prints a table,
//! writes report.json and report.png into `--out` (default target/replay). docs/cost.md.
//!
//! cargo run --example replay -- [--speed N] [--profile FILE] [--rules FILE]... [--sets shipped,optional]
//!                               [--slice HH:MM-HH:MM] [--out DIR]

use k3s_autoscaler_testkit as support;

#[path = "harness/mod.rs"]
mod harness;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use harness::profile::{Profile, Slice, default_day};
use harness::run::RuleSet;
use harness::{Plan, report};
use support::pipeline::SHIPPED_RULES;

const USAGE: &str = "usage: replay [--speed N] [--profile FILE] [--rules FILE]... [--sets shipped,optional|none] [--slice HH:MM-HH:MM] [--out DIR]";

struct Args {
    plan: Plan,
    out: PathBuf,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut speed = 120;
    let mut profile = None;
    let mut extra = Vec::new();
    let mut sets = "shipped,optional".to_string();
    let mut slice = Slice::DAY;
    let mut out = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/target/replay"));
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let mut value = || it.next().cloned().ok_or_else(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--speed" => {
                speed =
                    value()?.parse().ok().filter(|s| *s >= 1).ok_or("--speed needs a whole number >= 1")?
            }
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
    let profile = profile.unwrap_or_else(default_day);
    Ok(Args { plan: Plan { profile, slice, speed, rule_sets }, out })
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let Args { plan, out } = match parse_args(&argv) {
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
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let outcome = runtime.block_on(harness::replay(&plan));
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
    let written = harness::write(&out, &plan, &outcome, wall);
    if let Err(e) = &written {
        eprintln!("replay: {e}");
    }
    for problem in &outcome.problems {
        eprintln!("figure missing or nonsensical: {problem}");
    }
    drop(runtime);
    if written.is_ok() && outcome.problems.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}
