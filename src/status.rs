//! `k3s-autoscaler status`: what each pool is doing, read from the state store.

use std::fmt::Write;

use serde::Serialize;

use crate::adapters::{AuditEvent, StateStore, StoreError};
use crate::config::Config;
use crate::core::interruption::Interruption;
use crate::core::model::{Operation, Signal};

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
        });
    }
    Ok(report)
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
