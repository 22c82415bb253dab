//! Trust boundaries, continued: how keys are (not) re-pinned, and what a peer's bytes must say.

use reliquary_client::types::WellKnown;
use serde_json::{json, Value};

use crate::common::*;
use crate::federation::{put_remote, sync};
use crate::hostile_peer::{Feed, HostilePeer, Tarball};

async fn put(mirror: &TestServer, name: &str, body: Value) -> (u16, Value) {
    put_remote(mirror, name, &body).await
}

#[tokio::test]
async fn a_peer_that_changes_its_keys_is_re_pinned_only_explicitly() {
    let first = HostilePeer::start("production").await;
    let mirror = TestServer::start_with(|c| c.registry_name = "staging".into()).await;
    let (status, _) = put(
        &mirror,
        "prod",
        json!({"url": first.url, "token": "t", "enabled": false}),
    )
    .await;
    assert_eq!(status, 201);
    // The same peer with a trailing slash is the same peer: nothing is fetched or re-pinned.
    let (status, remote) = put(
        &mirror,
        "prod",
        json!({"url": format!("{}/", first.url), "token": "t", "enabled": false}),
    )
    .await;
    assert_eq!(status, 200, "{remote}");

    // "production" moves to a host with other keys: refused until pinned explicitly.
    let moved = HostilePeer::start("production").await;
    let (status, body) = put(
        &mirror,
        "prod",
        json!({"url": moved.url, "token": "t", "enabled": false}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("registry_keys_conflict")),
        "{body}"
    );
    let keys: WellKnown = mirror
        .get("/.well-known/reliquary")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        serde_json::to_value(&keys.mirrored_keys[0].keys).unwrap(),
        json!([first.jwk()]),
        "the old pin stands"
    );
    let (status, body) = put(
        &mirror,
        "prod",
        json!({"url": moved.url, "token": "t", "enabled": false,
               "trustedKeys": {"production": [moved.jwk()]}}),
    )
    .await;
    assert_eq!(status, 200, "{body}");

    // Absurd key lists are refused before anything is stored.
    let flood = HostilePeer::start("flood").await;
    let sets: Vec<Value> = (0..100)
        .map(|i| json!({"registry": format!("r{i}"), "keys": [flood.jwk()]}))
        .collect();
    flood.set_well_known_extra(json!({"mirroredKeys": sets}));
    let (status, body) = put(
        &mirror,
        "flood",
        json!({"url": flood.url, "token": "t", "enabled": false}),
    )
    .await;
    assert_eq!(
        (status, body["code"].as_str()),
        (502, Some("remote_invalid_keys")),
        "{body}"
    );
}

#[tokio::test]
async fn the_bytes_must_say_what_the_document_says_and_redirects_are_not_followed() {
    let peer = HostilePeer::start("evilcorp").await;
    // Signed as `acme` 1.0.0 over bytes whose package.json says `evil` 9.9.9.
    let evil = npm_tarball("evil", "9.9.9");
    let mut lying = peer.signed_document(
        "acme@1",
        "noarch",
        "acme",
        &sha256_hex(&evil),
        evil.len() as u64,
        1,
        "evilcorp",
    );
    lying["packageName"] = json!("acme");
    peer.set_tarball("acme@1", "noarch", Tarball::Bytes(evil));
    let elsewhere = peer.document("moved@1", "noarch", &npm_tarball("moved", "1.0.0"), 2);
    peer.set_tarball(
        "moved@1",
        "noarch",
        Tarball::Redirect("http://127.0.0.1:9/x".into()),
    );
    let good = peer.document("good@1", "noarch", &npm_tarball("good", "1.0.0"), 3);
    peer.set_feed(Feed::Items(vec![lying, elsewhere, good]));

    let mirror = TestServer::start_with(|c| c.registry_name = "staging".into()).await;
    let (status, _) = put(
        &mirror,
        "evil",
        json!({"url": peer.url, "token": "t", "enabled": false}),
    )
    .await;
    assert_eq!(status, 201);
    let summary = sync(&mirror, "evil").await;
    assert_eq!((summary.mirrored, summary.skipped), (1, 2), "{summary:?}");
    assert!(
        summary.invalid[0]
            .reason
            .contains("package.json says evil 9.9.9"),
        "{summary:?}"
    );
    assert!(summary.invalid[1].reason.contains("302"), "{summary:?}");
}

#[tokio::test]
async fn a_pass_from_the_start_judges_refused_items_again() {
    let peer = HostilePeer::start("flaky").await;
    let bytes = npm_tarball("flaky", "1.0.0");
    let item = peer.document("flaky@1", "noarch", &bytes, 1);
    peer.set_tarball("flaky@1", "noarch", Tarball::NotFound);
    peer.set_feed(Feed::Items(vec![item]));
    let mirror = TestServer::start_with(|c| c.registry_name = "staging".into()).await;
    put(
        &mirror,
        "flaky",
        json!({"url": peer.url, "token": "t", "enabled": false}),
    )
    .await;
    let summary = sync(&mirror, "flaky").await;
    assert_eq!((summary.mirrored, summary.skipped), (0, 1), "{summary:?}");
    // The peer repairs its blob; an ordinary pass starts past the item, one from the start does not.
    peer.set_tarball("flaky@1", "noarch", Tarball::Bytes(bytes));
    assert_eq!(sync(&mirror, "flaky").await.mirrored, 0);
    let response = mirror
        .admin_post("/remotes/flaky/sync?from_start=true")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let summary: reliquary_client::types::SyncSummary = response.json().await.unwrap();
    assert_eq!(summary.mirrored, 1, "{summary:?}");
}
