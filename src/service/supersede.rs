//! A scale-up that arrives while a drain is in flight: the drain is undone (node uncordoned,
//! nothing terminated) and the scale-up acts in the same pass, under the same lease, so a
//! scale-up never waits up to `drain_timeout` for a drain it contradicts.

use tracing::info;

use super::outcome::{Fresh, ReconcileError, ReconcileOutcome, new_op_id};
use super::steps::Steps;
use crate::adapters::AuditEvent;
use crate::adapters::dynamodb::store::LeaseAction;
use crate::adapters::kube::cluster::NodeEvent;
use crate::core::decide::Decision;
use crate::core::model::{
    Direction, DrainOp, DrainPhase, LastScale, LaunchOp, LaunchPhase, LaunchRequest, Operation,
    OperationKind, PoolPolicy,
};

impl Steps {
    /// Undoes the drain of `drain` and starts `launch` (nothing when the scale-up holds).
    /// A drain that reached `terminated` meanwhile is left to finish.
    pub(super) async fn supersede_drain(
        &self,
        policy: &PoolPolicy,
        decision: &Decision,
        drain: &DrainOp,
        launch: Vec<LaunchRequest>,
    ) -> Result<ReconcileOutcome, ReconcileError> {
        let pool = policy.name.as_str();
        let Some((lease, record)) = self.acquire(pool).await? else {
            return Ok(ReconcileOutcome::Contended);
        };
        let now = self.now();
        let current = record.state.op.clone().and_then(|op| match &op.kind {
            OperationKind::Drain(d) if d.instance_id == drain.instance_id && d.phase.before_terminate() => {
                Some((op.clone(), d.clone()))
            }
            _ => None,
        });
        let Some((op, current)) = current else {
            self.release(&lease).await?;
            return Ok(ReconcileOutcome::Progressed);
        };
        let reason = format!(
            "drain of {} superseded by scale-up, node uncordoned, nothing terminated: {}",
            current.node, decision.reason
        );
        if let Some(cluster) = &self.edges.cluster {
            // `started`: not cordoned by us yet, so a cordon someone else set stays; nor is a
            // node an interruption is draining uncordoned.
            if current.phase != DrainPhase::Started && !self.interruption_open(&current.instance_id).await? {
                cluster.set_unschedulable(&current.node, false).await?;
            }
            cluster.node_event(&current.node, NodeEvent::DrainSuperseded, &reason).await;
        }
        let next = (!launch.is_empty()).then(|| Operation {
            id: new_op_id(),
            kind: OperationKind::Launch(LaunchOp {
                requests: launch,
                instances: Vec::new(),
                phase: LaunchPhase::Requested,
                failed: Vec::new(),
            }),
            reason: decision.reason.to_string(),
            started_at: now,
            deadline: now.plus(policy.join_timeout),
        });
        let mut state = record.state;
        state.backoffs.retain(|b| b.until > now);
        // Like an aborted drain, it starts the scale-down cooldown (not the scale-up one).
        state.last_scale = Some(LastScale { at: now, direction: Direction::Down });
        state.op = next.clone();
        let action = if next.is_some() { LeaseAction::Extend } else { LeaseAction::Release };
        self.save_state(&lease, &state, None, action).await?;
        self.count_operation(pool, "drain", "superseded", op.started_at);
        info!(pool, op_id = %op.id, node = %current.node, %reason, "drain superseded by scale-up");
        self.record(AuditEvent {
            at: now,
            pool: pool.to_string(),
            kind: "outcome".into(),
            action: "drain".into(),
            reason_label: "superseded".into(),
            reason,
            op_id: Some(op.id.clone()),
            detail: serde_json::json!({ "drain": op.kind }),
            dry_run: false,
        })
        .await;
        let Some(next) = next else {
            self.audit(pool, "decision", decision, None, false).await;
            return Ok(ReconcileOutcome::Progressed);
        };
        let (acted, _) = tokio::join!(
            self.run_op(policy, &lease, state, Fresh::Yes),
            self.audit(pool, "decision", decision, Some(&next.id), false),
        );
        acted?;
        Ok(ReconcileOutcome::Acted { op_id: next.id })
    }
}
