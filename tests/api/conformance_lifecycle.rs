//! The conformance suite, continued: what the release lifecycle needs from a metadata backend —
//! history round-trips and is referenced for gc; download times only rise; the retention query
//! finds idle branch builds and nothing else.

use reliquary::domain::visibility::Visibility;
use reliquary_client::types::{HistoryEntry, Kind, Timestamp, Yank};

use crate::conformance::{artefact, Fixture};

fn at(millis: i64) -> Timestamp {
    Timestamp::from_millis(millis)
}

async fn history_round_trips_and_its_blobs_are_referenced(f: Fixture) {
    let s = &f.store;
    let mut doc = artefact("a@1", Kind::Release, None);
    let mut old = doc.tarballs["noarch"].clone();
    old.sha256 = "e".repeat(64);
    old.version = "0.9.0".into();
    doc.history.insert(
        "noarch".into(),
        vec![HistoryEntry {
            slot: old,
            replaced_at: at(1_000),
            yanked: Some(Yank {
                reason: "broken".into(),
                at: at(2_000),
            }),
        }],
    );
    let stored = s.put(doc, None).await.unwrap();
    assert_eq!(
        s.get("a@1", &Visibility::all()).await.unwrap().unwrap(),
        stored,
        "history, yank included, is stored as given"
    );
    let digests = s.referenced_blobs().await.unwrap();
    assert!(digests.contains(&"e".repeat(64)), "{digests:?}");
    assert!(digests.contains(&stored.tarballs["noarch"].sha256));
}

async fn download_times_only_rise(f: Fixture) {
    let s = &f.store;
    assert_eq!(s.last_downloaded("a@main").await.unwrap(), None);
    s.record_downloads(&[("a@main".into(), at(5_000)), ("b@main".into(), at(1_000))])
        .await
        .unwrap();
    s.record_downloads(&[("a@main".into(), at(4_000))])
        .await
        .unwrap();
    assert_eq!(s.last_downloaded("a@main").await.unwrap(), Some(at(5_000)));
    s.record_downloads(&[("a@main".into(), at(6_000))])
        .await
        .unwrap();
    assert_eq!(s.last_downloaded("a@main").await.unwrap(), Some(at(6_000)));
    assert_eq!(s.last_downloaded("b@main").await.unwrap(), Some(at(1_000)));
}

async fn retention_finds_idle_branch_builds_only(f: Fixture) {
    let s = &f.store;
    let day = 86_400_000;
    let put = |id: &str, kind: Kind, data_updated: i64| {
        let mut doc = artefact(id, kind, None);
        doc.data_updated_at = at(data_updated);
        doc
    };
    for doc in [
        put("idle@main", Kind::Branch, day),
        put("older@main", Kind::Branch, 0),
        put("rebuilt@main", Kind::Branch, 40 * day),
        put("downloaded@main", Kind::Branch, day),
        put("downloaded-long-ago@main", Kind::Branch, day),
        put("release@1", Kind::Release, 0),
    ] {
        s.put(doc, None).await.unwrap();
    }
    s.record_downloads(&[
        ("downloaded@main".into(), at(35 * day)),
        ("downloaded-long-ago@main".into(), at(2 * day)),
        ("release@1".into(), at(0)),
    ])
    .await
    .unwrap();
    let cutoff = at(30 * day);
    let found = s.retention_candidates(cutoff).await.unwrap();
    let ids: Vec<&str> = found.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(
        ids,
        ["older@main", "downloaded-long-ago@main", "idle@main"],
        "oldest bytes first, then by id"
    );
    let long_ago = &found[1];
    assert_eq!(long_ago.revision, 1);
    assert_eq!(long_ago.data_updated_at, at(day));
    assert_eq!(long_ago.last_downloaded_at, Some(at(2 * day)));
    assert_eq!(found[0].last_downloaded_at, None);

    // A deletion leaves it out; an earlier cutoff finds less.
    s.delete("older@main", 1).await.unwrap();
    let ids: Vec<String> = s
        .retention_candidates(at(day + 1))
        .await
        .unwrap()
        .into_iter()
        .map(|c| c.id)
        .collect();
    assert_eq!(ids, ["idle@main"]);
}

metadata_conformance!(
    history_round_trips_and_its_blobs_are_referenced,
    download_times_only_rise,
    retention_finds_idle_branch_builds_only,
);
