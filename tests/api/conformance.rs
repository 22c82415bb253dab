//! The store conformance suite: the same test bodies against every metadata backend (SQLite,
//! MongoDB over the real wire protocol) and every blob backend (local files, S3 protocol).

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use reliquary::domain::visibility::Visibility;
use reliquary::store::mongo::MongoStore;
use reliquary::store::sqlite::SqliteStore;
use reliquary::store::{
    AuditQuery, AuditRecord, BrowseQuery, KeyRecord, MetadataStore, RemoteConfig, RemoteState,
    StoreError,
};
use reliquary_client::types::{ApiKey, Artefact, Change, Kind, Role, Slot, Timestamp};

use crate::common::*;

/// A store plus whatever must live as long as it.
pub struct Fixture {
    store: Arc<dyn MetadataStore>,
    _dir: Option<tempfile::TempDir>,
}

async fn sqlite() -> Fixture {
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

async fn mongo() -> Fixture {
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

fn artefact(id: &str, kind: Kind, category: Option<&str>) -> Artefact {
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
            },
        )]),
        origin: None,
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

fn key(name: &str, role: Role) -> ApiKey {
    ApiKey {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.into(),
        role,
        prefix: "rlq_abcd".into(),
        allowed_package_name: None,
        allowed_name_prefix: Some("acme".into()),
        allowed_category: None,
        created_at: Timestamp::now(),
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
    }
}

async fn keys_are_found_by_token_hash_and_revoked_once(f: Fixture) {
    let s = &f.store;
    assert!(!s.has_usable_admin().await.unwrap());
    let publisher = key("ci", Role::Publish);
    s.insert_key(KeyRecord {
        key: publisher.clone(),
        token_sha256: "h1".into(),
    })
    .await
    .unwrap();
    let duplicate = s
        .insert_key(KeyRecord {
            key: key("other", Role::Read),
            token_sha256: "h1".into(),
        })
        .await;
    assert!(matches!(duplicate, Err(StoreError::Duplicate(_))));
    assert_eq!(
        s.key_by_token_hash("h1").await.unwrap(),
        Some(publisher.clone())
    );
    assert_eq!(s.key_by_token_hash("h2").await.unwrap(), None);

    let at = Timestamp::now();
    s.touch_key(&publisher.id, at).await.unwrap();
    assert_eq!(
        s.key_by_token_hash("h1")
            .await
            .unwrap()
            .unwrap()
            .last_used_at,
        Some(at)
    );
    let revoked = s.revoke_key(&publisher.id, at).await.unwrap();
    assert_eq!(revoked.revoked_at, Some(at));
    let later = Timestamp::from_millis(at.millis() + 5000);
    assert_eq!(
        s.revoke_key(&publisher.id, later).await.unwrap().revoked_at,
        Some(at),
        "revocation time is kept"
    );
    assert!(matches!(
        s.revoke_key("missing", at).await,
        Err(StoreError::NotFound)
    ));

    let admin = key("admin", Role::Admin);
    s.insert_key(KeyRecord {
        key: admin.clone(),
        token_sha256: "h3".into(),
    })
    .await
    .unwrap();
    assert!(s.has_usable_admin().await.unwrap());
    s.revoke_key(&admin.id, at).await.unwrap();
    assert!(!s.has_usable_admin().await.unwrap());
    assert_eq!(s.list_keys().await.unwrap().len(), 2);
}

async fn the_audit_log_pages_newest_first_and_prunes_by_age(f: Fixture) {
    let s = &f.store;
    let record = |action: &str, at: Timestamp| AuditRecord {
        at,
        action: action.into(),
        outcome: "success".into(),
        key_id: Some("k".into()),
        key_name: Some("ci".into()),
        artefact_id: Some("a@1".into()),
        architecture: None,
        detail: None,
        remote_addr: Some("127.0.0.1".into()),
    };
    let old = Timestamp::from_millis(Timestamp::now().millis() - 100 * 86_400_000);
    s.append_audit(record("artefact.upload", old))
        .await
        .unwrap();
    for action in ["artefact.upload", "key.create", "artefact.upload"] {
        s.append_audit(record(action, Timestamp::now()))
            .await
            .unwrap();
    }
    let all = s
        .list_audit(&AuditQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    assert_eq!(all[0].action, "artefact.upload");
    assert_eq!(all[1].action, "key.create");
    assert_eq!(all[3].at, old);
    let uploads = s
        .list_audit(&AuditQuery {
            action: Some("artefact.upload".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(uploads.len(), 3);
    let next = s
        .list_audit(&AuditQuery {
            before: Some(all[1].id.clone()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        next.iter().map(|e| &e.id).collect::<Vec<_>>(),
        all[2..].iter().map(|e| &e.id).collect::<Vec<_>>()
    );
    let cutoff = Timestamp::from_millis(Timestamp::now().millis() - 90 * 86_400_000);
    assert_eq!(s.prune_audit(cutoff).await.unwrap(), 1);
    assert_eq!(
        s.list_audit(&AuditQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        3
    );
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

async fn remotes_keep_config_and_state_apart_and_leases_exclude(f: Fixture) {
    let s = &f.store;
    let config = RemoteConfig {
        url: "http://peer".into(),
        interval_seconds: 60,
        allowed_name_prefix: None,
        allowed_category: None,
        architectures: Some(vec!["x64".into()]),
        enabled: true,
        registry: "production".into(),
        pinned: vec![],
        trusted: vec![reliquary_client::types::RegistryKeys {
            registry: "origin".into(),
            keys: vec![],
            remote: None,
            source: None,
        }],
        created_at: Timestamp::now(),
    };
    assert!(s.put_remote("prod", &config, "rlq_secret").await.unwrap());
    let state = RemoteState {
        cursor: 42,
        peer_last_seq: 50,
        last_error: Some("x".into()),
        ..Default::default()
    };
    s.set_remote_state("prod", &state).await.unwrap();
    let replaced = RemoteConfig {
        interval_seconds: 5,
        ..config.clone()
    };
    assert!(
        !s.put_remote("prod", &replaced, "rlq_other").await.unwrap(),
        "replaced, not created"
    );
    let record = s.get_remote("prod").await.unwrap().unwrap();
    assert_eq!(record.config, replaced);
    assert_eq!(record.token, "rlq_other");
    assert_eq!(record.state, state, "a config change keeps the sync state");
    s.set_remote_state("ghost", &state).await.unwrap();
    assert!(
        s.get_remote("ghost").await.unwrap().is_none(),
        "state alone does not make a remote"
    );
    assert_eq!(s.list_remotes().await.unwrap().len(), 1);

    let mut mirrored = artefact("m@1", Kind::Release, None);
    mirrored.origin = Some(reliquary_client::types::Origin {
        registry: "production".into(),
        remote: "prod".into(),
        synced_at: Timestamp::now(),
    });
    s.put(mirrored, None).await.unwrap();
    s.put(artefact("local@1", Kind::Release, None), None)
        .await
        .unwrap();
    assert_eq!(
        s.mirrored_by("prod").await.unwrap(),
        [("m@1".to_owned(), 1)]
    );

    assert!(s.acquire_lease("prod", "replica-a", 60_000).await.unwrap());
    assert!(
        !s.acquire_lease("prod", "replica-b", 60_000).await.unwrap(),
        "held by a"
    );
    assert!(
        s.acquire_lease("prod", "replica-a", 60_000).await.unwrap(),
        "renewed by its holder"
    );
    assert!(s.acquire_lease("prod", "replica-a", -1).await.unwrap());
    assert!(
        s.acquire_lease("prod", "replica-b", 60_000).await.unwrap(),
        "taken over once lapsed"
    );
    s.release_lease("prod", "replica-b").await.unwrap();
    assert!(
        s.acquire_lease("prod", "replica-a", 60_000).await.unwrap(),
        "free after release"
    );

    assert!(s.delete_remote("prod").await.unwrap());
    assert!(!s.delete_remote("prod").await.unwrap());
    assert!(s.get_remote("prod").await.unwrap().is_none());
}

async fn gc_marks_are_set_listed_and_cleared(f: Fixture) {
    let s = &f.store;
    assert!(s.gc_marks().await.unwrap().is_empty());
    let (a, b) = ("a".repeat(64), "b".repeat(64));
    let first = Timestamp::from_millis(1_000_000);
    s.mark_unreferenced(&[a.clone(), b.clone()], first)
        .await
        .unwrap();
    // Marking again keeps the first time: the grace period runs from when it was first seen.
    s.mark_unreferenced(std::slice::from_ref(&a), Timestamp::from_millis(2_000_000))
        .await
        .unwrap();
    let marks = s.gc_marks().await.unwrap();
    assert_eq!(marks.len(), 2);
    assert_eq!(marks[&a], first);
    s.clear_marks(std::slice::from_ref(&a)).await.unwrap();
    let marks = s.gc_marks().await.unwrap();
    assert_eq!(marks.keys().collect::<Vec<_>>(), [&b]);
    s.clear_marks(&[]).await.unwrap();
}

async fn a_cursor_the_store_did_not_issue_is_refused(f: Fixture) {
    let s = &f.store;
    let query = AuditQuery {
        action: None,
        before: Some("not-a-cursor".into()),
        limit: 10,
    };
    assert!(matches!(
        s.list_audit(&query).await,
        Err(StoreError::BadCursor)
    ));
}

macro_rules! metadata_conformance {
    ($($test:ident),* $(,)?) => {
        mod sqlite_metadata {
            $( #[tokio::test] async fn $test() { super::$test(super::sqlite().await).await } )*
        }
        mod mongo_metadata {
            $( #[tokio::test] async fn $test() { super::$test(super::mongo().await).await } )*
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
    keys_are_found_by_token_hash_and_revoked_once,
    the_audit_log_pages_newest_first_and_prunes_by_age,
    referenced_blobs_lists_every_slot_digest,
    remotes_keep_config_and_state_apart_and_leases_exclude,
    gc_marks_are_set_listed_and_cleared,
    a_cursor_the_store_did_not_issue_is_refused,
);
