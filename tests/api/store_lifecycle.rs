//! What survives a restart, what happens under concurrency, and the bootstrap of the first key.

use std::collections::HashSet;

use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn everything_survives_a_restart() {
    let server = TestServer::start().await;
    let tarball = npm_tarball("acme", "1.0.0");
    let doc = server.upload_ok("acme@1", "", tarball.clone(), 201).await;
    let keys_before: Value = server
        .get("/.well-known/reliquary")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();

    let (config, dir) = server.stop().await;
    let server = TestServer::launch(config).await;
    let after: Value = server
        .get("/artefacts/acme@1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(after, doc);
    let bytes = server
        .get("/artefacts/acme@1/tarball")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], &tarball[..]);
    let keys_after: Value = server
        .get("/.well-known/reliquary")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        keys_before, keys_after,
        "the signing key is generated once and reused"
    );
    let next = server
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.1"), 200)
        .await;
    assert!(
        next["seq"].as_i64() > doc["seq"].as_i64(),
        "seq keeps increasing across restarts"
    );
    drop(dir);
}

#[tokio::test]
async fn concurrent_uploads_to_one_slot_end_with_exactly_one_of_them() {
    let server = TestServer::start().await;
    server
        .upload_ok(
            "acme@main",
            "kind=branch",
            npm_tarball("acme", "0.0.1"),
            201,
        )
        .await;
    let tarballs: Vec<Vec<u8>> = (0..8)
        .map(|i| npm_tarball_with("acme", &format!("1.0.{i}"), format!("build {i}").as_bytes()))
        .collect();
    let uploads = tarballs
        .iter()
        .map(|t| server.upload("acme@main", "kind=branch", t.clone()));
    let responses = futures::future::join_all(uploads).await;
    let mut revisions = HashSet::new();
    for response in responses {
        assert_eq!(response.status(), 200);
        let doc: Value = response.json().await.unwrap();
        assert!(
            revisions.insert(doc["revision"].as_i64().unwrap()),
            "each upload commits its own revision"
        );
    }
    let doc: Value = server
        .admin_get("/artefacts/acme@main")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(doc["revision"], 9);
    let slot = &doc["tarballs"]["noarch"];
    let winner = tarballs
        .iter()
        .find(|t| sha256_hex(t) == slot["sha256"].as_str().unwrap())
        .expect("the slot holds one of the uploads");
    assert_eq!(slot["size"], winner.len() as u64);
    let served = server
        .admin_get("/artefacts/acme@main/tarball")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(
        &served[..],
        &winner[..],
        "the slot's metadata and blob belong to the same upload"
    );
}

#[tokio::test]
async fn identical_tarballs_are_stored_once() {
    let server = TestServer::start().await;
    let tarball = npm_tarball("acme", "1.0.0");
    server.upload_ok("acme@1", "", tarball.clone(), 201).await;
    server
        .upload_ok("acme@1", "architecture=x64", tarball.clone(), 200)
        .await;
    server
        .upload_ok("acme@main", "kind=branch", tarball.clone(), 201)
        .await;
    let blobs = server.blob_keys("sha256").await;
    assert_eq!(blobs.len(), 1, "{blobs:?}");
    assert!(blobs[0].ends_with(&sha256_hex(&tarball)));
}

#[tokio::test]
async fn without_a_configured_token_the_first_admin_token_is_generated_once() {
    let server = TestServer::start_with(|config| config.admin_token = None).await;
    let path = server.data_dir().join("admin-token");
    let token = std::fs::read_to_string(&path).unwrap().trim().to_owned();
    assert!(token.starts_with("rlq_") && token.len() >= 44, "{token}");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
    }
    let response = server
        .client
        .post(format!("{}/artefacts/npm/acme@1", server.url))
        .bearer_auth(&token)
        .body(npm_tarball("acme", "1.0.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    // The token is stored only as a hash: its plaintext is in the token file and nowhere else.
    for file in files_under(server.data_dir()) {
        if file != path {
            let bytes = std::fs::read(&file).unwrap();
            assert!(
                !bytes.windows(token.len()).any(|w| w == token.as_bytes()),
                "plaintext token in {file:?}"
            );
        }
    }
    let (config, dir) = server.stop().await;
    let restarted = TestServer::launch(config).await;
    let again = std::fs::read_to_string(restarted.data_dir().join("admin-token")).unwrap();
    assert_eq!(
        again.trim(),
        token,
        "no second token while an admin key exists"
    );
    drop(dir);
}

#[tokio::test]
async fn health_and_readiness() {
    let server = TestServer::start().await;
    assert_eq!(server.get("/healthz").send().await.unwrap().status(), 200);
    assert_eq!(server.get("/readyz").send().await.unwrap().status(), 200);
    let root = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = root.get(format!("{}/", server.url)).send().await.unwrap();
    assert_eq!(redirect.status(), 307);
    assert_eq!(redirect.headers()["location"], "/ui/");
    expect_error(
        server.get("/nowhere").send().await.unwrap(),
        404,
        "route_not_found",
    )
    .await;
}
