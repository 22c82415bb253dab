//! Scale-out (v1.1): downloads redirected to object storage after every check, and presigned
//! URLs that expire. These run on the S3-protocol test server whatever the suite's backend.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};

use crate::common::*;
use crate::keys::create_key;

/// A registry whose blobs are in S3 and whose downloads are redirected there.
async fn redirecting(ttl: Duration) -> TestServer {
    TestServer::start_with(move |c| {
        c.storage = Some(s3_url());
        c.s3_endpoint = Some(require_env("RELIQUARY_S3_ENDPOINT"));
        c.storage_redirect = Some(ttl);
    })
    .await
}

fn no_redirects() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

async fn tarball(
    server: &TestServer,
    id: &str,
    arch: &str,
    token: Option<&str>,
) -> reqwest::Response {
    let mut request = no_redirects().get(format!(
        "{}/artefacts/{}/tarball?architecture={arch}",
        server.url,
        encode(id)
    ));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

fn header<'a>(response: &'a reqwest::Response, name: &str) -> &'a str {
    response
        .headers()
        .get(name)
        .unwrap_or_else(|| panic!("no {name} header"))
        .to_str()
        .unwrap()
}

async fn downloads(server: &TestServer, delivery: &str) -> u64 {
    let text = server
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| {
            l.starts_with(&format!(
                "reliquary_tarball_downloads_total{{delivery=\"{delivery}\"}}"
            ))
        })
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn downloads_are_redirected_to_the_bucket_after_every_check() {
    let server = redirecting(Duration::from_secs(300)).await;
    let noarch = npm_tarball_with("acme", "1.4.2", b"portable");
    let x64 = npm_tarball_with("acme", "1.4.2", b"native x64");
    server.upload_ok("acme@1", "", noarch.clone(), 201).await;
    server
        .upload_ok("acme@1", "architecture=x64", x64.clone(), 200)
        .await;
    server
        .upload_ok(
            "acme@main",
            "kind=branch",
            npm_tarball_with("acme", "1.5.0-dev", b"dev"),
            201,
        )
        .await;

    // The 302 carries the artefact headers; the bucket carries the bytes.
    let redirect = tarball(&server, "acme@1", "x64", None).await;
    assert_eq!(redirect.status(), 302);
    assert_eq!(
        header(&redirect, "etag"),
        format!("\"sha256:{}\"", sha256_hex(&x64))
    );
    assert_eq!(header(&redirect, "x-artefact-architecture"), "x64");
    assert_eq!(header(&redirect, "x-artefact-version"), "1.4.2");
    assert_eq!(header(&redirect, "cache-control"), "no-store");
    let location = header(&redirect, "location").to_owned();
    assert!(
        location.starts_with(&require_env("RELIQUARY_S3_ENDPOINT")),
        "{location}"
    );
    assert!(
        location.contains("X-Amz-Signature="),
        "presigned: {location}"
    );
    let from_bucket = reqwest::get(&location).await.unwrap();
    assert_eq!(from_bucket.status(), 200);
    assert_eq!(
        header(&from_bucket, "content-type"),
        "application/gzip",
        "signed into the URL"
    );
    assert_eq!(from_bucket.bytes().await.unwrap().to_vec(), x64);
    // Ranges go to the bucket too.
    let ranged = reqwest::Client::new()
        .get(&location)
        .header("range", "bytes=0-9")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    assert_eq!(ranged.bytes().await.unwrap().to_vec(), x64[..10].to_vec());

    // Resolution happens before: an arm64 host is sent to the noarch blob.
    let fallback = tarball(&server, "acme@1", "arm64", None).await;
    assert_eq!(fallback.status(), 302);
    assert_eq!(header(&fallback, "x-artefact-architecture"), "noarch");
    let bytes = reqwest::get(header(&fallback, "location"))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(bytes.to_vec(), noarch);

    // A current copy is a 304, not a redirect.
    let etag = format!("\"sha256:{}\"", sha256_hex(&x64));
    let not_modified = no_redirects()
        .get(format!(
            "{}/artefacts/acme@1/tarball?architecture=x64",
            server.url
        ))
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    assert!(not_modified.headers().get("location").is_none());

    // The federation filter first: branch builds are never redirected to anonymous readers or
    // mirror keys; a read key gets its redirect.
    assert_eq!(
        tarball(&server, "acme@main", "x64", None).await.status(),
        404
    );
    let mirror = create_key(&server, json!({"name": "m", "role": "mirror"}))
        .await
        .token;
    assert_eq!(
        tarball(&server, "acme@main", "x64", Some(&mirror))
            .await
            .status(),
        404
    );
    let reader = create_key(&server, json!({"name": "r", "role": "read"}))
        .await
        .token;
    assert_eq!(
        tarball(&server, "acme@main", "x64", Some(&reader))
            .await
            .status(),
        302
    );
    // Mirrors never follow redirects (the bytes must come from the peer they pinned): streamed.
    let streamed = tarball(&server, "acme@1", "x64", Some(&mirror)).await;
    assert_eq!(streamed.status(), 200);
    assert_eq!(streamed.bytes().await.unwrap().to_vec(), x64);
    // Auth first, too.
    let hidden = TestServer::start_with(|c| {
        c.storage = Some(s3_url());
        c.s3_endpoint = Some(require_env("RELIQUARY_S3_ENDPOINT"));
        c.storage_redirect = Some(Duration::from_secs(300));
        c.anonymous_read = reliquary::config::AnonymousRead::None;
    })
    .await;
    hidden.upload_ok("acme@1", "", noarch.clone(), 201).await;
    assert_eq!(tarball(&hidden, "acme@1", "x64", None).await.status(), 401);

    assert_eq!(
        downloads(&server, "redirect").await,
        3,
        "x64, arm64 and the read key's"
    );
    assert_eq!(downloads(&server, "stream").await, 1, "the mirror key's");

    // The client library and the CLI follow the redirect and still verify.
    let cache = tempfile::tempdir().unwrap();
    let host = host_client(&server.url, &server.url, cache.path(), None).await;
    let ensured = host.ensure_artefact("acme@1", "x64").await.unwrap();
    assert!(ensured.downloaded);
    assert_eq!(ensured.sha256, sha256_hex(&x64));
    let (url, dir) = (server.url.clone(), tempfile::tempdir().unwrap());
    let cache_dir = dir.path().to_str().unwrap().to_owned();
    let output = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_reliquary"))
            .args([
                "ensure",
                "acme@1",
                "--arch",
                "arm64",
                "--trust-registry",
                "--json",
            ])
            .args(["--registry", &url, "--cache-dir", &cache_dir])
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
    let printed: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["sha256"], sha256_hex(&noarch));
    assert_eq!(downloads(&server, "redirect").await, 5);
}

#[tokio::test]
async fn a_presigned_url_expires() {
    // The bucket judges expiry by its own clock, so this one test waits for real time. The
    // signing time has whole seconds, so a URL lives between ttl - 1 s and ttl: 3 s leaves a
    // loaded machine at least 2 s for the first fetch.
    let server = redirecting(Duration::from_secs(3)).await;
    let bytes = npm_tarball("acme", "1.0.0");
    server.upload_ok("acme@1", "", bytes.clone(), 201).await;
    let redirect = tarball(&server, "acme@1", "noarch", None).await;
    let location = header(&redirect, "location").to_owned();
    assert!(location.contains("X-Amz-Expires=3"), "{location}");
    assert_eq!(reqwest::get(&location).await.unwrap().status(), 200);
    tokio::time::sleep(Duration::from_millis(4500)).await;
    let expired = reqwest::get(&location).await.unwrap();
    assert_eq!(expired.status(), 403, "{}", expired.text().await.unwrap());
    // A new request gets a new URL.
    let again = tarball(&server, "acme@1", "noarch", None).await;
    let fresh = reqwest::get(header(&again, "location")).await.unwrap();
    assert_eq!(fresh.bytes().await.unwrap().to_vec(), bytes);
}

#[tokio::test]
async fn redirects_need_s3_storage() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = reliquary::config::Config::new(dir.path());
    config.storage_redirect = Some(Duration::from_secs(300));
    let error = reliquary::open_registry(&config).await.err().unwrap();
    assert!(
        error.to_string().contains("--storage-redirect needs S3"),
        "{error}"
    );
}

#[tokio::test]
async fn the_sync_lease_is_shown_with_its_holder() {
    let production = crate::federation::named("production").await;
    let staging = crate::federation::named("staging").await;
    production
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    let disabled = crate::federation::add_remote(&staging, "idle", &production, json!({})).await;
    assert_eq!(
        disabled["lease"],
        Value::Null,
        "a disabled remote has no lease"
    );
    crate::federation::add_remote(
        &staging,
        "prod",
        &production,
        json!({"enabled": true, "intervalSeconds": 1}),
    )
    .await;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let lease = loop {
        let page: Value = staging.admin_json("/remotes").await;
        let prod = page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == "prod")
            .unwrap()
            .clone();
        if !prod["lease"].is_null() {
            break prod["lease"].clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the worker never took its lease"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(lease["thisReplica"], true);
    assert_eq!(lease["holder"], staging.app.federation.holder());
    assert!(
        lease["until"].as_str().unwrap()
            > reliquary_client::types::Timestamp::now()
                .to_string()
                .as_str()
    );
    let cookie = crate::lifecycle::ui_session(&staging, ADMIN_TOKEN).await;
    let html = staging
        .get("/ui/remotes")
        .header("cookie", cookie)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("(this replica)"), "the Remotes page shows it");
}
