//! The MongoDB metadata backend, for production: several `reliquary serve` replicas share one
//! database.
//!
//! No multi-document transactions (they need a replica set): a document write is a
//! compare-and-swap on `revision` in one `update_one`/`insert_one`, and the registry-wide `seq`
//! comes from a counter document incremented with `$inc`. Because a seq is claimed before the
//! document carrying it is written, the counter also lists the seqs still in flight, and the
//! change feed never reads past the oldest of them (see [`artefacts`]).

mod artefacts;
mod audit;
mod keys;
mod remotes;
mod retention;
mod trust;

use std::time::Duration;

use mongodb::bson::{doc, Document};
use mongodb::error::{ErrorKind, WriteFailure};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use serde::Deserialize;

use super::{check_schema_not_newer, StoreError, StoreResult};
use reliquary_client::types::Timestamp;

/// Index migrations, declared in `migrations/mongodb/`, applied in order and recorded once.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "initial",
        include_str!("../../../migrations/mongodb/0001_initial.json"),
    ),
    (
        2,
        "remotes",
        include_str!("../../../migrations/mongodb/0002_remotes.json"),
    ),
    (
        3,
        "retention",
        include_str!("../../../migrations/mongodb/0003_retention.json"),
    ),
    (
        4,
        "audit_once",
        include_str!("../../../migrations/mongodb/0004_audit_once.json"),
    ),
    (
        5,
        "trusted_publishing",
        include_str!("../../../migrations/mongodb/0005_trusted_publishing.json"),
    ),
];

#[derive(Deserialize)]
struct IndexMigration {
    indexes: Vec<IndexSpec>,
}

#[derive(Deserialize)]
struct IndexSpec {
    collection: String,
    keys: Document,
    #[serde(default)]
    unique: bool,
    /// Documents without the field are left out of the index (and of its uniqueness).
    #[serde(default)]
    sparse: bool,
}

#[derive(Clone)]
pub struct MongoStore {
    db: Database,
}

impl MongoStore {
    /// Connects lazily to `url` (`mongodb://host/dbname?...`; database `reliquary` when the
    /// URL names none). Unreachable servers surface as [`StoreError::Unavailable`] per call.
    pub async fn connect(url: &str) -> StoreResult<Self> {
        let options = ClientOptions::parse(url)
            .await
            .map_err(|e| StoreError::Other(format!("invalid MongoDB URL: {e}")))?;
        Self::from_options(options)
    }

    /// Like [`Self::connect`], from options already parsed (the benchmarks add command
    /// monitoring to count round trips).
    pub fn from_options(mut options: ClientOptions) -> StoreResult<Self> {
        options.app_name = Some("reliquary".into());
        // Fail fast when the database is down: a request gets a 503 in seconds, not a hang.
        options.server_selection_timeout = Some(Duration::from_secs(3));
        options.connect_timeout = Some(Duration::from_secs(3));
        let name = options
            .default_database
            .clone()
            .unwrap_or_else(|| "reliquary".into());
        let client = Client::with_options(options).map_err(map_err)?;
        Ok(Self {
            db: client.database(&name),
        })
    }

    fn collection(&self, name: &str) -> Collection<Document> {
        self.db.collection(name)
    }

    /// Applies pending migrations and returns the names of those applied.
    pub async fn migrate(&self) -> StoreResult<Vec<String>> {
        let migrations = self.collection("schema_migrations");
        let applied_versions: Vec<i64> = {
            use futures::TryStreamExt;
            let cursor = migrations.find(doc! {}).await.map_err(map_err)?;
            let docs: Vec<Document> = cursor.try_collect().await.map_err(map_err)?;
            docs.iter().filter_map(|d| d.get_i64("_id").ok()).collect()
        };
        let current = applied_versions.iter().copied().max().unwrap_or(0);
        check_schema_not_newer(current, MIGRATIONS.last().map_or(0, |m| m.0))?;
        let mut applied = Vec::new();
        for (version, name, spec) in MIGRATIONS.iter().filter(|m| m.0 > current) {
            let migration: IndexMigration = serde_json::from_str(spec).map_err(|e| {
                StoreError::Other(format!("migration {version:04}_{name} is malformed: {e}"))
            })?;
            // Creating an index that exists is a no-op, so a migration interrupted half-way is
            // simply applied again.
            for index in migration.indexes {
                let model = IndexModel::builder()
                    .keys(index.keys)
                    .options(
                        IndexOptions::builder()
                            .unique(index.unique)
                            .sparse(index.sparse)
                            .build(),
                    )
                    .build();
                self.collection(&index.collection)
                    .create_index(model)
                    .await
                    .map_err(|e| {
                        StoreError::Other(format!("migration {version:04}_{name} failed: {e}"))
                    })?;
            }
            migrations
                .insert_one(
                    doc! {"_id": version, "name": *name, "appliedAt": Timestamp::now().to_string()},
                )
                .await
                .map_err(map_err)?;
            applied.push(format!("{version:04}_{name}"));
        }
        self.collection("counters")
            .update_one(
                doc! {"_id": "seq"},
                doc! {"$setOnInsert": {"value": 0_i64, "inflight": []}},
            )
            .upsert(true)
            .await
            .map_err(map_err)?;
        Ok(applied)
    }

    pub async fn ping(&self) -> StoreResult<()> {
        self.db
            .run_command(doc! {"ping": 1})
            .await
            .map(|_| ())
            .map_err(map_err)
    }
}

/// Whether a write failed on a unique index (E11000).
fn is_duplicate(error: &mongodb::error::Error) -> bool {
    match error.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == 11000,
        ErrorKind::Command(e) => e.code == 11000,
        _ => false,
    }
}

fn map_err(error: mongodb::error::Error) -> StoreError {
    if is_duplicate(&error) {
        return StoreError::Duplicate("a record with this key".into());
    }
    match error.kind.as_ref() {
        ErrorKind::ServerSelection { .. }
        | ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. } => StoreError::Unavailable(error.to_string()),
        _ => StoreError::Other(error.to_string()),
    }
}

fn to_bson_doc<T: serde::Serialize>(value: &T) -> StoreResult<Document> {
    mongodb::bson::to_document(value)
        .map_err(|e| StoreError::Other(format!("cannot encode a document: {e}")))
}

fn from_bson_doc<T: serde::de::DeserializeOwned>(document: Document) -> StoreResult<T> {
    mongodb::bson::from_document(document)
        .map_err(|e| StoreError::Other(format!("corrupt stored document: {e}")))
}
