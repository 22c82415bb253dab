//! Roles, scopes, expiry, revocation, the federation filter on every read path, and the audit log.

use reliquary_client::types::{CreatedKey, Timestamp};
use serde_json::{json, Value};

use crate::common::*;

/// Creates a key through the API and returns its token.
pub async fn create_key(server: &TestServer, body: Value) -> CreatedKey {
    let response = server.admin_post("/keys").json(&body).send().await.unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());
    response.json().await.unwrap()
}

async fn status(
    server: &TestServer,
    token: Option<&str>,
    method: &str,
    path: &str,
    body: Option<Vec<u8>>,
) -> u16 {
    let url = format!("{}{path}", server.url);
    let mut request = match method {
        "GET" => server.client.get(url),
        "POST" => server.client.post(url),
        "PATCH" => server
            .client
            .patch(url)
            .json(&json!({"description": "patched"})),
        "DELETE" => server.client.delete(url),
        _ => unreachable!(),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.body(body);
    }
    if path == "/keys" && method == "POST" {
        request = request.json(&json!({"name": "made-by-table", "role": "read"}));
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn each_role_can_do_exactly_what_the_table_says() {
    let server = TestServer::start().await;
    server
        .upload_ok("rel@1", "", npm_tarball("rel", "1.0.0"), 201)
        .await;
    server
        .upload_ok("br@main", "kind=branch", npm_tarball("br", "1.0.0"), 201)
        .await;
    let roles = ["admin", "publish", "read", "mirror", "anonymous"];
    let mut tokens = std::collections::HashMap::new();
    tokens.insert("admin", Some(ADMIN_TOKEN.to_owned()));
    tokens.insert("anonymous", None);
    for role in ["publish", "read", "mirror"] {
        let created = create_key(&server, json!({"name": role, "role": role})).await;
        tokens.insert(role, Some(created.token));
    }
    for role in roles {
        server
            .upload_ok(
                &format!("victim-{role}@1"),
                "",
                npm_tarball("victim", "1.0.0"),
                201,
            )
            .await;
        server
            .upload_ok(
                &format!("victim-{role}@1"),
                "architecture=x64",
                npm_tarball_with("victim", "1.0.0", b"x"),
                200,
            )
            .await;
    }

    // action, then the expected status for admin, publish, read, mirror, anonymous (releases).
    let table: &[(&str, &str, [u16; 5])] = &[
        ("GET", "/artefacts/rel@1", [200, 200, 200, 200, 200]),
        ("GET", "/artefacts/br@main", [200, 200, 200, 404, 404]),
        (
            "GET",
            "/artefacts/br@main/tarball",
            [200, 200, 200, 404, 404],
        ),
        ("GET", "/artefacts/rel@1/tarball", [200, 200, 200, 200, 200]),
        ("GET", "/artefacts", [200, 200, 200, 200, 200]),
        (
            "POST",
            "/artefacts/npm/new-{role}@1",
            [201, 201, 403, 403, 401],
        ),
        (
            "PATCH",
            "/artefacts/victim-{role}@1",
            [200, 200, 403, 403, 401],
        ),
        (
            "DELETE",
            "/artefacts/victim-{role}@1/tarballs/x64",
            [200, 403, 403, 403, 401],
        ),
        (
            "DELETE",
            "/artefacts/victim-{role}@1",
            [200, 403, 403, 403, 401],
        ),
        ("POST", "/keys", [201, 403, 403, 403, 401]),
        ("GET", "/keys", [200, 403, 403, 403, 401]),
        ("GET", "/audit", [200, 403, 403, 403, 401]),
        ("DELETE", "/keys/no-such-key", [404, 403, 403, 403, 401]),
    ];
    let mut failures = Vec::new();
    for (method, path, expected) in table {
        for (role, want) in roles.iter().zip(expected) {
            let path = path.replace("{role}", role);
            let body = (*method == "POST" && path.starts_with("/artefacts"))
                .then(|| npm_tarball("new", "1.0.0"));
            let got = status(&server, tokens[role].as_deref(), method, &path, body).await;
            if got != *want {
                failures.push(format!(
                    "{role} {method} {path}: expected {want}, got {got}"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[tokio::test]
async fn the_federation_filter_hides_branches_from_mirror_keys_in_every_read_path() {
    let server = TestServer::start().await;
    server
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    server
        .upload_ok(
            "acme@main",
            "kind=branch",
            npm_tarball("acme", "1.0.0"),
            201,
        )
        .await;
    server
        .upload_ok(
            "gone@main",
            "kind=branch",
            npm_tarball("gone", "1.0.0"),
            201,
        )
        .await;
    server
        .admin(
            server
                .client
                .delete(format!("{}/artefacts/gone@main", server.url)),
        )
        .send()
        .await
        .unwrap();
    let mirror = create_key(&server, json!({"name": "staging", "role": "mirror"}))
        .await
        .token;
    let get = |path: &str| {
        server
            .client
            .get(format!("{}{path}", server.url))
            .bearer_auth(&mirror)
            .send()
    };

    let browse: Value = get("/artefacts").await.unwrap().json().await.unwrap();
    assert_eq!(browse["items"].as_array().unwrap().len(), 1);
    let branch_search: Value = get("/artefacts?kind=branch")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(branch_search["items"].as_array().unwrap().is_empty());
    let sync: Value = get("/artefacts?since=0")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = sync["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        ["acme@1"],
        "no branch documents and no branch tombstones"
    );
    assert_eq!(get("/artefacts/acme@main").await.unwrap().status(), 404);
    assert_eq!(
        get("/artefacts/acme@main/tarball").await.unwrap().status(),
        404
    );
    assert_eq!(
        get("/artefacts/acme@1/tarball").await.unwrap().status(),
        200
    );
}

#[tokio::test]
async fn mirror_key_scopes_narrow_what_it_sees() {
    let server = TestServer::start().await;
    server
        .upload_ok(
            "acme-a@1",
            "category=plugins",
            npm_tarball("acme-a", "1.0.0"),
            201,
        )
        .await;
    server
        .upload_ok(
            "acme-b@1",
            "category=services",
            npm_tarball("acme-b", "1.0.0"),
            201,
        )
        .await;
    server
        .upload_ok(
            "other@1",
            "category=plugins",
            npm_tarball("other", "1.0.0"),
            201,
        )
        .await;
    let scoped = create_key(&server, json!({"name": "m", "role": "mirror", "allowedNamePrefix": "acme-", "allowedCategory": "plugins"})).await.token;
    let sync: Value = server
        .client
        .get(format!("{}/artefacts?since=0", server.url))
        .bearer_auth(&scoped)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = sync["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme-a@1"]);
    let hidden = server
        .client
        .get(format!("{}/artefacts/other@1", server.url))
        .bearer_auth(&scoped)
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), 404);
}

/// A mirror key's `allowedIds` narrows everything it reads: lists, the change feed, documents
/// and tarballs.
#[tokio::test]
async fn mirror_keys_see_only_the_ids_their_patterns_allow() {
    let server = TestServer::start().await;
    for id in ["acme-a@1", "acme-a@2", "@acme/tool@1", "other@1"] {
        let name = id.rsplit_once('@').unwrap().0;
        server
            .upload_ok(id, "", npm_tarball(name, "1.0.0"), 201)
            .await;
    }
    let mirror = create_key(
        &server,
        json!({"name": "m", "role": "mirror", "allowedIds": ["acme-*@1", "@acme/*@*"]}),
    )
    .await
    .token;
    let read = |path: String| {
        server
            .client
            .get(format!("{}{path}", server.url))
            .bearer_auth(&mirror)
            .send()
    };
    for list in ["/artefacts?since=0", "/artefacts?limit=50"] {
        let page: Value = read(list.into()).await.unwrap().json().await.unwrap();
        let mut ids: Vec<&str> = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["id"].as_str().unwrap())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, ["@acme/tool@1", "acme-a@1"], "{list}");
    }
    for hidden in ["acme-a@2", "other@1"] {
        assert_eq!(
            read(format!("/artefacts/{hidden}")).await.unwrap().status(),
            404
        );
        assert_eq!(
            read(format!("/artefacts/{hidden}/tarball"))
                .await
                .unwrap()
                .status(),
            404
        );
    }
    assert_eq!(
        read(format!("/artefacts/{}/tarball", encode("@acme/tool@1")))
            .await
            .unwrap()
            .status(),
        200
    );
}

#[tokio::test]
async fn publish_scopes_are_enforced_and_named_in_the_denial() {
    let server = TestServer::start().await;
    let key = create_key(
        &server,
        json!({"name": "ci-acme", "role": "publish", "allowedNamePrefix": "acme-plugin@", "allowedPackageName": "acme-plugin", "allowedCategory": "plugins"}),
    )
    .await;
    let upload = |id: &str, query: &str, tarball: Vec<u8>| {
        server
            .client
            .post(format!("{}/artefacts/npm/{id}?{query}", server.url))
            .bearer_auth(&key.token)
            .body(tarball)
            .send()
    };
    let wrong_prefix = upload(
        "other@1",
        "category=plugins",
        npm_tarball("acme-plugin", "1.0.0"),
    )
    .await
    .unwrap();
    let body = expect_error(wrong_prefix, 403, "forbidden").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("allowedNamePrefix"),
        "{body}"
    );

    let wrong_package = upload(
        "acme-plugin@1",
        "category=plugins",
        npm_tarball("acme-evil", "1.0.0"),
    )
    .await
    .unwrap();
    let body = expect_error(wrong_package, 403, "forbidden").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("allowedPackageName"),
        "{body}"
    );

    let wrong_category = upload(
        "acme-plugin@1",
        "category=services",
        npm_tarball("acme-plugin", "1.0.0"),
    )
    .await
    .unwrap();
    let body = expect_error(wrong_category, 403, "forbidden").await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("allowedCategory"),
        "{body}"
    );
    expect_error(
        server
            .admin_get("/artefacts/acme-plugin@1")
            .send()
            .await
            .unwrap(),
        404,
        "artefact_not_found",
    )
    .await;

    let allowed = upload(
        "acme-plugin@1",
        "category=plugins",
        npm_tarball("acme-plugin", "1.0.0"),
    )
    .await
    .unwrap();
    assert_eq!(allowed.status(), 201);
    let force = upload(
        "acme-plugin@1",
        "force=true",
        npm_tarball("acme-plugin", "0.1.0"),
    )
    .await
    .unwrap();
    expect_error(force, 403, "forbidden").await;
    assert!(server.blob_keys("uploads").await.is_empty());
}

#[tokio::test]
async fn expired_and_revoked_keys_are_401_and_revoked_ones_stay_listed() {
    let clock = reliquary::clock::ManualClock::starting_now();
    let server = TestServer::start_with({
        let clock = clock.clone();
        move |c| c.clock = clock
    })
    .await;
    let now = || reliquary::clock::Clock::now(clock.as_ref());
    let past = Timestamp::from_millis(now().millis() - 1000);
    let refused = server
        .admin_post("/keys")
        .json(&json!({"name": "old", "role": "read", "expiresAt": past}))
        .send()
        .await
        .unwrap();
    expect_error(refused, 400, "invalid_key").await;
    let scoped_admin = server
        .admin_post("/keys")
        .json(&json!({"name": "x", "role": "admin", "allowedCategory": "c"}))
        .send()
        .await
        .unwrap();
    expect_error(scoped_admin, 400, "invalid_key").await;
    let bad_role = server
        .admin_post("/keys")
        .json(&json!({"name": "x", "role": "root"}))
        .send()
        .await
        .unwrap();
    expect_error(bad_role, 400, "invalid_json").await;

    let soon = Timestamp::from_millis(now().millis() + 3_600_000);
    let expiring = create_key(
        &server,
        json!({"name": "short", "role": "read", "expiresAt": soon}),
    )
    .await;
    let read = |token: String| {
        server
            .client
            .get(format!("{}/artefacts", server.url))
            .bearer_auth(token)
            .send()
    };
    assert_eq!(read(expiring.token.clone()).await.unwrap().status(), 200);
    // An hour and a second later by the registry's clock; no test sleeps past a deadline.
    clock.advance(std::time::Duration::from_secs(3601));
    expect_error(read(expiring.token).await.unwrap(), 401, "unauthorized").await;

    let revoked = create_key(&server, json!({"name": "leaked", "role": "read"})).await;
    assert!(revoked.token.starts_with("rlq_") && revoked.token.len() >= 44);
    assert_eq!(revoked.key.prefix, &revoked.token[..8]);
    assert_eq!(read(revoked.token.clone()).await.unwrap().status(), 200);
    let answer: Value = server
        .admin(
            server
                .client
                .delete(format!("{}/keys/{}", server.url, revoked.key.id)),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(answer["revokedAt"].is_string());
    let leaked_token = revoked.token.clone();
    expect_error(read(revoked.token).await.unwrap(), 401, "unauthorized").await;

    let keys: Value = server.admin_json("/keys").await;
    let listed = keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["id"] == revoked.key.id.as_str())
        .unwrap();
    assert!(listed["revokedAt"].is_string());
    assert!(
        listed["lastUsedAt"].is_string(),
        "lastUsedAt is recorded on use"
    );
    assert!(keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k.get("token").is_none()));
    assert!(
        !keys.to_string().contains(&leaked_token),
        "a listing never holds a token"
    );
}

#[tokio::test]
async fn id_patterns_and_kinds_scope_publish_keys_and_every_slot_says_who_published_it() {
    let server = TestServer::start().await;
    let upload_as = crate::lifecycle::upload_as;
    // A staging CI key: branch builds of acme plugins only.
    let staging_ci = create_key(
        &server,
        json!({"name": "staging-ci", "role": "publish", "allowedIds": ["acme-*@*"], "allowedKinds": ["branch"]}),
    )
    .await;
    assert_eq!(
        staging_ci.key.allowed_ids,
        Some(vec!["acme-*@*".to_owned()])
    );
    let token = staging_ci.token.as_str();
    let tarball = |name: &str| npm_tarball(name, "1.0.0");

    let (status, doc) = upload_as(
        &server,
        token,
        "acme-x@main",
        "kind=branch",
        tarball("acme-x"),
    )
    .await;
    assert_eq!(status, 201, "{doc}");
    assert_eq!(
        doc["tarballs"]["noarch"]["publishedBy"],
        json!({"keyId": staging_ci.key.id, "keyName": "staging-ci"}),
        "every slot records the key that published it"
    );
    for (id, query, name, scope) in [
        ("other@main", "kind=branch", "other", "allowedIds"),
        ("@acme/x@main", "kind=branch", "@acme/x", "allowedIds"),
        ("acme-x@1", "kind=release", "acme-x", "allowedKinds"),
    ] {
        let (status, error) = upload_as(&server, token, id, query, tarball(name)).await;
        assert_eq!(status, 403, "{id}: {error}");
        assert!(
            error["message"].as_str().unwrap().contains(scope),
            "{id}: {error}"
        );
    }
    // The kind scope holds for every write: a release published by someone else stays out of
    // its reach (patch, rollback).
    server
        .upload_ok("acme-y@1", "", npm_tarball("acme-y", "1.0.0"), 201)
        .await;
    let patched = server
        .client
        .patch(format!("{}/artefacts/acme-y@1", server.url))
        .bearer_auth(token)
        .json(&json!({"description": "mine now"}))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 403);
    let admin_slot =
        &crate::federation::doc(&server, "acme-y@1").await.1["tarballs"]["noarch"]["publishedBy"];
    assert_eq!(admin_slot["keyName"], "bootstrap-admin");

    // Bad scopes are refused when the key is made, and say why.
    for (body, why) in [
        (
            json!({"name": "m", "role": "mirror", "allowedKinds": ["branch"]}),
            "release artefacts only",
        ),
        (
            json!({"name": "r", "role": "read", "allowedIds": ["acme-*"]}),
            "publish and mirror keys",
        ),
        (
            json!({"name": "p", "role": "publish", "allowedIds": []}),
            "at least one",
        ),
        (
            json!({"name": "p", "role": "publish", "allowedIds": ["ACME*"]}),
            "not an id pattern",
        ),
        (
            json!({"name": "p", "role": "publish", "allowedKinds": ["nightly"]}),
            "",
        ),
    ] {
        let response = server.admin_post("/keys").json(&body).send().await.unwrap();
        let status = response.status().as_u16();
        let error: Value = response.json().await.unwrap();
        assert!(status == 400 || status == 422, "{body}: {status} {error}");
        assert!(
            error["message"].as_str().unwrap().contains(why),
            "{body}: {error}"
        );
    }

    // The CLI creates such keys too, and lists their scopes.
    let url = server.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_reliquary"))
            .args(["keys", "create", "--name", "cli-ci", "--role", "publish"])
            .args([
                "--allowed-id",
                "acme-*@1",
                "--allowed-id",
                "tools@*",
                "--allowed-kind",
                "release",
            ])
            .args(["--registry", &url, "--token", ADMIN_TOKEN, "--json"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let created: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(created["key"]["allowedIds"], json!(["acme-*@1", "tools@*"]));
    assert_eq!(created["key"]["allowedKinds"], json!(["release"]));
}
