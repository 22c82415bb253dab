//! Remotes, their sync state and leases, on SQLite.

use super::*;

#[async_trait]
impl RemoteStore for SqliteStore {
    async fn put_remote(
        &self,
        name: &str,
        config: &RemoteConfig,
        token: &str,
    ) -> StoreResult<bool> {
        let (name, config, token) = (name.to_owned(), to_json(config), token.to_owned());
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existed = tx
                .query_row("SELECT 1 FROM remotes WHERE name = ?1", [&name], |_| Ok(()))
                .optional()?
                .is_some();
            tx.execute(
                "INSERT OR REPLACE INTO remotes (name, config, token) VALUES (?1, ?2, ?3)",
                params![name, config, token],
            )?;
            tx.commit()?;
            Ok(!existed)
        })
        .await
    }

    async fn get_remote(&self, name: &str) -> StoreResult<Option<RemoteRecord>> {
        Ok(self.remotes(Some(name.to_owned())).await?.pop())
    }

    async fn list_remotes(&self) -> StoreResult<Vec<RemoteRecord>> {
        self.remotes(None).await
    }
    async fn delete_remote(&self, name: &str) -> StoreResult<bool> {
        let name = name.to_owned();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let removed = tx.execute("DELETE FROM remotes WHERE name = ?1", [&name])?;
            tx.execute("DELETE FROM remote_state WHERE name = ?1", [&name])?;
            tx.commit()?;
            Ok(removed > 0)
        })
        .await
    }

    async fn set_remote_state(&self, name: &str, state: &RemoteState) -> StoreResult<()> {
        let (name, state) = (name.to_owned(), to_json(state));
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT OR REPLACE INTO remote_state (name, state)
                 SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM remotes WHERE name = ?1)",
                params![name, state],
            )?;
            Ok(())
        })
        .await
    }

    async fn mirrored_by(&self, remote: &str) -> StoreResult<Vec<(String, i64)>> {
        let remote = remote.to_owned();
        self.with_reader(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT id, revision FROM artefacts WHERE json_extract(doc, '$.origin.remote') = ?1 ORDER BY id",
            )?;
            let rows = statement.query_map([remote], |row| Ok((row.get(0)?, row.get(1)?)))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> StoreResult<bool> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.with_conn(move |conn| {
            let now = Timestamp::now().millis();
            let taken = conn.execute(
                "INSERT INTO leases (name, holder, expires_at) VALUES (?1, ?2, ?3)
                 ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
                 WHERE leases.holder = excluded.holder OR leases.expires_at < ?4",
                params![name, holder, now + ttl_ms, now],
            )?;
            Ok(taken > 0)
        })
        .await
    }

    async fn lease(&self, name: &str) -> StoreResult<Option<Lease>> {
        let name = name.to_owned();
        self.with_reader(move |conn| {
            Ok(conn
                .query_row(
                    "SELECT holder, expires_at FROM leases WHERE name = ?1",
                    [&name],
                    |row| {
                        Ok(Lease {
                            holder: row.get(0)?,
                            expires_at: Timestamp::from_millis(row.get(1)?),
                        })
                    },
                )
                .optional()?)
        })
        .await
    }

    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()> {
        let (name, holder) = (name.to_owned(), holder.to_owned());
        self.with_conn(move |conn| {
            conn.execute(
                "DELETE FROM leases WHERE name = ?1 AND holder = ?2",
                params![name, holder],
            )?;
            Ok(())
        })
        .await
    }
}

impl SqliteStore {
    /// One remote (`only`) or all of them, with their sync state.
    async fn remotes(&self, only: Option<String>) -> StoreResult<Vec<RemoteRecord>> {
        self.with_reader(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT r.name, r.config, r.token, s.state FROM remotes r
                 LEFT JOIN remote_state s ON s.name = r.name
                 WHERE ?1 IS NULL OR r.name = ?1 ORDER BY r.name",
            )?;
            let rows = statement.query_map([only], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    row.get::<_, String>(1)?,
                    row.get::<_, String>(2)?,
                    row.get::<_, Option<String>>(3)?,
                ))
            })?;
            rows.map(|row| {
                let (name, config, token, state) = row?;
                Ok(RemoteRecord {
                    name,
                    config: from_json(&config)?,
                    token,
                    state: state
                        .as_deref()
                        .map(from_json)
                        .transpose()?
                        .unwrap_or_default(),
                })
            })
            .collect()
        })
        .await
    }
}
