//! Download times and the branch-retention query, on MongoDB.

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, Document};
use reliquary_client::types::Timestamp;

use super::{map_err, MongoStore};
use crate::store::{RetentionCandidate, RetentionStore, StoreError, StoreResult};

/// The migration that started recording downloads.
const RETENTION_MIGRATION: i64 = 3;

/// Download times are looked up for this many candidates at a time.
const BATCH: usize = 500;

#[async_trait]
impl RetentionStore for MongoStore {
    async fn record_downloads(&self, seen: &[(String, Timestamp)]) -> StoreResult<()> {
        let downloads = self.collection("downloads");
        for (id, at) in seen {
            // Timestamps are fixed-width RFC 3339 UTC text, so text order is time order. The
            // filter matches only an older time; when a newer one is stored, the upsert's
            // insert hits the `_id` and is a duplicate, which is the "never lower it" case.
            let at = at.to_string();
            let result = downloads
                .update_one(
                    doc! {"_id": id, "at": {"$lt": &at}},
                    doc! {"$set": {"at": &at}},
                )
                .upsert(true)
                .await
                .map_err(map_err);
            match result {
                Ok(_) | Err(StoreError::Duplicate(_)) => {}
                Err(other) => return Err(other),
            }
        }
        Ok(())
    }

    async fn last_downloaded(&self, id: &str) -> StoreResult<Option<Timestamp>> {
        let found = self
            .collection("downloads")
            .find_one(doc! {"_id": id})
            .await
            .map_err(map_err)?;
        found.map(|record| download_time(&record)).transpose()
    }

    async fn downloads_tracked_since(&self) -> StoreResult<Timestamp> {
        let applied = self
            .collection("schema_migrations")
            .find_one(doc! {"_id": RETENTION_MIGRATION})
            .await
            .map_err(map_err)?
            .ok_or_else(|| StoreError::Other("the retention migration is not recorded".into()))?;
        parse(applied.get_str("appliedAt").map_err(corrupt)?)
    }

    async fn retention_candidates(
        &self,
        cutoff: Timestamp,
    ) -> StoreResult<Vec<RetentionCandidate>> {
        let cutoff = cutoff.to_string();
        let index = doc! {"kind": 1, "doc.dataUpdatedAt": 1, "_id": 1};
        let idle: Vec<Document> = self
            .collection("artefacts")
            .find(doc! {"kind": "branch", "doc.dataUpdatedAt": {"$lt": &cutoff}})
            .projection(doc! {"revision": 1, "doc.dataUpdatedAt": 1})
            .sort(index.clone())
            .hint(mongodb::options::Hint::Keys(index))
            .await
            .map_err(map_err)?
            .try_collect()
            .await
            .map_err(map_err)?;
        let mut candidates = Vec::new();
        for batch in idle.chunks(BATCH) {
            let ids: Vec<&str> = batch
                .iter()
                .map(|r| r.get_str("_id").map_err(corrupt))
                .collect::<StoreResult<_>>()?;
            let downloads: Vec<Document> = self
                .collection("downloads")
                .find(doc! {"_id": {"$in": &ids}})
                .await
                .map_err(map_err)?
                .try_collect()
                .await
                .map_err(map_err)?;
            let mut last = std::collections::HashMap::new();
            for record in &downloads {
                last.insert(
                    record.get_str("_id").map_err(corrupt)?,
                    download_time(record)?,
                );
            }
            for record in batch {
                let id = record.get_str("_id").map_err(corrupt)?;
                let last_downloaded_at = last.get(id).copied();
                if last_downloaded_at.is_some_and(|at| at.to_string() >= cutoff) {
                    continue;
                }
                let data_updated_at = record
                    .get_document("doc")
                    .and_then(|d| d.get_str("dataUpdatedAt"))
                    .map_err(corrupt)?;
                candidates.push(RetentionCandidate {
                    id: id.to_owned(),
                    revision: record.get_i64("revision").map_err(corrupt)?,
                    data_updated_at: parse(data_updated_at)?,
                    last_downloaded_at,
                });
            }
        }
        Ok(candidates)
    }
}

fn download_time(record: &Document) -> StoreResult<Timestamp> {
    parse(record.get_str("at").map_err(corrupt)?)
}

fn parse(text: &str) -> StoreResult<Timestamp> {
    text.parse()
        .map_err(|e| StoreError::Other(format!("corrupt stored timestamp `{text}`: {e}")))
}

fn corrupt(error: mongodb::bson::document::ValueAccessError) -> StoreError {
    StoreError::Other(format!("corrupt stored record: {error}"))
}
