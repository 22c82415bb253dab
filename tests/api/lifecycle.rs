//! Release lifecycle (v1.1): deprecation — set and cleared by PATCH, delivered but reported by
//! the client library and `reliquary ensure`, shown by the UI, followed by mirrors.

use std::process::Command;

use reliquary_client::Client;
use serde_json::{json, Value};

use crate::common::*;
use crate::federation::{add_remote, doc, named, sync};
use crate::keys::create_key;

async fn patch(server: &TestServer, token: &str, id: &str, body: Value) -> (u16, Value) {
    let response = server
        .client
        .patch(format!("{}/artefacts/{}", server.url, encode(id)))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn deprecation_is_set_shown_reported_and_cleared() {
    let server = TestServer::start().await;
    let created = server
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    assert_eq!(created["deprecated"], Value::Null, "null until deprecated");

    // A publish key within its scopes may deprecate; one outside them may not.
    let ours = create_key(
        &server,
        json!({"name": "acme-ci", "role": "publish", "allowedNamePrefix": "acme"}),
    )
    .await
    .token;
    let theirs = create_key(
        &server,
        json!({"name": "other-ci", "role": "publish", "allowedNamePrefix": "other"}),
    )
    .await
    .token;
    let (status, _) = patch(&server, &theirs, "acme@1", json!({"deprecated": "no"})).await;
    assert_eq!(status, 403);
    let (status, doc) = patch(
        &server,
        &ours,
        "acme@1",
        json!({"deprecated": "use acme@2"}),
    )
    .await;
    assert_eq!(status, 200, "{doc}");
    assert_eq!(doc["deprecated"]["message"], "use acme@2");
    assert!(doc["deprecated"]["at"].is_string());
    assert_eq!(
        doc["dataUpdatedAt"], created["dataUpdatedAt"],
        "deprecation changes no bytes"
    );

    // The client library still delivers it, and says so.
    let cache = tempfile::tempdir().unwrap();
    let client = Client::builder(&server.url)
        .token(ADMIN_TOKEN)
        .cache_dir(cache.path())
        .build()
        .unwrap();
    let ensured = client.ensure_artefact("acme@1", "x64").await.unwrap();
    assert!(ensured.path.join("package.json").is_file());
    assert_eq!(ensured.deprecated.as_deref(), Some("use acme@2"));

    // `reliquary ensure` warns on stderr and reports it in --json; stdout stays the result.
    // On the blocking pool: the server under test runs on this test's runtime.
    let (url, cache_dir) = (
        server.url.clone(),
        cache.path().to_str().unwrap().to_owned(),
    );
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_reliquary"))
            .args([
                "ensure",
                "acme@1",
                "--arch",
                "x64",
                "--registry",
                &url,
                "--token",
                ADMIN_TOKEN,
                "--cache-dir",
                &cache_dir,
                "--json",
            ])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("deprecated") && stderr.contains("use acme@2"),
        "{stderr}"
    );
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["deprecated"], "use acme@2");
    assert_eq!(
        printed["stale"], false,
        "answered by the registry, not the offline copy"
    );

    // The UI shows a banner.
    let html = server
        .get("/ui/artefacts/acme@1")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("data-testid=\"deprecated\"") && html.contains("use acme@2"));

    // Bounded like any text field, and cleared with "".
    let (_, doc) = patch(
        &server,
        ADMIN_TOKEN,
        "acme@1",
        json!({"deprecated": "x".repeat(5000)}),
    )
    .await;
    assert_eq!(doc["deprecated"]["message"].as_str().unwrap().len(), 1024);
    let (status, doc) = patch(&server, ADMIN_TOKEN, "acme@1", json!({"deprecated": ""})).await;
    assert_eq!(status, 200);
    assert_eq!(doc["deprecated"], Value::Null);
    let ensured = client.ensure_artefact("acme@1", "x64").await.unwrap();
    assert_eq!(ensured.deprecated, None);
}

#[tokio::test]
async fn mirrors_follow_deprecation_and_keep_it_read_only() {
    let production = named("production").await;
    let staging = named("staging").await;
    production
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    add_remote(&staging, "prod", &production, json!({})).await;
    assert_eq!(sync(&staging, "prod").await.mirrored, 1);

    let (status, _) = patch(
        &production,
        ADMIN_TOKEN,
        "acme@1",
        json!({"deprecated": "use acme@2"}),
    )
    .await;
    assert_eq!(status, 200);
    let summary = sync(&staging, "prod").await;
    assert_eq!(summary.mirrored, 1, "the change travels: {summary:?}");
    let (_, mirrored) = doc(&staging, "acme@1").await;
    assert_eq!(mirrored["deprecated"]["message"], "use acme@2");

    // On the mirror it is read-only, like everything mirrored.
    let (status, body) = patch(&staging, ADMIN_TOKEN, "acme@1", json!({"deprecated": ""})).await;
    assert_eq!(
        (status, body["code"].as_str()),
        (409, Some("artefact_mirrored"))
    );

    // Clearing at the origin clears the mirror.
    patch(
        &production,
        ADMIN_TOKEN,
        "acme@1",
        json!({"deprecated": ""}),
    )
    .await;
    sync(&staging, "prod").await;
    assert_eq!(doc(&staging, "acme@1").await.1["deprecated"], Value::Null);
}
