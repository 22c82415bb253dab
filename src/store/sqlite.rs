//! The embedded metadata backend: one SQLite file in the data dir, in WAL mode.
//!
//! SQLite serialises writers, so a write transaction that reads the revision, bumps the seq
//! counter and writes the document is a compare-and-swap, and seqs commit in order. Calls run on
//! the blocking pool so the async runtime never waits on disk, except point reads on an idle
//! reader (`SqliteStore::point_read`).

use std::path::Path;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use reliquary_client::types::{ApiKey, Artefact, AuditEntry, Change, Kind, Timestamp, Tombstone};
use rusqlite::{params, Connection, ErrorCode, OptionalExtension, TransactionBehavior};

use super::{
    search_text, ArtefactStore, AuditQuery, AuditRecord, AuditStore, BrowseQuery, Changes, GcStore,
    KeyRecord, KeyStore, RemoteConfig, RemoteRecord, RemoteState, RemoteStore, StoreError,
    StoreResult,
};
use crate::domain::visibility::Visibility;

/// The schema migrations, in order; each is applied once, in a transaction with its record.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "audit_and_scoped_reads",
        include_str!("../../migrations/sqlite/0002_audit_and_scoped_reads.sql"),
    ),
    (
        3,
        "remotes",
        include_str!("../../migrations/sqlite/0003_remotes.sql"),
    ),
    (
        4,
        "gc_marks",
        include_str!("../../migrations/sqlite/0004_gc_marks.sql"),
    ),
];

/// The federation filter as SQL over the `kind`, `id` and `category` columns; every artefact
/// and tombstone query includes it, bound with [`filter_params`].
const VISIBLE: &str = "(:releases_only = 0 OR kind = 'release')
    AND (:id_prefix IS NULL OR substr(id, 1, length(:id_prefix)) = :id_prefix)
    AND (:vis_category IS NULL OR category = :vis_category)";

/// Connections that serve reads; WAL mode lets them run alongside the writer and each other.
const READERS: usize = 4;

#[derive(Clone)]
pub struct SqliteStore {
    /// The one writer: SQLite serialises writers anyway, and one connection makes that explicit.
    conn: Arc<Mutex<Connection>>,
    readers: Arc<Vec<Mutex<Connection>>>,
    next_reader: Arc<std::sync::atomic::AtomicUsize>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file. Migrations are applied by [`Self::migrate`].
    pub fn open(path: &Path) -> StoreResult<Self> {
        let conn = Self::connect(path)?;
        let readers = (0..READERS)
            .map(|_| Self::connect(path).map(Mutex::new))
            .collect::<StoreResult<Vec<_>>>()?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            readers: Arc::new(readers),
            next_reader: Arc::default(),
        })
    }

    fn connect(path: &Path) -> StoreResult<Connection> {
        let conn = Connection::open(path).map_err(map_err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(map_err)?;
        // FULL: an acknowledged upload survives a power cut, not just a process crash.
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(map_err)?;
        conn.pragma_update(None, "foreign_keys", "ON")
            .map_err(map_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(map_err)?;
        Ok(conn)
    }

    /// A point read: one row by its primary key, on the hot path of every download and
    /// authenticated request. It runs on the async worker when a reader is idle, because a
    /// primary-key lookup in SQLite's page cache takes microseconds while the round trip through
    /// the blocking pool (two thread wake-ups) halved the request rate (docs/benchmarks.md).
    /// Inline, the reader never waits for a lock: with a zero busy timeout a busy database fails
    /// at once, and the read is retried on the blocking pool, which may wait.
    async fn point_read<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: Fn(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        if let Some(mut conn) = idle_reader(&self.readers, self.rotate()) {
            let _ = conn.busy_timeout(std::time::Duration::ZERO);
            let result = f(&mut conn);
            let _ = conn.busy_timeout(BUSY_TIMEOUT);
            if let Ok(value) = result {
                return Ok(value);
            }
        }
        self.with_reader(f).await
    }

    fn rotate(&self) -> usize {
        self.next_reader
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Runs a read on one of the reader connections.
    async fn with_reader<T, F>(&self, f: F) -> StoreResult<T>
    where
        T: Send + 'static,
        F: FnOnce(&mut Connection) -> StoreResult<T> + Send + 'static,
    {
        let readers = self.readers.clone();
        let start = self.rotate();
        tokio::task::spawn_blocking(move || {
            let mut guard = match idle_reader(&readers, start) {
                Some(guard) => guard,
                None => readers[start % readers.len()]
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
            };
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Other(format!("sqlite task failed: {e}")))?
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
            let mut guard = conn
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            f(&mut guard)
        })
        .await
        .map_err(|e| StoreError::Other(format!("sqlite task failed: {e}")))?
    }
}

/// How long a connection waits for another one's lock before the store reports itself busy.
const BUSY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// The first idle reader, starting from a rotating position.
fn idle_reader(
    readers: &[Mutex<Connection>],
    start: usize,
) -> Option<std::sync::MutexGuard<'_, Connection>> {
    (0..readers.len()).find_map(|i| readers[(start + i) % readers.len()].try_lock().ok())
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

fn filter_params(visibility: &Visibility) -> [(&'static str, Box<dyn rusqlite::ToSql + Send>); 3] {
    [
        (":releases_only", Box::new(visibility.releases_only)),
        (":id_prefix", Box::new(visibility.id_prefix.clone())),
        (":vis_category", Box::new(visibility.category.clone())),
    ]
}

/// Named parameters: the filter's plus the query's own.
fn bind<'a>(
    filter: &'a [(&'static str, Box<dyn rusqlite::ToSql + Send>); 3],
    own: &'a [(&'static str, &'a dyn rusqlite::ToSql)],
) -> Vec<(&'a str, &'a dyn rusqlite::ToSql)> {
    filter
        .iter()
        .map(|(name, value)| (*name, value.as_ref() as &dyn rusqlite::ToSql))
        .chain(own.iter().copied())
        .collect()
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
        self.with_reader(|conn| {
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
        self.with_reader(|conn| {
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
}

#[async_trait]
impl AuditStore for SqliteStore {
    async fn append_audit(&self, record: AuditRecord) -> StoreResult<()> {
        self.with_conn(move |conn| {
            conn.execute(
                "INSERT INTO audit (at, action, outcome, key_id, key_name, artefact_id, architecture, detail, remote_addr)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                params![
                    record.at.to_string(),
                    record.action,
                    record.outcome,
                    record.key_id,
                    record.key_name,
                    record.artefact_id,
                    record.architecture,
                    record.detail,
                    record.remote_addr
                ],
            )?;
            Ok(())
        })
        .await
    }

    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>> {
        let query = query.clone();
        self.with_reader(move |conn| {
            let before: Option<i64> = query.before.as_deref().and_then(|b| b.parse().ok());
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
