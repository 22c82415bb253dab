//! `reliquary serve` configuration: flags, each with a `RELIQUARY_*` variable, over an optional
//! TOML file, over defaults. Precedence: flag > env > file > default.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use serde::Deserialize;

use crate::domain::tarball::Limits;

/// What anonymous callers may read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum AnonymousRead {
    /// Nothing: every read needs a token.
    None,
    /// What a mirror key sees: release artefacts only.
    Releases,
    /// Everything, branch builds included.
    All,
}

/// The flags shared by every command that opens the stores (`serve`, `migrate`, `gc`, ...).
#[derive(Args, Clone, Debug, Default)]
pub struct StoreArgs {
    /// TOML file with any of the settings below (keys as the flags, without `--`).
    #[arg(long, env = "RELIQUARY_CONFIG")]
    pub config: Option<PathBuf>,
    /// Directory for the embedded database, local blobs, the signing key and the admin token.
    #[arg(long, env = "RELIQUARY_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Metadata store: empty for the embedded SQLite file, `mongodb://...` for MongoDB.
    #[arg(long, env = "RELIQUARY_DATABASE")]
    pub database: Option<String>,
    /// Blob store: `file:///path` (default `<data-dir>/blobs`) or `s3://bucket/root-dir`.
    #[arg(long, env = "RELIQUARY_STORAGE")]
    pub storage: Option<String>,
    /// An S3-compatible endpoint (e.g. `http://127.0.0.1:9000`) for `s3://` storage.
    #[arg(long, env = "RELIQUARY_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
}

#[derive(Args, Clone, Debug, Default)]
pub struct ServeArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    /// Address to listen on.
    #[arg(long, env = "RELIQUARY_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// This registry's name: its identity in signatures and federation.
    #[arg(long, env = "RELIQUARY_REGISTRY_NAME")]
    pub registry_name: Option<String>,
    /// Ed25519 signing key files (PKCS#8 PEM); the first signs, all are published.
    #[arg(long, env = "RELIQUARY_SIGNING_KEY", value_delimiter = ',')]
    pub signing_key: Vec<PathBuf>,
    /// The first admin token, used only when the registry has no admin key (32+ characters).
    #[arg(long, env = "RELIQUARY_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,
    /// What anonymous callers may read.
    #[arg(long, env = "RELIQUARY_ANONYMOUS_READ", value_enum)]
    pub anonymous_read: Option<AnonymousRead>,
    /// Largest accepted upload body, in bytes.
    #[arg(long, env = "RELIQUARY_MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<u64>,
    /// Unpacked bytes a tarball may always reach (the ratio may allow more).
    #[arg(long, env = "RELIQUARY_MAX_UNPACKED_BYTES")]
    pub max_unpacked_bytes: Option<u64>,
    /// Unpacked bytes allowed per compressed byte beyond `--max-unpacked-bytes`.
    #[arg(long, env = "RELIQUARY_MAX_UNPACKED_RATIO")]
    pub max_unpacked_ratio: Option<u64>,
    /// Seconds an upload may go without sending data before it is abandoned (408).
    #[arg(long, env = "RELIQUARY_UPLOAD_IDLE_TIMEOUT_SECONDS")]
    pub upload_idle_timeout_seconds: Option<u64>,
    /// Days the audit log keeps entries (0 keeps them forever).
    #[arg(long, env = "RELIQUARY_AUDIT_RETENTION_DAYS")]
    pub audit_retention_days: Option<u32>,
    /// Request headers must arrive within this long (`30s`), or the connection is closed.
    #[arg(long, env = "RELIQUARY_HEADER_TIMEOUT", value_parser = parse_duration)]
    pub header_timeout: Option<Duration>,
    /// A response write that makes no progress for this long (`60s`) closes the connection.
    #[arg(long, env = "RELIQUARY_SEND_TIMEOUT", value_parser = parse_duration)]
    pub send_timeout: Option<Duration>,
    /// Every request to a peer registry must connect, answer with headers and keep sending
    /// within this long (`30s`).
    #[arg(long, env = "RELIQUARY_PEER_TIMEOUT", value_parser = parse_duration)]
    pub peer_timeout: Option<Duration>,
    /// Replaced slots each architecture keeps in its history (10; at most 50; 0 turns history,
    /// and so rollback, off).
    #[arg(long, env = "RELIQUARY_HISTORY_PER_SLOT")]
    pub history_per_slot: Option<usize>,
    /// Delete branch artefacts neither rebuilt nor downloaded for this long (`30d`; default:
    /// keep forever).
    #[arg(long, env = "RELIQUARY_BRANCH_RETENTION", value_parser = parse_duration)]
    pub branch_retention: Option<Duration>,
    /// How often upkeep (branch retention) runs (`1h`).
    #[arg(long, env = "RELIQUARY_UPKEEP_INTERVAL", value_parser = parse_duration)]
    pub upkeep_interval: Option<Duration>,
    /// Answer tarball downloads with a 302 to a presigned URL of the blob (S3 storage only).
    #[arg(long, env = "RELIQUARY_STORAGE_REDIRECT")]
    pub storage_redirect: bool,
    /// How long a presigned download URL stays valid (`5m`).
    #[arg(long, env = "RELIQUARY_STORAGE_REDIRECT_TTL", value_parser = parse_duration)]
    pub storage_redirect_ttl: Option<Duration>,
    /// How long a replica's hold on a remote's sync lasts without renewal (`90s`): a replica
    /// that dies is replaced within it.
    #[arg(long, env = "RELIQUARY_SYNC_LEASE", value_parser = parse_duration)]
    pub sync_lease: Option<Duration>,
    /// How long a publish key from trusted publishing (`POST /oidc/token`) lives (`15m`; at
    /// most `1h`).
    #[arg(long, env = "RELIQUARY_OIDC_TOKEN_TTL", value_parser = parse_duration)]
    pub oidc_token_ttl: Option<Duration>,
    /// Allow this one `http://` OIDC issuer on a loopback address (tests only).
    #[arg(long, env = "RELIQUARY_OIDC_INSECURE_ISSUER")]
    pub oidc_insecure_issuer: Option<String>,
}

/// A duration as the flags take it: `90s`, `15m`, `12h`, `30d` (humantime's grammar).
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(text).map_err(|e| format!("`{text}`: {e}"))?;
    if duration.is_zero() {
        return Err(format!("`{text}`: a duration must be longer than zero"));
    }
    Ok(duration)
}

fn duration_from_file(text: Option<&String>) -> anyhow::Result<Option<Duration>> {
    text.map(|t| parse_duration(t).map_err(anyhow::Error::msg))
        .transpose()
}

/// The settings file: the same names as the flags.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
struct FileConfig {
    listen: Option<SocketAddr>,
    data_dir: Option<PathBuf>,
    database: Option<String>,
    storage: Option<String>,
    s3_endpoint: Option<String>,
    registry_name: Option<String>,
    #[serde(default)]
    signing_key: Vec<PathBuf>,
    admin_token: Option<String>,
    anonymous_read: Option<AnonymousRead>,
    max_upload_bytes: Option<u64>,
    max_unpacked_bytes: Option<u64>,
    max_unpacked_ratio: Option<u64>,
    audit_retention_days: Option<u32>,
    upload_idle_timeout_seconds: Option<u64>,
    header_timeout: Option<String>,
    send_timeout: Option<String>,
    peer_timeout: Option<String>,
    history_per_slot: Option<usize>,
    branch_retention: Option<String>,
    upkeep_interval: Option<String>,
    storage_redirect: Option<bool>,
    storage_redirect_ttl: Option<String>,
    sync_lease: Option<String>,
    oidc_token_ttl: Option<String>,
    oidc_insecure_issuer: Option<String>,
}

/// The registry's name unless `--registry-name` says otherwise.
pub const DEFAULT_REGISTRY_NAME: &str = "reliquary";

/// The resolved configuration of a registry.
#[derive(Clone, Debug)]
pub struct Config {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// `None`: the embedded SQLite file in the data dir.
    pub database: Option<String>,
    /// `None`: local files under `<data-dir>/blobs`.
    pub storage: Option<String>,
    pub s3_endpoint: Option<String>,
    pub registry_name: String,
    pub signing_keys: Vec<PathBuf>,
    pub admin_token: Option<String>,
    pub anonymous_read: AnonymousRead,
    pub max_upload_bytes: u64,
    pub tarball_limits: Limits,
    pub audit_retention_days: u32,
    pub upload_idle_timeout: std::time::Duration,
    pub header_timeout: Duration,
    pub send_timeout: Duration,
    pub peer_timeout: Duration,
    /// Replaced slots kept per architecture (`--history-per-slot`).
    pub history_per_slot: usize,
    /// `None`: branch builds are kept forever.
    pub branch_retention: Option<Duration>,
    pub upkeep_interval: Duration,
    /// `Some(ttl)`: tarball downloads are redirected to presigned URLs valid this long.
    pub storage_redirect: Option<Duration>,
    /// How long a sync lease lasts without renewal.
    pub sync_lease: Duration,
    /// How long a key from trusted publishing lives.
    pub oidc_token_ttl: Duration,
    /// The one `http://` (loopback) OIDC issuer allowed, for tests.
    pub oidc_insecure_issuer: Option<String>,
    /// How often noted downloads are written (not a flag: tests stretch it to look between).
    pub download_flush_interval: Duration,
    /// Bytes of streamed response chunks all connections together may hold in memory.
    pub response_memory_budget: u64,
    /// Where "now" comes from (tests drive a manual clock).
    pub clock: std::sync::Arc<dyn crate::clock::Clock>,
}

impl Config {
    /// The defaults for a registry whose data lives in `data_dir`.
    pub fn new(data_dir: impl Into<PathBuf>) -> Self {
        Self {
            listen: "127.0.0.1:8080".parse().expect("valid default"),
            data_dir: data_dir.into(),
            database: None,
            storage: None,
            s3_endpoint: None,
            registry_name: DEFAULT_REGISTRY_NAME.into(),
            signing_keys: Vec::new(),
            admin_token: None,
            anonymous_read: AnonymousRead::Releases,
            max_upload_bytes: 1 << 30,
            tarball_limits: Limits::default(),
            audit_retention_days: 90,
            upload_idle_timeout: std::time::Duration::from_secs(30),
            header_timeout: Duration::from_secs(30),
            send_timeout: Duration::from_secs(60),
            peer_timeout: Duration::from_secs(30),
            history_per_slot: 10,
            branch_retention: None,
            upkeep_interval: Duration::from_secs(3600),
            storage_redirect: None,
            sync_lease: Duration::from_secs(90),
            oidc_token_ttl: Duration::from_secs(15 * 60),
            oidc_insecure_issuer: None,
            download_flush_interval: Duration::from_secs(5),
            response_memory_budget: 128 << 20,
            clock: crate::clock::system(),
        }
    }

    pub fn from_store_args(args: &StoreArgs) -> anyhow::Result<Self> {
        Self::from_serve_args(&ServeArgs {
            store: args.clone(),
            ..Default::default()
        })
    }

    pub fn from_serve_args(args: &ServeArgs) -> anyhow::Result<Self> {
        let file = match &args.store.config {
            Some(path) => read_file_config(path)?,
            None => FileConfig::default(),
        };
        let data_dir = args
            .store
            .data_dir
            .clone()
            .or(file.data_dir)
            .unwrap_or_else(|| PathBuf::from("./data"));
        let mut config = Self::new(data_dir);
        let defaults = config.tarball_limits.clone();
        config.listen = args.listen.or(file.listen).unwrap_or(config.listen);
        config.database = args
            .store
            .database
            .clone()
            .or(file.database)
            .filter(|s| !s.is_empty());
        config.storage = args
            .store
            .storage
            .clone()
            .or(file.storage)
            .filter(|s| !s.is_empty());
        config.s3_endpoint = args.store.s3_endpoint.clone().or(file.s3_endpoint);
        config.registry_name = args
            .registry_name
            .clone()
            .or(file.registry_name)
            .unwrap_or(config.registry_name);
        config.signing_keys = if args.signing_key.is_empty() {
            file.signing_key
        } else {
            args.signing_key.clone()
        };
        config.admin_token = args.admin_token.clone().or(file.admin_token);
        config.anonymous_read = args
            .anonymous_read
            .or(file.anonymous_read)
            .unwrap_or(config.anonymous_read);
        config.max_upload_bytes = args
            .max_upload_bytes
            .or(file.max_upload_bytes)
            .unwrap_or(config.max_upload_bytes);
        config.tarball_limits.max_unpacked_bytes = args
            .max_unpacked_bytes
            .or(file.max_unpacked_bytes)
            .unwrap_or(defaults.max_unpacked_bytes);
        config.tarball_limits.max_ratio = args
            .max_unpacked_ratio
            .or(file.max_unpacked_ratio)
            .unwrap_or(defaults.max_ratio);
        config.audit_retention_days = args
            .audit_retention_days
            .or(file.audit_retention_days)
            .unwrap_or(config.audit_retention_days);
        if let Some(seconds) = args
            .upload_idle_timeout_seconds
            .or(file.upload_idle_timeout_seconds)
        {
            config.upload_idle_timeout = std::time::Duration::from_secs(seconds.max(1));
        }
        config.header_timeout = args
            .header_timeout
            .or(duration_from_file(file.header_timeout.as_ref())?)
            .unwrap_or(config.header_timeout);
        config.send_timeout = args
            .send_timeout
            .or(duration_from_file(file.send_timeout.as_ref())?)
            .unwrap_or(config.send_timeout);
        config.peer_timeout = args
            .peer_timeout
            .or(duration_from_file(file.peer_timeout.as_ref())?)
            .unwrap_or(config.peer_timeout);
        config.history_per_slot = args
            .history_per_slot
            .or(file.history_per_slot)
            .unwrap_or(config.history_per_slot);
        config.branch_retention = args
            .branch_retention
            .or(duration_from_file(file.branch_retention.as_ref())?);
        config.upkeep_interval = args
            .upkeep_interval
            .or(duration_from_file(file.upkeep_interval.as_ref())?)
            .unwrap_or(config.upkeep_interval);
        if args.storage_redirect || file.storage_redirect.unwrap_or(false) {
            config.storage_redirect = Some(
                args.storage_redirect_ttl
                    .or(duration_from_file(file.storage_redirect_ttl.as_ref())?)
                    .unwrap_or(Duration::from_secs(300)),
            );
        }
        config.sync_lease = args
            .sync_lease
            .or(duration_from_file(file.sync_lease.as_ref())?)
            .unwrap_or(config.sync_lease);
        config.oidc_token_ttl = args
            .oidc_token_ttl
            .or(duration_from_file(file.oidc_token_ttl.as_ref())?)
            .unwrap_or(config.oidc_token_ttl);
        config.oidc_insecure_issuer = args
            .oidc_insecure_issuer
            .clone()
            .or(file.oidc_insecure_issuer);
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> anyhow::Result<()> {
        if let Some(token) = &self.admin_token {
            anyhow::ensure!(
                token.chars().count() >= 32,
                "the admin token must be at least 32 characters long"
            );
        }
        anyhow::ensure!(
            self.history_per_slot <= crate::domain::lifecycle::MAX_HISTORY_PER_SLOT,
            "--history-per-slot is at most {} (history travels inside every document)",
            crate::domain::lifecycle::MAX_HISTORY_PER_SLOT
        );
        if let Some(ttl) = self.storage_redirect {
            anyhow::ensure!(
                self.storage.as_deref().is_some_and(|s| s.starts_with("s3://")),
                "--storage-redirect needs S3 storage (--storage s3://bucket/dir): local files have no URL to redirect to"
            );
            // SigV4 presigned URLs live at most seven days.
            anyhow::ensure!(
                ttl <= Duration::from_secs(7 * 86_400),
                "--storage-redirect-ttl is at most 7d (the longest a presigned S3 URL is valid)"
            );
        }
        anyhow::ensure!(
            self.oidc_token_ttl <= Duration::from_secs(3600),
            "--oidc-token-ttl is at most 1h (a key from trusted publishing is meant for one CI job)"
        );
        if let Some(issuer) = &self.oidc_insecure_issuer {
            crate::domain::trust::validate_insecure_issuer(issuer)
                .map_err(|why| anyhow::anyhow!("--oidc-insecure-issuer: {why}"))?;
        }
        anyhow::ensure!(
            self.sync_lease >= Duration::from_secs(2),
            "--sync-lease is at least 2s"
        );
        anyhow::ensure!(
            !self.registry_name.is_empty() && self.registry_name.len() <= 64,
            "the registry name must have 1 to 64 characters"
        );
        Ok(())
    }

    /// The embedded database file.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir.join("reliquary.sqlite3")
    }
}

fn read_file_config(path: &Path) -> anyhow::Result<FileConfig> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading the config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing the config file {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_file_beats_default() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("reliquary.toml");
        std::fs::write(
            &file,
            "listen = \"127.0.0.1:9999\"\nregistry-name = \"from-file\"\nanonymous-read = \"none\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            store: StoreArgs {
                config: Some(file),
                ..Default::default()
            },
            registry_name: Some("from-flag".into()),
            ..Default::default()
        };
        let config = Config::from_serve_args(&args).unwrap();
        assert_eq!(config.registry_name, "from-flag");
        assert_eq!(config.listen.port(), 9999);
        assert_eq!(config.anonymous_read, AnonymousRead::None);
        assert_eq!(config.max_upload_bytes, 1 << 30);
        assert_eq!(config.data_dir, PathBuf::from("./data"));
    }

    #[test]
    fn lifecycle_and_scale_out_settings_come_from_the_file_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("reliquary.toml");
        std::fs::write(
            &file,
            "history-per-slot = 3\nbranch-retention = \"30d\"\nupkeep-interval = \"6h\"\n\
             storage = \"s3://bucket/dir\"\nstorage-redirect = true\nstorage-redirect-ttl = \"2m\"\n\
             sync-lease = \"45s\"\noidc-token-ttl = \"30m\"\n\
             oidc-insecure-issuer = \"http://127.0.0.1:7777\"\n",
        )
        .unwrap();
        let args = ServeArgs {
            store: StoreArgs {
                config: Some(file.clone()),
                ..Default::default()
            },
            ..Default::default()
        };
        let config = Config::from_serve_args(&args).unwrap();
        assert_eq!(config.history_per_slot, 3);
        assert_eq!(
            config.branch_retention,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(config.upkeep_interval, Duration::from_secs(6 * 3600));
        assert_eq!(config.storage_redirect, Some(Duration::from_secs(120)));
        assert_eq!(config.sync_lease, Duration::from_secs(45));
        assert_eq!(config.oidc_token_ttl, Duration::from_secs(30 * 60));
        assert_eq!(
            config.oidc_insecure_issuer.as_deref(),
            Some("http://127.0.0.1:7777")
        );

        for bad in [
            "history-per-slot = 51\n",
            "storage-redirect = true\n",
            "storage = \"s3://b/d\"\nstorage-redirect = true\nstorage-redirect-ttl = \"8d\"\n",
            "sync-lease = \"1s\"\n",
            "branch-retention = \"0s\"\n",
            "oidc-token-ttl = \"2h\"\n",
            "oidc-insecure-issuer = \"http://token.example.com\"\n",
            "oidc-insecure-issuer = \"https://127.0.0.1:1\"\n",
        ] {
            std::fs::write(&file, bad).unwrap();
            assert!(Config::from_serve_args(&args).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_file_keys_and_short_admin_tokens_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("bad.toml");
        std::fs::write(&file, "listn = \"127.0.0.1:1\"\n").unwrap();
        let args = ServeArgs {
            store: StoreArgs {
                config: Some(file),
                ..Default::default()
            },
            ..Default::default()
        };
        assert!(Config::from_serve_args(&args).is_err());
        let args = ServeArgs {
            admin_token: Some("short".into()),
            ..Default::default()
        };
        assert!(Config::from_serve_args(&args).is_err());
    }
}
