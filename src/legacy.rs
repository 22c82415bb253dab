//! `reliquary import-legacy DIR`: imports a legacy export (`DIR/artefacts.jsonl` plus the
//! tarballs it names) into the unified model, through the same validation, hashing and signing
//! as an upload. Idempotent: artefacts that exist already are left alone and reported so.

use std::path::{Component, Path, PathBuf};

use anyhow::Context;
use serde::Serialize;
use tokio::io::AsyncBufReadExt;

use crate::domain::arch::NOARCH;
use crate::domain::legacy::{plan, LegacyRecord, PlannedArtefact};
use crate::domain::tarball::Manifest;
use crate::domain::visibility::Visibility;
use crate::registry::{ImportedTimes, Registry, UploadRequest};

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
    let request = UploadRequest {
        id: planned.id.clone(),
        architecture: NOARCH.to_owned(),
        kind: planned.kind,
        category: planned.category.clone(),
        force: false,
        attestation: None,
        imported: Some(ImportedTimes {
            created_at: planned.created_at,
            uploaded_at: planned.uploaded_at,
            data_updated_at: planned.data_updated_at,
        }),
    };
    let expect = |manifest: &Manifest| {
        if manifest.name != planned.package_name {
            return Some(format!(
                "{}: its package.json names `{}`, not `{}`",
                planned.tarball, manifest.name, planned.package_name
            ));
        }
        planned
            .version
            .as_ref()
            .filter(|v| **v != manifest.version)
            .map(|v| {
                format!(
                    "{}: its package.json says version {}, the legacy record {v}",
                    planned.tarball, manifest.version
                )
            })
    };
    match registry.import_slot(request, body, expect).await {
        Ok(uploaded) => Ok(uploaded.created),
        // Published since the check above: what is there now stays.
        Err(error) if error.status == axum::http::StatusCode::CONFLICT => Ok(false),
        Err(error) => Err(anyhow::anyhow!("{error} {:?}", error.errors)),
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
