//! Release lifecycle (v1.1): deprecation — set and cleared by PATCH, delivered but reported by
//! the client library and `reliquary ensure`, shown by the UI, followed by mirrors.

use std::process::Command;

use reliquary::domain::visibility::Visibility;
use reliquary_client::types::Timestamp;
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

async fn rollback(server: &TestServer, token: &str, id: &str, body: Value) -> (u16, Value) {
    let response = server
        .client
        .post(format!("{}/artefacts/{}/rollback", server.url, encode(id)))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn history(server: &TestServer, id: &str, query: &str) -> Vec<Value> {
    let page: Value = server
        .admin_json(&format!("/artefacts/{}/history{query}", encode(id)))
        .await;
    page["items"].as_array().unwrap().clone()
}

pub(crate) async fn upload_as(
    server: &TestServer,
    token: &str,
    id: &str,
    query: &str,
    body: Vec<u8>,
) -> (u16, Value) {
    let response = server
        .client
        .post(format!(
            "{}/artefacts/npm/{}?{query}",
            server.url,
            encode(id)
        ))
        .bearer_auth(token)
        .header("content-type", "application/gzip")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn tarball_bytes(server: &TestServer, id: &str, arch: &str) -> Vec<u8> {
    server
        .admin_get(&format!(
            "/artefacts/{}/tarball?architecture={arch}",
            encode(id)
        ))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap()
        .to_vec()
}

#[tokio::test]
async fn rollback_reinstates_the_exact_slot_yanks_and_holds_against_ci_retries() {
    let server = TestServer::start().await;
    let good = |arch: &str| npm_tarball_with("acme", "1.0.0", arch.as_bytes());
    let bad = |arch: &str| npm_tarball_with("acme", "1.1.0", format!("bad {arch}").as_bytes());
    let mut first = Value::Null;
    for (arch, status) in [("x64", 201), ("arm64", 200)] {
        first = server
            .upload_ok(
                "acme@1",
                &format!("architecture={arch}"),
                good(arch),
                status,
            )
            .await;
    }
    for arch in ["x64", "arm64"] {
        server
            .upload_ok("acme@1", &format!("architecture={arch}"), bad(arch), 200)
            .await;
    }

    // History lists each replaced slot, its original signature included.
    let items = history(&server, "acme@1", "").await;
    assert_eq!(items.len(), 2, "{items:?}");
    for item in &items {
        let arch = item["architecture"].as_str().unwrap();
        let original = &first["tarballs"][arch];
        assert_eq!(item["version"], "1.0.0");
        assert_eq!(item["signature"], original["signature"]);
        assert_eq!(item["sha256"], original["sha256"]);
        assert_eq!(item["uploadedAt"], original["uploadedAt"]);
        assert!(item["replacedAt"].is_string());
        assert_eq!(item["yanked"], Value::Null);
    }
    assert_eq!(
        history(&server, "acme@1", "?architecture=x64").await.len(),
        1
    );

    // A host has 1.1.0 cached.
    let cache = tempfile::tempdir().unwrap();
    let host = host_client(&server.url, &server.url, cache.path(), Some(ADMIN_TOKEN)).await;
    assert_eq!(
        host.ensure_artefact("acme@1", "x64").await.unwrap().version,
        "1.1.0"
    );

    // A publish key within its scopes rolls back; one outside them may not.
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
    let body = json!({"version": "1.0.0", "reason": "1.1.0 crashes on start"});
    let (status, _) = rollback(&server, &theirs, "acme@1", body.clone()).await;
    assert_eq!(status, 403);
    let before: Value = doc(&server, "acme@1").await.1;
    let (status, after) = rollback(&server, &ours, "acme@1", body).await;
    assert_eq!(status, 200, "{after}");
    for arch in ["x64", "arm64"] {
        assert_eq!(
            after["tarballs"][arch], first["tarballs"][arch],
            "the exact earlier slot, signature byte for byte"
        );
        assert_eq!(tarball_bytes(&server, "acme@1", arch).await, good(arch));
    }
    assert_ne!(after["dataUpdatedAt"], before["dataUpdatedAt"]);
    assert_eq!(after["version"], "1.0.0");
    let items = history(&server, "acme@1", "").await;
    assert_eq!(items.len(), 2, "1.0.0 is served again, 1.1.0 is history");
    for item in &items {
        assert_eq!(item["version"], "1.1.0");
        assert_eq!(item["yanked"]["reason"], "1.1.0 crashes on start");
    }

    // The host picks it up, verified against the registry's key.
    let ensured = host.ensure_artefact("acme@1", "x64").await.unwrap();
    assert!(ensured.downloaded);
    assert_eq!(ensured.version, "1.0.0");
    assert_eq!(ensured.sha256, sha256_hex(&good("x64")));

    // CI retrying the yanked version — its bytes or new ones — cannot undo the rollback.
    for retry in [bad("x64"), npm_tarball_with("acme", "1.1.0", b"rebuilt")] {
        let (status, error) = upload_as(&server, &ours, "acme@1", "architecture=x64", retry).await;
        assert_eq!(
            (status, error["code"].as_str()),
            (409, Some("version_yanked")),
            "{error}"
        );
        assert!(error["message"]
            .as_str()
            .unwrap()
            .contains("crashes on start"));
    }
    assert_eq!(
        doc(&server, "acme@1").await.1["tarballs"],
        after["tarballs"]
    );
    // A new version is welcome, and an admin may force the yanked one back.
    let (status, _) = upload_as(
        &server,
        &ours,
        "acme@1",
        "architecture=arm64",
        npm_tarball_with("acme", "1.1.1", b"fixed"),
    )
    .await;
    assert_eq!(status, 200);
    let (status, _) = upload_as(
        &server,
        ADMIN_TOKEN,
        "acme@1",
        "architecture=x64&force=true",
        bad("x64"),
    )
    .await;
    assert_eq!(status, 200);

    // Nor can it roll "back" to the yanked version; an admin can.
    let (status, error) = rollback(
        &server,
        &ours,
        "acme@1",
        json!({"version": "1.1.0", "architecture": "x64", "reason": "ci"}),
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (409, Some("version_yanked")),
        "{error}"
    );
    // A new slot cannot bring the yanked version back under another architecture.
    let (status, error) =
        upload_as(&server, &ours, "acme@1", "architecture=riscv64", bad("x64")).await;
    assert_eq!(
        (status, error["code"].as_str()),
        (409, Some("version_yanked"))
    );

    // Audited.
    let audited = crate::federation_trust::audit(&server, "artefact.rollback").await;
    let outcomes: Vec<&str> = audited
        .iter()
        .map(|e| e["outcome"].as_str().unwrap())
        .collect();
    assert!(
        outcomes.contains(&"success") && outcomes.contains(&"denied"),
        "{audited:?}"
    );
    let success = audited.iter().find(|e| e["outcome"] == "success").unwrap();
    assert_eq!(success["keyName"], "acme-ci");
    assert!(success["detail"].as_str().unwrap().contains("1.0.0"));
}

#[tokio::test]
async fn rollback_refusals_change_nothing() {
    let server = TestServer::start().await;
    server
        .upload_ok("acme@1", "", npm_tarball_with("acme", "1.0.0", b"a"), 201)
        .await;
    server
        .upload_ok("acme@1", "", npm_tarball_with("acme", "1.1.0", b"b"), 200)
        .await;
    let before = doc(&server, "acme@1").await.1;
    for (body, status, code) in [
        (
            json!({"version": "0.9.0", "reason": "r"}),
            404,
            "version_not_found",
        ),
        (
            json!({"version": "1.0.0", "architecture": "arm64", "reason": "r"}),
            404,
            "version_not_found",
        ),
        (
            json!({"version": "1.0.0", "architecture": "X 64", "reason": "r"}),
            400,
            "invalid_architecture",
        ),
        (
            json!({"version": "1.0.0", "reason": ""}),
            400,
            "invalid_rollback",
        ),
        (json!({"version": "1.0.0"}), 400, "invalid_json"),
        (
            json!({"version": "1.0.0", "reason": "r", "arch": "x64"}),
            400,
            "invalid_json",
        ),
    ] {
        let (got, error) = rollback(&server, ADMIN_TOKEN, "acme@1", body.clone()).await;
        assert_eq!(
            (got, error["code"].as_str()),
            (status, Some(code)),
            "{body}: {error}"
        );
    }
    let (got, error) = rollback(
        &server,
        ADMIN_TOKEN,
        "nope@1",
        json!({"version": "1.0.0", "reason": "r"}),
    )
    .await;
    assert_eq!(
        (got, error["code"].as_str()),
        (404, Some("artefact_not_found"))
    );
    assert_eq!(doc(&server, "acme@1").await.1, before);
    let (status, _) = rollback(
        &server,
        ADMIN_TOKEN,
        "acme@1",
        json!({"version": "1.0.0", "reason": "r"}),
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn history_is_bounded_and_a_deleted_slot_can_be_rolled_back() {
    let server = TestServer::start_with(|c| c.history_per_slot = 2).await;
    for (version, status) in [
        ("1.0.0", 201),
        ("1.1.0", 200),
        ("1.2.0", 200),
        ("1.3.0", 200),
    ] {
        server
            .upload_ok(
                "acme@1",
                "architecture=x64",
                npm_tarball_with("acme", version, version.as_bytes()),
                status,
            )
            .await;
    }
    let versions = |items: Vec<Value>| -> Vec<String> {
        items
            .iter()
            .map(|i| i["version"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        versions(history(&server, "acme@1", "").await),
        ["1.2.0", "1.1.0"]
    );

    // Deleting a slot keeps it in history; a rollback brings it back, unyanked.
    server
        .upload_ok(
            "acme@1",
            "",
            npm_tarball_with("acme", "1.3.0", b"noarch"),
            200,
        )
        .await;
    let response = server
        .admin_delete("/artefacts/acme@1/tarballs/x64")
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(
        versions(history(&server, "acme@1", "?architecture=x64").await),
        ["1.3.0", "1.2.0"]
    );
    let (status, restored) = rollback(
        &server,
        ADMIN_TOKEN,
        "acme@1",
        json!({"version": "1.3.0", "architecture": "x64", "reason": "deleted by mistake"}),
    )
    .await;
    assert_eq!(status, 200, "{restored}");
    assert_eq!(restored["tarballs"]["x64"]["version"], "1.3.0");
    assert_eq!(
        restored["tarballs"]["noarch"]["version"], "1.3.0",
        "other slots untouched"
    );
    let items = history(&server, "acme@1", "?architecture=x64").await;
    assert_eq!(versions(items.clone()), ["1.2.0"]);
    assert_eq!(
        items[0]["yanked"],
        Value::Null,
        "nothing was served in its place, so nothing is yanked"
    );
}

#[tokio::test]
async fn mirrors_follow_a_rollback_with_the_origins_signatures() {
    let production = named("production").await;
    let staging = named("staging").await;
    let good = npm_tarball_with("acme", "1.0.0", b"good");
    let first = production
        .upload_ok("acme@1", "architecture=x64", good.clone(), 201)
        .await;
    production
        .upload_ok(
            "acme@1",
            "architecture=x64",
            npm_tarball_with("acme", "1.1.0", b"bad"),
            200,
        )
        .await;
    add_remote(&staging, "prod", &production, json!({})).await;
    assert_eq!(sync(&staging, "prod").await.mirrored, 1);
    assert_eq!(doc(&staging, "acme@1").await.1["version"], "1.1.0");

    let (status, _) = rollback(
        &production,
        ADMIN_TOKEN,
        "acme@1",
        json!({"version": "1.0.0", "reason": "bad build"}),
    )
    .await;
    assert_eq!(status, 200);
    let summary = sync(&staging, "prod").await;
    assert_eq!(summary.mirrored, 1, "{summary:?}");
    let mirrored = doc(&staging, "acme@1").await.1;
    assert_eq!(
        mirrored["tarballs"]["x64"], first["tarballs"]["x64"],
        "the origin's slot and signature"
    );
    assert_eq!(tarball_bytes(&staging, "acme@1", "x64").await, good);
    let items = history(&staging, "acme@1", "").await;
    assert_eq!(items.len(), 1);
    assert_eq!(
        items[0]["yanked"]["reason"], "bad build",
        "the yank travels with the document"
    );

    // A consumer of staging verifies the reinstated slot against production's key.
    let cache = tempfile::tempdir().unwrap();
    let host = host_client(
        &staging.url,
        &production.url,
        cache.path(),
        Some(ADMIN_TOKEN),
    )
    .await;
    assert_eq!(
        host.ensure_artefact("acme@1", "x64").await.unwrap().version,
        "1.0.0"
    );

    // Read-only on the mirror.
    let (status, error) = rollback(
        &staging,
        ADMIN_TOKEN,
        "acme@1",
        json!({"version": "1.1.0", "reason": "r"}),
    )
    .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (409, Some("artefact_mirrored"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_withdraws_a_release_in_one_command() {
    let server = TestServer::start().await;
    server
        .upload_ok("acme@1", "", npm_tarball_with("acme", "1.0.0", b"a"), 201)
        .await;
    server
        .upload_ok("acme@1", "", npm_tarball_with("acme", "1.1.0", b"b"), 200)
        .await;
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_reliquary"))
            .args(args)
            .args(["--registry", &server.url, "--token", ADMIN_TOKEN])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
        (
            output.status.success(),
            stdout,
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let (ok, out, err) = run(&[
        "rollback",
        "acme@1",
        "--version",
        "1.0.0",
        "--reason",
        "bad build",
        "--json",
    ]);
    assert!(ok, "{err}");
    let rolled: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rolled["tarballs"]["noarch"]["version"], "1.0.0");

    let (ok, out, _) = run(&["history", "acme@1", "--json"]);
    assert!(ok);
    let listed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(listed["items"][0]["version"], "1.1.0");
    assert_eq!(listed["items"][0]["yanked"]["reason"], "bad build");
    let (ok, out, _) = run(&["history", "acme@1"]);
    assert!(
        ok && out.contains("1.1.0") && out.contains("bad build"),
        "{out}"
    );

    let (ok, out, _) = run(&["deprecate", "acme@1", "use acme@2", "--json"]);
    assert!(ok);
    assert_eq!(
        serde_json::from_str::<Value>(&out).unwrap()["deprecated"]["message"],
        "use acme@2"
    );
    let (ok, out, _) = run(&["deprecate", "acme@1", "--clear"]);
    assert!(ok && out.contains("no longer deprecated"), "{out}");
    assert_eq!(doc(&server, "acme@1").await.1["deprecated"], Value::Null);

    let (ok, _, err) = run(&["rollback", "acme@1", "--version", "9.9.9", "--reason", "r"]);
    assert!(!ok && err.contains("No history entry"), "{err}");
    let (ok, _, err) = run(&["deprecate", "acme@1"]);
    assert!(
        !ok && err.contains("<MESSAGE>"),
        "a message or --clear: {err}"
    );
}

const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);

async fn status_of(server: &TestServer, id: &str) -> u16 {
    server
        .admin_get(&format!("/artefacts/{}", encode(id)))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// Whether the artefact exists, asked of the store: an API read would count as a download.
async fn exists(server: &TestServer, id: &str) -> bool {
    server
        .registry
        .store
        .get(id, &Visibility::all())
        .await
        .unwrap()
        .is_some()
}

#[tokio::test]
async fn retention_removes_idle_branch_builds_and_keeps_those_in_use() {
    let clock = reliquary::clock::ManualClock::starting_now();
    let server = TestServer::start_with({
        let clock = clock.clone();
        move |c| {
            c.clock = clock;
            c.branch_retention = Some(30 * DAY);
            // Upkeep and flushes are driven by the test; the periodic tasks run once, at start.
            c.upkeep_interval = 1000 * DAY;
            c.download_flush_interval = 1000 * DAY;
        }
    })
    .await;
    for id in ["idle@main", "used@main", "checked@main", "rebuilt@main"] {
        server
            .upload_ok(
                id,
                "kind=branch",
                npm_tarball_with(id.split('@').next().unwrap(), "1.0.0", b"a"),
                201,
            )
            .await;
    }
    server
        .upload_ok("release@1", "", npm_tarball("release", "1.0.0"), 201)
        .await;
    let before = doc(&server, "used@main").await.1;

    // Hosts use two of them: one downloads the tarball, one only revalidates its cached copy.
    clock.advance(10 * DAY);
    let tarball = server
        .admin_get("/artefacts/used@main/tarball")
        .send()
        .await
        .unwrap();
    assert_eq!(tarball.status(), 200);
    let etag = server
        .admin_get("/artefacts/checked@main")
        .send()
        .await
        .unwrap()
        .headers()["etag"]
        .clone();
    let revalidated = server
        .admin_get("/artefacts/checked@main")
        .header("if-none-match", etag)
        .send()
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);
    // Noted, not written, on the request path; written by the next flush.
    let store = &server.registry.store;
    assert_eq!(store.last_downloaded("used@main").await.unwrap(), None);
    server.registry.flush_downloads().await.unwrap();
    assert!(store.last_downloaded("used@main").await.unwrap().is_some());
    assert!(store
        .last_downloaded("checked@main")
        .await
        .unwrap()
        .is_some());
    assert_eq!(
        doc(&server, "used@main").await.1["revision"],
        before["revision"],
        "a download never changes the document"
    );

    clock.advance(10 * DAY);
    server
        .upload_ok(
            "rebuilt@main",
            "kind=branch",
            npm_tarball_with("rebuilt", "1.0.1", b"b"),
            200,
        )
        .await;

    // Day 31: only the build nobody rebuilt or used in 30 days goes.
    clock.advance(11 * DAY);
    let report = server.registry.upkeep().await.unwrap();
    let removed: Vec<&str> = report.removed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(removed, ["idle@main"]);
    assert!(!exists(&server, "idle@main").await);
    for kept in ["used@main", "checked@main", "rebuilt@main", "release@1"] {
        assert!(exists(&server, kept).await, "{kept}");
    }
    let feed: Value = server.admin_json("/artefacts?since=0").await;
    let tombstone = feed["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|item| item["id"] == "idle@main")
        .unwrap();
    assert_eq!(
        tombstone["deleted"], true,
        "an ordinary tombstone, for mirrors"
    );
    let audited = crate::federation_trust::audit(&server, "retention.delete").await;
    assert_eq!(audited.len(), 1);
    assert_eq!(audited[0]["artefactId"], "idle@main");
    assert!(audited[0]["detail"]
        .as_str()
        .unwrap()
        .contains("never downloaded"));

    // Day 41: 30 days since their last recorded use, but a use up to three days (a tenth of the
    // period) after a recorded one may not be on record: not yet.
    clock.advance(10 * DAY);
    assert!(server.registry.upkeep().await.unwrap().removed.is_empty());
    // Day 44: now they go; never a release.
    clock.advance(3 * DAY);
    let report = server.registry.upkeep().await.unwrap();
    let mut removed: Vec<&str> = report.removed.iter().map(|c| c.id.as_str()).collect();
    removed.sort_unstable();
    assert_eq!(removed, ["checked@main", "used@main"]);
    clock.advance(1000 * DAY);
    let report = server.registry.upkeep().await.unwrap();
    let removed: Vec<&str> = report.removed.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(removed, ["rebuilt@main"]);
    assert!(exists(&server, "release@1").await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_dry_run_shows_what_retention_and_collection_would_remove() {
    // Data written 40 days ago by this registry's clock looks 40 days old to `gc`'s real one.
    let start = Timestamp::from_millis(Timestamp::now().millis() - 40 * 86_400_000);
    let clock = reliquary::clock::ManualClock::starting_at(start);
    let server = TestServer::start_with({
        let clock = clock.clone();
        move |c| {
            c.clock = clock;
            c.download_flush_interval = 1000 * DAY;
        }
    })
    .await;
    server
        .upload_ok(
            "idle@main",
            "kind=branch",
            npm_tarball_with("idle", "1.0.0", b"i"),
            201,
        )
        .await;
    server
        .upload_ok(
            "used@main",
            "kind=branch",
            npm_tarball_with("used", "1.0.0", b"u"),
            201,
        )
        .await;
    server
        .upload_ok("old@1", "", npm_tarball("old", "1.0.0"), 201)
        .await;
    // The registry itself is new (it started recording downloads today), so idle@main is shown
    // as last used 35 days ago, and used@main today.
    clock.advance(5 * DAY);
    assert_eq!(status_of(&server, "idle@main").await, 200);
    server.registry.flush_downloads().await.unwrap();
    clock.advance(35 * DAY);
    assert_eq!(status_of(&server, "used@main").await, 200);
    server.registry.flush_downloads().await.unwrap();

    let gc = |extra: &[&str]| {
        let mut args = vec!["--branch-retention", "30d", "--grace-seconds", "0"];
        args.extend_from_slice(extra);
        crate::gc::gc(&server, &args)
    };
    let dry = gc(&["--dry-run"]);
    assert_eq!(dry["retention"]["dryRun"], true);
    let listed: Vec<&str> = dry["retention"]["removed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ["idle@main"], "{dry}");
    assert!(dry["retention"]["removed"][0]["lastDownloadedAt"].is_string());
    assert!(
        exists(&server, "idle@main").await,
        "a dry run removes nothing"
    );

    let applied = gc(&[]);
    assert_eq!(applied["retention"]["removed"][0]["id"], "idle@main");
    assert!(!exists(&server, "idle@main").await);
    assert!(exists(&server, "used@main").await);
    let swept = gc(&[]);
    assert_eq!(
        swept["removedBlobs"],
        json!([sha256_hex(&npm_tarball_with("idle", "1.0.0", b"i"))]),
        "its blob goes once marked and past the grace period"
    );
}

/// Logs in to the UI with a token; returns the session cookie (`name=value`).
pub(crate) async fn ui_session(server: &TestServer, token: &str) -> String {
    let no_redirects = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let response = no_redirects
        .post(format!("{}/ui/login", server.url))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap();
    let cookie = response.headers()["set-cookie"]
        .to_str()
        .unwrap()
        .to_owned();
    cookie.split(';').next().unwrap().to_owned()
}

#[tokio::test]
async fn the_ui_shows_history_and_its_rollback_form_needs_an_admin_session_and_the_csrf_token() {
    let server = TestServer::start().await;
    server
        .upload_ok("acme@1", "", npm_tarball_with("acme", "1.0.0", b"a"), 201)
        .await;
    server
        .upload_ok("acme@1", "", npm_tarball_with("acme", "1.1.0", b"b"), 200)
        .await;
    let page = |cookie: Option<String>| {
        let mut request = server.get("/ui/artefacts/acme@1");
        if let Some(cookie) = cookie {
            request = request.header("cookie", cookie);
        }
        async move { request.send().await.unwrap().text().await.unwrap() }
    };
    let anonymous = page(None).await;
    assert!(
        anonymous.contains("data-testid=\"history\"")
            && anonymous.contains("data-version=\"1.0.0\"")
    );
    assert!(!anonymous.contains("rollback-form"), "no form for visitors");

    let cookie = ui_session(&server, ADMIN_TOKEN).await;
    let admin = page(Some(cookie.clone())).await;
    assert!(admin.contains("rollback-form"));
    let csrf = admin
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|rest| rest.split('"').next())
        .unwrap()
        .to_owned();
    let post = |form: Vec<(&'static str, String)>| {
        server
            .client
            .post(format!("{}/ui/artefacts/acme@1/rollback", server.url))
            .header("cookie", cookie.clone())
            .form(&form)
            .send()
    };
    let version = || ("version", "1.0.0".to_owned());
    let reason = || ("reason", "broken".to_owned());
    for forged in [
        vec![version(), reason()],
        vec![("csrf", "guess".into()), version(), reason()],
    ] {
        let refused = post(forged).await.unwrap();
        assert_eq!(refused.status(), 403);
    }
    assert_eq!(
        doc(&server, "acme@1").await.1["version"],
        "1.1.0",
        "nothing changed"
    );

    let done = post(vec![
        ("csrf", csrf),
        version(),
        reason(),
        ("architecture", String::new()),
    ])
    .await
    .unwrap();
    assert_eq!(done.status(), 200);
    assert_eq!(
        done.url().path(),
        "/ui/artefacts/acme@1",
        "back to the page"
    );
    let shown = done.text().await.unwrap();
    assert!(
        shown.contains("Rolled back to 1.0.0"),
        "with a message: {shown}"
    );
    // The message lives in the session: a crafted URL cannot make the page say anything.
    let crafted = server
        .get("/ui/artefacts/acme@1?flash=Your+session+expired")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!crafted.contains("Your session expired"));
    assert_eq!(doc(&server, "acme@1").await.1["version"], "1.0.0");
    let after = page(Some(cookie)).await;
    assert!(
        after.contains("data-testid=\"yanked\"") && after.contains("broken"),
        "{after}"
    );
}
