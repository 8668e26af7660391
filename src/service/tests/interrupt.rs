//! Interruption handling on the test doubles: cordon at once, replacement in the emptier
//! zone, a spot warning drains regardless of candidate rules while a rebalance respects them,
//! a warning upgrades a rebalance, repeats harmless, unmanaged and unverified notices ignored,
//! rebalances capped per pool, dry-run.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::{Harness, harness_with};
use crate::adapters::Clock;
use crate::adapters::StateStore;
use crate::adapters::ec2::compute::{InstanceState, ManagedInstance};
use crate::adapters::ec2::fake::capacity_error;
use crate::adapters::kube::cluster::Cluster;
use crate::adapters::kube::fake::FakeCluster;
use crate::core::drainability::PodFacts;
use crate::core::ec2_event::Ec2Event;
use crate::core::interruption::{InterruptPhase, LaunchClaim, Replacement, ReplacementSkip};
use crate::core::model::Market;

fn spot(instance_id: &str) -> Ec2Event {
    Ec2Event::SpotInterruption { instance_id: instance_id.into(), action: "terminate".into(), event_id: None }
}

/// Spot workers i-a1, i-a2 and i-a3 in zone a (i-a1 runs a pod with no controller, which
/// would block a normal scale-down, and EC2 has marked it for interruption), i-b1 in zone b.
fn pool(h: &Harness, cluster: &FakeCluster) {
    for (id, az) in
        [("i-a1", "us-east-1a"), ("i-a2", "us-east-1a"), ("i-a3", "us-east-1a"), ("i-b1", "us-east-1b")]
    {
        h.compute.add_spot_instance(id, az, "workers");
        cluster.add_node(&format!("node-{id}"), az, id, true);
    }
    h.compute.set_spot_status("i-a1", "marked-for-termination");
    let bare = PodFacts { namespace: "shop".into(), name: "bare".into(), ..PodFacts::default() };
    cluster.add_pod("node-i-a1", bare);
}

async fn progress(h: &Harness) -> bool {
    h.service.progress_interruptions().await.unwrap()
}

#[tokio::test]
async fn spot_interruption_cordons_replaces_drains_and_ignores_the_repeat() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster);
    let summary = h.service.accept_ec2_event(spot("i-a1")).await.unwrap();
    assert_eq!(summary.outcome, "handled");
    assert!(cluster.node("node-i-a1").unwrap().unschedulable, "cordoned before answering");
    assert!(progress(&h).await, "replacement launched, drain next");
    let launches = h.compute.launches.lock().unwrap().clone();
    assert_eq!(launches.len(), 1);
    assert_eq!(launches[0].az, "us-east-1b", "zone a keeps two nodes, zone b gets the replacement");
    assert_eq!(launches[0].client_token, "interrupt-i-a1-spot");
    assert!(progress(&h).await, "the pod with no controller is evicted anyway");
    assert_eq!(cluster.evictions.lock().unwrap().as_slice(), ["shop/bare"]);
    assert!(!progress(&h).await, "empty: terminated and closed");
    assert!(h.compute.list_pool_now().iter().all(|i| i.instance_id != "i-a1"));
    assert_eq!(cluster.deleted_nodes.lock().unwrap().as_slice(), ["node-i-a1"]);
    let record = h.store.interruption("i-a1").unwrap();
    assert_eq!(record.phase, InterruptPhase::Done);
    assert!(matches!(record.replacement, Replacement::Launched { .. }));

    let repeat = h.service.accept_ec2_event(spot("i-a1")).await.unwrap();
    assert_eq!(repeat.outcome, "ignored", "the instance is gone: nothing to do");
    assert_eq!(h.compute.launch_count(), 1);
    let actions: Vec<String> =
        h.sink.0.lock().unwrap().iter().map(|e| format!("{}:{}", e.kind, e.action)).collect();
    assert_eq!(
        actions,
        ["decision:interrupt", "outcome:replace", "outcome:interrupt"],
        "every event reaches the sink"
    );
}

#[tokio::test]
async fn a_repeated_event_while_handling_changes_nothing() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster);
    h.service.accept_ec2_event(spot("i-a1")).await.unwrap();
    progress(&h).await;
    let writes = h.store.writes.load(Ordering::SeqCst);
    let repeat = h.service.accept_ec2_event(spot("i-a1")).await.unwrap();
    assert_eq!(repeat.outcome, "duplicate");
    assert_eq!(h.store.writes.load(Ordering::SeqCst), writes + 1, "only the refused conditional put");
    progress(&h).await;
    assert_eq!(h.compute.launch_count(), 1, "no second replacement");
}

#[tokio::test]
async fn a_pdb_that_never_frees_up_strands_the_pod_and_nothing_is_terminated() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster);
    let guarded = PodFacts {
        namespace: "shop".into(),
        name: "db".into(),
        pdb_blocks: true,
        has_pdb: true,
        ..PodFacts::default()
    };
    cluster.add_pod("node-i-a1", guarded);
    h.service.accept_ec2_event(spot("i-a1")).await.unwrap();
    progress(&h).await;
    progress(&h).await;
    h.clock.advance(std::time::Duration::from_secs(121));
    assert!(!progress(&h).await);
    let record = h.store.interruption("i-a1").unwrap();
    assert!(record.outcome.unwrap().contains("shop/db"), "the stranded pod is reported");
    assert!(
        h.compute.list_pool_now().iter().any(|i| i.instance_id == "i-a1" && i.state != InstanceState::Gone)
    );
    assert!(cluster.event_reasons().contains(&"InterruptionStranded"));
}

#[tokio::test]
async fn unmanaged_instances_and_other_events_change_nothing() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster);
    let writes = h.store.writes.load(Ordering::SeqCst);
    assert_eq!(h.service.accept_ec2_event(spot("i-stranger")).await.unwrap().outcome, "ignored");
    let other = Ec2Event::Other { detail_type: "EC2 Instance State-change Notification".into() };
    assert_eq!(h.service.accept_ec2_event(other).await.unwrap().outcome, "ignored");
    assert_eq!(h.store.writes.load(Ordering::SeqCst), writes);
    assert!(cluster.nodes.lock().unwrap().iter().all(|n| !n.unschedulable));
}

#[tokio::test]
async fn rebalance_cordon_only_cordons_and_closes() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster);
    let event = Ec2Event::Rebalance { instance_id: "i-b1".into(), event_id: None };
    assert_eq!(h.service.accept_ec2_event(event).await.unwrap().outcome, "handled");
    assert!(!progress(&h).await);
    assert!(cluster.node("node-i-b1").unwrap().unschedulable);
    assert_eq!(h.compute.launch_count(), 0);
    assert!(cluster.evictions.lock().unwrap().is_empty());
}

#[tokio::test]
async fn rebalance_replace_drains_after_the_replacement_is_ready() {
    let (h, cluster) = harness_with(&[("K3S_AUTOSCALER__INTERRUPTION__REBALANCE", "replace")]);
    pool(&h, &cluster);
    let web = PodFacts {
        namespace: "shop".into(),
        name: "web".into(),
        controller_kind: Some("ReplicaSet".into()),
        ..PodFacts::default()
    };
    cluster.add_pod("node-i-a2", web);
    h.service.accept_ec2_event(rebalance("i-a2")).await.unwrap();
    progress(&h).await;
    progress(&h).await;
    assert!(cluster.evictions.lock().unwrap().is_empty(), "waits for the replacement");
    let replacement = h.compute.launches.lock().unwrap().len();
    assert_eq!(replacement, 1);
    join_replacement(&h, &cluster, "i-a2");
    progress(&h).await;
    assert_eq!(cluster.evictions.lock().unwrap().as_slice(), ["shop/web"]);
}

#[tokio::test]
async fn dry_run_records_the_would_have_decision_and_touches_nothing() {
    let (h, cluster) = harness_with(&[("K3S_AUTOSCALER__DRY_RUN", "true")]);
    pool(&h, &cluster);
    assert_eq!(h.service.accept_ec2_event(spot("i-a1")).await.unwrap().outcome, "dry_run");
    assert!(!progress(&h).await);
    assert!(h.store.interruption("i-a1").is_none());
    assert!(!cluster.node("node-i-a1").unwrap().unschedulable);
    assert_eq!(h.compute.launch_count(), 0);
    let events = h.store.events();
    assert!(events.iter().any(|e| e.action == "interrupt" && e.dry_run));
}

#[tokio::test]
async fn status_lists_open_interruptions_per_pool() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster);
    h.service.accept_ec2_event(spot("i-a1")).await.unwrap();
    let report = crate::status::collect(h.store.as_ref(), h.service.config(), 5).await.unwrap();
    assert_eq!(report[0].interruptions.len(), 1);
    let text = crate::status::render_text(&report);
    assert!(text.contains("interruption: spot_interruption i-a1 on node-i-a1"), "{text}");
    assert!(text.contains("replacement in us-east-1b (spot then on-demand)"), "{text}");
    while progress(&h).await {}
    let report = crate::status::collect(h.store.as_ref(), h.service.config(), 5).await.unwrap();
    assert!(report[0].interruptions.is_empty(), "closed ones are not listed");
}

#[tokio::test]
async fn a_node_uncordoned_meanwhile_is_cordoned_again_before_evicting() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster);
    h.service.accept_ec2_event(spot("i-a1")).await.unwrap();
    cluster.nodes.lock().unwrap().iter_mut().for_each(|n| n.unschedulable = false);
    progress(&h).await;
    progress(&h).await;
    assert!(cluster.node("node-i-a1").unwrap().unschedulable);
    assert_eq!(cluster.evictions.lock().unwrap().as_slice(), ["shop/bare"]);
}

/// Found by the fault soak (seed 11): an operator removed the pool label from the node, so the
/// pool's node list no longer shows it, and the node is schedulable again. The drain must
/// still cordon it before evicting, else the ReplicaSet puts the pods straight back.
#[tokio::test]
async fn a_node_missing_from_the_pool_list_is_cordoned_before_evicting() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster);
    h.service.accept_ec2_event(spot("i-a1")).await.unwrap();
    cluster.nodes.lock().unwrap().iter_mut().for_each(|n| n.unschedulable = false);
    cluster.unlabelled.lock().unwrap().push("node-i-a1".into());
    progress(&h).await;
    progress(&h).await;
    assert_eq!(cluster.evictions.lock().unwrap().as_slice(), ["shop/bare"]);
    assert!(cluster.node("node-i-a1").unwrap().unschedulable, "evicted from a schedulable node");
}

/// The Node deleted by hand under a spot drain: nothing to cordon (404), the drain goes on
/// and the record still finishes (nothing wedged).
#[tokio::test]
async fn a_node_deleted_under_a_spot_drain_does_not_wedge_it() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster);
    h.service.accept_ec2_event(spot("i-a1")).await.unwrap();
    cluster.nodes.lock().unwrap().retain(|n| n.name != "node-i-a1");
    let mut open = true;
    for _ in 0..5 {
        open = progress(&h).await;
        if !open {
            break;
        }
    }
    assert!(!open, "the interruption finished");
    assert!(h.compute.list_pool_now().iter().all(|i| i.instance_id != "i-a1"), "instance terminated");
}

/// Found by the fault soak (seed 11, with fleet launches): the spot replacement's CreateFleet
/// launched but its answer was lost, and the record's deadline passed before the next pass.
/// Asking the on-demand market then would launch a second replacement: an unknown outcome
/// never moves on to another market.
#[tokio::test]
async fn a_replacement_whose_answer_was_lost_is_never_launched_again_in_another_market() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster);
    h.service.accept_ec2_event(spot("i-a1")).await.unwrap();
    h.compute.lose_answers.store(true, Ordering::SeqCst);
    h.clock.advance(std::time::Duration::from_secs(121));
    progress(&h).await;
    progress(&h).await;
    let replacements: Vec<_> = h
        .compute
        .list_pool_now()
        .into_iter()
        .filter(|i| i.op_id.as_deref().is_some_and(|op| op.starts_with("interrupt-i-a1")))
        .collect();
    assert_eq!(replacements.len(), 1, "one replacement asked, {replacements:?} launched");
}

/// The replacements EC2 holds for the interruption of `instance_id`.
fn replacements(h: &Harness, instance_id: &str) -> Vec<ManagedInstance> {
    let op = format!("interrupt-{instance_id}");
    h.compute.list_pool_now().into_iter().filter(|i| i.op_id.as_deref() == Some(op.as_str())).collect()
}

/// Found by the fault soak (seed 11): two replicas took the same launch step at once. One's
/// spot request failed while the other's copy of it (same ClientToken: EC2 only replays a
/// request that succeeded) launched; the first then asked on-demand, and one interruption
/// got two replacements. The launch step is now claimed: the second replica waits.
#[tokio::test]
async fn two_replicas_racing_one_interruption_launch_one_replacement() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster);
    let other = h.replica();
    h.service.accept_ec2_event(spot("i-a1")).await.unwrap();
    h.compute.fail_next(Market::Spot, capacity_error());
    let gate = Arc::new(Semaphore::new(0));
    *h.compute.gate.lock().unwrap() = Some(gate.clone());

    let first = progress(&h);
    let second = async {
        // The first replica's spot request is in flight; now the second replica's pass runs,
        // and the requests are answered once it has sent its own or finished without one.
        while h.compute.launch_count() < 1 {
            tokio::task::yield_now().await;
        }
        let pass = other.progress_interruptions();
        tokio::pin!(pass);
        let sent_too = async {
            while h.compute.launch_count() < 2 {
                tokio::task::yield_now().await;
            }
        };
        let finished = tokio::select! {
            done = &mut pass => Some(done),
            () = sent_too => None,
        };
        gate.add_permits(16);
        match finished {
            Some(done) => done,
            None => pass.await,
        }
    };
    let (first, second) = tokio::join!(first, second);
    assert!(first && second.unwrap(), "the drain is still ahead");

    let launched = replacements(&h, "i-a1");
    assert_eq!(launched.len(), 1, "one interruption, one replacement: {launched:?}");
    let markets: Vec<Market> = h.compute.launches.lock().unwrap().iter().map(|l| l.market).collect();
    assert_eq!(markets, [Market::Spot, Market::OnDemand], "only the claim holder asked EC2");
    let record = h.store.interruption("i-a1").unwrap();
    let Replacement::Launched { instances } = &record.replacement else { panic!("{:?}", record.replacement) };
    assert_eq!(instances[0].instance_id, launched[0].instance_id);
    assert_eq!(record.launch_claim, None, "released with the outcome");
}

/// Lost answers, as the soak injects them: on-demand was asked after spot failed and its
/// answer was lost; the next pass started over at spot, which had capacity again, and the
/// interruption got a spot replacement next to the on-demand one it did not know about.
#[tokio::test]
async fn a_lost_answer_is_asked_again_in_its_own_market_not_from_the_first() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster);
    h.service.accept_ec2_event(spot("i-a1")).await.unwrap();
    h.compute.fail_next(Market::Spot, capacity_error());
    h.compute.lose_answers.store(true, Ordering::SeqCst);
    assert!(progress(&h).await);
    let record = h.store.interruption("i-a1").unwrap();
    assert!(
        matches!(record.replacement, Replacement::Planned { asking: Some(Market::OnDemand), .. }),
        "the market that may have launched is on record: {:?}",
        record.replacement
    );
    assert_eq!(record.launch_claim, None, "any replica may ask again");

    h.compute.lose_answers.store(false, Ordering::SeqCst);
    assert!(progress(&h).await);
    let launched = replacements(&h, "i-a1");
    assert_eq!(launched.len(), 1, "{launched:?}");
    assert_eq!(launched[0].market, Market::OnDemand);
    let tokens: Vec<String> =
        h.compute.launches.lock().unwrap().iter().map(|l| l.client_token.clone()).collect();
    assert_eq!(
        tokens,
        ["interrupt-i-a1-spot", "interrupt-i-a1-on-demand"],
        "adopted by its tag, not asked again"
    );
    let record = h.store.interruption("i-a1").unwrap();
    let Replacement::Launched { instances } = &record.replacement else { panic!("{:?}", record.replacement) };
    assert_eq!(instances[0].instance_id, launched[0].instance_id);
}

/// A race the fault soak's schedule allows (a scale-up alert during a spot warning): the
/// replacement was planned with room under `max`, the pool scaled up to `max` before the
/// launch step ran, and the replacement then took the pool past it. The launch step counts the pool again, under the pool's lease.
#[tokio::test]
async fn a_replacement_planned_before_the_pool_filled_up_is_not_launched_past_max() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster);
    h.service.accept_ec2_event(spot("i-a1")).await.unwrap();
    let record = h.store.interruption("i-a1").unwrap();
    assert!(matches!(record.replacement, Replacement::Planned { .. }), "3 staying of max 4: room for one");
    h.compute.add_instance("i-scaled-up", "us-east-1b", "workers");

    assert!(progress(&h).await, "the drain goes on");
    assert_eq!(h.compute.launch_count(), 0, "4 staying of max 4: nothing launched");
    let record = h.store.interruption("i-a1").unwrap();
    assert!(
        matches!(
            record.replacement,
            Replacement::Skipped { why: ReplacementSkip::AtMax { staying: 4, max: 4 } }
        ),
        "{:?}",
        record.replacement
    );
    assert_eq!(h.store.record("workers").lease, None, "the pool lease was only for the step");
}

/// A pool busy under its lease this moment delays the replacement launch to the next pass.
#[tokio::test]
async fn a_replacement_waits_while_another_holder_has_the_pool_lease() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster);
    h.service.accept_ec2_event(spot("i-a1")).await.unwrap();
    let other = h.replica();
    let now = h.clock.now();
    let (lease, _) = h.store.acquire("workers", other.owner(), now, Duration::from_secs(30)).await.unwrap();
    assert!(progress(&h).await);
    assert_eq!(h.compute.launch_count(), 0, "the pool is leased by the other replica");
    h.store.release(&lease).await.unwrap();
    assert!(progress(&h).await);
    assert_eq!(replacements(&h, "i-a1").len(), 1);
}

/// A replica that died holding the claim delays the replacement by `lease_ttl`, never blocks
/// it: after that the next replica asks the market the dead one was asking.
#[tokio::test]
async fn a_claim_left_by_a_dead_replica_expires_and_the_launch_goes_on() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster);
    h.service.accept_ec2_event(spot("i-a1")).await.unwrap();
    let (mut record, version) = h.store.interruption_with_version("i-a1").unwrap();
    record.launch_claim = Some(LaunchClaim {
        owner: "dead-replica".into(),
        until: h.clock.now().plus(Duration::from_secs(30)),
    });
    h.store.save_interruption(&record, version).await.unwrap();

    assert!(progress(&h).await);
    assert_eq!(h.compute.launch_count(), 0, "the claim is still live");
    h.clock.advance(Duration::from_secs(31));
    assert!(progress(&h).await);
    assert_eq!(replacements(&h, "i-a1").len(), 1);
}

/// The soak's untraced "evictions from a node that was not cordoned" (seed 11, before the
/// launch claim): a pool drain of a node was under way when EC2 warned its instance; the pool
/// drain then hit a pod it may not evict and aborted, uncordoning the node while the
/// interrupt worker was evicting from it. A node with an open interruption stays cordoned.
#[tokio::test]
async fn a_pool_drain_that_aborts_leaves_a_spot_warned_node_cordoned() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster);
    let web = |name: &str| PodFacts {
        namespace: "shop".into(),
        name: name.into(),
        controller_kind: Some("ReplicaSet".into()),
        has_pdb: true,
        ..PodFacts::default()
    };
    cluster.add_pod("node-i-a2", web("web-1"));
    cluster.add_pod("node-i-a3", web("web-2"));
    *cluster.pdb_budget.lock().unwrap() = Some(0);
    h.service.accept(super::firing(crate::core::model::Direction::Down, "fp-down", 1)).await.unwrap();
    h.reconcile().await;
    assert!(cluster.node("node-i-a2").unwrap().unschedulable, "the pool drains i-a2; its PDB holds the pod");
    assert!(h.store.record("workers").state.op.is_some(), "drain in flight");

    h.compute.set_spot_status("i-a2", "marked-for-termination");
    assert_eq!(h.service.accept_ec2_event(spot("i-a2")).await.unwrap().outcome, "handled");
    let bare = PodFacts { namespace: "shop".into(), name: "bare".into(), ..PodFacts::default() };
    cluster.add_pod("node-i-a2", bare);
    h.reconcile().await;
    assert!(h.store.record("workers").state.op.is_none(), "the pool drain aborted on the bare pod");
    assert!(cluster.node("node-i-a2").unwrap().unschedulable, "left cordoned for the interruption");
    assert!(
        h.store
            .events()
            .iter()
            .any(|e| e.reason.contains("node left cordoned (an interruption of instance i-a2")),
        "the outcome says why"
    );
}

fn rebalance(instance_id: &str) -> Ec2Event {
    Ec2Event::Rebalance { instance_id: instance_id.into(), event_id: None }
}

/// Gives the replacement launched for `instance_id` a Ready node.
fn join_replacement(h: &Harness, cluster: &FakeCluster, instance_id: &str) {
    let op = format!("interrupt-{instance_id}");
    let new =
        h.compute.list_pool_now().into_iter().find(|i| i.op_id.as_deref() == Some(op.as_str())).unwrap();
    cluster.add_node(&format!("node-{}", new.instance_id), &new.az, &new.instance_id, true);
}

#[tokio::test]
async fn rebalance_drain_respects_the_blockers_and_names_the_pod_that_held_it() {
    let (h, cluster) = harness_with(&[("K3S_AUTOSCALER__INTERRUPTION__REBALANCE", "replace")]);
    pool(&h, &cluster);
    assert_eq!(h.service.accept_ec2_event(rebalance("i-a1")).await.unwrap().outcome, "handled");
    progress(&h).await;
    join_replacement(&h, &cluster, "i-a1");
    let open = progress(&h).await;
    assert!(
        cluster.evictions.lock().unwrap().is_empty(),
        "a pod with no controller is never evicted for a rebalance"
    );
    assert!(!open, "held: the record closes");
    let record = h.store.interruption("i-a1").unwrap();
    assert_eq!(record.phase, InterruptPhase::Done);
    let outcome = record.outcome.unwrap();
    assert!(outcome.contains("shop/bare: pod without a controller"), "{outcome}");
    assert!(cluster.node("node-i-a1").unwrap().unschedulable, "stays cordoned, as cordon-only leaves it");
    assert!(cluster.event_reasons().contains(&"InterruptionHeld"), "{:?}", cluster.event_reasons());
    assert!(h.compute.list_pool_now().iter().any(|i| i.instance_id == "i-a1"), "nothing terminated");
    let held = h.store.events().into_iter().find(|e| e.reason_label == "held").expect("audit outcome held");
    assert!(held.reason.contains("shop/bare"), "{}", held.reason);
}

#[tokio::test]
async fn a_spot_warning_speeds_up_an_open_rebalance_replace_keeping_its_replacement() {
    let (h, cluster) = harness_with(&[("K3S_AUTOSCALER__INTERRUPTION__REBALANCE", "replace")]);
    pool(&h, &cluster);
    h.service.accept_ec2_event(rebalance("i-a1")).await.unwrap();
    progress(&h).await;
    assert_eq!(h.compute.launch_count(), 1, "the rebalance launched its replacement");
    h.clock.advance(std::time::Duration::from_secs(30));
    let warned_at = h.service.now();
    assert_eq!(h.service.accept_ec2_event(spot("i-a1")).await.unwrap().outcome, "upgraded");
    let record = h.store.interruption("i-a1").unwrap();
    assert_eq!(record.kind, crate::core::interruption::InterruptKind::Spot);
    assert_eq!(record.deadline, warned_at.plus(crate::core::interruption::SPOT_NOTICE));
    // The replacement is not Ready, yet the node drains now, blockers overridden.
    while progress(&h).await {}
    assert_eq!(cluster.evictions.lock().unwrap().as_slice(), ["shop/bare"]);
    assert!(h.compute.list_pool_now().iter().all(|i| i.instance_id != "i-a1"), "terminated");
    let launches = h.compute.launches.lock().unwrap().clone();
    assert_eq!(launches.len(), 1, "never a second replacement: {launches:?}");
    assert_eq!(launches[0].op_id, "interrupt-i-a1");
}

#[tokio::test]
async fn a_rebalance_after_the_spot_warning_and_a_repeated_warning_change_nothing() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster);
    h.service.accept_ec2_event(spot("i-a1")).await.unwrap();
    let before = h.store.interruption("i-a1").unwrap();
    assert_eq!(h.service.accept_ec2_event(rebalance("i-a1")).await.unwrap().outcome, "duplicate");
    assert_eq!(h.service.accept_ec2_event(spot("i-a1")).await.unwrap().outcome, "duplicate");
    assert_eq!(h.store.interruption("i-a1").unwrap(), before);
}

#[tokio::test]
async fn unverified_notices_change_nothing() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster);
    h.compute.add_instance("i-od", "us-east-1b", "workers");
    cluster.add_node("node-i-od", "us-east-1b", "i-od", true);
    h.compute.set_spot_status("i-a2", "fulfilled");
    let writes = h.store.writes.load(Ordering::SeqCst);
    for event in [spot("i-od"), rebalance("i-od"), spot("i-a2"), spot("i-a3")] {
        let summary = h.service.accept_ec2_event(event).await.unwrap();
        assert_eq!(summary.outcome, "unverified", "{summary:?}");
    }
    assert_eq!(h.store.writes.load(Ordering::SeqCst), writes, "nothing recorded");
    assert!(cluster.nodes.lock().unwrap().iter().all(|n| !n.unschedulable), "nothing cordoned");
    assert!(!progress(&h).await);
    assert_eq!(h.compute.launch_count(), 0);
}

#[tokio::test]
async fn rebalances_are_capped_per_pool_while_their_nodes_are_out_of_service() {
    let (h, cluster) = harness_with(&[]);
    pool(&h, &cluster);
    assert_eq!(h.service.accept_ec2_event(rebalance("i-b1")).await.unwrap().outcome, "handled");
    assert!(!progress(&h).await, "cordon-only closes at once");
    let capped = h.service.accept_ec2_event(rebalance("i-a2")).await.unwrap();
    assert_eq!(capped.outcome, "capped");
    assert!(capped.reason.contains("max_rebalance_per_pool = 1"), "{}", capped.reason);
    assert!(!cluster.node("node-i-a2").unwrap().unschedulable);
    assert_eq!(h.service.accept_ec2_event(rebalance("i-b1")).await.unwrap().outcome, "duplicate");
    // A verified spot warning is never capped.
    assert_eq!(h.service.accept_ec2_event(spot("i-a1")).await.unwrap().outcome, "handled");
    // An operator uncordons the first node: the slot is free again.
    cluster.set_unschedulable("node-i-b1", false).await.unwrap();
    assert_eq!(h.service.accept_ec2_event(rebalance("i-a2")).await.unwrap().outcome, "handled");
}
