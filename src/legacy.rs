//! `reliquary import-legacy DIR`: imports a legacy export (`DIR/artefacts.jsonl` plus the
//! tarballs it names) into the unified model, through the same validation, hashing and signing
//! as an upload. Idempotent: artefacts that exist already are left alone and reported so.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use reliquary_client::types::{Artefact, Slot, Timestamp};
use serde::Serialize;
use tokio::io::AsyncBufReadExt;

use crate::audit::Outcome;
use crate::domain::arch::NOARCH;
use crate::domain::document::{bound_text_fields, describe_problems, validate_document};
use crate::domain::legacy::{plan, LegacyRecord, PlannedArtefact};
use crate::domain::visibility::Visibility;
use crate::registry::Registry;
use crate::signing::SlotFacts;
use crate::store::StoreError;
use crate::upload::receive;

/// What an import did, line by line.
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ImportReport {
    pub created: Vec<String>,
    /// Present already (from an earlier run, or published since): left as they are.
    pub unchanged: Vec<String>,
    /// Legacy versions not imported because a higher version of their major was.
    pub superseded: Vec<Superseded>,
    pub failed: Vec<FailedLine>,
}

#[derive(Debug, Serialize)]
pub struct Superseded {
    pub id: String,
    pub version: String,
}

#[derive(Debug, Serialize)]
pub struct FailedLine {
    pub line: usize,
    pub message: String,
}

pub async fn import(registry: &Registry, dir: &Path) -> anyhow::Result<ImportReport> {
    let listing = dir.join("artefacts.jsonl");
    let file = tokio::fs::File::open(&listing)
        .await
        .with_context(|| format!("opening {}", listing.display()))?;
    let mut lines = tokio::io::BufReader::new(file).lines();
    let mut report = ImportReport::default();
    let mut number = 0;
    while let Some(line) = lines.next_line().await? {
        number += 1;
        if line.trim().is_empty() {
            continue;
        }
        let planned = serde_json::from_str::<LegacyRecord>(&line)
            .map_err(|e| format!("not a legacy document: {e}"))
            .and_then(|record| plan(&record));
        let planned = match planned {
            Ok(planned) => planned,
            Err(message) => {
                report.failed.push(FailedLine {
                    line: number,
                    message,
                });
                continue;
            }
        };
        report.superseded.extend(
            planned
                .superseded
                .into_iter()
                .map(|(id, version)| Superseded { id, version }),
        );
        for artefact in planned.artefacts {
            match import_one(registry, dir, &artefact).await {
                Ok(true) => report.created.push(artefact.id),
                Ok(false) => report.unchanged.push(artefact.id),
                Err(error) => report.failed.push(FailedLine {
                    line: number,
                    message: format!("{}: {error:#}", artefact.id),
                }),
            }
        }
    }
    Ok(report)
}

/// Imports one artefact; `Ok(false)` when it exists already.
async fn import_one(
    registry: &Registry,
    dir: &Path,
    planned: &PlannedArtefact,
) -> anyhow::Result<bool> {
    if registry
        .store
        .get(&planned.id, &Visibility::all())
        .await?
        .is_some()
    {
        return Ok(false);
    }
    let path = inside(dir, &planned.tarball)?;
    let file = tokio::fs::File::open(&path)
        .await
        .with_context(|| format!("tarball {} is missing", planned.tarball))?;
    let body = tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024);
    let received = receive(
        &registry.blobs,
        body,
        &registry.body_limits,
        &registry.tarball_limits,
    )
    .await
    .map_err(|e| anyhow::anyhow!("{e} {:?}", e.errors))?;
    let manifest = &received.manifest;
    let mismatch = if manifest.name != planned.package_name {
        Some(format!(
            "its package.json names `{}`, not `{}`",
            manifest.name, planned.package_name
        ))
    } else {
        planned
            .version
            .as_ref()
            .filter(|v| **v != manifest.version)
            .map(|v| {
                format!(
                    "its package.json says version {}, the legacy record {v}",
                    manifest.version
                )
            })
    };
    if let Some(why) = mismatch {
        registry.blobs.discard(received.upload).await;
        anyhow::bail!("{} does not match: {why}", planned.tarball);
    }
    registry
        .blobs
        .promote(received.upload, &received.sha256)
        .await?;
    let version = manifest.version.to_string();
    let signature = registry.signer.sign_slot(SlotFacts {
        id: &planned.id,
        architecture: NOARCH,
        kind: planned.kind,
        package_name: &planned.package_name,
        sha256: &received.sha256,
        size: received.size,
        version: &version,
        signed_at: Timestamp::now(),
    });
    let mut doc = Artefact {
        id: planned.id.clone(),
        kind: planned.kind,
        package_name: planned.package_name.clone(),
        version: version.clone(),
        licence: manifest.licence.clone(),
        description: manifest.description.clone(),
        category: planned.category.clone(),
        tarballs: BTreeMap::from([(
            NOARCH.to_owned(),
            Slot {
                sha256: received.sha256.clone(),
                size: received.size,
                version,
                uploaded_at: planned.uploaded_at,
                signature,
                attestation: None,
            },
        )]),
        origin: None,
        created_at: planned.created_at,
        updated_at: planned.data_updated_at,
        data_updated_at: planned.data_updated_at,
        revision: 0,
        seq: 0,
    };
    // The rules every stored document obeys, whichever way it comes in.
    bound_text_fields(&mut doc);
    if let Err(problems) = validate_document(&doc) {
        anyhow::bail!(
            "{} is not importable: {}",
            planned.id,
            describe_problems(&problems)
        );
    }
    match registry.store.put(doc, None).await {
        Ok(doc) => {
            registry
                .audit
                .record_system(
                    "import-legacy",
                    "artefact.import",
                    Outcome::Success,
                    Some(&doc.id),
                    format!("version {}", doc.version),
                )
                .await;
            Ok(true)
        }
        Err(StoreError::RevisionMismatch) => Ok(false),
        Err(other) => Err(other.into()),
    }
}

/// `relative` under `dir`, refusing anything that would leave it.
fn inside(dir: &Path, relative: &str) -> anyhow::Result<PathBuf> {
    let path = Path::new(relative);
    let safe = path
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
    anyhow::ensure!(
        safe && !relative.is_empty(),
        "tarball path `{relative}` leaves the export directory"
    );
    Ok(dir.join(path))
}
