//! The web UI in a real browser: Debian's headless Chromium driven by playwright-core
//! (`tests/ui/browser.mjs`), against a registry prepared here.

use serde_json::json;

use crate::common::*;
use crate::keys::create_key;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ui_works_in_a_real_browser() {
    let chromium = require_env("RELIQUARY_TEST_CHROMIUM");
    let production = TestServer::start_with(|c| c.registry_name = "production".into()).await;
    let server = TestServer::start().await;
    let with_description = |name: &str, version: &str, description: &str| {
        let manifest =
            json!({"name": name, "version": version, "description": description}).to_string();
        tarball(&[
            Entry::File("package/package.json", manifest.as_bytes()),
            Entry::File("package/index.js", b"1"),
        ])
    };
    server
        .upload_ok(
            "acme-plugin@1",
            "category=plugins",
            with_description("acme-plugin", "1.4.2", "<b>Acme</b> plugin"),
            201,
        )
        .await;
    server
        .upload_ok(
            "acme-plugin@1",
            "architecture=x64",
            with_description("acme-plugin", "1.4.2", "<b>Acme</b> plugin x64"),
            200,
        )
        .await;
    server
        .upload_ok(
            "acme-plugin@main",
            "kind=branch",
            npm_tarball("acme-plugin", "1.5.0-dev"),
            201,
        )
        .await;
    server
        .upload_ok(
            "widget@2",
            "category=services",
            npm_tarball("widget", "2.0.0"),
            201,
        )
        .await;
    // A second release of widget@2, so its page has history to roll back to.
    server
        .upload_ok("widget@2", "", npm_tarball("widget", "2.1.0"), 200)
        .await;
    production
        .upload_ok("mirrored@1", "", npm_tarball("mirrored", "1.0.0"), 201)
        .await;
    let peer_token = create_key(&production, json!({"name": "m", "role": "mirror"}))
        .await
        .token;
    let remote = server
        .admin_put("/remotes/prod")
        .json(&json!({"url": production.url, "token": peer_token, "enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(remote.status(), 201);
    let publisher = server
        .admin_put("/trusted-publishers/acme-release")
        .json(&json!({
            "issuer": "https://token.actions.githubusercontent.com",
            "audience": "reliquary.acme.example",
            "claims": {"repository": "acme/acme-plugin", "ref": "refs/tags/v1.*"},
            "allowedIds": ["acme-plugin@1"],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(publisher.status(), 201);

    let screenshots = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("ui-screenshots");
    std::fs::create_dir_all(&screenshots).unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/ui/browser.mjs");
    let url = server.url.clone();
    let output = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(script)
            .env("RELIQUARY_URL", url)
            .env("ADMIN_TOKEN", ADMIN_TOKEN)
            .env("SCREENSHOT_DIR", &screenshots)
            .env("CHROMIUM", chromium)
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "browser checks failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("browser checks passed"), "{stdout}");
}
