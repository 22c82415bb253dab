//! The store conformance suite: the same test bodies against every metadata backend (SQLite,
//! MongoDB over the real wire protocol) and every blob backend (local files, S3 protocol).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use reliquary::domain::visibility::Visibility;
use reliquary::store::mongo::MongoStore;
use reliquary::store::sqlite::SqliteStore;
use reliquary::store::{BrowseQuery, MetadataStore, StoreError};
use reliquary_client::types::{Artefact, Change, Kind, Slot, Timestamp};

use crate::common::*;

/// A store plus whatever must live as long as it.
pub struct Fixture {
    pub store: Arc<dyn MetadataStore>,
    _dir: Option<tempfile::TempDir>,
}

pub async fn sqlite() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("meta.sqlite3")).unwrap();
    store.migrate().await.unwrap();
    assert!(
        store.migrate().await.unwrap().is_empty(),
        "migrating twice applies nothing"
    );
    Fixture {
        store: Arc::new(store),
        _dir: Some(dir),
    }
}

pub async fn mongo() -> Fixture {
    let store = MongoStore::connect(&mongo_url()).await.unwrap();
    assert!(!store.migrate().await.unwrap().is_empty());
    assert!(
        store.migrate().await.unwrap().is_empty(),
        "migrating twice applies nothing"
    );
    Fixture {
        store: Arc::new(store),
        _dir: None,
    }
}

pub fn artefact(id: &str, kind: Kind, category: Option<&str>) -> Artefact {
    let now = Timestamp::now();
    Artefact {
        id: id.into(),
        kind,
        package_name: id.split('@').next().unwrap().into(),
        version: "1.0.0".into(),
        licence: None,
        description: Some(format!("Description of {id} (v1.0+beta)")),
        category: category.map(str::to_owned),
        tarballs: BTreeMap::from([(
            "noarch".to_owned(),
            Slot {
                sha256: format!("{:0>64}", id.len()),
                size: 10,
                version: "1.0.0".into(),
                uploaded_at: now,
                signature: "sig".into(),
                attestation: None,
                published_by: None,
            },
        )]),
        origin: None,
        deprecated: None,
        history: Default::default(),
        created_at: now,
        updated_at: now,
        data_updated_at: now,
        revision: 0,
        seq: 0,
    }
}

fn ids(docs: &[Artefact]) -> Vec<&str> {
    docs.iter().map(|d| d.id.as_str()).collect()
}

fn change_ids(changes: &[Change]) -> Vec<String> {
    changes.iter().map(|c| c.id().to_owned()).collect()
}

async fn put_is_a_compare_and_swap(f: Fixture) {
    let s = &f.store;
    let first = s
        .put(artefact("a@1", Kind::Release, None), None)
        .await
        .unwrap();
    assert_eq!(first.revision, 1);
    assert!(first.seq > 0);
    assert!(matches!(
        s.put(artefact("a@1", Kind::Release, None), None).await,
        Err(StoreError::RevisionMismatch)
    ));
    let second = s.put(first.clone(), Some(1)).await.unwrap();
    assert_eq!(second.revision, 2);
    assert!(second.seq > first.seq);
    assert!(matches!(
        s.put(first.clone(), Some(1)).await,
        Err(StoreError::RevisionMismatch)
    ));
    assert!(matches!(
        s.put(artefact("nope@1", Kind::Release, None), Some(3))
            .await,
        Err(StoreError::RevisionMismatch)
    ));
    let stored = s.get("a@1", &Visibility::all()).await.unwrap().unwrap();
    assert_eq!(stored, second, "what is read is exactly what was committed");
    assert_eq!(
        s.revision("a@1", &Visibility::all()).await.unwrap(),
        Some(2)
    );
    assert_eq!(
        s.revision("nope@1", &Visibility::all()).await.unwrap(),
        None
    );
}

async fn the_filter_applies_to_single_reads(f: Fixture) {
    let s = &f.store;
    s.put(artefact("rel@1", Kind::Release, Some("plugins")), None)
        .await
        .unwrap();
    s.put(artefact("br@main", Kind::Branch, Some("plugins")), None)
        .await
        .unwrap();
    assert!(s
        .get("br@main", &Visibility::all())
        .await
        .unwrap()
        .is_some());
    assert!(s
        .get("br@main", &Visibility::releases())
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        s.revision("br@main", &Visibility::all()).await.unwrap(),
        Some(1)
    );
    assert_eq!(
        s.revision("br@main", &Visibility::releases())
            .await
            .unwrap(),
        None,
        "the revision is filtered like the document"
    );
    assert!(s
        .get("rel@1", &Visibility::releases())
        .await
        .unwrap()
        .is_some());
    let prefixed = Visibility {
        id_prefix: Some("re".into()),
        ..Visibility::releases()
    };
    assert!(s.get("rel@1", &prefixed).await.unwrap().is_some());
    let other_prefix = Visibility {
        id_prefix: Some("x".into()),
        ..Visibility::all()
    };
    assert!(s.get("rel@1", &other_prefix).await.unwrap().is_none());
    let other_category = Visibility {
        category: Some("services".into()),
        ..Visibility::all()
    };
    assert!(s.get("rel@1", &other_category).await.unwrap().is_none());
    assert_eq!(s.revision("rel@1", &other_category).await.unwrap(), None);

    // A mirror key's id patterns, in the query itself: `*` never crosses a `/`, `.` is literal.
    s.put(artefact("@sc/rel@1", Kind::Release, None), None)
        .await
        .unwrap();
    s.put(artefact("relx1", Kind::Release, None), None)
        .await
        .unwrap();
    let patterns = |list: &[&str]| Visibility {
        id_patterns: Some(list.iter().map(|p| (*p).to_owned()).collect()),
        ..Visibility::releases()
    };
    assert!(s
        .get("rel@1", &patterns(&["re*@1"]))
        .await
        .unwrap()
        .is_some());
    assert!(s
        .get("rel@1", &patterns(&["x*", "rel@*"]))
        .await
        .unwrap()
        .is_some());
    assert!(s
        .get("rel@1", &patterns(&["rel@2"]))
        .await
        .unwrap()
        .is_none());
    assert!(s
        .get("@sc/rel@1", &patterns(&["*rel@1"]))
        .await
        .unwrap()
        .is_none());
    assert!(s
        .get("@sc/rel@1", &patterns(&["@sc/*"]))
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        s.revision("rel@1", &patterns(&["rel@2"])).await.unwrap(),
        None
    );
    let listed = s
        .browse(
            &BrowseQuery {
                limit: 10,
                ..Default::default()
            },
            &patterns(&["rel@*", "@sc/*@1"]),
        )
        .await
        .unwrap();
    assert_eq!(ids(&listed), ["@sc/rel@1", "rel@1"]);
    let changes = s.changes(0, 10, &patterns(&["rel*"])).await.unwrap();
    assert_eq!(change_ids(&changes.items), ["rel@1", "relx1"]);
}

async fn delete_leaves_a_tombstone_and_recreation_continues_the_revision(f: Fixture) {
    let s = &f.store;
    let doc = s
        .put(artefact("a@1", Kind::Release, None), None)
        .await
        .unwrap();
    let doc = s.put(doc, Some(1)).await.unwrap();
    assert!(matches!(
        s.delete("a@1", 1).await,
        Err(StoreError::RevisionMismatch)
    ));
    let tombstone = s.delete("a@1", 2).await.unwrap();
    assert!(tombstone.deleted && tombstone.seq > doc.seq && tombstone.revision == 2);
    assert!(s.get("a@1", &Visibility::all()).await.unwrap().is_none());
    assert_eq!(s.revision("a@1", &Visibility::all()).await.unwrap(), None);
    assert!(matches!(
        s.delete("a@1", 2).await,
        Err(StoreError::NotFound)
    ));
    let changes = s.changes(0, 10, &Visibility::all()).await.unwrap();
    assert!(matches!(&changes.items[..], [Change::Deleted(t)] if t.id == "a@1"));
    let again = s
        .put(artefact("a@1", Kind::Release, None), None)
        .await
        .unwrap();
    assert_eq!(again.revision, 3);
    let changes = s.changes(0, 10, &Visibility::all()).await.unwrap();
    assert!(
        matches!(&changes.items[..], [Change::Artefact(a)] if a.revision == 3),
        "the tombstone is gone"
    );
}

async fn browse_orders_by_id_and_filters(f: Fixture) {
    let s = &f.store;
    for (id, kind, category) in [
        ("delta@1", Kind::Release, Some("plugins")),
        ("alpha@1", Kind::Release, Some("services")),
        ("alpha@main", Kind::Branch, Some("plugins")),
        ("charlie@1", Kind::Release, None),
        ("bravo@1", Kind::Release, Some("plugins")),
    ] {
        s.put(artefact(id, kind, category), None).await.unwrap();
    }
    let all = |q: BrowseQuery| async move {
        s.browse(&BrowseQuery { limit: 50, ..q }, &Visibility::all())
            .await
            .unwrap()
    };
    assert_eq!(
        ids(&all(BrowseQuery::default()).await),
        ["alpha@1", "alpha@main", "bravo@1", "charlie@1", "delta@1"]
    );
    assert_eq!(
        ids(&all(BrowseQuery {
            after: Some("alpha@main".into()),
            ..Default::default()
        })
        .await),
        ["bravo@1", "charlie@1", "delta@1"]
    );
    assert_eq!(
        ids(&all(BrowseQuery {
            kind: Some(Kind::Branch),
            ..Default::default()
        })
        .await),
        ["alpha@main"]
    );
    assert_eq!(
        ids(&all(BrowseQuery {
            category: Some("plugins".into()),
            ..Default::default()
        })
        .await),
        ["alpha@main", "bravo@1", "delta@1"]
    );
    assert_eq!(
        ids(&all(BrowseQuery {
            q: Some("ALPHA".into()),
            ..Default::default()
        })
        .await),
        ["alpha@1", "alpha@main"]
    );
    // Search text is matched literally: regex and LIKE metacharacters mean themselves.
    assert_eq!(
        all(BrowseQuery {
            q: Some("(v1.0+beta)".into()),
            ..Default::default()
        })
        .await
        .len(),
        5
    );
    assert!(all(BrowseQuery {
        q: Some("v1.0+.*".into()),
        ..Default::default()
    })
    .await
    .is_empty());
    assert!(all(BrowseQuery {
        q: Some("%".into()),
        ..Default::default()
    })
    .await
    .is_empty());
    let page = s
        .browse(
            &BrowseQuery {
                limit: 2,
                ..Default::default()
            },
            &Visibility::releases(),
        )
        .await
        .unwrap();
    assert_eq!(ids(&page), ["alpha@1", "bravo@1"]);
}

async fn changes_are_ordered_by_seq_with_tombstones_and_a_snapshot_last_seq(f: Fixture) {
    let s = &f.store;
    let a = s
        .put(artefact("a@1", Kind::Release, None), None)
        .await
        .unwrap();
    s.put(artefact("b@main", Kind::Branch, None), None)
        .await
        .unwrap();
    s.put(artefact("c@1", Kind::Release, None), None)
        .await
        .unwrap();
    let b_gone = s.delete("b@main", 1).await.unwrap();
    let a2 = s.put(a.clone(), Some(1)).await.unwrap();

    let all = s.changes(0, 10, &Visibility::all()).await.unwrap();
    assert_eq!(change_ids(&all.items), ["c@1", "b@main", "a@1"]);
    assert_eq!(all.last_seq, a2.seq);
    assert!(!all.has_more);
    let releases = s.changes(0, 10, &Visibility::releases()).await.unwrap();
    assert_eq!(
        change_ids(&releases.items),
        ["c@1", "a@1"],
        "branch tombstones are filtered too"
    );
    let since = s.changes(b_gone.seq, 10, &Visibility::all()).await.unwrap();
    assert_eq!(change_ids(&since.items), ["a@1"]);
    let page = s.changes(0, 2, &Visibility::all()).await.unwrap();
    assert_eq!(change_ids(&page.items), ["c@1", "b@main"]);
    assert!(page.has_more);
    assert!(s
        .changes(a2.seq, 10, &Visibility::all())
        .await
        .unwrap()
        .items
        .is_empty());
}

async fn concurrent_writers_never_lose_an_update(f: Fixture) {
    let s = f.store.clone();
    s.put(artefact("hot@1", Kind::Release, None), None)
        .await
        .unwrap();
    let writers = (0..6).map(|w| {
        let s = s.clone();
        tokio::spawn(async move {
            let mut seqs = Vec::new();
            for i in 0..5 {
                loop {
                    let mut doc = s.get("hot@1", &Visibility::all()).await.unwrap().unwrap();
                    let expected = doc.revision;
                    doc.description = Some(format!("writer {w} update {i}"));
                    match s.put(doc, Some(expected)).await {
                        Ok(doc) => {
                            seqs.push(doc.seq);
                            break;
                        }
                        Err(StoreError::RevisionMismatch) => continue,
                        Err(other) => panic!("{other}"),
                    }
                }
            }
            seqs
        })
    });
    let mut all_seqs = HashSet::new();
    for writer in futures::future::join_all(writers).await {
        for seq in writer.unwrap() {
            assert!(all_seqs.insert(seq), "seq {seq} handed out twice");
        }
    }
    let doc = s.get("hot@1", &Visibility::all()).await.unwrap().unwrap();
    assert_eq!(
        doc.revision,
        1 + 30,
        "every one of the 30 updates committed exactly once"
    );

    let inserts = (0..20).map(|i| {
        let s = s.clone();
        tokio::spawn(async move {
            s.put(artefact(&format!("new{i}@1"), Kind::Release, None), None)
                .await
                .unwrap()
                .seq
        })
    });
    let seqs: HashSet<i64> = futures::future::join_all(inserts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    assert_eq!(seqs.len(), 20);
    let changes = s.changes(0, 100, &Visibility::all()).await.unwrap();
    assert_eq!(changes.items.len(), 21);
}

async fn referenced_blobs_lists_every_slot_digest(f: Fixture) {
    let s = &f.store;
    let mut doc = artefact("a@1", Kind::Release, None);
    let mut x64 = doc.tarballs["noarch"].clone();
    x64.sha256 = "f".repeat(64);
    doc.tarballs.insert("x64".into(), x64);
    s.put(doc, None).await.unwrap();
    s.put(artefact("bb@1", Kind::Release, None), None)
        .await
        .unwrap();
    let mut digests = s.referenced_blobs().await.unwrap();
    digests.sort();
    assert_eq!(
        digests,
        [format!("{:0>64}", 3), format!("{:0>64}", 4), "f".repeat(64)]
    );
    s.ping().await.unwrap();
}

macro_rules! metadata_conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite_metadata {
            $( #[tokio::test] async fn $test() { super::$test(crate::conformance::sqlite().await).await } )*
        }
        mod mongo_metadata {
            $( #[tokio::test] async fn $test() { super::$test(crate::conformance::mongo().await).await } )*
        }
    };
}

metadata_conformance!(
    put_is_a_compare_and_swap,
    the_filter_applies_to_single_reads,
    delete_leaves_a_tombstone_and_recreation_continues_the_revision,
    browse_orders_by_id_and_filters,
    changes_are_ordered_by_seq_with_tombstones_and_a_snapshot_last_seq,
    concurrent_writers_never_lose_an_update,
    referenced_blobs_lists_every_slot_digest,
);
