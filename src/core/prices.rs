//! Hourly prices per instance type and market, from `[pools.<name>.prices]`: what a
//! scale-down consults to remove the most expensive of the equally safe nodes of a pool with
//! several instance types. Configuration, not a shipped table: prices differ by region and
//! change, and a stale table would silently pick the wrong node.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::model::Market;

/// One instance type's hourly prices (any currency, the same for every entry); a market left
/// out is unknown.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypePrices {
    /// On-demand price per hour.
    pub on_demand: Option<f64>,
    /// Spot price per hour (a typical one: spot prices move).
    pub spot: Option<f64>,
}

/// Prices by instance type.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
#[serde(transparent)]
pub struct Prices(pub BTreeMap<String, TypePrices>);

impl Prices {
    /// The hourly price of a node of `instance_type` bought in `market`, in millionths, for
    /// ordering; `None` when the type is unknown (a record from before fleets) or the price
    /// is not configured.
    pub fn hourly_micros(&self, instance_type: Option<&str>, market: Market) -> Option<u64> {
        let prices = self.0.get(instance_type?)?;
        let price = match market {
            Market::OnDemand => prices.on_demand,
            Market::Spot => prices.spot,
        }?;
        Some((price * 1_000_000.0).round() as u64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_price_is_known_only_for_a_configured_type_and_market() {
        let prices = Prices(BTreeMap::from([
            ("t3.small".to_string(), TypePrices { on_demand: Some(0.0208), spot: Some(0.0075) }),
            ("m7i.large".to_string(), TypePrices { on_demand: Some(0.1008), spot: None }),
        ]));
        assert_eq!(prices.hourly_micros(Some("t3.small"), Market::OnDemand), Some(20_800));
        assert_eq!(prices.hourly_micros(Some("t3.small"), Market::Spot), Some(7_500));
        assert_eq!(prices.hourly_micros(Some("m7i.large"), Market::Spot), None, "not configured");
        assert_eq!(prices.hourly_micros(Some("c7g.large"), Market::OnDemand), None, "unknown type");
        assert_eq!(prices.hourly_micros(None, Market::OnDemand), None, "type not recorded");
    }
}
