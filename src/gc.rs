//! `reliquary gc`: collects blobs that no slot references any more, and abandoned uploads.
//!
//! Mark and sweep across runs, so that nothing in use is ever collected:
//! - a blob found unreferenced is **marked** (the time is kept in the metadata store);
//! - a later run **deletes** it only if it is still unreferenced, its mark is older than the
//!   grace period, and the blob itself was not written within the grace period either (a new
//!   upload of the same bytes rewrites the blob, which refreshes that time);
//! - a blob referenced again loses its mark.
//!
//! A download started while the blob was referenced has the whole grace period to finish.
//! Temporary uploads older than the grace period belong to uploads that died: deleted.

use std::collections::HashSet;
use std::time::Duration;

use chrono::Utc;
use reliquary_client::types::Timestamp;
use serde::Serialize;

use crate::blobs::BlobKey;
use crate::blobs::Blobs;
use crate::store::{ArtefactStore, GcStore};

#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GcReport {
    pub dry_run: bool,
    /// Unreferenced blobs deleted (or, with `--dry-run`, that would be).
    pub removed_blobs: Vec<String>,
    /// Unreferenced blobs marked now; a run after the grace period removes them.
    pub newly_marked: Vec<String>,
    /// Temporary uploads older than the grace period, deleted.
    pub removed_uploads: Vec<String>,
    pub referenced: usize,
}

/// Collects with only what collection needs: the referenced digests, the marks, the blobs.
pub async fn collect<S: ArtefactStore + GcStore + ?Sized>(
    store: &S,
    blobs: &Blobs,
    grace: Duration,
    dry_run: bool,
) -> anyhow::Result<GcReport> {
    let grace = chrono::Duration::from_std(grace)?;
    let now = Utc::now();
    let referenced: HashSet<String> = store.referenced_blobs().await?.into_iter().collect();
    let marks = store.gc_marks().await?;
    let mut report = GcReport {
        dry_run,
        referenced: referenced.len(),
        ..Default::default()
    };
    let mut clear = Vec::new();
    for (key, modified) in blobs.list_with_times("sha256").await? {
        let Some(digest) = key.strip_prefix("sha256/") else {
            continue;
        };
        if referenced.contains(digest) {
            if marks.contains_key(digest) {
                clear.push(digest.to_owned());
            }
            continue;
        }
        match marks.get(digest) {
            Some(marked) if now - marked.as_datetime() >= grace && now - modified >= grace => {
                if !dry_run {
                    blobs.delete(&BlobKey::sha256(digest)).await?;
                    clear.push(digest.to_owned());
                }
                report.removed_blobs.push(digest.to_owned());
            }
            Some(_) => {}
            None => report.newly_marked.push(digest.to_owned()),
        }
    }
    for (key, modified) in blobs.list_with_times("uploads").await? {
        if now - modified >= grace {
            if !dry_run {
                blobs.delete_listed(&key).await?;
            }
            report.removed_uploads.push(key);
        }
    }
    if !dry_run {
        store
            .mark_unreferenced(&report.newly_marked, Timestamp::now())
            .await?;
        store.clear_marks(&clear).await?;
    }
    Ok(report)
}
