//! One sync pass over a remote: pull the peer's change feed from the cursor, apply each change,
//! and advance the cursor only after a whole page is applied — a crash mid-page repeats work
//! but never skips it.
//!
//! Everything a peer sends is untrusted input. Each item passes the same validation as an
//! upload, each slot's signature must verify with a key pinned for its origin *through this
//! remote* and say what the document says, and each new slot's bytes are read from the peer and
//! hashed, whatever is stored locally already. An item that fails is skipped (`sync.invalid`)
//! and the pass goes on; only failing to talk to the peer (a timeout, a broken transfer, a page
//! too large or going nowhere) ends a pass, leaving the cursor where it was.

use std::collections::BTreeMap;

use reliquary_client::archive::truncate_chars;
use reliquary_client::jws::{verify_slot, verify_slot_of};
use reliquary_client::types::{
    Artefact, BlobRef, Change, InvalidItem, Origin, SyncSummary, Timestamp, Tombstone,
    MAX_LISTED_INVALID,
};
use reliquary_client::Client;
use serde::Deserialize;
use serde_json::Value;

use super::keyring::KeyRing;
use super::SyncContext;
use crate::audit::{bounded_detail, Outcome};
use crate::domain::document::{bound_text_fields, describe_problems, validate_document};
use crate::domain::id::validate_id;
use crate::domain::lifecycle::{retain_history, trim_history};
use crate::domain::visibility::Visibility;
use crate::store::{RemoteRecord, StoreError};
use crate::upload::receive;

/// Changes per page pulled from a peer; a page with more is refused.
const PAGE: usize = 100;
/// The largest page read from a peer; the read stops there.
const MAX_PAGE_BYTES: usize = 16 << 20;
/// A pass yields after this many pages (the worker starts the next one at once), so that a
/// peer with an endless feed cannot hold a pass forever.
const MAX_PAGES_PER_PASS: usize = 1000;
/// Attestation bundles are small JSON documents (the upload limit).
const MAX_ATTESTATION_BYTES: usize = 64 * 1024;

/// What one change did.
enum Applied {
    Mirrored(u64),
    Deleted,
    Conflict,
    Skipped,
    /// Refused: it failed validation or verification. The pass goes on.
    Invalid(String),
}

/// Why mirroring one slot's bytes failed: the peer's fault for this item, or the transfer's.
enum BlobFailure {
    Invalid(String),
    Transfer(PassError),
}

/// Why a pass stopped before its end; the cursor stays where the last applied page left it.
/// (A typed error, not `anyhow`: `POST /remotes/{name}/sync` answers with it.)
#[derive(Debug, thiserror::Error)]
pub enum PassError {
    /// The peer could not be reached, timed out, or sent what no pass can go on from.
    #[error("{0}")]
    Stopped(String),
    /// This registry's metadata store failed.
    #[error("metadata store: {0}")]
    Store(#[from] StoreError),
    /// This registry's blob store failed.
    #[error("blob store: {0}")]
    Blobs(#[from] object_store::Error),
}

impl PassError {
    fn stopped(why: impl std::fmt::Display) -> Self {
        Self::Stopped(why.to_string())
    }

    /// The same error, saying which item it stopped at.
    fn at_item(self, id: &str, seq: Option<i64>) -> Self {
        match self {
            Self::Stopped(why) => Self::Stopped(format!(
                "applying `{}` (seq {}): {why}",
                truncate_chars(id, 100),
                seq.unwrap_or_default()
            )),
            other => other,
        }
    }
}

impl SyncContext {
    /// Runs one pass; with `wait`, the first page long-polls the peer.
    pub async fn sync_pass(
        &self,
        remote: &RemoteRecord,
        wait: Option<u64>,
    ) -> Result<SyncSummary, PassError> {
        let client = Client::builder(&remote.config.url)
            .token(remote.token.clone())
            .timeout(self.peer_timeout)
            .header_timeout(self.peer_timeout)
            .idle_timeout(self.peer_timeout)
            .no_redirects()
            .build()
            .map_err(PassError::stopped)?;
        let remotes = self.remotes.list_remotes().await?;
        let ring = KeyRing::build(self.signer.registry(), &remotes);
        let mut state = remote.state.clone();
        let mut summary = SyncSummary::default();
        let mut wait = wait;
        let mut pages = 0;
        let outcome = loop {
            if pages == MAX_PAGES_PER_PASS {
                break Ok(());
            }
            pages += 1;
            let page = match client
                .changes(state.cursor, PAGE, wait.take(), MAX_PAGE_BYTES)
                .await
            {
                Ok(page) => page,
                Err(error) => {
                    break Err(PassError::stopped(format!(
                        "reading the peer's change feed: {}",
                        with_causes(&error)
                    )))
                }
            };
            if page.items.len() > PAGE {
                break Err(PassError::stopped(format!(
                    "the peer answered {} changes to a request for at most {PAGE}",
                    page.items.len()
                )));
            }
            let mut highest = state.cursor;
            let mut failed = None;
            for item in &page.items {
                let seq = item.get("seq").and_then(Value::as_i64);
                highest = highest.max(seq.unwrap_or(i64::MIN));
                let applied = match Change::deserialize(item) {
                    Ok(change) => self.apply(remote, &client, &ring, &change).await,
                    Err(error) => Ok(Applied::Invalid(format!(
                        "not an artefact document or tombstone: {error}"
                    ))),
                };
                match applied {
                    Ok(Applied::Mirrored(bytes)) => {
                        summary.mirrored += 1;
                        summary.bytes += bytes;
                    }
                    Ok(Applied::Deleted) => summary.deleted += 1,
                    Ok(Applied::Conflict) => summary.conflicts += 1,
                    Ok(Applied::Skipped) => summary.skipped += 1,
                    Ok(Applied::Invalid(reason)) => {
                        let id = item.get("id").and_then(Value::as_str);
                        self.refuse_item(remote, &mut summary, id, seq, reason)
                            .await;
                    }
                    Err(error) => {
                        let id = item.get("id").and_then(Value::as_str).unwrap_or("?");
                        failed = Some(error.at_item(id, seq));
                        break;
                    }
                }
            }
            if let Some(error) = failed {
                break Err(error);
            }
            if page.has_more && highest <= state.cursor {
                break Err(PassError::stopped(format!(
                    "the peer says more changes follow seq {} but sent none past it; the pass stops rather than ask forever",
                    state.cursor
                )));
            }
            state.cursor = if page.has_more {
                highest
            } else {
                state.cursor.max(page.last_seq).max(highest)
            };
            state.peer_last_seq = page.last_seq;
            self.remotes.set_remote_state(&remote.name, &state).await?;
            if !page.has_more {
                break Ok(());
            }
        };
        let now = self.clock.now();
        state.last_sync_at = Some(now);
        self.metrics
            .sync_pass(&remote.name, &summary, &state, outcome.is_ok());
        match &outcome {
            Ok(()) => {
                state.last_success_at = Some(now);
                // A pass that refused items succeeded, but the operator should see why.
                state.last_error = summary.invalid.first().map(|first| {
                    bounded_detail(format!(
                        "{} item(s) refused as invalid; first: `{}`: {}",
                        summary.invalid.len(),
                        first.id.as_deref().unwrap_or("?"),
                        first.reason
                    ))
                });
            }
            Err(error) => {
                let text = bounded_detail(error.to_string());
                state.last_error = Some(text.clone());
                self.audit
                    .record_sync(&remote.name, "sync.error", Outcome::Invalid, None, text)
                    .await;
            }
        }
        self.remotes.set_remote_state(&remote.name, &state).await?;
        summary.cursor = state.cursor;
        outcome.map(|()| summary)
    }

    /// Counts, lists and audits one refused item.
    async fn refuse_item(
        &self,
        remote: &RemoteRecord,
        summary: &mut SyncSummary,
        id: Option<&str>,
        seq: Option<i64>,
        reason: String,
    ) {
        let reason = bounded_detail(reason);
        // Only a valid id is named as the artefact: an invalid one is not ours to index.
        let valid_id = id.filter(|id| validate_id(id).is_ok());
        tracing::warn!(remote = %remote.name, id = ?id.map(|i| truncate_chars(i, 100)), %reason, "refused a mirrored item");
        self.audit
            .record_sync(
                &remote.name,
                "sync.invalid",
                Outcome::Invalid,
                valid_id,
                match (valid_id, id) {
                    (None, Some(id)) => format!("id {:?}: {reason}", truncate_chars(id, 100)),
                    _ => reason.clone(),
                },
            )
            .await;
        summary.skipped += 1;
        if summary.invalid.len() < MAX_LISTED_INVALID {
            summary.invalid.push(InvalidItem {
                id: id.map(|i| truncate_chars(i, 214).to_owned()),
                seq,
                reason,
            });
        }
    }

    async fn apply(
        &self,
        remote: &RemoteRecord,
        client: &Client,
        ring: &KeyRing,
        change: &Change,
    ) -> Result<Applied, PassError> {
        match change {
            Change::Artefact(doc) => self.apply_artefact(remote, client, ring, doc).await,
            Change::Deleted(tombstone) => self.apply_tombstone(remote, tombstone).await,
        }
    }

    async fn apply_artefact(
        &self,
        remote: &RemoteRecord,
        client: &Client,
        ring: &KeyRing,
        offered: &Artefact,
    ) -> Result<Applied, PassError> {
        let config = &remote.config;
        let mut doc = offered.clone();
        // Free text is cut, not refused: it is unsigned, and older peers stored it uncut.
        bound_text_fields(&mut doc);
        if let Err(problems) = validate_document(&doc) {
            return Ok(Applied::Invalid(describe_problems(&problems)));
        }
        let wanted = Visibility {
            releases_only: true,
            id_prefix: config.allowed_name_prefix.clone(),
            category: config.allowed_category.clone(),
            id_patterns: None,
        };
        if !wanted.allows(&doc.id, doc.kind, doc.category.as_deref()) {
            return Ok(Applied::Skipped);
        }
        let origin_registry = doc
            .origin
            .as_ref()
            .map_or_else(|| config.registry.clone(), |o| o.registry.clone());
        if origin_registry == self.signer.registry() {
            // Our own artefact coming back through a peer: never mirrored back (no ping-pong).
            return Ok(Applied::Skipped);
        }
        let local = self.artefacts.get(&doc.id, &Visibility::all()).await?;
        if let Some(local) = &local {
            let owner = local.origin.as_ref().map(|o| o.remote.as_str());
            if owner != Some(remote.name.as_str()) {
                let why = match owner {
                    None => "a local artefact with this id exists".to_owned(),
                    Some(other) => format!("already mirrored through remote `{other}`"),
                };
                self.audit
                    .record_sync(
                        &remote.name,
                        "sync.conflict",
                        Outcome::Conflict,
                        Some(&doc.id),
                        why,
                    )
                    .await;
                return Ok(Applied::Conflict);
            }
        }
        let keys = match ring.keys_for(&remote.name, &origin_registry) {
            Ok(keys) => keys,
            Err(why) => return Ok(Applied::Invalid(why)),
        };
        let wanted_slots: Vec<&String> = doc
            .tarballs
            .keys()
            .filter(|arch| {
                config
                    .architectures
                    .as_ref()
                    .is_none_or(|only| only.contains(arch))
            })
            .collect();
        for arch in &wanted_slots {
            let slot = &doc.tarballs[*arch];
            if slot.size > self.body_limits.max_bytes {
                return Ok(Applied::Invalid(format!(
                    "slot `{arch}` is {} bytes, over this registry's upload maximum of {}",
                    slot.size, self.body_limits.max_bytes
                )));
            }
            if let Err(why) = verify_slot(keys, &doc, arch, Some(&origin_registry)) {
                return Ok(Applied::Invalid(format!("slot `{arch}`: {why}")));
            }
        }

        let mut tarballs = BTreeMap::new();
        let mut downloaded = 0;
        for arch in wanted_slots {
            let mut slot = doc.tarballs[arch].clone();
            let mine = local.as_ref().and_then(|l| l.tarballs.get(arch));
            // Bytes already read from this peer for this exact slot need no second download;
            // anything else is read from the peer, even if a blob with that hash is stored.
            let unchanged =
                mine.is_some_and(|m| m.sha256 == slot.sha256 && m.signature == slot.signature);
            if unchanged {
                slot.attestation = mine.and_then(|m| m.attestation.clone());
            } else {
                match self
                    .mirror_blob(
                        client,
                        &doc.id,
                        arch,
                        &doc.package_name,
                        &slot.version,
                        &slot.sha256,
                        slot.size,
                    )
                    .await
                {
                    Ok(()) => downloaded += slot.size,
                    Err(BlobFailure::Invalid(why)) => return Ok(Applied::Invalid(why)),
                    Err(BlobFailure::Transfer(error)) => return Err(error),
                }
                slot.attestation = match &slot.attestation {
                    Some(wanted) => {
                        self.mirror_attestation(client, &doc.id, arch, wanted)
                            .await?
                    }
                    None => None,
                };
            }
            // The origin's signature, byte for byte: consumers verify against the origin's key.
            tarballs.insert(arch.clone(), slot);
        }
        if tarballs.is_empty() {
            return Ok(Applied::Skipped);
        }
        // What a history entry's signature must name: this artefact's id, kind and package.
        let doc_identity = Artefact {
            tarballs: BTreeMap::new(),
            history: BTreeMap::new(),
            ..doc.clone()
        };
        let mut mirrored = Artefact {
            tarballs,
            origin: Some(Origin {
                registry: origin_registry.clone(),
                remote: remote.name.clone(),
                synced_at: self.clock.now(),
            }),
            ..doc
        };
        // The origin's history (its yanks included) travels with the document, bounded by
        // this registry's own policy and limited to the slots this remote mirrors.
        // History entries are kept only if the origin signed them for this artefact and slot:
        // a relaying peer cannot invent or alter them (nor pin a local blob from `gc` with one).
        for (arch, entries) in &mut mirrored.history {
            let probe = &doc_identity;
            entries.retain(|entry| {
                verify_slot_of(keys, probe, arch, &entry.slot, Some(&origin_registry)).is_ok()
            });
        }
        retain_history(&mut mirrored, |arch| {
            config
                .architectures
                .as_ref()
                .is_none_or(|only| only.iter().any(|a| a == arch))
        });
        trim_history(&mut mirrored, self.history_per_slot);
        if let Some(local) = &local {
            if same_content(local, &mirrored) {
                return Ok(Applied::Skipped);
            }
        }
        let expected = local.as_ref().map(|l| l.revision);
        // Audited once per change of the peer's, just before the commit (see `record_sync_once`).
        self.audit
            .record_sync_once(
                &remote.name,
                "sync.mirror",
                &mirrored.id,
                format!(
                    "version {} ({} slots)",
                    mirrored.version,
                    mirrored.tarballs.len()
                ),
                once_key(remote, offered.seq, &offered.id, expected),
            )
            .await;
        let committed = match self.artefacts.put(mirrored, expected).await {
            Err(StoreError::RevisionMismatch) => {
                return Err(PassError::stopped("the local copy changed during the pass"))
            }
            other => other?,
        };
        self.changes.changed(committed.seq);
        Ok(Applied::Mirrored(downloaded))
    }

    /// Downloads one slot from the peer into the blob store, checking it like an upload (the
    /// tarball rules) and against the announced size and sha256 before it is promoted.
    #[allow(clippy::too_many_arguments)]
    async fn mirror_blob(
        &self,
        client: &Client,
        id: &str,
        arch: &str,
        package_name: &str,
        version: &str,
        sha256: &str,
        size: u64,
    ) -> Result<(), BlobFailure> {
        let response = client.tarball(id, arch).await.map_err(|error| {
            // A peer that lists a slot and then refuses it (4xx) or sends us elsewhere (3xx,
            // never followed) has nothing to offer for this item; any later change to it comes
            // with a higher seq. Anything else may pass.
            let refused = error
                .status()
                .is_some_and(|s| s.is_client_error() || s.is_redirection());
            let why = format!("downloading slot `{arch}`: {}", with_causes(&error));
            if refused {
                BlobFailure::Invalid(why)
            } else {
                BlobFailure::Transfer(PassError::Stopped(why))
            }
        })?;
        let body = response.bytes_stream();
        // The announced size is the cap: a peer cannot push more than it declared.
        let limits = crate::upload::BodyLimits {
            max_bytes: size.max(1),
            idle_timeout: self.peer_timeout,
        };
        let received = receive(&self.blobs, body, &limits, &self.tarball_limits)
            .await
            .map_err(|e| {
                let why = format!("slot `{arch}`: {e}");
                match e.status.as_u16() {
                    413 | 422 => BlobFailure::Invalid(why),
                    _ => BlobFailure::Transfer(PassError::Stopped(why)),
                }
            })?;
        // What the bytes say must be what the document says, as it must for an upload.
        let manifest = &received.manifest;
        let version_matches = semver::Version::parse(version)
            .is_ok_and(|v| v.cmp_precedence(&manifest.version) == std::cmp::Ordering::Equal);
        if manifest.name != package_name || !version_matches {
            self.blobs.discard(received.upload).await;
            return Err(BlobFailure::Invalid(format!(
                "slot `{arch}`'s package.json says {} {}, but the document says {package_name} {version}",
                manifest.name, manifest.version
            )));
        }
        if received.sha256 != sha256 || received.size != size {
            self.blobs.discard(received.upload).await;
            return Err(BlobFailure::Invalid(format!(
                "slot `{arch}` arrived as {} bytes with sha256 {}, but the peer announced {size} bytes with sha256 {sha256}",
                received.size, received.sha256
            )));
        }
        self.blobs
            .promote(received.upload, sha256)
            .await
            .map_err(|e| BlobFailure::Transfer(PassError::Blobs(e)))?;
        Ok(())
    }

    /// Copies a slot's attestation bundle from the peer, checked against its announced digest;
    /// one that cannot be had is dropped (it is unsigned provenance, not the artefact).
    async fn mirror_attestation(
        &self,
        client: &Client,
        id: &str,
        arch: &str,
        wanted: &BlobRef,
    ) -> Result<Option<BlobRef>, PassError> {
        let Ok(bundle) = client.attestation(id, arch, MAX_ATTESTATION_BYTES).await else {
            return Ok(None);
        };
        let stored = self.blobs.put_attestation(bundle.into()).await?;
        Ok((stored.sha256 == wanted.sha256).then_some(stored))
    }

    async fn apply_tombstone(
        &self,
        remote: &RemoteRecord,
        tombstone: &Tombstone,
    ) -> Result<Applied, PassError> {
        if let Err(why) = validate_id(&tombstone.id) {
            return Ok(Applied::Invalid(format!("tombstone: {why}")));
        }
        let Some(local) = self
            .artefacts
            .get(&tombstone.id, &Visibility::all())
            .await?
        else {
            return Ok(Applied::Skipped);
        };
        if local.origin.as_ref().map(|o| o.remote.as_str()) != Some(remote.name.as_str()) {
            return Ok(Applied::Skipped);
        }
        self.audit
            .record_sync_once(
                &remote.name,
                "sync.delete",
                &local.id,
                "deleted at the origin".into(),
                once_key(remote, tombstone.seq, &local.id, Some(local.revision)),
            )
            .await;
        match self.artefacts.delete(&local.id, local.revision).await {
            Ok(gone) => self.changes.changed(gone.seq),
            Err(StoreError::NotFound) => return Ok(Applied::Skipped),
            Err(other) => return Err(other.into()),
        }
        Ok(Applied::Deleted)
    }
}

/// What makes a sync audit entry unique: the local write it records — this remote (as created,
/// so a remote deleted and added again starts afresh), the artefact, the local revision it
/// replaces — and the peer's change it applies. A replica that takes over a pass and applies
/// the same change to the same revision shares the key; any other write has its own, whatever
/// seqs the peer reuses.
fn once_key(remote: &RemoteRecord, peer_seq: i64, id: &str, replaces: Option<i64>) -> String {
    let replaces = replaces.map_or_else(|| "new".to_owned(), |r| format!("r{r}"));
    format!(
        "{}@{}#{peer_seq}:{id}:{replaces}",
        remote.name,
        remote.config.created_at.millis()
    )
}

/// An error and every cause under it, `: `-separated: "timed out" is usually a cause, not the
/// error's own text.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let more = inner.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        cause = inner.source();
    }
    text
}

/// Whether two mirrored documents say the same thing (bookkeeping fields aside).
fn same_content(a: &Artefact, b: &Artefact) -> bool {
    let strip = |doc: &Artefact| Artefact {
        revision: 0,
        seq: 0,
        origin: doc.origin.as_ref().map(|o| Origin {
            synced_at: Timestamp::from_millis(0),
            ..o.clone()
        }),
        ..doc.clone()
    };
    strip(a) == strip(b)
}
