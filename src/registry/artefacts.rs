//! Artefact operations: read, upload (the commit protocol), list, patch and delete.

use std::sync::Arc;

use bytes::Bytes;
use futures::Stream;
use reliquary_client::types::{Artefact, Deprecation, PublishedBy, Slot, Tombstone};

use super::documents::Served;
use super::{ArtefactPatch, Edit, Registry, UploadRequest, Uploaded, CAS_ATTEMPTS};
use crate::audit::{Outcome, Target};
use crate::auth::Caller;
use crate::blobs::{BlobKey, BlobStream};
use crate::domain::document::{bound_text_fields, validate_document};
use crate::domain::lifecycle::{retire_slot, trim_history};
use crate::domain::rules::{
    apply_upload, check_local, check_writable, decide, Decision, UploadIntent,
};
use crate::domain::tarball::Manifest;
use crate::domain::visibility::Visibility;
use crate::error::{Error, Result};
use crate::signing::SlotFacts;
use crate::store::StoreError;
use crate::upload::{receive, Received};

impl Registry {
    /// One document, as the caller may see it.
    pub async fn artefact(&self, caller: &Caller, id: &str) -> Result<Artefact> {
        let visibility = caller.visibility(self.anonymous_read)?;
        self.store
            .get(id, &visibility)
            .await?
            .ok_or_else(|| Error::artefact_not_found(id))
    }

    /// One document as served, encoded: from the cache when it still holds the current
    /// revision (one small store read), else read, encoded and kept.
    pub async fn served(&self, caller: &Caller, id: &str) -> Result<Served> {
        let visibility = caller.visibility(self.anonymous_read)?;
        let revision = self
            .store
            .revision(id, &visibility)
            .await?
            .ok_or_else(|| Error::artefact_not_found(id))?;
        if let Some(served) = self.documents.get(id, revision) {
            return Ok(served);
        }
        let doc = self
            .store
            .get(id, &visibility)
            .await?
            .ok_or_else(|| Error::artefact_not_found(id))?;
        let served = Served::new(doc);
        self.documents.keep(&served);
        Ok(served)
    }

    /// The slot a download of `architecture` is served from: exact, else `noarch`.
    pub async fn resolve_tarball(
        &self,
        caller: &Caller,
        id: &str,
        architecture: &str,
    ) -> Result<(Arc<Artefact>, String, Slot)> {
        let doc = self.served(caller, id).await?.doc;
        let (resolved, slot) = doc.resolve_slot(architecture).ok_or_else(|| {
            let slots: Vec<&str> = doc.tarballs.keys().map(String::as_str).collect();
            Error::not_found(
                "architecture_not_found",
                if slots.is_empty() {
                    format!("`{id}` has no tarball slots.")
                } else {
                    format!(
                        "`{id}` has no `{architecture}` slot and no `noarch` fallback; it has: {}.",
                        slots.join(", ")
                    )
                },
            )
        })?;
        let (resolved, slot) = (resolved.to_owned(), slot.clone());
        Ok((doc, resolved, slot))
    }

    /// The provenance bundle stored with one slot (exact architecture, no fallback).
    pub async fn attestation(
        &self,
        caller: &Caller,
        id: &str,
        architecture: &str,
    ) -> Result<Bytes> {
        let doc = self.artefact(caller, id).await?;
        let reference = doc
            .tarballs
            .get(architecture)
            .and_then(|slot| slot.attestation.as_ref())
            .ok_or_else(|| {
                Error::not_found(
                    "attestation_not_found",
                    format!("Slot `{architecture}` of `{id}` has no attestation."),
                )
            })?;
        Ok(self.blobs.read_attestation(&reference.sha256).await?)
    }

    /// Where to send a download instead of streaming it: a presigned URL of the blob, when
    /// `--storage-redirect` is on. Called after every check (auth, the federation filter, slot
    /// resolution, `304`). Mirror keys are always streamed to: a mirror never follows a
    /// redirect, because the bytes must come from the peer it pinned.
    pub async fn download_redirect(
        &self,
        caller: &Caller,
        slot: &Slot,
        filename: &str,
    ) -> Result<Option<String>> {
        let Some(ttl) = self.storage_redirect else {
            return Ok(None);
        };
        if caller
            .key
            .as_ref()
            .is_some_and(|k| k.role == reliquary_client::types::Role::Mirror)
        {
            return Ok(None);
        }
        Ok(self
            .blobs
            .presigned_download(&slot.sha256, ttl, filename)
            .await?)
    }

    pub async fn open_blob(
        &self,
        sha256: &str,
        range: Option<std::ops::Range<u64>>,
    ) -> Result<BlobStream> {
        Ok(self.blobs.open(&BlobKey::sha256(sha256), range).await?)
    }

    /// Receives, validates and commits one slot, and audits the outcome.
    pub async fn upload<S, E>(
        &self,
        caller: &Caller,
        request: UploadRequest,
        body: S,
    ) -> Result<Uploaded>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let result = self.receive_and_commit(caller, &request, body).await;
        let target = Target::slot(&request.id, &request.architecture);
        let (action, outcome, detail) = match &result {
            Ok(uploaded) => {
                let slot = &uploaded.doc.tarballs[&request.architecture];
                (
                    "artefact.upload",
                    Outcome::Success,
                    format!(
                        "version {} sha256 {} ({} bytes)",
                        slot.version, slot.sha256, slot.size
                    ),
                )
            }
            Err(error) => match Outcome::of_error(error) {
                Some(Outcome::Denied) => {
                    ("artefact.upload_denied", Outcome::Denied, error.to_string())
                }
                Some(Outcome::Conflict) => (
                    "artefact.upload_conflict",
                    Outcome::Conflict,
                    error.to_string(),
                ),
                Some(Outcome::Invalid) => (
                    "artefact.upload_invalid",
                    Outcome::Invalid,
                    error.to_string(),
                ),
                _ => return result,
            },
        };
        if let Err(error) = &result {
            self.metrics.upload_rejected(error.code);
        }
        self.audit
            .record(caller, action, outcome, target, detail)
            .await;
        result
    }

    /// The legacy importer's way in: the same receive, validation, promotion, signing and
    /// commit as an upload, with the record's timestamps, after `expect` has compared the
    /// tarball's manifest with what the record says. Audited as `artefact.import`.
    pub async fn import_slot<S, E>(
        &self,
        request: UploadRequest,
        body: S,
        expect: impl FnOnce(&Manifest) -> Option<String>,
    ) -> Result<Uploaded>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        let received = receive(&self.blobs, body, &self.body_limits, &self.tarball_limits).await?;
        if let Some(why) = expect(&received.manifest) {
            self.blobs.discard(received.upload).await;
            return Err(Error::unprocessable(
                "legacy_mismatch",
                format!("The tarball does not match its legacy record: {why}."),
                Vec::new(),
            ));
        }
        // The importer acts for the operator: no key, so no key scopes narrow it.
        let outcome = self
            .commit_upload(&Caller::default(), &request, &received)
            .await;
        self.blobs.discard(received.upload).await;
        if let Ok(uploaded) = &outcome {
            self.audit
                .record_system(
                    "import-legacy",
                    "artefact.import",
                    Outcome::Success,
                    Some(&uploaded.doc.id),
                    format!("version {}", uploaded.doc.version),
                )
                .await;
        }
        outcome
    }

    /// The checks an upload must pass before its body is read (the caller's role and id
    /// scope, and `force`); a refusal is audited like any denied upload.
    pub async fn admit_upload(&self, caller: &Caller, request: &UploadRequest) -> Result<()> {
        let result = caller
            .require_publish(&request.id)
            .and_then(|()| caller.require_kind(&request.id, request.kind))
            .and_then(|()| {
                if request.force && !caller.is_admin() {
                    Err(Error::forbidden("`force=true` needs an admin key."))
                } else {
                    Ok(())
                }
            });
        if let Err(error) = &result {
            if Outcome::of_error(error) == Some(Outcome::Denied) {
                let target = Target::slot(&request.id, &request.architecture);
                self.audit
                    .record(
                        caller,
                        "artefact.upload_denied",
                        Outcome::Denied,
                        target,
                        error.to_string(),
                    )
                    .await;
            }
        }
        result
    }

    async fn receive_and_commit<S, E>(
        &self,
        caller: &Caller,
        request: &UploadRequest,
        body: S,
    ) -> Result<Uploaded>
    where
        S: Stream<Item = Result<Bytes, E>> + Send,
        E: std::fmt::Display,
    {
        caller.require_publish(&request.id)?;
        caller.require_kind(&request.id, request.kind)?;
        if request.force && !caller.is_admin() {
            return Err(Error::forbidden("`force=true` needs an admin key."));
        }
        // Refuse what is already certain to fail before reading a possibly large body; the
        // rules are checked again, authoritatively, at commit time.
        if let Some(doc) = self.store.get(&request.id, &Visibility::all()).await? {
            check_writable(&doc, request.kind)?;
        }
        let received = receive(&self.blobs, body, &self.body_limits, &self.tarball_limits).await?;
        let outcome = self.commit_upload(caller, request, &received).await;
        // After a promotion the temporary key is already gone; otherwise it is garbage now.
        self.blobs.discard(received.upload).await;
        outcome
    }

    fn intent<'a>(
        &self,
        request: &'a UploadRequest,
        sha256: &'a str,
        size: u64,
        manifest: &'a Manifest,
    ) -> UploadIntent<'a> {
        UploadIntent {
            id: &request.id,
            architecture: &request.architecture,
            kind: request.kind,
            category: request.category.as_deref(),
            force: request.force,
            sha256,
            size,
            manifest,
        }
    }

    /// Blob first, metadata second: the blob is promoted to its content address before the
    /// document that references it is committed, so no document ever points at a missing blob.
    async fn commit_upload(
        &self,
        caller: &Caller,
        request: &UploadRequest,
        received: &Received,
    ) -> Result<Uploaded> {
        let intent = self.intent(request, &received.sha256, received.size, &received.manifest);
        let mut promoted = false;
        let mut attestation = None;
        for _ in 0..CAS_ATTEMPTS {
            let existing = self.store.get(&request.id, &Visibility::all()).await?;
            let category = existing
                .as_ref()
                .map_or(request.category.as_deref(), |doc| doc.category.as_deref());
            caller.require_content_scopes(&received.manifest.name, category)?;
            if decide(existing.as_ref(), &intent)? == Decision::Unchanged {
                let doc = existing.expect("Unchanged implies an existing document");
                return Ok(Uploaded {
                    doc,
                    created: false,
                });
            }
            if !promoted {
                crate::faults::point("upload-before-blob");
                self.blobs
                    .promote(received.upload, &received.sha256)
                    .await?;
                attestation = match &request.attestation {
                    Some(bundle) => Some(self.blobs.put_attestation(bundle.clone()).await?),
                    None => None,
                };
                promoted = true;
            }
            let now = request
                .imported
                .map_or_else(|| self.clock.now(), |times| times.uploaded_at);
            let version = received.manifest.version.to_string();
            let signature = self.signer.sign_slot(SlotFacts {
                id: &request.id,
                architecture: &request.architecture,
                kind: existing.as_ref().map_or(request.kind, |d| d.kind),
                package_name: &received.manifest.name,
                sha256: &received.sha256,
                size: received.size,
                version: &version,
                signed_at: now,
            });
            let slot = Slot {
                sha256: received.sha256.clone(),
                size: received.size,
                version,
                uploaded_at: now,
                signature,
                attestation: attestation.clone(),
                published_by: caller.key().map(|key| PublishedBy {
                    key_id: key.id.clone(),
                    key_name: key.name.clone(),
                    oidc: key.oidc.clone(),
                }),
            };
            let expected = existing.as_ref().map(|doc| doc.revision);
            let created = existing.is_none();
            let mut doc = apply_upload(existing, &intent, slot, now);
            trim_history(&mut doc, self.history_per_slot);
            if let Some(times) = request.imported {
                if created {
                    doc.created_at = times.created_at;
                }
                doc.updated_at = times.data_updated_at;
                doc.data_updated_at = times.data_updated_at;
            }
            // The rules every stored document obeys, whichever way it comes in.
            validate_document(&doc).map_err(|problems| {
                Error::unprocessable(
                    "invalid_document",
                    "The artefact document this upload would produce fails validation.",
                    problems,
                )
            })?;
            crate::faults::point("upload-after-blob");
            match self.store.put(doc, expected).await {
                Ok(doc) => {
                    crate::faults::point("upload-after-metadata");
                    self.changed(doc.seq);
                    return Ok(Uploaded { doc, created });
                }
                Err(StoreError::RevisionMismatch) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(StoreError::RevisionMismatch.into())
    }

    pub async fn patch(&self, caller: &Caller, id: &str, patch: ArtefactPatch) -> Result<Artefact> {
        let detail = format!("{patch:?}");
        let result = self.patch_unaudited(caller, id, patch).await;
        self.audit
            .record_result(
                caller,
                "artefact.patch",
                Target::artefact(id),
                &result,
                |_| detail,
            )
            .await;
        result
    }

    async fn patch_unaudited(
        &self,
        caller: &Caller,
        id: &str,
        patch: ArtefactPatch,
    ) -> Result<Artefact> {
        caller.require_publish(id)?;
        self.edit_artefact(id, |doc| {
            check_local(doc)?;
            caller.require_kind(id, doc.kind)?;
            caller.require_content_scopes(&doc.package_name, doc.category.as_deref())?;
            if let Some(category) = &patch.category {
                doc.category = Some(category.clone()).filter(|c| !c.is_empty());
                caller.require_content_scopes(&doc.package_name, doc.category.as_deref())?;
            }
            if let Some(description) = &patch.description {
                doc.description = Some(description.clone()).filter(|d| !d.is_empty());
            }
            let now = self.clock.now();
            if let Some(message) = &patch.deprecated {
                doc.deprecated = (!message.is_empty()).then(|| Deprecation {
                    message: message.clone(),
                    at: now,
                });
            }
            bound_text_fields(doc);
            doc.updated_at = now;
            Ok(Edit::Commit)
        })
        .await
    }

    /// Deletes an artefact, leaving a tombstone for mirrors. Its blobs stay until gc.
    pub async fn delete(&self, caller: &Caller, id: &str) -> Result<Tombstone> {
        let result = self.delete_unaudited(caller, id).await;
        self.audit
            .record_result(
                caller,
                "artefact.delete",
                Target::artefact(id),
                &result,
                |t| format!("deleted at seq {}", t.seq),
            )
            .await;
        result
    }

    async fn delete_unaudited(&self, caller: &Caller, id: &str) -> Result<Tombstone> {
        caller.require_admin()?;
        for _ in 0..CAS_ATTEMPTS {
            let doc = self
                .store
                .get(id, &Visibility::all())
                .await?
                .ok_or_else(|| Error::artefact_not_found(id))?;
            match self.store.delete(id, doc.revision).await {
                Ok(tombstone) => {
                    self.changed(tombstone.seq);
                    return Ok(tombstone);
                }
                Err(StoreError::RevisionMismatch) => continue,
                Err(StoreError::NotFound) => return Err(Error::artefact_not_found(id)),
                Err(other) => return Err(other.into()),
            }
        }
        Err(StoreError::RevisionMismatch.into())
    }

    /// Removes one slot and returns what remains of the document.
    pub async fn delete_slot(
        &self,
        caller: &Caller,
        id: &str,
        architecture: &str,
    ) -> Result<Artefact> {
        let result = self.delete_slot_unaudited(caller, id, architecture).await;
        self.audit
            .record_result(
                caller,
                "artefact.delete",
                Target::slot(id, architecture),
                &result,
                |_| "deleted one slot".to_owned(),
            )
            .await;
        result
    }

    async fn delete_slot_unaudited(
        &self,
        caller: &Caller,
        id: &str,
        architecture: &str,
    ) -> Result<Artefact> {
        caller.require_admin()?;
        self.edit_artefact(id, |doc| {
            let Some(removed) = doc.tarballs.remove(architecture) else {
                return Err(Error::not_found(
                    "slot_not_found",
                    format!("`{id}` has no `{architecture}` slot."),
                ));
            };
            let now = self.clock.now();
            // A deleted slot stays in history, so a rollback can bring it back.
            retire_slot(doc, architecture, removed, now);
            trim_history(doc, self.history_per_slot);
            doc.updated_at = now;
            doc.data_updated_at = now;
            Ok(Edit::Commit)
        })
        .await
    }

    /// Reads `id`, lets `edit` change it, and commits it with a compare-and-swap on the revision
    /// read; when another write wins the race, reads it again and applies `edit` afresh.
    pub(super) async fn edit_artefact(
        &self,
        id: &str,
        mut edit: impl FnMut(&mut Artefact) -> Result<Edit> + Send,
    ) -> Result<Artefact> {
        for _ in 0..CAS_ATTEMPTS {
            let mut doc = self
                .store
                .get(id, &Visibility::all())
                .await?
                .ok_or_else(|| Error::artefact_not_found(id))?;
            if edit(&mut doc)? == Edit::Unchanged {
                return Ok(doc);
            }
            let expected = doc.revision;
            match self.store.put(doc, Some(expected)).await {
                Ok(doc) => {
                    self.changed(doc.seq);
                    return Ok(doc);
                }
                Err(StoreError::RevisionMismatch) => continue,
                Err(other) => return Err(other.into()),
            }
        }
        Err(StoreError::RevisionMismatch.into())
    }
}
