//! A release's life after upload: slot history, rollback with yank, and which branch builds
//! retention removes. Plain functions over the document; the registry commits what they return.

use std::cmp::Ordering;

use reliquary_client::types::{Artefact, HistoryEntry, HistoryItem, Kind, Slot, Timestamp, Yank};
use semver::Version;

use super::refusal::Refusal;

/// `--history-per-slot` may not exceed this: history lives in the document, which every read
/// and every mirror carries.
pub const MAX_HISTORY_PER_SLOT: usize = 50;
/// Entries one slot's history may hold: the newest `--history-per-slot`, and the yanked entries
/// kept beyond them.
pub const MAX_HISTORY_ENTRIES: usize = 2 * MAX_HISTORY_PER_SLOT;

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

/// Keeps the newest `keep` entries of each slot's history. A yanked entry outlives them, because
/// it is what refuses a CI retry of the withdrawn version — except on a release whose slot now
/// serves a newer version (`version_not_newer` refuses the retry anyway) — up to
/// [`MAX_HISTORY_ENTRIES`] per slot.
pub fn trim_history(doc: &mut Artefact, keep: usize) {
    let release = doc.kind == Kind::Release;
    for (arch, entries) in &mut doc.history {
        let current = doc
            .tarballs
            .get(arch)
            .and_then(|s| Version::parse(&s.version).ok());
        let still_refuses = |entry: &HistoryEntry| {
            entry.yanked.is_some()
                && !(release
                    && current.as_ref().is_some_and(|current| {
                        Version::parse(&entry.slot.version)
                            .is_ok_and(|v| v.cmp_precedence(current) == Ordering::Less)
                    }))
        };
        let mut index = 0;
        entries.retain(|entry| {
            index += 1;
            index <= keep || (index <= MAX_HISTORY_ENTRIES && still_refuses(entry))
        });
        entries.truncate(MAX_HISTORY_ENTRIES);
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

/// The yank an upload of `version` to `architecture` runs into, if any: that slot's history,
/// or — for a slot the artefact does not have yet — any slot's, so that a withdrawn version
/// cannot come back under another architecture.
pub fn yank_for<'a>(
    doc: &'a Artefact,
    architecture: &str,
    version: &str,
) -> Option<(&'a HistoryEntry, &'a Yank)> {
    let yanked_in = |entries: &'a Vec<HistoryEntry>| {
        entries.iter().find_map(|entry| {
            let yank = entry.yanked.as_ref()?;
            same_version(&entry.slot.version, version).then_some((entry, yank))
        })
    };
    if doc.tarballs.contains_key(architecture) {
        doc.history.get(architecture).and_then(yanked_in)
    } else {
        doc.history.values().find_map(yanked_in)
    }
}

/// What a rollback asks for.
#[derive(Clone, Copy, Debug)]
pub struct RollbackIntent<'a> {
    pub version: &'a str,
    /// Only this slot; else every slot whose history holds `version`.
    pub architecture: Option<&'a str>,
    pub reason: &'a str,
    /// Whether the caller may roll back *to* a yanked version (admins): otherwise a CI key could
    /// undo a rollback by rolling "back" to what it withdrew.
    pub may_unyank: bool,
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
    if !intent.may_unyank {
        if let Some(yank) = targets
            .iter()
            .find_map(|(arch, index)| doc.history[arch][*index].yanked.as_ref())
        {
            return Err(Refusal::conflict(
                "version_yanked",
                format!(
                    "Version {} of `{}` was yanked at {} ({}); only an admin may roll back to it.",
                    intent.version, doc.id, yank.at, yank.reason
                ),
            ));
        }
    }
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
    let mut version = None;
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
        version = Some(reinstated.slot.version.clone());
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
    if let Some(version) = version {
        // The reinstated slot's own version string (the request's may differ in build metadata).
        doc.version = version;
        doc.updated_at = now;
        doc.data_updated_at = now;
    }
    Ok(changed)
}

/// How late a recorded download time may be: downloads are written at most once per tenth of
/// the retention period (an hour when retention is off), so a use up to that long after the
/// recorded time may not be on record.
pub fn download_record_lag(retention: std::time::Duration) -> std::time::Duration {
    (retention / 10).max(std::time::Duration::from_secs(3600))
}

/// Whether branch retention removes an artefact: a branch build whose bytes have not changed,
/// and that nobody used, since `cutoff`. The last use is taken as the recorded download time
/// plus `lag` (see [`download_record_lag`]); with no record, as `tracked_since` (when this
/// registry started recording downloads: before it, nobody knows). Releases are never removed.
pub fn retention_due(
    kind: Kind,
    data_updated_at: Timestamp,
    last_downloaded: Option<Timestamp>,
    tracked_since: Timestamp,
    lag: std::time::Duration,
    cutoff: Timestamp,
) -> bool {
    let lag_ms = i64::try_from(lag.as_millis()).unwrap_or(i64::MAX);
    let last_use = last_downloaded.map_or(tracked_since, |at| {
        Timestamp::from_millis(at.millis().saturating_add(lag_ms))
    });
    kind == Kind::Branch && data_updated_at < cutoff && last_use < cutoff
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
            published_by: None,
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
            may_unyank: false,
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
        let yanked = yank_for(&doc, "x64", "1.2.0");
        assert!(yanked.is_some(), "a retry of 1.2.0 runs into the yank");
        assert!(yank_for(&doc, "x64", "1.2.0+build").is_some());
        assert!(yank_for(&doc, "x64", "1.4.0").is_none());
        assert!(
            yank_for(&doc, "arm64", "1.2.0").is_some(),
            "a new slot may not bring it back either"
        );

        // Rolling back *to* a yanked version is an admin's call, not a CI key's.
        let undo = RollbackIntent {
            version: "1.3.0",
            architecture: None,
            reason: "ci",
            may_unyank: false,
        };
        let before = doc.clone();
        let refusal = rollback(&mut doc, &undo, Timestamp::from_millis(100)).unwrap_err();
        assert_eq!(refusal.code, "version_yanked");
        assert_eq!(doc, before);
        let admin = RollbackIntent {
            may_unyank: true,
            ..undo
        };
        rollback(&mut doc, &admin, Timestamp::from_millis(101)).unwrap();
        assert_eq!(doc.tarballs["x64"].version, "1.3.0");
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
                may_unyank: true,
            };
            let refusal = rollback(&mut doc, &intent, Timestamp::from_millis(5)).unwrap_err();
            assert_eq!(refusal.code, "version_not_found");
            assert_eq!(doc, before);
        }
    }

    #[test]
    fn branch_yanks_refuse_the_yanked_version_like_releases() {
        let mut doc = doc(Kind::Branch, &["0.0.0-dev.1", "0.0.0-dev.2"]);
        let intent = RollbackIntent {
            version: "0.0.0-dev.1",
            architecture: Some("x64"),
            reason: "broken build",
            may_unyank: false,
        };
        rollback(&mut doc, &intent, Timestamp::from_millis(9)).unwrap();
        assert!(
            yank_for(&doc, "x64", "0.0.0-dev.2").is_some(),
            "a rebuild of it too"
        );
        assert!(yank_for(&doc, "x64", "0.0.0-dev.3").is_none());
    }

    #[test]
    fn trimming_keeps_the_newest_and_the_yanks_that_still_refuse_something() {
        let mut doc = doc(
            Kind::Release,
            &["1.0.0", "1.1.0", "1.2.0", "1.3.0", "1.4.0"],
        );
        // History, newest first: 1.3.0 1.2.0 1.1.0 1.0.0; the slot serves 1.4.0.
        // 1.0.0, yanked, is older than the version the slot serves.
        doc.history.get_mut("x64").unwrap()[3].yanked = Some(Yank {
            reason: "r".into(),
            at: Timestamp::from_millis(0),
        });
        trim_history(&mut doc, 2);
        let kept: Vec<String> = versions(&doc).into_iter().map(|v| v.0).collect();
        assert_eq!(
            kept,
            ["1.3.0", "1.2.0"],
            "a yank below the served version refuses nothing"
        );

        // A yanked version above the served one outlives trimming, however many uploads follow.
        let mut doc = self::doc(Kind::Release, &["1.0.0", "2.0.0"]);
        let back = RollbackIntent {
            version: "1.0.0",
            architecture: None,
            reason: "2.0.0 is broken",
            may_unyank: false,
        };
        rollback(&mut doc, &back, Timestamp::from_millis(50)).unwrap();
        for (i, version) in ["1.0.1", "1.0.2", "1.0.3"].iter().enumerate() {
            let new = slot(
                version,
                &format!("sha{version}"),
                60 + i64::try_from(i).unwrap(),
            );
            let old = doc.tarballs.insert("x64".into(), new).unwrap();
            retire_slot(&mut doc, "x64", old, Timestamp::from_millis(60));
            trim_history(&mut doc, 1);
        }
        assert!(
            yank_for(&doc, "x64", "2.0.0").is_some(),
            "{:?}",
            versions(&doc)
        );
        assert_eq!(doc.history["x64"].len(), 2, "the newest entry and the yank");
        trim_history(&mut doc, 0);
        assert!(
            yank_for(&doc, "x64", "2.0.0").is_some(),
            "history off still keeps yanks"
        );
    }

    #[test]
    fn retention_removes_only_idle_branch_builds() {
        let at = Timestamp::from_millis;
        let (cutoff, since, lag) = (at(1_000_000), at(0), std::time::Duration::from_secs(100));
        let due = |kind, data, last| retention_due(kind, at(data), last, since, lag, cutoff);
        assert!(due(Kind::Branch, 10, None));
        assert!(
            due(Kind::Branch, 10, Some(at(800_000))),
            "used long enough ago"
        );
        assert!(
            !due(Kind::Branch, 10, Some(at(950_000))),
            "recorded before the cutoff, but within the write lag of it"
        );
        assert!(
            !due(Kind::Branch, 1_000_000, None),
            "rebuilt within the window"
        );
        assert!(!due(Kind::Release, 10, None), "never a release");
        assert!(
            !retention_due(Kind::Branch, at(10), None, at(999_999 + 1), lag, cutoff),
            "no record, but downloads were not recorded for the whole period"
        );
        assert_eq!(
            download_record_lag(std::time::Duration::from_secs(86_400 * 30)).as_secs(),
            259_200
        );
        assert_eq!(
            download_record_lag(std::time::Duration::from_secs(600)).as_secs(),
            3600
        );
    }
}
