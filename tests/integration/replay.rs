//! The day replay's smoke run (tests/replay, docs/cost.md): a 2-hour slice of the default
//! day around the flash sale, the shipped rules through the whole pipeline at the replay's
//! default speed, next to the baselines. Fails if a figure is missing or makes no sense, or
//! the report files are not written. `history` reads a replay's load from the real
//! Prometheus (`--from-prometheus`).

#[path = "../replay/harness/mod.rs"]
mod harness;
mod history;

use harness::profile::{Slice, default_day};
use harness::run::RuleSet;
use harness::{Plan, report};

use crate::support::pipeline::SHIPPED_RULES;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_smoke_two_hours_around_the_flash_sale() {
    let plan = Plan {
        profile: default_day(),
        slice: Slice::parse("11:00-13:00").expect("slice"),
        speed: 120,
        rule_sets: vec![RuleSet { name: "shipped rules".into(), files: vec![SHIPPED_RULES.into()] }],
    };
    let started = std::time::Instant::now();
    let outcome = harness::replay(&plan).await;
    println!("{}", report::table(&outcome.figures));
    assert!(outcome.problems.is_empty(), "figures missing or nonsensical: {:?}", outcome.problems);
    let names: Vec<&str> = outcome.figures.iter().map(|f| f.name.as_str()).collect();
    assert_eq!(names.len(), 3, "one rule set and two baselines: {names:?}");
    let shipped = &outcome.figures[0];
    assert!(
        shipped.launches > 0 && shipped.max_nodes > shipped.min_nodes,
        "the sale scaled nothing: {shipped:?}"
    );
    assert!(
        shipped.to_ready_episodes > 0 && shipped.pending_pod_minutes > 0.0,
        "no pods waited: {shipped:?}"
    );
    let static5 = &outcome.figures[1];
    assert!((static5.node_hours - 10.0).abs() < 0.1, "5 static workers for 2 hours: {static5:?}");
    let dir = tempfile::tempdir().expect("tempdir");
    harness::write(dir.path(), &plan, &outcome, started.elapsed()).expect("report written");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("report.json")).expect("json"))
            .expect("parse");
    assert_eq!(json["figures"].as_array().map(Vec::len), Some(3));
    let png = std::fs::read(dir.path().join("report.png")).expect("png");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "chart is {} bytes", png.len());
}
