//! `k3s-autoscaler status`: what each pool is doing, read from the state store.

use std::collections::BTreeSet;
use std::fmt::Write;

use serde::Serialize;

use crate::adapters::alertmanager::AlertSource;
use crate::adapters::{AuditEvent, StateStore, StoreError};
use crate::config::Config;
use crate::core::interruption::Interruption;
use crate::core::model::{Operation, Signal};
use crate::core::sync::{MutedAlert, SyncInput, plan_sync};
use crate::service::{SyncStatus, describe_silences};

/// One pool's status.
#[derive(Debug, Serialize)]
pub struct PoolStatus {
    /// Pool name.
    pub pool: String,
    /// Lease holder and expiry (RFC 3339), if held.
    pub lease: Option<(String, String)>,
    /// Fencing token.
    pub fencing_token: u64,
    /// In-flight operation.
    pub operation: Option<Operation>,
    /// Interruptions being handled (outside the one-op rule).
    pub interruptions: Vec<Interruption>,
    /// Last completed action and when.
    pub last_scale: Option<(String, String)>,
    /// Workers counted at the last write.
    pub node_count: u32,
    /// Active signals.
    pub signals: Vec<SignalStatus>,
    /// Recent decisions and outcomes, newest first.
    pub events: Vec<AuditEvent>,
    /// Alertmanager's view (see [`add_alertmanager`]); `None` when not configured.
    pub alertmanager: Option<String>,
    /// "paused by silence <id> (createdBy, comment, until)", when a silence pauses the pool.
    pub paused_by: Option<String>,
    /// The pool's scaling alerts that Alertmanager mutes (silenced or inhibited).
    pub muted: Vec<MutedAlert>,
    /// Offerings (instance type, zone, market) skipped for lack of capacity, with time left
    /// and EC2's error code.
    pub backed_off: Vec<String>,
}

/// An active signal.
#[derive(Debug, Serialize)]
pub struct SignalStatus {
    /// scale-up or scale-down.
    pub direction: String,
    /// Nodes asked for.
    pub step: u32,
    /// Alert name.
    pub alertname: String,
    /// Human reason.
    pub reason: String,
}

impl From<Signal> for SignalStatus {
    fn from(s: Signal) -> Self {
        SignalStatus {
            direction: s.direction.as_str().into(),
            step: s.step,
            alertname: s.alertname,
            reason: s.reason,
        }
    }
}

/// Reads every configured pool's status.
pub async fn collect(
    store: &dyn StateStore,
    config: &Config,
    events: usize,
) -> Result<Vec<PoolStatus>, StoreError> {
    let now = crate::adapters::Clock::now(&crate::adapters::SystemClock);
    let open = store.open_interruptions().await?;
    let mut report = Vec::new();
    for pool in config.pools.keys() {
        let record = store.read_pool(pool).await?;
        let signals = store.active_signals(pool, now).await?;
        report.push(PoolStatus {
            pool: pool.clone(),
            lease: record.lease.as_ref().map(|(owner, until)| (owner.clone(), until.to_rfc3339())),
            fencing_token: record.fencing_token,
            operation: record.state.op.clone(),
            interruptions: open.iter().filter(|(i, _)| &i.pool == pool).map(|(i, _)| i.clone()).collect(),
            last_scale: record
                .state
                .last_scale
                .map(|l| (l.direction.as_str().to_string(), l.at.to_rfc3339())),
            node_count: record.node_count,
            signals: signals.into_iter().map(SignalStatus::from).collect(),
            events: store.recent_events(pool, events).await?,
            alertmanager: None,
            paused_by: None,
            muted: Vec::new(),
            backed_off: crate::core::offerings::describe(&record.state.backoffs, now),
        });
    }
    Ok(report)
}

/// Adds Alertmanager's view to the report: which pools a silence pauses (who, why, until
/// when: `/api/v2/silences` is read only when one does) and which alerts are muted.
pub async fn add_alertmanager(report: &mut [PoolStatus], source: &dyn AlertSource, config: &Config) {
    let answers = source.alerts().await;
    let pools: BTreeSet<String> = config.pools.keys().cloned().collect();
    let plan = plan_sync(SyncInput {
        stored: &[],
        answers: &answers,
        default_pool: &config.default_pool,
        pools: &pools,
    });
    let paused = plan.paused();
    let ids: Vec<String> = paused.values().flatten().cloned().collect();
    let silences = if ids.is_empty() { Vec::new() } else { source.silences(&ids).await.unwrap_or_default() };
    let unreachable = answers.iter().filter_map(|a| a.as_ref().err().cloned()).collect();
    let view = SyncStatus { mode: plan.mode, paused: paused.clone(), unreachable };
    for pool in report {
        pool.alertmanager = Some(view.describe());
        pool.muted = plan.muted.iter().filter(|m| m.pool == pool.pool).cloned().collect();
        pool.paused_by = paused
            .get(&pool.pool)
            .map(|ids| describe_silences(&ids.iter().cloned().collect::<Vec<_>>(), &silences));
    }
}

/// Human-readable rendering of [`collect`]'s report.
pub fn render_text(report: &[PoolStatus]) -> String {
    let mut out = String::new();
    for pool in report {
        let _ = writeln!(
            out,
            "pool {} ({} workers at last write, fencing token {})",
            pool.pool, pool.node_count, pool.fencing_token
        );
        match &pool.lease {
            Some((owner, until)) => _ = writeln!(out, "  lease: held by {owner} until {until}"),
            None => _ = writeln!(out, "  lease: free"),
        }
        match &pool.operation {
            Some(op) => {
                _ = writeln!(
                    out,
                    "  in flight: {} {} since {} ({})",
                    op.kind.label(),
                    op.id,
                    op.started_at,
                    op.reason
                )
            }
            None => _ = writeln!(out, "  in flight: nothing"),
        }
        for i in &pool.interruptions {
            let node = i.node.as_deref().unwrap_or("(no node)");
            let _ = writeln!(
                out,
                "  interruption: {} {} on {node} since {}, deadline {}; {}",
                i.kind.label(),
                i.instance_id,
                i.received_at,
                i.deadline,
                i.replacement
            );
        }
        if let Some((direction, at)) = &pool.last_scale {
            let _ = writeln!(out, "  last action: {direction} at {at}");
        }
        for offering in &pool.backed_off {
            let _ = writeln!(out, "  backed off: {offering}");
        }
        if let Some(alertmanager) = &pool.alertmanager {
            let _ = writeln!(out, "  {alertmanager}");
        }
        if let Some(paused) = &pool.paused_by {
            let _ = writeln!(out, "  PAUSED: {paused}");
        }
        for m in &pool.muted {
            let by = if m.silenced_by.is_empty() {
                format!("inhibited by {}", m.inhibited_by.join(", "))
            } else {
                format!("silenced by {}", m.silenced_by.join(", "))
            };
            let _ = writeln!(out, "  muted: {} {} ({by})", m.direction.as_str(), m.alertname);
        }
        let _ = writeln!(out, "  active signals: {}", pool.signals.len());
        for s in &pool.signals {
            let _ = writeln!(out, "    {} step {} {}: {}", s.direction, s.step, s.alertname, s.reason);
        }
        let _ = writeln!(out, "  recent decisions:");
        for e in &pool.events {
            let would = if e.dry_run { " (dry-run: would have)" } else { "" };
            let _ = writeln!(
                out,
                "    {} {} {} [{}]{}: {}",
                e.at, e.kind, e.action, e.reason_label, would, e.reason
            );
        }
    }
    out
}
