//! Federation end to end: real registries on loopback mirroring each other.

use std::time::{Duration, Instant};

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
    let mut body =
        json!({"url": origin.url, "token": token, "intervalSeconds": 3600, "enabled": false});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    let response = mirror
        .admin_put(&format!("/remotes/{name}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status();
    let remote: Value = response.json().await.unwrap();
    assert_eq!(status, 201, "{remote}");
    assert!(
        !remote.to_string().contains(&token),
        "the token is never echoed"
    );
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

#[tokio::test]
async fn two_registries_mirroring_each_other_converge_without_ping_pong() {
    let east = named("east").await;
    let west = named("west").await;
    east.upload_ok("e@1", "", npm_tarball("e", "1.0.0"), 201)
        .await;
    west.upload_ok("w@1", "", npm_tarball("w", "1.0.0"), 201)
        .await;
    add_remote(&east, "west", &west, json!({})).await;
    add_remote(&west, "east", &east, json!({})).await;
    for _ in 0..3 {
        sync(&east, "west").await;
        sync(&west, "east").await;
    }
    let (_, w_on_east) = doc(&east, "w@1").await;
    let (_, e_on_west) = doc(&west, "e@1").await;
    assert_eq!(w_on_east["origin"]["registry"], "west");
    assert_eq!(e_on_west["origin"]["registry"], "east");
    assert_eq!(w_on_east["revision"], 1);
    assert_eq!(e_on_west["revision"], 1);
    let (_, e_on_east) = doc(&east, "e@1").await;
    assert!(
        e_on_east["origin"].is_null(),
        "never mirrored back to its origin"
    );
    let quiet = sync(&east, "west").await;
    assert_eq!((quiet.mirrored, quiet.deleted, quiet.conflicts), (0, 0, 0));
}

#[tokio::test]
async fn a_chain_production_staging_dev_carries_releases_and_origin_signatures() {
    let production = named("production").await;
    let staging = named("staging").await;
    let dev = named("dev").await;
    production
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    staging
        .upload_ok(
            "staging-only@main",
            "kind=branch",
            npm_tarball("staging-only", "0.1.0"),
            201,
        )
        .await;
    add_remote(&staging, "prod", &production, json!({})).await;
    sync(&staging, "prod").await;
    let remote = add_remote(&dev, "staging", &staging, json!({})).await;
    assert_eq!(remote["registry"], "staging");
    let summary = sync(&dev, "staging").await;
    assert_eq!(summary.mirrored, 1, "{summary:?}");
    let (_, on_dev) = doc(&dev, "acme@1").await;
    assert_eq!(
        on_dev["origin"]["registry"], "production",
        "the origin is kept along the chain"
    );
    assert_eq!(on_dev["origin"]["remote"], "staging");
    assert_eq!(doc(&dev, "staging-only@main").await.0, 404);
}

#[tokio::test]
async fn the_worker_long_polls_and_mirrors_a_publish_without_a_manual_pass() {
    let production = named("production").await;
    let staging = named("staging").await;
    add_remote(
        &staging,
        "prod",
        &production,
        json!({"enabled": true, "intervalSeconds": 20}),
    )
    .await;
    // Give the worker its first (empty) pass, then publish while it long-polls.
    tokio::time::sleep(Duration::from_millis(300)).await;
    production
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    let deadline = Instant::now() + Duration::from_secs(15);
    while doc(&staging, "acme@1").await.0 != 200 {
        assert!(
            Instant::now() < deadline,
            "the worker did not mirror the publish"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = staging
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("reliquary_sync_artefacts_mirrored_total{remote=\"prod\"} 1"),
        "{metrics}"
    );
    // Disabling the remote stops the worker; deleting it with purge removes what it mirrored.
    let deleted = staging
        .admin(
            staging
                .client
                .delete(format!("{}/remotes/prod?purge=true", staging.url)),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 200);
    assert_eq!(doc(&staging, "acme@1").await.0, 404);
}

#[tokio::test]
async fn the_change_feed_long_polls() {
    let server = TestServer::start().await;
    let first = server
        .upload_ok("a@1", "", npm_tarball("a", "1.0.0"), 201)
        .await;
    let since = first["seq"].as_i64().unwrap();
    let started = Instant::now();
    let poll = server
        .admin_get(&format!("/artefacts?since={since}&wait=20"))
        .send();
    let publish = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        server
            .upload_ok("b@1", "", npm_tarball("b", "1.0.0"), 201)
            .await
    };
    let (page, _) = tokio::join!(poll, publish);
    let page: Value = page.unwrap().json().await.unwrap();
    assert_eq!(page["items"][0]["id"], "b@1");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "answered on the change, not at the timeout"
    );
    let empty: Value = server
        .admin_get(&format!("/artefacts?since={}&wait=1", page["lastSeq"]))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(empty["items"].as_array().unwrap().is_empty());
    expect_error(
        server
            .admin_get("/artefacts?since=0&wait=61")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_query",
    )
    .await;
}

#[tokio::test]
async fn remotes_are_validated_and_admin_only() {
    let staging = named("staging").await;
    let bad = staging
        .admin(
            staging
                .client
                .put(format!("{}/remotes/Bad%20Name", staging.url)),
        )
        .json(&json!({"url": "ftp://x", "token": "", "intervalSeconds": 0}))
        .send()
        .await
        .unwrap();
    let body = expect_error(bad, 400, "invalid_remote").await;
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("url") && message.contains("token") && message.contains("intervalSeconds"),
        "{message}"
    );
    let unreachable = staging
        .admin_put("/remotes/prod")
        .json(&json!({"url": "http://127.0.0.1:9", "token": "rlq_x"}))
        .send()
        .await
        .unwrap();
    expect_error(unreachable, 502, "remote_unreachable").await;
    let itself = create_key(&staging, json!({"name": "self", "role": "mirror"}))
        .await
        .token;
    let to_self = staging
        .admin_put("/remotes/me")
        .json(&json!({"url": staging.url, "token": itself}))
        .send()
        .await
        .unwrap();
    expect_error(to_self, 400, "remote_is_self").await;
    let anonymous = staging.get("/remotes").send().await.unwrap();
    expect_error(anonymous, 401, "unauthorized").await;
    let missing = staging
        .admin(
            staging
                .client
                .post(format!("{}/remotes/none/sync", staging.url)),
        )
        .send()
        .await
        .unwrap();
    expect_error(missing, 404, "remote_not_found").await;
}

// Multi-threaded: the commands block this thread while the in-process servers answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn remotes_from_the_command_line() {
    let production = named("production").await;
    let staging = named("staging").await;
    production
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    let peer_token = create_key(&production, json!({"name": "staging", "role": "mirror"}))
        .await
        .token;
    let run = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_reliquary"))
            .args(args)
            .args(["--registry", &staging.url, "--token", ADMIN_TOKEN])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let put = run(&[
        "remotes",
        "put",
        "prod",
        "--url",
        &production.url,
        "--peer-token",
        &peer_token,
        "--disabled",
    ]);
    assert!(put.contains("mirrors registry `production`"), "{put}");
    let synced: Value = serde_json::from_str(&run(&["remotes", "sync", "prod", "--json"])).unwrap();
    assert_eq!(synced["mirrored"], 1);
    let listed = run(&["remotes", "list"]);
    assert!(
        listed.contains("prod") && listed.contains("mirrored=1") && listed.contains("lag=0"),
        "{listed}"
    );
    assert!(!listed.contains(&peer_token));
    let deleted = run(&["remotes", "delete", "prod", "--purge"]);
    assert!(deleted.contains("Deleted remote prod"), "{deleted}");
    assert_eq!(doc(&staging, "acme@1").await.0, 404);
}

#[tokio::test]
async fn of_two_remotes_offering_one_id_the_first_mirrored_keeps_it() {
    let east = named("east").await;
    let west = named("west").await;
    let hub = named("hub").await;
    east.upload_ok(
        "acme@1",
        "",
        npm_tarball_with("acme", "1.0.0", b"east"),
        201,
    )
    .await;
    west.upload_ok(
        "acme@1",
        "",
        npm_tarball_with("acme", "2.0.0", b"west"),
        201,
    )
    .await;
    add_remote(&hub, "east", &east, json!({})).await;
    add_remote(&hub, "west", &west, json!({})).await;
    assert_eq!(sync(&hub, "east").await.mirrored, 1);
    let from_west = sync(&hub, "west").await;
    assert_eq!((from_west.mirrored, from_west.conflicts), (0, 1));
    let (_, doc_on_hub) = doc(&hub, "acme@1").await;
    assert_eq!(doc_on_hub["origin"]["remote"], "east");
    assert_eq!(doc_on_hub["version"], "1.0.0");
    // Later changes from the owner still flow; the other remote keeps conflicting.
    east.upload_ok(
        "acme@1",
        "",
        npm_tarball_with("acme", "1.1.0", b"east2"),
        200,
    )
    .await;
    assert_eq!(sync(&hub, "east").await.mirrored, 1);
    assert_eq!(doc(&hub, "acme@1").await.1["version"], "1.1.0");
}
