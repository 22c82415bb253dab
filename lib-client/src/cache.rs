//! `ensure_artefact`: a verified, per-architecture cache of extracted artefacts.
//!
//! The layout is cache format 1, which the Node client shares (`lib-client/README.md`, "Cache
//! format"), per artefact (`@scope/name@1` becomes `@scope%2Fname@1`):
//!
//! ```text
//! <id>/.lock          one writer at a time, across threads, processes and clients (`lock`)
//! <id>/doc.json       {format, etag, doc}: the last document seen (for If-None-Match)
//! <id>/<arch>/        the extracted package, package.json at its root
//! <id>/<arch>.json    {format, id, architecture, version, sha256, size, dataUpdatedAt,
//!                     signatureVerified}: what that directory holds
//! <id>/.*             temporary paths, only ever made by the lock holder
//! ```
//!
//! A directory only ever appears complete: downloads and extraction happen in temporary paths
//! that are renamed into place, and the meta file is written after the directory.

use std::fs;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::client::{check, encode_id, Client, Error, Result};
use crate::extract::{extract, ExtractLimits};
use crate::jws::verify_slot;
use crate::lock::{EntryLock, LockTiming};
use crate::types::{Artefact, Timestamp};

/// What `ensure_artefact` made present.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EnsuredArtefact {
    /// The extracted package (its `package.json` at the root).
    pub path: PathBuf,
    pub id: String,
    /// The slot it came from: the requested architecture, or `noarch`.
    pub architecture: String,
    pub version: String,
    pub sha256: String,
    pub data_updated_at: Timestamp,
    /// Whether this call downloaded it (`false`: the cache was current).
    pub downloaded: bool,
    /// The registry could not be reached; this is the last verified copy.
    pub stale: bool,
    /// The artefact is deprecated: still delivered, but the host should say so (and why).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<String>,
}

/// Progress of a download: bytes so far and the total.
pub type Progress<'a> = &'a (dyn Fn(u64, u64) + Send + Sync);

/// The cache format this client reads and writes. Files without a `format` field were written
/// by the v1.0 client, in the same layout: format 1.
pub const CACHE_FORMAT: u64 = 1;

#[derive(Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SlotMeta {
    format: u64,
    id: String,
    architecture: String,
    version: String,
    sha256: String,
    size: u64,
    data_updated_at: Timestamp,
    signature_verified: bool,
}

#[derive(Serialize, Deserialize)]
struct DocCache {
    format: u64,
    etag: String,
    doc: Artefact,
}

/// The registry's name for the architecture this program runs on (Node's `process.arch`).
pub fn current_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "x64",
        "x86" => "ia32",
        "aarch64" => "arm64",
        "arm" => "arm",
        "riscv64" => "riscv64",
        "powerpc64" => "ppc64",
        "s390x" => "s390x",
        "loongarch64" => "loong64",
        "mips64" => "mips64el",
        other => other,
    }
}

/// Reads a cache file: `None` when it is missing or unreadable (it is rewritten), an error when
/// it declares a format this client does not know (it belongs to a newer client: neither used
/// nor overwritten).
fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>> {
    let Ok(bytes) = fs::read(path) else {
        return Ok(None);
    };
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(&bytes) else {
        return Ok(None);
    };
    let Some(object) = value.as_object_mut() else {
        return Ok(None);
    };
    let format = object
        .entry("format")
        .or_insert(CACHE_FORMAT.into())
        .clone();
    if format != CACHE_FORMAT {
        return Err(Error::Cache(std::io::Error::other(format!(
            "{} is in cache format {format}; this client knows format {CACHE_FORMAT} (use a newer client or another cache dir)",
            path.display()
        ))));
    }
    Ok(serde_json::from_value(value).ok())
}

/// Writes a small file atomically: a temporary file (a dot name, like every temporary path of
/// an entry), then a rename.
fn write_json<T: Serialize>(path: &Path, value: &T) -> Result<()> {
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    let temp = path.with_file_name(format!(".{name}.{}.tmp", nonce()));
    fs::write(&temp, serde_json::to_vec_pretty(value).expect("plain data"))
        .map_err(Error::Cache)?;
    fs::rename(&temp, path).map_err(Error::Cache)
}

/// Removes what a holder that died left behind: downloads, extractions, swapped-out copies and
/// temporary files. Only the lock holder calls it, so none of them is in use.
fn sweep_temporaries(entry: &Path) {
    let Ok(names) = fs::read_dir(entry) else {
        return;
    };
    for name in names.flatten() {
        let name = name.file_name().to_string_lossy().into_owned();
        let temporary = name.starts_with(".download-")
            || name.starts_with(".extract-")
            || name.starts_with(".old-")
            || (name.starts_with('.') && name.ends_with(".tmp"));
        // A breaker's renamed lock: one still fresh may belong to a breaker at work.
        let old_grave = name.starts_with(".lock.stale-")
            && fs::metadata(entry.join(&name))
                .and_then(|m| m.modified())
                .is_ok_and(|at| at.elapsed().is_ok_and(|age| age.as_secs() > 60));
        if temporary || old_grave {
            let path = entry.join(&name);
            let _ = fs::remove_dir_all(&path).or_else(|_| fs::remove_file(&path));
        }
    }
}

impl Client {
    fn cache_entry(&self, id: &str) -> Result<PathBuf> {
        let root = self.cache_dir.as_ref().ok_or(Error::NoCacheDir)?;
        // An id is part of a path here: one the registry would refuse (`..`) never becomes one.
        crate::types::validate_id(id).map_err(|why| {
            Error::Cache(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("`{}` is not an artefact id: {why}", id.escape_debug()),
            ))
        })?;
        Ok(root.join(encode_id(id)))
    }

    /// Makes artefact `id` present in the cache for `architecture` (falling back to `noarch`)
    /// and returns where. One conditional request when nothing changed; a download, verified
    /// and extracted, when `dataUpdatedAt` or the slot's sha256 changed.
    pub async fn ensure_artefact(&self, id: &str, architecture: &str) -> Result<EnsuredArtefact> {
        self.ensure_artefact_with_progress(id, architecture, &|_, _| {})
            .await
    }

    pub async fn ensure_artefact_with_progress(
        &self,
        id: &str,
        architecture: &str,
        progress: Progress<'_>,
    ) -> Result<EnsuredArtefact> {
        let entry = self.cache_entry(id)?;
        fs::create_dir_all(&entry).map_err(Error::Cache)?;
        let lock_dir = entry.clone();
        let lock = tokio::task::spawn_blocking(move || {
            EntryLock::acquire(&lock_dir, LockTiming::default())
        })
        .await
        .map_err(|e| Error::Cache(std::io::Error::other(e)))?
        .map_err(Error::Cache)?;

        let doc = match self.fetch_doc(id, &entry).await {
            Ok(doc) => doc,
            Err(Error::Unreachable(source)) => {
                return offline_copy(&entry, id, architecture, self.trusted.as_ref(), source)
            }
            Err(other) => return Err(other),
        };
        // A document about another artefact (a signed slot of B served for A) is refused even
        // when its signature verifies: signatures name the document's id, not the request's.
        if doc.id != id {
            return Err(Error::Integrity(format!(
                "asked for `{id}`, the registry answered with the document of `{}`",
                doc.id
            )));
        }
        let (resolved, slot) = doc
            .resolve_slot(architecture)
            .ok_or_else(|| Error::NotFound {
                message: format!("`{id}` has no `{architecture}` slot and no `noarch` fallback"),
            })?;
        let (resolved, slot) = (resolved.to_owned(), slot.clone());
        let meta_path = entry.join(format!("{resolved}.json"));
        let dir = entry.join(&resolved);
        // Every call, cached copy or not: the slot must be signed by this caller's keys. The
        // meta's `signatureVerified` says what another caller checked, with its own keys (or
        // none), so it is never a reason to trust a copy.
        let verified = self.trusted.is_some();
        if let Some(trusted) = &self.trusted {
            verify_slot(trusted, &doc, &resolved, None)
                .map_err(|e| Error::Integrity(format!("slot `{resolved}`: {e}")))?;
        }
        if let Some(meta) = read_json::<SlotMeta>(&meta_path)? {
            let current = meta.sha256 == slot.sha256
                && meta.size == slot.size
                && meta.architecture == resolved
                && meta.data_updated_at == doc.data_updated_at;
            if current && dir.is_dir() {
                return Ok(ensured(&dir, &meta, false, false, Some(&doc)));
            }
        }

        sweep_temporaries(&entry);
        let nonce = nonce();
        let archive = entry.join(format!(".download-{nonce}.tgz"));
        let staging = entry.join(format!(".extract-{nonce}"));
        let outcome = async {
            self.download(id, &resolved, &slot.sha256, slot.size, &archive, progress)
                .await?;
            let (from, to) = (archive.clone(), staging.clone());
            tokio::task::spawn_blocking(move || extract(&from, &to, &ExtractLimits::default()))
                .await
                .map_err(|e| Error::Cache(std::io::Error::other(e)))??;
            // The old meta goes first: a crash after the swap must not leave it describing the
            // new directory. (The new one is written last.)
            lock.assert_held().map_err(Error::Cache)?;
            match fs::remove_file(&meta_path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(Error::Cache(e)),
                _ => {}
            }
            replace_dir(&staging, &dir, &entry.join(format!(".old-{nonce}")))
        }
        .await;
        let _ = fs::remove_file(&archive);
        if outcome.is_err() {
            let _ = fs::remove_dir_all(&staging);
        }
        outcome?;
        let meta = SlotMeta {
            format: CACHE_FORMAT,
            id: id.to_owned(),
            architecture: resolved,
            version: slot.version.clone(),
            sha256: slot.sha256.clone(),
            size: slot.size,
            data_updated_at: doc.data_updated_at,
            signature_verified: verified,
        };
        lock.assert_held().map_err(Error::Cache)?;
        write_json(&meta_path, &meta)?;
        Ok(ensured(&dir, &meta, true, false, Some(&doc)))
    }

    /// The document, revalidated with the ETag of the cached copy.
    async fn fetch_doc(&self, id: &str, entry: &Path) -> Result<Artefact> {
        let cache_path = entry.join("doc.json");
        let cached: Option<DocCache> = read_json(&cache_path)?;
        let mut request = self.request(Method::GET, &format!("/artefacts/{}", encode_id(id)));
        if let Some(cached) = &cached {
            request = request.header("if-none-match", &cached.etag);
        }
        let response = request
            .timeout(self.timeout)
            .send()
            .await
            .map_err(Error::Unreachable)?;
        let response = check(response).await?;
        if response.status() == StatusCode::NOT_MODIFIED {
            if let Some(cached) = cached {
                return Ok(cached.doc);
            }
        }
        let etag = response
            .headers()
            .get("etag")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let doc: Artefact = response
            .json()
            .await
            .map_err(|e| Error::Protocol(e.to_string()))?;
        if let Some(etag) = etag {
            write_json(
                &cache_path,
                &DocCache {
                    format: CACHE_FORMAT,
                    etag,
                    doc: doc.clone(),
                },
            )?;
        }
        Ok(doc)
    }

    /// Streams one slot to `path`, hashing as it goes, and checks size and sha256.
    async fn download(
        &self,
        id: &str,
        architecture: &str,
        sha256: &str,
        size: u64,
        path: &Path,
        progress: Progress<'_>,
    ) -> Result<()> {
        let response = self
            .request(
                Method::GET,
                &format!(
                    "/artefacts/{}/tarball?architecture={architecture}",
                    encode_id(id)
                ),
            )
            .send()
            .await
            .map_err(Error::Unreachable)?;
        let response = check(response).await?;
        let mut file = tokio::fs::File::create(path).await.map_err(Error::Cache)?;
        let mut hasher = Sha256::new();
        let mut received = 0u64;
        let mut body = response.bytes_stream();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(Error::Unreachable)?;
            received += chunk.len() as u64;
            if received > size {
                return Err(Error::Integrity(format!(
                    "the registry sent more than the {size} bytes the document announces"
                )));
            }
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(Error::Cache)?;
            progress(received, size);
        }
        file.flush().await.map_err(Error::Cache)?;
        let actual = hex::encode(hasher.finalize());
        if received != size || actual != sha256 {
            return Err(Error::Integrity(format!(
                "downloaded {received} bytes with sha256 {actual}; the document announces {size} bytes with sha256 {sha256}"
            )));
        }
        Ok(())
    }
}

/// The cached copy for `architecture` (or `noarch`) when the registry is unreachable. With
/// trusted keys, only a copy whose slot in the last document seen verifies with them and
/// describes exactly the cached bytes (sha256 and size, checked when they were downloaded).
fn offline_copy(
    entry: &Path,
    id: &str,
    architecture: &str,
    trusted: Option<&crate::jws::TrustedKeys>,
    source: reqwest::Error,
) -> Result<EnsuredArtefact> {
    let cached: Option<DocCache> = read_json(&entry.join("doc.json"))?;
    let doc = cached.as_ref().map(|c| &c.doc).filter(|d| d.id == id);
    for arch in [architecture, crate::types::NOARCH] {
        let dir = entry.join(arch);
        let Some(meta) = read_json::<SlotMeta>(&entry.join(format!("{arch}.json")))? else {
            continue;
        };
        if !dir.is_dir() || meta.id != id || meta.architecture != arch {
            continue;
        }
        if let Some(keys) = trusted {
            let vouched = doc.is_some_and(|doc| {
                doc.tarballs.get(arch).is_some_and(|slot| {
                    slot.sha256 == meta.sha256
                        && slot.size == meta.size
                        && verify_slot(keys, doc, arch, None).is_ok()
                })
            });
            if !vouched {
                continue;
            }
        }
        // The last document seen says whether it was deprecated then.
        return Ok(ensured(&dir, &meta, false, true, doc));
    }
    Err(Error::Offline(source))
}

fn ensured(
    dir: &Path,
    meta: &SlotMeta,
    downloaded: bool,
    stale: bool,
    doc: Option<&Artefact>,
) -> EnsuredArtefact {
    EnsuredArtefact {
        deprecated: doc
            .and_then(|d| d.deprecated.as_ref())
            .map(|d| d.message.clone()),
        path: dir.to_path_buf(),
        id: meta.id.clone(),
        architecture: meta.architecture.clone(),
        version: meta.version.clone(),
        sha256: meta.sha256.clone(),
        data_updated_at: meta.data_updated_at,
        downloaded,
        stale,
    }
}

/// Moves `staging` to `dir`, swapping out whatever was there, then removes the old copy.
fn replace_dir(staging: &Path, dir: &Path, old: &Path) -> Result<()> {
    if dir.exists() {
        fs::rename(dir, old).map_err(Error::Cache)?;
    }
    fs::rename(staging, dir).map_err(Error::Cache)?;
    let _ = fs::remove_dir_all(old);
    Ok(())
}

/// 16 random hex digits, for temporary names and lock nonces.
pub(crate) fn nonce() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 8];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta_json(format: Option<u64>) -> serde_json::Value {
        let mut meta = serde_json::json!({
            "id": "acme@1", "architecture": "x64", "version": "1.0.0", "sha256": "ab".repeat(32),
            "size": 10, "dataUpdatedAt": "2026-01-01T00:00:00.000Z", "signatureVerified": false,
        });
        if let Some(format) = format {
            meta["format"] = format.into();
        }
        meta
    }

    #[test]
    fn a_v1_0_meta_without_format_reads_as_format_1() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x64.json");
        fs::write(&path, meta_json(None).to_string()).unwrap();
        let meta = read_json::<SlotMeta>(&path).unwrap().unwrap();
        assert_eq!(meta.format, 1);
        assert_eq!(meta.version, "1.0.0");
    }

    #[test]
    fn an_unknown_format_is_an_error_naming_it_and_missing_or_corrupt_files_are_absent() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x64.json");
        fs::write(&path, meta_json(Some(2)).to_string()).unwrap();
        let error = read_json::<SlotMeta>(&path).err().unwrap();
        assert!(matches!(error, Error::Cache(_)), "{error:?}");
        assert!(error.to_string().contains("cache format 2"), "{error}");
        fs::write(&path, b"{not json").unwrap();
        assert!(read_json::<SlotMeta>(&path).unwrap().is_none());
        assert!(read_json::<SlotMeta>(&dir.path().join("none.json"))
            .unwrap()
            .is_none());
    }

    #[test]
    fn written_files_carry_the_format_and_leave_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x64.json");
        let meta: SlotMeta = serde_json::from_value(meta_json(Some(1))).unwrap();
        write_json(&path, &meta).unwrap();
        let written: serde_json::Value = serde_json::from_slice(&fs::read(&path).unwrap()).unwrap();
        assert_eq!(written["format"], 1);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn the_holder_sweeps_what_a_dead_holder_left_and_nothing_else() {
        let dir = tempfile::tempdir().unwrap();
        for d in [".extract-1", ".old-2", "x64"] {
            fs::create_dir(dir.path().join(d)).unwrap();
        }
        for f in [
            ".download-3.tgz",
            ".x64.json.4.tmp",
            "x64.json",
            "doc.json",
            ".lock",
        ] {
            fs::write(dir.path().join(f), b"").unwrap();
        }
        sweep_temporaries(dir.path());
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, [".lock", "doc.json", "x64", "x64.json"]);
    }
}
