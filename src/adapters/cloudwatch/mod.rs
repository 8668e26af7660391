//! [`EventSink`] on CloudWatch Logs: a bounded queue drained by one background task that
//! batches `PutLogEvents` into the configured stream, creating the stream when it is missing.
//! A full queue drops the event and a failed call drops its batch; both are counted in
//! `cloudwatch_records_total`, and DynamoDB's audit trail still has every event.

#[cfg(test)]
pub(crate) mod fake;
pub mod sink;

use std::sync::Arc;

use aws_sdk_cloudwatchlogs::Client;
use aws_sdk_cloudwatchlogs::error::{DisplayErrorContext, ProvideErrorMetadata};
use aws_sdk_cloudwatchlogs::types::InputLogEvent;
use tokio::sync::mpsc;
use tracing::warn;

use self::sink::{EventSink, event_record};
use crate::adapters::AuditEvent;
use crate::config::CloudWatchConfig;
use crate::metrics::{Metrics, SinkLabels};

/// Events waiting to be sent; beyond this they are dropped rather than held in memory.
const QUEUE: usize = 1024;
/// PutLogEvents takes at most 10 000 events per call; scaling events are rare, so small batches.
const BATCH: usize = 100;

/// Sends scaling events to one CloudWatch Logs stream.
pub struct CloudWatchSink {
    cluster_id: String,
    queue: mpsc::Sender<(i64, String)>,
    metrics: Arc<Metrics>,
}

impl CloudWatchSink {
    /// Starts the background sender; it stops when the sink is dropped.
    pub fn start(client: Client, config: CloudWatchConfig, cluster_id: &str, metrics: Arc<Metrics>) -> Self {
        let (queue, receiver) = mpsc::channel(QUEUE);
        let sender = Sender { client, config, metrics: metrics.clone(), stream_ready: false };
        tokio::spawn(sender.run(receiver));
        CloudWatchSink { cluster_id: cluster_id.to_string(), queue, metrics }
    }
}

impl EventSink for CloudWatchSink {
    fn send(&self, event: &AuditEvent) {
        let millis = i64::try_from(event.at.as_millis()).unwrap_or(i64::MAX);
        if self.queue.try_send((millis, event_record(&self.cluster_id, event))).is_err() {
            self.metrics.cloudwatch_records.get_or_create(&SinkLabels { outcome: "dropped" }).inc();
        }
    }
}

struct Sender {
    client: Client,
    config: CloudWatchConfig,
    metrics: Arc<Metrics>,
    stream_ready: bool,
}

impl Sender {
    async fn run(mut self, mut receiver: mpsc::Receiver<(i64, String)>) {
        let mut batch = Vec::with_capacity(BATCH);
        while receiver.recv_many(&mut batch, BATCH).await > 0 {
            // CloudWatch wants a batch in time order; events from concurrent tasks may not be.
            batch.sort_by_key(|(at, _)| *at);
            let count = batch.len() as u64;
            let outcome = match self.put(&batch).await {
                Ok(()) => "sent",
                Err(message) => {
                    warn!(count, %message, group = %self.config.log_group, "cannot send scaling events to CloudWatch Logs");
                    "failed"
                }
            };
            self.metrics.cloudwatch_records.get_or_create(&SinkLabels { outcome }).inc_by(count);
            batch.clear();
        }
    }

    async fn put(&mut self, batch: &[(i64, String)]) -> Result<(), String> {
        if !self.stream_ready {
            self.ensure_stream().await?;
        }
        let events = batch
            .iter()
            .map(|(at, message)| InputLogEvent::builder().timestamp(*at).message(message).build())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| e.to_string())?;
        let result = self
            .client
            .put_log_events()
            .log_group_name(&self.config.log_group)
            .log_stream_name(&self.config.log_stream)
            .set_log_events(Some(events))
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e) => {
                // A deleted stream is re-created before the next batch.
                if e.code() == Some("ResourceNotFoundException") {
                    self.stream_ready = false;
                }
                Err(DisplayErrorContext(&e).to_string())
            }
        }
    }

    async fn ensure_stream(&mut self) -> Result<(), String> {
        let result = self
            .client
            .create_log_stream()
            .log_group_name(&self.config.log_group)
            .log_stream_name(&self.config.log_stream)
            .send()
            .await;
        match result {
            Ok(_) => {}
            Err(e) if e.code() == Some("ResourceAlreadyExistsException") => {}
            Err(e) => return Err(format!("creating the log stream: {}", DisplayErrorContext(&e))),
        }
        self.stream_ready = true;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::core::time::Timestamp;

    fn unreachable_client() -> Client {
        let config = aws_sdk_cloudwatchlogs::Config::builder()
            .behavior_version(aws_sdk_cloudwatchlogs::config::BehaviorVersion::latest())
            .region(aws_sdk_cloudwatchlogs::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_cloudwatchlogs::config::Credentials::new("k", "s", None, None, "t"))
            .endpoint_url("http://127.0.0.1:1")
            .build();
        Client::from_conf(config)
    }

    fn event() -> AuditEvent {
        AuditEvent {
            at: Timestamp::from_millis(1),
            pool: "workers".into(),
            kind: "decision".into(),
            action: "launch".into(),
            reason_label: "scale_up_signal".into(),
            reason: "r".into(),
            op_id: None,
            detail: serde_json::Value::Null,
            dry_run: false,
        }
    }

    #[tokio::test]
    async fn sending_never_waits_and_an_unreachable_endpoint_is_counted() {
        let metrics = Arc::new(Metrics::new());
        let config = CloudWatchConfig { log_group: "g".into(), log_stream: "s".into() };
        let sink = CloudWatchSink::start(unreachable_client(), config, "c", metrics.clone());
        let started = Instant::now();
        for _ in 0..(QUEUE + 500) {
            sink.send(&event());
        }
        assert!(started.elapsed() < Duration::from_millis(500), "send only enqueues");
        let count = |outcome| metrics.cloudwatch_records.get_or_create(&SinkLabels { outcome }).get();
        assert!(count("dropped") >= 400, "a full queue drops: {}", count("dropped"));
        let deadline = Instant::now() + Duration::from_secs(20);
        while count("failed") == 0 {
            assert!(Instant::now() < deadline, "failures are counted");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert_eq!(count("sent"), 0);
    }
}
