//! `GET /artefacts/{id}` and `GET /artefacts/{id}/tarball`: fallback, validators, ranges.

use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn downloads_resolve_the_arch_else_noarch() {
    let server = TestServer::start().await;
    let noarch = npm_tarball_with("acme", "1.0.0", b"portable");
    let x64 = npm_tarball_with("acme", "1.0.0", b"native x64");
    server.upload_ok("acme@1", "", noarch.clone(), 201).await;
    server
        .upload_ok("acme@1", "architecture=x64", x64.clone(), 200)
        .await;

    for (asked, served, bytes) in [
        ("x64", "x64", &x64),
        ("arm64", "noarch", &noarch),
        ("noarch", "noarch", &noarch),
    ] {
        let response = server
            .get(&format!("/artefacts/acme@1/tarball?architecture={asked}"))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let headers = response.headers().clone();
        assert_eq!(headers["x-artefact-architecture"], served);
        assert_eq!(headers["x-artefact-version"], "1.0.0");
        assert_eq!(headers["content-type"], "application/gzip");
        assert_eq!(headers["accept-ranges"], "bytes");
        assert_eq!(headers["content-length"], bytes.len().to_string().as_str());
        assert_eq!(
            headers["etag"],
            format!("\"sha256:{}\"", sha256_hex(bytes)).as_str()
        );
        assert_eq!(&response.bytes().await.unwrap()[..], &bytes[..]);
    }
    // Without `architecture` the noarch slot is served.
    let default = server
        .get("/artefacts/acme@1/tarball")
        .send()
        .await
        .unwrap();
    assert_eq!(default.headers()["x-artefact-architecture"], "noarch");
}

#[tokio::test]
async fn a_missing_slot_without_noarch_lists_the_slots_there_are() {
    let server = TestServer::start().await;
    server
        .upload_ok(
            "acme@1",
            "architecture=x64",
            npm_tarball("acme", "1.0.0"),
            201,
        )
        .await;
    server
        .upload_ok(
            "acme@1",
            "architecture=arm64",
            npm_tarball_with("acme", "1.0.0", b"arm"),
            200,
        )
        .await;
    let response = server
        .get("/artefacts/acme@1/tarball?architecture=riscv64")
        .send()
        .await
        .unwrap();
    let body = expect_error(response, 404, "architecture_not_found").await;
    let message = body["message"].as_str().unwrap();
    assert!(
        message.contains("x64") && message.contains("arm64"),
        "{message}"
    );

    let unknown = server
        .get("/artefacts/nothing@1/tarball")
        .send()
        .await
        .unwrap();
    expect_error(unknown, 404, "artefact_not_found").await;
}

#[tokio::test]
async fn conditional_requests_answer_304() {
    let server = TestServer::start().await;
    let tarball = npm_tarball("acme", "1.0.0");
    server.upload_ok("acme@1", "", tarball.clone(), 201).await;

    let doc = server.get("/artefacts/acme@1").send().await.unwrap();
    let etag = doc.headers()["etag"].to_str().unwrap().to_owned();
    assert_eq!(etag, "\"1\"");
    let again = server
        .get("/artefacts/acme@1")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 304);
    assert!(again.bytes().await.unwrap().is_empty());

    let tarball_etag = format!("\"sha256:{}\"", sha256_hex(&tarball));
    let cached = server
        .get("/artefacts/acme@1/tarball")
        .header("if-none-match", &tarball_etag)
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    assert_eq!(cached.headers()["x-artefact-architecture"], "noarch");
    let stale = server
        .get("/artefacts/acme@1/tarball")
        .header("if-none-match", "\"sha256:00\"")
        .send()
        .await
        .unwrap();
    assert_eq!(stale.status(), 200);

    // A change of the document changes its validator.
    server
        .upload_ok("acme@1", "", npm_tarball_with("acme", "1.1.0", b"new"), 200)
        .await;
    let changed = server
        .get("/artefacts/acme@1")
        .header("if-none-match", &etag)
        .send()
        .await
        .unwrap();
    assert_eq!(changed.status(), 200);
    assert_eq!(changed.headers()["etag"], "\"2\"");
}

#[tokio::test]
async fn single_ranges_are_206_and_bad_ones_416() {
    let server = TestServer::start().await;
    let tarball = npm_tarball_with("acme", "1.0.0", &crate::upload::rand_bytes(5000));
    server.upload_ok("acme@1", "", tarball.clone(), 201).await;
    let size = tarball.len();

    let partial = server
        .get("/artefacts/acme@1/tarball")
        .header("range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(partial.status(), 206);
    assert_eq!(
        partial.headers()["content-range"],
        format!("bytes 10-19/{size}").as_str()
    );
    assert_eq!(partial.headers()["content-length"], "10");
    assert_eq!(&partial.bytes().await.unwrap()[..], &tarball[10..20]);

    let suffix = server
        .get("/artefacts/acme@1/tarball")
        .header("range", "bytes=-7")
        .send()
        .await
        .unwrap();
    assert_eq!(suffix.status(), 206);
    assert_eq!(&suffix.bytes().await.unwrap()[..], &tarball[size - 7..]);

    let resume = server
        .get("/artefacts/acme@1/tarball")
        .header("range", format!("bytes={}-", size - 3))
        .send()
        .await
        .unwrap();
    assert_eq!(&resume.bytes().await.unwrap()[..], &tarball[size - 3..]);

    let beyond = server
        .get("/artefacts/acme@1/tarball")
        .header("range", format!("bytes={size}-"))
        .send()
        .await
        .unwrap();
    assert_eq!(beyond.status(), 416);
    assert_eq!(
        beyond.headers()["content-range"],
        format!("bytes */{size}").as_str()
    );

    // If-Range with an old validator: the whole current tarball instead of a mixed one.
    let outdated = server
        .get("/artefacts/acme@1/tarball")
        .header("range", "bytes=0-9")
        .header("if-range", "\"sha256:old\"")
        .send()
        .await
        .unwrap();
    assert_eq!(outdated.status(), 200);
    assert_eq!(outdated.bytes().await.unwrap().len(), size);
}

#[tokio::test]
async fn anonymous_readers_see_releases_only_by_default() {
    let server = TestServer::start().await;
    server
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    server
        .upload_ok(
            "acme@main",
            "kind=branch",
            npm_tarball("acme", "1.1.0"),
            201,
        )
        .await;

    assert_eq!(
        server
            .get("/artefacts/acme@1")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    expect_error(
        server.get("/artefacts/acme@main").send().await.unwrap(),
        404,
        "artefact_not_found",
    )
    .await;
    expect_error(
        server
            .get("/artefacts/acme@main/tarball")
            .send()
            .await
            .unwrap(),
        404,
        "artefact_not_found",
    )
    .await;
    let list: Value = server
        .get("/artefacts")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let ids: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["acme@1"]);

    let admin_view = server
        .admin_get("/artefacts/acme@main")
        .send()
        .await
        .unwrap();
    assert_eq!(admin_view.status(), 200);
}

#[tokio::test]
async fn anonymous_read_modes_none_and_all() {
    let closed =
        TestServer::start_with(|c| c.anonymous_read = reliquary::config::AnonymousRead::None).await;
    closed
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    expect_error(
        closed.get("/artefacts/acme@1").send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    expect_error(
        closed.get("/artefacts").send().await.unwrap(),
        401,
        "unauthorized",
    )
    .await;
    assert_eq!(
        closed
            .admin_get("/artefacts/acme@1")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let open =
        TestServer::start_with(|c| c.anonymous_read = reliquary::config::AnonymousRead::All).await;
    open.upload_ok(
        "acme@main",
        "kind=branch",
        npm_tarball("acme", "1.0.0"),
        201,
    )
    .await;
    assert_eq!(
        open.get("/artefacts/acme@main")
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// Every replica keeps hot documents encoded in memory; what another process writes to the
/// shared store must still be what it serves next.
#[tokio::test(flavor = "multi_thread")]
async fn a_replica_serves_what_another_one_wrote_at_once() {
    let writer = TestServer::start().await;
    let reader = TestServer::launch(writer.config.clone()).await;
    let first = npm_tarball("acme", "1.0.0");
    writer.upload_ok("acme@1", "", first.clone(), 201).await;
    for _ in 0..2 {
        let doc: Value = reader
            .get("/artefacts/acme@1")
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        assert_eq!(doc["version"], "1.0.0");
        let tarball = reader
            .get("/artefacts/acme@1/tarball")
            .send()
            .await
            .unwrap();
        assert_eq!(tarball.bytes().await.unwrap(), first);
    }

    let second = npm_tarball_with("acme", "1.1.0", b"new");
    writer.upload_ok("acme@1", "", second.clone(), 200).await;
    let doc = reader.get("/artefacts/acme@1").send().await.unwrap();
    assert_eq!(doc.headers()["etag"], "\"2\"");
    assert_eq!(doc.headers()["content-type"], "application/json");
    let doc: Value = doc.json().await.unwrap();
    assert_eq!(doc["version"], "1.1.0");
    let tarball = reader
        .get("/artefacts/acme@1/tarball")
        .send()
        .await
        .unwrap();
    assert_eq!(tarball.headers()["x-artefact-version"], "1.1.0");
    assert_eq!(tarball.bytes().await.unwrap(), second);

    writer
        .admin_delete("/artefacts/acme@1")
        .send()
        .await
        .unwrap()
        .error_for_status()
        .unwrap();
    let gone = reader.get("/artefacts/acme@1").send().await.unwrap();
    expect_error(gone, 404, "artefact_not_found").await;
}
