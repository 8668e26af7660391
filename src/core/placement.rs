//! Where to add nodes and which node to remove, so the pool stays spread across zones.

use std::collections::BTreeMap;

use super::model::{CapacityBackoff, DrainOp, DrainPhase, LaunchRequest, Market, PoolPolicy, Worker};
use super::offerings::open_types;
use super::prices::Prices;
use super::time::Timestamp;

/// Splits `count` new nodes over the pool's zones, one at a time to the zone with the fewest
/// workers (ties by zone name), skipping zones where every offering (instance type, market)
/// is backed off; a market stays in a request while any of its types is open.
/// Returns no requests when no zone has a usable market.
pub fn plan_launch(
    count: u32,
    policy: &PoolPolicy,
    workers: &[Worker],
    backoffs: &[CapacityBackoff],
    now: Timestamp,
) -> Vec<LaunchRequest> {
    let mut zones: Vec<(usize, &str, &str, Vec<Market>)> = policy
        .subnets
        .iter()
        .filter_map(|(az, subnet)| {
            let markets: Vec<Market> = policy
                .capacity
                .markets()
                .iter()
                .copied()
                .filter(|m| !open_types(&policy.instance_types, az, *m, backoffs, now).is_empty())
                .collect();
            let population = workers.iter().filter(|w| &w.az == az).count();
            (!markets.is_empty()).then_some((population, az.as_str(), subnet.as_str(), markets))
        })
        .collect();
    if zones.is_empty() {
        return Vec::new();
    }
    let mut allocated: BTreeMap<usize, u32> = BTreeMap::new();
    for _ in 0..count {
        let (index, _) = zones
            .iter()
            .enumerate()
            .min_by_key(|(_, (population, az, _, _))| (*population, *az))
            .expect("zones is not empty");
        zones[index].0 += 1;
        *allocated.entry(index).or_default() += 1;
    }
    allocated
        .into_iter()
        .map(|(index, count)| {
            let (_, az, subnet, markets) = &zones[index];
            LaunchRequest {
                az: az.to_string(),
                subnet_id: subnet.to_string(),
                count,
                markets: markets.clone(),
            }
        })
        .collect()
}

/// Why no node could be chosen for removal: each worker's reason, for logs and records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoCandidate {
    /// (instance id, reason) for every worker that was passed over.
    pub passed_over: Vec<(String, String)>,
}

impl NoCandidate {
    /// One-line summary such as `"3 workers: 2 not registered, 1 pod without controller"`.
    pub fn summary(&self) -> String {
        let mut counts: BTreeMap<&str, usize> = BTreeMap::new();
        for (_, reason) in &self.passed_over {
            *counts.entry(reason.as_str()).or_default() += 1;
        }
        let parts: Vec<String> = counts.iter().map(|(r, n)| format!("{n} {r}")).collect();
        format!("{} workers: {}", self.passed_over.len(), parts.join(", "))
    }
}

/// Reason a worker was passed over because its zone would be emptied.
pub const WOULD_EMPTY_ZONE: &str = "would empty its zone while another has two or more";

/// Picks the node to drain: a safe, Ready, uncordoned node in the zone with the most serving
/// nodes, never one whose removal leaves its zone without a serving node while another zone
/// has two or more; among equals, the most expensive by `prices` (a node whose price is not
/// configured counts as the cheapest), then on-demand before spot, then fewest pods, then
/// the youngest.
/// Zones are counted in serving (Ready, schedulable) nodes: a booting, NotReady or cordoned
/// node takes no pods, so it does not keep a zone alive.
pub fn choose_drain_candidate(workers: &[Worker], prices: &Prices) -> Result<DrainOp, NoCandidate> {
    let mut population: BTreeMap<&str, usize> = BTreeMap::new();
    for w in workers.iter().filter(|w| w.serves()) {
        *population.entry(w.az.as_str()).or_default() += 1;
    }
    let mut passed_over = Vec::new();
    let mut eligible = Vec::new();
    for w in workers {
        match removal_blocker(w, &population) {
            Some(reason) => passed_over.push((w.instance_id.clone(), reason)),
            None => eligible.push(w),
        }
    }
    eligible
        .into_iter()
        .min_by_key(|w| {
            let node = w.node.as_ref().expect("eligible workers have nodes");
            (
                std::cmp::Reverse(population.get(w.az.as_str()).copied().unwrap_or_default()),
                std::cmp::Reverse(prices.hourly_micros(w.instance_type.as_deref(), w.market).unwrap_or(0)),
                w.market == Market::Spot,
                node.evictable_pods,
                std::cmp::Reverse(w.launched_at),
                w.instance_id.clone(),
            )
        })
        .map(|w| DrainOp {
            instance_id: w.instance_id.clone(),
            node: w.node.as_ref().map(|n| n.name.clone()).unwrap_or_default(),
            az: w.az.clone(),
            phase: DrainPhase::Started,
            repair: false,
        })
        .ok_or(NoCandidate { passed_over })
}

fn removal_blocker(worker: &Worker, population: &BTreeMap<&str, usize>) -> Option<String> {
    let Some(node) = &worker.node else {
        return Some("not registered as a node".into());
    };
    if let Some(first) = node.blockers.first() {
        return Some(first.clone());
    }
    if !node.ready {
        return Some("node not ready".into());
    }
    if node.cordoned {
        return Some("node already cordoned".into());
    }
    let own = population.get(worker.az.as_str()).copied().unwrap_or_default();
    let another_has_two = population.iter().any(|(az, n)| *az != worker.az && *n >= 2);
    if own == 1 && another_has_two {
        return Some(WOULD_EMPTY_ZONE.into());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::fixtures::{policy, worker};
    use crate::core::model::CapacityPreference;

    const NOW: Timestamp = Timestamp::from_millis(1_000_000);

    fn backoff(az: &str, market: Market, until: u64) -> CapacityBackoff {
        CapacityBackoff {
            instance_type: None,
            az: az.into(),
            market,
            until: Timestamp::from_millis(until),
            code: String::new(),
        }
    }

    #[test]
    fn launch_goes_to_the_least_populated_zone() {
        let workers = [worker("i-1").in_az("a").build(), worker("i-2").in_az("a").build()];
        let plan = plan_launch(1, &policy(), &workers, &[], NOW);
        assert_eq!(plan.len(), 1);
        assert_eq!((plan[0].az.as_str(), plan[0].subnet_id.as_str(), plan[0].count), ("b", "subnet-b", 1));
        assert_eq!(plan[0].markets, vec![Market::Spot, Market::OnDemand]);
    }

    #[test]
    fn ties_break_by_zone_name_and_steps_spread_across_zones() {
        let plan = plan_launch(3, &policy(), &[], &[], NOW);
        let split: Vec<(&str, u32)> = plan.iter().map(|r| (r.az.as_str(), r.count)).collect();
        assert_eq!(split, vec![("a", 2), ("b", 1)]);
    }

    #[test]
    fn backed_off_market_is_skipped_until_it_expires() {
        let backoffs = [backoff("a", Market::Spot, NOW.as_millis() + 1)];
        let plan = plan_launch(1, &policy(), &[], &backoffs, NOW);
        assert_eq!((plan[0].az.as_str(), plan[0].markets.clone()), ("a", vec![Market::OnDemand]));
        let expired = [backoff("a", Market::Spot, NOW.as_millis())];
        let plan = plan_launch(1, &policy(), &[], &expired, NOW);
        assert_eq!(plan[0].markets, vec![Market::Spot, Market::OnDemand]);
    }

    #[test]
    fn zone_with_every_market_backed_off_is_avoided_even_if_emptiest() {
        let mut p = policy();
        p.capacity = CapacityPreference::SpotOnly;
        let workers = [worker("i-1").in_az("b").build()];
        let plan = plan_launch(1, &p, &workers, &[backoff("a", Market::Spot, u64::MAX)], NOW);
        assert_eq!(plan[0].az, "b");
        let all = [backoff("a", Market::Spot, u64::MAX), backoff("b", Market::Spot, u64::MAX)];
        assert!(plan_launch(1, &p, &workers, &all, NOW).is_empty());
    }

    #[test]
    fn a_zone_stays_while_any_of_its_types_is_open() {
        let p = PoolPolicy { instance_types: vec!["t3.small".into(), "t3a.small".into()], ..policy() };
        let typed = |t: &str| CapacityBackoff {
            instance_type: Some(t.into()),
            az: "a".into(),
            market: Market::Spot,
            until: Timestamp::from_millis(u64::MAX),
            code: "InsufficientInstanceCapacity".into(),
        };
        let plan = plan_launch(1, &p, &[], &[typed("t3.small")], NOW);
        assert_eq!(
            (plan[0].az.as_str(), plan[0].markets.clone()),
            ("a", vec![Market::Spot, Market::OnDemand])
        );
        let plan = plan_launch(1, &p, &[], &[typed("t3.small"), typed("t3a.small")], NOW);
        assert_eq!((plan[0].az.as_str(), plan[0].markets.clone()), ("a", vec![Market::OnDemand]));
    }

    #[test]
    fn on_demand_pool_never_asks_for_spot() {
        let mut p = policy();
        p.capacity = CapacityPreference::OnDemand;
        assert_eq!(plan_launch(1, &p, &[], &[], NOW)[0].markets, vec![Market::OnDemand]);
    }

    #[test]
    fn drain_prefers_the_most_populated_zone() {
        let workers = [
            worker("i-a1").in_az("a").node().build(),
            worker("i-b1").in_az("b").node().build(),
            worker("i-b2").in_az("b").node().build(),
        ];
        assert_eq!(choose_drain_candidate(&workers, &Prices::default()).unwrap().az, "b");
    }

    #[test]
    fn drain_never_empties_a_zone_while_another_has_two() {
        let workers = [
            worker("i-a1").in_az("a").node().build(),
            worker("i-b1").in_az("b").node().blocked("pod without controller").build(),
            worker("i-b2").in_az("b").node().blocked("pod without controller").build(),
        ];
        let err = choose_drain_candidate(&workers, &Prices::default()).unwrap_err();
        assert!(err.passed_over.contains(&("i-a1".into(), WOULD_EMPTY_ZONE.into())));
        assert_eq!(
            err.summary(),
            "3 workers: 2 pod without controller, 1 would empty its zone while another has two or more"
        );
    }

    #[test]
    fn zones_count_serving_nodes_only() {
        // Zone b has two workers but one is cordoned: its other node is the last one serving
        // there, so it stays even though it is the cheapest to remove.
        let workers = [
            worker("i-a1").in_az("a").node().pods(3).launched(1).build(),
            worker("i-a2").in_az("a").node().pods(3).launched(1).build(),
            worker("i-b1").in_az("b").node().pods(0).launched(9).build(),
            worker("i-b2").in_az("b").node().cordoned().build(),
        ];
        let chosen = choose_drain_candidate(&workers, &Prices::default()).unwrap();
        assert_eq!(chosen.az, "a", "{chosen:?}");
        let mut unready = workers.clone();
        unready[3] = worker("i-b2").in_az("b").node().not_ready().build();
        assert_eq!(choose_drain_candidate(&unready, &Prices::default()).unwrap().az, "a");
        let mut booting = workers.clone();
        booting[3] = worker("i-b2").in_az("b").build();
        assert_eq!(choose_drain_candidate(&booting, &Prices::default()).unwrap().az, "a");
    }

    #[test]
    fn a_zone_may_empty_when_no_other_zone_has_two() {
        // Each zone has one node: either may go (the youngest does), emptying its zone.
        for (young, old) in [("i-a1", "i-b1"), ("i-b1", "i-a1")] {
            let workers = [
                worker(young).in_az(&young[2..3]).node().launched(200).build(),
                worker(old).in_az(&old[2..3]).node().launched(100).build(),
            ];
            assert_eq!(
                choose_drain_candidate(&workers, &Prices::default()).map(|d| d.instance_id).ok().as_deref(),
                Some(young)
            );
        }
    }

    #[test]
    fn drain_prefers_on_demand_then_fewest_pods_then_youngest() {
        let spot_empty = worker("i-spot").in_az("a").spot().node().pods(0).build();
        let od_busy = worker("i-od-busy").in_az("a").node().pods(5).build();
        let od_idle_old = worker("i-od-old").in_az("a").node().pods(1).launched(100).build();
        let od_idle_young = worker("i-od-young").in_az("a").node().pods(1).launched(200).build();
        let workers = [spot_empty, od_busy, od_idle_old, od_idle_young];
        assert_eq!(choose_drain_candidate(&workers, &Prices::default()).unwrap().instance_id, "i-od-young");
        assert_eq!(
            choose_drain_candidate(&workers[..3], &Prices::default()).unwrap().instance_id,
            "i-od-old"
        );
        assert_eq!(
            choose_drain_candidate(&workers[..2], &Prices::default()).unwrap().instance_id,
            "i-od-busy"
        );
        assert_eq!(choose_drain_candidate(&workers[..1], &Prices::default()).unwrap().instance_id, "i-spot");
    }

    #[test]
    fn a_mixed_type_pool_drains_its_most_expensive_safe_node_first() {
        use crate::core::prices::TypePrices;
        let prices = Prices(BTreeMap::from([
            ("t3.small".to_string(), TypePrices { on_demand: Some(0.0208), spot: Some(0.0075) }),
            ("m7i.large".to_string(), TypePrices { on_demand: Some(0.1008), spot: Some(0.0400) }),
        ]));
        let small_od = worker("i-small-od").of_type("t3.small").node().pods(1).launched(300).build();
        let large_spot = worker("i-large-spot").of_type("m7i.large").spot().node().pods(4).build();
        let large_od_blocked = worker("i-large-od").of_type("m7i.large").node().blocked("local data").build();
        let unknown = worker("i-unknown").of_type("c7g.large").node().pods(0).launched(900).build();
        let workers = [small_od.clone(), large_spot.clone(), large_od_blocked, unknown.clone()];
        // The large spot node costs most of the safe ones, despite spot and more pods.
        assert_eq!(choose_drain_candidate(&workers, &prices).unwrap().instance_id, "i-large-spot");
        // Without it, the priced on-demand node before the one whose price is unknown.
        assert_eq!(
            choose_drain_candidate(&[small_od.clone(), unknown.clone()], &prices).unwrap().instance_id,
            "i-small-od"
        );
        // Without prices, the old order: fewest pods, then the youngest.
        assert_eq!(
            choose_drain_candidate(&[small_od, unknown], &Prices::default()).unwrap().instance_id,
            "i-unknown"
        );
        // Price never overrides the zone rule: the busier zone goes first.
        let cheap_b1 = worker("i-b1").in_az("b").of_type("t3.small").node().build();
        let cheap_b2 = worker("i-b2").in_az("b").of_type("t3.small").node().build();
        assert_eq!(choose_drain_candidate(&[large_spot, cheap_b1, cheap_b2], &prices).unwrap().az, "b");
    }

    #[test]
    fn unregistered_unready_cordoned_and_blocked_nodes_are_passed_over_with_reasons() {
        let workers = [
            worker("i-1").in_az("a").build(),
            worker("i-2").in_az("a").node().not_ready().build(),
            worker("i-3").in_az("a").node().cordoned().build(),
            worker("i-4").in_az("a").node().blocked("annotated scale-down-disabled").build(),
        ];
        let err = choose_drain_candidate(&workers, &Prices::default()).unwrap_err();
        let reasons: Vec<&str> = err.passed_over.iter().map(|(_, r)| r.as_str()).collect();
        assert_eq!(
            reasons,
            vec![
                "not registered as a node",
                "node not ready",
                "node already cordoned",
                "annotated scale-down-disabled"
            ]
        );
        let picked =
            choose_drain_candidate(&[worker("i-5").in_az("a").node().build()], &Prices::default()).unwrap();
        let expected = DrainOp {
            instance_id: "i-5".into(),
            node: "node-i-5".into(),
            az: "a".into(),
            phase: DrainPhase::Started,
            repair: false,
        };
        assert_eq!(picked, expected);
    }
}
