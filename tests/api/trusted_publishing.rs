//! Trusted publishing: a CI's OIDC token, from the loopback test issuer, traded for a
//! short-lived publish key; every refusal of the contract, replay across replicas, expiry.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::federation_trust::audit;
use crate::lifecycle::upload_as;
use crate::oidc_issuer::{
    now_seconds, SigningKey, TestIssuer, AUDIENCE, REPOSITORY, REQUEST_TOKEN,
};

/// A registry named [`AUDIENCE`] that accepts the test issuer.
async fn server_for(issuer: &TestIssuer) -> TestServer {
    let url = issuer.url.clone();
    TestServer::start_with(move |c| {
        c.registry_name = AUDIENCE.into();
        c.oidc_insecure_issuer = Some(url);
    })
    .await
}

/// The release publisher of the contract's example: tags `v1.*` of [`REPOSITORY`] may publish
/// release slots of `acme-plugin@1`.
async fn put_release_publisher(server: &TestServer, issuer: &TestIssuer) -> Value {
    let response = server
        .admin_put("/trusted-publishers/acme-release")
        .json(&json!({
            "issuer": issuer.url,
            "claims": {"repository": REPOSITORY, "ref": "refs/tags/v1.*"},
            "allowedIds": ["acme-plugin@1"],
            "allowedKinds": ["release"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

async fn exchange(server: &TestServer, token: &str) -> reqwest::Response {
    server
        .client
        .post(format!("{}/oidc/token", server.url))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap()
}

async fn exchanged_key(server: &TestServer, token: &str) -> Value {
    let response = exchange(server, token).await;
    assert_eq!(response.status(), 201);
    response.json().await.unwrap()
}

#[tokio::test]
async fn a_ci_run_publishes_a_per_arch_slot_with_no_stored_secret() {
    let issuer = TestIssuer::start().await;
    let server = server_for(&issuer).await;
    let publisher = put_release_publisher(&server, &issuer).await;
    assert_eq!(
        publisher["audience"], AUDIENCE,
        "default: the registry's name"
    );

    let before = now_seconds();
    let issued = exchanged_key(&server, &issuer.token_with(|_| {})).await;
    assert_eq!(issued["publisher"], "acme-release");
    let token = issued["token"].as_str().unwrap();
    assert!(token.starts_with("rlq_"));
    let expires: reliquary_client::types::Timestamp =
        issued["expiresAt"].as_str().unwrap().parse().unwrap();
    let lifetime = expires.millis() / 1000 - before;
    assert!(
        (899..=901).contains(&lifetime),
        "15 minutes, not {lifetime}s"
    );

    let (status, doc) = upload_as(
        &server,
        token,
        "acme-plugin@1",
        "architecture=x64",
        npm_tarball("acme-plugin", "1.4.0"),
    )
    .await;
    assert_eq!(status, 201, "{doc}");
    let by = &doc["tarballs"]["x64"]["publishedBy"];
    assert_eq!(by["keyName"], "oidc:acme-release:7301");
    assert_eq!(
        by["oidc"],
        json!({
            "issuer": issuer.url,
            "repository": REPOSITORY,
            "ref": "refs/tags/v1.4.0",
            "sha": "4f1c2a9e8b7d6c5a4f1c2a9e8b7d6c5a4f1c2a9e",
            "runId": "7301",
            "workflowRef": format!("{REPOSITORY}/.github/workflows/release.yml@refs/tags/v1.4.0"),
        })
    );

    // An ES256 token works the same; the key it gets keeps the publisher's scopes.
    let es = issuer.mint(&issuer.claims(), SigningKey::Es256);
    let es_token = exchanged_key(&server, &es).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, body) = upload_as(
        &server,
        &es_token,
        "acme-plugin@2",
        "architecture=x64",
        npm_tarball("acme-plugin", "2.0.0"),
    )
    .await;
    assert_eq!(status, 403, "allowedIds of the publisher: {body}");
    let (status, body) = upload_as(
        &server,
        &es_token,
        "acme-plugin@1",
        "architecture=arm64&kind=branch",
        npm_tarball("acme-plugin", "1.4.0"),
    )
    .await;
    assert!(
        status == 403 || status == 409,
        "a branch slot is refused: {body}"
    );

    let exchanges = audit(&server, "oidc.exchange").await;
    let success = exchanges
        .iter()
        .find(|e| e["outcome"] == "success")
        .expect("an oidc.exchange entry");
    let detail = success["detail"].as_str().unwrap();
    for fact in [
        "repository=acme/acme-plugin",
        "ref=refs/tags/v1.4.0",
        "run_id=7301",
        "sha=4f1c",
        "workflow_ref=",
    ] {
        assert!(detail.contains(fact), "{fact} in {detail}");
    }
    assert_eq!(success["keyName"], "oidc:acme-release:7301");

    // The UI shows the run on the slot and the publisher on the keys page.
    let cookie = crate::lifecycle::ui_session(&server, ADMIN_TOKEN).await;
    let ui_page = |path: &str| server.get(path).header("cookie", cookie.clone()).send();
    let page = ui_page("/ui/artefacts/acme-plugin@1")
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("data-testid=\"published-oidc\""), "{page}");
    assert!(page.contains("refs/tags/v1.4.0") && page.contains("run 7301"));
    let keys = ui_page("/ui/keys").await.unwrap().text().await.unwrap();
    assert!(keys.contains("data-publisher=\"acme-release\""), "{keys}");
    assert!(keys.contains("repository=acme/acme-plugin"));
}

/// Every refusal names the check that failed.
#[tokio::test]
async fn refusals_say_which_check_failed() {
    let issuer = TestIssuer::start().await;
    let server = server_for(&issuer).await;
    put_release_publisher(&server, &issuer).await;
    let now = now_seconds();
    let set = |name: &'static str, value: Value| {
        move |c: &mut serde_json::Map<String, Value>| {
            c.insert(name.into(), value);
        }
    };
    let mut no_jti = issuer.claims();
    no_jti.remove("jti");
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &issuer.claims(),
        &jsonwebtoken::EncodingKey::from_secret(b"shared").unwrap(),
    )
    .unwrap();
    let cases: Vec<(&str, String, u16, &str, &str)> = vec![
        (
            "another repository",
            issuer.token_with(set("repository", json!("mallory/acme-plugin"))),
            403,
            "oidc_no_publisher",
            "No trusted publisher trusts the repository of this token (`repository` `mallory/acme-plugin`",
        ),
        (
            "a branch, not a tag",
            issuer.token_with(set("ref", json!("refs/heads/main"))),
            403,
            "oidc_no_publisher",
            "claim `ref` must match `refs/tags/v1.*`; the token has `refs/heads/main`",
        ),
        (
            "another audience",
            issuer.token_with(set("aud", json!("someone-else"))),
            401,
            "oidc_invalid_token",
            "audience [\"someone-else\"] is not the audience",
        ),
        (
            "another issuer",
            issuer.token_with(set("iss", json!("https://token.example.com"))),
            401,
            "oidc_invalid_token",
            "issuer `https://token.example.com` is not the issuer of any trusted publisher",
        ),
        (
            "expired",
            issuer.token_with(set("exp", json!(now - 120))),
            401,
            "oidc_invalid_token",
            "it expired at",
        ),
        (
            "not yet valid",
            issuer.token_with(set("nbf", json!(now + 600))),
            401,
            "oidc_invalid_token",
            "not valid before",
        ),
        (
            "issued in the future",
            issuer.token_with(set("iat", json!(now + 600))),
            401,
            "oidc_invalid_token",
            "issued in the future",
        ),
        (
            "valid for days",
            issuer.token_with(set("exp", json!(now + 7 * 86_400))),
            401,
            "oidc_invalid_token",
            "more than 24 hours",
        ),
        (
            "forged with the kid of a published key",
            issuer.mint(&issuer.claims(), SigningKey::Attacker),
            401,
            "oidc_invalid_token",
            "signature does not verify with key `rs-1`",
        ),
        (
            "signed with a key the issuer never published",
            issuer.mint(&issuer.claims(), SigningKey::Rotated),
            401,
            "oidc_invalid_token",
            "key `rs-2` is not among the signing keys",
        ),
        (
            "a shared-secret algorithm",
            hs256,
            401,
            "oidc_invalid_token",
            "algorithm `HS256` is not accepted",
        ),
        (
            "no jti",
            issuer.mint(&no_jti, SigningKey::Rs256),
            401,
            "oidc_invalid_token",
            "no token id (`jti`)",
        ),
        (
            "not a JWT",
            "not.a.jwt".into(),
            401,
            "oidc_invalid_token",
            "it is not a JWT",
        ),
        (
            "alg none",
            format!(
                "{}.{}.",
                b64(&json!({"alg": "none", "kid": "rs-1"})),
                b64(&Value::Object(issuer.claims()))
            ),
            401,
            "oidc_invalid_token",
            "it is not a JWT",
        ),
        (
            "an ES256 signature under the kid of an RS256 key",
            {
                let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES256);
                header.kid = Some("rs-1".into());
                jsonwebtoken::encode(
                    &header,
                    &issuer.claims(),
                    &jsonwebtoken::EncodingKey::from_ec_pem(include_bytes!(
                        "../fixtures/oidc/issuer-es256.pem"
                    ))
                    .unwrap(),
                )
                .unwrap()
            },
            401,
            "oidc_invalid_token",
            "key `rs-1` of",
        ),
        (
            "a non-numeric nbf",
            issuer.token_with(set("nbf", json!("soon"))),
            401,
            "oidc_invalid_token",
            "`nbf` is not a number",
        ),
        (
            "over 16 KiB",
            "e".repeat(17 * 1024),
            401,
            "oidc_invalid_token",
            "longer than 16384 bytes",
        ),
    ];
    for (case, token, status, code, message) in cases {
        let body = expect_error(exchange(&server, &token).await, status, code).await;
        let actual = body["message"].as_str().unwrap();
        assert!(actual.contains(message), "{case}: {actual}");
    }
    // A claim the publisher pins but the token lacks is named too.
    server
        .admin_put("/trusted-publishers/acme-prod")
        .json(&json!({
            "issuer": issuer.url,
            "claims": {"repository": REPOSITORY, "ref": "refs/tags/v1.*", "environment": "production", "job": "deploy"},
            "allowedIds": ["acme-plugin@1"],
        }))
        .send()
        .await
        .unwrap();
    server
        .admin_delete("/trusted-publishers/acme-release")
        .send()
        .await
        .unwrap();
    let body = expect_error(
        exchange(&server, &issuer.token_with(|_| {})).await,
        403,
        "oidc_no_publisher",
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("claim `job` must match `deploy`; the token does not carry it"),
        "{body}"
    );
    // None of it issued a key; refusals by a publisher's rules are in the audit log (invalid
    // tokens, like unknown API tokens, are not: anyone can send those).
    let keys = server.admin_json("/keys").await;
    assert!(keys["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|k| k.get("trustedPublisher").is_none()));
    let refusals = audit(&server, "oidc.exchange").await;
    assert_eq!(refusals.len(), 3, "{refusals:?}");
    assert!(refusals.iter().all(|e| e["outcome"] != "success"));
    // The same refused token sent again is not a second entry: no one can flood the log.
    let again = issuer.token_with(|_| {});
    for _ in 0..3 {
        expect_error(exchange(&server, &again).await, 403, "oidc_no_publisher").await;
    }
    assert_eq!(audit(&server, "oidc.exchange").await.len(), 4);

    // An audience list that holds the registry's is accepted.
    server
        .admin_put("/trusted-publishers/acme-release")
        .json(&json!({"issuer": issuer.url, "claims": {"repository": REPOSITORY}, "allowedIds": ["acme-plugin@1"]}))
        .send()
        .await
        .unwrap();
    let listed = issuer.token_with(set("aud", json!(["sigstore", AUDIENCE])));
    assert_eq!(exchange(&server, &listed).await.status(), 201);
}

fn b64(value: &Value) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string())
}

/// A registry left at the default name gets no publisher with the default audience: a token
/// for `reliquary` would be good at every such registry.
#[tokio::test]
async fn the_default_audience_needs_a_named_registry() {
    let server = TestServer::start().await;
    let body = json!({"issuer": "https://token.actions.githubusercontent.com", "claims": {"repository": REPOSITORY}, "allowedIds": ["acme-plugin@1"]});
    let refused = server
        .admin_put("/trusted-publishers/p")
        .json(&body)
        .send()
        .await
        .unwrap();
    let error = expect_error(refused, 400, "invalid_publisher").await;
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("--registry-name"),
        "{error}"
    );
    let mut named = body.clone();
    named["audience"] = json!("reliquary.acme.example");
    let accepted = server
        .admin_put("/trusted-publishers/p")
        .json(&named)
        .send()
        .await
        .unwrap();
    assert_eq!(accepted.status(), 201);
}

/// Two replicas on one store: a token accepted by one is refused by the other.
#[tokio::test]
async fn a_token_is_accepted_once_across_replicas() {
    let issuer = TestIssuer::start().await;
    let first = server_for(&issuer).await;
    put_release_publisher(&first, &issuer).await;
    let second = TestServer::launch(first.config.clone()).await;

    let token = issuer.token_with(|_| {});
    let (a, b) = tokio::join!(exchange(&first, &token), exchange(&second, &token));
    let mut statuses = [a.status().as_u16(), b.status().as_u16()];
    statuses.sort_unstable();
    assert_eq!(
        statuses,
        [201, 409],
        "one replica wins, the other sees a replay"
    );
    let replay = expect_error(exchange(&first, &token).await, 409, "oidc_token_reused").await;
    assert!(replay["message"]
        .as_str()
        .unwrap()
        .contains("accepted once"));
    // A fresh token (a new jti) from the same run is fine.
    assert_eq!(
        exchange(&second, &issuer.token_with(|_| {})).await.status(),
        201
    );
    second.stop().await;
}

/// Keys from trusted publishing expire by themselves, after `--oidc-token-ttl`.
#[tokio::test]
async fn exchanged_keys_expire_by_themselves() {
    let issuer = TestIssuer::start().await;
    let clock = reliquary::clock::ManualClock::starting_now();
    let url = issuer.url.clone();
    let manual = clock.clone();
    let server = TestServer::start_with(move |c| {
        c.registry_name = AUDIENCE.into();
        c.oidc_insecure_issuer = Some(url);
        c.oidc_token_ttl = Duration::from_secs(600);
        c.clock = manual;
    })
    .await;
    put_release_publisher(&server, &issuer).await;
    let token = exchanged_key(&server, &issuer.token_with(|_| {})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let tarball = || npm_tarball("acme-plugin", "1.4.0");
    let (status, _) = upload_as(
        &server,
        &token,
        "acme-plugin@1",
        "architecture=x64",
        tarball(),
    )
    .await;
    assert_eq!(status, 201);

    clock.advance(Duration::from_secs(601));
    let (status, body) = upload_as(
        &server,
        &token,
        "acme-plugin@1",
        "architecture=arm64",
        tarball(),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("has expired"),
        "{body}"
    );

    // Upkeep deletes exchanged keys a day after they expired; other keys stay.
    assert!(server.admin_json("/keys").await["items"]
        .as_array()
        .unwrap()
        .iter()
        .any(|k| k["trustedPublisher"] == "acme-release"));
    clock.advance(Duration::from_secs(25 * 3600));
    server.registry.upkeep().await.unwrap();
    let keys = server.admin_json("/keys").await;
    let keys = keys["items"].as_array().unwrap();
    assert!(
        keys.iter().all(|k| k.get("trustedPublisher").is_none()),
        "{keys:?}"
    );
    assert!(!keys.is_empty());
}

/// The issuer's keys are cached; an unknown `kid` refetches them at most once a minute.
#[tokio::test]
async fn issuer_keys_are_cached_and_refetched_on_an_unknown_kid_once_a_minute() {
    let issuer = TestIssuer::start().await;
    let clock = reliquary::clock::ManualClock::starting_now();
    let (url, manual) = (issuer.url.clone(), clock.clone());
    let server = TestServer::start_with(move |c| {
        c.registry_name = AUDIENCE.into();
        c.oidc_insecure_issuer = Some(url);
        c.clock = manual;
    })
    .await;
    put_release_publisher(&server, &issuer).await;
    for _ in 0..3 {
        assert_eq!(
            exchange(&server, &issuer.token_with(|_| {})).await.status(),
            201
        );
    }
    assert_eq!(issuer.jwks_fetches(), 1, "fetched once, then cached");

    // The issuer rotates; tokens signed with the new key arrive (after the minute in which the
    // keys were last fetched).
    issuer.rotate();
    expect_error(
        exchange(&server, &issuer.mint(&issuer.claims(), SigningKey::Rotated)).await,
        401,
        "oidc_invalid_token",
    )
    .await;
    assert_eq!(
        issuer.jwks_fetches(),
        1,
        "the keys were fetched less than a minute ago"
    );
    clock.advance(Duration::from_secs(61));
    let rotated = || issuer.mint(&issuer.claims(), SigningKey::Rotated);
    assert_eq!(
        exchange(&server, &rotated()).await.status(),
        201,
        "unknown kid: refetched"
    );
    assert_eq!(issuer.jwks_fetches(), 2);

    // Unknown kids within the minute do not make the registry hammer the issuer.
    for _ in 0..3 {
        let forged = {
            let mut claims = issuer.claims();
            claims.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
            let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
            header.kid = Some("rs-9".into());
            jsonwebtoken::encode(
                &header,
                &claims,
                &jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!(
                    "../fixtures/oidc/attacker-rs256.pem"
                ))
                .unwrap(),
            )
            .unwrap()
        };
        expect_error(exchange(&server, &forged).await, 401, "oidc_invalid_token").await;
    }
    assert_eq!(issuer.jwks_fetches(), 2, "no refetch within the cooldown");
    clock.advance(Duration::from_secs(61));
    expect_error(
        exchange(
            &server,
            &issuer.mint(&issuer.claims(), SigningKey::Attacker),
        )
        .await,
        401,
        "oidc_invalid_token",
    )
    .await;
    assert_eq!(
        issuer.jwks_fetches(),
        2,
        "a known kid with a bad signature fetches nothing"
    );
}

#[tokio::test]
async fn publishers_are_admin_only_validated_and_deleting_one_revokes_its_keys() {
    let issuer = TestIssuer::start().await;
    let server = server_for(&issuer).await;
    let put = |name: &str, body: Value| {
        server
            .admin_put(&format!("/trusted-publishers/{name}"))
            .json(&body)
            .send()
    };
    let refused = [
        (
            json!({"issuer": issuer.url, "claims": {}, "allowedIds": ["a@1"]}),
            "`claims` names 1 to",
        ),
        (
            json!({"issuer": issuer.url, "claims": {"ref": "refs/tags/*"}, "allowedIds": ["a@1"]}),
            "must pin one of",
        ),
        (
            json!({"issuer": issuer.url, "claims": {"repository": "acme/*"}, "allowedIds": ["a@1"]}),
            "must pin one of",
        ),
        (
            json!({"issuer": "http://token.example.com", "claims": {"repository": "a/b"}, "allowedIds": ["a@1"]}),
            "must be an https:// URL",
        ),
        (
            json!({"issuer": issuer.url, "claims": {"repository": "a/b"}, "allowedIds": []}),
            "`allowedIds` lists 1 to",
        ),
        (
            json!({"issuer": issuer.url, "claims": {"repository": "a/b"}, "allowedIds": ["Acme@1"]}),
            "not an id pattern",
        ),
    ];
    for (body, message) in refused {
        let error = expect_error(
            put("p", body.clone()).await.unwrap(),
            400,
            "invalid_publisher",
        )
        .await;
        assert!(
            error["message"].as_str().unwrap().contains(message),
            "{body}: {error}"
        );
    }
    assert!(server.admin_json("/trusted-publishers").await["items"]
        .as_array()
        .unwrap()
        .is_empty());

    let publisher = put_release_publisher(&server, &issuer).await;
    let replaced = put(
        "acme-release",
        json!({"issuer": issuer.url, "audience": AUDIENCE, "claims": {"repository": REPOSITORY}, "allowedIds": ["acme-plugin@*"]}),
    )
    .await
    .unwrap();
    assert_eq!(replaced.status(), 200);
    let replaced: Value = replaced.json().await.unwrap();
    assert_eq!(replaced["createdAt"], publisher["createdAt"]);

    // Only admins manage publishers.
    let created: Value = server
        .admin_post("/keys")
        .json(&json!({"name": "ci", "role": "publish"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let publish_token = created["token"].as_str().unwrap();
    let response = server
        .client
        .get(format!("{}/trusted-publishers", server.url))
        .bearer_auth(publish_token)
        .send()
        .await
        .unwrap();
    expect_error(response, 403, "forbidden").await;

    // The same PUT again (as configuration tools repeat it) leaves issued keys alone; new
    // rules revoke the keys issued under the old ones.
    let fresh_key = || async {
        exchanged_key(&server, &issuer.token_with(|_| {})).await["token"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let rules = json!({"issuer": issuer.url, "audience": AUDIENCE, "claims": {"repository": REPOSITORY}, "allowedIds": ["acme-plugin@*"]});
    let token = fresh_key().await;
    assert_eq!(
        put("acme-release", rules.clone()).await.unwrap().status(),
        200
    );
    let (status, _) = upload_as(
        &server,
        &token,
        "acme-plugin@1",
        "architecture=x64",
        npm_tarball("acme-plugin", "1.0.0"),
    )
    .await;
    assert_eq!(status, 201, "an unchanged publisher keeps its keys");
    let mut narrowed = rules.clone();
    narrowed["allowedKinds"] = json!(["release"]);
    assert_eq!(put("acme-release", narrowed).await.unwrap().status(), 200);
    let (status, body) = upload_as(
        &server,
        &token,
        "acme-plugin@1",
        "architecture=arm64",
        npm_tarball("acme-plugin", "1.0.0"),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(
        body["message"].as_str().unwrap().contains("revoked"),
        "{body}"
    );

    let token = fresh_key().await;
    let deleted = server
        .admin_delete("/trusted-publishers/acme-release")
        .send()
        .await
        .unwrap();
    assert_eq!(deleted.status(), 204);
    let (status, body) = upload_as(
        &server,
        &token,
        "acme-plugin@1",
        "architecture=x64",
        npm_tarball("acme-plugin", "1.0.0"),
    )
    .await;
    assert_eq!(status, 401, "{body}");
    assert!(body["message"].as_str().unwrap().contains("revoked"));
    expect_error(
        server
            .admin_delete("/trusted-publishers/acme-release")
            .send()
            .await
            .unwrap(),
        404,
        "publisher_not_found",
    )
    .await;
}

/// `reliquary publish --oidc` with GitHub Actions' variables pointed at the test issuer, and
/// with `RELIQUARY_OIDC_TOKEN` as GitLab CI would set it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_publishes_with_github_actions_and_gitlab_tokens() {
    let issuer = TestIssuer::start().await;
    let server = server_for(&issuer).await;
    let admin = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_reliquary"))
            .args(args)
            .args(["--json", "--registry", &server.url, "--token", ADMIN_TOKEN])
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        serde_json::from_slice::<Value>(&output.stdout).unwrap()
    };
    // The admin declares the publisher with the CLI.
    let put = admin(&[
        "trusted-publishers",
        "put",
        "acme-release",
        "--issuer",
        &issuer.url,
        "--claim",
        &format!("repository={REPOSITORY}"),
        "--claim",
        "ref=refs/tags/v1.*",
        "--allowed-id",
        "acme-plugin@1",
        "--allowed-kind",
        "release",
    ]);
    assert_eq!(put["claims"]["ref"], "refs/tags/v1.*");
    let listed = admin(&["trusted-publishers", "list"]);
    assert_eq!(listed[0]["name"], "acme-release");
    assert_eq!(listed[0]["audience"], AUDIENCE);
    let dir = tempfile::tempdir().unwrap();
    let tarball = dir.path().join("acme-plugin-1.4.0.tgz");
    std::fs::write(&tarball, npm_tarball("acme-plugin", "1.4.0")).unwrap();
    let publish = |arch: &str| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_reliquary"));
        command
            .args([
                "publish",
                "--oidc",
                "--json",
                "--id",
                "acme-plugin@1",
                "--arch",
                arch,
            ])
            .arg(&tarball)
            .args(["--registry", &server.url])
            .env_remove("RELIQUARY_TOKEN")
            .env_remove("RELIQUARY_OIDC_TOKEN")
            .env_remove("ACTIONS_ID_TOKEN_REQUEST_URL")
            .env_remove("ACTIONS_ID_TOKEN_REQUEST_TOKEN");
        command
    };

    let output = publish("x64")
        .env(
            "ACTIONS_ID_TOKEN_REQUEST_URL",
            format!("{}/token?api-version=2.0", issuer.url),
        )
        .env("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let summary: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["architecture"], "x64");

    let gitlab = issuer.token_with(|c| {
        c.insert("run_id".into(), json!("7302"));
    });
    let output = publish("arm64")
        .env("RELIQUARY_OIDC_TOKEN", &gitlab)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let doc = server.admin_json("/artefacts/acme-plugin@1").await;
    assert_eq!(
        doc["tarballs"]["x64"]["publishedBy"]["oidc"]["runId"],
        "7301"
    );
    assert_eq!(
        doc["tarballs"]["arm64"]["publishedBy"]["oidc"]["runId"],
        "7302"
    );

    // Without a token source it says what to do; a replayed token says so.
    let output = publish("x64").output().unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("id-token: write"));
    let output = publish("x64")
        .env("RELIQUARY_OIDC_TOKEN", &gitlab)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("accepted once"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A mirror keeps who published each slot, OIDC facts included; a peer's facts are validated
/// like any other field it sends.
#[tokio::test]
async fn mirrors_keep_the_publishing_run() {
    let issuer = TestIssuer::start().await;
    let url = issuer.url.clone();
    let origin = TestServer::start_with(move |c| {
        c.registry_name = AUDIENCE.into();
        c.oidc_insecure_issuer = Some(url);
    })
    .await;
    origin
        .admin_put("/trusted-publishers/acme-release")
        .json(&json!({
            "issuer": issuer.url,
            "audience": AUDIENCE,
            "claims": {"repository": REPOSITORY},
            "allowedIds": ["acme-plugin@1"],
        }))
        .send()
        .await
        .unwrap();
    let token = exchanged_key(&origin, &issuer.token_with(|_| {})).await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, published) = upload_as(
        &origin,
        &token,
        "acme-plugin@1",
        "architecture=x64",
        npm_tarball("acme-plugin", "1.4.0"),
    )
    .await;
    assert_eq!(status, 201);

    let mirror = crate::federation::named("staging").await;
    crate::federation::add_remote(&mirror, "prod", &origin, json!({})).await;
    let summary = crate::federation::sync(&mirror, "prod").await;
    assert_eq!(summary.mirrored, 1, "{summary:?}");
    let (_, mirrored) = crate::federation::doc(&mirror, "acme-plugin@1").await;
    assert_eq!(
        mirrored["tarballs"]["x64"]["publishedBy"],
        published["tarballs"]["x64"]["publishedBy"]
    );
    assert_eq!(
        mirrored["tarballs"]["x64"]["publishedBy"]["oidc"]["runId"],
        "7301"
    );
}

/// An issuer that misbehaves (discovery naming another issuer, a key set that never ends, a
/// redirect elsewhere) costs an exchange a clear 503, never a hang or a fetch it did not name.
#[tokio::test]
async fn a_misbehaving_issuer_is_refused_with_a_clear_error() {
    use axum::response::{IntoResponse, Redirect};
    use axum::routing::get;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let discovery_url = url.clone();
    let fetches = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = fetches.clone();
    let app = axum::Router::new()
        .route(
            "/wrong/.well-known/openid-configuration",
            get(move || {
                counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async { axum::Json(json!({"issuer": "https://elsewhere.example", "jwks_uri": "https://elsewhere.example/jwks"})) }
            }),
        )
        .route(
            "/huge/.well-known/openid-configuration",
            get(move || {
                let url = discovery_url.clone();
                async move { axum::Json(json!({"issuer": format!("{url}/huge"), "jwks_uri": format!("{url}/huge/jwks")})) }
            }),
        )
        .route(
            "/huge/jwks",
            get(|| async { format!("{{\"keys\": [\"{}\"]}}", "k".repeat(300 * 1024)).into_response() }),
        )
        .route(
            "/moved/.well-known/openid-configuration",
            get(|| async { Redirect::temporary("https://elsewhere.example/.well-known/openid-configuration") }),
        );
    let task = tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let issuer = TestIssuer::start().await;
    for (path, message) in [
        ("wrong", "names issuer `https://elsewhere.example`"),
        ("huge", "sent more than 262144 bytes"),
        ("moved", "answered 307"),
    ] {
        let bad_issuer = format!("{url}/{path}");
        let configured = bad_issuer.clone();
        let server =
            TestServer::start_with(move |c| c.oidc_insecure_issuer = Some(configured)).await;
        server
            .admin_put("/trusted-publishers/p")
            .json(&json!({"issuer": bad_issuer, "audience": AUDIENCE, "claims": {"repository": REPOSITORY}, "allowedIds": ["acme-plugin@1"]}))
            .send()
            .await
            .unwrap();
        let token = issuer.token_with(|c| {
            c.insert("iss".into(), json!(bad_issuer));
        });
        let body = expect_error(
            exchange(&server, &token).await,
            503,
            "oidc_issuer_unavailable",
        )
        .await;
        assert!(
            body["message"].as_str().unwrap().contains(message),
            "{path}: {body}"
        );
        // A failed fetch is not retried within the minute, however many tokens arrive.
        let token = issuer.token_with(|c| {
            c.insert("iss".into(), json!(format!("{url}/{path}")));
        });
        expect_error(
            exchange(&server, &token).await,
            503,
            "oidc_issuer_unavailable",
        )
        .await;
    }
    assert_eq!(fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
    task.abort();
}
