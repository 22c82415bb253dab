//! The embedded metadata backend: one SQLite file in the data dir, in WAL mode.
//!
//! SQLite serialises writers, so a write transaction that reads the revision, bumps the seq
//! counter and writes the document is a compare-and-swap, and seqs commit in order. Calls run on
//! the blocking pool so the async runtime never waits on disk.

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use reliquary_client::types::{ApiKey, Artefact, Change, Kind, Timestamp, Tombstone};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use super::{ArtefactStore, BrowseQuery, Changes, KeyRecord, KeyStore, StoreError, StoreResult};
use crate::domain::visibility::Visibility;

/// The schema migrations, in order; each is applied once, in a transaction with its record.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "initial",
    include_str!("../../migrations/sqlite/0001_initial.sql"),
)];

#[derive(Clone)]
pub struct SqliteStore {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file. Migrations are applied by [`Self::migrate`].
    pub fn open(path: &Path) -> StoreResult<Self> {
        let conn = Connection::open(path).map_err(map_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(map_err)?;
        // FULL: an acknowledged upload survives a power cut, not just a process crash.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(map_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(map_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(map_err)?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    /// Applies pending migrations and returns the names of those applied. Refuses a database
    /// that a newer binary has migrated past what this one knows.
    pub async fn migrate(&self) -> StoreResult<Vec<String>> {
        self.with_conn(|conn| {
            conn.execute_batch(
                "CREATE TABLE IF NOT EXISTS schema_migrations (
                    version INTEGER PRIMARY KEY NOT NULL,
                    name TEXT NOT NULL,
                    applied_at TEXT NOT NULL)",
            )?;
            let current: i64 = conn.query_row(
                "SELECT COALESCE(MAX(version), 0) FROM schema_migrations",
                [],
                |row| row.get(0),
            )?;
            let known = MIGRATIONS.last().map_or(0, |m| m.0);
            if current > known {
                return Err(StoreError::Other(format!(
                    "the database is at schema version {current}, newer than this binary's {known}; upgrade reliquary"
                )));
            }
            let mut applied = Vec::new();
            for (version, name, sql) in MIGRATIONS.iter().filter(|m| m.0 > current) {
                let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
                tx.execute_batch(sql).map_err(|e| {
                    StoreError::Other(format!("migration {version:04}_{name} failed: {e}"))
                })?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?1, ?2, ?3)",
                    params![version, name, Timestamp::now().to_string()],
                )?;
                tx.commit()?;
                applied.push(format!("{version:04}_{name}"));
            }
            Ok(applied)
        })
        .await
    }

    async fn with_conn<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Other(format!("sqlite task failed: {e}")))?
    }
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        map_err(error)
    }
}

fn map_err(error: rusqlite::Error) -> StoreError {
    match error.sqlite_error_code() {
        Some(
            ErrorCode::DatabaseBusy
            | ErrorCode::DatabaseLocked
            | ErrorCode::DiskFull
            | ErrorCode::CannotOpen
            | ErrorCode::SystemIoFailure
            | ErrorCode::ReadOnly,
        ) => StoreError::Unavailable(error.to_string()),
        _ => StoreError::Other(error.to_string()),
    }
}

fn from_json<T: serde::de::DeserializeOwned>(text: &str) -> StoreResult<T> {
    serde_json::from_str(text)
        .map_err(|e| StoreError::Other(format!("corrupt stored document: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("documents serialise")
}

fn releases_only(visibility: Visibility) -> bool {
    visibility == Visibility::ReleasesOnly
}

fn search_text(doc: &Artefact) -> String {
    format!(
        "{}\n{}\n{}",
        doc.id,
        doc.package_name,
        doc.description.as_deref().unwrap_or("")
    )
    .to_lowercase()
}

fn next_seq(tx: &rusqlite::Transaction<'_>) -> StoreResult<i64> {
    Ok(tx.query_row(
        "UPDATE counters SET value = value + 1 WHERE name = 'seq' RETURNING value",
        [],
        |row| row.get(0),
    )?)
}

#[async_trait]
impl ArtefactStore for SqliteStore {
    async fn get(&self, id: &str, visibility: Visibility) -> StoreResult<Option<Artefact>> {
        let id = id.to_owned();
        self.with_conn(move |conn| {
            let doc: Option<String> = conn
                .query_row(
                    "SELECT doc FROM artefacts WHERE id = ?1 AND (?2 = 0 OR kind = 'release')",
                    params![id, releases_only(visibility)],
                    |row| row.get(0),
                )
                .optional()?;
            doc.as_deref().map(from_json).transpose()
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
            let base = match expected {
                Some(revision) => revision,
                None => tx
                    .query_row(
                        "SELECT revision FROM tombstones WHERE id = ?1",
                        [&doc.id],
                        |row| row.get(0),
                    )
                    .optional()?
                    .unwrap_or(0),
            };
            doc.revision = base + 1;
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
            let current: Option<(i64, String)> = tx
                .query_row("SELECT revision, kind FROM artefacts WHERE id = ?1", [&id], |row| {
                    Ok((row.get(0)?, row.get(1)?))
                })
                .optional()?;
            let Some((revision, kind)) = current else {
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
                "INSERT OR REPLACE INTO tombstones (id, kind, seq, revision, deleted_at) VALUES (?1, ?2, ?3, ?4, ?5)",
                params![id, kind, tombstone.seq, revision, tombstone.deleted_at.to_string()],
            )?;
            tx.commit()?;
            Ok(tombstone)
        })
        .await
    }

    async fn browse(
        &self,
        query: &BrowseQuery,
        visibility: Visibility,
    ) -> StoreResult<Vec<Artefact>> {
        let query = query.clone();
        self.with_conn(move |conn| {
            let mut statement = conn.prepare_cached(
                "SELECT doc FROM artefacts
                 WHERE (?1 IS NULL OR id > ?1)
                   AND (?2 = 0 OR kind = 'release')
                   AND (?3 IS NULL OR kind = ?3)
                   AND (?4 IS NULL OR category = ?4)
                   AND (?5 IS NULL OR instr(search, ?5) > 0)
                 ORDER BY id LIMIT ?6",
            )?;
            let rows = statement.query_map(
                params![
                    query.after,
                    releases_only(visibility),
                    query.kind.map(Kind::as_str),
                    query.category,
                    query.q.map(|q| q.to_lowercase()),
                    query.limit as i64
                ],
                |row| row.get::<_, String>(0),
            )?;
            rows.map(|doc| from_json(&doc?)).collect()
        })
        .await
    }

    async fn changes(
        &self,
        since: i64,
        limit: usize,
        visibility: Visibility,
    ) -> StoreResult<Changes> {
        self.with_conn(move |conn| {
            // One read transaction: the page and lastSeq come from the same snapshot.
            let tx = conn.transaction()?;
            let last_seq: i64 =
                tx.query_row("SELECT value FROM counters WHERE name = 'seq'", [], |row| {
                    row.get(0)
                })?;
            let mut items = Vec::new();
            {
                let mut statement = tx.prepare_cached(
                    "SELECT seq, doc, NULL, NULL, NULL, NULL FROM artefacts
                       WHERE seq > ?1 AND (?2 = 0 OR kind = 'release')
                     UNION ALL
                     SELECT seq, NULL, id, kind, deleted_at, revision FROM tombstones
                       WHERE seq > ?1 AND (?2 = 0 OR kind = 'release')
                     ORDER BY 1 LIMIT ?3",
                )?;
                let mut rows =
                    statement.query(params![since, releases_only(visibility), limit as i64 + 1])?;
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
            let has_more = items.len() > limit;
            items.truncate(limit);
            Ok(Changes {
                items,
                last_seq,
                has_more,
            })
        })
        .await
    }

    async fn referenced_blobs(&self) -> StoreResult<Vec<String>> {
        self.with_conn(|conn| {
            let mut statement = conn.prepare(
                "SELECT DISTINCT json_extract(slot.value, '$.sha256')
                 FROM artefacts, json_each(artefacts.doc, '$.tarballs') AS slot",
            )?;
            let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
        .await
    }

    async fn ping(&self) -> StoreResult<()> {
        self.with_conn(|conn| {
            conn.query_row("SELECT value FROM counters WHERE name = 'seq'", [], |row| {
                row.get::<_, i64>(0)
            })?;
            Ok(())
        })
        .await
    }
}

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
        self.with_conn(move |conn| {
            let doc: Option<String> = conn
                .query_row(
                    "SELECT doc FROM api_keys WHERE token_sha256 = ?1",
                    [hash],
                    |row| row.get(0),
                )
                .optional()?;
            doc.as_deref().map(from_json).transpose()
        })
        .await
    }

    async fn list_keys(&self) -> StoreResult<Vec<ApiKey>> {
        self.with_conn(|conn| {
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

    async fn has_usable_admin(&self) -> StoreResult<bool> {
        let now = Timestamp::now();
        Ok(self.list_keys().await?.iter().any(|k| {
            k.role == reliquary_client::types::Role::Admin
                && k.revoked_at.is_none()
                && k.expires_at.is_none_or(|e| e > now)
        }))
    }
}
