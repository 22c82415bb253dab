//! The Node client (`lib-node`) against the same in-process registry as the Rust client's rows:
//! `lib-node/bench/ensure.mjs` measures and prints its own `ROW` lines (`scripts/bench` builds
//! lib-node first).

use crate::{random, start, TOKEN};
use reliquary_test_support::npm_tarball_with;

pub async fn node_client() {
    let (url, _registry, _dir) = start("node").await;
    let http = reqwest::Client::new();
    for (id, tarball) in [
        ("big@1", npm_tarball_with("big", "1.0.0", &random(64 << 20))),
        ("small@1", npm_tarball_with("small", "1.0.0", b"x")),
    ] {
        let response = http
            .post(format!("{url}/artefacts/npm/{id}"))
            .bearer_auth(TOKEN)
            .body(tarball)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success(), "upload of {id}");
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/lib-node/bench/ensure.mjs");
    // The registry answers on this runtime while the script runs: wait off it.
    let status = tokio::task::spawn_blocking(move || {
        std::process::Command::new("node")
            .arg(script)
            .arg(&url)
            .status()
    })
    .await
    .unwrap()
    .expect("node (scripts/bench installs it)");
    assert!(status.success(), "lib-node/bench/ensure.mjs failed");
}
