//! `reliquary-client` against a real server: the verified per-arch cache, offline fallback,
//! cross-process safety, and the `publish`/`ensure`/`validate` commands.

use std::process::Command;

use reliquary_client::jws::TrustedKeys;
use reliquary_client::types::WellKnown;
use reliquary_client::{Client, Error};
use serde_json::Value;

use crate::common::*;

const BIN: &str = env!("CARGO_BIN_EXE_reliquary");

/// How many requests the server answered for `route` with `status`, from `/metrics`.
pub async fn served(server: &TestServer, route: &str, status: u16) -> u64 {
    let text = server
        .get("/metrics")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| line.starts_with("reliquary_http_requests_total{"))
        .filter(|line| {
            line.contains(&format!("route=\"{route}\""))
                && line.contains(&format!("status=\"{status}\""))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

const TARBALL: &str = "/artefacts/{id}/tarball";
const DOC: &str = "/artefacts/{id}";

fn client(server: &TestServer, cache: &std::path::Path) -> Client {
    Client::builder(&server.url)
        .token(ADMIN_TOKEN)
        .cache_dir(cache)
        .build()
        .unwrap()
}

#[tokio::test]
async fn ensure_downloads_once_and_then_pays_one_conditional_request() {
    let server = TestServer::start().await;
    server
        .upload_ok(
            "acme@1",
            "architecture=x64",
            npm_tarball("acme", "1.0.0"),
            201,
        )
        .await;
    let cache = tempfile::tempdir().unwrap();
    let client = client(&server, cache.path());

    let first = client.ensure_artefact("acme@1", "x64").await.unwrap();
    assert!(first.downloaded && !first.stale);
    assert_eq!(first.architecture, "x64");
    assert_eq!(first.version, "1.0.0");
    assert!(
        first.path.join("package.json").is_file(),
        "the package/ prefix is stripped"
    );
    assert_eq!(served(&server, TARBALL, 200).await, 1);

    for _ in 0..3 {
        let again = client.ensure_artefact("acme@1", "x64").await.unwrap();
        assert!(!again.downloaded);
        assert_eq!(again.path, first.path);
    }
    assert_eq!(served(&server, TARBALL, 200).await, 1, "no second download");
    assert_eq!(
        served(&server, DOC, 304).await,
        3,
        "one conditional request per call"
    );

    // A new upload changes dataUpdatedAt, and the next ensure downloads it.
    server
        .upload_ok(
            "acme@1",
            "architecture=x64",
            npm_tarball("acme", "1.1.0"),
            200,
        )
        .await;
    let updated = client.ensure_artefact("acme@1", "x64").await.unwrap();
    assert!(updated.downloaded);
    assert_eq!(updated.version, "1.1.0");
    assert_ne!(updated.data_updated_at, first.data_updated_at);
    assert_eq!(served(&server, TARBALL, 200).await, 2);
    let leftovers: Vec<_> = std::fs::read_dir(cache.path().join("acme@1"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| {
            name.starts_with(".download")
                || name.starts_with(".extract")
                || name.starts_with(".old")
        })
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[tokio::test]
async fn arch_fallback_caches_under_noarch() {
    let server = TestServer::start().await;
    server
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    let cache = tempfile::tempdir().unwrap();
    let ensured = client(&server, cache.path())
        .ensure_artefact("acme@1", "arm64")
        .await
        .unwrap();
    assert_eq!(ensured.architecture, "noarch");
    assert!(ensured.path.ends_with("acme@1/noarch"));
    let missing = client(&server, cache.path())
        .ensure_artefact("nope@1", "x64")
        .await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
}

#[tokio::test]
async fn a_corrupted_blob_is_refused_and_nothing_is_extracted() {
    // Local blobs, whatever the suite's backend: the test flips a byte in the stored file.
    let server = TestServer::start_with(|c| c.storage = None).await;
    let doc = server
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    let sha = doc["tarballs"]["noarch"]["sha256"].as_str().unwrap();
    let blob = server.data_dir().join("blobs/sha256").join(sha);
    let mut bytes = std::fs::read(&blob).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&blob, bytes).unwrap();
    assert_refused(&server).await;
}

async fn assert_refused(server: &TestServer) {
    let cache = tempfile::tempdir().unwrap();
    let result = client(server, cache.path())
        .ensure_artefact("acme@1", "noarch")
        .await;
    assert!(matches!(result, Err(Error::Integrity(_))), "{result:?}");
    let entry = cache.path().join("acme@1");
    let names: Vec<String> = std::fs::read_dir(&entry)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        names.iter().all(|n| n == "doc.json" || n == ".lock"),
        "nothing extracted or left over: {names:?}"
    );
}

#[tokio::test]
async fn signatures_are_verified_when_keys_are_trusted() {
    let server = TestServer::start().await;
    server
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    let well_known: WellKnown = server
        .get("/.well-known/reliquary")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cache = tempfile::tempdir().unwrap();
    let trusting = Client::builder(&server.url)
        .cache_dir(cache.path())
        .trusted_keys(TrustedKeys::from_jwks(&well_known.keys).unwrap())
        .build()
        .unwrap();
    assert!(
        trusting
            .ensure_artefact("acme@1", "x64")
            .await
            .unwrap()
            .downloaded
    );

    let stranger = ed25519_dalek::SigningKey::generate(&mut rand::rngs::OsRng);
    let other_cache = tempfile::tempdir().unwrap();
    let wrong = Client::builder(&server.url)
        .cache_dir(other_cache.path())
        .trusted_keys(TrustedKeys::new([stranger.verifying_key()]))
        .build()
        .unwrap();
    let refused = wrong.ensure_artefact("acme@1", "x64").await;
    assert!(matches!(refused, Err(Error::Integrity(_))), "{refused:?}");
    assert!(!other_cache.path().join("acme@1/noarch").exists());
}

#[tokio::test]
async fn a_verified_copy_is_served_stale_when_the_registry_is_down() {
    let server = TestServer::start().await;
    server
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    let cache = tempfile::tempdir().unwrap();
    let url = server.url.clone();
    let online = client(&server, cache.path())
        .ensure_artefact("acme@1", "x64")
        .await
        .unwrap();
    let (_config, _dir) = server.stop().await;

    let offline = Client::builder(&url)
        .cache_dir(cache.path())
        .build()
        .unwrap();
    let stale = offline.ensure_artefact("acme@1", "x64").await.unwrap();
    assert!(stale.stale && !stale.downloaded);
    assert_eq!(stale.path, online.path);
    let nothing = offline.ensure_artefact("other@1", "x64").await;
    assert!(matches!(nothing, Err(Error::Offline(_))), "{nothing:?}");
}

#[tokio::test]
async fn eight_concurrent_processes_download_once() {
    let server = TestServer::start().await;
    server
        .upload_ok(
            "acme@1",
            "architecture=x64",
            npm_tarball_with("acme", "1.0.0", &vec![7u8; 1 << 20]),
            201,
        )
        .await;
    let cache = tempfile::tempdir().unwrap();
    let handles: Vec<_> = (0..8)
        .map(|_| {
            Command::new(BIN)
                .args([
                    "ensure",
                    "acme@1",
                    "--arch",
                    "x64",
                    "--json",
                    "--registry",
                    &server.url,
                    "--token",
                    ADMIN_TOKEN,
                ])
                .arg("--cache-dir")
                .arg(cache.path())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut paths = std::collections::HashSet::new();
    let mut downloads = 0;
    for handle in handles {
        let output = tokio::task::spawn_blocking(move || handle.wait_with_output())
            .await
            .unwrap()
            .unwrap();
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let ensured: Value = serde_json::from_slice(&output.stdout).unwrap();
        paths.insert(ensured["path"].as_str().unwrap().to_owned());
        downloads += usize::from(ensured["downloaded"] == true);
        assert!(std::path::Path::new(ensured["path"].as_str().unwrap())
            .join("package.json")
            .is_file());
    }
    assert_eq!(paths.len(), 1);
    assert_eq!(downloads, 1, "exactly one process downloaded");
}

// Multi-threaded: the commands block this test's thread while the in-process server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_validate_and_ensure_from_the_command_line() {
    let server = TestServer::start().await;
    let dir = tempfile::tempdir().unwrap();
    let tarball = dir.path().join("acme-1.0.0.tgz");
    std::fs::write(&tarball, npm_tarball("acme", "1.0.0")).unwrap();
    let bad = dir.path().join("bad.tgz");
    std::fs::write(&bad, tarball_bad_manifest()).unwrap();
    let run = |args: &[&str]| {
        let output = Command::new(BIN)
            .args(args)
            .env_remove("RELIQUARY_TOKEN")
            .output()
            .unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let tarball_arg = tarball.to_str().unwrap();

    let (ok, out, _) = run(&["validate", tarball_arg]);
    assert!(ok && out.contains("acme 1.0.0"), "{out}");
    let (ok, _, err) = run(&["validate", bad.to_str().unwrap()]);
    assert!(!ok && err.contains("package.json/version"), "{err}");

    let publish = |extra: &[&str]| {
        let mut args = vec![
            "publish",
            tarball_arg,
            "--id",
            "acme@1",
            "--arch",
            "x64",
            "--registry",
            &server.url,
            "--token",
            ADMIN_TOKEN,
        ];
        args.extend_from_slice(extra);
        run(&args)
    };
    let (ok, out, err) = publish(&["--json"]);
    assert!(ok, "{err}");
    let landed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(landed["created"], true);
    assert_eq!(landed["version"], "1.0.0");
    assert_eq!(
        landed["sha256"],
        sha256_hex(&std::fs::read(&tarball).unwrap())
    );
    let (ok, out, _) = publish(&[]);
    assert!(
        ok && out.contains("published acme@1 [x64] 1.0.0"),
        "a retry succeeds: {out}"
    );

    let (ok, _, err) = run(&[
        "publish",
        bad.to_str().unwrap(),
        "--id",
        "acme@1",
        "--registry",
        &server.url,
        "--token",
        ADMIN_TOKEN,
    ]);
    assert!(
        !ok && err.contains("not a valid artefact"),
        "fails early, before uploading: {err}"
    );
    std::fs::write(&tarball, npm_tarball_with("acme", "1.0.0", b"other bytes")).unwrap();
    let (ok, _, err) = publish(&[]);
    assert!(
        !ok && err.contains("version 1.0.0 with other bytes"),
        "the server's message: {err}"
    );

    let cache = dir.path().join("cache");
    let (ok, out, err) = run(&[
        "ensure",
        "acme@1",
        "--arch",
        "x64",
        "--trust-registry",
        "--registry",
        &server.url,
        "--cache-dir",
        cache.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    assert!(
        std::path::Path::new(out.trim())
            .join("package.json")
            .is_file(),
        "{out}"
    );
}

fn tarball_bad_manifest() -> Vec<u8> {
    tarball(&[Entry::File(
        "package/package.json",
        br#"{"name": "acme", "version": "not-semver"}"#,
    )])
}

/// An id is part of a cache path: one the registry would refuse never becomes one, whatever
/// the registry (or a typo) says.
#[tokio::test]
async fn ids_the_registry_would_refuse_never_become_cache_paths() {
    let server = TestServer::start().await;
    let root = tempfile::tempdir().unwrap();
    let cache = root.path().join("cache");
    let client = Client::builder(&server.url)
        .token(ADMIN_TOKEN)
        .cache_dir(&cache)
        .build()
        .unwrap();
    for id in [
        "..",
        ".",
        "../escape@1",
        "a/b/c",
        "@scope/..",
        "UPPER@1",
        "",
    ] {
        let error = client.ensure_artefact(id, "noarch").await.unwrap_err();
        assert!(
            matches!(&error, Error::Cache(e) if e.to_string().contains("is not an artefact id")),
            "{id}: {error}"
        );
    }
    assert!(!root.path().join(".lock").exists());
    assert!(!root.path().join("escape@1").exists());
    assert!(files_under(root.path()).is_empty());
}

/// A cached copy is trusted only with the caller's own keys: not because another caller (one
/// with the registry's keys of the moment, or with none) once marked it verified — online or
/// offline.
#[tokio::test]
async fn a_cached_copy_is_served_only_if_it_verifies_with_the_callers_keys() {
    let server = TestServer::start().await;
    let stranger = TestServer::start().await;
    server
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    let keys_of = |server: &TestServer| {
        let url = server.url.clone();
        async move {
            let known: WellKnown = reqwest::get(format!("{url}/.well-known/reliquary"))
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            TrustedKeys::from_jwks(&known.keys).unwrap()
        }
    };
    let (right, wrong) = (keys_of(&server).await, keys_of(&stranger).await);
    let cache = tempfile::tempdir().unwrap();
    let url = server.url.clone();
    let with = |keys: Option<TrustedKeys>| {
        let mut builder = Client::builder(&url).cache_dir(cache.path());
        if let Some(keys) = keys {
            builder = builder.trusted_keys(keys);
        }
        builder.build().unwrap()
    };
    let first = with(Some(right.clone()))
        .ensure_artefact("acme@1", "noarch")
        .await
        .unwrap();
    assert!(first.downloaded);
    // Cached and marked verified; a caller pinning other keys still gets an integrity error.
    let refused = with(Some(wrong.clone()))
        .ensure_artefact("acme@1", "noarch")
        .await;
    assert!(matches!(refused, Err(Error::Integrity(_))), "{refused:?}");

    let (_config, _dir) = server.stop().await;
    let refused = with(Some(wrong)).ensure_artefact("acme@1", "noarch").await;
    assert!(matches!(refused, Err(Error::Offline(_))), "{refused:?}");
    let stale = with(Some(right))
        .ensure_artefact("acme@1", "noarch")
        .await
        .unwrap();
    assert!(stale.stale && stale.path == first.path);
    // Without keys, as before: the copy whose bytes were checked against the document.
    assert!(
        with(None)
            .ensure_artefact("acme@1", "noarch")
            .await
            .unwrap()
            .stale
    );
}
