//! Slot signatures verified by an independent implementation (Python `cryptography`).

use std::process::Command;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde_json::Value;

use crate::common::*;

/// The Python interpreter with `cryptography` that scripts/test provisions.
fn python() -> String {
    std::env::var("RELIQUARY_TEST_PYTHON").expect(
        "RELIQUARY_TEST_PYTHON is not set: run the suite through scripts/test, which provisions it",
    )
}

fn verify(
    well_known: &std::path::Path,
    jws: &str,
    tarball: &std::path::Path,
    id: &str,
    arch: &str,
) -> (bool, String) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/interop/verify_slot.py");
    let output = Command::new(python())
        .args([
            script,
            well_known.to_str().unwrap(),
            jws,
            tarball.to_str().unwrap(),
            id,
            arch,
        ])
        .output()
        .unwrap();
    (
        output.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ),
    )
}

#[tokio::test]
async fn a_third_party_ed25519_implementation_verifies_slot_signatures() {
    let server = TestServer::start_with(|c| c.registry_name = "production".into()).await;
    let tarball = npm_tarball("acme", "1.2.3");
    let doc = server
        .upload_ok("acme@1", "architecture=x64", tarball.clone(), 201)
        .await;
    let dir = tempfile::tempdir().unwrap();
    let well_known: Value = server
        .get("/.well-known/reliquary")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let well_known_path = dir.path().join("well-known.json");
    std::fs::write(&well_known_path, well_known.to_string()).unwrap();
    let tarball_path = dir.path().join("acme.tgz");
    std::fs::write(&tarball_path, &tarball).unwrap();
    let jws = doc["tarballs"]["x64"]["signature"].as_str().unwrap();

    let (ok, output) = verify(&well_known_path, jws, &tarball_path, "acme@1", "x64");
    assert!(ok, "{output}");

    // Tampering with any signed field, or with the bytes, fails verification.
    let segments: Vec<&str> = jws.split('.').collect();
    let payload = String::from_utf8(URL_SAFE_NO_PAD.decode(segments[1]).unwrap()).unwrap();
    let forged = payload.replace("1.2.3", "9.9.9");
    let forged_jws = format!(
        "{}.{}.{}",
        segments[0],
        URL_SAFE_NO_PAD.encode(forged),
        segments[2]
    );
    assert!(
        !verify(
            &well_known_path,
            &forged_jws,
            &tarball_path,
            "acme@1",
            "x64"
        )
        .0
    );
    assert!(!verify(&well_known_path, jws, &tarball_path, "acme@1", "arm64").0);
    std::fs::write(&tarball_path, npm_tarball("acme", "1.2.4")).unwrap();
    assert!(!verify(&well_known_path, jws, &tarball_path, "acme@1", "x64").0);
}
