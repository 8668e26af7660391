//! The fault soak (docs/testing.md, "Fault soak"): three replicas of the real binary against
//! moto behind the fault proxy and the fake Kubernetes API server (kubelets, workload
//! controllers, drain blockers), driven by a seeded stream of Alertmanager notifications and
//! EC2 notices while a seeded schedule injects faults; the invariants are checked from the
//! outside all along, and after the faults stop the pool must converge.
//!
//! `cargo bench --bench soak -- [--seed N] [--duration 30m]`: the full soak with the release
//! binary (default: seed 1, 30 minutes of simulated production time, a fault about every
//! 0.4 s of wall time). `cargo test` runs this target without `--bench`: the smoke, two fixed
//! seeds of 3 simulated minutes each with the debug binary. Exits non-zero on any violation,
//! printing its seed and the history of the last minutes.

use k3s_autoscaler_testkit as support;

mod invariants;
mod run;
mod schedule;

use std::process::ExitCode;
use std::time::Duration;

/// What to run.
struct Mode {
    smoke: bool,
    seeds: Vec<u64>,
    /// Simulated production time per seed.
    simulated: Duration,
    fault_every: Duration,
}

fn arg(args: &[String], name: &str) -> Option<String> {
    args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned()
}

impl Mode {
    fn from_args() -> Mode {
        let args: Vec<String> = std::env::args().collect();
        let smoke = args.iter().any(|a| a == "--smoke") || !args.iter().any(|a| a == "--bench");
        let seeds =
            arg(&args, "--seed").map(|s| s.split(',').map(|n| n.parse().expect("--seed N[,M…]")).collect());
        let duration =
            arg(&args, "--duration").map(|d| humantime::parse_duration(&d).expect("--duration like 30m"));
        Mode {
            smoke,
            seeds: seeds.unwrap_or_else(|| if smoke { vec![1, 2] } else { vec![1] }),
            simulated: duration.unwrap_or(Duration::from_secs(if smoke { 180 } else { 1800 })),
            fault_every: Duration::from_millis(if smoke { 300 } else { 400 }),
        }
    }
}

fn main() -> ExitCode {
    let mode = Mode::from_args();
    // The replicas' own logs stay quiet unless asked for (TEST_SERVICE_LOG=info).
    if std::env::var_os("TEST_SERVICE_LOG").is_none() {
        // SAFETY: single-threaded here: no other thread reads or writes the environment.
        unsafe { std::env::set_var("TEST_SERVICE_LOG", "off") };
    }
    let wall = mode.simulated / run::SPEED;
    // The same seed gives the same schedule.
    assert_eq!(
        schedule::schedule(7, wall, mode.fault_every, 2),
        schedule::schedule(7, wall, mode.fault_every, 2),
        "the schedule is a function of the seed"
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let started = std::time::Instant::now();
    let mut reports = Vec::new();
    for &seed in &mode.seeds {
        eprintln!("soak: seed {seed}, {:?} simulated ({wall:?} wall)", mode.simulated);
        let report = runtime.block_on(run::run(seed, wall, mode.fault_every));
        print_report(&report);
        reports.push(report);
    }
    print_table(&mode, &reports, started.elapsed());
    let failed: Vec<&run::Report> = reports.iter().filter(|r| !r.violations.is_empty()).collect();
    for report in &failed {
        eprintln!(
            "\nseed {} FAILED: replay with `cargo bench --bench soak -- --seed {} --duration {}`",
            report.seed,
            report.seed,
            humantime::format_duration(mode.simulated)
        );
        eprintln!("history of the last minutes (wall seconds from the start):");
        for line in &report.history {
            eprintln!("  {line}");
        }
        for violation in &report.violations {
            eprintln!("VIOLATION (seed {}): {violation}", report.seed);
        }
    }
    if failed.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

fn print_report(r: &run::Report) {
    let faults: usize = r.faults.values().sum();
    eprintln!(
        "  seed {}: {faults} faults, {} alerts, {} notices, {} launches, {} terminations, {} evictions, peak {}, {} checks, {} violations, at max {} s after the faults",
        r.seed,
        r.alerts,
        r.notices,
        r.launches,
        r.terminations,
        r.evictions,
        r.peak,
        r.samples,
        r.violations.len(),
        r.converged.map_or("never".into(), |s| format!("{s:.1}"))
    );
}

fn print_table(mode: &Mode, reports: &[run::Report], took: Duration) {
    let mut kinds: std::collections::BTreeMap<&str, usize> = std::collections::BTreeMap::new();
    for r in reports {
        for (kind, n) in &r.faults {
            *kinds.entry(kind).or_default() += n;
        }
    }
    let sum = |f: fn(&run::Report) -> usize| reports.iter().map(f).sum::<usize>();
    let seeds: Vec<String> = reports.iter().map(|r| r.seed.to_string()).collect();
    println!();
    println!(
        "k3s-autoscaler fault soak ({}), seeds {}, {} simulated each, took {:.0} s",
        if mode.smoke { "smoke" } else { "full" },
        seeds.join(","),
        humantime::format_duration(mode.simulated),
        took.as_secs_f64()
    );
    println!("| fault injected | count |");
    println!("|---|---|");
    for (kind, n) in &kinds {
        println!("| {kind} | {n} |");
    }
    println!("| **all faults** | {} |", kinds.values().sum::<usize>());
    println!("| alerts posted (firing, resolved, lost) | {} |", sum(|r| r.alerts));
    println!("| EC2 notices | {} |", sum(|r| r.notices));
    println!("| launches completed (audit) | {} |", sum(|r| r.launches));
    println!("| TerminateInstances calls | {} |", sum(|r| r.terminations));
    println!("| eviction requests | {} |", sum(|r| r.evictions));
    println!("| invariant checks | {} |", sum(|r| r.samples));
    println!("| invariant violations | {} |", sum(|r| r.violations.len()));
}
