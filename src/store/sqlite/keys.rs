//! API keys, on SQLite.

use super::*;

#[async_trait]
impl KeyStore for SqliteStore {
    async fn insert_key(&self, record: KeyRecord) -> StoreResult<()> {
        self.with_conn(move |conn| {
            let inserted = conn.execute(
                "INSERT OR IGNORE INTO api_keys (id, token_sha256, role, revoked_at, doc) VALUES (?1, ?2, ?3, NULL, ?4)",
                params![record.key.id, record.token_sha256, record.key.role.as_str(), to_json(&record.key)],
            )?;
            if inserted == 0 {
                return Err(StoreError::Duplicate("a key with this id or token".into()));
            }
            Ok(())
        })
        .await
    }

    async fn key_by_token_hash(&self, token_sha256: &str) -> StoreResult<Option<ApiKey>> {
        let hash = token_sha256.to_owned();
        self.point_read(move |conn| {
            let doc: Option<String> = conn
                .prepare_cached("SELECT doc FROM api_keys WHERE token_sha256 = ?1")?
                .query_row([&hash], |row| row.get(0))
                .optional()?;
            doc.as_deref().map(from_json).transpose()
        })
        .await
    }

    async fn list_keys(&self) -> StoreResult<Vec<ApiKey>> {
        self.with_reader(|conn| {
            let mut statement = conn.prepare("SELECT doc FROM api_keys")?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
            let mut keys: Vec<ApiKey> = rows
                .map(|doc| from_json(&doc?))
                .collect::<StoreResult<_>>()?;
            keys.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
            Ok(keys)
        })
        .await
    }

    async fn revoke_key(&self, id: &str, at: Timestamp) -> StoreResult<ApiKey> {
        let id = id.to_owned();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let doc: Option<String> = tx
                .query_row("SELECT doc FROM api_keys WHERE id = ?1", [&id], |row| {
                    row.get(0)
                })
                .optional()?;
            let mut key: ApiKey = from_json(&doc.ok_or(StoreError::NotFound)?)?;
            if key.revoked_at.is_none() {
                key.revoked_at = Some(at);
                tx.execute(
                    "UPDATE api_keys SET revoked_at = ?2, doc = ?3 WHERE id = ?1",
                    params![id, at.to_string(), to_json(&key)],
                )?;
            }
            tx.commit()?;
            Ok(key)
        })
        .await
    }

    async fn touch_key(&self, id: &str, at: Timestamp) -> StoreResult<()> {
        let id = id.to_owned();
        self.with_conn(move |conn| {
            conn.execute(
                "UPDATE api_keys SET doc = json_set(doc, '$.lastUsedAt', ?2) WHERE id = ?1",
                params![id, at.to_string()],
            )?;
            Ok(())
        })
        .await
    }

    async fn prune_exchanged_keys(&self, before: Timestamp) -> StoreResult<u64> {
        self.with_conn(move |conn| {
            let removed = conn.execute(
                "DELETE FROM api_keys WHERE json_extract(doc, '$.trustedPublisher') IS NOT NULL
                   AND json_extract(doc, '$.expiresAt') < ?1",
                [before.to_string()],
            )?;
            Ok(removed as u64)
        })
        .await
    }
}
