//! Artefacts, tombstones and the change sequence on MongoDB.
//!
//! Seq claims: a writer increments the counter and records a claim in one atomic update, then
//! names the claimed seq (`inflight`), writes its document, and releases the claim. The change
//! feed reads the counter first and never goes past the oldest seq still in flight, so a reader
//! can never advance its cursor over a change that commits later. A writer that crashed leaves a
//! claim behind; claims older than [`STALE_CLAIM_MS`] are ignored.

use std::time::Duration;

use async_trait::async_trait;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document};
use mongodb::options::ReturnDocument;
use reliquary_client::types::{Artefact, Change, Timestamp, Tombstone};
use uuid::Uuid;

use super::{from_bson_doc, map_err, to_bson_doc, MongoStore};
use crate::domain::visibility::Visibility;
use crate::store::{next_revision, page_of};
use crate::store::{search_text, ArtefactStore, BrowseQuery, Changes, StoreError, StoreResult};

/// A claim older than this belongs to a writer that died; the feed stops waiting for it.
const STALE_CLAIM_MS: i64 = 30_000;

/// The federation filter as a MongoDB filter over `kind`, `_id` and `category`.
fn visible(visibility: &Visibility) -> Document {
    let mut filter = doc! {};
    if visibility.releases_only {
        filter.insert("kind", "release");
    }
    if let Some(prefix) = &visibility.id_prefix {
        // Ids are ASCII below 0x7f, so this range is exactly "starts with prefix".
        filter.insert(
            "_id",
            doc! {"$gte": prefix, "$lt": format!("{prefix}\u{7f}")},
        );
    }
    if let Some(category) = &visibility.category {
        filter.insert("category", category);
    }
    if let Some(patterns) = &visibility.id_patterns {
        let any: Vec<Document> = patterns
            .iter()
            .map(|p| doc! {"_id": {"$regex": id_pattern_regex(p)}})
            .collect();
        filter.insert("$or", any);
    }
    filter
}

/// An `allowedIds` pattern as an anchored regex: `*` is any run without `/`, the rest literal.
fn id_pattern_regex(pattern: &str) -> String {
    let literal: Vec<String> = pattern.split('*').map(escape_regex).collect();
    format!("^{}$", literal.join("[^/]*"))
}

/// The store's own conditions and the federation filter as one flat filter. MongoDB reads a
/// top-level `$and` as well as a flat filter, but simpler planners only match an index to the
/// fields of a flat one; `$and` remains only for two equalities on one field.
fn and(own: Document, visibility: &Visibility) -> Document {
    let filter = visible(visibility);
    let mut merged = own.clone();
    for (field, condition) in filter.clone() {
        let combined = match (merged.remove(&field), condition) {
            (None, condition) => condition,
            (Some(Bson::Document(mut ours)), Bson::Document(theirs))
                if theirs.keys().all(|op| !ours.contains_key(op)) =>
            {
                ours.extend(theirs);
                Bson::Document(ours)
            }
            (Some(value), Bson::Document(mut theirs))
                if !matches!(value, Bson::Document(_)) && !theirs.contains_key("$eq") =>
            {
                theirs.insert("$eq", value);
                Bson::Document(theirs)
            }
            _ => return doc! {"$and": [own, filter]},
        };
        merged.insert(field, combined);
    }
    merged
}

fn escape_regex(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if "\\^$.|?*+()[]{}".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

fn tombstone_from(document: Document) -> StoreResult<Tombstone> {
    let text = |key: &str| {
        document
            .get_str(key)
            .map(str::to_owned)
            .map_err(|e| StoreError::Other(e.to_string()))
    };
    Ok(Tombstone {
        id: text("_id")?,
        deleted: true,
        kind: text("kind")?.parse().map_err(StoreError::Other)?,
        seq: document
            .get_i64("seq")
            .map_err(|e| StoreError::Other(e.to_string()))?,
        deleted_at: text("deletedAt")?
            .parse()
            .map_err(|e| StoreError::Other(format!("{e}")))?,
        revision: document
            .get_i64("revision")
            .map_err(|e| StoreError::Other(e.to_string()))?,
    })
}

fn artefact_from(mut document: Document) -> StoreResult<Artefact> {
    let doc = document
        .remove("doc")
        .and_then(|d| d.as_document().cloned())
        .ok_or_else(|| StoreError::Other("artefact record without its document".into()))?;
    from_bson_doc(doc)
}

impl MongoStore {
    /// Claims the next seq; the claim must be released with [`Self::release_seq`].
    async fn claim_seq(&self, token: &str) -> StoreResult<i64> {
        let counters = self.collection("counters");
        let now = Timestamp::now().millis();
        let counter = counters
            .find_one_and_update(
                doc! {"_id": "seq"},
                doc! {"$inc": {"value": 1_i64}, "$push": {"claims": {"token": token, "at": now}}},
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await
            .map_err(map_err)?
            .ok_or_else(|| StoreError::Other("the seq counter vanished".into()))?;
        let seq = counter
            .get_i64("value")
            .map_err(|e| StoreError::Other(e.to_string()))?;
        counters
            .update_one(
                doc! {"_id": "seq"},
                doc! {
                    "$pull": {"claims": {"token": token}},
                    "$push": {"inflight": {"token": token, "seq": seq, "at": now}},
                },
            )
            .await
            .map_err(map_err)?;
        Ok(seq)
    }

    async fn release_seq(&self, token: &str) {
        let released = self
            .collection("counters")
            .update_one(
                doc! {"_id": "seq"},
                doc! {"$pull": {"inflight": {"token": token}}},
            )
            .await;
        if let Err(error) = released {
            tracing::warn!(%error, "could not release a seq claim; the change feed waits for it to go stale");
        }
    }

    /// The highest seq below which every claim has settled.
    async fn settled_seq(&self) -> StoreResult<i64> {
        for _ in 0..400 {
            let counter = self
                .collection("counters")
                .find_one(doc! {"_id": "seq"})
                .await
                .map_err(map_err)?
                .unwrap_or_default();
            let value = counter.get_i64("value").unwrap_or(0);
            let now = Timestamp::now().millis();
            let live = |key: &str| -> Vec<Document> {
                counter
                    .get_array(key)
                    .map(|items| {
                        items
                            .iter()
                            .filter_map(Bson::as_document)
                            .filter(|c| now - c.get_i64("at").unwrap_or(0) < STALE_CLAIM_MS)
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default()
            };
            // A claim that has not named its seq yet could be any seq: wait for it (milliseconds).
            if !live("claims").is_empty() {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            let oldest_in_flight = live("inflight")
                .iter()
                .filter_map(|c| c.get_i64("seq").ok())
                .min();
            return Ok(oldest_in_flight.map_or(value, |seq| seq - 1));
        }
        Err(StoreError::Unavailable("seq claims did not settle".into()))
    }

    async fn write_claimed(
        &self,
        mut doc: Artefact,
        expected: Option<i64>,
        seq: i64,
    ) -> StoreResult<Artefact> {
        let artefacts = self.collection("artefacts");
        let tombstone = match expected {
            Some(_) => None,
            None => self
                .collection("tombstones")
                .find_one(doc! {"_id": &doc.id})
                .await
                .map_err(map_err)?
                .and_then(|t| t.get_i64("revision").ok()),
        };
        doc.revision = next_revision(expected, tombstone);
        doc.seq = seq;
        let fields = doc! {
            "kind": doc.kind.as_str(),
            "category": doc.category.clone(),
            "search": search_text(&doc),
            "seq": seq,
            "revision": doc.revision,
            "doc": to_bson_doc(&doc)?,
        };
        match expected {
            Some(revision) => {
                let result = artefacts
                    .update_one(
                        doc! {"_id": &doc.id, "revision": revision},
                        doc! {"$set": fields},
                    )
                    .await
                    .map_err(map_err)?;
                if result.matched_count == 0 {
                    return Err(StoreError::RevisionMismatch);
                }
            }
            None => {
                let mut record = doc! {"_id": &doc.id};
                record.extend(fields);
                match artefacts.insert_one(record).await.map_err(map_err) {
                    Err(StoreError::Duplicate(_)) => return Err(StoreError::RevisionMismatch),
                    other => other?,
                };
            }
        }
        self.collection("tombstones")
            .delete_one(doc! {"_id": &doc.id})
            .await
            .map_err(map_err)?;
        Ok(doc)
    }

    /// A page in index order. The index is named (`hint`), so the plan is the same on every
    /// server and never flips to a scan plus an in-memory sort as the data changes: the walk
    /// stops at the page's last item.
    async fn find_sorted(
        &self,
        collection: &str,
        filter: Document,
        index: Document,
        limit: usize,
    ) -> StoreResult<Vec<Document>> {
        let sort = doc! {index.keys().last().expect("an index has keys"): 1};
        let cursor = self
            .collection(collection)
            .find(filter)
            .sort(sort)
            .hint(mongodb::options::Hint::Keys(index))
            .limit(limit as i64)
            .await
            .map_err(map_err)?;
        cursor.try_collect().await.map_err(map_err)
    }
}

#[async_trait]
impl ArtefactStore for MongoStore {
    async fn get(&self, id: &str, visibility: &Visibility) -> StoreResult<Option<Artefact>> {
        self.collection("artefacts")
            .find_one(and(doc! {"_id": id}, visibility))
            .await
            .map_err(map_err)?
            .map(artefact_from)
            .transpose()
    }

    async fn revision(&self, id: &str, visibility: &Visibility) -> StoreResult<Option<i64>> {
        let found = self
            .collection("artefacts")
            .find_one(and(doc! {"_id": id}, visibility))
            .projection(doc! {"revision": 1})
            .await
            .map_err(map_err)?;
        found
            .map(|document| {
                document
                    .get_i64("revision")
                    .map_err(|e| StoreError::Other(format!("corrupt stored document: {e}")))
            })
            .transpose()
    }

    async fn put(&self, doc: Artefact, expected: Option<i64>) -> StoreResult<Artefact> {
        let token = Uuid::new_v4().to_string();
        let seq = self.claim_seq(&token).await?;
        let result = self.write_claimed(doc, expected, seq).await;
        self.release_seq(&token).await;
        result
    }

    async fn delete(&self, id: &str, expected: i64) -> StoreResult<Tombstone> {
        let current = self
            .collection("artefacts")
            .find_one(doc! {"_id": id})
            .await
            .map_err(map_err)?
            .ok_or(StoreError::NotFound)?;
        if current.get_i64("revision").ok() != Some(expected) {
            return Err(StoreError::RevisionMismatch);
        }
        let token = Uuid::new_v4().to_string();
        let seq = self.claim_seq(&token).await?;
        let result = async {
            let tombstone = Tombstone {
                id: id.to_owned(),
                deleted: true,
                // A record without a kind is damaged: never guess "release" for it.
                kind: current
                    .get_str("kind")
                    .map_err(|_| StoreError::Other(format!("artefact record `{id}` has no kind")))?
                    .parse()
                    .map_err(StoreError::Other)?,
                seq,
                deleted_at: Timestamp::now(),
                revision: expected,
            };
            let category = current.get_str("category").ok().map(str::to_owned);
            // Tombstone first: should the compare-and-swap below lose, it is taken back.
            self.collection("tombstones")
                .replace_one(
                    doc! {"_id": id},
                    doc! {
                        "_id": id,
                        "kind": tombstone.kind.as_str(),
                        "category": category,
                        "seq": seq,
                        "revision": expected,
                        "deletedAt": tombstone.deleted_at.to_string(),
                    },
                )
                .upsert(true)
                .await
                .map_err(map_err)?;
            let deleted = self
                .collection("artefacts")
                .delete_one(doc! {"_id": id, "revision": expected})
                .await
                .map_err(map_err)?;
            if deleted.deleted_count == 0 {
                self.collection("tombstones")
                    .delete_one(doc! {"_id": id, "seq": seq})
                    .await
                    .map_err(map_err)?;
                return Err(StoreError::RevisionMismatch);
            }
            Ok(tombstone)
        }
        .await;
        self.release_seq(&token).await;
        result
    }

    async fn browse(
        &self,
        query: &BrowseQuery,
        visibility: &Visibility,
    ) -> StoreResult<Vec<Artefact>> {
        let mut own = doc! {};
        if let Some(after) = &query.after {
            own.insert("_id", doc! {"$gt": after});
        }
        if let Some(kind) = query.kind {
            own.insert("kind", kind.as_str());
        }
        if let Some(category) = &query.category {
            own.insert("category", category);
        }
        if let Some(q) = &query.q {
            own.insert("search", doc! {"$regex": escape_regex(&q.to_lowercase())});
        }
        // By id, or by category then id when one category is asked for (it may be rare).
        let index = if query.category.is_some() || visibility.category.is_some() {
            doc! {"category": 1, "_id": 1}
        } else {
            doc! {"_id": 1}
        };
        self.find_sorted("artefacts", and(own, visibility), index, query.limit)
            .await?
            .into_iter()
            .map(artefact_from)
            .collect()
    }

    async fn changes(
        &self,
        since: i64,
        limit: usize,
        visibility: &Visibility,
    ) -> StoreResult<Changes> {
        let horizon = self.settled_seq().await?;
        let range = doc! {"seq": {"$gt": since, "$lte": horizon}};
        let docs = self
            .find_sorted(
                "artefacts",
                and(range.clone(), visibility),
                doc! {"seq": 1},
                limit + 1,
            )
            .await?;
        let tombstones = self
            .find_sorted(
                "tombstones",
                and(range, visibility),
                doc! {"seq": 1},
                limit + 1,
            )
            .await?;
        let mut items = docs
            .into_iter()
            .map(|d| artefact_from(d).map(|a| Change::Artefact(Box::new(a))))
            .chain(
                tombstones
                    .into_iter()
                    .map(|t| tombstone_from(t).map(Change::Deleted)),
            )
            .collect::<StoreResult<Vec<_>>>()?;
        items.sort_by_key(Change::seq);
        Ok(page_of(items, limit, horizon))
    }

    async fn referenced_blobs(&self) -> StoreResult<Vec<String>> {
        let cursor = self
            .collection("artefacts")
            .find(doc! {})
            .projection(doc! {"doc.tarballs": 1, "doc.history": 1})
            .await
            .map_err(map_err)?;
        let records: Vec<Document> = cursor.try_collect().await.map_err(map_err)?;
        let mut digests = std::collections::BTreeSet::new();
        // A record that cannot be read is an error, never skipped: `gc` would otherwise
        // collect the blobs it references (SQLite fails the same way).
        let malformed = |what: &str| StoreError::Other(format!("an artefact record {what}"));
        let mut add = |slot: &mongodb::bson::Bson| {
            let sha = slot
                .as_document()
                .and_then(|slot| slot.get_str("sha256").ok())
                .ok_or_else(|| malformed("has a slot without a `sha256`"))?;
            digests.insert(sha.to_owned());
            Ok::<_, StoreError>(())
        };
        for record in records {
            let doc = record
                .get_document("doc")
                .map_err(|_| malformed("has no readable `doc`"))?;
            let tarballs = doc
                .get_document("tarballs")
                .map_err(|_| malformed("has no readable `tarballs`"))?;
            tarballs.values().try_for_each(&mut add)?;
            // The slots history keeps: a rollback may reinstate them.
            let history = match doc.get("history") {
                None => None,
                Some(mongodb::bson::Bson::Document(history)) => Some(history),
                Some(_) => return Err(malformed("has a history that is not a document")),
            };
            if let Some(history) = history {
                for entries in history.values() {
                    let entries = entries
                        .as_array()
                        .ok_or_else(|| malformed("has a history that is not a list"))?;
                    entries.iter().try_for_each(&mut add)?;
                }
            }
        }
        Ok(digests.into_iter().collect())
    }

    async fn ping(&self) -> StoreResult<()> {
        MongoStore::ping(self).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_federation_filter_joins_the_query_as_one_flat_filter() {
        let mirror = Visibility {
            releases_only: true,
            id_prefix: Some("acme-".into()),
            category: Some("plugins".into()),
            id_patterns: None,
        };
        assert_eq!(
            and(doc! {"seq": {"$gt": 4_i64}}, &Visibility::all()),
            doc! {"seq": {"$gt": 4_i64}}
        );
        assert_eq!(
            and(doc! {"_id": {"$gt": "acme-b"}}, &mirror),
            doc! {
                "_id": {"$gt": "acme-b", "$gte": "acme-", "$lt": "acme-\u{7f}"},
                "kind": "release",
                "category": "plugins",
            }
        );
        assert_eq!(
            and(doc! {"_id": "acme-a@1"}, &mirror),
            doc! {
                "_id": {"$gte": "acme-", "$lt": "acme-\u{7f}", "$eq": "acme-a@1"},
                "kind": "release",
                "category": "plugins",
            }
        );
        // Two equalities on one field cannot share a key: both must hold.
        assert_eq!(
            and(doc! {"category": "tools"}, &mirror),
            doc! {"$and": [{"category": "tools"}, visible(&mirror)]}
        );
    }
}
