//! A release's life after upload: slot history, rollback with yank, and which branch builds
//! retention removes. Plain functions over the document; the registry commits what they return.

use std::cmp::Ordering;

use reliquary_client::types::{Artefact, HistoryEntry, HistoryItem, Kind, Slot, Timestamp, Yank};
use semver::Version;

use super::refusal::Refusal;

/// `--history-per-slot` may not exceed this: history lives in the document, which every read
/// and every mirror carries.
pub const MAX_HISTORY_PER_SLOT: usize = 100;

/// Puts `replaced` at the head of `architecture`'s history.
pub fn retire_slot(doc: &mut Artefact, architecture: &str, replaced: Slot, now: Timestamp) {
    doc.history
        .entry(architecture.to_owned())
        .or_default()
        .insert(
            0,
            HistoryEntry {
                slot: replaced,
                replaced_at: now,
                yanked: None,
            },
        );
}

/// Keeps the newest `keep` entries of each slot's history. A yanked entry outlives them (up to
/// `keep` more), because it is what refuses a CI retry of the withdrawn version.
pub fn trim_history(doc: &mut Artefact, keep: usize) {
    for entries in doc.history.values_mut() {
        let mut kept_yanked = 0;
        let mut index = 0;
        entries.retain(|entry| {
            index += 1;
            if index <= keep {
                return true;
            }
            if entry.yanked.is_some() && kept_yanked < keep {
                kept_yanked += 1;
                return true;
            }
            false
        });
    }
    doc.history.retain(|_, entries| !entries.is_empty());
}

/// Keeps the history of the architectures `wanted` says (a mirror limited to some slots).
pub fn retain_history(doc: &mut Artefact, wanted: impl Fn(&str) -> bool) {
    doc.history.retain(|arch, _| wanted(arch));
}

/// `GET /artefacts/{id}/history`: every slot's history (or one slot's), architectures in order,
/// each newest first.
pub fn history_items(doc: &Artefact, architecture: Option<&str>) -> Vec<HistoryItem> {
    doc.history
        .iter()
        .filter(|(arch, _)| architecture.is_none_or(|only| only == arch.as_str()))
        .flat_map(|(arch, entries)| {
            entries.iter().map(|entry| HistoryItem {
                architecture: arch.clone(),
                entry: entry.clone(),
            })
        })
        .collect()
}

/// Whether two version strings name one version: semver precedence where both parse (build
/// metadata is not another version), else the exact text.
pub fn same_version(a: &str, b: &str) -> bool {
    match (Version::parse(a), Version::parse(b)) {
        (Ok(a), Ok(b)) => a.cmp_precedence(&b) == Ordering::Equal,
        _ => a == b,
    }
}

/// The yank an upload to `architecture` runs into, if any. On a release, a yanked version is
/// withdrawn for good; a branch build's version rarely changes between builds, so there only
/// the exact yanked bytes are refused.
pub fn yank_for<'a>(
    doc: &'a Artefact,
    architecture: &str,
    version: &str,
    sha256: &str,
) -> Option<(&'a HistoryEntry, &'a Yank)> {
    doc.history.get(architecture)?.iter().find_map(|entry| {
        let yank = entry.yanked.as_ref()?;
        let hit = match doc.kind {
            Kind::Release => same_version(&entry.slot.version, version),
            Kind::Branch => entry.slot.sha256 == sha256,
        };
        hit.then_some((entry, yank))
    })
}

/// What a rollback asks for.
#[derive(Clone, Copy, Debug)]
pub struct RollbackIntent<'a> {
    pub version: &'a str,
    /// Only this slot; else every slot whose history holds `version`.
    pub architecture: Option<&'a str>,
    pub reason: &'a str,
}

/// Re-points every slot (or the one named) whose history holds `intent.version` at the newest
/// such entry — the exact earlier slot, signature byte for byte — and yanks what it rolls back
/// from: the slot it replaces and every history entry newer than the one reinstated. Returns
/// the architectures that changed (empty when each already held that version).
pub fn rollback(
    doc: &mut Artefact,
    intent: &RollbackIntent<'_>,
    now: Timestamp,
) -> Result<Vec<String>, Refusal> {
    let targets: Vec<(String, usize)> = doc
        .history
        .iter()
        .filter(|(arch, _)| intent.architecture.is_none_or(|only| only == arch.as_str()))
        .filter_map(|(arch, entries)| {
            entries
                .iter()
                .position(|entry| same_version(&entry.slot.version, intent.version))
                .map(|index| (arch.clone(), index))
        })
        .collect();
    if targets.is_empty() {
        let whose = intent
            .architecture
            .map_or_else(String::new, |arch| format!(" of slot `{arch}`"));
        return Err(Refusal::not_found(
            "version_not_found",
            format!(
                "No history entry{whose} of `{}` holds version {}; `GET /artefacts/{{id}}/history` lists the versions there are.",
                doc.id, intent.version
            ),
        ));
    }
    let yank = Yank {
        reason: intent.reason.to_owned(),
        at: now,
    };
    let mut changed = Vec::new();
    for (arch, index) in targets {
        let Some(entries) = doc.history.get_mut(&arch) else {
            continue;
        };
        let current = doc.tarballs.get(&arch);
        if current.is_some_and(|slot| slot.sha256 == entries[index].slot.sha256) {
            // Already served: nothing rolls back on this slot.
            continue;
        }
        let reinstated = entries.remove(index);
        for newer in &mut entries[..index] {
            newer.yanked.get_or_insert_with(|| yank.clone());
        }
        if let Some(current) = doc.tarballs.insert(arch.clone(), reinstated.slot) {
            retire_slot(doc, &arch, current, now);
            if let Some(head) = doc.history.get_mut(&arch).and_then(|h| h.first_mut()) {
                head.yanked = Some(yank.clone());
            }
        }
        changed.push(arch);
    }
    if !changed.is_empty() {
        doc.version = intent.version.to_owned();
        doc.updated_at = now;
        doc.data_updated_at = now;
    }
    Ok(changed)
}

/// Whether branch retention removes an artefact: a branch build whose bytes have not changed,
/// and that nobody downloaded, since `cutoff`. Releases are never removed by retention.
pub fn retention_due(
    kind: Kind,
    data_updated_at: Timestamp,
    last_downloaded: Option<Timestamp>,
    cutoff: Timestamp,
) -> bool {
    kind == Kind::Branch && data_updated_at < cutoff && last_downloaded.is_none_or(|at| at < cutoff)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(version: &str, sha: &str, at: i64) -> Slot {
        Slot {
            sha256: sha.into(),
            size: 1,
            version: version.into(),
            uploaded_at: Timestamp::from_millis(at),
            signature: format!("sig-{sha}"),
            attestation: None,
        }
    }

    /// An artefact whose x64 slot went through `versions` in order (the last is current).
    fn doc(kind: Kind, versions: &[&str]) -> Artefact {
        let mut doc = crate::domain::document::tests::doc();
        doc.kind = kind;
        doc.tarballs.clear();
        for (i, version) in versions.iter().enumerate() {
            let at = i64::try_from(i).unwrap();
            let new = slot(version, &format!("sha{version}"), at);
            if let Some(old) = doc.tarballs.insert("x64".into(), new) {
                retire_slot(&mut doc, "x64", old, Timestamp::from_millis(at));
            }
        }
        doc
    }

    fn versions(doc: &Artefact) -> Vec<(String, bool)> {
        doc.history["x64"]
            .iter()
            .map(|e| (e.slot.version.clone(), e.yanked.is_some()))
            .collect()
    }

    #[test]
    fn rollback_reinstates_the_exact_slot_and_yanks_what_it_leaves() {
        let mut doc = doc(Kind::Release, &["1.0.0", "1.1.0", "1.2.0", "1.3.0"]);
        let original = doc.history["x64"][1].slot.clone();
        let intent = RollbackIntent {
            version: "1.1.0",
            architecture: None,
            reason: "crashes on start",
        };
        let changed = rollback(&mut doc, &intent, Timestamp::from_millis(99)).unwrap();
        assert_eq!(changed, vec!["x64".to_owned()]);
        assert_eq!(
            doc.tarballs["x64"], original,
            "byte for byte, signature too"
        );
        assert_eq!(doc.version, "1.1.0");
        assert_eq!(doc.data_updated_at, Timestamp::from_millis(99));
        assert_eq!(
            versions(&doc),
            vec![
                ("1.3.0".into(), true),
                ("1.2.0".into(), true),
                ("1.0.0".into(), false)
            ]
        );
        assert_eq!(
            doc.history["x64"][0].yanked.as_ref().unwrap().reason,
            "crashes on start"
        );
        let yanked = yank_for(&doc, "x64", "1.2.0", "other");
        assert!(yanked.is_some(), "a retry of 1.2.0 runs into the yank");
        assert!(yank_for(&doc, "x64", "1.2.0+build", "other").is_some());
        assert!(yank_for(&doc, "x64", "1.4.0", "other").is_none());
        assert!(yank_for(&doc, "arm64", "1.2.0", "other").is_none());
    }

    #[test]
    fn rollback_of_an_unknown_version_changes_nothing() {
        let mut doc = doc(Kind::Release, &["1.0.0", "1.1.0"]);
        let before = doc.clone();
        for (version, arch) in [("9.9.9", None), ("1.0.0", Some("arm64"))] {
            let intent = RollbackIntent {
                version,
                architecture: arch,
                reason: "r",
            };
            let refusal = rollback(&mut doc, &intent, Timestamp::from_millis(5)).unwrap_err();
            assert_eq!(refusal.code, "version_not_found");
            assert_eq!(doc, before);
        }
    }

    #[test]
    fn branch_yanks_refuse_only_the_yanked_bytes() {
        let mut doc = doc(Kind::Branch, &["0.0.0-dev", "0.0.1-dev"]);
        let intent = RollbackIntent {
            version: "0.0.0-dev",
            architecture: Some("x64"),
            reason: "broken build",
        };
        rollback(&mut doc, &intent, Timestamp::from_millis(9)).unwrap();
        assert!(yank_for(&doc, "x64", "0.0.1-dev", "sha0.0.1-dev").is_some());
        assert!(yank_for(&doc, "x64", "0.0.1-dev", "a-new-build").is_none());
    }

    #[test]
    fn trimming_keeps_the_newest_and_the_yanked() {
        let mut doc = doc(
            Kind::Release,
            &["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0"],
        );
        doc.history.get_mut("x64").unwrap()[3].yanked = Some(Yank {
            reason: "r".into(),
            at: Timestamp::from_millis(0),
        });
        trim_history(&mut doc, 2);
        let kept: Vec<String> = versions(&doc).into_iter().map(|v| v.0).collect();
        assert_eq!(kept, ["1.3.0", "1.2.0", "1.0.0"]);
        trim_history(&mut doc, 0);
        assert!(doc.history.is_empty());
    }

    #[test]
    fn retention_removes_only_idle_branch_builds() {
        let at = Timestamp::from_millis;
        let cutoff = at(100);
        assert!(retention_due(Kind::Branch, at(10), None, cutoff));
        assert!(retention_due(Kind::Branch, at(10), Some(at(99)), cutoff));
        assert!(!retention_due(Kind::Branch, at(10), Some(at(100)), cutoff));
        assert!(
            !retention_due(Kind::Branch, at(100), None, cutoff),
            "rebuilt within the window"
        );
        assert!(
            !retention_due(Kind::Release, at(10), None, cutoff),
            "never a release"
        );
    }
}
