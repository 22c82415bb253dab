//! The upload rules of `api.md`, in their order, and how an accepted upload changes a document.

use reliquary_client::types::{Artefact, Kind, Slot, Timestamp};
use semver::Version;

use super::lifecycle::{retire_slot, yank_for};
use super::refusal::Refusal;
use super::tarball::Manifest;

/// Everything about one upload that the rules look at.
#[derive(Clone, Debug)]
pub struct UploadIntent<'a> {
    pub id: &'a str,
    pub architecture: &'a str,
    pub kind: Kind,
    pub category: Option<&'a str>,
    /// `?force=true` from an admin: overrides `version_yanked`, `version_exists` and
    /// `version_not_newer`.
    pub force: bool,
    pub sha256: &'a str,
    pub size: u64,
    pub manifest: &'a Manifest,
}

/// What an upload that passed the rules does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Decision {
    /// The slot already holds these exact bytes: answer 200 and change nothing (safe CI retries).
    Unchanged,
    /// Replace (or create) the slot.
    Write,
}

/// Mirrored artefacts are read-only here: every local write (upload, patch, rollback) asks this.
pub fn check_local(doc: &Artefact) -> Result<(), Refusal> {
    match &doc.origin {
        Some(origin) => Err(Refusal::conflict(
            "artefact_mirrored",
            format!(
                "`{}` is mirrored from registry `{}` through remote `{}` and is read-only here; change it at the origin instead.",
                doc.id, origin.registry, origin.remote
            ),
        )),
        None => Ok(()),
    }
}

/// The rules that need only the document and the requested kind, so they can be checked before
/// a possibly large body is read: mirrored artefacts are read-only and the kind is fixed.
pub fn check_writable(doc: &Artefact, kind: Kind) -> Result<(), Refusal> {
    check_local(doc)?;
    if doc.kind != kind {
        return Err(Refusal::conflict(
            "kind_mismatch",
            format!(
                "`{}` is a {} artefact; an upload with kind={} cannot change that.",
                doc.id, doc.kind, kind
            ),
        ));
    }
    Ok(())
}

/// Applies the rules in order; `existing` is the current document, if any.
pub fn decide(existing: Option<&Artefact>, intent: &UploadIntent<'_>) -> Result<Decision, Refusal> {
    let Some(doc) = existing else {
        return Ok(Decision::Write);
    };
    check_writable(doc, intent.kind)?;
    if doc.package_name != intent.manifest.name {
        return Err(Refusal::conflict(
            "package_mismatch",
            format!(
                "`{}` holds package `{}`, but this tarball's package.json names `{}`.",
                doc.id, doc.package_name, intent.manifest.name
            ),
        ));
    }
    let slot = doc.tarballs.get(intent.architecture);
    if slot.is_some_and(|slot| slot.sha256 == intent.sha256) {
        return Ok(Decision::Unchanged);
    }
    if !intent.force {
        // A CI retry must not undo a rollback, in this slot or a new one.
        let version = intent.manifest.version.to_string();
        if let Some((entry, yank)) = yank_for(doc, intent.architecture, &version) {
            return Err(Refusal::conflict(
                "version_yanked",
                format!(
                    "Version {} of `{}` was yanked at {} ({}); publish a new version (an admin may override with force=true).",
                    entry.slot.version, doc.id, yank.at, yank.reason
                ),
            ));
        }
    }
    let Some(slot) = slot else {
        return Ok(Decision::Write);
    };
    if doc.kind == Kind::Release && !intent.force {
        // A legacy slot version that is not semver counts as older than anything valid.
        let current = Version::parse(&slot.version).ok();
        let new = &intent.manifest.version;
        // Semver precedence, as npm compares: build metadata does not make another version
        // (`1.0.0+evil` is 1.0.0), so it cannot be a second identity for a release.
        let precedence = current.as_ref().map(|current| new.cmp_precedence(current));
        if precedence == Some(std::cmp::Ordering::Equal) {
            return Err(Refusal::conflict(
                "version_exists",
                format!(
                    "Slot `{}` of `{}` already holds version {} with other bytes; bump the version (releases are immutable per version).",
                    intent.architecture, doc.id, new
                ),
            ));
        }
        if precedence == Some(std::cmp::Ordering::Less) {
            return Err(Refusal::conflict(
                "version_not_newer",
                format!(
                    "Slot `{}` of `{}` holds version {}; {} is not newer.",
                    intent.architecture, doc.id, slot.version, new
                ),
            ));
        }
    }
    Ok(Decision::Write)
}

/// The document after writing `slot` into `intent.architecture`; the slot it replaces goes to
/// the head of that slot's history (trimmed by the caller). The store assigns `revision` and
/// `seq` when it commits; `category` is taken only when the artefact is created.
pub fn apply_upload(
    existing: Option<Artefact>,
    intent: &UploadIntent<'_>,
    slot: Slot,
    now: Timestamp,
) -> Artefact {
    let manifest = intent.manifest;
    let mut doc = existing.unwrap_or_else(|| Artefact {
        id: intent.id.to_owned(),
        kind: intent.kind,
        package_name: manifest.name.clone(),
        version: String::new(),
        licence: None,
        description: None,
        category: intent.category.map(str::to_owned),
        tarballs: Default::default(),
        origin: None,
        deprecated: None,
        history: Default::default(),
        created_at: now,
        updated_at: now,
        data_updated_at: now,
        revision: 0,
        seq: 0,
    });
    doc.version = manifest.version.to_string();
    doc.licence = manifest.licence.clone();
    doc.description = manifest.description.clone();
    if let Some(replaced) = doc.tarballs.insert(intent.architecture.to_owned(), slot) {
        retire_slot(&mut doc, intent.architecture, replaced, now);
    }
    doc.updated_at = now;
    doc.data_updated_at = now;
    super::document::bound_text_fields(&mut doc);
    doc
}

#[cfg(test)]
mod tests {
    use super::*;
    use reliquary_client::types::Origin;

    fn manifest(name: &str, version: &str) -> Manifest {
        Manifest {
            name: name.into(),
            version: Version::parse(version).unwrap(),
            licence: Some("MIT".into()),
            description: None,
        }
    }

    fn intent<'a>(manifest: &'a Manifest, sha256: &'a str, kind: Kind) -> UploadIntent<'a> {
        UploadIntent {
            id: "acme@1",
            architecture: "x64",
            kind,
            category: None,
            force: false,
            sha256,
            size: 10,
            manifest,
        }
    }

    fn doc_with_slot(kind: Kind, version: &str, sha256: &str) -> Artefact {
        let m = manifest("acme", version);
        let i = intent(&m, sha256, kind);
        let slot = Slot {
            sha256: sha256.into(),
            size: 10,
            version: version.into(),
            uploaded_at: Timestamp::from_millis(0),
            signature: String::new(),
            attestation: None,
            published_by: None,
        };
        apply_upload(None, &i, slot, Timestamp::from_millis(0))
    }

    fn code(result: Result<Decision, Refusal>) -> &'static str {
        result.map(|_| "ok").unwrap_or_else(|e| e.code)
    }

    #[test]
    fn rules_apply_in_order() {
        let doc = doc_with_slot(Kind::Release, "1.4.2", "aaa");
        let same = manifest("acme", "1.4.2");
        let newer = manifest("acme", "1.5.0");
        let older = manifest("acme", "1.3.9");
        let pre = manifest("acme", "1.4.2-rc.1");
        let build = manifest("acme", "1.4.2+evil");
        let older_build = manifest("acme", "1.4.1+zzz");

        assert_eq!(
            decide(Some(&doc), &intent(&same, "aaa", Kind::Release)).unwrap(),
            Decision::Unchanged
        );
        assert_eq!(
            code(decide(Some(&doc), &intent(&same, "bbb", Kind::Release))),
            "version_exists"
        );
        assert_eq!(
            code(decide(Some(&doc), &intent(&older, "bbb", Kind::Release))),
            "version_not_newer"
        );
        assert_eq!(
            code(decide(Some(&doc), &intent(&pre, "bbb", Kind::Release))),
            "version_not_newer"
        );
        assert_eq!(
            code(decide(Some(&doc), &intent(&build, "bbb", Kind::Release))),
            "version_exists",
            "build metadata is not another version"
        );
        assert_eq!(
            code(decide(
                Some(&doc),
                &intent(&older_build, "bbb", Kind::Release)
            )),
            "version_not_newer"
        );
        assert_eq!(
            decide(Some(&doc), &intent(&newer, "bbb", Kind::Release)).unwrap(),
            Decision::Write
        );
        assert_eq!(
            code(decide(Some(&doc), &intent(&newer, "bbb", Kind::Branch))),
            "kind_mismatch"
        );
        let other = manifest("other", "2.0.0");
        assert_eq!(
            code(decide(Some(&doc), &intent(&other, "bbb", Kind::Release))),
            "package_mismatch"
        );
    }

    #[test]
    fn force_overrides_only_the_version_rules() {
        let doc = doc_with_slot(Kind::Release, "1.4.2", "aaa");
        let older = manifest("acme", "1.0.0");
        let mut forced = intent(&older, "bbb", Kind::Release);
        forced.force = true;
        assert_eq!(decide(Some(&doc), &forced).unwrap(), Decision::Write);
        forced.kind = Kind::Branch;
        assert_eq!(code(decide(Some(&doc), &forced)), "kind_mismatch");
    }

    #[test]
    fn branches_accept_any_version_and_new_slots_are_free() {
        let doc = doc_with_slot(Kind::Branch, "1.4.2", "aaa");
        let older = manifest("acme", "0.0.1");
        assert_eq!(
            decide(Some(&doc), &intent(&older, "bbb", Kind::Branch)).unwrap(),
            Decision::Write
        );
        let release = doc_with_slot(Kind::Release, "9.0.0", "aaa");
        let mut other_arch = intent(&older, "bbb", Kind::Release);
        other_arch.architecture = "arm64";
        assert_eq!(
            decide(Some(&release), &other_arch).unwrap(),
            Decision::Write
        );
    }

    #[test]
    fn a_yanked_version_is_refused_unless_forced() {
        let mut doc = doc_with_slot(Kind::Release, "1.0.0", "aaa");
        let m = manifest("acme", "1.1.0");
        let slot = Slot {
            sha256: "bbb".into(),
            size: 3,
            version: "1.1.0".into(),
            uploaded_at: Timestamp::from_millis(5),
            signature: String::new(),
            attestation: None,
            published_by: None,
        };
        doc = apply_upload(
            Some(doc),
            &intent(&m, "bbb", Kind::Release),
            slot,
            Timestamp::from_millis(5),
        );
        assert_eq!(
            doc.history["x64"][0].slot.sha256, "aaa",
            "the replaced slot is history"
        );
        let back = crate::domain::lifecycle::RollbackIntent {
            version: "1.0.0",
            architecture: None,
            reason: "bad",
            may_unyank: false,
        };
        crate::domain::lifecycle::rollback(&mut doc, &back, Timestamp::from_millis(6)).unwrap();
        assert_eq!(
            code(decide(Some(&doc), &intent(&m, "bbb", Kind::Release))),
            "version_yanked",
            "the CI retry of the yanked build"
        );
        assert_eq!(
            code(decide(Some(&doc), &intent(&m, "ccc", Kind::Release))),
            "version_yanked",
            "other bytes under the yanked version"
        );
        let mut forced = intent(&m, "ccc", Kind::Release);
        forced.force = true;
        assert_eq!(decide(Some(&doc), &forced).unwrap(), Decision::Write);
        let newer = manifest("acme", "1.1.1");
        assert_eq!(
            decide(Some(&doc), &intent(&newer, "ddd", Kind::Release)).unwrap(),
            Decision::Write
        );
        let mut new_slot = intent(&m, "eee", Kind::Release);
        new_slot.architecture = "arm64";
        assert_eq!(
            code(decide(Some(&doc), &new_slot)),
            "version_yanked",
            "not under another architecture either"
        );
    }

    #[test]
    fn mirrored_artefacts_are_read_only() {
        let mut doc = doc_with_slot(Kind::Release, "1.0.0", "aaa");
        doc.origin = Some(Origin {
            registry: "prod".into(),
            remote: "prod".into(),
            synced_at: Timestamp::from_millis(0),
        });
        let m = manifest("acme", "2.0.0");
        assert_eq!(
            code(decide(Some(&doc), &intent(&m, "bbb", Kind::Release))),
            "artefact_mirrored"
        );
    }

    #[test]
    fn apply_keeps_creation_fields_and_updates_the_rest() {
        let doc = doc_with_slot(Kind::Release, "1.0.0", "aaa");
        let m = manifest("acme", "1.1.0");
        let mut i = intent(&m, "bbb", Kind::Release);
        i.architecture = "arm64";
        i.category = Some("ignored-on-update");
        let slot = Slot {
            sha256: "bbb".into(),
            size: 3,
            version: "1.1.0".into(),
            uploaded_at: Timestamp::from_millis(5),
            signature: String::new(),
            attestation: None,
            published_by: None,
        };
        let after = apply_upload(Some(doc.clone()), &i, slot, Timestamp::from_millis(5));
        assert_eq!(after.created_at, doc.created_at);
        assert_eq!(after.category, None);
        assert_eq!(after.version, "1.1.0");
        assert_eq!(after.tarballs.len(), 2);
        assert_eq!(after.data_updated_at, Timestamp::from_millis(5));
    }
}
