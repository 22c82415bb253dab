//! Trusted publishers and exchanged OIDC token ids, on SQLite.

use reliquary_client::types::TrustedPublisher;

use super::*;
use crate::store::TrustStore;

#[async_trait]
impl TrustStore for SqliteStore {
    async fn put_publisher(&self, publisher: &TrustedPublisher) -> StoreResult<bool> {
        let (name, doc) = (publisher.name.clone(), to_json(publisher));
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            let existed = tx
                .query_row(
                    "SELECT 1 FROM trusted_publishers WHERE name = ?1",
                    [&name],
                    |_| Ok(()),
                )
                .optional()?
                .is_some();
            tx.execute(
                "INSERT OR REPLACE INTO trusted_publishers (name, doc) VALUES (?1, ?2)",
                params![name, doc],
            )?;
            tx.commit()?;
            Ok(!existed)
        })
        .await
    }

    async fn get_publisher(&self, name: &str) -> StoreResult<Option<TrustedPublisher>> {
        let name = name.to_owned();
        self.with_reader(move |conn| {
            let doc: Option<String> = conn
                .query_row(
                    "SELECT doc FROM trusted_publishers WHERE name = ?1",
                    [&name],
                    |row| row.get(0),
                )
                .optional()?;
            doc.as_deref().map(from_json).transpose()
        })
        .await
    }

    async fn list_publishers(&self) -> StoreResult<Vec<TrustedPublisher>> {
        self.with_reader(|conn| {
            let mut statement = conn.prepare("SELECT doc FROM trusted_publishers ORDER BY name")?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
            rows.map(|doc| from_json(&doc?)).collect()
        })
        .await
    }

    async fn delete_publisher(&self, name: &str) -> StoreResult<bool> {
        let name = name.to_owned();
        self.with_conn(move |conn| {
            Ok(conn.execute("DELETE FROM trusted_publishers WHERE name = ?1", [&name])? > 0)
        })
        .await
    }

    async fn claim_token_id(
        &self,
        token_id: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<bool> {
        let token_id = token_id.to_owned();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            tx.execute(
                "DELETE FROM oidc_token_ids WHERE expires_at < ?1",
                [now.millis()],
            )?;
            let inserted = tx.execute(
                "INSERT OR IGNORE INTO oidc_token_ids (token_id, expires_at) VALUES (?1, ?2)",
                params![token_id, expires_at.millis()],
            )?;
            tx.commit()?;
            Ok(inserted == 1)
        })
        .await
    }
}
