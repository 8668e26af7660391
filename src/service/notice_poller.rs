//! The notice poller: long-polls the SQS queue EventBridge fills with EC2 notices
//! (`interruption.queue_url`) and hands each one to the same intake as
//! `POST /v1/events/ec2`, the way Karpenter and aws-node-termination-handler take them.
//!
//! One receive at a time per process (SQS's longest wait, up to ten messages); the messages
//! of a batch are handled together. A message is deleted only once the intake answered:
//! its interruption record is durable, or it is a repeat, not ours, not verified, capped, or a
//! detail-type deliberately ignored. A body that is not an EC2 event is logged, counted and
//! deleted too: the same bytes can never parse later. A message the service could not handle
//! (DynamoDB, EC2 or Kubernetes unreachable) is left alone: SQS hands it out again after the
//! queue's visibility timeout, and after `maxReceiveCount` receives moves it to the
//! dead-letter queue. Repeats and a warning that overtakes its rebalance are the intake's
//! business (one record per instance, upgraded in place), so delivery order does not matter.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use tracing::{info, warn};

use tokio::sync::watch;

use super::interrupt::NoticeIntake;
use crate::adapters::sqs::{NoticeMessage, NoticeQueue};
use crate::core::ec2_event::parse_ec2_event;
use crate::metrics::Metrics;
use crate::metrics::{QueueDeletedLabels, QueueFailedLabels};

/// First pause after a failed receive; doubled up to [`RECEIVE_BACKOFF_MAX`].
const RECEIVE_BACKOFF: Duration = Duration::from_secs(1);
/// Longest pause between receives while the queue cannot be read.
const RECEIVE_BACKOFF_MAX: Duration = Duration::from_secs(30);

/// What became of one message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Disposition {
    /// Deleted; the label says why (an intake outcome, or `malformed`).
    Deleted(&'static str),
    /// Left in the queue for a later receive: handling failed (the label of the error), or
    /// the delete did (`delete`).
    Kept(String),
}

/// The poller and the state only it keeps.
pub(super) struct NoticePoller {
    notices: NoticeIntake,
    metrics: Arc<Metrics>,
    queue: Arc<dyn NoticeQueue>,
    shutdown: watch::Receiver<bool>,
    /// The pause before the next receive while receives fail; zero while they succeed.
    backoff: Duration,
}

impl NoticePoller {
    /// A poller handing what `queue` brings to `notices`, until `shutdown`.
    pub(super) fn new(
        notices: NoticeIntake,
        metrics: Arc<Metrics>,
        queue: Arc<dyn NoticeQueue>,
        shutdown: watch::Receiver<bool>,
    ) -> Self {
        NoticePoller { notices, metrics, queue, shutdown, backoff: Duration::ZERO }
    }

    /// Receives and handles batches until shutdown. A receive cut short by shutdown leaves
    /// its messages to come back after their visibility timeout.
    pub(super) async fn run(mut self) {
        let mut shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                _ = self.poll_once() => {}
                _ = shutdown.wait_for(|stop| *stop) => return,
            }
            if !self.backoff.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(self.backoff) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return,
                }
            }
        }
    }

    /// One receive and the handling of what it brought; the dispositions, in order.
    pub(super) async fn poll_once(&mut self) -> Vec<Disposition> {
        let metrics = &self.metrics.notice_queue;
        let messages = match self.queue.receive().await {
            Ok(messages) => messages,
            Err(error) => {
                metrics.failed.get_or_create(&QueueFailedLabels { stage: "receive" }).inc();
                self.metrics.aws_error(error.api, error.code.clone());
                if self.backoff.is_zero() {
                    warn!(%error, "cannot read the EC2 notice queue; retrying with backoff");
                }
                self.backoff = (self.backoff * 2).clamp(RECEIVE_BACKOFF, RECEIVE_BACKOFF_MAX);
                return Vec::new();
            }
        };
        if !self.backoff.is_zero() {
            info!("the EC2 notice queue can be read again");
            self.backoff = Duration::ZERO;
        }
        metrics.received.inc_by(messages.len() as u64);
        join_all(messages.iter().map(|message| self.handle(message))).await
    }

    /// Hands one message to the intake, then deletes it unless the intake failed.
    async fn handle(&self, message: &NoticeMessage) -> Disposition {
        let metrics = &self.metrics.notice_queue;
        let id = &message.message_id;
        let reason = match parse_ec2_event(message.body.as_bytes()) {
            Err(error) => {
                warn!(message = %id, %error, "EC2 notice queue: not an EC2 event; deleted, it can never become one");
                "malformed"
            }
            Ok(event) => match self.notices.accept(event).await {
                Ok(summary) => summary.outcome,
                Err(error) => {
                    self.notices.count_error(&error);
                    let label = error.label();
                    metrics.failed.get_or_create(&QueueFailedLabels { stage: "handle" }).inc();
                    warn!(
                        message = %id, %error, %label, receives = message.receive_count,
                        "EC2 notice not handled; left in the queue for its next delivery"
                    );
                    return Disposition::Kept(label);
                }
            },
        };
        if let Err(error) = self.queue.delete(&message.receipt_handle).await {
            metrics.failed.get_or_create(&QueueFailedLabels { stage: "delete" }).inc();
            self.metrics.aws_error(error.api, error.code.clone());
            warn!(message = %id, %error, "cannot delete a handled EC2 notice; its next delivery is a repeat");
            return Disposition::Kept("delete".into());
        }
        metrics.deleted.get_or_create(&QueueDeletedLabels { reason }).inc();
        Disposition::Deleted(reason)
    }
}

#[cfg(test)]
mod tests;
