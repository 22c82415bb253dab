//! The audit log on MongoDB.

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, Document};
use reliquary_client::types::{AuditEntry, Timestamp};

use super::{map_err, MongoStore};
use crate::store::{AuditQuery, AuditRecord, AuditStore, StoreError, StoreResult};

#[async_trait]
impl AuditStore for MongoStore {
    async fn append_audit(&self, record: AuditRecord) -> StoreResult<()> {
        let mut document = doc! {
            "at": record.at.to_string(),
            "action": record.action,
            "outcome": record.outcome,
            "keyId": record.key_id,
            "keyName": record.key_name,
            "artefactId": record.artefact_id,
            "architecture": record.architecture,
            "detail": record.detail,
            "remoteAddr": record.remote_addr,
        };
        // Absent (not null) without a key: the unique index on it is sparse.
        if let Some(key) = record.once_key {
            document.insert("onceKey", key);
        }
        match self
            .collection("audit")
            .insert_one(document)
            .await
            .map_err(map_err)
        {
            Ok(_) | Err(StoreError::Duplicate(_)) => Ok(()),
            Err(other) => Err(other),
        }
    }

    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let mut filter = doc! {};
        if let Some(action) = &query.action {
            filter.insert("action", action);
        }
        if let Some(before) = &query.before {
            let id = ObjectId::parse_str(before).map_err(|_| StoreError::BadCursor)?;
            filter.insert("_id", doc! {"$lt": id});
        }
        let cursor = self
            .collection("audit")
            .find(filter)
            .sort(doc! {"_id": -1})
            .limit(query.limit as i64)
            .await
            .map_err(map_err)?;
        let records: Vec<Document> = cursor.try_collect().await.map_err(map_err)?;
        records
            .into_iter()
            .map(|r| {
                let text = |key: &str| r.get_str(key).ok().map(str::to_owned);
                Ok(AuditEntry {
                    id: r
                        .get_object_id("_id")
                        .map_err(|e| StoreError::Other(e.to_string()))?
                        .to_hex(),
                    at: text("at")
                        .unwrap_or_default()
                        .parse()
                        .map_err(|e| StoreError::Other(format!("corrupt audit time: {e}")))?,
                    action: text("action").unwrap_or_default(),
                    outcome: text("outcome").unwrap_or_default(),
                    key_id: text("keyId"),
                    key_name: text("keyName"),
                    artefact_id: text("artefactId"),
                    architecture: text("architecture"),
                    detail: text("detail"),
                    remote_addr: text("remoteAddr"),
                })
            })
            .collect()
    }

    async fn prune_audit(&self, before: Timestamp) -> StoreResult<u64> {
        self.collection("audit")
            .delete_many(doc! {"at": {"$lt": before.to_string()}})
            .await
            .map(|r| r.deleted_count)
            .map_err(map_err)
    }
}
