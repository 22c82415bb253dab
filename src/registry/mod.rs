//! The artefact service: what each API operation does, between the HTTP layer (which parses and
//! maps errors) and the stores. Permission checks, the upload commit protocol and the
//! compare-and-swap retries live here.

use std::sync::Arc;

use reliquary_client::types::{Artefact, Kind};

use crate::audit::AuditLog;
use crate::auth::{self, Caller};
use crate::blobs::Blobs;
use crate::changes::ChangeFeed;
use crate::clock::Clock;
use crate::config::{AnonymousRead, Config};
use crate::domain::tarball::Limits;
use crate::error::Result;
use crate::signing::Signer;
use crate::store::MetadataStore;

mod artefacts;
mod audit;
mod documents;
mod feed;
mod keys;
mod lifecycle;
mod trust;
mod upkeep;

pub use documents::Served;
pub use feed::{decode_cursor, encode_cursor};
pub use upkeep::RetentionReport;

/// How often a write retries after losing a compare-and-swap race before giving up with 409.
const CAS_ATTEMPTS: usize = 8;

pub const DEFAULT_PAGE: usize = 50;
pub const MAX_PAGE: usize = 500;

pub struct Registry {
    pub store: Arc<dyn MetadataStore>,
    pub blobs: Blobs,
    pub signer: Arc<Signer>,
    pub anonymous_read: AnonymousRead,
    pub body_limits: crate::upload::BodyLimits,
    pub tarball_limits: Limits,
    pub audit_retention_days: u32,
    /// Replaced slots kept per architecture.
    pub history_per_slot: usize,
    /// `None`: branch builds are kept forever.
    pub branch_retention: Option<std::time::Duration>,
    pub upkeep_interval: std::time::Duration,
    /// How often noted downloads are written.
    pub download_flush_interval: std::time::Duration,
    /// `Some(ttl)`: downloads are redirected to presigned storage URLs valid this long.
    pub storage_redirect: Option<std::time::Duration>,
    /// The registry's name: the default audience of a trusted publisher.
    pub registry_name: String,
    /// Verifies CI OIDC tokens for trusted publishing.
    oidc: crate::oidc::OidcVerifier,
    /// How long a key issued by trusted publishing lives.
    pub oidc_token_ttl: std::time::Duration,
    pub oidc_insecure_issuer: Option<String>,
    /// Downloads noted for `lastDownloadedAt`, written in the background.
    downloads: upkeep::Downloads,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub audit: AuditLog,
    pub clock: Arc<dyn Clock>,
    /// The latest committed seq, for long-polling change feeds.
    pub changes: Arc<ChangeFeed>,
    /// Hot documents, encoded (validated by revision on every read).
    documents: documents::Documents,
    bootstrap_token_hash: Option<String>,
    /// Serialises "is this the last admin key?" with the revocation it allows (in this
    /// process; two replicas revoking the last two admin keys at once can still race).
    admin_revocations: tokio::sync::Mutex<()>,
}

/// The query of `POST /artefacts/npm/{id}`, validated.
#[derive(Clone, Debug)]
pub struct UploadRequest {
    pub id: String,
    pub architecture: String,
    pub kind: Kind,
    pub category: Option<String>,
    pub force: bool,
    /// A provenance bundle to keep with the slot, as given.
    pub attestation: Option<bytes::Bytes>,
    /// For the legacy importer: the record's own timestamps instead of now.
    pub imported: Option<ImportedTimes>,
}

/// The timestamps a legacy record carries, kept by the import.
#[derive(Clone, Copy, Debug)]
pub struct ImportedTimes {
    pub created_at: reliquary_client::types::Timestamp,
    pub uploaded_at: reliquary_client::types::Timestamp,
    pub data_updated_at: reliquary_client::types::Timestamp,
}

/// The outcome of an upload: the document and whether this upload created it.
pub struct Uploaded {
    pub doc: Artefact,
    pub created: bool,
}

/// What an edit of a stored document decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Edit {
    /// Commit the edited document.
    Commit,
    /// Nothing to write: answer with the document as it is.
    Unchanged,
}

/// `PATCH /artefacts/{id}`: fields to change; an empty string clears.
#[derive(Clone, Debug, Default)]
pub struct ArtefactPatch {
    pub category: Option<String>,
    pub description: Option<String>,
    /// A message deprecates; `""` clears.
    pub deprecated: Option<String>,
}

impl Registry {
    pub fn new(
        store: Arc<dyn MetadataStore>,
        blobs: Blobs,
        signer: Arc<Signer>,
        metrics: Arc<crate::metrics::Metrics>,
        config: &Config,
    ) -> Self {
        Self {
            audit: AuditLog::new(store.clone(), config.clock.clone()),
            clock: config.clock.clone(),
            store,
            blobs,
            signer,
            anonymous_read: config.anonymous_read,
            body_limits: crate::upload::BodyLimits {
                max_bytes: config.max_upload_bytes,
                idle_timeout: config.upload_idle_timeout,
            },
            tarball_limits: config.tarball_limits.clone(),
            audit_retention_days: config.audit_retention_days,
            history_per_slot: config.history_per_slot,
            branch_retention: config.branch_retention,
            upkeep_interval: config.upkeep_interval,
            download_flush_interval: config.download_flush_interval,
            storage_redirect: config.storage_redirect,
            registry_name: config.registry_name.clone(),
            oidc: crate::oidc::OidcVerifier::new(
                config.oidc_insecure_issuer.clone(),
                config.clock.clone(),
            ),
            oidc_token_ttl: config.oidc_token_ttl,
            oidc_insecure_issuer: config.oidc_insecure_issuer.clone(),
            downloads: upkeep::Downloads::new(config.branch_retention),
            metrics,
            changes: Arc::default(),
            documents: Default::default(),
            admin_revocations: tokio::sync::Mutex::default(),
            bootstrap_token_hash: config
                .admin_token
                .as_deref()
                .map(crate::secrets::token_hash),
        }
    }

    pub async fn authenticate(&self, token: Option<&str>) -> Result<Caller> {
        auth::authenticate(
            self.store.as_ref(),
            token,
            self.bootstrap_token_hash.as_deref(),
            self.clock.now(),
        )
        .await
    }

    /// Wakes long-polling change-feed readers after a commit.
    pub(crate) fn changed(&self, seq: i64) {
        self.changes.changed(seq);
    }

    pub(crate) fn subscribe_changes(&self) -> tokio::sync::watch::Receiver<i64> {
        self.changes.subscribe()
    }

    /// `/readyz`: both stores answer.
    pub async fn ready(&self) -> Result<()> {
        self.store.ping().await?;
        self.blobs.ping().await?;
        Ok(())
    }
}
