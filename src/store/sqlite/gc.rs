//! Garbage-collection marks, on SQLite.

use super::*;

#[async_trait]
impl GcStore for SqliteStore {
    async fn gc_marks(&self) -> StoreResult<std::collections::HashMap<String, Timestamp>> {
        self.with_reader(|conn| {
            let mut statement = conn.prepare("SELECT sha256, marked_at FROM gc_marks")?;
            let rows = statement.query_map([], |row| {
                Ok((
                    row.get::<_, String>(0)?,
                    Timestamp::from_millis(row.get(1)?),
                ))
            })?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn mark_unreferenced(&self, digests: &[String], at: Timestamp) -> StoreResult<()> {
        let digests = digests.to_vec();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for digest in &digests {
                tx.execute(
                    "INSERT OR IGNORE INTO gc_marks (sha256, marked_at) VALUES (?1, ?2)",
                    params![digest, at.millis()],
                )?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }

    async fn clear_marks(&self, digests: &[String]) -> StoreResult<()> {
        let digests = digests.to_vec();
        self.with_conn(move |conn| {
            let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
            for digest in &digests {
                tx.execute("DELETE FROM gc_marks WHERE sha256 = ?1", [digest])?;
            }
            tx.commit()?;
            Ok(())
        })
        .await
    }
}
