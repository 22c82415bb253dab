//! The embedded metadata backend: one SQLite file in the data dir, in WAL mode. This module
//! holds the connections and the helpers; each aggregate's store is in a module of its own.
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
    check_schema_not_newer, next_revision, page_of, search_text, ArtefactStore, AuditQuery,
    AuditRecord, AuditStore, BrowseQuery, Changes, GcStore, KeyRecord, KeyStore, Lease,
    RemoteConfig, RemoteRecord, RemoteState, RemoteStore, RetentionCandidate, RetentionStore,
    StoreError, StoreResult,
};
use crate::domain::visibility::Visibility;

mod artefacts;
mod audit;
mod gc;
mod keys;
mod remotes;
mod retention;
mod trust;

/// The schema migrations, in order; each is applied once, in a transaction with its record.
pub const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../migrations/sqlite/0001_initial.sql"),
    ),
    (
        2,
        "audit_and_scoped_reads",
        include_str!("../../../migrations/sqlite/0002_audit_and_scoped_reads.sql"),
    ),
    (
        3,
        "remotes",
        include_str!("../../../migrations/sqlite/0003_remotes.sql"),
    ),
    (
        4,
        "gc_marks",
        include_str!("../../../migrations/sqlite/0004_gc_marks.sql"),
    ),
    (
        5,
        "retention",
        include_str!("../../../migrations/sqlite/0005_retention.sql"),
    ),
    (
        6,
        "audit_once",
        include_str!("../../../migrations/sqlite/0006_audit_once.sql"),
    ),
    (
        7,
        "trusted_publishing",
        include_str!("../../../migrations/sqlite/0007_trusted_publishing.sql"),
    ),
];

/// The federation filter as SQL over the `kind`, `id` and `category` columns; every artefact
/// and tombstone query includes it, bound with [`filter_params`].
const VISIBLE: &str = "(:releases_only = 0 OR kind = 'release')
    AND (:id_prefix IS NULL OR substr(id, 1, length(:id_prefix)) = :id_prefix)
    AND (:id_patterns IS NULL OR id_matches_any(:id_patterns, id))
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
        register_functions(&conn).map_err(map_err)?;
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
            check_schema_not_newer(current, MIGRATIONS.last().map_or(0, |m| m.0))?;
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

fn filter_params(visibility: &Visibility) -> [(&'static str, Box<dyn rusqlite::ToSql + Send>); 4] {
    // Patterns hold no newline (their alphabet is an id's and `*`), so one joins them.
    let patterns = visibility.id_patterns.as_ref().map(|p| p.join("\n"));
    [
        (":releases_only", Box::new(visibility.releases_only)),
        (":id_prefix", Box::new(visibility.id_prefix.clone())),
        (":vis_category", Box::new(visibility.category.clone())),
        (":id_patterns", Box::new(patterns)),
    ]
}

/// `id_matches_any(patterns, id)`: the `allowedIds` rule (`domain::id::star_match`) in SQL,
/// over newline-joined patterns.
fn register_functions(conn: &Connection) -> rusqlite::Result<()> {
    use rusqlite::functions::FunctionFlags;
    conn.create_scalar_function(
        "id_matches_any",
        2,
        FunctionFlags::SQLITE_UTF8 | FunctionFlags::SQLITE_DETERMINISTIC,
        |ctx| {
            let patterns: String = ctx.get(0)?;
            let id: String = ctx.get(1)?;
            Ok(patterns
                .split('\n')
                .any(|p| crate::domain::id::star_match(p, &id)))
        },
    )
}

/// Named parameters: the filter's plus the query's own.
fn bind<'a>(
    filter: &'a [(&'static str, Box<dyn rusqlite::ToSql + Send>); 4],
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
