//! The capacity cache: which (instance type, zone, market) offerings a launch may ask EC2
//! for, given the insufficient-capacity answers remembered in the pool state. One short
//! offering removes only itself, so a zone stays usable while any of its types can serve.

use super::model::{CapacityBackoff, Market};
use super::time::Timestamp;

/// Whether `backoff` rules out `instance_type` (`None`: the launch template's own type) in
/// (`az`, `market`) at `now`. A backoff without a type covers every type of its zone and
/// market.
pub fn blocks(
    backoff: &CapacityBackoff,
    instance_type: Option<&str>,
    az: &str,
    market: Market,
    now: Timestamp,
) -> bool {
    backoff.until > now
        && backoff.az == az
        && backoff.market == market
        && (backoff.instance_type.is_none() || backoff.instance_type.as_deref() == instance_type)
}

/// The pool's `instance_types` still open in (`az`, `market`) at `now`, in configured order;
/// `[None]` (the launch template's type) for a pool without a type list. Empty when every
/// offering there is backed off.
pub fn open_types(
    instance_types: &[String],
    az: &str,
    market: Market,
    backoffs: &[CapacityBackoff],
    now: Timestamp,
) -> Vec<Option<String>> {
    let types: Vec<Option<String>> = match instance_types.is_empty() {
        true => vec![None],
        false => instance_types.iter().cloned().map(Some).collect(),
    };
    types.into_iter().filter(|t| !backoffs.iter().any(|b| blocks(b, t.as_deref(), az, market, now))).collect()
}

/// Adds `failed` to `backoffs`: drops entries expired at `now`, and replaces an entry for the
/// same offering (the later answer wins), so the list stays one entry per offering.
pub fn remember(backoffs: &mut Vec<CapacityBackoff>, failed: CapacityBackoff, now: Timestamp) {
    backoffs.retain(|b| {
        b.until > now
            && !(b.instance_type == failed.instance_type && b.az == failed.az && b.market == failed.market)
    });
    backoffs.push(failed);
}

/// One line per offering backed off at `now`, for `status` and logs: `t3.small us-east-1a
/// spot until <time> (InsufficientInstanceCapacity)`.
pub fn describe(backoffs: &[CapacityBackoff], now: Timestamp) -> Vec<String> {
    backoffs
        .iter()
        .filter(|b| b.until > now)
        .map(|b| {
            let code = if b.code.is_empty() { "capacity" } else { b.code.as_str() };
            format!(
                "{} {} {} for {}s ({code})",
                b.instance_type.as_deref().unwrap_or("any-type"),
                b.az,
                b.market,
                b.until.since(now).as_secs()
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    const NOW: Timestamp = Timestamp::from_millis(1_000_000);

    fn backoff(instance_type: Option<&str>, az: &str, market: Market, until: Timestamp) -> CapacityBackoff {
        CapacityBackoff {
            instance_type: instance_type.map(str::to_string),
            az: az.into(),
            market,
            until,
            code: "InsufficientInstanceCapacity".into(),
        }
    }

    fn typed() -> Vec<String> {
        vec!["t3.small".into(), "t3a.small".into(), "m5.large".into()]
    }

    fn untyped() -> Vec<String> {
        Vec::new()
    }

    fn later() -> Timestamp {
        NOW.plus(Duration::from_secs(180))
    }

    #[test]
    fn a_short_offering_removes_only_itself() {
        let short = [backoff(Some("t3.small"), "a", Market::Spot, later())];
        let open = open_types(&typed(), "a", Market::Spot, &short, NOW);
        assert_eq!(open, vec![Some("t3a.small".to_string()), Some("m5.large".to_string())]);
        assert_eq!(open_types(&typed(), "a", Market::OnDemand, &short, NOW).len(), 3, "other market");
        assert_eq!(open_types(&typed(), "b", Market::Spot, &short, NOW).len(), 3, "other zone");
    }

    #[test]
    fn every_type_short_closes_the_zone_market() {
        let short: Vec<_> = ["t3.small", "t3a.small", "m5.large"]
            .map(|t| backoff(Some(t), "a", Market::Spot, later()))
            .to_vec();
        assert!(open_types(&typed(), "a", Market::Spot, &short, NOW).is_empty());
    }

    #[test]
    fn a_backoff_expires_at_its_instant() {
        let short = [backoff(Some("t3.small"), "a", Market::Spot, NOW)];
        assert_eq!(open_types(&typed(), "a", Market::Spot, &short, NOW).len(), 3);
        let one_ms = [backoff(Some("t3.small"), "a", Market::Spot, NOW.plus(Duration::from_millis(1)))];
        assert_eq!(open_types(&typed(), "a", Market::Spot, &one_ms, NOW).len(), 2);
    }

    #[test]
    fn an_untyped_backoff_covers_every_type() {
        let zone_wide = [backoff(None, "a", Market::Spot, later())];
        assert!(open_types(&typed(), "a", Market::Spot, &zone_wide, NOW).is_empty());
        assert!(open_types(&untyped(), "a", Market::Spot, &zone_wide, NOW).is_empty());
        assert_eq!(open_types(&untyped(), "b", Market::Spot, &zone_wide, NOW), vec![None]);
    }

    #[test]
    fn a_pool_without_types_asks_for_the_template_type_and_ignores_typed_backoffs() {
        assert_eq!(open_types(&untyped(), "a", Market::Spot, &[], NOW), vec![None]);
        let typed_short = [backoff(Some("t3.small"), "a", Market::Spot, later())];
        assert_eq!(open_types(&untyped(), "a", Market::Spot, &typed_short, NOW), vec![None]);
    }

    #[test]
    fn remember_keeps_one_entry_per_offering_and_drops_expired_ones() {
        let mut list = vec![
            backoff(Some("t3.small"), "a", Market::Spot, later()),
            backoff(Some("m5.large"), "b", Market::Spot, NOW),
            backoff(Some("t3.small"), "a", Market::OnDemand, later()),
        ];
        let renewed = NOW.plus(Duration::from_secs(300));
        remember(&mut list, backoff(Some("t3.small"), "a", Market::Spot, renewed), NOW);
        assert_eq!(
            list,
            vec![
                backoff(Some("t3.small"), "a", Market::OnDemand, later()),
                backoff(Some("t3.small"), "a", Market::Spot, renewed),
            ]
        );
    }

    #[test]
    fn describe_lists_live_offerings_with_their_reason() {
        let list = [
            backoff(Some("t3.small"), "a", Market::Spot, later()),
            backoff(None, "b", Market::OnDemand, later()),
            backoff(Some("m5.large"), "b", Market::Spot, NOW),
        ];
        assert_eq!(
            describe(&list, NOW),
            vec![
                "t3.small a spot for 180s (InsufficientInstanceCapacity)",
                "any-type b on-demand for 180s (InsufficientInstanceCapacity)"
            ]
        );
    }
}
