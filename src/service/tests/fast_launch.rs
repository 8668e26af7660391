//! The alert fast path (`reconcile::launch_from_memory`): a scale-up alert on a pool the last
//! sweep read is written ahead without reading first, and launched only once the fresh reads
//! that went out alongside the write agree; a stale memory never acts.

use std::sync::atomic::Ordering;
use std::time::Duration;

use super::super::pending::{SignalChange, WriteGuard};
use super::super::{ReconcileOutcome, Service};
use super::{Harness, firing, harness};
use crate::adapters::{Clock, PoolRecord, StateStore};
use crate::core::model::{Direction, LastScale, PoolState, Signal};

fn up(fingerprint: &str) -> Signal {
    firing(Direction::Up, fingerprint, 1).firing.remove(0)
}

/// Registers a scale-up signal write as the intake does and starts the pool's reconcile
/// while it is in flight.
fn alert_in_flight(h: &Harness, signal: &Signal) -> (WriteGuard, tokio::task::JoinHandle<ReconcileOutcome>) {
    let guard = h.service.inner.pending.register("workers", SignalChange::Fire(signal.clone()));
    let service: Service = h.service.clone();
    (guard, tokio::spawn(async move { service.reconcile("workers").await.unwrap() }))
}

/// Lets the spawned reconcile run until `done` holds (bounded: a reconcile on the test doubles
/// never waits on time, only on the pending write).
async fn until(mut done: impl FnMut() -> bool) {
    for _ in 0..1000 {
        if done() {
            return;
        }
        tokio::task::yield_now().await;
    }
    panic!("the reconcile never got there");
}

async fn land(h: &Harness, signal: &Signal, guard: WriteGuard) {
    h.store.put_signal(signal, crate::core::time::Timestamp::from_millis(2_000_000_000)).await.unwrap();
    guard.finish(true);
}

#[tokio::test]
async fn an_alert_on_a_remembered_quiet_pool_is_written_ahead_without_reading_first() {
    let h = harness(&[]);
    h.compute.add_instance("i-1", "us-east-1a", "workers");
    assert_eq!(h.reconcile().await, ReconcileOutcome::Held("no_signal"), "the sweep that remembers");
    let reads = h.store.record_reads.load(Ordering::SeqCst);
    h.clock.advance(Duration::from_secs(30));

    let signal = up("fp");
    let (guard, reconcile) = alert_in_flight(&h, &signal);
    until(|| h.store.record("workers").state.op.is_some()).await;
    assert!(!reconcile.is_finished(), "the launch waits for the alert's own write");
    assert_eq!(h.compute.launch_count(), 0, "nothing is launched on a signal that is not durable");
    land(&h, &signal, guard).await;

    assert!(matches!(reconcile.await.unwrap(), ReconcileOutcome::Acted { .. }));
    assert_eq!(h.compute.launch_count(), 1);
    assert_eq!(h.store.record_reads.load(Ordering::SeqCst), reads, "the pool record was not read first");
    let launched = h.compute.list_pool_now();
    assert!(
        launched.iter().any(|i| i.instance_id != "i-1" && i.az == "us-east-1b"),
        "the emptiest zone, as the ordinary path decides: {launched:?}"
    );
}

#[tokio::test]
async fn an_instance_list_gone_stale_takes_the_write_ahead_back_and_launches_nothing_past_max() {
    let h = harness(&[]);
    h.compute.add_instance("i-1", "us-east-1a", "workers");
    h.reconcile().await;
    // Three more instances appear without any lease being taken (max is 4).
    for id in ["i-2", "i-3", "i-4"] {
        h.compute.add_instance(id, "us-east-1b", "workers");
    }
    let token = h.store.record("workers").fencing_token;

    let signal = up("fp");
    let (guard, reconcile) = alert_in_flight(&h, &signal);
    until(|| h.store.record("workers").state.op.is_some()).await;
    land(&h, &signal, guard).await;

    assert_eq!(reconcile.await.unwrap(), ReconcileOutcome::Held("at_max"), "decided again from fresh reads");
    assert_eq!(h.compute.launch_count(), 0);
    let record = h.store.record("workers");
    assert_eq!(record.state.op, None, "the write-ahead is taken back");
    assert_eq!(record.lease, None, "and the lease given up");
    assert_eq!(record.fencing_token, token + 1, "one write ahead, fenced");
}

#[tokio::test]
async fn a_record_moved_on_by_another_replica_costs_one_failed_write_and_the_cooldown_holds() {
    let h = harness(&[]);
    h.reconcile().await;
    // Another replica scaled up a moment ago: a newer token, a cooldown the memory lacks.
    let now = h.clock.now();
    h.store.set_record(
        "workers",
        PoolRecord {
            fencing_token: 5,
            state: PoolState {
                last_scale: Some(LastScale { at: now, direction: Direction::Up }),
                ..PoolState::default()
            },
            ..PoolRecord::default()
        },
    );
    let writes = h.store.writes.load(Ordering::SeqCst);

    let signal = up("fp");
    let (guard, reconcile) = alert_in_flight(&h, &signal);
    land(&h, &signal, guard).await;

    assert_eq!(reconcile.await.unwrap(), ReconcileOutcome::Held("scale_up_cooldown"));
    assert_eq!(h.compute.launch_count(), 0);
    assert_eq!(h.store.record("workers").fencing_token, 5, "the stale write-ahead changed nothing");
    // The signal's own write, and no other.
    assert_eq!(h.store.writes.load(Ordering::SeqCst), writes + 1);
}

#[tokio::test]
async fn an_alert_whose_signal_write_fails_takes_the_write_ahead_back_and_launches_nothing() {
    let h = harness(&[]);
    h.reconcile().await;
    let (guard, reconcile) = alert_in_flight(&h, &up("fp"));
    until(|| h.store.record("workers").state.op.is_some()).await;
    guard.finish(false);

    assert_eq!(reconcile.await.unwrap(), ReconcileOutcome::Held("no_signal"));
    assert_eq!(h.compute.launch_count(), 0);
    assert_eq!(h.store.record("workers").state.op, None);
}

#[tokio::test]
async fn without_a_sweep_to_remember_the_alert_reads_first_as_before() {
    let h = harness(&[]);
    let signal = up("fp");
    let (guard, reconcile) = alert_in_flight(&h, &signal);
    until(|| h.store.record_reads.load(Ordering::SeqCst) == 1).await;
    assert_eq!(h.store.record("workers").state.op, None, "nothing is written ahead of the reads");
    land(&h, &signal, guard).await;
    assert!(matches!(reconcile.await.unwrap(), ReconcileOutcome::Acted { .. }));
    assert_eq!(h.store.record_reads.load(Ordering::SeqCst), 1);
    assert_eq!(h.compute.launch_count(), 1);
}
