//! The truth rule: which stored signals Alertmanager's own view keeps, removes or adds.
//!
//! Alertmanager sends nothing for a silenced or inhibited alert (not even `resolved`) and can
//! lose a post, so the webhook's copy of the signals drifts. Each sweep the service reads
//! `/api/v2/alerts` from every replica and hands the answers here:
//! - a stored signal stays while its alert is active (or not yet processed) in *any* replica
//!   that answered; otherwise it goes (resolved, silenced or inhibited);
//! - an active alert of ours with no stored signal becomes one (a lost post heals);
//! - a replica that could not be read, or answered something that is not the API's JSON,
//!   counts as unreachable, never as "no alerts";
//! - when no replica answered, nothing changes: signals expire by `signal_ttl` as before.
//!
//! The stored signals must be read *before* the replicas are asked: Alertmanager holds an
//! alert before it posts it, so every signal read then is in the answers unless it ended.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

use super::alert::{LABEL_AUTOSCALER, LABEL_POOL, LABEL_STEP, parse_step, reason_of};
use super::model::{Direction, Signal};

/// An alert's state in Alertmanager's API v2 (`status.state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertState {
    /// Firing and neither silenced nor inhibited.
    Active,
    /// Silenced or inhibited (`silencedBy` / `inhibitedBy` say by what).
    Suppressed,
    /// Received but not yet run through silences and inhibitions.
    Unprocessed,
}

/// One alert as `GET /api/v2/alerts` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiAlert {
    /// Alertmanager's fingerprint: the key of our stored signal.
    pub fingerprint: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    pub annotations: BTreeMap<String, String>,
    /// `status.state`.
    pub state: AlertState,
    /// `status.silencedBy`: ids of the silences muting it.
    pub silenced_by: Vec<String>,
    /// `status.inhibitedBy`: fingerprints of the alerts inhibiting it.
    pub inhibited_by: Vec<String>,
}

/// One replica's answer: its alerts, or why it counts as unreachable (bounded text).
pub type ReplicaAnswer = Result<Vec<ApiAlert>, String>;

/// Everything the truth rule depends on, all plain data.
#[derive(Debug, Clone, Copy)]
pub struct SyncInput<'a> {
    /// Stored, unexpired signals of every pool, read before the replicas were asked.
    pub stored: &'a [Signal],
    /// One answer per configured replica.
    pub answers: &'a [ReplicaAnswer],
    /// Pool of alerts without a `pool` label.
    pub default_pool: &'a str,
    /// Configured pools.
    pub pools: &'a BTreeSet<String>,
}

/// Whose view the signals follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "mode", rename_all = "snake_case")]
pub enum SyncMode {
    /// At least one replica answered: Alertmanager's view is the truth.
    Synced {
        /// Replicas that answered.
        answered: usize,
        /// Replicas configured.
        replicas: usize,
    },
    /// No replica answered: webhook-only, signals expire by `signal_ttl`.
    Fallback {
        /// Replicas configured.
        replicas: usize,
    },
}

impl SyncMode {
    /// Stable label for logs and metrics.
    pub fn label(self) -> &'static str {
        match self {
            SyncMode::Synced { .. } => "synced",
            SyncMode::Fallback { .. } => "fallback",
        }
    }
}

/// An alert of ours that Alertmanager mutes: its signal must not act.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MutedAlert {
    /// Pool.
    pub pool: String,
    /// Direction it asks for.
    pub direction: Direction,
    /// Alert name.
    pub alertname: String,
    /// Fingerprint.
    pub fingerprint: String,
    /// Silences muting it (every replica's, merged).
    pub silenced_by: Vec<String>,
    /// Alerts inhibiting it (every replica's, merged).
    pub inhibited_by: Vec<String>,
}

/// What the sync does to the stored signals, and what it learned.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SyncPlan {
    /// Whose view this plan follows; `None` only for the default plan.
    pub mode: Option<SyncMode>,
    /// Stored signals whose alert is no longer active and unmuted anywhere.
    pub remove: Vec<Signal>,
    /// Active alerts that have no stored signal (a lost or not yet repeated post).
    pub add: Vec<Signal>,
    /// Alerts of ours muted by a silence or an inhibition.
    pub muted: Vec<MutedAlert>,
    /// Active alerts of ours that break the alert contract (never added), one line each.
    pub invalid: Vec<String>,
}

impl SyncPlan {
    /// Pools paused by a silence, with the silence ids. An inhibition alone is not a pause:
    /// it is the shipped rule keeping scale-down quiet while the same pool scales up.
    pub fn paused(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut paused: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for muted in self.muted.iter().filter(|m| !m.silenced_by.is_empty()) {
            paused.entry(muted.pool.clone()).or_default().extend(muted.silenced_by.iter().cloned());
        }
        paused
    }
}

/// One fingerprint's alert across the replicas that answered.
struct Merged<'a> {
    alert: &'a ApiAlert,
    active: bool,
    unprocessed: bool,
    silenced_by: BTreeSet<&'a str>,
    inhibited_by: BTreeSet<&'a str>,
}

/// Applies the truth rule (see the module doc).
pub fn plan_sync(input: SyncInput<'_>) -> SyncPlan {
    let replicas = input.answers.len();
    let answered: Vec<&Vec<ApiAlert>> = input.answers.iter().filter_map(|a| a.as_ref().ok()).collect();
    if answered.is_empty() {
        return SyncPlan { mode: Some(SyncMode::Fallback { replicas }), ..SyncPlan::default() };
    }
    let mut merged: BTreeMap<&str, Merged<'_>> = BTreeMap::new();
    for alert in answered.iter().flat_map(|alerts| alerts.iter()) {
        let entry = merged.entry(alert.fingerprint.as_str()).or_insert_with(|| Merged {
            alert,
            active: false,
            unprocessed: false,
            silenced_by: BTreeSet::new(),
            inhibited_by: BTreeSet::new(),
        });
        match alert.state {
            AlertState::Active => {
                entry.active = true;
                entry.alert = alert;
            }
            AlertState::Unprocessed => entry.unprocessed = true,
            AlertState::Suppressed => {
                entry.silenced_by.extend(alert.silenced_by.iter().map(String::as_str));
                entry.inhibited_by.extend(alert.inhibited_by.iter().map(String::as_str));
            }
        }
    }
    let mut plan = SyncPlan {
        mode: Some(SyncMode::Synced { answered: answered.len(), replicas }),
        ..SyncPlan::default()
    };
    let stored: BTreeSet<(&str, &str)> =
        input.stored.iter().map(|s| (s.pool.as_str(), s.fingerprint.as_str())).collect();
    plan.remove = input
        .stored
        .iter()
        .filter(|s| !merged.get(s.fingerprint.as_str()).is_some_and(|m| m.active || m.unprocessed))
        .cloned()
        .collect();
    for m in merged.values() {
        let signal = match signal_of(m.alert, input.default_pool, input.pools) {
            Ok(Some(signal)) => signal,
            Ok(None) => continue,
            Err(problem) if m.active => {
                plan.invalid.push(problem);
                continue;
            }
            Err(_) => continue,
        };
        if m.active {
            if !stored.contains(&(signal.pool.as_str(), signal.fingerprint.as_str())) {
                plan.add.push(signal);
            }
        } else if !m.unprocessed {
            plan.muted.push(MutedAlert {
                pool: signal.pool,
                direction: signal.direction,
                alertname: signal.alertname,
                fingerprint: signal.fingerprint,
                silenced_by: m.silenced_by.iter().map(|s| s.to_string()).collect(),
                inhibited_by: m.inhibited_by.iter().map(|s| s.to_string()).collect(),
            });
        }
    }
    plan
}

/// The signal an API alert stands for, per the alert contract: `Ok(None)` when it is not
/// ours, `Err` naming the problem when it breaks the contract.
fn signal_of(
    alert: &ApiAlert,
    default_pool: &str,
    pools: &BTreeSet<String>,
) -> Result<Option<Signal>, String> {
    let Some(direction) = alert.labels.get(LABEL_AUTOSCALER).and_then(|v| Direction::from_label(v)) else {
        return Ok(None);
    };
    let alertname = alert.labels.get("alertname").cloned().unwrap_or_default();
    let pool = alert.labels.get(LABEL_POOL).map_or(default_pool, String::as_str);
    let problem = |what: String| {
        super::text::bounded(
            &format!("alert {alertname} ({}): {what}", alert.fingerprint),
            super::text::NAME_MAX,
        )
    };
    if !pools.contains(pool) {
        return Err(problem(format!("unknown pool {pool:?} (not in the config's pools)")));
    }
    let step = parse_step(alert.labels.get(LABEL_STEP)).map_err(problem)?;
    Ok(Some(Signal {
        pool: pool.to_string(),
        direction,
        step,
        reason: reason_of(&alert.annotations, &alertname),
        fingerprint: alert.fingerprint.clone(),
        alertname,
    }))
}

#[cfg(test)]
mod tests;
