//! The truth rule, case by case.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

fn pools() -> BTreeSet<String> {
    ["workers".to_string(), "gpu".to_string()].into()
}

/// An alert of ours, as the API reports it.
fn api(fingerprint: &str, direction: &str, state: AlertState) -> ApiAlert {
    ApiAlert {
        fingerprint: fingerprint.into(),
        labels: BTreeMap::from([
            ("alertname".to_string(), format!("Alert-{fingerprint}")),
            (LABEL_AUTOSCALER.to_string(), direction.to_string()),
        ]),
        annotations: BTreeMap::from([("summary".to_string(), "CPU at 85%".to_string())]),
        state,
        silenced_by: Vec::new(),
        inhibited_by: Vec::new(),
    }
}

fn silenced(fingerprint: &str, direction: &str, silence: &str) -> ApiAlert {
    ApiAlert { silenced_by: vec![silence.into()], ..api(fingerprint, direction, AlertState::Suppressed) }
}

fn stored(fingerprint: &str, direction: Direction) -> Signal {
    Signal {
        pool: "workers".into(),
        direction,
        step: 1,
        reason: "CPU at 85%".into(),
        fingerprint: fingerprint.into(),
        alertname: format!("Alert-{fingerprint}"),
    }
}

fn plan(stored: &[Signal], answers: &[ReplicaAnswer]) -> SyncPlan {
    let pools = pools();
    plan_sync(SyncInput { stored, answers, default_pool: "workers", pools: &pools })
}

fn fingerprints(signals: &[Signal]) -> Vec<&str> {
    signals.iter().map(|s| s.fingerprint.as_str()).collect()
}

#[test]
fn an_active_alert_keeps_its_signal_and_changes_nothing() {
    let p = plan(&[stored("a", Direction::Up)], &[Ok(vec![api("a", "scale-up", AlertState::Active)])]);
    assert_eq!(p.mode, Some(SyncMode::Synced { answered: 1, replicas: 1 }));
    assert!(p.remove.is_empty() && p.add.is_empty() && p.muted.is_empty() && p.invalid.is_empty());
    assert!(p.paused().is_empty());
}

#[test]
fn a_silenced_alert_removes_its_signal_and_pauses_the_pool() {
    let p = plan(&[stored("a", Direction::Up)], &[Ok(vec![silenced("a", "scale-up", "s-1")])]);
    assert_eq!(fingerprints(&p.remove), ["a"]);
    assert!(p.add.is_empty());
    assert_eq!(p.muted.len(), 1);
    assert_eq!(p.muted[0].silenced_by, ["s-1"]);
    assert_eq!(p.paused(), BTreeMap::from([("workers".to_string(), BTreeSet::from(["s-1".to_string()]))]));
}

#[test]
fn an_inhibited_alert_never_acts_but_is_not_a_pause() {
    let inhibited =
        ApiAlert { inhibited_by: vec!["up-fp".into()], ..api("d", "scale-down", AlertState::Suppressed) };
    let p = plan(&[stored("d", Direction::Down)], &[Ok(vec![inhibited.clone()])]);
    assert_eq!(fingerprints(&p.remove), ["d"]);
    assert_eq!(p.muted[0].inhibited_by, ["up-fp"]);
    assert!(p.paused().is_empty());
    // Never stored (the webhook got nothing): never added either.
    let p = plan(&[], &[Ok(vec![inhibited])]);
    assert!(p.add.is_empty() && p.remove.is_empty());
}

#[test]
fn a_signal_whose_alert_is_gone_is_removed_a_lost_resolved_post() {
    let p = plan(
        &[stored("a", Direction::Up), stored("b", Direction::Up)],
        &[Ok(vec![api("b", "scale-up", AlertState::Active)])],
    );
    assert_eq!(fingerprints(&p.remove), ["a"]);
}

#[test]
fn an_empty_valid_answer_removes_every_signal() {
    let p = plan(&[stored("a", Direction::Up), stored("b", Direction::Down)], &[Ok(Vec::new())]);
    assert_eq!(fingerprints(&p.remove), ["a", "b"]);
    assert_eq!(p.mode, Some(SyncMode::Synced { answered: 1, replicas: 1 }));
}

#[test]
fn an_active_alert_without_a_signal_is_added_a_lost_firing_post() {
    let mut alert = api("n", "scale-up", AlertState::Active);
    alert.labels.insert("pool".into(), "gpu".into());
    alert.labels.insert("step".into(), "2".into());
    let p = plan(&[], &[Ok(vec![alert])]);
    assert_eq!(
        p.add,
        vec![Signal {
            pool: "gpu".into(),
            direction: Direction::Up,
            step: 2,
            reason: "CPU at 85%".into(),
            fingerprint: "n".into(),
            alertname: "Alert-n".into(),
        }]
    );
    assert!(p.remove.is_empty());
}

#[test]
fn one_replica_failing_and_another_fine_uses_the_good_one() {
    let good = Ok(vec![api("a", "scale-up", AlertState::Active)]);
    for bad in ["HTTP 500", "not JSON: <html>", "timed out after 2s", "truncated JSON"] {
        let p =
            plan(&[stored("a", Direction::Up), stored("b", Direction::Up)], &[Err(bad.into()), good.clone()]);
        assert_eq!(p.mode, Some(SyncMode::Synced { answered: 1, replicas: 2 }), "{bad}");
        assert_eq!(fingerprints(&p.remove), ["b"], "{bad}");
    }
}

#[test]
fn no_replica_answering_falls_back_and_removes_nothing() {
    let p = plan(
        &[stored("a", Direction::Up)],
        &[Err("connection refused".into()), Err("not JSON: <html>".into())],
    );
    assert_eq!(p.mode, Some(SyncMode::Fallback { replicas: 2 }));
    assert!(p.remove.is_empty() && p.add.is_empty() && p.muted.is_empty());
    assert_eq!(plan(&[stored("a", Direction::Up)], &[]).mode, Some(SyncMode::Fallback { replicas: 0 }));
}

#[test]
fn active_in_any_replica_wins_over_muted_in_another() {
    let answers =
        [Ok(vec![silenced("a", "scale-up", "s-1")]), Ok(vec![api("a", "scale-up", AlertState::Active)])];
    let p = plan(&[stored("a", Direction::Up)], &answers);
    assert!(p.remove.is_empty() && p.muted.is_empty() && p.add.is_empty());
}

#[test]
fn silences_of_every_replica_are_merged() {
    let answers = [Ok(vec![silenced("a", "scale-up", "s-1")]), Ok(vec![silenced("a", "scale-up", "s-2")])];
    let p = plan(&[stored("a", Direction::Up)], &answers);
    assert_eq!(p.muted[0].silenced_by, ["s-1", "s-2"]);
    assert_eq!(fingerprints(&p.remove), ["a"]);
}

#[test]
fn an_unprocessed_alert_keeps_its_signal_but_adds_none() {
    let p = plan(
        &[stored("a", Direction::Up)],
        &[Ok(vec![
            api("a", "scale-up", AlertState::Unprocessed),
            api("b", "scale-up", AlertState::Unprocessed),
        ])],
    );
    assert!(p.remove.is_empty() && p.add.is_empty() && p.muted.is_empty());
}

#[test]
fn alerts_breaking_the_contract_are_reported_not_added() {
    let mut unknown_pool = api("p", "scale-up", AlertState::Active);
    unknown_pool.labels.insert("pool".into(), "nope".into());
    let mut bad_step = api("s", "scale-up", AlertState::Active);
    bad_step.labels.insert("step".into(), "zero".into());
    let p = plan(&[], &[Ok(vec![unknown_pool, bad_step])]);
    assert!(p.add.is_empty());
    assert_eq!(p.invalid.len(), 2);
    assert!(p.invalid[0].contains("unknown pool \"nope\""), "{:?}", p.invalid);
    assert!(p.invalid[1].contains("step"), "{:?}", p.invalid);
}

#[test]
fn alerts_that_are_not_ours_are_ignored() {
    let mut foreign = api("f", "scale-up", AlertState::Active);
    foreign.labels.remove(LABEL_AUTOSCALER);
    let sideways = api("x", "scale-sideways", AlertState::Active);
    let p = plan(&[], &[Ok(vec![foreign, sideways])]);
    assert!(p.add.is_empty() && p.invalid.is_empty() && p.muted.is_empty());
}

#[test]
fn an_added_signal_reason_is_bounded() {
    let mut alert = api("a", "scale-up", AlertState::Active);
    alert.annotations.insert("summary".into(), "x".repeat(10_000));
    let p = plan(&[], &[Ok(vec![alert])]);
    let reason = &p.add[0].reason;
    assert!(
        reason.len() <= crate::core::text::REASON_MAX && reason.ends_with("[cut, 10000 bytes]"),
        "{reason}"
    );
}
