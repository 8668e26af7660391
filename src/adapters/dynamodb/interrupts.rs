//! `interrupt#<instance-id>` items: one per interrupted instance, created conditionally so a
//! repeated EventBridge event finds it and changes nothing, then moved on with a version check
//! so two replicas handling it cannot overwrite each other's progress — a spot warning that
//! upgrades a rebalance's record included.

use std::time::Duration;

use aws_sdk_dynamodb::types::AttributeValue;

use super::store::StoreError;
use super::{DynamoStore, Item, conditional, decode_json, encode_json, get_s, get_u64, n, s};
use crate::core::interruption::{InterruptPhase, Interruption};

/// How long a record outlives its handling: EventBridge retries for up to 24 hours, and a
/// repeat must still find the record.
const KEEP: Duration = Duration::from_secs(2 * 24 * 3600);

fn interrupt_key(instance_id: &str) -> String {
    format!("interrupt#{instance_id}")
}

impl DynamoStore {
    fn interruption_item(&self, record: &Interruption, version: u64) -> Result<Item, StoreError> {
        let sk = interrupt_key(&record.instance_id);
        let mut item = self.key(sk.clone());
        item.insert("pool".into(), s(&record.pool));
        item.insert("record".into(), encode_json(record, &sk)?);
        let phase = match record.phase {
            InterruptPhase::Open => "open",
            InterruptPhase::Done => "done",
        };
        item.insert("phase".into(), s(phase));
        item.insert("version".into(), n(version));
        let keep_from = record.received_at.max(record.deadline);
        item.insert("expires_at".into(), n(keep_from.plus(KEEP).as_secs()));
        Ok(item)
    }

    pub(super) async fn put_new_interruption(&self, record: &Interruption) -> Result<bool, StoreError> {
        let result = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.interruption_item(record, 1)?))
            .condition_expression("attribute_not_exists(sk)")
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e) => match conditional(e, "PutItem", || StoreError::Contended { pool: record.pool.clone() })
            {
                StoreError::Contended { .. } => Ok(false),
                other => Err(other),
            },
        }
    }

    /// Interruption records with their versions; only the open ones when `open_only`.
    pub(super) async fn query_interruptions(
        &self,
        open_only: bool,
    ) -> Result<Vec<(Interruption, u64)>, StoreError> {
        let items = self.query_prefix("interrupt#", false, None).await?;
        items
            .iter()
            .filter(|item| !open_only || get_s(item, "phase").as_deref() == Some("open"))
            .map(|item| {
                let sk = get_s(item, "sk").unwrap_or_default();
                let record = item
                    .get("record")
                    .ok_or_else(|| StoreError::Corrupt { key: sk.clone(), message: "no record".into() })?;
                Ok((decode_json(record, &sk)?, get_u64(item, "version").unwrap_or(0)))
            })
            .collect()
    }

    pub(super) async fn replace_interruption(
        &self,
        record: &Interruption,
        seen: u64,
    ) -> Result<(), StoreError> {
        self.client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(self.interruption_item(record, seen + 1)?))
            .condition_expression("version = :seen")
            .expression_attribute_values(":seen", AttributeValue::N(seen.to_string()))
            .send()
            .await
            .map_err(|e| conditional(e, "PutItem", || StoreError::Contended { pool: record.pool.clone() }))?;
        Ok(())
    }
}
