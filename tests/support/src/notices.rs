//! The EC2 notice path on moto: an SQS queue (with a dead-letter queue) and EventBridge rules
//! that target it, as the stack builds them. EventBridge is called with its JSON protocol
//! directly (moto does not check signatures), so the tests need no EventBridge SDK crate.

use aws_sdk_sqs::types::QueueAttributeName;

use super::aws::REGION;

/// moto's default account.
pub const ACCOUNT: &str = "123456789012";

/// The queue the service polls (configured with [`queue_config`]), and EventBridge on the
/// same moto.
pub struct NoticeQueue {
    pub sqs: aws_sdk_sqs::Client,
    moto: String,
    name: String,
}

/// `[interruption] queue_url` for a service whose AWS endpoint is `endpoint`.
pub fn queue_config(endpoint: &str, name: &str) -> String {
    format!("[interruption]\nqueue_url = \"{endpoint}/{ACCOUNT}/{name}\"\n")
}

impl NoticeQueue {
    /// Creates `name` (visibility timeout 5 s, so an unhandled message returns quickly) with
    /// a dead-letter queue after 5 receives, and the stack's three rules targeting it.
    pub async fn create(moto: &str, name: &str) -> NoticeQueue {
        let credentials = aws_sdk_sqs::config::Credentials::new("testing", "testing", None, None, "tests");
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .region(aws_config::Region::new(REGION))
            .credentials_provider(credentials)
            .endpoint_url(moto)
            .load()
            .await;
        let sqs = aws_sdk_sqs::Client::new(&sdk);
        sqs.create_queue().queue_name(format!("{name}-dlq")).send().await.expect("create dlq");
        let redrive = serde_json::json!({
            "deadLetterTargetArn": format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}-dlq"),
            "maxReceiveCount": 5,
        });
        sqs.create_queue()
            .queue_name(name)
            .attributes(QueueAttributeName::VisibilityTimeout, "5")
            .attributes(QueueAttributeName::RedrivePolicy, redrive.to_string())
            .send()
            .await
            .expect("create queue");
        let queue = NoticeQueue { sqs, moto: moto.to_string(), name: name.to_string() };
        for (rule, detail_type) in [
            ("spot", "EC2 Spot Instance Interruption Warning"),
            ("rebalance", "EC2 Instance Rebalance Recommendation"),
            ("state", "EC2 Instance State-change Notification"),
        ] {
            let pattern = serde_json::json!({"source": ["aws.ec2"], "detail-type": [detail_type]});
            queue
                .events("PutRule", serde_json::json!({"Name": rule, "EventPattern": pattern.to_string()}))
                .await;
            let arn = format!("arn:aws:sqs:{REGION}:{ACCOUNT}:{name}");
            let targets = serde_json::json!({"Rule": rule, "Targets": [{"Id": "queue", "Arn": arn}]});
            queue.events("PutTargets", targets).await;
        }
        queue
    }

    async fn events(&self, action: &str, body: serde_json::Value) -> serde_json::Value {
        let response = reqwest::Client::new()
            .post(&self.moto)
            .header("x-amz-target", format!("AWSEvents.{action}"))
            .header("content-type", "application/x-amz-json-1.1")
            .header(
                "authorization",
                format!("AWS4-HMAC-SHA256 Credential=testing/20261201/{REGION}/events/aws4_request, SignedHeaders=host, Signature=0"),
            )
            .body(body.to_string())
            .send()
            .await
            .expect("EventBridge call");
        let status = response.status();
        let answer: serde_json::Value = response.json().await.unwrap_or_default();
        assert!(status.is_success(), "EventBridge {action}: {status} {answer}");
        answer
    }

    /// What EC2 does: PutEvents of `detail_type` about `instance_id` on the default bus.
    pub async fn put_ec2_event(&self, detail_type: &str, instance_id: &str) {
        let detail = serde_json::json!({"instance-id": instance_id, "instance-action": "terminate"});
        let entry = serde_json::json!({
            "Source": "aws.ec2", "DetailType": detail_type, "Detail": detail.to_string(),
            "Resources": [format!("arn:aws:ec2:{REGION}:{ACCOUNT}:instance/{instance_id}")],
        });
        let answer = self.events("PutEvents", serde_json::json!({"Entries": [entry]})).await;
        assert_eq!(answer["FailedEntryCount"], 0, "{answer}");
    }

    /// A message sent straight to the queue (a copy, or something that is no EC2 event).
    pub async fn send_raw(&self, body: &str) {
        self.sqs.send_message().queue_url(self.moto_url()).message_body(body).send().await.expect("send");
    }

    /// The bodies waiting in the queue, visible or in flight: how many.
    pub async fn depth(&self) -> usize {
        let out = self
            .sqs
            .get_queue_attributes()
            .queue_url(self.moto_url())
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send()
            .await
            .expect("queue attributes");
        let attributes = out.attributes.unwrap_or_default();
        let count = |name| attributes.get(&name).and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
        count(QueueAttributeName::ApproximateNumberOfMessages)
            + count(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
    }

    fn moto_url(&self) -> String {
        format!("{}/{ACCOUNT}/{}", self.moto, self.name)
    }
}
