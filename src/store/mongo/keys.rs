//! API keys and the audit log on MongoDB.

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::oid::ObjectId;
use mongodb::bson::{doc, Document};
use reliquary_client::types::{ApiKey, AuditEntry, Timestamp};

use super::{from_bson_doc, map_err, to_bson_doc, MongoStore};
use crate::store::{
    AuditQuery, AuditRecord, AuditStore, KeyRecord, KeyStore, StoreError, StoreResult,
};

fn key_from(mut record: Document) -> StoreResult<ApiKey> {
    let doc = record
        .remove("doc")
        .and_then(|d| d.as_document().cloned())
        .ok_or_else(|| StoreError::Other("key record without its document".into()))?;
    from_bson_doc(doc)
}

#[async_trait]
impl KeyStore for MongoStore {
    async fn insert_key(&self, record: KeyRecord) -> StoreResult<()> {
        let document = doc! {
            "_id": &record.key.id,
            "tokenSha256": &record.token_sha256,
            "role": record.key.role.as_str(),
            "doc": to_bson_doc(&record.key)?,
        };
        self.collection("api_keys")
            .insert_one(document)
            .await
            .map(|_| ())
            .map_err(|e| match map_err(e) {
                StoreError::Duplicate(_) => {
                    StoreError::Duplicate("a key with this id or token".into())
                }
                other => other,
            })
    }

    async fn key_by_token_hash(&self, token_sha256: &str) -> StoreResult<Option<ApiKey>> {
        self.collection("api_keys")
            .find_one(doc! {"tokenSha256": token_sha256})
            .await
            .map_err(map_err)?
            .map(key_from)
            .transpose()
    }

    async fn list_keys(&self) -> StoreResult<Vec<ApiKey>> {
        let cursor = self
            .collection("api_keys")
            .find(doc! {})
            .await
            .map_err(map_err)?;
        let records: Vec<Document> = cursor.try_collect().await.map_err(map_err)?;
        let mut keys = records
            .into_iter()
            .map(key_from)
            .collect::<StoreResult<Vec<_>>>()?;
        keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(keys)
    }

    async fn revoke_key(&self, id: &str, at: Timestamp) -> StoreResult<ApiKey> {
        // Only the first revocation sets `revokedAt`; later ones return the key as it is.
        self.collection("api_keys")
            .update_one(
                doc! {"_id": id, "doc.revokedAt": null},
                doc! {"$set": {"doc.revokedAt": at.to_string()}},
            )
            .await
            .map_err(map_err)?;
        self.collection("api_keys")
            .find_one(doc! {"_id": id})
            .await
            .map_err(map_err)?
            .map(key_from)
            .transpose()?
            .ok_or(StoreError::NotFound)
    }

    async fn touch_key(&self, id: &str, at: Timestamp) -> StoreResult<()> {
        self.collection("api_keys")
            .update_one(
                doc! {"_id": id},
                doc! {"$set": {"doc.lastUsedAt": at.to_string()}},
            )
            .await
            .map(|_| ())
            .map_err(map_err)
    }
}

#[async_trait]
impl AuditStore for MongoStore {
    async fn append_audit(&self, record: AuditRecord) -> StoreResult<()> {
        let document = doc! {
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
        self.collection("audit")
            .insert_one(document)
            .await
            .map(|_| ())
            .map_err(map_err)
    }

    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let mut filter = doc! {};
        if let Some(action) = &query.action {
            filter.insert("action", action);
        }
        if let Some(before) = &query.before {
            let id = ObjectId::parse_str(before).map_err(|_| StoreError::NotFound)?;
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
