//! The Alertmanager sync: every `alertmanager.sync_interval` the stored signals follow what
//! Alertmanager's replicas report (the rule is `core::sync`), so a silence pauses scaling and a
//! lost post heals within one sweep. The webhook stays the fast path.
//!
//! A pause only removes signals: an operation in flight still finishes (a launch waits for
//! Ready, a drain completes or times out) and a pool below `min` is still refilled, since
//! neither needs a signal. When no replica answers, nothing is removed or added and signals
//! expire by `timing.signal_ttl`, the webhook-only behaviour; that is a degraded mode, logged
//! once, exported as `alertmanager_fallback` and shown by `/readyz`, not a readiness failure.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;
use tokio::sync::watch;
use tracing::{info, warn};

use super::audit::Audit;
use super::triggers::Triggers;
use crate::adapters::alertmanager::{AlertSource, SilenceInfo};
use crate::adapters::{AuditEvent, Clock, StateStore};
use crate::config::Config;
use crate::core::sync::{MutedAlert, ReplicaAnswer, SyncInput, SyncMode, SyncPlan, plan_sync};
use crate::core::time::Timestamp;
use crate::metrics::{Metrics, SyncChangeLabels};

/// What the last sync saw; `/readyz` shows it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct SyncStatus {
    /// `None` until the first sync, and for good when no Alertmanager is configured.
    pub mode: Option<SyncMode>,
    /// Pools paused by a silence, with the silence ids.
    pub paused: BTreeMap<String, BTreeSet<String>>,
    /// Why each replica that did not answer counts as unreachable (bounded texts).
    pub unreachable: Vec<String>,
}

impl SyncStatus {
    /// One line for `/readyz`.
    pub fn describe(&self) -> String {
        match self.mode {
            None => "alertmanager: not synced (webhook only; signals expire by timing.signal_ttl)".into(),
            Some(SyncMode::Synced { answered, replicas }) => {
                let paused: Vec<&str> = self.paused.keys().map(String::as_str).collect();
                let paused = if paused.is_empty() {
                    String::new()
                } else {
                    format!("; paused: {}", paused.join(", "))
                };
                format!("alertmanager: synced ({answered}/{replicas} replicas){paused}")
            }
            Some(SyncMode::Fallback { replicas }) => format!(
                "alertmanager: degraded, none of {replicas} replicas answers; signals expire by timing.signal_ttl"
            ),
        }
    }
}

/// How long unchanged answers may stand in for a full sync. A full sync reads the stored
/// signals (one DynamoDB query per pool) and then asks the replicas again; while the replicas'
/// answers stay exactly as at the last full sync, nothing can need changing except a signal
/// that expired by its TTL or was written from a late post, so a sweep costs one GET per
/// replica and no DynamoDB read, and such a signal is put right at most this late.
pub(super) const UNCHANGED_REFRESH: std::time::Duration = std::time::Duration::from_secs(60);

/// The sync's published status (the one piece of it the rest of the service reads).
pub(super) type StatusHandle = watch::Sender<SyncStatus>;

/// The settings the sync reads.
pub(super) struct SyncSettings {
    pools: BTreeSet<String>,
    default_pool: String,
    sync_interval: Duration,
    signal_ttl: Duration,
    dry_run: bool,
}

impl SyncSettings {
    /// The sync's part of the configuration.
    pub(super) fn of(config: &Config) -> Self {
        SyncSettings {
            pools: config.pools.keys().cloned().collect(),
            default_pool: config.default_pool.clone(),
            sync_interval: config.alertmanager.sync_interval,
            signal_ttl: config.timing.signal_ttl,
            dry_run: config.dry_run,
        }
    }
}

/// The edges the sync is started with.
pub(super) struct SyncEdges {
    /// Alertmanager's replicas.
    pub source: Arc<dyn AlertSource>,
    /// Where the signals are.
    pub store: Arc<dyn StateStore>,
    /// Now.
    pub clock: Arc<dyn Clock>,
    /// Pause and resume records.
    pub audit: Audit,
    /// The sync's metric families.
    pub metrics: Arc<Metrics>,
    /// Wakes the pools whose signals changed.
    pub triggers: Triggers,
    /// Where the status is published.
    pub status: StatusHandle,
    /// Stops the loop.
    pub shutdown: watch::Receiver<bool>,
}

/// The sync loop and the state only it keeps.
pub(super) struct AlertSync {
    settings: SyncSettings,
    edges: SyncEdges,
    /// Last published status: a change of mode, pause or replica is logged once.
    last: SyncStatus,
    /// Last contract problems logged, so a broken rule is reported once, not every sweep.
    last_invalid: Vec<String>,
    /// The answers of the last full sync whose writes all succeeded, and when it ran.
    settled: Option<(Vec<ReplicaAnswer>, Timestamp)>,
}

impl AlertSync {
    pub(super) fn new(settings: SyncSettings, edges: SyncEdges) -> Self {
        AlertSync { settings, edges, last: SyncStatus::default(), last_invalid: Vec::new(), settled: None }
    }

    /// Syncs every `sync_interval` until shutdown.
    pub(super) async fn run(mut self) {
        let mut shutdown = self.edges.shutdown.clone();
        let mut ticks = tokio::time::interval(self.settings.sync_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            self.sync_once().await;
        }
    }

    /// One sync: `None` when the replicas answer as at the last full sync (within
    /// [`UNCHANGED_REFRESH`]) or the stored signals cannot be read; otherwise a full sync.
    pub(super) async fn sync_once(&mut self) -> Option<SyncPlan> {
        let now = self.edges.clock.now();
        if let Some((answers, at)) = &self.settled {
            if now.since(*at) < UNCHANGED_REFRESH && &self.edges.source.alerts().await == answers {
                return None;
            }
        }
        self.full_sync(now).await
    }

    /// Reads the stored signals, then every replica, then applies the truth rule.
    async fn full_sync(&mut self, now: Timestamp) -> Option<SyncPlan> {
        let store = &self.edges.store;
        // Stored signals first: see `core::sync` for why the order matters.
        let reads = join_all(self.settings.pools.iter().map(|pool| store.active_signals(pool, now))).await;
        let mut stored = Vec::new();
        for read in reads {
            match read {
                Ok(signals) => stored.extend(signals),
                Err(error) => {
                    warn!(%error, "alertmanager sync skipped: cannot read the stored signals");
                    return None;
                }
            }
        }
        let answers = self.edges.source.alerts().await;
        let plan = plan_sync(SyncInput {
            stored: &stored,
            answers: &answers,
            default_pool: &self.settings.default_pool,
            pools: &self.settings.pools,
        });
        let applied = self.apply(&plan, now).await;
        self.report(&plan, &answers).await;
        self.settled = applied.then_some((answers, now));
        Some(plan)
    }

    /// Removes and adds the plan's signals, then triggers the pools touched; false when a
    /// write failed (the next sweep syncs in full again).
    async fn apply(&self, plan: &SyncPlan, now: Timestamp) -> bool {
        let store = &self.edges.store;
        let metrics = &self.edges.metrics.alert_sync;
        let mut touched = BTreeSet::new();
        let mut applied = true;
        for signal in &plan.remove {
            match store.delete_signal(&signal.pool, &signal.fingerprint).await {
                Ok(()) => {
                    metrics.signals.get_or_create(&SyncChangeLabels { change: "removed" }).inc();
                    let muted = plan.muted.iter().find(|m| m.fingerprint == signal.fingerprint);
                    info!(
                        pool = %signal.pool,
                        fingerprint = %signal.fingerprint,
                        alertname = %signal.alertname,
                        direction = signal.direction.as_str(),
                        cause = muted.map_or("not active in Alertmanager", |m| {
                            if m.silenced_by.is_empty() { "inhibited" } else { "silenced" }
                        }),
                        "signal removed by the alertmanager sync"
                    );
                    touched.insert(signal.pool.clone());
                }
                Err(error) => {
                    applied = false;
                    warn!(pool = %signal.pool, %error, "alertmanager sync cannot remove a signal")
                }
            }
        }
        let expires_at = now.plus(self.settings.signal_ttl);
        for signal in &plan.add {
            match store.put_signal(signal, expires_at).await {
                Ok(()) => {
                    metrics.signals.get_or_create(&SyncChangeLabels { change: "added" }).inc();
                    info!(
                        pool = %signal.pool,
                        fingerprint = %signal.fingerprint,
                        alertname = %signal.alertname,
                        direction = signal.direction.as_str(),
                        "signal added by the alertmanager sync: active in Alertmanager, no post received"
                    );
                    touched.insert(signal.pool.clone());
                }
                Err(error) => {
                    applied = false;
                    warn!(pool = %signal.pool, %error, "alertmanager sync cannot add a signal")
                }
            }
        }
        for pool in touched {
            self.edges.triggers.pool(&pool);
        }
        applied
    }

    /// Publishes the new status; logs, exports and audits what changed.
    async fn report(&mut self, plan: &SyncPlan, answers: &[ReplicaAnswer]) {
        let metrics = &self.edges.metrics.alert_sync;
        let unreachable: Vec<String> = answers.iter().filter_map(|a| a.as_ref().err().cloned()).collect();
        let answered = answers.len() - unreachable.len();
        metrics.replicas_up.set(answered as i64);
        let fallback = matches!(plan.mode, Some(SyncMode::Fallback { .. }));
        metrics.fallback.set(i64::from(fallback));
        // Without an answer the pauses are unknown: the last known ones stand.
        let paused = if fallback { self.last.paused.clone() } else { plan.paused() };
        let status = SyncStatus { mode: plan.mode, paused, unreachable };
        if status.mode.map(SyncMode::label) != self.last.mode.map(SyncMode::label)
            || status.unreachable.len() != self.last.unreachable.len()
        {
            if fallback {
                warn!(mode = "fallback", unreachable = ?status.unreachable, "{}", status.describe());
            } else {
                info!(mode = "synced", unreachable = ?status.unreachable, "{}", status.describe());
            }
        }
        if plan.invalid != self.last_invalid {
            for problem in &plan.invalid {
                warn!(%problem, "an active alert in Alertmanager breaks the alert contract; it is not a signal");
            }
            self.last_invalid = plan.invalid.clone();
        }
        let pools = &self.settings.pools;
        metrics.set_paused(pools.iter(), |pool| status.paused.contains_key(pool));
        for pool in pools {
            let (before, after) = (self.last.paused.get(pool), status.paused.get(pool));
            if before != after {
                self.audit_pause(pool, after, &plan.muted).await;
            }
        }
        self.edges.status.send_replace(status.clone());
        self.last = status;
    }

    /// Records a pause (with who silenced, why and until when) or a resume.
    async fn audit_pause(&self, pool: &str, silences: Option<&BTreeSet<String>>, muted: &[MutedAlert]) {
        let (action, reason_label, reason, detail) = match silences {
            Some(ids) => {
                let ids: Vec<String> = ids.iter().cloned().collect();
                let found: Vec<SilenceInfo> = match self.edges.source.silences(&ids).await {
                    Ok(found) => found,
                    Err(error) => {
                        warn!(pool, %error, "cannot read the silences pausing the pool");
                        Vec::new()
                    }
                };
                let muted: Vec<&MutedAlert> = muted.iter().filter(|m| m.pool == pool).collect();
                let reason = describe_silences(&ids, &found);
                ("pause", "silenced", reason, serde_json::json!({ "silences": found, "muted": muted }))
            }
            None => (
                "resume",
                "silence_ended",
                "no silence mutes the pool's alerts any more".to_string(),
                serde_json::Value::Null,
            ),
        };
        info!(pool, action, reason_label, %reason, "scaling decision");
        self.edges
            .audit
            .record(AuditEvent {
                at: self.edges.clock.now(),
                pool: pool.to_string(),
                kind: "decision".into(),
                action: action.into(),
                reason_label: reason_label.into(),
                reason,
                op_id: None,
                detail,
                dry_run: self.settings.dry_run,
            })
            .await;
    }
}

/// "paused by silence <id> (createdBy, comment, until <endsAt>)", one per silence.
pub fn describe_silences(ids: &[String], found: &[SilenceInfo]) -> String {
    let parts: Vec<String> = ids
        .iter()
        .map(|id| match found.iter().find(|s| &s.id == id) {
            Some(s) => {
                format!("paused by silence {id} ({}, {:?}, until {})", s.created_by, s.comment, s.ends_at)
            }
            None => format!("paused by silence {id}"),
        })
        .collect();
    parts.join("; ")
}

#[cfg(test)]
mod tests;
