//! The peer half of "Trust boundaries (v1.1)": a hostile peer can cost a mirror nothing but its
//! own artefacts. Each test drives the hostile peer double through one attack and asserts on
//! what a local reader and a downstream mirror see afterwards.

use std::time::{Duration, Instant};

use reliquary_client::jws::SigningPayload;
use reliquary_client::types::{Kind, Timestamp, WellKnown};
use serde_json::{json, Value};

use crate::common::*;
use crate::federation::{add_remote, doc, named, put_new_remote, sync};
use crate::hostile_peer::{Feed, HostilePeer, Tarball};

/// A mirror whose peer requests time out after a second, so stalls show quickly.
async fn mirror(name: &'static str) -> TestServer {
    TestServer::start_with(move |c| {
        c.registry_name = name.into();
        c.peer_timeout = Duration::from_secs(1);
    })
    .await
}

/// Adds the hostile peer as remote `name` (its token is not checked by the double).
async fn add_peer(mirror: &TestServer, name: &str, peer: &HostilePeer, extra: Value) -> Value {
    put_new_remote(mirror, name, &peer.url, "any", extra).await
}

/// Runs a pass that is expected to fail; returns the error body and the remote afterwards.
async fn failing_sync(mirror: &TestServer, name: &str) -> (Value, Value) {
    let response = mirror
        .admin_post(&format!("/remotes/{name}/sync"))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap();
    assert_eq!(status, 502, "{body}");
    (body, remote(mirror, name).await)
}

async fn remote(mirror: &TestServer, name: &str) -> Value {
    let remotes: Value = mirror.admin_json("/remotes").await;
    remotes["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .cloned()
        .expect("remote listed")
}

pub async fn audit(server: &TestServer, action: &str) -> Vec<Value> {
    let page: Value = server
        .admin_json(&format!("/audit?action={action}&limit=500"))
        .await;
    page["items"].as_array().unwrap().clone()
}

async fn ids(server: &TestServer, token: Option<&str>) -> Vec<String> {
    let mut request = server.get("/artefacts?limit=500");
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let page: Value = request.send().await.unwrap().json().await.unwrap();
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn invalid_names_from_a_peer_are_refused_and_the_valid_ones_still_mirror() {
    let peer = HostilePeer::start("evilcorp").await;
    let bytes = npm_tarball("good", "1.0.0");
    let good = peer.document("good@1", "noarch", &bytes, 20);
    let mut items = Vec::new();
    let long = "a".repeat(3000);
    for (seq, id) in [
        "EVIL@1",
        "../../etc/passwd",
        "",
        "nul\0byte@1",
        long.as_str(),
    ]
    .into_iter()
    .enumerate()
    {
        items.push(peer.document(id, "noarch", &bytes, seq as i64 + 1));
    }
    for (seq, arch) in ["X64", "../../x", ""].into_iter().enumerate() {
        items.push(peer.document("archy@1", arch, &bytes, seq as i64 + 10));
    }
    let mut injected = peer.document("shell@1", "noarch", &bytes, 15);
    injected["packageName"] = json!("x\"; touch /tmp/pwned; echo \"");
    items.push(injected);
    items.push(json!({"id": "garbage@1", "seq": 16, "kind": "evil"}));
    items.push(good);
    peer.set_feed(Feed::Items(items));

    let staging = mirror("staging").await;
    add_peer(&staging, "evil", &peer, json!({})).await;
    let summary = sync(&staging, "evil").await;
    assert_eq!(summary.mirrored, 1, "{summary:?}");
    assert_eq!(summary.skipped, 10, "{summary:?}");
    assert_eq!(summary.invalid.len(), 10, "{summary:?}");
    assert_eq!(summary.cursor, 20, "the pass went past every refused item");

    assert_eq!(ids(&staging, Some(ADMIN_TOKEN)).await, ["good@1"]);
    let listed = remote(&staging, "evil").await;
    assert!(
        listed["lastError"]
            .as_str()
            .unwrap()
            .contains("refused as invalid"),
        "{listed}"
    );
    let refused = audit(&staging, "sync.invalid").await;
    assert_eq!(refused.len(), 10, "{refused:?}");
    assert!(refused
        .iter()
        .all(|e| e["detail"].as_str().unwrap().len() <= 1024));

    // A downstream mirror of staging never sees the refused items and is never stuck.
    let dev = named("dev").await;
    add_remote(&dev, "staging", &staging, json!({})).await;
    let downstream = sync(&dev, "staging").await;
    assert_eq!(
        (downstream.mirrored, downstream.skipped),
        (1, 0),
        "{downstream:?}"
    );
    assert_eq!(ids(&dev, Some(ADMIN_TOKEN)).await, ["good@1"]);
}

#[tokio::test]
async fn a_second_remote_cannot_poison_the_keys_of_a_registry_pinned_directly() {
    let production = named("production").await;
    production
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    let staging = mirror("staging").await;
    add_remote(&staging, "prod", &production, json!({})).await;

    // A peer whose name sorts first relays its own key as production's and offers a document
    // "mirrored from production", signed with that key.
    let peer = HostilePeer::start("aaa-evil").await;
    peer.set_well_known_extra(
        json!({"mirroredKeys": [{"registry": "production", "keys": [peer.jwk()]}]}),
    );
    let bytes = npm_tarball("spoofed", "1.0.0");
    peer.set_tarball("spoofed@1", "noarch", Tarball::Bytes(bytes.clone()));
    let spoofed = peer.signed_document(
        "spoofed@1",
        "noarch",
        "spoofed",
        &sha256_hex(&bytes),
        bytes.len() as u64,
        1,
        "production",
    );
    peer.set_feed(Feed::Items(vec![spoofed]));
    add_peer(&staging, "aaa", &peer, json!({})).await;

    let summary = sync(&staging, "aaa").await;
    assert_eq!((summary.mirrored, summary.skipped), (0, 1), "{summary:?}");
    assert!(
        summary.invalid[0].reason.contains("conflicts"),
        "{summary:?}"
    );
    assert!(remote(&staging, "aaa").await["lastError"]
        .as_str()
        .unwrap()
        .contains("conflicts"));
    assert_eq!(doc(&staging, "spoofed@1").await.0, 404);
    assert_eq!(sync(&staging, "prod").await.mirrored, 1);

    // The well-known document publishes production's real key, with the remote it came by.
    let production_keys: WellKnown = production
        .get("/.well-known/reliquary")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let staging_keys: WellKnown = staging
        .get("/.well-known/reliquary")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let published: Vec<_> = staging_keys
        .mirrored_keys
        .iter()
        .filter(|set| set.registry == "production")
        .collect();
    assert_eq!(published.len(), 1, "{staging_keys:?}");
    assert_eq!(published[0].keys, production_keys.keys);
    assert_eq!(published[0].remote.as_deref(), Some("prod"));
    assert_eq!(published[0].source.as_deref(), Some("peer"));
    let listed = remote(&staging, "aaa").await;
    let relayed = listed["pinnedKeys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|set| set["registry"] == "production")
        .expect("the relayed set is shown");
    assert_eq!(relayed["source"], "relayed", "{listed}");

    // A downstream mirror pins staging and still verifies real production artefacts.
    let dev = named("dev").await;
    add_remote(&dev, "staging", &staging, json!({})).await;
    let downstream = sync(&dev, "staging").await;
    assert_eq!(
        (downstream.mirrored, downstream.skipped),
        (1, 0),
        "{downstream:?}"
    );

    // A peer that claims to *be* production, with another key, is refused outright.
    let impostor = HostilePeer::start("production").await;
    let response = staging
        .admin_put("/remotes/impostor")
        .json(&json!({"url": impostor.url, "token": "any", "enabled": false}))
        .send()
        .await
        .unwrap();
    expect_error(response, 409, "registry_keys_conflict").await;
}

#[tokio::test]
async fn keys_pinned_explicitly_verify_a_chain_without_trusting_the_relay() {
    let peer = HostilePeer::start("relay").await;
    let origin_key = HostilePeer::start("origin").await;
    let bytes = npm_tarball("chained", "1.0.0");
    peer.set_tarball("chained@1", "noarch", Tarball::Bytes(bytes.clone()));
    // Signed with the real origin's key; the relay lists no keys for `origin` at all.
    let mut item = origin_key.signed_document(
        "chained@1",
        "noarch",
        "chained",
        &sha256_hex(&bytes),
        bytes.len() as u64,
        1,
        "origin",
    );
    item["origin"] = json!({"registry": "origin", "remote": "x", "syncedAt": Timestamp::now()});
    peer.set_feed(Feed::Items(vec![item]));
    let staging = mirror("staging").await;
    add_peer(&staging, "relay", &peer, json!({})).await;
    let summary = sync(&staging, "relay").await;
    assert_eq!(
        summary.skipped, 1,
        "no key is pinned for `origin`: {summary:?}"
    );
    assert!(
        summary.invalid[0].reason.contains("no keys are pinned"),
        "{summary:?}"
    );

    // Pinning the origin's key explicitly re-reads the feed and the item verifies.
    let response = staging
        .admin_put("/remotes/relay")
        .json(&json!({"url": peer.url, "token": "any", "enabled": false,
                      "trustedKeys": {"origin": [origin_key.jwk()]}}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let summary = sync(&staging, "relay").await;
    assert_eq!(summary.mirrored, 1, "{summary:?}");
    let listed = remote(&staging, "relay").await;
    let sources: Vec<&str> = listed["pinnedKeys"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["source"].as_str().unwrap())
        .collect();
    assert!(
        sources.contains(&"trusted") && sources.contains(&"peer"),
        "{listed}"
    );

    // Malformed trusted keys are a 400 that changes nothing.
    let response = staging
        .admin_put("/remotes/relay")
        .json(&json!({"url": peer.url, "token": "any", "trustedKeys": {"origin": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA", "kid": "k", "use": "sig"}]}}))
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "invalid_remote").await;
}

#[tokio::test]
async fn a_peer_cannot_substitute_a_local_blob_or_lie_about_a_size() {
    let staging = mirror("staging").await;
    let branch = npm_tarball("secret", "0.1.0-dev");
    staging
        .upload_ok("secret@main", "kind=branch", branch.clone(), 201)
        .await;

    let peer = HostilePeer::start("evilcorp").await;
    // The peer knows only the hash and size of the local branch build.
    let substituted = peer.signed_document(
        "leak@1",
        "noarch",
        "leak",
        &sha256_hex(&branch),
        branch.len() as u64,
        1,
        "evilcorp",
    );
    peer.set_tarball("leak@1", "noarch", Tarball::NotFound);
    let small = npm_tarball("liar", "1.0.0");
    let lying_size = peer.signed_document(
        "liar@1",
        "noarch",
        "liar",
        &sha256_hex(&small),
        999_999,
        2,
        "evilcorp",
    );
    peer.set_tarball("liar@1", "noarch", Tarball::Bytes(small));
    peer.set_feed(Feed::Items(vec![substituted, lying_size]));
    add_peer(&staging, "evil", &peer, json!({})).await;

    let summary = sync(&staging, "evil").await;
    assert_eq!((summary.mirrored, summary.skipped), (0, 2), "{summary:?}");
    assert!(summary.invalid[1].reason.contains("999999"), "{summary:?}");
    assert_eq!(doc(&staging, "leak@1").await.0, 404);
    assert_eq!(doc(&staging, "liar@1").await.0, 404);
    let anonymous = staging
        .get("/artefacts/leak@1/tarball")
        .send()
        .await
        .unwrap();
    assert_eq!(
        anonymous.status(),
        404,
        "the branch build is not served as a release"
    );
}

#[tokio::test]
async fn a_signature_must_say_what_the_document_says() {
    let peer = HostilePeer::start("evilcorp").await;
    let bytes = npm_tarball("acme", "1.0.0");
    let mut lies = Vec::new();
    for (seq, (field, value)) in [
        ("kind", json!("branch")),
        ("packageName", json!("other")),
        ("version", json!("2.0.0")),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("lie{seq}@1");
        let mut payload = SigningPayload {
            architecture: "noarch".into(),
            id: id.clone(),
            kind: Kind::Release,
            package_name: "acme".into(),
            registry: "evilcorp".into(),
            sha256: sha256_hex(&bytes),
            signed_at: Timestamp::now(),
            size: bytes.len() as u64,
            version: "1.0.0".into(),
        };
        match field {
            "kind" => payload.kind = Kind::Branch,
            "packageName" => payload.package_name = value.as_str().unwrap().into(),
            _ => payload.version = value.as_str().unwrap().into(),
        }
        let mut item = peer.document(&id, "noarch", &bytes, seq as i64 + 1);
        item["packageName"] = json!("acme");
        item["tarballs"]["noarch"]["signature"] = json!(peer.sign(&payload));
        lies.push(item);
    }
    peer.set_feed(Feed::Items(lies));
    let staging = mirror("staging").await;
    add_peer(&staging, "evil", &peer, json!({})).await;
    let summary = sync(&staging, "evil").await;
    assert_eq!((summary.mirrored, summary.skipped), (0, 3), "{summary:?}");
    for (item, field) in summary
        .invalid
        .iter()
        .zip(["kind", "packageName", "version"])
    {
        assert!(item.reason.contains(field), "{item:?}");
    }
    assert!(ids(&staging, Some(ADMIN_TOKEN)).await.is_empty());
}

#[tokio::test]
async fn the_ui_marks_a_slot_whose_signature_speaks_about_something_else() {
    let server = TestServer::start().await;
    let doc = server
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    let page = |server: &TestServer| {
        let request = server.get("/ui/artefacts/acme@1");
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    assert!(page(&server).await.contains(">verified<"));
    // Re-point the document at another kind behind the API's back: the signature still
    // verifies cryptographically, but it no longer says what the document says.
    let mut stored: reliquary_client::types::Artefact = serde_json::from_value(doc).unwrap();
    stored.package_name = "someone-else".into();
    let revision = stored.revision;
    server
        .registry
        .store
        .put(stored, Some(revision))
        .await
        .unwrap();
    let html = page(&server).await;
    assert!(
        html.contains(">invalid<") && !html.contains(">verified<"),
        "{html}"
    );
}

#[tokio::test]
async fn copyable_snippets_quote_every_value() {
    let server = TestServer::start().await;
    server
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    let marker = std::env::temp_dir().join(format!("reliquary-pwned-{}", uuid::Uuid::new_v4()));
    let html = server
        .get("/ui/artefacts/acme@1")
        .header(
            "host",
            format!("x$(touch {})`touch {}`", marker.display(), marker.display()),
        )
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let snippet = html
        .split("data-copy=\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .find(|value| value.starts_with("reliquary ensure"))
        .expect("a copyable ensure snippet");
    let snippet = snippet
        .replace("&#x27;", "'")
        .replace("&#39;", "'")
        .replace("&quot;", "\"")
        .replace("&amp;", "&")
        .replace("&#36;", "$")
        .replace("&#x60;", "`");
    assert!(snippet.starts_with("reliquary ensure"), "{snippet}");
    // Run it with `printf` in place of the CLI: the shell must see only literal words.
    let printed = std::process::Command::new("sh")
        .arg("-c")
        .arg(snippet.replacen("reliquary", "printf '%s\\n'", 1))
        .output()
        .unwrap();
    assert!(printed.status.success());
    let words = String::from_utf8(printed.stdout).unwrap();
    assert!(words.contains("$(touch"), "{words}");
    assert!(!marker.exists(), "the snippet ran an injected command");
}

#[tokio::test]
async fn a_feed_that_goes_nowhere_ends_the_pass_at_once() {
    let peer = HostilePeer::start("evilcorp").await;
    peer.set_feed(Feed::NoProgress);
    let staging = mirror("staging").await;
    add_peer(&staging, "evil", &peer, json!({})).await;
    let before = peer.requests.load(std::sync::atomic::Ordering::SeqCst);
    let (error, listed) = failing_sync(&staging, "evil").await;
    let requests = peer.requests.load(std::sync::atomic::Ordering::SeqCst) - before;
    assert_eq!(requests, 1, "one request, not a loop");
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("sent none past it"),
        "{error}"
    );
    assert!(listed["lastError"]
        .as_str()
        .unwrap()
        .contains("sent none past it"));
    assert_eq!(audit(&staging, "sync.error").await.len(), 1);
}

#[tokio::test]
async fn a_tarball_whose_headers_never_come_times_out() {
    let peer = HostilePeer::start("evilcorp").await;
    let bytes = npm_tarball("slow", "1.0.0");
    let item = peer.document("slow@1", "noarch", &bytes, 1);
    peer.set_tarball("slow@1", "noarch", Tarball::StallHeaders);
    peer.set_feed(Feed::Items(vec![item]));
    let staging = mirror("staging").await;
    add_peer(&staging, "evil", &peer, json!({})).await;
    let started = Instant::now();
    let (error, listed) = failing_sync(&staging, "evil").await;
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    assert!(
        error["message"].as_str().unwrap().contains("timed out"),
        "{error}"
    );
    assert_eq!(
        listed["cursor"], 0,
        "the cursor stays before the item, to retry it"
    );
}

#[tokio::test]
async fn oversized_pages_and_error_bodies_are_bounded() {
    let peer = HostilePeer::start("evilcorp").await;
    let staging = mirror("staging").await;
    add_peer(&staging, "evil", &peer, json!({})).await;

    peer.set_feed(Feed::Oversized(150, json!({"id": "x@1", "seq": 1})));
    let (error, _) = failing_sync(&staging, "evil").await;
    assert!(
        error["message"].as_str().unwrap().contains("150 changes"),
        "{error}"
    );

    peer.set_feed(Feed::Huge(20 << 20));
    let (error, _) = failing_sync(&staging, "evil").await;
    assert!(
        error["message"].as_str().unwrap().contains("larger than"),
        "{error}"
    );

    peer.set_feed(Feed::Error(500, 20 << 20));
    let (_, listed) = failing_sync(&staging, "evil").await;
    let last_error = listed["lastError"].as_str().unwrap();
    assert!(last_error.len() <= 1024, "{} bytes", last_error.len());
    for entry in audit(&staging, "sync.error").await {
        assert!(entry["detail"].as_str().unwrap().len() <= 1024);
    }
}

#[tokio::test]
async fn a_peer_cannot_plant_history_its_origin_did_not_sign() {
    let peer = HostilePeer::start("evilcorp").await;
    let bytes = npm_tarball("acme", "1.0.0");
    let mut item = peer.document("acme@1", "noarch", &bytes, 1);
    // A genuine earlier slot (signed for this artefact and slot), one signed for another
    // artefact, and one whose signature is not a signature: pointing at a local blob to pin it.
    let old = npm_tarball_with("acme", "1.0.0", b"older");
    let genuine = peer.signed_document(
        "acme@1",
        "noarch",
        "acme",
        &sha256_hex(&old),
        old.len() as u64,
        1,
        "evilcorp",
    );
    let elsewhere = peer.signed_document(
        "other@1",
        "noarch",
        "acme",
        &sha256_hex(&old),
        old.len() as u64,
        1,
        "evilcorp",
    );
    let entry = |slot: &Value| {
        let mut entry = slot.clone();
        entry["replacedAt"] = json!(Timestamp::now());
        entry["yanked"] = json!({"reason": "planted", "at": Timestamp::now()});
        entry
    };
    let mut forged = entry(&genuine["tarballs"]["noarch"]);
    forged["signature"] = json!("not.a.signature");
    forged["sha256"] = json!("c".repeat(64));
    item["history"] = json!({"noarch": [
        entry(&genuine["tarballs"]["noarch"]),
        entry(&elsewhere["tarballs"]["noarch"]),
        forged,
    ]});
    peer.set_feed(Feed::Items(vec![item]));
    let staging = mirror("staging").await;
    add_peer(&staging, "evil", &peer, json!({})).await;
    let summary = sync(&staging, "evil").await;
    assert_eq!(summary.mirrored, 1, "{summary:?}");
    let history: Value = staging.admin_json("/artefacts/acme@1/history").await;
    let kept = history["items"].as_array().unwrap();
    assert_eq!(
        kept.len(),
        1,
        "only the entry the origin signed for this slot: {history}"
    );
    assert_eq!(kept[0]["sha256"], sha256_hex(&old));
    let gc_refs = staging.registry.store.referenced_blobs().await.unwrap();
    assert!(
        !gc_refs.contains(&"c".repeat(64)),
        "a forged entry pins nothing"
    );
}
