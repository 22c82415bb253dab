//! Trusted publishers and exchanged OIDC token ids, on MongoDB.

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use reliquary_client::types::{Timestamp, TrustedPublisher};

use super::{from_bson_doc, map_err, to_bson_doc, MongoStore};
use crate::store::{StoreError, StoreResult, TrustStore};

fn publisher_from(mut record: Document) -> StoreResult<TrustedPublisher> {
    let doc = record
        .remove("doc")
        .and_then(|d| d.as_document().cloned())
        .ok_or_else(|| StoreError::Other("publisher record without its document".into()))?;
    from_bson_doc(doc)
}

#[async_trait]
impl TrustStore for MongoStore {
    async fn put_publisher(&self, publisher: &TrustedPublisher) -> StoreResult<bool> {
        let result = self
            .collection("trusted_publishers")
            .update_one(
                doc! {"_id": &publisher.name},
                doc! {"$set": {"doc": to_bson_doc(publisher)?}},
            )
            .upsert(true)
            .await
            .map_err(map_err)?;
        Ok(result.upserted_id.is_some())
    }

    async fn get_publisher(&self, name: &str) -> StoreResult<Option<TrustedPublisher>> {
        self.collection("trusted_publishers")
            .find_one(doc! {"_id": name})
            .await
            .map_err(map_err)?
            .map(publisher_from)
            .transpose()
    }

    async fn list_publishers(&self) -> StoreResult<Vec<TrustedPublisher>> {
        let cursor = self
            .collection("trusted_publishers")
            .find(doc! {})
            .sort(doc! {"_id": 1})
            .await
            .map_err(map_err)?;
        let records: Vec<Document> = cursor.try_collect().await.map_err(map_err)?;
        records.into_iter().map(publisher_from).collect()
    }

    async fn delete_publisher(&self, name: &str) -> StoreResult<bool> {
        let result = self
            .collection("trusted_publishers")
            .delete_one(doc! {"_id": name})
            .await
            .map_err(map_err)?;
        Ok(result.deleted_count > 0)
    }

    async fn claim_token_id(
        &self,
        token_id: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let ids = self.collection("oidc_token_ids");
        ids.delete_many(doc! {"expiresAt": {"$lt": now.millis()}})
            .await
            .map_err(map_err)?;
        // `_id` is unique on every MongoDB: of two replicas inserting one token id, one wins.
        match ids
            .insert_one(doc! {"_id": token_id, "expiresAt": expires_at.millis()})
            .await
            .map_err(map_err)
        {
            Ok(_) => Ok(true),
            Err(StoreError::Duplicate(_)) => Ok(false),
            Err(other) => Err(other),
        }
    }
}
