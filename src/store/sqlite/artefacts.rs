//! Artefacts and the change feed, on SQLite.

use super::*;

#[async_trait]
impl ArtefactStore for SqliteStore {
    async fn get(&self, id: &str, visibility: &Visibility) -> StoreResult<Option<Artefact>> {
        let id = id.to_owned();
        let filter = filter_params(visibility);
        self.point_read(move |conn| {
            // Cached statements: reads are the hot path, and parsing SQL is not free.
            let doc: Option<String> = conn
                .prepare_cached(&format!(
                    "SELECT doc FROM artefacts WHERE id = :id AND {VISIBLE}"
                ))?
                .query_row(bind(&filter, &[(":id", &id)]).as_slice(), |row| row.get(0))
                .optional()?;
            doc.as_deref().map(from_json).transpose()
        })
        .await
    }

    async fn revision(&self, id: &str, visibility: &Visibility) -> StoreResult<Option<i64>> {
        let id = id.to_owned();
        let filter = filter_params(visibility);
        self.point_read(move |conn| {
            Ok(conn
                .prepare_cached(&format!(
                    "SELECT revision FROM artefacts WHERE id = :id AND {VISIBLE}"
                ))?
                .query_row(bind(&filter, &[(":id", &id)]).as_slice(), |row| row.get(0))
                .optional()?)
        })
        .await
    }

    async fn put(&self, mut doc: Artefact, expected: Option<i64>) -> StoreResult<Artefact> {
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current: Option<i64> = tx
                .query_row(
                    "SELECT revision FROM artefacts WHERE id = ?1",
                    [&doc.id],
                    |row| row.get(0),
                )
                .optional()?;
            if current != expected {
                return Err(StoreError::RevisionMismatch);
            }
            let tombstone = match expected {
                Some(_) => None,
                None => tx
                    .query_row(
                        "SELECT revision FROM tombstones WHERE id = ?1",
                        [&doc.id],
                        |row| row.get(0),
                    )
                    .optional()?,
            };
            doc.revision = next_revision(expected, tombstone);
            doc.seq = next_seq(&tx)?;
            tx.execute(
                "INSERT OR REPLACE INTO artefacts (id, kind, category, search, seq, revision, doc)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![
                    doc.id,
                    doc.kind.as_str(),
                    doc.category,
                    search_text(&doc),
                    doc.seq,
                    doc.revision,
                    to_json(&doc)
                ],
            )?;
            tx.execute("DELETE FROM tombstones WHERE id = ?1", [&doc.id])?;
            tx.commit()?;
            Ok(doc)
        })
        .await
    }

    async fn delete(&self, id: &str, expected: i64) -> StoreResult<Tombstone> {
        let id = id.to_owned();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let current: Option<(i64, String, Option<String>)> = tx
                .query_row(
                    "SELECT revision, kind, category FROM artefacts WHERE id = ?1",
                    [&id],
                    |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)),
                )
                .optional()?;
            let Some((revision, kind, category)) = current else {
                return Err(StoreError::NotFound);
            };
            if revision != expected {
                return Err(StoreError::RevisionMismatch);
            }
            let tombstone = Tombstone {
                id: id.clone(),
                deleted: true,
                kind: kind.parse().map_err(StoreError::Other)?,
                seq: next_seq(&tx)?,
                deleted_at: Timestamp::now(),
                revision,
            };
            tx.execute("DELETE FROM artefacts WHERE id = ?1", [&id])?;
            tx.execute(
                "INSERT OR REPLACE INTO tombstones (id, kind, category, seq, revision, deleted_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
                params![
                    id,
                    kind,
                    category,
                    tombstone.seq,
                    revision,
                    tombstone.deleted_at.to_string()
                ],
            )?;
            tx.commit()?;
            Ok(tombstone)
        })
        .await
    }

    async fn browse(
        &self,
        query: &BrowseQuery,
        visibility: &Visibility,
    ) -> StoreResult<Vec<Artefact>> {
        let query = query.clone();
        let filter = filter_params(visibility);
        self.with_reader(move |conn| {
            let mut statement = conn.prepare_cached(&format!(
                "SELECT doc FROM artefacts
                 WHERE id > :after
                   AND (:kind IS NULL OR kind = :kind)
                   AND (:category IS NULL OR category = :category)
                   AND (:q IS NULL OR instr(search, :q) > 0)
                   AND {VISIBLE}
                 ORDER BY id LIMIT :limit"
            ))?;
            let q = query.q.map(|q| q.to_lowercase());
            let kind = query.kind.map(Kind::as_str);
            let limit = query.limit as i64;
            let own: [(&str, &dyn rusqlite::ToSql); 5] = [
                // "" sorts before every id: the first page. A plain range keeps the primary
                // key usable, so a page costs the same wherever it starts.
                (":after", &query.after.as_deref().unwrap_or("")),
                (":kind", &kind),
                (":category", &query.category),
                (":q", &q),
                (":limit", &limit),
            ];
            let rows = statement.query_map(bind(&filter, &own).as_slice(), |row| {
                row.get::<_, String>(0)
            })?;
            rows.map(|doc| from_json(&doc?)).collect()
        })
        .await
    }

    async fn changes(
        &self,
        since: i64,
        limit: usize,
        visibility: &Visibility,
    ) -> StoreResult<Changes> {
        let filter = filter_params(visibility);
        self.with_reader(move |conn| {
            // One read transaction: the page and lastSeq come from the same snapshot.
            let tx = conn.transaction()?;
            let last_seq: i64 =
                tx.query_row("SELECT value FROM counters WHERE name = 'seq'", [], |row| {
                    row.get(0)
                })?;
            let mut items = Vec::new();
            {
                let mut statement = tx.prepare_cached(&format!(
                    "SELECT seq, doc, NULL, NULL, NULL, NULL FROM artefacts
                       WHERE seq > :since AND {VISIBLE}
                     UNION ALL
                     SELECT seq, NULL, id, kind, deleted_at, revision FROM tombstones
                       WHERE seq > :since AND {VISIBLE}
                     ORDER BY 1 LIMIT :limit"
                ))?;
                let page = limit as i64 + 1;
                let own: [(&str, &dyn rusqlite::ToSql); 2] =
                    [(":since", &since), (":limit", &page)];
                let mut rows = statement.query(bind(&filter, &own).as_slice())?;
                while let Some(row) = rows.next()? {
                    let change = match row.get::<_, Option<String>>(1)? {
                        Some(doc) => Change::Artefact(Box::new(from_json(&doc)?)),
                        None => {
                            let kind: String = row.get(3)?;
                            let deleted_at: String = row.get(4)?;
                            Change::Deleted(Tombstone {
                                id: row.get(2)?,
                                deleted: true,
                                kind: kind.parse().map_err(StoreError::Other)?,
                                seq: row.get(0)?,
                                deleted_at: deleted_at
                                    .parse()
                                    .map_err(|e| StoreError::Other(format!("{e}")))?,
                                revision: row.get(5)?,
                            })
                        }
                    };
                    items.push(change);
                }
            }
            Ok(page_of(items, limit, last_seq))
        })
        .await
    }

    async fn referenced_blobs(&self) -> StoreResult<Vec<String>> {
        self.with_reader(|conn| {
            // The slots, and the slots their history keeps (a rollback may reinstate them).
            let mut statement = conn.prepare(
                "SELECT json_extract(slot.value, '$.sha256')
                 FROM artefacts, json_each(artefacts.doc, '$.tarballs') AS slot
                 UNION
                 SELECT json_extract(entry.value, '$.sha256')
                 FROM artefacts, json_each(artefacts.doc, '$.history') AS arch,
                      json_each(arch.value) AS entry",
            )?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.with_reader(|conn| {
            conn.query_row("SELECT value FROM counters WHERE name = 'seq'", [], |row| {
                row.get::<_, i64>(0)
            })?;
            Ok(())
        })
        .await
    }
}
