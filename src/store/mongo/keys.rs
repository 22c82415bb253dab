//! API keys on MongoDB.

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use reliquary_client::types::{ApiKey, Timestamp};

use super::{from_bson_doc, map_err, to_bson_doc, MongoStore};
use crate::store::{KeyRecord, KeyStore, StoreError, StoreResult};

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

    async fn prune_exchanged_keys(&self, before: Timestamp) -> StoreResult<u64> {
        // Timestamps are stored as fixed-width RFC 3339 text, which sorts as time does.
        let result = self
            .collection("api_keys")
            .delete_many(doc! {
                "doc.trustedPublisher": {"$exists": true},
                "doc.expiresAt": {"$lt": before.to_string()},
            })
            .await
            .map_err(map_err)?;
        Ok(result.deleted_count)
    }
}
