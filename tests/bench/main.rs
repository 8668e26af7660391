//! The benchmark: decision latency, duplicate storms, footprint and 1,000-node scale, measured
//! on loopback against moto (through the counting proxy) and the fake Kubernetes API, with the
//! real release binary. Prints one table; exits non-zero if a figure could not be produced.
//!
//! `cargo bench --bench bench` runs the full benchmark (minutes); `cargo test` runs this target
//! without `--bench`, which selects the smoke mode (tiny counts, seconds) so it cannot rot.
//! `--smoke` forces the smoke mode under `cargo bench` too.

use k3s_autoscaler_testkit as support;

mod latency;
mod proc;
mod scale;
mod storm;

use std::process::ExitCode;

/// How much to measure.
#[derive(Debug, Clone)]
pub struct Mode {
    pub smoke: bool,
    /// Scale-up notifications timed end to end.
    pub notifications: usize,
    /// Requests in a duplicate storm, and the concurrent clients sending them.
    pub storm_requests: usize,
    pub storm_clients: usize,
    /// Pool sizes of the scale runs, and the seconds of sweeps measured at each (the full run
    /// measures one whole `QUIET_REFRESH` minute, so its one instance relist is counted once).
    pub sizes: Vec<usize>,
    pub sweeps: u64,
    pub pods_per_node: usize,
    /// `--only latency|storm|scale`: one section (all when absent).
    pub only: Option<String>,
}

impl Mode {
    fn runs(&self, section: &str) -> bool {
        self.only.as_deref().is_none_or(|only| only == section)
    }

    fn from_args() -> Mode {
        let args: Vec<String> = std::env::args().collect();
        let smoke = args.iter().any(|a| a == "--smoke") || !args.iter().any(|a| a == "--bench");
        let only = args.iter().position(|a| a == "--only").and_then(|i| args.get(i + 1)).cloned();
        // `--size N`: the scale section at this pool size only.
        let size = args.iter().position(|a| a == "--size").and_then(|i| args.get(i + 1)?.parse().ok());
        if smoke {
            Mode {
                smoke,
                notifications: 10,
                storm_requests: 300,
                storm_clients: 8,
                sizes: vec![10],
                sweeps: 2,
                pods_per_node: 30,
                only: only.clone(),
            }
        } else {
            Mode {
                smoke,
                notifications: 200,
                storm_requests: 20_000,
                storm_clients: 64,
                sizes: size.map_or_else(|| vec![10, 100, 1000], |n| vec![n]),
                sweeps: 60,
                pods_per_node: 30,
                only: only.clone(),
            }
        }
    }
}

/// One line of the table; `value` is `None` when the figure could not be measured.
pub struct Row {
    pub section: &'static str,
    pub figure: String,
    pub value: Option<String>,
    pub target: &'static str,
    /// A correctness figure (a count that must match, writes that must be 0): the run fails
    /// when the value differs. Timing targets are only printed.
    pub must_be: Option<&'static str>,
}

impl Row {
    pub fn new(
        section: &'static str,
        figure: impl Into<String>,
        value: Option<String>,
        target: &'static str,
    ) -> Row {
        Row { section, figure: figure.into(), value, target, must_be: None }
    }

    /// Makes this a correctness figure that must equal `expected`.
    pub fn must_be(mut self, expected: &'static str) -> Row {
        self.must_be = Some(expected);
        self
    }

    /// Whether a correctness figure was measured and is wrong.
    fn wrong(&self) -> bool {
        self.must_be.is_some_and(|expected| self.value.as_deref().is_some_and(|v| v != expected))
    }
}

fn main() -> ExitCode {
    let mode = Mode::from_args();
    // moto answers DescribeInstances of 1,000 instances in seconds; the test config's 2 s
    // call timeout would turn the scale runs into timeouts. Set before any thread starts;
    // the service processes inherit it.
    // SAFETY: single-threaded here: no other thread reads or writes the environment.
    unsafe { std::env::set_var("K3S_AUTOSCALER__AWS__CALL_TIMEOUT", "30s") };
    let started = std::time::Instant::now();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let rows = runtime.block_on(async {
        // Each section's rows are printed as soon as it ends, so a later failure keeps them.
        let mut rows = Vec::new();
        if mode.runs("latency") {
            rows.extend(print_rows(latency::run(&mode).await));
        }
        if mode.runs("storm") {
            rows.extend(print_rows(storm::run(&mode).await));
        }
        if mode.runs("scale") {
            rows.extend(scale::run(&mode).await);
        }
        rows
    });
    print_table(&mode, &rows, started.elapsed());
    let missing: Vec<&Row> = rows.iter().filter(|r| r.value.is_none()).collect();
    let wrong: Vec<&Row> = rows.iter().filter(|r| r.wrong()).collect();
    for row in &missing {
        eprintln!("figure not produced: {} / {}", row.section, row.figure);
    }
    for row in &wrong {
        let (value, expected) = (row.value.as_deref().unwrap_or(""), row.must_be.unwrap_or(""));
        eprintln!("correctness figure wrong: {} / {}: {value}, must be {expected}", row.section, row.figure);
    }
    if missing.is_empty() && wrong.is_empty() { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

pub fn print_rows(rows: Vec<Row>) -> Vec<Row> {
    for row in &rows {
        eprintln!("  {} / {}: {}", row.section, row.figure, row.value.as_deref().unwrap_or("MISSING"));
    }
    rows
}

fn print_table(mode: &Mode, rows: &[Row], took: std::time::Duration) {
    let machine = proc::machine();
    println!();
    println!("k3s-autoscaler benchmark ({}), {machine}", if mode.smoke { "smoke" } else { "full" });
    println!("| section | figure | value | target |");
    println!("|---|---|---|---|");
    for row in rows {
        let value = row.value.as_deref().unwrap_or("MISSING");
        println!("| {} | {} | {} | {} |", row.section, row.figure, value, row.target);
    }
    println!("benchmark took {:.1} s", took.as_secs_f64());
}
