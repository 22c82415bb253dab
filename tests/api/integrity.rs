//! Signing keys: rotation keeps old signatures verifiable; attestations pass through untouched.

use reliquary_client::jws::TrustedKeys;
use reliquary_client::types::WellKnown;
use serde_json::Value;

use crate::common::*;

async fn trusted(server: &TestServer) -> (WellKnown, TrustedKeys) {
    let well_known: WellKnown = server
        .get("/.well-known/reliquary")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let trusted = TrustedKeys::from_jwks(&well_known.keys).unwrap();
    (well_known, trusted)
}

#[tokio::test]
async fn rotation_signs_with_the_new_key_and_still_publishes_the_old_one() {
    let dir = tempfile::tempdir().unwrap();
    let old_key = dir.path().join("old.pem");
    let new_key = dir.path().join("new.pem");
    let bin = env!("CARGO_BIN_EXE_reliquary");
    for file in [&old_key, &new_key] {
        let out = std::process::Command::new(bin)
            .args(["signing-key", "generate", file.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(String::from_utf8_lossy(&out.stdout).contains("kid"));
    }
    let refuse_overwrite = std::process::Command::new(bin)
        .args(["signing-key", "generate", old_key.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        !refuse_overwrite.status.success(),
        "an existing key file is never overwritten"
    );

    let old = old_key.clone();
    let server = TestServer::start_with(move |c| c.signing_keys = vec![old]).await;
    let before = server
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;
    let (known, _) = trusted(&server).await;
    assert_eq!(known.keys.len(), 1);
    let old_kid = known.keys[0].kid.clone();

    let (mut config, data) = server.stop().await;
    config.signing_keys = vec![new_key, old_key];
    let server = TestServer::launch(config).await;
    let (known, trusted) = trusted(&server).await;
    assert_eq!(known.keys.len(), 2, "both keys are published");
    let after = server
        .upload_ok(
            "acme@1",
            "architecture=x64",
            npm_tarball_with("acme", "1.0.0", b"x"),
            200,
        )
        .await;

    let old_signature = trusted
        .verify(before["tarballs"]["noarch"]["signature"].as_str().unwrap())
        .unwrap();
    assert_eq!(old_signature.version, "1.0.0");
    let header = |jws: &str| -> Value {
        use base64::Engine;
        let first = jws.split('.').next().unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(first)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(
        header(before["tarballs"]["noarch"]["signature"].as_str().unwrap())["kid"],
        old_kid.as_str()
    );
    let new_signature = after["tarballs"]["x64"]["signature"].as_str().unwrap();
    assert_ne!(
        header(new_signature)["kid"],
        old_kid.as_str(),
        "the first key signs"
    );
    trusted.verify(new_signature).unwrap();
    drop(data);
}

#[tokio::test]
async fn attestations_are_stored_with_the_slot_and_served_as_given() {
    let server = TestServer::start().await;
    let bundle = br#"{"mediaType":"application/vnd.dev.sigstore.bundle+json;version=0.2","verificationMaterial":{}}"#;
    let form = reqwest::multipart::Form::new()
        .part(
            "attestation",
            reqwest::multipart::Part::bytes(bundle.to_vec()),
        )
        .part(
            "tarball",
            reqwest::multipart::Part::bytes(npm_tarball("acme", "1.0.0")),
        );
    let response = server
        .admin_post("/artefacts/npm/acme@1?architecture=x64")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let doc: Value = response.json().await.unwrap();
    assert_eq!(
        doc["tarballs"]["x64"]["attestation"]["sha256"],
        sha256_hex(bundle)
    );

    let served = server
        .get("/artefacts/acme@1/tarballs/x64/attestation")
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(served.headers()["content-type"], "application/json");
    assert_eq!(&served.bytes().await.unwrap()[..], &bundle[..]);
    let none = server
        .get("/artefacts/acme@1/tarballs/noarch/attestation")
        .send()
        .await
        .unwrap();
    expect_error(none, 404, "attestation_not_found").await;

    let oversized = reqwest::multipart::Form::new()
        .part(
            "attestation",
            reqwest::multipart::Part::bytes(vec![b'x'; 64 * 1024 + 1]),
        )
        .part(
            "tarball",
            reqwest::multipart::Part::bytes(npm_tarball("acme", "1.0.1")),
        );
    let response = server
        .admin_post("/artefacts/npm/acme@1?architecture=x64")
        .multipart(oversized)
        .send()
        .await
        .unwrap();
    expect_error(response, 413, "payload_too_large").await;
}
