//! The sync on the test doubles: a silence after a launch stops the next one, a resume
//! restarts scaling, a lost `resolved` heals, and no answer changes nothing.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use super::AlertSync;
use crate::adapters::StateStore;
use crate::adapters::alertmanager::SilenceInfo;
use crate::adapters::alertmanager::fake::FakeAlertSource;
use crate::core::model::Direction;
use crate::core::sync::{AlertState, ApiAlert, SyncMode};
use crate::service::ReconcileOutcome;
use crate::service::tests::{Harness, firing, harness};

fn alert(fingerprint: &str, state: AlertState, silenced_by: &[&str]) -> ApiAlert {
    ApiAlert {
        fingerprint: fingerprint.into(),
        labels: BTreeMap::from([
            ("alertname".to_string(), "WorkerCpuHigh".to_string()),
            ("autoscaler".to_string(), "scale-up".to_string()),
        ]),
        annotations: BTreeMap::from([("summary".to_string(), "CPU 85%".to_string())]),
        state,
        silenced_by: silenced_by.iter().map(|s| s.to_string()).collect(),
        inhibited_by: Vec::new(),
    }
}

/// Silence `s-1`, as `/api/v2/silences` lists it.
fn maintenance_silence() -> SilenceInfo {
    SilenceInfo {
        id: "s-1".into(),
        created_by: "ops@example.com".into(),
        comment: "maintenance".into(),
        ends_at: "2026-12-01T04:00:00.000Z".into(),
        state: "active".into(),
    }
}

fn setup() -> (Harness, Arc<FakeAlertSource>, AlertSync) {
    let h = harness(&[("K3S_AUTOSCALER__ALERTMANAGER__URLS", r#"["http://am:9093"]"#)]);
    let source = Arc::new(FakeAlertSource::default());
    let sync = h.service.alert_sync(source.clone());
    (h, source, sync)
}

async fn stored(h: &Harness) -> Vec<String> {
    let signals = h.store.active_signals("workers", crate::adapters::Clock::now(&*h.clock)).await.unwrap();
    signals.into_iter().map(|s| s.fingerprint).collect()
}

fn metric(h: &Harness, line: &str) -> bool {
    h.service.metrics().render().lines().any(|l| l == line)
}

#[tokio::test]
async fn a_silence_after_the_first_launch_stops_the_next_and_its_end_resumes() {
    let (h, source, mut sync) = setup();
    h.service.accept(firing(Direction::Up, "fp", 1)).await.unwrap();
    assert!(matches!(h.reconcile().await, ReconcileOutcome::Acted { .. }));
    assert_eq!(h.compute.launch_count(), 1);

    source.answer(vec![Ok(vec![alert("fp", AlertState::Suppressed, &["s-1"])])]);
    source.set_silences(vec![maintenance_silence()]);
    let plan = sync.sync_once().await.unwrap();
    assert_eq!(plan.remove.len(), 1);
    assert!(stored(&h).await.is_empty(), "the silenced signal is gone");
    assert!(metric(&h, r#"k3s_autoscaler_pool_paused{pool="workers"} 1"#));
    let pause = h.store.events().into_iter().find(|e| e.action == "pause").expect("pause audited");
    assert_eq!(pause.reason_label, "silenced");
    assert!(
        pause.reason.contains(
            "paused by silence s-1 (ops@example.com, \"maintenance\", until 2026-12-01T04:00:00.000Z)"
        ),
        "{}",
        pause.reason
    );
    assert_eq!(h.service.alert_sync_status().paused["workers"].len(), 1);

    // Five cooldowns later, still silenced: nothing more is launched.
    for _ in 0..5 {
        h.clock.advance(Duration::from_secs(61));
        sync.sync_once().await.unwrap();
        assert_eq!(h.reconcile().await, ReconcileOutcome::Held("no_signal"));
    }
    assert_eq!(h.compute.launch_count(), 1);
    assert_eq!(h.store.events().iter().filter(|e| e.action == "pause").count(), 1, "audited once");

    // The silence ends: the alert is active again and scaling resumes at the next sync.
    source.answer(vec![Ok(vec![alert("fp", AlertState::Active, &[])])]);
    let plan = sync.sync_once().await.unwrap();
    assert_eq!(plan.add.len(), 1);
    assert_eq!(stored(&h).await, ["fp"]);
    assert!(metric(&h, r#"k3s_autoscaler_pool_paused{pool="workers"} 0"#));
    assert!(h.store.events().iter().any(|e| e.action == "resume" && e.reason_label == "silence_ended"));
    assert!(matches!(h.reconcile().await, ReconcileOutcome::Acted { .. }));
    assert_eq!(h.compute.launch_count(), 2);
}

#[tokio::test]
async fn a_lost_resolved_post_is_healed_by_an_empty_answer() {
    let (h, source, mut sync) = setup();
    h.service.accept(firing(Direction::Up, "fp", 1)).await.unwrap();
    source.answer(vec![Ok(Vec::new())]);
    sync.sync_once().await.unwrap();
    assert!(stored(&h).await.is_empty());
    assert!(metric(&h, r#"k3s_autoscaler_alert_sync_signals_total{change="removed"} 1"#));
    assert_eq!(h.reconcile().await, ReconcileOutcome::Held("no_signal"));
}

#[tokio::test]
async fn no_replica_answering_keeps_every_signal_and_says_degraded() {
    let (h, source, mut sync) = setup();
    h.service.accept(firing(Direction::Up, "fp", 1)).await.unwrap();
    source.answer(vec![Err("connection refused".into()), Err("HTTP 500".into())]);
    sync.sync_once().await.unwrap();
    assert_eq!(stored(&h).await, ["fp"]);
    assert!(metric(&h, "k3s_autoscaler_alertmanager_fallback 1"));
    assert!(metric(&h, "k3s_autoscaler_alertmanager_replicas_up 0"));
    let status = h.service.alert_sync_status();
    assert_eq!(status.mode, Some(SyncMode::Fallback { replicas: 2 }));
    assert!(status.describe().contains("degraded"), "{}", status.describe());
    // One answers again: back to synced.
    source.answer(vec![Err("connection refused".into()), Ok(vec![alert("fp", AlertState::Active, &[])])]);
    sync.sync_once().await.unwrap();
    assert!(metric(&h, "k3s_autoscaler_alertmanager_fallback 0"));
    assert_eq!(h.service.alert_sync_status().describe(), "alertmanager: synced (1/2 replicas)");
}

#[tokio::test]
async fn a_store_outage_skips_the_sync_and_removes_nothing() {
    let (h, source, mut sync) = setup();
    h.service.accept(firing(Direction::Up, "fp", 1)).await.unwrap();
    source.answer(vec![Ok(Vec::new())]);
    h.store.set_down(true);
    assert!(sync.sync_once().await.is_none());
    h.store.set_down(false);
    assert_eq!(stored(&h).await, ["fp"]);
}

#[tokio::test]
async fn status_shows_who_paused_the_pool_why_until_when_and_what_is_muted() {
    let (h, source, _) = setup();
    let mut inhibited = alert("down", AlertState::Suppressed, &[]);
    inhibited.labels.insert("autoscaler".into(), "scale-down".into());
    inhibited.inhibited_by = vec!["fp".into()];
    source.answer(vec![Ok(vec![alert("fp", AlertState::Suppressed, &["s-1"]), inhibited])]);
    source.set_silences(vec![maintenance_silence()]);
    let mut report = crate::status::collect(h.store.as_ref(), h.service.config(), 5).await.unwrap();
    crate::status::add_alertmanager(&mut report, source.as_ref(), h.service.config()).await;
    let text = crate::status::render_text(&report);
    assert!(text.contains("alertmanager: synced (1/1 replicas); paused: workers"), "{text}");
    assert!(
        text.contains(
            "PAUSED: paused by silence s-1 (ops@example.com, \"maintenance\", until 2026-12-01T04:00:00.000Z)"
        ),
        "{text}"
    );
    assert!(text.contains("muted: scale-up WorkerCpuHigh (silenced by s-1)"), "{text}");
    assert!(text.contains("muted: scale-down WorkerCpuHigh (inhibited by fp)"), "{text}");
}

#[tokio::test]
async fn unchanged_answers_skip_the_store_until_the_refresh_and_a_change_syncs_at_once() {
    let (h, source, mut sync) = setup();
    h.service.accept(firing(Direction::Up, "fp", 1)).await.unwrap();
    source.answer(vec![Ok(vec![alert("fp", AlertState::Active, &[])])]);
    assert!(sync.sync_once().await.is_some(), "the first sync is full");
    // The same answers: no store read (it is down and nothing fails), nothing to do.
    h.store.set_down(true);
    assert!(sync.sync_once().await.is_none());
    h.store.set_down(false);
    // A lost post that expired meanwhile is put back at the refresh.
    h.store.delete_signal("workers", "fp").await.unwrap();
    assert!(sync.sync_once().await.is_none());
    h.clock.advance(super::UNCHANGED_REFRESH);
    assert_eq!(sync.sync_once().await.unwrap().add.len(), 1);
    assert_eq!(stored(&h).await, ["fp"]);
    // A change in the answers (a silence) syncs at once.
    source.answer(vec![Ok(vec![alert("fp", AlertState::Suppressed, &["s-1"])])]);
    assert_eq!(sync.sync_once().await.unwrap().remove.len(), 1);
    assert!(stored(&h).await.is_empty());
}
