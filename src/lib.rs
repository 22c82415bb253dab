//! Reliquary: a federated artefact store for per-architecture plugin tarballs.
//!
//! Layers, outside in (docs/architecture.md): `app` composes the state and the router; `http`
//! and `ui` (routes, extractors, pages) call the services `registry` (artefacts, keys, audit
//! reading) and `federation` (remotes, pinned keys, sync workers), which use `domain` (pure
//! rules), `store` (metadata behind traits), `blobs` (tarballs behind `object_store`), `audit`,
//! `changes` and `signing`. Nothing below imports anything above.

#![forbid(unsafe_code)]

pub mod app;
pub mod audit;
pub mod auth;
pub mod blobs;
pub mod changes;
pub mod cli;
pub mod clock;
pub mod config;
pub mod domain;
pub mod edge;
pub mod error;
pub mod faults;
pub mod federation;
pub mod gc;
pub mod http;
pub mod legacy;
pub mod memory_cache;
pub mod metrics;
pub mod oidc;
pub mod registry;
pub mod secrets;
pub mod signing;
pub mod store;
pub mod ui;
pub mod upload;

use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use reliquary_client::types::{ApiKey, Role, Timestamp};
use tokio::net::TcpListener;

pub use crate::app::{serve, AppState};
use crate::blobs::Blobs;
use crate::config::Config;
use crate::registry::Registry;
use crate::secrets::{generate_token, token_display_prefix, token_hash, write_private_file};
use crate::signing::Signer;
use crate::store::mongo::MongoStore;
use crate::store::sqlite::SqliteStore;
use crate::store::{KeyRecord, MetadataStore};

/// The file a generated first admin token is written to.
pub const ADMIN_TOKEN_FILE: &str = "admin-token";

/// Opens the configured metadata store and applies pending migrations; returns what was applied.
pub async fn open_store(config: &Config) -> anyhow::Result<(Arc<dyn MetadataStore>, Vec<String>)> {
    match config.database.as_deref() {
        None => {
            std::fs::create_dir_all(&config.data_dir)
                .with_context(|| format!("creating the data dir {}", config.data_dir.display()))?;
            let store = SqliteStore::open(&config.sqlite_path())?;
            let applied = store.migrate().await?;
            Ok((Arc::new(store), applied))
        }
        Some(url) if url.starts_with("mongodb://") || url.starts_with("mongodb+srv://") => {
            let store = MongoStore::connect(url).await?;
            let applied = store.migrate().await.context("migrating the MongoDB store")?;
            Ok((Arc::new(store), applied))
        }
        Some(url) => anyhow::bail!(
            "unsupported --database `{url}`: leave it empty for the embedded SQLite store, or use mongodb://host/dbname"
        ),
    }
}

/// Opens the configured blob store.
pub fn open_blobs(config: &Config) -> anyhow::Result<Blobs> {
    match config.storage.as_deref() {
        None => Ok(Blobs::local(&config.data_dir.join("blobs"))?),
        Some(url) if url.starts_with("file://") => {
            Ok(Blobs::local(Path::new(&url["file://".len()..]))?)
        }
        Some(url) if url.starts_with("s3://") => Ok(Blobs::s3(url, config.s3_endpoint.as_deref())?),
        Some(url) => {
            anyhow::bail!("unsupported --storage `{url}`: use file:///path or s3://bucket/root-dir")
        }
    }
}

/// Opens everything a server needs: stores (migrated), signing keys, the first admin key, and
/// the services over them.
pub async fn open_registry(config: &Config) -> anyhow::Result<AppState> {
    let registry = open_stores_and_keys(config).await?;
    bootstrap_admin(registry.store.as_ref(), config).await?;
    Ok(AppState::new(registry, config))
}

/// The registry without the first-admin bootstrap (for offline tools such as the importer).
pub async fn open_stores_and_keys(config: &Config) -> anyhow::Result<Arc<Registry>> {
    let (store, applied) = open_store(config).await?;
    for migration in applied {
        tracing::info!(%migration, "applied schema migration");
    }
    let blobs = open_blobs(config)?;
    anyhow::ensure!(
        config.storage_redirect.is_none() || blobs.can_presign(),
        "--storage-redirect needs S3 storage (--storage s3://bucket/dir): local files have no URL to redirect to"
    );
    let signer = Signer::load(
        &config.registry_name,
        &config.signing_keys,
        &config.data_dir,
    )?;
    let metrics = Arc::new(metrics::Metrics::default());
    Ok(Arc::new(Registry::new(
        store,
        blobs,
        Arc::new(signer),
        metrics,
        config,
    )))
}

/// On a registry with no usable admin key, the configured admin token becomes the first one;
/// without one, a token is generated, printed once to stderr and written to the data dir (0600).
async fn bootstrap_admin(store: &dyn MetadataStore, config: &Config) -> anyhow::Result<()> {
    if let Some(token) = &config.admin_token {
        // A revoked or expired admin token never comes back, and silently minting a new key
        // for it would undo the revocation: say so, and how to recover.
        if let Some(key) = store.key_by_token_hash(&token_hash(token)).await? {
            let now = Timestamp::now();
            let dead = match (key.revoked_at, key.expires_at) {
                (Some(at), _) => Some(format!("was revoked at {at}")),
                (None, Some(at)) if at <= now => Some(format!("expired at {at}")),
                _ => None,
            };
            if let Some(why) = dead {
                anyhow::bail!(
                    "the configured admin token (--admin-token / RELIQUARY_ADMIN_TOKEN) belongs to key `{}` ({}), which {why}. \
                     A revoked token is never accepted again. To recover: start with a new admin token \
                     (any string of 32 or more characters) — it becomes an admin key if no usable one is left — \
                     or use another admin key and remove the old token from the configuration.",
                    key.name,
                    key.id
                );
            }
        }
    }
    if store.has_usable_admin().await? {
        return Ok(());
    }
    let token = match &config.admin_token {
        Some(token) => token.clone(),
        None => {
            let token = generate_token();
            let path = config.data_dir.join(ADMIN_TOKEN_FILE);
            if path.exists() {
                std::fs::remove_file(&path)?;
            }
            write_private_file(&path, format!("{token}\n").as_bytes())?;
            eprintln!(
                "reliquary: created the first admin token (shown once, also in {}):\n  {token}",
                path.display()
            );
            token
        }
    };
    let key = ApiKey {
        id: uuid::Uuid::new_v4().to_string(),
        name: "bootstrap-admin".into(),
        role: Role::Admin,
        prefix: token_display_prefix(&token),
        allowed_package_name: None,
        allowed_name_prefix: None,
        allowed_category: None,
        allowed_ids: None,
        allowed_kinds: None,
        created_at: Timestamp::now(),
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
        trusted_publisher: None,
        oidc: None,
    };
    store
        .insert_key(KeyRecord {
            key,
            token_sha256: token_hash(&token),
        })
        .await?;
    Ok(())
}

/// Serves the registry on `listener` until `shutdown` completes, then lets in-flight requests
/// (transfers included) finish before returning.
pub async fn launch(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let registry = open_registry(&config).await?;
    serve(registry, listener, shutdown).await
}
