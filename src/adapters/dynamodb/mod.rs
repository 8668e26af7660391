//! [`StateStore`] on DynamoDB, laid out as in DESIGN.md: one table, partition key
//! `cluster_id`, sort keys `state#<pool>`, `signal#<pool>#<fingerprint>`, `event#<time>#<id>`.
//!
//! The lease is a conditional update that increments `fencing_token`; every later write of
//! the holder is conditional on that token, so a holder whose lease expired cannot overwrite
//! the work of the next one.

use std::collections::HashMap;
use std::time::Duration;

use async_trait::async_trait;
use aws_sdk_dynamodb::Client;
use aws_sdk_dynamodb::error::{DisplayErrorContext, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeDefinition, AttributeValue, BillingMode, KeySchemaElement, KeyType, ReturnValue,
    ScalarAttributeType, TableStatus, TimeToLiveSpecification,
};

#[cfg(test)]
pub(crate) mod fake;
mod interrupts;
pub mod store;

use self::store::{AuditEvent, Lease, LeaseAction, PoolRecord, StateStore, StoreError};
use crate::core::interruption::Interruption;
use crate::core::model::{CapacityBackoff, Direction, LastScale, Operation, PoolState, Signal};
use crate::core::time::Timestamp;

type Item = HashMap<String, AttributeValue>;

/// How long audit records are kept.
pub const EVENT_RETENTION: Duration = Duration::from_secs(30 * 24 * 3600);

/// DynamoDB-backed state for one cluster.
#[derive(Clone)]
pub struct DynamoStore {
    client: Client,
    table: String,
    cluster_id: String,
}

impl DynamoStore {
    /// A store for `cluster_id` in `table`.
    pub fn new(client: Client, table: impl Into<String>, cluster_id: impl Into<String>) -> Self {
        Self { client, table: table.into(), cluster_id: cluster_id.into() }
    }

    fn key(&self, sk: String) -> Item {
        HashMap::from([
            ("cluster_id".to_string(), s(&self.cluster_id)),
            ("sk".to_string(), AttributeValue::S(sk)),
        ])
    }

    /// Creates the table (on-demand, TTL on `expires_at`) if it does not exist, for local use;
    /// production gets it from `infra/`. Returns whether it was created.
    pub async fn create_table(&self) -> Result<bool, StoreError> {
        if self.client.describe_table().table_name(&self.table).send().await.is_ok() {
            return Ok(false);
        }
        let attr = |name: &str| {
            AttributeDefinition::builder().attribute_name(name).attribute_type(ScalarAttributeType::S).build()
        };
        let key = |name: &str, kind| KeySchemaElement::builder().attribute_name(name).key_type(kind).build();
        self.client
            .create_table()
            .table_name(&self.table)
            .billing_mode(BillingMode::PayPerRequest)
            .attribute_definitions(attr("cluster_id").map_err(build_error)?)
            .attribute_definitions(attr("sk").map_err(build_error)?)
            .key_schema(key("cluster_id", KeyType::Hash).map_err(build_error)?)
            .key_schema(key("sk", KeyType::Range).map_err(build_error)?)
            .send()
            .await
            .map_err(unavailable("CreateTable"))?;
        for _ in 0..60 {
            let table = self.client.describe_table().table_name(&self.table).send().await;
            let active = table
                .map_err(unavailable("DescribeTable"))?
                .table
                .and_then(|t| t.table_status)
                .is_some_and(|status| status == TableStatus::Active);
            if active {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        self.client
            .update_time_to_live()
            .table_name(&self.table)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name("expires_at")
                    .enabled(true)
                    .build()
                    .map_err(build_error)?,
            )
            .send()
            .await
            .map_err(unavailable("UpdateTimeToLive"))?;
        Ok(true)
    }

    async fn put(&self, item: Item) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item))
            .send()
            .await
            .map_err(unavailable("PutItem"))?;
        Ok(())
    }

    async fn query_prefix(
        &self,
        prefix: &str,
        newest_first: bool,
        limit: Option<i32>,
    ) -> Result<Vec<Item>, StoreError> {
        let mut items = Vec::new();
        let mut start: Option<Item> = None;
        loop {
            let page = self
                .client
                .query()
                .table_name(&self.table)
                .consistent_read(true)
                .key_condition_expression("cluster_id = :c AND begins_with(sk, :p)")
                .expression_attribute_values(":c", s(&self.cluster_id))
                .expression_attribute_values(":p", s(prefix))
                .scan_index_forward(!newest_first)
                .set_limit(limit)
                .set_exclusive_start_key(start.take())
                .send()
                .await
                .map_err(unavailable("Query"))?;
            items.extend(page.items.unwrap_or_default());
            match page.last_evaluated_key {
                Some(key) if limit.is_none() => start = Some(key),
                _ => return Ok(items),
            }
        }
    }
}

// === impl StateStore ===

#[async_trait]
impl StateStore for DynamoStore {
    async fn ping(&self) -> Result<(), StoreError> {
        self.client
            .describe_table()
            .table_name(&self.table)
            .send()
            .await
            .map_err(unavailable("DescribeTable"))?;
        Ok(())
    }

    async fn put_signal(&self, signal: &Signal, expires_at: Timestamp) -> Result<(), StoreError> {
        let mut item = self.key(signal_key(&signal.pool, &signal.fingerprint));
        item.insert("pool".into(), s(&signal.pool));
        item.insert("direction".into(), s(signal.direction.as_str()));
        item.insert("step".into(), n(signal.step));
        item.insert("reason".into(), s(&signal.reason));
        item.insert("fingerprint".into(), s(&signal.fingerprint));
        item.insert("alertname".into(), s(&signal.alertname));
        item.insert("expires_at".into(), n(expires_at.as_secs()));
        self.put(item).await
    }

    async fn delete_signal(&self, pool: &str, fingerprint: &str) -> Result<(), StoreError> {
        self.client
            .delete_item()
            .table_name(&self.table)
            .set_key(Some(self.key(signal_key(pool, fingerprint))))
            .send()
            .await
            .map_err(unavailable("DeleteItem"))?;
        Ok(())
    }

    async fn active_signals(&self, pool: &str, now: Timestamp) -> Result<Vec<Signal>, StoreError> {
        let items = self.query_prefix(&format!("signal#{pool}#"), false, None).await?;
        let mut signals = Vec::new();
        for item in items {
            if get_u64(&item, "expires_at").unwrap_or(0) <= now.as_secs() {
                continue; // TTL deletion lags; an expired signal is not active.
            }
            let sk = get_s(&item, "sk").unwrap_or_default();
            let corrupt = |message: &str| StoreError::Corrupt { key: sk.clone(), message: message.into() };
            let direction = get_s(&item, "direction")
                .and_then(|d| Direction::from_label(&d))
                .ok_or_else(|| corrupt("bad direction"))?;
            signals.push(Signal {
                pool: pool.to_string(),
                direction,
                step: get_u64(&item, "step").unwrap_or(1) as u32,
                reason: get_s(&item, "reason").unwrap_or_default(),
                fingerprint: get_s(&item, "fingerprint").ok_or_else(|| corrupt("no fingerprint"))?,
                alertname: get_s(&item, "alertname").unwrap_or_default(),
            });
        }
        Ok(signals)
    }

    async fn read_pool(&self, pool: &str) -> Result<PoolRecord, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .set_key(Some(self.key(state_key(pool))))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable("GetItem"))?;
        match out.item {
            Some(item) => decode_record(&item),
            None => Ok(PoolRecord::default()),
        }
    }

    async fn begin(
        &self,
        pool: &str,
        seen_token: u64,
        state: &PoolState,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<Lease, StoreError> {
        let op = state.op.as_ref().ok_or_else(|| StoreError::Corrupt {
            key: state_key(pool),
            message: "begin called without an operation".into(),
        })?;
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(state_key(pool))))
            .update_expression(
                "SET #op = :op, scaling_in_progress = :true, capacity_backoffs = :backoffs, \
                 lease_owner = :owner, lease_expires_at = :exp, updated_at = :now_text, \
                 fencing_token = if_not_exists(fencing_token, :zero) + :one",
            )
            .condition_expression(
                "(attribute_not_exists(fencing_token) OR fencing_token = :seen) \
                 AND (attribute_not_exists(lease_owner) OR lease_expires_at < :now) \
                 AND attribute_not_exists(#op)",
            )
            .expression_attribute_names("#op", "op")
            .expression_attribute_values(":op", encode_json(op, &state_key(pool))?)
            .expression_attribute_values(":true", AttributeValue::Bool(true))
            .expression_attribute_values(":backoffs", encode_json(&state.backoffs, &state_key(pool))?)
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":exp", n(now.plus(ttl).as_millis()))
            .expression_attribute_values(":now", n(now.as_millis()))
            .expression_attribute_values(":now_text", s(&now.to_rfc3339()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .expression_attribute_values(":seen", n(seen_token))
            .return_values(ReturnValue::UpdatedNew)
            .send()
            .await
            .map_err(|e| conditional(e, "UpdateItem", || StoreError::Contended { pool: pool.into() }))?;
        let token = out.attributes.as_ref().and_then(|a| get_u64(a, "fencing_token")).ok_or_else(|| {
            StoreError::Corrupt { key: state_key(pool), message: "no fencing_token after begin".into() }
        })?;
        Ok(Lease { pool: pool.into(), owner: owner.into(), fencing_token: token })
    }

    async fn acquire(
        &self,
        pool: &str,
        owner: &str,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<(Lease, PoolRecord), StoreError> {
        let out = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(state_key(pool))))
            .update_expression(
                "SET lease_owner = :owner, lease_expires_at = :exp, \
                 fencing_token = if_not_exists(fencing_token, :zero) + :one",
            )
            .condition_expression(
                "attribute_not_exists(lease_owner) OR lease_expires_at < :now OR lease_owner = :owner",
            )
            .expression_attribute_values(":owner", s(owner))
            .expression_attribute_values(":exp", n(now.plus(ttl).as_millis()))
            .expression_attribute_values(":now", n(now.as_millis()))
            .expression_attribute_values(":zero", n(0))
            .expression_attribute_values(":one", n(1))
            .return_values(ReturnValue::AllNew)
            .send()
            .await
            .map_err(|e| conditional(e, "UpdateItem", || StoreError::Contended { pool: pool.into() }))?;
        let record = decode_record(&out.attributes.unwrap_or_default())?;
        let lease = Lease { pool: pool.into(), owner: owner.into(), fencing_token: record.fencing_token };
        Ok((lease, record))
    }

    async fn save(
        &self,
        lease: &Lease,
        state: &PoolState,
        node_count: Option<u32>,
        lease_action: LeaseAction,
        now: Timestamp,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = state_key(&lease.pool);
        let live: Vec<&CapacityBackoff> = state.live_backoffs(now).collect();
        let mut set =
            vec!["scaling_in_progress = :busy", "capacity_backoffs = :backoffs", "updated_at = :now_text"];
        let mut remove = Vec::new();
        let mut request = self
            .client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(key.clone())))
            .condition_expression("fencing_token = :token AND lease_owner = :owner")
            .expression_attribute_values(":token", n(lease.fencing_token))
            .expression_attribute_values(":owner", s(&lease.owner))
            .expression_attribute_values(":busy", AttributeValue::Bool(state.op.is_some()))
            .expression_attribute_values(":backoffs", encode_json(&live, &key)?)
            .expression_attribute_values(":now_text", s(&now.to_rfc3339()));
        match &state.op {
            Some(op) => {
                set.push("#op = :op");
                request = request
                    .expression_attribute_names("#op", "op")
                    .expression_attribute_values(":op", encode_json(op, &key)?);
            }
            None => {
                remove.push("#op");
                request = request.expression_attribute_names("#op", "op");
            }
        }
        if let Some(count) = node_count {
            set.push("node_count = :count");
            request = request.expression_attribute_values(":count", n(count));
        }
        if let Some(last) = state.last_scale {
            set.push("last_scale_time = :last_time");
            set.push("last_scale_action = :last_action");
            request = request
                .expression_attribute_values(":last_time", s(&last.at.to_rfc3339()))
                .expression_attribute_values(":last_action", s(last.direction.as_str()));
        }
        match lease_action {
            LeaseAction::Extend => {
                set.push("lease_expires_at = :exp");
                request = request.expression_attribute_values(":exp", n(now.plus(ttl).as_millis()));
            }
            LeaseAction::Release => remove.extend(["lease_owner", "lease_expires_at"]),
        }
        let mut expression = format!("SET {}", set.join(", "));
        if !remove.is_empty() {
            expression.push_str(&format!(" REMOVE {}", remove.join(", ")));
        }
        request
            .update_expression(expression)
            .send()
            .await
            .map_err(|e| conditional(e, "UpdateItem", || lost(lease)))?;
        Ok(())
    }

    async fn renew(&self, lease: &Lease, now: Timestamp, ttl: Duration) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(state_key(&lease.pool))))
            .update_expression("SET lease_expires_at = :exp")
            .condition_expression("fencing_token = :token AND lease_owner = :owner")
            .expression_attribute_values(":token", n(lease.fencing_token))
            .expression_attribute_values(":owner", s(&lease.owner))
            .expression_attribute_values(":exp", n(now.plus(ttl).as_millis()))
            .send()
            .await
            .map_err(|e| conditional(e, "UpdateItem", || lost(lease)))?;
        Ok(())
    }

    async fn release(&self, lease: &Lease) -> Result<(), StoreError> {
        self.client
            .update_item()
            .table_name(&self.table)
            .set_key(Some(self.key(state_key(&lease.pool))))
            .update_expression("REMOVE lease_owner, lease_expires_at")
            .condition_expression("fencing_token = :token AND lease_owner = :owner")
            .expression_attribute_values(":token", n(lease.fencing_token))
            .expression_attribute_values(":owner", s(&lease.owner))
            .send()
            .await
            .map_err(|e| conditional(e, "UpdateItem", || lost(lease)))?;
        Ok(())
    }

    async fn record_event(&self, event: &AuditEvent) -> Result<(), StoreError> {
        let sk = format!("event#{}#{}", event.at.to_rfc3339(), uuid::Uuid::new_v4().simple());
        let mut item = self.key(sk.clone());
        item.insert("pool".into(), s(&event.pool));
        item.insert("kind".into(), s(&event.kind));
        item.insert("action".into(), s(&event.action));
        item.insert("reason_label".into(), s(&event.reason_label));
        item.insert("reason".into(), s(&event.reason));
        if let Some(op_id) = &event.op_id {
            item.insert("op_id".into(), s(op_id));
        }
        item.insert("detail".into(), json_to_attribute(&event.detail));
        item.insert("dry_run".into(), AttributeValue::Bool(event.dry_run));
        item.insert("at".into(), s(&event.at.to_rfc3339()));
        item.insert("expires_at".into(), n(event.at.plus(EVENT_RETENTION).as_secs()));
        self.put(item).await
    }

    async fn recent_events(&self, pool: &str, limit: usize) -> Result<Vec<AuditEvent>, StoreError> {
        let items = self.query_prefix("event#", true, None).await?;
        let mut events = Vec::new();
        for item in items.iter().filter(|i| get_s(i, "pool").as_deref() == Some(pool)).take(limit) {
            let at = get_s(item, "at").and_then(|t| Timestamp::parse_rfc3339(&t).ok()).unwrap_or_default();
            events.push(AuditEvent {
                at,
                pool: pool.to_string(),
                kind: get_s(item, "kind").unwrap_or_default(),
                action: get_s(item, "action").unwrap_or_default(),
                reason_label: get_s(item, "reason_label").unwrap_or_default(),
                reason: get_s(item, "reason").unwrap_or_default(),
                op_id: get_s(item, "op_id"),
                detail: item.get("detail").map(attribute_to_json).unwrap_or_default(),
                dry_run: matches!(item.get("dry_run"), Some(AttributeValue::Bool(true))),
            });
        }
        Ok(events)
    }

    async fn create_interruption(&self, record: &Interruption) -> Result<bool, StoreError> {
        self.put_new_interruption(record).await
    }

    async fn open_interruptions(&self) -> Result<Vec<(Interruption, u64)>, StoreError> {
        self.query_interruptions(true).await
    }

    async fn interruptions(&self) -> Result<Vec<(Interruption, u64)>, StoreError> {
        self.query_interruptions(false).await
    }

    async fn save_interruption(&self, record: &Interruption, seen: u64) -> Result<(), StoreError> {
        self.replace_interruption(record, seen).await
    }
}

// === item encoding ===

fn state_key(pool: &str) -> String {
    format!("state#{pool}")
}

fn signal_key(pool: &str, fingerprint: &str) -> String {
    format!("signal#{pool}#{fingerprint}")
}

fn s(value: &str) -> AttributeValue {
    AttributeValue::S(value.to_string())
}

fn n(value: impl ToString) -> AttributeValue {
    AttributeValue::N(value.to_string())
}

fn get_s(item: &Item, name: &str) -> Option<String> {
    item.get(name).and_then(|v| v.as_s().ok()).cloned()
}

fn get_u64(item: &Item, name: &str) -> Option<u64> {
    item.get(name).and_then(|v| v.as_n().ok()).and_then(|t| t.parse().ok())
}

fn decode_record(item: &Item) -> Result<PoolRecord, StoreError> {
    let key = get_s(item, "sk").unwrap_or_else(|| "state#?".into());
    let op: Option<Operation> = item.get("op").map(|v| decode_json(v, &key)).transpose()?;
    let backoffs: Vec<CapacityBackoff> =
        item.get("capacity_backoffs").map(|v| decode_json(v, &key)).transpose()?.unwrap_or_default();
    let last_scale = match (get_s(item, "last_scale_time"), get_s(item, "last_scale_action")) {
        (Some(time), Some(action)) => Some(LastScale {
            at: Timestamp::parse_rfc3339(&time).map_err(|e| StoreError::Corrupt {
                key: key.clone(),
                message: format!("last_scale_time: {e}"),
            })?,
            direction: Direction::from_label(&action).ok_or_else(|| StoreError::Corrupt {
                key: key.clone(),
                message: "last_scale_action".into(),
            })?,
        }),
        _ => None,
    };
    let lease = match (get_s(item, "lease_owner"), get_u64(item, "lease_expires_at")) {
        (Some(owner), Some(expires)) => Some((owner, Timestamp::from_millis(expires))),
        _ => None,
    };
    Ok(PoolRecord {
        state: PoolState { op, last_scale, backoffs },
        fencing_token: get_u64(item, "fencing_token").unwrap_or(0),
        lease,
        node_count: get_u64(item, "node_count").unwrap_or(0) as u32,
        last_scale_action: get_s(item, "last_scale_action"),
    })
}

fn encode_json<T: serde::Serialize>(value: &T, key: &str) -> Result<AttributeValue, StoreError> {
    serde_json::to_value(value)
        .map(|json| json_to_attribute(&json))
        .map_err(|e| StoreError::Corrupt { key: key.into(), message: e.to_string() })
}

fn decode_json<T: serde::de::DeserializeOwned>(value: &AttributeValue, key: &str) -> Result<T, StoreError> {
    serde_json::from_value(attribute_to_json(value))
        .map_err(|e| StoreError::Corrupt { key: key.into(), message: e.to_string() })
}

/// JSON → DynamoDB attribute, so operations are stored as readable maps, not opaque strings.
fn json_to_attribute(value: &serde_json::Value) -> AttributeValue {
    use serde_json::Value;
    match value {
        Value::Null => AttributeValue::Null(true),
        Value::Bool(b) => AttributeValue::Bool(*b),
        Value::Number(number) => AttributeValue::N(number.to_string()),
        Value::String(text) => AttributeValue::S(text.clone()),
        Value::Array(items) => AttributeValue::L(items.iter().map(json_to_attribute).collect()),
        Value::Object(map) => {
            AttributeValue::M(map.iter().map(|(k, v)| (k.clone(), json_to_attribute(v))).collect())
        }
    }
}

fn attribute_to_json(value: &AttributeValue) -> serde_json::Value {
    use serde_json::Value;
    match value {
        AttributeValue::Bool(b) => Value::Bool(*b),
        AttributeValue::N(text) => text
            .parse::<u64>()
            .map(Value::from)
            .or_else(|_| text.parse::<i64>().map(Value::from))
            .or_else(|_| text.parse::<f64>().map(Value::from))
            .unwrap_or(Value::Null),
        AttributeValue::S(text) => Value::String(text.clone()),
        AttributeValue::L(items) => Value::Array(items.iter().map(attribute_to_json).collect()),
        AttributeValue::M(map) => {
            Value::Object(map.iter().map(|(k, v)| (k.clone(), attribute_to_json(v))).collect())
        }
        _ => Value::Null,
    }
}

/// Maps a failed call: a request DynamoDB refuses as invalid is [`StoreError::Rejected`]
/// (retrying cannot help), anything else is unavailability.
fn unavailable<E, R>(operation: &'static str) -> impl Fn(SdkError<E, R>) -> StoreError
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    move |e| {
        let message = DisplayErrorContext(&e).to_string();
        if e.as_service_error().and_then(|s| s.code()) == Some("ValidationException") {
            StoreError::Rejected { operation, message }
        } else {
            StoreError::Unavailable { operation, message }
        }
    }
}

/// Maps a failed conditional write: a condition failure becomes `on_condition()`, anything
/// else as [`unavailable`] does.
fn conditional<E, R>(
    e: SdkError<E, R>,
    operation: &'static str,
    on_condition: impl FnOnce() -> StoreError,
) -> StoreError
where
    E: std::error::Error + aws_sdk_dynamodb::error::ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    let is_condition = e.as_service_error().and_then(|s| s.code()) == Some("ConditionalCheckFailedException");
    if is_condition { on_condition() } else { unavailable(operation)(e) }
}

/// A fenced write failed its condition: someone took the lease since.
fn lost(lease: &Lease) -> StoreError {
    StoreError::LeaseLost { pool: lease.pool.clone(), token: lease.fencing_token }
}

fn build_error(e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Corrupt { key: "table definition".into(), message: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_and_attributes_round_trip() {
        let value = serde_json::json!({"id": "op-1", "n": 3, "neg": -2, "f": 0.5, "ok": true, "l": ["a", {"b": null}]});
        assert_eq!(attribute_to_json(&json_to_attribute(&value)), value);
    }
}
