//! Download times and the branch-retention query, on SQLite.

use super::*;

#[async_trait]
impl RetentionStore for SqliteStore {
    async fn record_downloads(&self, seen: &[(String, Timestamp)]) -> StoreResult<()> {
        let seen = seen.to_vec();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            {
                // Timestamps are fixed-width RFC 3339 UTC text, so text order is time order.
                let mut upsert = tx.prepare_cached(
                    "INSERT INTO downloads (id, last_downloaded_at) VALUES (?1, ?2)
                     ON CONFLICT (id) DO UPDATE SET last_downloaded_at = excluded.last_downloaded_at
                     WHERE excluded.last_downloaded_at > downloads.last_downloaded_at",
                )?;
                for (id, at) in &seen {
                    upsert.execute(params![id, at.to_string()])?;
                }
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn last_downloaded(&self, id: &str) -> StoreResult<Option<Timestamp>> {
        let id = id.to_owned();
        self.with_reader(move |conn| {
            let at: Option<String> = conn
                .query_row(
                    "SELECT last_downloaded_at FROM downloads WHERE id = ?1",
                    [&id],
                    |row| row.get(0),
                )
                .optional()?;
            at.as_deref().map(parse_timestamp).transpose()
        })
        .await
    }

    async fn downloads_tracked_since(&self) -> StoreResult<Timestamp> {
        self.with_reader(|conn| {
            let applied: String = conn.query_row(
                "SELECT applied_at FROM schema_migrations WHERE version = ?1",
                [RETENTION_MIGRATION],
                |row| row.get(0),
            )?;
            parse_timestamp(&applied)
        })
        .await
    }

    async fn retention_candidates(
        &self,
        cutoff: Timestamp,
    ) -> StoreResult<Vec<RetentionCandidate>> {
        self.with_reader(move |conn| {
            // The expression is the indexed one (`artefacts_kind_data_updated`).
            let mut statement = conn.prepare_cached(
                "SELECT a.id, a.revision, json_extract(a.doc, '$.dataUpdatedAt'), d.last_downloaded_at
                 FROM artefacts a LEFT JOIN downloads d ON d.id = a.id
                 WHERE a.kind = 'branch'
                   AND json_extract(a.doc, '$.dataUpdatedAt') < ?1
                   AND (d.last_downloaded_at IS NULL OR d.last_downloaded_at < ?1)
                 ORDER BY json_extract(a.doc, '$.dataUpdatedAt'), a.id",
            )?;
            let rows = statement.query_map(params![cutoff.to_string()], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, i64>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Option<String>>(3)?,
                ))
            })?;
            let mut candidates = Vec::new();
            for row in rows {
                let (id, revision, data_updated_at, last_downloaded_at) = row?;
                candidates.push(RetentionCandidate {
                    id,
                    revision,
                    data_updated_at: parse_timestamp(&data_updated_at)?,
                    last_downloaded_at: last_downloaded_at
                        .as_deref()
                        .map(parse_timestamp)
                        .transpose()?,
                });
            }
            Ok(candidates)
        })
        .await
    }
}

/// The migration that created the `downloads` table.
const RETENTION_MIGRATION: i64 = 5;

fn parse_timestamp(text: &str) -> StoreResult<Timestamp> {
    text.parse()
        .map_err(|e| StoreError::Other(format!("corrupt stored timestamp `{text}`: {e}")))
}
