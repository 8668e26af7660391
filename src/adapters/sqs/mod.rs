//! The EC2 notice queue: the SQS queue EventBridge delivers spot interruption warnings,
//! rebalance recommendations and state changes to (as Karpenter and
//! aws-node-termination-handler take them). [`NoticeQueue`] is what the poller needs of it;
//! [`SqsNoticeQueue`] is the real one.

use std::time::Duration;

use async_trait::async_trait;
use aws_config::SdkConfig;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_sqs::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use thiserror::Error;

use crate::core::text::{NAME_MAX, bounded};

/// Longest wait of one receive: SQS's maximum long poll, so an idle queue costs three
/// requests a minute.
pub const LONG_POLL: Duration = Duration::from_secs(20);
/// Messages per receive: SQS's maximum.
pub const BATCH: i32 = 10;

/// One received message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoticeMessage {
    /// SQS's id of the message, for logs.
    pub message_id: String,
    /// What deletes this receipt of it.
    pub receipt_handle: String,
    /// The body: an EventBridge event, as the rule's target delivers it.
    pub body: String,
    /// How often SQS has handed the message out (1 on the first receive).
    pub receive_count: u32,
}

/// Why a queue call failed.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[error("{api} on the notice queue failed ({code}): {message}")]
pub struct QueueError {
    /// The SQS call.
    pub api: &'static str,
    /// SQS's error code, or `unavailable` when no answer came.
    pub code: String,
    /// What went wrong (bounded).
    pub message: String,
}

/// What the poller needs of the queue.
#[async_trait]
pub trait NoticeQueue: Send + Sync {
    /// One long poll: up to [`BATCH`] messages, waiting up to [`LONG_POLL`] for the first.
    async fn receive(&self) -> Result<Vec<NoticeMessage>, QueueError>;
    /// Deletes one receipt: the message is handled and must not come back.
    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError>;
}

/// The real queue, through aws-sdk-sqs.
pub struct SqsNoticeQueue {
    client: aws_sdk_sqs::Client,
    queue_url: String,
    call_timeout: Duration,
}

impl SqsNoticeQueue {
    /// A client for `queue_url`; `call_timeout` bounds each call beyond the long poll's wait.
    pub fn new(sdk: &SdkConfig, queue_url: &str, call_timeout: Duration) -> Self {
        SqsNoticeQueue { client: aws_sdk_sqs::Client::new(sdk), queue_url: queue_url.into(), call_timeout }
    }

    /// The queue's attributes `doctor` reports (visible and in-flight messages, the redrive
    /// policy): a GetQueueAttributes call, which the autoscaler's role may make.
    pub async fn attributes(&self) -> Result<std::collections::HashMap<String, String>, QueueError> {
        use aws_sdk_sqs::types::QueueAttributeName;
        let out = self
            .client
            .get_queue_attributes()
            .queue_url(&self.queue_url)
            .attribute_names(QueueAttributeName::All)
            .send()
            .await
            .map_err(|e| classify("GetQueueAttributes", e))?;
        Ok(out
            .attributes
            .unwrap_or_default()
            .into_iter()
            .map(|(name, value)| (name.as_str().to_string(), value))
            .collect())
    }
}

#[async_trait]
impl NoticeQueue for SqsNoticeQueue {
    async fn receive(&self) -> Result<Vec<NoticeMessage>, QueueError> {
        // The shared client's operation timeout is a few seconds; a long poll waits longer.
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(self.call_timeout)
            .operation_attempt_timeout(LONG_POLL + self.call_timeout)
            .operation_timeout(LONG_POLL + self.call_timeout * 2)
            .build();
        let out = self
            .client
            .receive_message()
            .queue_url(&self.queue_url)
            .max_number_of_messages(BATCH)
            .wait_time_seconds(LONG_POLL.as_secs() as i32)
            .message_system_attribute_names(
                aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount,
            )
            .customize()
            .config_override(aws_sdk_sqs::config::Builder::default().timeout_config(timeouts))
            .send()
            .await
            .map_err(|e| classify("ReceiveMessage", e))?;
        Ok(out
            .messages
            .unwrap_or_default()
            .into_iter()
            .filter_map(|m| {
                let receive_count = m
                    .attributes()
                    .and_then(|a| {
                        a.get(&aws_sdk_sqs::types::MessageSystemAttributeName::ApproximateReceiveCount)
                    })
                    .and_then(|n| n.parse().ok())
                    .unwrap_or(1);
                Some(NoticeMessage {
                    message_id: bounded(m.message_id()?, NAME_MAX),
                    receipt_handle: m.receipt_handle()?.to_string(),
                    body: m.body.unwrap_or_default(),
                    receive_count,
                })
            })
            .collect())
    }

    async fn delete(&self, receipt_handle: &str) -> Result<(), QueueError> {
        self.client
            .delete_message()
            .queue_url(&self.queue_url)
            .receipt_handle(receipt_handle)
            .send()
            .await
            .map(|_| ())
            .map_err(|e| classify("DeleteMessage", e))
    }
}

fn classify<E, R>(api: &'static str, error: SdkError<E, R>) -> QueueError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    let code = match &error {
        SdkError::ServiceError(_) => error.code().unwrap_or("unknown").to_string(),
        _ => "unavailable".into(),
    };
    QueueError {
        api,
        code: bounded(&code, NAME_MAX),
        message: bounded(&DisplayErrorContext(&error).to_string(), 512),
    }
}

#[cfg(test)]
pub(crate) mod fake;
