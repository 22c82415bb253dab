//! The audit log, on SQLite.

use super::*;

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, record: AuditRecord) -> StoreResult<()> {
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO audit (at, action, outcome, key_id, key_name, artefact_id, architecture, detail, remote_addr, once_key)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
                 ON CONFLICT (once_key) DO NOTHING",
                params![
                    record.at.to_string(),
                    record.action,
                    record.outcome,
                    record.key_id,
                    record.key_name,
                    record.artefact_id,
                    record.architecture,
                    record.detail,
                    record.remote_addr,
                    record.once_key
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let query = query.clone();
        let before: Option<i64> = match query.before.as_deref() {
            None => None,
            Some(text) => Some(text.parse().map_err(|_| StoreError::BadCursor)?),
        };
        self.with_reader(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id, at, action, outcome, key_id, key_name, artefact_id, architecture, detail, remote_addr
                 FROM audit
                 WHERE (?1 IS NULL OR action = ?1) AND (?2 IS NULL OR id < ?2)
                 ORDER BY id DESC LIMIT ?3",
            )?;
            let rows = statement.query_map(params![query.action, before, query.limit as i64], |row| {
                Ok((row.get::<_, i64>(0)?, row.get::<_, String>(1)?, AuditEntry {
                    id: String::new(),
                    at: Timestamp::from_millis(0),
                    action: row.get(2)?,
                    outcome: row.get(3)?,
                    key_id: row.get(4)?,
                    key_name: row.get(5)?,
                    artefact_id: row.get(6)?,
                    architecture: row.get(7)?,
                    detail: row.get(8)?,
                    remote_addr: row.get(9)?,
                }))
            })?;
            rows.map(|row| {
                let (id, at, entry) = row?;
                Ok(AuditEntry {
                    id: id.to_string(),
                    at: at.parse().map_err(|e| StoreError::Other(format!("corrupt audit time: {e}")))?,
                    ..entry
                })
            })
            .collect()
        })
        .await
    }

    async fn prune_audit(&self, before: Timestamp) -> StoreResult<u64> {
        self.with_conn(move |conn| {
            let removed = conn.execute("DELETE FROM audit WHERE at < ?1", [before.to_string()])?;
            Ok(removed as u64)
        })
        .await
    }
}
