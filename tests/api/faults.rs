//! Faults: a full disk, and processes killed at every step of an upload.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn a_full_disk_is_507_and_leaves_no_temporary_files() {
    // A 1 MiB tmpfs mounted by scripts/test.
    let full = require_env("RELIQUARY_TEST_SMALL_FS");
    let root = std::path::Path::new(&full).join(uuid::Uuid::new_v4().simple().to_string());
    std::fs::create_dir_all(&root).unwrap();
    let storage = format!("file://{}", root.display());
    let server = TestServer::start_with(move |c| c.storage = Some(storage)).await;
    let big = npm_tarball_with("acme", "1.0.0", &crate::upload::rand_bytes(3 << 20));
    let response = server.upload("acme@1", "", big).await;
    let body = expect_error(response, 507, "insufficient_storage").await;
    assert!(body["message"].as_str().unwrap().contains("out of space"));
    assert!(
        files_under(&root.join("uploads")).is_empty(),
        "temporary files are cleaned up"
    );
    expect_error(
        server.admin_get("/artefacts/acme@1").send().await.unwrap(),
        404,
        "artefact_not_found",
    )
    .await;
    // Once there is room again (the failed upload took nothing), small uploads work.
    server
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    let _ = std::fs::remove_dir_all(&root);
}

struct Process {
    child: std::process::Child,
    url: String,
}

async fn serve(data: &std::path::Path, fault: Option<&str>) -> Process {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut command = Command::new(env!("CARGO_BIN_EXE_reliquary"));
    command
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--data-dir",
        ])
        .arg(data)
        .env("RELIQUARY_ADMIN_TOKEN", ADMIN_TOKEN)
        .env_remove("RELIQUARY_FAULT")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(point) = fault {
        command.env("RELIQUARY_FAULT", point);
    }
    let child = command.spawn().unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{url}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "serve did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Process { child, url }
}

async fn upload(url: &str, tarball: Vec<u8>) -> Result<reqwest::Response, reqwest::Error> {
    reqwest::Client::new()
        .post(format!("{url}/artefacts/npm/acme@main?kind=branch"))
        .bearer_auth(ADMIN_TOKEN)
        .body(tarball)
        .send()
        .await
}

/// The fault-injection hook (`RELIQUARY_FAULT`, honoured only by debug builds) aborts the
/// process — the same as `kill -9` — at each step of the commit protocol. After a restart the
/// slot is the old upload or the new one, never a mix, and no document points at a missing blob.
#[tokio::test]
async fn a_crash_at_any_step_of_an_upload_loses_nothing_acknowledged() {
    for point in [
        "upload-before-blob",
        "upload-after-blob",
        "upload-after-metadata",
    ] {
        let dir = tempfile::tempdir().unwrap();
        let old = npm_tarball_with("acme", "1.0.0", b"old");
        let new = npm_tarball_with("acme", "2.0.0", b"new");

        let mut first = serve(dir.path(), None).await;
        assert_eq!(upload(&first.url, old.clone()).await.unwrap().status(), 201);
        first.child.kill().unwrap();
        first.child.wait().unwrap();

        let mut crashing = serve(dir.path(), Some(point)).await;
        let answer = upload(&crashing.url, new.clone()).await;
        assert!(
            answer.is_err(),
            "{point}: the process died before answering"
        );
        let status = crashing.child.wait().unwrap();
        assert!(!status.success(), "{point}: aborted");

        let mut restarted = serve(dir.path(), None).await;
        let doc: Value = reqwest::Client::new()
            .get(format!("{}/artefacts/acme@main", restarted.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let slot = &doc["tarballs"]["noarch"];
        let bytes = reqwest::Client::new()
            .get(format!("{}/artefacts/acme@main/tarball", restarted.url))
            .bearer_auth(ADMIN_TOKEN)
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let expected = if point == "upload-after-metadata" {
            &new
        } else {
            &old
        };
        assert_eq!(
            slot["sha256"],
            sha256_hex(expected),
            "{point}: the slot is the acknowledged one"
        );
        assert_eq!(
            &bytes[..],
            &expected[..],
            "{point}: the document's blob is there and is the same upload"
        );
        assert_eq!(
            doc["version"],
            if point == "upload-after-metadata" {
                "2.0.0"
            } else {
                "1.0.0"
            }
        );
        restarted.child.kill().unwrap();
        restarted.child.wait().unwrap();
    }
}
