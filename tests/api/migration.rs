//! Schema migrations and the legacy import, on both metadata stores.

use std::process::Command;

use reliquary::config::Config;
use reliquary_client::jws::TrustedKeys;
use reliquary_client::types::WellKnown;
use serde_json::Value;

use crate::common::*;

const FIXTURE: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/migrations/fixtures/legacy-export.jsonl"
);

/// The fixture export with its tarballs built now.
fn export_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(FIXTURE, dir.path().join("artefacts.jsonl")).unwrap();
    let tarballs = dir.path().join("tarballs");
    std::fs::create_dir(&tarballs).unwrap();
    for version in [
        "1.0.0",
        "1.10.0",
        "1.4.2",
        "2.0.0-rc.1",
        "2.0.0",
        "3.0.0-beta.1",
    ] {
        std::fs::write(
            tarballs.join(format!("acme-{version}.tgz")),
            npm_tarball("acme", version),
        )
        .unwrap();
    }
    std::fs::write(
        tarballs.join("acme-feature-login.tgz"),
        npm_tarball("acme", "0.0.0-login"),
    )
    .unwrap();
    std::fs::write(
        tarballs.join("liar-1.0.0.tgz"),
        npm_tarball("somebody-else", "1.0.0"),
    )
    .unwrap();
    dir
}

fn store_flags(config: &Config) -> Vec<String> {
    let mut flags = vec![
        "--data-dir".to_owned(),
        config.data_dir.display().to_string(),
        "--registry-name".into(),
        "legacy".into(),
    ];
    if let Some(database) = &config.database {
        flags.extend(["--database".into(), database.clone()]);
    }
    flags
}

fn import(export: &std::path::Path, config: &Config) -> (bool, Value) {
    let output = Command::new(env!("CARGO_BIN_EXE_reliquary"))
        .arg("import-legacy")
        .arg(export)
        .args(store_flags(config))
        .arg("--json")
        .env_remove("RELIQUARY_ADMIN_TOKEN")
        .output()
        .unwrap();
    let report = serde_json::from_slice(&output.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&output.stderr)));
    (output.status.success(), report)
}

async fn imports_the_legacy_export(database: Option<String>) {
    let data = tempfile::tempdir().unwrap();
    let mut config = Config::new(data.path());
    config.database = database;
    config.registry_name = "legacy".into();
    config.admin_token = Some(ADMIN_TOKEN.into());
    let export = export_dir();

    let (ok, report) = import(export.path(), &config);
    assert!(!ok, "bad lines make the import exit non-zero");
    let created: Vec<&str> = report["created"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        created,
        ["acme@1", "acme@2", "acme@3", "acme@feature-login"]
    );
    let superseded: Vec<String> = report["superseded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            format!(
                "{} {}",
                s["id"].as_str().unwrap(),
                s["version"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        superseded,
        ["acme@1 1.0.0", "acme@1 1.4.2", "acme@2 2.0.0-rc.1"]
    );
    let failed: Vec<u64> = report["failed"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["line"].as_u64().unwrap())
        .collect();
    assert_eq!(failed, [3, 4, 5, 6, 7], "{report}");
    let messages = report["failed"].to_string();
    assert!(
        messages.contains("unknown variant")
            && messages.contains("missing")
            && messages.contains("somebody-else")
            && messages.contains("leaves the export directory"),
        "{messages}"
    );

    let server = TestServer::launch(config.clone()).await;
    let get = |id: &str| server.admin_get(&format!("/artefacts/{id}")).send();
    let one: Value = get("acme@1").await.unwrap().json().await.unwrap();
    assert_eq!(one["kind"], "release");
    assert_eq!(one["version"], "1.10.0");
    assert_eq!(one["category"], "plugins");
    assert_eq!(one["createdAt"], "2020-09-13T12:26:40.000Z");
    assert_eq!(
        one["tarballs"]["noarch"]["uploadedAt"],
        "2020-09-13T12:26:43.000Z"
    );
    assert_eq!(one["dataUpdatedAt"], "2020-09-13T12:26:43.000Z");
    let three: Value = get("acme@3").await.unwrap().json().await.unwrap();
    assert_eq!(three["version"], "3.0.0-beta.1");
    let branch: Value = get("acme@feature-login")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(branch["kind"], "branch");
    assert_eq!(branch["createdAt"], "2020-09-13T12:26:50.000Z");
    assert_eq!(branch["dataUpdatedAt"], "2020-09-13T12:27:00.000Z");

    // Imported slots are signed like uploads, with the registry's own key.
    let keys: WellKnown = server
        .get("/.well-known/reliquary")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let trusted = TrustedKeys::from_jwks(&keys.keys).unwrap();
    let payload = trusted
        .verify(one["tarballs"]["noarch"]["signature"].as_str().unwrap())
        .unwrap();
    assert_eq!(
        (
            payload.id.as_str(),
            payload.version.as_str(),
            payload.registry.as_str()
        ),
        ("acme@1", "1.10.0", "legacy")
    );
    let audit: Value = server
        .admin_get("/audit?action=artefact.import")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(audit["items"].as_array().unwrap().len(), 4);
    let (_config, _) = server.stop().await;

    // A second run changes nothing and says so.
    let (_, again) = import(export.path(), &config);
    assert!(again["created"].as_array().unwrap().is_empty());
    assert_eq!(again["unchanged"].as_array().unwrap().len(), 4);
    let server = TestServer::launch(config).await;
    let after: Value = server
        .admin_get("/artefacts/acme@1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(after, one);
}

#[tokio::test]
async fn imports_the_legacy_export_into_sqlite() {
    imports_the_legacy_export(None).await;
}

#[tokio::test]
async fn imports_the_legacy_export_into_mongodb() {
    imports_the_legacy_export(Some(mongo_url())).await;
}

#[tokio::test]
async fn a_store_migrated_by_a_newer_binary_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::new(dir.path());
    reliquary::open_store(&config).await.unwrap();
    let db = rusqlite::Connection::open(config.sqlite_path()).unwrap();
    db.execute(
        "INSERT INTO schema_migrations (version, name, applied_at) VALUES (999, 'future', 'x')",
        [],
    )
    .unwrap();
    let error = format!(
        "{:#}",
        reliquary::open_store(&config).await.err().expect("refused")
    );
    assert!(error.contains("newer than this binary"), "{error}");

    let mut config = Config::new(dir.path());
    let url = mongo_url();
    config.database = Some(url.clone());
    reliquary::open_store(&config).await.unwrap();
    let client = mongodb::Client::with_uri_str(&url).await.unwrap();
    let database = client.default_database().unwrap();
    database
        .collection::<mongodb::bson::Document>("schema_migrations")
        .insert_one(mongodb::bson::doc! {"_id": 999_i64, "name": "future"})
        .await
        .unwrap();
    let error = format!(
        "{:#}",
        reliquary::open_store(&config).await.err().expect("refused")
    );
    assert!(error.contains("newer than this binary"), "{error}");
}
