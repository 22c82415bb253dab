//! Federation end to end, continued: topologies (mutual mirrors, chains), long-polling,
//! remote validation and the command line.

use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::common::*;
use crate::federation::{add_remote, doc, named, sync};
use crate::keys::create_key;

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
