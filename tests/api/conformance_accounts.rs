//! The conformance suite, continued: keys, the audit log, remotes and leases, and GC marks,
//! on every metadata backend.

use reliquary::store::{AuditQuery, AuditRecord, KeyRecord, RemoteConfig, RemoteState, StoreError};
use reliquary_client::types::{ApiKey, Kind, Role, Timestamp, TrustedPublisher};

use crate::conformance::{artefact, Fixture};

fn key(name: &str, role: Role) -> ApiKey {
    ApiKey {
        id: uuid::Uuid::new_v4().to_string(),
        name: name.into(),
        role,
        prefix: "rlq_abcd".into(),
        allowed_package_name: None,
        allowed_name_prefix: Some("acme".into()),
        allowed_category: None,
        allowed_ids: Some(vec!["acme-*@1".into()]),
        allowed_kinds: Some(vec![Kind::Branch]),
        created_at: Timestamp::now(),
        expires_at: None,
        last_used_at: None,
        revoked_at: None,
        trusted_publisher: None,
        oidc: None,
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
        once_key: None,
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
    // An entry with a once-key is written once, however often it is appended.
    for _ in 0..3 {
        s.append_audit(AuditRecord {
            once_key: Some("prod@1#42".into()),
            ..record("sync.mirror", Timestamp::now())
        })
        .await
        .unwrap();
    }
    let once = s
        .list_audit(&AuditQuery {
            action: Some("sync.mirror".into()),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(once.len(), 1);
    assert_eq!(s.prune_audit(cutoff).await.unwrap(), 1);
    assert_eq!(
        s.list_audit(&AuditQuery {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap()
        .len(),
        4,
        "three left after pruning, and the once-keyed entry"
    );
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
    let lease = s.lease("prod").await.unwrap().unwrap();
    assert_eq!(lease.holder, "replica-b", "who holds it is readable");
    assert!(lease.expires_at > Timestamp::now());
    s.release_lease("prod", "replica-b").await.unwrap();
    assert_eq!(s.lease("prod").await.unwrap(), None);
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

fn publisher(name: &str) -> TrustedPublisher {
    TrustedPublisher {
        name: name.into(),
        issuer: "https://token.actions.githubusercontent.com".into(),
        audience: "reliquary".into(),
        claims: [("repository".to_owned(), "acme/plugin".to_owned())].into(),
        allowed_ids: vec!["acme-plugin@*".into()],
        allowed_kinds: Some(vec![Kind::Release]),
        allowed_category: None,
        created_at: Timestamp::from_millis(1_000),
        updated_at: Timestamp::from_millis(2_000),
    }
}

async fn trusted_publishers_are_put_listed_and_deleted(f: Fixture) {
    let s = &f.store;
    assert!(s.list_publishers().await.unwrap().is_empty());
    assert!(s.put_publisher(&publisher("b-release")).await.unwrap());
    assert!(s.put_publisher(&publisher("a-staging")).await.unwrap());
    let mut changed = publisher("b-release");
    changed.allowed_ids = vec!["acme-plugin@2".into()];
    assert!(
        !s.put_publisher(&changed).await.unwrap(),
        "replaced, not created"
    );
    let names: Vec<String> = s
        .list_publishers()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["a-staging", "b-release"]);
    assert_eq!(s.get_publisher("b-release").await.unwrap(), Some(changed));
    assert!(s.delete_publisher("b-release").await.unwrap());
    assert!(!s.delete_publisher("b-release").await.unwrap());
    assert_eq!(s.get_publisher("b-release").await.unwrap(), None);
}

async fn a_token_id_is_claimed_once_until_it_expires(f: Fixture) {
    let s = &f.store;
    let at = |secs: i64| Timestamp::from_millis(secs * 1000);
    assert!(s.claim_token_id("iss#1", at(100), at(10)).await.unwrap());
    assert!(
        !s.claim_token_id("iss#1", at(100), at(20)).await.unwrap(),
        "a replay"
    );
    assert!(s.claim_token_id("iss#2", at(100), at(20)).await.unwrap());
    // Concurrent claims of one id: exactly one wins.
    let claims = (0..8).map(|_| s.claim_token_id("iss#3", at(100), at(30)));
    let won = futures::future::join_all(claims)
        .await
        .into_iter()
        .filter(|r| *r.as_ref().unwrap())
        .count();
    assert_eq!(won, 1);
    // Once expired, the record is pruned (the token itself would fail its `exp` check).
    assert!(s.claim_token_id("iss#1", at(300), at(101)).await.unwrap());
}

async fn exchanged_keys_are_pruned_after_they_expire(f: Fixture) {
    let s = &f.store;
    let mut exchanged = key("oidc:acme:1", Role::Publish);
    exchanged.trusted_publisher = Some("acme".into());
    exchanged.expires_at = Some(Timestamp::from_millis(10_000));
    let mut lasting = key("ci", Role::Publish);
    lasting.expires_at = Some(Timestamp::from_millis(10_000));
    for (k, hash) in [(&exchanged, "e"), (&lasting, "l")] {
        s.insert_key(KeyRecord {
            key: k.clone(),
            token_sha256: hash.into(),
        })
        .await
        .unwrap();
    }
    assert_eq!(
        s.prune_exchanged_keys(Timestamp::from_millis(10_000))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        s.prune_exchanged_keys(Timestamp::from_millis(10_001))
            .await
            .unwrap(),
        1
    );
    let left: Vec<String> = s
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| k.name)
        .collect();
    assert_eq!(left, ["ci"], "only keys from trusted publishing are pruned");
}

metadata_conformance!(
    trusted_publishers_are_put_listed_and_deleted,
    a_token_id_is_claimed_once_until_it_expires,
    exchanged_keys_are_pruned_after_they_expire,
    keys_are_found_by_token_hash_and_revoked_once,
    the_audit_log_pages_newest_first_and_prunes_by_age,
    remotes_keep_config_and_state_apart_and_leases_exclude,
    gc_marks_are_set_listed_and_cleared,
    a_cursor_the_store_did_not_issue_is_refused,
);
