//! `reliquary validate`, `publish` and `ensure`: what CI jobs and plugin hosts type.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use reliquary_client::jws::TrustedKeys;
use reliquary_client::types::{Jwk, Kind, WellKnown};
use reliquary_client::{current_arch, Client, PublishOptions};
use serde_json::json;

use super::ClientArgs;
use crate::domain::tarball::{inspect, Limits, Manifest};

#[derive(Args, Debug)]
pub struct PublishArgs {
    /// The `npm pack` tarball to upload.
    pub tarball: PathBuf,
    /// The artefact id, e.g. `acme-plugin@1` or `acme-plugin@main`.
    #[arg(long)]
    pub id: String,
    /// The slot: `noarch` or an architecture such as `x64`, `arm64`.
    #[arg(long, default_value = "noarch")]
    pub arch: String,
    /// `release` or `branch` (fixed when the artefact is created).
    #[arg(long, default_value = "release")]
    pub kind: Kind,
    /// The category, set when the artefact is created.
    #[arg(long)]
    pub category: Option<String>,
    /// Publish with a short-lived key from trusted publishing instead of a stored token: the
    /// CI's OIDC token (GitHub Actions, or `RELIQUARY_OIDC_TOKEN`) is traded for it first.
    #[arg(long)]
    pub oidc: bool,
    /// The audience to request from GitHub Actions (default: the registry's name).
    #[arg(long, env = "RELIQUARY_OIDC_AUDIENCE", requires = "oidc")]
    pub oidc_audience: Option<String>,
}

#[derive(Args, Debug)]
pub struct EnsureArgs {
    /// The artefact id.
    pub id: String,
    /// The architecture to resolve (falls back to `noarch`); `auto` is this machine's.
    #[arg(long, default_value = "auto")]
    pub arch: String,
    /// The cache directory.
    #[arg(long, env = "RELIQUARY_CACHE_DIR")]
    pub cache_dir: Option<PathBuf>,
    /// Verify slot signatures against the keys in this file (a `/.well-known/reliquary`
    /// document, a JWK, or an array of JWKs).
    #[arg(long, conflicts_with = "trust_registry")]
    pub trusted_key: Vec<PathBuf>,
    /// Verify slot signatures against the keys the registry publishes right now.
    #[arg(long)]
    pub trust_registry: bool,
}

/// Reads a tarball's manifest locally, with the registry's own rules.
fn validate_file(path: &Path) -> anyhow::Result<Manifest> {
    let file = std::fs::File::open(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    inspect(std::io::BufReader::new(file), &Limits::default()).map_err(|rejection| {
        let mut message = format!(
            "{} is not a valid artefact: {}",
            path.display(),
            rejection.message
        );
        for problem in rejection.problems {
            message.push_str(&format!("\n  {}: {}", problem.field, problem.message));
        }
        anyhow::anyhow!(message)
    })
}

pub fn validate(path: &Path, json_output: bool) -> anyhow::Result<()> {
    let manifest = validate_file(path)?;
    if json_output {
        println!(
            "{}",
            json!({"valid": true, "name": manifest.name, "version": manifest.version.to_string()})
        );
    } else {
        println!(
            "{} {} is a valid artefact tarball",
            manifest.name, manifest.version
        );
    }
    Ok(())
}

pub async fn publish(args: &ClientArgs, publish: PublishArgs) -> anyhow::Result<()> {
    let manifest = validate_file(&publish.tarball)?;
    let client = if publish.oidc {
        super::trust::exchanged_client(args, publish.oidc_audience.clone()).await?
    } else {
        args.client()?
    };
    let bar = progress_bar(args.json);
    let progress = bar
        .clone()
        .map(|bar| -> Arc<dyn Fn(u64, u64) + Send + Sync> {
            Arc::new(move |done, total| {
                bar.set_length(total);
                bar.set_position(done);
            })
        });
    let options = PublishOptions {
        architecture: publish.arch.clone(),
        kind: publish.kind,
        category: publish.category.clone(),
    };
    let result = client
        .publish(&publish.id, &publish.tarball, &options, progress)
        .await;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    let (doc, created) = result?;
    let slot = doc
        .tarballs
        .get(&publish.arch)
        .ok_or_else(|| anyhow::anyhow!("the registry's answer has no `{}` slot", publish.arch))?;
    let summary = json!({
        "id": doc.id,
        "architecture": publish.arch,
        "version": slot.version,
        "sha256": slot.sha256,
        "size": slot.size,
        "created": created,
        "package": manifest.name,
    });
    args.print(&summary, |_| {
        format!(
            "{} {} [{}] {} sha256:{}",
            if created { "created" } else { "published" },
            doc.id,
            publish.arch,
            slot.version,
            slot.sha256
        )
    })
}

pub async fn ensure(args: &ClientArgs, ensure: EnsureArgs) -> anyhow::Result<()> {
    let cache_dir = ensure.cache_dir.clone().unwrap_or_else(default_cache_dir);
    let mut builder = Client::builder(&args.registry)
        .maybe_token(args.token.clone())
        .cache_dir(cache_dir);
    if ensure.trust_registry {
        let well_known = args.client()?.well_known().await?;
        builder = builder
            .trusted_keys(TrustedKeys::from_jwks(&well_known.keys).map_err(anyhow::Error::msg)?);
    } else if !ensure.trusted_key.is_empty() {
        builder = builder.trusted_keys(load_trusted_keys(&ensure.trusted_key)?);
    }
    let client = builder.build()?;
    let arch = if ensure.arch == "auto" {
        current_arch().to_owned()
    } else {
        ensure.arch.clone()
    };
    let bar = progress_bar(args.json);
    let progress = |done: u64, total: u64| {
        if let Some(bar) = &bar {
            bar.set_length(total);
            bar.set_position(done);
        }
    };
    let result = client
        .ensure_artefact_with_progress(&ensure.id, &arch, &progress)
        .await;
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let ensured = result?;
    if let Some(message) = &ensured.deprecated {
        // Delivered all the same; stderr, so scripts reading the path from stdout still work.
        eprintln!("warning: {} is deprecated: {message}", ensured.id);
    }
    args.print(&ensured, |e| e.path.display().to_string())
}

fn load_trusted_keys(files: &[PathBuf]) -> anyhow::Result<TrustedKeys> {
    let mut jwks: Vec<Jwk> = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(file)?;
        if let Ok(well_known) = serde_json::from_str::<WellKnown>(&text) {
            jwks.extend(well_known.keys);
        } else if let Ok(list) = serde_json::from_str::<Vec<Jwk>>(&text) {
            jwks.extend(list);
        } else {
            jwks.push(serde_json::from_str::<Jwk>(&text).map_err(|e| {
                anyhow::anyhow!(
                    "{} holds no JWK or well-known document: {e}",
                    file.display()
                )
            })?);
        }
    }
    TrustedKeys::from_jwks(&jwks).map_err(anyhow::Error::msg)
}

fn default_cache_dir() -> PathBuf {
    std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache")))
        .unwrap_or_else(std::env::temp_dir)
        .join("reliquary/artefacts")
}

/// A progress bar on a terminal; nothing when piped or with `--json`.
fn progress_bar(json_output: bool) -> Option<indicatif::ProgressBar> {
    use std::io::IsTerminal;
    if json_output || !std::io::stderr().is_terminal() {
        return None;
    }
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    Some(bar)
}
