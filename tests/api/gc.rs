//! Garbage collection: mark, then sweep after the grace period; referenced blobs never go.

use serde_json::Value;

use crate::common::*;

/// Runs `reliquary gc --json` (plus `extra`) on the server's stores.
pub(crate) fn gc(server: &TestServer, extra: &[&str]) -> Value {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_reliquary"));
    command
        .arg("gc")
        .arg("--data-dir")
        .arg(server.data_dir())
        .arg("--json")
        .args(extra);
    if let Some(database) = &server.config.database {
        command.args(["--database", database]);
    }
    if let Some(storage) = &server.config.storage {
        command.args(["--storage", storage]);
    }
    if let Some(endpoint) = &server.config.s3_endpoint {
        command.args(["--s3-endpoint", endpoint]);
    }
    let output = command.output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

// Multi-threaded: `gc` runs as a process while the in-process server keeps answering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreferenced_blobs_are_marked_then_swept_and_referenced_ones_stay() {
    // No slot history here: a replaced slot is unreferenced at once (history is tested below).
    let server = TestServer::start_with(|c| c.history_per_slot = 0).await;
    let old = npm_tarball_with("acme", "1.0.0", b"old");
    let new = npm_tarball_with("acme", "1.1.0", b"new");
    server.upload_ok("acme@1", "", old.clone(), 201).await;
    server.upload_ok("acme@1", "", new.clone(), 200).await;
    let (old_sha, new_sha) = (sha256_hex(&old), sha256_hex(&new));

    let dry = gc(&server, &["--grace-seconds", "0", "--dry-run"]);
    assert!(
        dry["removedBlobs"].as_array().unwrap().is_empty(),
        "nothing is marked yet: {dry}"
    );
    assert_eq!(dry["newlyMarked"], serde_json::json!([old_sha]));
    let first = gc(&server, &["--grace-seconds", "0"]);
    assert_eq!(
        first["newlyMarked"],
        serde_json::json!([old_sha]),
        "the first run only marks"
    );
    assert!(first["removedBlobs"].as_array().unwrap().is_empty());
    let listed_dry = gc(&server, &["--grace-seconds", "0", "--dry-run"]);
    assert_eq!(
        listed_dry["removedBlobs"],
        serde_json::json!([old_sha]),
        "--dry-run lists it"
    );
    assert_eq!(
        server.blob_keys("sha256").await.len(),
        2,
        "--dry-run removed nothing"
    );

    let long_grace = gc(&server, &["--grace-seconds", "3600"]);
    assert!(
        long_grace["removedBlobs"].as_array().unwrap().is_empty(),
        "the grace period protects it"
    );
    let second = gc(&server, &["--grace-seconds", "0"]);
    assert_eq!(second["removedBlobs"], serde_json::json!([old_sha]));
    let keys = server.blob_keys("sha256").await;
    assert_eq!(
        keys,
        [format!("sha256/{new_sha}")],
        "the referenced blob stays"
    );
    let bytes = server
        .get("/artefacts/acme@1/tarball")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], &new[..]);

    // A marked blob that becomes referenced again loses its mark and survives.
    server
        .upload_ok("acme@main", "kind=branch", old.clone(), 201)
        .await;
    server
        .upload_ok(
            "acme@main",
            "kind=branch",
            npm_tarball_with("acme", "2.0.0", b"x"),
            200,
        )
        .await;
    gc(&server, &["--grace-seconds", "0"]);
    server.upload_ok("other@1", "", old.clone(), 201).await;
    let after = gc(&server, &["--grace-seconds", "0"]);
    assert!(
        !after["removedBlobs"].to_string().contains(&old_sha),
        "{after}"
    );
    assert!(server
        .blob_keys("sha256")
        .await
        .contains(&format!("sha256/{old_sha}")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn blobs_that_history_keeps_are_not_collected_until_history_lets_go() {
    let server = TestServer::start_with(|c| c.history_per_slot = 1).await;
    let versions: Vec<Vec<u8>> = ["1.0.0", "1.1.0", "1.2.0"]
        .iter()
        .map(|v| npm_tarball_with("acme", v, v.as_bytes()))
        .collect();
    server
        .upload_ok("acme@1", "", versions[0].clone(), 201)
        .await;
    server
        .upload_ok("acme@1", "", versions[1].clone(), 200)
        .await;
    let first = gc(&server, &["--grace-seconds", "0"]);
    assert!(
        first["newlyMarked"].as_array().unwrap().is_empty(),
        "1.0.0 is in history, so referenced: {first}"
    );
    assert_eq!(first["referenced"], 2);

    // A third upload pushes 1.0.0 out of a one-entry history: now it is collectable.
    server
        .upload_ok("acme@1", "", versions[2].clone(), 200)
        .await;
    let marked = gc(&server, &["--grace-seconds", "0"]);
    assert_eq!(
        marked["newlyMarked"],
        serde_json::json!([sha256_hex(&versions[0])])
    );
    let swept = gc(&server, &["--grace-seconds", "0"]);
    assert_eq!(
        swept["removedBlobs"],
        serde_json::json!([sha256_hex(&versions[0])])
    );
    assert!(server
        .blob_keys("sha256")
        .await
        .contains(&format!("sha256/{}", sha256_hex(&versions[1]))));
}
