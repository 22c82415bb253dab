//! The `reliquary` binary itself: `serve` on a fresh directory, the CLI against it, signals,
//! and what ends up in the logs and the data dir.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_reliquary");

pub struct Serve {
    pub child: Child,
    pub url: String,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Starts `reliquary serve` in `dir` (its working directory) and waits until it answers.
pub async fn spawn_serve(dir: &Path, envs: &[(&str, &str)], log: &Path) -> Serve {
    let port = free_port();
    let log_file = std::fs::File::create(log).unwrap();
    let child = Command::new(BIN)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir)
        .env_remove("RELIQUARY_ADMIN_TOKEN")
        .env("RELIQUARY_LOG", "debug")
        .envs(envs.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::from(log_file))
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(response) = reqwest::get(format!("{url}/healthz")).await {
            if response.status() == 200 {
                break;
            }
        }
        assert!(
            Instant::now() < deadline,
            "reliquary serve did not come up: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Serve { child, url }
}

/// SIGTERM, then the exit status must be success (a graceful shutdown).
pub fn terminate(mut serve: Serve) {
    let status = Command::new("kill")
        .args(["-TERM", &serve.child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = serve.child.wait().unwrap();
    assert!(exit.success(), "reliquary serve exited with {exit}");
}

fn cli(args: &[&str]) -> (bool, String, String) {
    let output = Command::new(BIN)
        .args(args)
        .env_remove("RELIQUARY_TOKEN")
        .env_remove("RELIQUARY_URL")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[tokio::test]
async fn serve_with_no_flags_uses_the_embedded_default_and_no_token_reaches_logs_or_disk() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let serve = spawn_serve(dir.path(), &[("RELIQUARY_ADMIN_TOKEN", ADMIN_TOKEN)], &log).await;
    assert!(
        dir.path().join("data/reliquary.sqlite3").exists(),
        "data in ./data by default"
    );

    let (ok, out, err) = cli(&[
        "keys",
        "create",
        "--registry",
        &serve.url,
        "--token",
        ADMIN_TOKEN,
        "--name",
        "ci",
        "--role",
        "publish",
        "--allowed-name-prefix",
        "acme",
        "--json",
    ]);
    assert!(ok, "{err}");
    let created: Value = serde_json::from_str(&out).unwrap();
    let token = created["token"].as_str().unwrap().to_owned();
    let key_id = created["key"]["id"].as_str().unwrap().to_owned();

    let response = reqwest::Client::new()
        .post(format!("{}/artefacts/npm/acme@1", serve.url))
        .bearer_auth(&token)
        .body(npm_tarball("acme", "1.0.0"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);

    let (ok, out, _) = cli(&[
        "keys",
        "list",
        "--registry",
        &serve.url,
        "--token",
        ADMIN_TOKEN,
    ]);
    assert!(ok);
    assert!(
        out.contains("ci") && out.contains(&token[..8]) && !out.contains(&token),
        "{out}"
    );
    let (ok, out, _) = cli(&[
        "keys",
        "revoke",
        &key_id,
        "--registry",
        &serve.url,
        "--token",
        ADMIN_TOKEN,
    ]);
    assert!(ok && out.contains("Revoked"), "{out}");
    let (ok, _, err) = cli(&["keys", "list", "--registry", &serve.url, "--token", &token]);
    assert!(
        !ok && err.contains("revoked"),
        "a revoked token fails with the server's message: {err}"
    );

    terminate(serve);
    let logs = std::fs::read_to_string(&log).unwrap();
    assert!(
        logs.contains("served") && logs.contains("status=201"),
        "one line per request: {logs}"
    );
    for secret in [ADMIN_TOKEN, token.as_str()] {
        assert!(!logs.contains(secret), "a token reached the logs");
        for file in files_under(&dir.path().join("data")) {
            let bytes = std::fs::read(&file).unwrap();
            assert!(
                !bytes.windows(secret.len()).any(|w| w == secret.as_bytes()),
                "a token reached {file:?}"
            );
        }
    }
}

#[tokio::test]
async fn migrate_applies_once_and_reports_it() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let data = data.to_str().unwrap();
    let (ok, first, err) = cli(&["migrate", "--data-dir", data]);
    assert!(ok, "{err}");
    assert!(
        first.contains("applied 0001_initial") && first.contains("applied 0002_"),
        "{first}"
    );
    let (ok, second, _) = cli(&["migrate", "--data-dir", data]);
    assert!(ok);
    assert!(second.contains("up to date"), "{second}");
}

#[tokio::test]
async fn cli_errors_are_friendly_and_exit_non_zero() {
    let (ok, _, err) = cli(&["keys", "list", "--registry", "http://127.0.0.1:9"]);
    assert!(!ok);
    assert!(err.contains("cannot reach the registry"), "{err}");
}

#[tokio::test]
async fn sigterm_lets_an_in_flight_download_finish() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("serve.log");
    let serve = spawn_serve(dir.path(), &[("RELIQUARY_ADMIN_TOKEN", ADMIN_TOKEN)], &log).await;
    let tarball = npm_tarball_with("big", "1.0.0", &crate::upload::rand_bytes(16 << 20));
    let client = reqwest::Client::new();
    let uploaded = client
        .post(format!("{}/artefacts/npm/big@1", serve.url))
        .bearer_auth(ADMIN_TOKEN)
        .body(tarball.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(uploaded.status(), 201);

    let response = client
        .get(format!("{}/artefacts/big@1/tarball", serve.url))
        .send()
        .await
        .unwrap();
    let mut body = response.bytes_stream();
    use futures::StreamExt;
    let mut received = Vec::new();
    received.extend_from_slice(&body.next().await.unwrap().unwrap());
    // Shut down while the download is still streaming; then read the rest slowly.
    let pid = serve.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    while let Some(chunk) = body.next().await {
        received.extend_from_slice(&chunk.unwrap());
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    assert_eq!(
        received.len(),
        tarball.len(),
        "the transfer finished despite the shutdown"
    );
    assert_eq!(sha256_hex(&received), sha256_hex(&tarball));
    let mut child = serve.child;
    let status = tokio::task::spawn_blocking(move || child.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "a graceful exit: {status}");
}
