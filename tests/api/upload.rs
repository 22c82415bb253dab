//! `POST /artefacts/npm/{id}`: the upload rules of api.md, in order, and every error status.

use reliquary_client::jws::{Received, TrustedKeys};
use reliquary_client::types::WellKnown;
use serde_json::Value;

use crate::common::*;

#[tokio::test]
async fn first_upload_creates_a_signed_release_with_a_noarch_slot() {
    let server = TestServer::start().await;
    let tarball = npm_tarball("acme-plugin", "1.4.2");
    let doc = server
        .upload_ok("acme-plugin@1", "category=plugins", tarball.clone(), 201)
        .await;

    assert_eq!(doc["id"], "acme-plugin@1");
    assert_eq!(doc["kind"], "release");
    assert_eq!(doc["packageName"], "acme-plugin");
    assert_eq!(doc["version"], "1.4.2");
    assert_eq!(doc["licence"], "MIT");
    assert_eq!(doc["description"], "acme-plugin for tests");
    assert_eq!(doc["category"], "plugins");
    assert_eq!(doc["origin"], Value::Null);
    assert_eq!(doc["revision"], 1);
    assert!(doc["seq"].as_i64().unwrap() >= 1);
    let slot = &doc["tarballs"]["noarch"];
    assert_eq!(slot["sha256"], sha256_hex(&tarball));
    assert_eq!(slot["size"], tarball.len() as u64);
    assert_eq!(slot["version"], "1.4.2");
    for field in ["createdAt", "updatedAt", "dataUpdatedAt"] {
        let text = doc[field].as_str().unwrap();
        assert_eq!(
            text.len(),
            "2026-11-22T01:23:45.678Z".len(),
            "{field}: {text}"
        );
        assert!(text.ends_with('Z'));
    }

    // The signature verifies against the published keys and speaks about exactly this slot.
    let well_known: WellKnown = server
        .get("/.well-known/reliquary")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(well_known.registry, "reliquary");
    assert_eq!(well_known.api_version, 1);
    let trusted = TrustedKeys::from_jwks(&well_known.keys).unwrap();
    let payload = trusted.verify(slot["signature"].as_str().unwrap()).unwrap();
    payload
        .check_matches(&Received {
            id: "acme-plugin@1",
            architecture: "noarch",
            sha256: &sha256_hex(&tarball),
            size: tarball.len() as u64,
        })
        .unwrap();
    assert_eq!(payload.version, "1.4.2");
    assert_eq!(payload.registry, "reliquary");
}

#[tokio::test]
async fn retrying_the_same_bytes_is_a_200_that_changes_nothing() {
    let server = TestServer::start().await;
    let tarball = npm_tarball("acme", "1.0.0");
    let first = server.upload_ok("acme@1", "", tarball.clone(), 201).await;
    let again = server.upload_ok("acme@1", "", tarball, 200).await;
    assert_eq!(first, again, "a retry must not change the document at all");
}

#[tokio::test]
async fn release_rules_refuse_same_version_other_bytes_and_older_versions() {
    let server = TestServer::start().await;
    server
        .upload_ok("acme@1", "", npm_tarball_with("acme", "1.4.2", b"a"), 201)
        .await;

    let same_version = server
        .upload("acme@1", "", npm_tarball_with("acme", "1.4.2", b"b"))
        .await;
    expect_error(same_version, 409, "version_exists").await;
    let older = server
        .upload("acme@1", "", npm_tarball_with("acme", "1.3.0", b"c"))
        .await;
    expect_error(older, 409, "version_not_newer").await;

    let newer = server
        .upload_ok("acme@1", "", npm_tarball_with("acme", "1.5.0", b"d"), 200)
        .await;
    assert_eq!(newer["version"], "1.5.0");
    assert_eq!(newer["revision"], 2);

    // An admin may force a downgrade.
    let forced = server
        .upload_ok(
            "acme@1",
            "force=true",
            npm_tarball_with("acme", "1.0.0", b"e"),
            200,
        )
        .await;
    assert_eq!(forced["tarballs"]["noarch"]["version"], "1.0.0");
}

#[tokio::test]
async fn branches_take_any_version_but_kind_and_package_are_fixed() {
    let server = TestServer::start().await;
    server
        .upload_ok(
            "acme@main",
            "kind=branch",
            npm_tarball_with("acme", "2.0.0", b"a"),
            201,
        )
        .await;
    let doc = server
        .upload_ok(
            "acme@main",
            "kind=branch",
            npm_tarball_with("acme", "0.1.0", b"b"),
            200,
        )
        .await;
    assert_eq!(doc["version"], "0.1.0");
    assert_eq!(doc["kind"], "branch");

    let as_release = server
        .upload("acme@main", "", npm_tarball_with("acme", "3.0.0", b"c"))
        .await;
    expect_error(as_release, 409, "kind_mismatch").await;
    let other_package = server
        .upload("acme@main", "kind=branch", npm_tarball("other", "3.0.0"))
        .await;
    expect_error(other_package, 409, "package_mismatch").await;
}

#[tokio::test]
async fn per_arch_slots_are_independent_and_data_updated_at_tracks_bytes() {
    let clock = reliquary::clock::ManualClock::starting_now();
    let server = TestServer::start_with({
        let clock = clock.clone();
        move |c| c.clock = clock
    })
    .await;
    let first = server
        .upload_ok("acme@1", "", npm_tarball_with("acme", "1.0.0", b"n"), 201)
        .await;
    clock.advance(std::time::Duration::from_millis(5));
    let x64 = server
        .upload_ok(
            "acme@1",
            "architecture=x64",
            npm_tarball_with("acme", "1.0.0", b"x"),
            200,
        )
        .await;
    assert_eq!(x64["tarballs"].as_object().unwrap().len(), 2);
    assert_ne!(x64["dataUpdatedAt"], first["dataUpdatedAt"]);
    assert_eq!(x64["createdAt"], first["createdAt"]);
    assert!(x64["seq"].as_i64() > first["seq"].as_i64());
}

#[tokio::test]
async fn multipart_uploads_read_the_tarball_field() {
    let server = TestServer::start().await;
    let tarball = npm_tarball("acme", "1.0.0");
    let form = reqwest::multipart::Form::new()
        .text("note", "ignored")
        .part(
            "tarball",
            reqwest::multipart::Part::bytes(tarball.clone()).file_name("acme-1.0.0.tgz"),
        );
    let response = server
        .admin_post("/artefacts/npm/acme@1?architecture=arm64")
        .multipart(form)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let doc: Value = response.json().await.unwrap();
    assert_eq!(doc["tarballs"]["arm64"]["sha256"], sha256_hex(&tarball));

    let no_field = reqwest::multipart::Form::new().text("other", "x");
    let response = server
        .admin(
            server
                .client
                .post(format!("{}/artefacts/npm/acme@1", server.url)),
        )
        .multipart(no_field)
        .send()
        .await
        .unwrap();
    expect_error(response, 400, "missing_tarball").await;
}

#[tokio::test]
async fn invalid_tarballs_are_422_with_every_problem_listed_and_change_nothing() {
    let server = TestServer::start().await;
    let not_gzip = server
        .upload("acme@1", "", b"definitely not a tarball".to_vec())
        .await;
    expect_error(not_gzip, 422, "invalid_tarball").await;

    let gzip_not_tar = server.upload("acme@1", "", gzip(&[7u8; 2000])).await;
    expect_error(gzip_not_tar, 422, "invalid_tarball").await;

    let no_manifest = server
        .upload(
            "acme@1",
            "",
            tarball(&[Entry::File("package/index.js", b"1")]),
        )
        .await;
    expect_error(no_manifest, 422, "missing_manifest").await;

    let bad_manifest = tarball(&[Entry::File(
        "package/package.json",
        br#"{"name": "Bad Name", "version": "one"}"#,
    )]);
    let body = expect_error(
        server.upload("acme@1", "", bad_manifest).await,
        422,
        "invalid_manifest",
    )
    .await;
    let fields: Vec<&str> = body["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["field"].as_str().unwrap())
        .collect();
    assert_eq!(fields, ["package.json/name", "package.json/version"]);

    let duplicate_keys = tarball(&[Entry::File(
        "package/package.json",
        br#"{"name": "acme", "version": "1.0.0", "name": "evil"}"#,
    )]);
    expect_error(
        server.upload("acme@1", "", duplicate_keys).await,
        422,
        "invalid_manifest",
    )
    .await;

    let hostile = tarball(&[
        Entry::File(
            "package/package.json",
            br#"{"name": "acme", "version": "1.0.0"}"#,
        ),
        Entry::File("../escape.js", b"x"),
        Entry::File("/etc/passwd", b"x"),
        Entry::Symlink("package/link", "/etc/shadow"),
        Entry::HardLink("package/hard", "package/package.json"),
        Entry::Fifo("package/fifo"),
    ]);
    let body = expect_error(
        server.upload("acme@1", "", hostile).await,
        422,
        "unsafe_tarball",
    )
    .await;
    assert_eq!(body["errors"].as_array().unwrap().len(), 5, "{body}");

    // A symlink whose `..` comes after a name: through `d/l -> ..` it would climb out.
    let chain = tarball(&[
        Entry::File(
            "package/package.json",
            br#"{"name": "acme", "version": "1.0.0"}"#,
        ),
        Entry::Dir("package/d/"),
        Entry::Symlink("package/d/l", ".."),
        Entry::Symlink("package/e", "d/l/d/l/../../etc/passwd"),
    ]);
    let body = expect_error(
        server.upload("acme@1", "", chain).await,
        422,
        "unsafe_tarball",
    )
    .await;
    assert!(body["errors"].to_string().contains("climbs"), "{body}");

    // A second gzip member is a second file tree to some readers; zero padding is fine.
    let manifest = || {
        tarball(&[Entry::File(
            "package/package.json",
            br#"{"name": "acme", "version": "1.0.0"}"#,
        )])
    };
    let mut two_members = manifest();
    two_members.extend(gzip(b"hidden"));
    let body = expect_error(
        server.upload("acme@1", "", two_members).await,
        422,
        "invalid_tarball",
    )
    .await;
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not one gzip stream"),
        "{body}"
    );
    let mut padded = manifest();
    padded.extend([0u8; 512]);
    assert_eq!(server.upload("acme@1", "", padded).await.status(), 201);
    server
        .admin_delete("/artefacts/acme@1")
        .send()
        .await
        .unwrap();

    // Names that collide once normalised, and a PAX size that contradicts the ustar header.
    let collisions = tarball(&[
        Entry::File(
            "package/package.json",
            br#"{"name": "acme", "version": "1.0.0"}"#,
        ),
        Entry::File("package/caf\u{e9}.js", b"1"),
        Entry::File("package/CAFE\u{301}.js", b"2"),
        Entry::PaxSizeMismatch("package/smuggled.js", b"short", 4096),
    ]);
    let body = expect_error(
        server.upload("acme@1", "", collisions).await,
        422,
        "unsafe_tarball",
    )
    .await;
    let listed = body["errors"].to_string();
    assert!(
        listed.contains("duplicate entry name") && listed.contains("PAX size 5 disagrees"),
        "{listed}"
    );

    // A relative symlink inside the package stays legal.
    let legal_link = tarball(&[
        Entry::File(
            "package/package.json",
            br#"{"name": "acme", "version": "1.0.0"}"#,
        ),
        Entry::Dir("package/bin/"),
        Entry::File("package/bin/cli.js", b"x"),
        Entry::Symlink("package/node_modules/.bin/cli", "../../bin/cli.js"),
    ]);
    server.upload_ok("acme@2", "", legal_link, 201).await;

    let missing = server.admin_get("/artefacts/acme@1").send().await.unwrap();
    expect_error(missing, 404, "artefact_not_found").await;
    let uploads = server.blob_keys("uploads").await;
    assert!(
        uploads.is_empty(),
        "rejected uploads must leave no temporary blobs: {uploads:?}"
    );
}

#[tokio::test]
async fn bad_ids_architectures_and_queries_are_400() {
    let server = TestServer::start().await;
    let tarball = npm_tarball("acme", "1.0.0");
    expect_error(
        server.upload("Acme@1", "", tarball.clone()).await,
        400,
        "invalid_id",
    )
    .await;
    expect_error(
        server.upload("@acme%2F..", "", tarball.clone()).await,
        400,
        "invalid_id",
    )
    .await;
    expect_error(
        server
            .upload("acme@1", "architecture=X64", tarball.clone())
            .await,
        400,
        "invalid_architecture",
    )
    .await;
    expect_error(
        server
            .upload("acme@1", "kind=nightly", tarball.clone())
            .await,
        400,
        "invalid_kind",
    )
    .await;
    expect_error(
        server
            .upload("acme@1", "force=maybe", tarball.clone())
            .await,
        400,
        "invalid_query",
    )
    .await;
    expect_error(
        server
            .admin_get("/artefacts/acme@1/tarball?architecture=../x")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_architecture",
    )
    .await;
    expect_error(
        server.admin_get("/artefacts?limit=0").send().await.unwrap(),
        400,
        "invalid_query",
    )
    .await;
    expect_error(
        server
            .admin_get("/artefacts?limit=501")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_query",
    )
    .await;
    expect_error(
        server
            .admin_get("/artefacts?cursor=%%%")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_cursor",
    )
    .await;
    expect_error(
        server
            .admin_get("/artefacts?since=-1")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_query",
    )
    .await;
    expect_error(
        server
            .admin_get("/artefacts?since=abc")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_query",
    )
    .await;
    expect_error(
        server
            .admin_get("/artefacts?cursor=_-_-")
            .send()
            .await
            .unwrap(),
        400,
        "invalid_cursor",
    )
    .await;
}

#[tokio::test]
async fn scoped_ids_travel_as_one_encoded_segment() {
    let server = TestServer::start().await;
    let doc = server
        .upload_ok(
            "@acme/plugin@1",
            "",
            npm_tarball("@acme/plugin", "1.0.0"),
            201,
        )
        .await;
    assert_eq!(doc["id"], "@acme/plugin@1");
    let fetched = server
        .admin_get("/artefacts/@acme%2Fplugin@1")
        .send()
        .await
        .unwrap();
    assert_eq!(fetched.status(), 200);
}

#[tokio::test]
async fn uploads_need_a_publishing_token() {
    let server = TestServer::start().await;
    let url = format!("{}/artefacts/npm/acme@1", server.url);
    let anonymous = server
        .client
        .post(&url)
        .body(npm_tarball("acme", "1.0.0"))
        .send()
        .await
        .unwrap();
    expect_error(anonymous, 401, "unauthorized").await;
    let unknown = server
        .client
        .post(&url)
        .bearer_auth("rlq_unknownunknownunknownunknownunknownunknown")
        .body(npm_tarball("acme", "1.0.0"))
        .send()
        .await
        .unwrap();
    expect_error(unknown, 401, "unauthorized").await;
    let not_ours = server
        .client
        .post(&url)
        .bearer_auth("ghp_somebody_elses_token")
        .body(npm_tarball("acme", "1.0.0"))
        .send()
        .await
        .unwrap();
    expect_error(not_ours, 401, "unauthorized").await;
}

#[tokio::test]
async fn uploads_over_the_maximum_are_413_before_and_while_streaming() {
    let server = TestServer::start_with(|config| config.max_upload_bytes = 4096).await;
    let big = npm_tarball_with("acme", "1.0.0", &rand_bytes(20_000));
    assert!(big.len() > 4096);
    expect_error(
        server.upload("acme@1", "", big.clone()).await,
        413,
        "payload_too_large",
    )
    .await;

    // Without a Content-Length the limit is enforced on the stream itself.
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> =
        big.chunks(1000).map(|c| Ok(c.to_vec())).collect();
    let response = server
        .admin(
            server
                .client
                .post(format!("{}/artefacts/npm/acme@1", server.url)),
        )
        .body(reqwest::Body::wrap_stream(futures::stream::iter(chunks)))
        .send()
        .await
        .unwrap();
    expect_error(response, 413, "payload_too_large").await;
    assert!(server.blob_keys("uploads").await.is_empty());
}

pub fn rand_bytes(n: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut bytes = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

#[tokio::test]
async fn a_body_that_stops_arriving_is_cut_off_with_408() {
    let server = TestServer::start_with(|config| {
        config.upload_idle_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let tarball = npm_tarball("acme", "1.0.0");
    let head = tarball[..100].to_vec();
    // The first bytes, then nothing for longer than the idle timeout (a slow-loris client).
    let trickle = futures::stream::unfold(0u8, move |step| {
        let head = head.clone();
        async move {
            match step {
                0 => Some((Ok::<_, std::io::Error>(head), 1)),
                1 => {
                    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
                    Some((Ok(b"late".to_vec()), 2))
                }
                _ => None,
            }
        }
    });
    let response = server
        .admin(
            server
                .client
                .post(format!("{}/artefacts/npm/acme@1", server.url)),
        )
        .body(reqwest::Body::wrap_stream(trickle))
        .send()
        .await
        .unwrap();
    expect_error(response, 408, "body_timeout").await;
    assert!(
        server.blob_keys("uploads").await.is_empty(),
        "the abandoned upload is removed"
    );
    expect_error(
        server.admin_get("/artefacts/acme@1").send().await.unwrap(),
        404,
        "artefact_not_found",
    )
    .await;
}
