//! Remotes, their sync state and leases on MongoDB. Configuration and state are separate
//! fields of one document, each written with its own `$set`, so a `PUT` never races a cursor
//! update.

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use reliquary_client::types::Timestamp;

use super::{from_bson_doc, map_err, to_bson_doc, MongoStore};
use crate::store::{
    GcStore, Lease, RemoteConfig, RemoteRecord, RemoteState, RemoteStore, StoreError, StoreResult,
};

fn remote_from(record: Document) -> StoreResult<RemoteRecord> {
    let name = record
        .get_str("_id")
        .map_err(|e| StoreError::Other(e.to_string()))?
        .to_owned();
    let config = record
        .get_document("config")
        .map_err(|e| StoreError::Other(e.to_string()))?
        .clone();
    let state = match record.get_document("state") {
        Ok(state) => from_bson_doc(state.clone())?,
        Err(_) => RemoteState::default(),
    };
    Ok(RemoteRecord {
        name,
        config: from_bson_doc(config)?,
        token: record.get_str("token").unwrap_or_default().to_owned(),
        state,
    })
}

#[async_trait]
impl RemoteStore for MongoStore {
    async fn put_remote(
        &self,
        name: &str,
        config: &RemoteConfig,
        token: &str,
    ) -> StoreResult<bool> {
        let result = self
            .collection("remotes")
            .update_one(
                doc! {"_id": name},
                doc! {"$set": {"config": to_bson_doc(config)?, "token": token}},
            )
            .upsert(true)
            .await
            .map_err(map_err)?;
        Ok(result.upserted_id.is_some())
    }

    async fn get_remote(&self, name: &str) -> StoreResult<Option<RemoteRecord>> {
        self.collection("remotes")
            .find_one(doc! {"_id": name})
            .await
            .map_err(map_err)?
            .map(remote_from)
            .transpose()
    }

    async fn list_remotes(&self) -> StoreResult<Vec<RemoteRecord>> {
        let cursor = self
            .collection("remotes")
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .await
            .map_err(map_err)?;
        let records: Vec<Document> = cursor.try_collect().await.map_err(map_err)?;
        records.into_iter().map(remote_from).collect()
    }

    async fn delete_remote(&self, name: &str) -> StoreResult<bool> {
        let result = self
            .collection("remotes")
            .delete_one(doc! {"_id": name})
            .await
            .map_err(map_err)?;
        Ok(result.deleted_count > 0)
    }

    async fn set_remote_state(&self, name: &str, state: &RemoteState) -> StoreResult<()> {
        self.collection("remotes")
            .update_one(
                doc! {"_id": name},
                doc! {"$set": {"state": to_bson_doc(state)?}},
            )
            .await
            .map(|_| ())
            .map_err(map_err)
    }

    async fn mirrored_by(&self, remote: &str) -> StoreResult<Vec<(String, i64)>> {
        let cursor = self
            .collection("artefacts")
            .find(doc! {"doc.origin.remote": remote})
            .projection(doc! {"revision": 1})
            .sort(doc! {"_id": 1})
            .await
            .map_err(map_err)?;
        let records: Vec<Document> = cursor.try_collect().await.map_err(map_err)?;
        Ok(records
            .into_iter()
            .filter_map(|r| {
                Some((
                    r.get_str("_id").ok()?.to_owned(),
                    r.get_i64("revision").ok()?,
                ))
            })
            .collect())
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> StoreResult<bool> {
        let now = Timestamp::now().millis();
        let taken = self
            .collection("leases")
            .update_one(
                doc! {"_id": name, "$or": [{"holder": holder}, {"expiresAt": {"$lt": now}}]},
                doc! {"$set": {"holder": holder, "expiresAt": now + ttl_ms}},
            )
            .upsert(true)
            .await;
        match taken {
            Ok(_) => Ok(true),
            // The filter missed because someone else holds a live lease; the upsert then
            // collided with their document.
            Err(error) if super::is_duplicate(&error) => Ok(false),
            Err(error) => Err(map_err(error)),
        }
    }

    async fn lease(&self, name: &str) -> StoreResult<Option<Lease>> {
        let found = self
            .collection("leases")
            .find_one(doc! {"_id": name})
            .await
            .map_err(map_err)?;
        found
            .map(|record| {
                let corrupt = |e: mongodb::bson::document::ValueAccessError| {
                    StoreError::Other(format!("corrupt lease record: {e}"))
                };
                Ok(Lease {
                    holder: record.get_str("holder").map_err(corrupt)?.to_owned(),
                    expires_at: Timestamp::from_millis(
                        record.get_i64("expiresAt").map_err(corrupt)?,
                    ),
                })
            })
            .transpose()
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        self.collection("leases")
            .delete_one(doc! {"_id": name, "holder": holder})
            .await
            .map(|_| ())
            .map_err(map_err)
    }
}

#[async_trait]
impl GcStore for MongoStore {
    async fn gc_marks(&self) -> StoreResult<std::collections::HashMap<String, Timestamp>> {
        let cursor = self
            .collection("gc_marks")
            .find(doc! {})
            .await
            .map_err(map_err)?;
        let records: Vec<Document> = cursor.try_collect().await.map_err(map_err)?;
        Ok(records
            .into_iter()
            .filter_map(|r| {
                Some((
                    r.get_str("_id").ok()?.to_owned(),
                    Timestamp::from_millis(r.get_i64("markedAt").ok()?),
                ))
            })
            .collect())
    }

    async fn mark_unreferenced(&self, digests: &[String], at: Timestamp) -> StoreResult<()> {
        for digest in digests {
            self.collection("gc_marks")
                .update_one(
                    doc! {"_id": digest},
                    doc! {"$setOnInsert": {"markedAt": at.millis()}},
                )
                .upsert(true)
                .await
                .map_err(map_err)?;
        }
        Ok(())
    }

    async fn clear_marks(&self, digests: &[String]) -> StoreResult<()> {
        if digests.is_empty() {
            return Ok(());
        }
        self.collection("gc_marks")
            .delete_many(doc! {"_id": {"$in": digests}})
            .await
            .map(|_| ())
            .map_err(map_err)
    }
}
