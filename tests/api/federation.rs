//! Federation end to end: real registries on loopback mirroring each other.

use reliquary_client::jws::{Received, TrustedKeys};
use reliquary_client::types::{SyncSummary, WellKnown};
use serde_json::{json, Value};

use crate::common::*;
use crate::keys::create_key;

pub(crate) async fn named(name: &'static str) -> TestServer {
    TestServer::start_with(move |c| c.registry_name = name.into()).await
}

/// Points `mirror` at `origin` through a fresh mirror key; returns the remote as answered.
pub(crate) async fn add_remote(
    mirror: &TestServer,
    name: &str,
    origin: &TestServer,
    extra: Value,
) -> Value {
    let token = create_key(
        origin,
        json!({"name": format!("mirror-{name}"), "role": "mirror"}),
    )
    .await
    .token;
    let remote = put_new_remote(mirror, name, &origin.url, &token, extra).await;
    assert!(
        !remote.to_string().contains(&token),
        "the token is never echoed"
    );
    remote
}

/// `PUT /remotes/{name}` with any body; the status and the answer.
pub(crate) async fn put_remote(mirror: &TestServer, name: &str, body: &Value) -> (u16, Value) {
    let response = mirror
        .admin_put(&format!("/remotes/{name}"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// Creates a disabled remote (the tests run passes themselves) and checks it was created.
pub(crate) async fn put_new_remote(
    mirror: &TestServer,
    name: &str,
    url: &str,
    token: &str,
    extra: Value,
) -> Value {
    let mut body = json!({"url": url, "token": token, "intervalSeconds": 3600, "enabled": false});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let (status, remote) = put_remote(mirror, name, &body).await;
    assert_eq!(status, 201, "{remote}");
    remote
}

pub(crate) async fn sync(mirror: &TestServer, name: &str) -> SyncSummary {
    let response = mirror
        .admin(
            mirror
                .client
                .post(format!("{}/remotes/{name}/sync", mirror.url)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{}", response.text().await.unwrap());
    response.json().await.unwrap()
}

pub(crate) async fn doc(server: &TestServer, id: &str) -> (u16, Value) {
    let response = server
        .admin_get(&format!("/artefacts/{}", encode(id)))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn staging_mirrors_releases_with_their_signatures_and_never_branch_builds() {
    let production = named("production").await;
    let staging = named("staging").await;
    let noarch = npm_tarball_with("acme", "1.4.2", b"portable");
    let x64 = npm_tarball_with("acme", "1.4.2", b"native");
    let origin_doc = production
        .upload_ok("acme@1", "category=plugins", noarch.clone(), 201)
        .await;
    let origin_doc2 = production
        .upload_ok("acme@1", "architecture=x64", x64.clone(), 200)
        .await;
    production
        .upload_ok(
            "acme@main",
            "kind=branch",
            npm_tarball("acme", "1.5.0-dev"),
            201,
        )
        .await;
    staging
        .upload_ok(
            "acme@feature-x",
            "kind=branch",
            npm_tarball("acme", "1.6.0-dev"),
            201,
        )
        .await;

    let remote = add_remote(&staging, "prod", &production, json!({})).await;
    assert_eq!(remote["registry"], "production");
    let summary = sync(&staging, "prod").await;
    assert_eq!(
        (summary.mirrored, summary.deleted, summary.conflicts),
        (1, 0, 0),
        "{summary:?}"
    );
    assert_eq!(
        summary.cursor,
        origin_doc2["seq"].as_i64().unwrap().max(summary.cursor)
    );

    let (status, mirrored) = doc(&staging, "acme@1").await;
    assert_eq!(status, 200);
    assert_eq!(mirrored["origin"]["registry"], "production");
    assert_eq!(mirrored["origin"]["remote"], "prod");
    assert_eq!(
        mirrored["tarballs"], origin_doc2["tarballs"],
        "slots and signatures byte for byte"
    );
    assert_eq!(mirrored["dataUpdatedAt"], origin_doc2["dataUpdatedAt"]);
    assert_eq!(mirrored["category"], "plugins");
    let bytes = staging
        .get("/artefacts/acme@1/tarball?architecture=x64")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], &x64[..]);
    assert_eq!(
        origin_doc["tarballs"]["noarch"],
        mirrored["tarballs"]["noarch"]
    );

    assert_eq!(
        doc(&staging, "acme@main").await.0,
        404,
        "branch builds never leave production"
    );
    assert_eq!(
        doc(&staging, "acme@feature-x").await.0,
        200,
        "staging keeps its own branch builds"
    );

    // A staging consumer verifies the mirrored slot against production's key.
    let production_keys: WellKnown = production
        .get("/.well-known/reliquary")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let trusted = TrustedKeys::from_jwks(&production_keys.keys).unwrap();
    let slot = &mirrored["tarballs"]["x64"];
    let payload = trusted.verify(slot["signature"].as_str().unwrap()).unwrap();
    payload
        .check_matches(&Received {
            id: "acme@1",
            architecture: "x64",
            sha256: &sha256_hex(&bytes),
            size: bytes.len() as u64,
        })
        .unwrap();
    assert_eq!(payload.registry, "production");
    let staging_keys: WellKnown = staging
        .get("/.well-known/reliquary")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(staging_keys.mirrored_keys[0].registry, "production");

    // Mirrored artefacts are read-only locally.
    let upload = staging
        .upload("acme@1", "", npm_tarball("acme", "9.0.0"))
        .await;
    expect_error(upload, 409, "artefact_mirrored").await;

    let remotes: Value = staging
        .admin_get("/remotes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let listed = &remotes["items"][0];
    assert_eq!(listed["mirroredArtefacts"], 1);
    assert!(listed["lastSuccessAt"].is_string());
    assert!(listed.get("token").is_none());
}

#[tokio::test]
async fn updates_new_slots_and_deletions_follow() {
    let production = named("production").await;
    let staging = named("staging").await;
    production
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    production
        .upload_ok("gone@1", "", npm_tarball("gone", "1.0.0"), 201)
        .await;
    add_remote(&staging, "prod", &production, json!({})).await;
    assert_eq!(sync(&staging, "prod").await.mirrored, 2);

    production
        .upload_ok("acme@1", "", npm_tarball("acme", "1.1.0"), 200)
        .await;
    production
        .upload_ok(
            "acme@1",
            "architecture=arm64",
            npm_tarball_with("acme", "1.1.0", b"arm"),
            200,
        )
        .await;
    production
        .admin(
            production
                .client
                .delete(format!("{}/artefacts/gone@1", production.url)),
        )
        .send()
        .await
        .unwrap();
    let summary = sync(&staging, "prod").await;
    assert_eq!((summary.mirrored, summary.deleted), (1, 1), "{summary:?}");
    let (_, acme) = doc(&staging, "acme@1").await;
    assert_eq!(acme["version"], "1.1.0");
    assert_eq!(acme["tarballs"].as_object().unwrap().len(), 2);
    assert_eq!(doc(&staging, "gone@1").await.0, 404);

    production
        .admin_delete("/artefacts/acme@1/tarballs/arm64")
        .send()
        .await
        .unwrap();
    sync(&staging, "prod").await;
    let (_, acme) = doc(&staging, "acme@1").await;
    assert_eq!(
        acme["tarballs"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["noarch"]
    );

    // Nothing new: a pass changes nothing.
    let idle = sync(&staging, "prod").await;
    assert_eq!(
        (idle.mirrored, idle.deleted, idle.skipped),
        (0, 0, 0),
        "{idle:?}"
    );

    let audit: Value = staging
        .admin_get("/audit?action=sync.delete")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit["items"][0]["artefactId"], "gone@1");
}

#[tokio::test]
async fn a_local_artefact_wins_a_conflict() {
    let production = named("production").await;
    let staging = named("staging").await;
    production
        .upload_ok("acme@1", "", npm_tarball("acme", "2.0.0"), 201)
        .await;
    let local = staging
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    add_remote(&staging, "prod", &production, json!({})).await;
    let summary = sync(&staging, "prod").await;
    assert_eq!((summary.mirrored, summary.conflicts), (0, 1));
    assert_eq!(doc(&staging, "acme@1").await.1, local, "untouched");
    let audit: Value = staging
        .admin_get("/audit?action=sync.conflict")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit["items"][0]["artefactId"], "acme@1");
    assert_eq!(audit["items"][0]["keyName"], "remote:prod");
}

#[tokio::test]
async fn filters_limit_what_is_mirrored() {
    let production = named("production").await;
    let staging = named("staging").await;
    production
        .upload_ok(
            "acme-a@1",
            "category=plugins",
            npm_tarball("acme-a", "1.0.0"),
            201,
        )
        .await;
    production
        .upload_ok(
            "acme-a@1",
            "architecture=x64",
            npm_tarball_with("acme-a", "1.0.0", b"x"),
            200,
        )
        .await;
    production
        .upload_ok(
            "acme-b@1",
            "category=services",
            npm_tarball("acme-b", "1.0.0"),
            201,
        )
        .await;
    production
        .upload_ok(
            "other@1",
            "category=plugins",
            npm_tarball("other", "1.0.0"),
            201,
        )
        .await;
    add_remote(
        &staging,
        "prod",
        &production,
        json!({"allowedNamePrefix": "acme-", "allowedCategory": "plugins", "architectures": ["x64"]}),
    )
    .await;
    let summary = sync(&staging, "prod").await;
    assert_eq!((summary.mirrored, summary.skipped), (1, 2), "{summary:?}");
    let (_, acme) = doc(&staging, "acme-a@1").await;
    assert_eq!(
        acme["tarballs"]
            .as_object()
            .unwrap()
            .keys()
            .collect::<Vec<_>>(),
        ["x64"]
    );
    assert_eq!(doc(&staging, "acme-b@1").await.0, 404);
    assert_eq!(doc(&staging, "other@1").await.0, 404);
}

#[tokio::test]
async fn staging_keeps_serving_while_the_peer_is_down_and_catches_up_after() {
    let production = named("production").await;
    let staging = named("staging").await;
    let tarball = npm_tarball("acme", "1.0.0");
    production
        .upload_ok("acme@1", "", tarball.clone(), 201)
        .await;
    add_remote(&staging, "prod", &production, json!({})).await;
    sync(&staging, "prod").await;

    let address = production.url.trim_start_matches("http://").to_owned();
    let (config, dir) = production.stop().await;
    let failed = staging
        .admin(
            staging
                .client
                .post(format!("{}/remotes/prod/sync", staging.url)),
        )
        .send()
        .await
        .unwrap();
    expect_error(failed, 502, "sync_failed").await;
    let bytes = staging
        .get("/artefacts/acme@1/tarball")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        &bytes[..],
        &tarball[..],
        "mirrored artefacts are served while the peer is down"
    );
    let remotes: Value = staging
        .admin_get("/remotes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        remotes["items"][0]["lastError"]
            .as_str()
            .unwrap()
            .contains("change feed"),
        "{remotes}"
    );

    let production = TestServer::launch_at(config, &address).await;
    production
        .upload_ok("acme@1", "", npm_tarball("acme", "1.1.0"), 200)
        .await;
    let summary = sync(&staging, "prod").await;
    assert_eq!(summary.mirrored, 1);
    assert_eq!(doc(&staging, "acme@1").await.1["version"], "1.1.0");
    let remotes: Value = staging
        .admin_get("/remotes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(remotes["items"][0]["lastError"].is_null());
    drop(dir);
}

#[tokio::test]
async fn a_pass_that_fails_mid_page_resumes_without_loss_or_duplication() {
    // Local blobs on production: the test breaks one of them to make a pass fail half-way.
    let production = TestServer::start_with(|c| {
        c.registry_name = "production".into();
        c.storage = None;
    })
    .await;
    let staging = named("staging").await;
    let mut broken = None;
    for i in 0..6 {
        let doc = production
            .upload_ok(
                &format!("p{i}@1"),
                "",
                npm_tarball(&format!("p{i}"), "1.0.0"),
                201,
            )
            .await;
        if i == 3 {
            broken = Some(
                doc["tarballs"]["noarch"]["sha256"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
    }
    let blob = production
        .data_dir()
        .join("blobs/sha256")
        .join(broken.unwrap());
    let good = std::fs::read(&blob).unwrap();
    std::fs::write(&blob, b"corrupted").unwrap();

    add_remote(&staging, "prod", &production, json!({})).await;
    let failed = staging
        .admin(
            staging
                .client
                .post(format!("{}/remotes/prod/sync", staging.url)),
        )
        .send()
        .await
        .unwrap();
    let body = expect_error(failed, 502, "sync_failed").await;
    assert!(body["message"].as_str().unwrap().contains("p3@1"), "{body}");
    let remotes: Value = staging
        .admin_get("/remotes")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        remotes["items"][0]["cursor"], 0,
        "the cursor does not move past a page that failed"
    );
    assert_eq!(doc(&staging, "p4@1").await.0, 404);

    std::fs::write(&blob, good).unwrap();
    let summary = sync(&staging, "prod").await;
    assert_eq!(summary.mirrored + summary.skipped, 6, "{summary:?}");
    assert_eq!(
        summary.mirrored, 3,
        "only what was not applied yet is written again: {summary:?}"
    );
    for i in 0..6 {
        let (status, mirrored) = doc(&staging, &format!("p{i}@1")).await;
        assert_eq!(status, 200);
        assert_eq!(mirrored["revision"], 1, "applied exactly once");
    }
}
