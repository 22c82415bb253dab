//! Metadata storage: one narrow trait per aggregate, one module per backend.
//!
//! Backends own their schema and migrations. Every read of artefacts takes a [`Visibility`], so
//! the federation filter is part of the query itself and no caller can forget it.

pub mod mongo;
pub mod sqlite;

use async_trait::async_trait;
use reliquary_client::types::{
    ApiKey, Artefact, AuditEntry, Change, Kind, RegistryKeys, Timestamp, Tombstone,
    TrustedPublisher,
};

use crate::domain::visibility::Visibility;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("not found")]
    NotFound,
    /// A compare-and-swap lost: the record's revision is not the one expected.
    #[error("revision mismatch")]
    RevisionMismatch,
    #[error("{0} already exists")]
    Duplicate(String),
    /// A paging cursor this store did not issue.
    #[error("invalid cursor")]
    BadCursor,
    /// The store cannot be reached; the operation changed nothing.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    Other(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

// What every backend computes the same way, written once.

/// Refuses a database that a newer binary has migrated past what this one knows.
pub(crate) fn check_schema_not_newer(current: i64, known: i64) -> StoreResult<()> {
    if current > known {
        return Err(StoreError::Other(format!(
            "the database is at schema version {current}, newer than this binary's {known}; upgrade reliquary"
        )));
    }
    Ok(())
}

/// The revision a write gives a document: one past the live one's, or — for a re-created
/// artefact — one past its tombstone's, so that `(id, revision)` never names two documents.
pub(crate) fn next_revision(expected: Option<i64>, tombstone_revision: Option<i64>) -> i64 {
    expected.or(tombstone_revision).unwrap_or(0) + 1
}

/// A change-feed page from `limit + 1` rows in seq order: the extra row only says more follow.
pub(crate) fn page_of(mut items: Vec<Change>, limit: usize, last_seq: i64) -> Changes {
    let has_more = items.len() > limit;
    items.truncate(limit);
    Changes {
        items,
        last_seq,
        has_more,
    }
}

/// What browse-mode `q` searches: id, package name and description, lowercased. Both backends
/// store it beside the document so a search is one indexed-column match.
pub fn search_text(doc: &Artefact) -> String {
    format!(
        "{}\n{}\n{}",
        doc.id,
        doc.package_name,
        doc.description.as_deref().unwrap_or("")
    )
    .to_lowercase()
}

/// Browse-mode list parameters (`GET /artefacts`).
#[derive(Clone, Debug, Default)]
pub struct BrowseQuery {
    /// Case-insensitive substring of id, package name or description.
    pub q: Option<String>,
    pub kind: Option<Kind>,
    pub category: Option<String>,
    /// Items strictly after this id.
    pub after: Option<String>,
    pub limit: usize,
}

/// A page of the change feed, read in one snapshot.
#[derive(Clone, Debug)]
pub struct Changes {
    pub items: Vec<Change>,
    pub last_seq: i64,
    pub has_more: bool,
}

/// Artefact documents and the registry-wide change sequence.
#[async_trait]
pub trait ArtefactStore: Send + Sync + 'static {
    async fn get(&self, id: &str, visibility: &Visibility) -> StoreResult<Option<Artefact>>;

    /// The revision of a visible artefact, without its document. A revision is never reused for
    /// an id (it continues across delete and re-create), so `(id, revision)` names one document
    /// for good, and this is enough to validate a cached copy.
    async fn revision(&self, id: &str, visibility: &Visibility) -> StoreResult<Option<i64>>;

    /// Commits `doc` if the stored revision is `expected` (`None`: the artefact must not exist).
    /// Assigns the next `seq` and `revision` (continuing after a tombstone's), clears any
    /// tombstone of the id, and returns the stored document.
    async fn put(&self, doc: Artefact, expected: Option<i64>) -> StoreResult<Artefact>;

    /// Deletes the document if its revision is `expected`, leaving a tombstone with the next seq.
    async fn delete(&self, id: &str, expected: i64) -> StoreResult<Tombstone>;

    /// One page ordered by id.
    async fn browse(
        &self,
        query: &BrowseQuery,
        visibility: &Visibility,
    ) -> StoreResult<Vec<Artefact>>;

    /// Documents and tombstones with `seq > since`, ordered by seq.
    async fn changes(
        &self,
        since: i64,
        limit: usize,
        visibility: &Visibility,
    ) -> StoreResult<Changes>;

    /// Every blob digest some slot references (for garbage collection).
    async fn referenced_blobs(&self) -> StoreResult<Vec<String>>;

    /// Fails when the store is unreachable (`/readyz`).
    async fn ping(&self) -> StoreResult<()>;
}

/// A key as stored: the listed fields plus the hash of its token.
#[derive(Clone, Debug)]
pub struct KeyRecord {
    pub key: ApiKey,
    pub token_sha256: String,
}

/// API keys, found by the sha256 of their token.
#[async_trait]
pub trait KeyStore: Send + Sync + 'static {
    async fn insert_key(&self, record: KeyRecord) -> StoreResult<()>;
    async fn key_by_token_hash(&self, token_sha256: &str) -> StoreResult<Option<ApiKey>>;
    async fn list_keys(&self) -> StoreResult<Vec<ApiKey>>;
    /// Marks a key revoked (idempotent) and returns it.
    async fn revoke_key(&self, id: &str, at: Timestamp) -> StoreResult<ApiKey>;
    async fn touch_key(&self, id: &str, at: Timestamp) -> StoreResult<()>;
    /// Deletes keys issued by trusted publishing that expired before `before`; returns how
    /// many. (Every CI run makes one; the audit log keeps the record of each.)
    async fn prune_exchanged_keys(&self, before: Timestamp) -> StoreResult<u64>;
    /// Whether any admin key that is neither revoked nor expired exists.
    async fn has_usable_admin(&self) -> StoreResult<bool> {
        let now = Timestamp::now();
        Ok(self.list_keys().await?.iter().any(|k| {
            k.role == reliquary_client::types::Role::Admin
                && k.revoked_at.is_none()
                && k.expires_at.is_none_or(|at| at > now)
        }))
    }
}

/// An audit event to append; the store assigns its id.
#[derive(Clone, Debug)]
pub struct AuditRecord {
    pub at: Timestamp,
    pub action: String,
    pub outcome: String,
    pub key_id: Option<String>,
    pub key_name: Option<String>,
    pub artefact_id: Option<String>,
    pub architecture: Option<String>,
    pub detail: Option<String>,
    pub remote_addr: Option<String>,
    /// An entry with a key is written at most once: appending it again changes nothing. The
    /// sync worker keys its entries by the peer's change, so a replica that takes over a pass
    /// never records one twice.
    pub once_key: Option<String>,
}

/// `GET /audit` parameters: newest first, entries older than `before` (an entry id).
#[derive(Clone, Debug, Default)]
pub struct AuditQuery {
    pub action: Option<String>,
    pub before: Option<String>,
    pub limit: usize,
}

/// The append-only audit log.
#[async_trait]
pub trait AuditStore: Send + Sync + 'static {
    async fn append_audit(&self, record: AuditRecord) -> StoreResult<()>;
    async fn list_audit(&self, query: &AuditQuery) -> StoreResult<Vec<AuditEntry>>;
    /// Removes entries older than `before`; returns how many.
    async fn prune_audit(&self, before: Timestamp) -> StoreResult<u64>;
}

/// A remote's configuration, as set by `PUT /remotes/{name}`, plus the peer keys pinned then.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteConfig {
    pub url: String,
    pub interval_seconds: u64,
    pub allowed_name_prefix: Option<String>,
    pub allowed_category: Option<String>,
    pub architectures: Option<Vec<String>>,
    pub enabled: bool,
    /// The peer's registry name.
    pub registry: String,
    /// The peer's keys, and the keys it pinned for the registries it mirrors.
    pub pinned: Vec<RegistryKeys>,
    /// Keys the operator pinned explicitly (`trustedKeys`), by registry.
    #[serde(default)]
    pub trusted: Vec<RegistryKeys>,
    pub created_at: Timestamp,
}

/// What the sync worker records after each pass.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteState {
    pub cursor: i64,
    pub peer_last_seq: i64,
    pub last_sync_at: Option<Timestamp>,
    pub last_success_at: Option<Timestamp>,
    pub last_error: Option<String>,
}

#[derive(Clone, Debug)]
pub struct RemoteRecord {
    pub name: String,
    pub config: RemoteConfig,
    /// The mirror key on the peer. Stored because the worker needs it; never listed or logged.
    pub token: String,
    pub state: RemoteState,
}

/// Remotes, their sync state, and the leases that keep one replica per remote syncing.
#[async_trait]
pub trait RemoteStore: Send + Sync + 'static {
    /// Creates or replaces a remote's configuration and token (its state is kept); returns
    /// whether it was created.
    async fn put_remote(&self, name: &str, config: &RemoteConfig, token: &str)
        -> StoreResult<bool>;
    async fn get_remote(&self, name: &str) -> StoreResult<Option<RemoteRecord>>;
    async fn list_remotes(&self) -> StoreResult<Vec<RemoteRecord>>;
    /// Removes a remote and its state; returns whether it existed.
    async fn delete_remote(&self, name: &str) -> StoreResult<bool>;
    async fn set_remote_state(&self, name: &str, state: &RemoteState) -> StoreResult<()>;
    /// Ids and revisions of the artefacts mirrored through `remote`.
    async fn mirrored_by(&self, remote: &str) -> StoreResult<Vec<(String, i64)>>;
    /// Takes or renews the lease on `name` for `ttl_ms` if it is free, expired or already ours.
    async fn acquire_lease(&self, name: &str, holder: &str, ttl_ms: i64) -> StoreResult<bool>;
    async fn release_lease(&self, name: &str, holder: &str) -> StoreResult<()>;
    /// Who holds the lease on `name` and until when, if anyone (it may have lapsed).
    async fn lease(&self, name: &str) -> StoreResult<Option<Lease>>;
}

/// A replica's hold on syncing one remote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Lease {
    pub holder: String,
    pub expires_at: Timestamp,
}

/// Garbage-collection marks: when each blob was first found unreferenced.
#[async_trait]
pub trait GcStore: Send + Sync + 'static {
    async fn gc_marks(&self) -> StoreResult<std::collections::HashMap<String, Timestamp>>;
    /// Marks these digests at `at`, keeping any earlier mark.
    async fn mark_unreferenced(&self, digests: &[String], at: Timestamp) -> StoreResult<()>;
    async fn clear_marks(&self, digests: &[String]) -> StoreResult<()>;
}

/// A branch artefact that retention may remove: how long its bytes and its downloads are idle.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionCandidate {
    pub id: String,
    /// The revision seen; the deletion is a compare-and-swap on it, so a rebuild wins.
    pub revision: i64,
    pub data_updated_at: Timestamp,
    pub last_downloaded_at: Option<Timestamp>,
}

/// When each artefact was last downloaded, kept apart from the document so that recording a
/// download never changes a revision, and the query branch retention runs on.
#[async_trait]
pub trait RetentionStore: Send + Sync + 'static {
    /// Raises each id's `lastDownloadedAt` to the time given (never lowers it).
    async fn record_downloads(&self, seen: &[(String, Timestamp)]) -> StoreResult<()>;
    async fn last_downloaded(&self, id: &str) -> StoreResult<Option<Timestamp>>;
    /// When this store started recording downloads (the migration that added them): an
    /// artefact with no record was not necessarily unused before it.
    async fn downloads_tracked_since(&self) -> StoreResult<Timestamp>;
    /// Branch artefacts whose bytes changed before `cutoff` and that were not downloaded since,
    /// oldest bytes first. Found through an index on (kind, dataUpdatedAt), so the walk covers
    /// idle branch builds only.
    async fn retention_candidates(&self, cutoff: Timestamp)
        -> StoreResult<Vec<RetentionCandidate>>;
}

/// Trusted publishers, and the OIDC token ids (`jti`) already exchanged.
#[async_trait]
pub trait TrustStore: Send + Sync + 'static {
    /// Creates or replaces a publisher; returns whether it was created.
    async fn put_publisher(&self, publisher: &TrustedPublisher) -> StoreResult<bool>;
    async fn get_publisher(&self, name: &str) -> StoreResult<Option<TrustedPublisher>>;
    /// Ordered by name.
    async fn list_publishers(&self) -> StoreResult<Vec<TrustedPublisher>>;
    /// Returns whether it existed.
    async fn delete_publisher(&self, name: &str) -> StoreResult<bool>;
    /// Records `token_id` as used until `expires_at`, atomically across replicas: `false` when
    /// it is already recorded (a replay). Records that expired before `now` are removed.
    async fn claim_token_id(
        &self,
        token_id: &str,
        expires_at: Timestamp,
        now: Timestamp,
    ) -> StoreResult<bool>;
}

/// Everything the server needs from a metadata backend.
pub trait MetadataStore:
    ArtefactStore + KeyStore + AuditStore + RemoteStore + GcStore + RetentionStore + TrustStore
{
}
impl<
        T: ArtefactStore + KeyStore + AuditStore + RemoteStore + GcStore + RetentionStore + TrustStore,
    > MetadataStore for T
{
}
