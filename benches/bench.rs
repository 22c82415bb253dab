//! The in-process benchmarks of `scripts/bench`: list latency as the store grows, federation
//! throughput and lag, and the client's cache. Each prints `ROW\t...` lines for the report.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use reliquary::config::Config;
use reliquary::domain::visibility::Visibility;
use reliquary::store::sqlite::SqliteStore;
use reliquary::store::{ArtefactStore, BrowseQuery};
use reliquary_client::types::{Artefact, Kind, Slot, Timestamp};
use reliquary_client::Client;
use reliquary_test_support::npm_tarball_with;
use serde_json::json;

mod parts;

pub(crate) const TOKEN: &str = "bench-admin-token-0123456789abcdefghijkl";

pub(crate) fn row(
    area: &str,
    what: &str,
    ours: String,
    baseline: String,
    ratio: String,
    goal: &str,
) {
    println!("ROW\t{area}\t{what}\t{ours}\t{baseline}\t{ratio}\t{goal}");
}

pub(crate) fn percentile(samples: &mut [f64], p: f64) -> f64 {
    samples.sort_by(|a, b| a.partial_cmp(b).unwrap());
    samples[((samples.len() - 1) as f64 * p).round() as usize]
}

pub(crate) fn artefact(i: usize, now: Timestamp) -> Artefact {
    Artefact {
        id: format!("pkg{i:06}@1"),
        kind: if i.is_multiple_of(10) {
            Kind::Branch
        } else {
            Kind::Release
        },
        package_name: format!("pkg{i:06}"),
        version: "1.0.0".into(),
        licence: Some("MIT".into()),
        description: Some(format!("benchmark artefact {i}")),
        category: Some(
            if i.is_multiple_of(2) {
                "plugins"
            } else {
                "services"
            }
            .into(),
        ),
        tarballs: BTreeMap::from([(
            "noarch".to_owned(),
            Slot {
                sha256: format!("{i:064x}"),
                size: 1234,
                version: "1.0.0".into(),
                uploaded_at: now,
                signature: "x".repeat(300),
                attestation: None,
                published_by: None,
            },
        )]),
        origin: None,
        deprecated: None,
        history: Default::default(),
        created_at: now,
        updated_at: now,
        data_updated_at: now,
        revision: 1,
        seq: i as i64 + 1,
    }
}

/// Fills the store's tables in one transaction (a fixture, not what is measured).
fn populate(path: &std::path::Path, count: usize) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA synchronous=OFF; BEGIN;")
        .unwrap();
    let now = Timestamp::now();
    {
        let mut insert = conn
            .prepare("INSERT INTO artefacts (id, kind, category, search, seq, revision, doc) VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)")
            .unwrap();
        for i in 0..count {
            let doc = artefact(i, now);
            let search = format!(
                "{}\n{}\n{}",
                doc.id,
                doc.package_name,
                doc.description.clone().unwrap_or_default()
            );
            insert
                .execute(rusqlite::params![
                    doc.id,
                    doc.kind.as_str(),
                    doc.category,
                    search,
                    doc.seq,
                    serde_json::to_string(&doc).unwrap()
                ])
                .unwrap();
        }
    }
    conn.execute(
        "UPDATE counters SET value = ?1 WHERE name = 'seq'",
        [count as i64],
    )
    .unwrap();
    conn.execute_batch("COMMIT;").unwrap();
}

async fn list_latency() {
    let mut previous_p99 = None;
    for count in [1_000usize, 10_000, 100_000] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bench.sqlite3");
        let store = SqliteStore::open(&path).unwrap();
        store.migrate().await.unwrap();
        populate(&path, count);
        let mut browse = Vec::new();
        let mut sync = Vec::new();
        for round in 0..400usize {
            let after = (round * 7919) % count;
            let started = Instant::now();
            let page = store
                .browse(
                    &BrowseQuery {
                        after: Some(format!("pkg{after:06}@1")),
                        limit: 51,
                        ..Default::default()
                    },
                    &Visibility::releases(),
                )
                .await
                .unwrap();
            browse.push(started.elapsed().as_secs_f64() * 1e3);
            assert!(!page.is_empty() || after + 50 >= count);
            let started = Instant::now();
            store
                .changes(after as i64, 50, &Visibility::releases())
                .await
                .unwrap();
            sync.push(started.elapsed().as_secs_f64() * 1e3);
        }
        let (b50, b99) = (percentile(&mut browse, 0.5), percentile(&mut browse, 0.99));
        let (s50, s99) = (percentile(&mut sync, 0.5), percentile(&mut sync, 0.99));
        let growth = previous_p99.map_or("-".to_owned(), |p: f64| {
            format!("p99 x{:.2} vs 10x fewer", b99 / p)
        });
        previous_p99 = Some(b99);
        row(
            "Lists (SQLite)",
            &format!("page of 50, {count} artefacts, releases-only filter"),
            format!(
                "browse p50 {b50:.2} ms / p99 {b99:.2} ms; sync p50 {s50:.2} ms / p99 {s99:.2} ms"
            ),
            growth,
            "-".into(),
            "p99 <= 5 ms, flat",
        );
    }
}

pub(crate) async fn start(
    name: &str,
) -> (
    String,
    std::sync::Arc<reliquary::registry::Registry>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.admin_token = Some(TOKEN.into());
    config.registry_name = name.into();
    let app = reliquary::open_registry(&config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let registry = app.registry.clone();
    tokio::spawn(reliquary::serve(app, listener, std::future::pending()));
    (url, registry, dir)
}

async fn peer_requests(client: &reqwest::Client, url: &str) -> u64 {
    let text = client
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("reliquary_http_requests_total{") && l.contains("route=\"/artefacts\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

async fn federation() {
    let http = reqwest::Client::new();
    let (peer, _peer_registry, _peer_dir) = start("production").await;
    let (mirror, _mirror_registry, _mirror_dir) = start("staging").await;
    let count = std::env::var("RELIQUARY_BENCH_FEDERATION_ARTEFACTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000usize);
    for i in 0..count {
        for arch in ["noarch", "x64"] {
            let tarball = npm_tarball_with(&format!("fed{i}"), "1.0.0", &random(64 << 10));
            let response = http
                .post(format!("{peer}/artefacts/npm/fed{i}@1?architecture={arch}"))
                .bearer_auth(TOKEN)
                .body(tarball)
                .send()
                .await
                .unwrap();
            assert!(response.status().is_success());
        }
    }
    let key: serde_json::Value = http
        .post(format!("{peer}/keys"))
        .bearer_auth(TOKEN)
        .json(&json!({"name": "mirror", "role": "mirror"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let remote =
        json!({"url": peer, "token": key["token"], "enabled": false, "intervalSeconds": 20});
    http.put(format!("{mirror}/remotes/prod"))
        .bearer_auth(TOKEN)
        .json(&remote)
        .send()
        .await
        .unwrap();
    let started = Instant::now();
    let summary: serde_json::Value = http
        .post(format!("{mirror}/remotes/prod/sync"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(summary["mirrored"], count as u64, "{summary}");
    row(
        "Federation",
        &format!("mirror {count} artefacts x 2 slots x 64 KiB"),
        format!("{elapsed:.2} s"),
        format!(
            "{} MiB downloaded and verified",
            summary["bytes"].as_u64().unwrap() >> 20
        ),
        "-".into(),
        "<= 10 s",
    );

    let before = peer_requests(&http, &peer).await;
    http.post(format!("{mirror}/remotes/prod/sync"))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    let requests = peer_requests(&http, &peer).await - before;
    row(
        "Federation",
        "incremental pass with no change",
        format!("{requests} request(s) to the peer's change feed"),
        "-".into(),
        "-".into(),
        "exactly 1",
    );

    let enabled =
        json!({"url": peer, "token": key["token"], "enabled": true, "intervalSeconds": 20});
    http.put(format!("{mirror}/remotes/prod"))
        .bearer_auth(TOKEN)
        .json(&enabled)
        .send()
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut lags = Vec::new();
    for i in 0..10 {
        let id = format!("lag{i}@1");
        let started = Instant::now();
        http.post(format!("{peer}/artefacts/npm/{id}"))
            .bearer_auth(TOKEN)
            .body(npm_tarball_with(&format!("lag{i}"), "1.0.0", b"x"))
            .send()
            .await
            .unwrap();
        loop {
            let status = http
                .get(format!("{mirror}/artefacts/{id}"))
                .send()
                .await
                .unwrap()
                .status();
            if status == 200 {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(60), "not mirrored");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        lags.push(started.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let (p50, max) = (percentile(&mut lags, 0.5), percentile(&mut lags, 1.0));
    row(
        "Federation",
        "publish-to-visible lag with long-poll (10 publishes)",
        format!("p50 {p50:.0} ms, max {max:.0} ms"),
        "interval 20 s without long-poll".into(),
        "-".into(),
        "p50 <= 1 s",
    );
}

async fn client_cache() {
    let (url, _registry, _dir) = start("client").await;
    let http = reqwest::Client::new();
    let big = npm_tarball_with("big", "1.0.0", &random(64 << 20));
    http.post(format!("{url}/artefacts/npm/big@1"))
        .bearer_auth(TOKEN)
        .body(big.clone())
        .send()
        .await
        .unwrap();
    http.post(format!("{url}/artefacts/npm/small@1"))
        .bearer_auth(TOKEN)
        .body(npm_tarball_with("small", "1.0.0", b"x"))
        .send()
        .await
        .unwrap();

    let cache = tempfile::tempdir().unwrap();
    let client = Client::builder(&url)
        .cache_dir(cache.path())
        .build()
        .unwrap();
    client.ensure_artefact("small@1", "x64").await.unwrap();
    let mut warm = Vec::new();
    for _ in 0..300 {
        let started = Instant::now();
        let ensured = client.ensure_artefact("small@1", "x64").await.unwrap();
        assert!(!ensured.downloaded);
        warm.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let (p50, p99) = (percentile(&mut warm, 0.5), percentile(&mut warm, 0.99));
    row(
        "Client",
        "ensure_artefact, nothing changed (incl. the 304 round trip)",
        format!("p50 {p50:.2} ms, p99 {p99:.2} ms"),
        "-".into(),
        "-".into(),
        "p50 <= 5 ms",
    );

    let mut ours = Vec::new();
    let mut theirs = Vec::new();
    for run in 0..3 {
        let cache = tempfile::tempdir().unwrap();
        let cold = Client::builder(&url)
            .cache_dir(cache.path())
            .build()
            .unwrap();
        let started = Instant::now();
        assert!(
            cold.ensure_artefact("big@1", "x64")
                .await
                .unwrap()
                .downloaded
        );
        ours.push(started.elapsed().as_secs_f64());
        let target = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let status = std::process::Command::new("sh")
            .arg("-c")
            .arg(format!(
                "curl -sS '{url}/artefacts/big@1/tarball?architecture=x64' | tar xz -C '{}'",
                target.path().display()
            ))
            .status()
            .unwrap();
        assert!(status.success(), "run {run}");
        theirs.push(started.elapsed().as_secs_f64());
    }
    let (ours, theirs) = (percentile(&mut ours, 0.5), percentile(&mut theirs, 0.5));
    row(
        "Client",
        "cold ensure of a 64 MiB tarball (verify + safe extract)",
        format!("{ours:.2} s"),
        format!("curl \\| tar xz: {theirs:.2} s"),
        format!("{:.2}", ours / theirs),
        "<= 1.2",
    );
}

pub(crate) fn random(n: usize) -> Vec<u8> {
    use rand::RngCore;
    let mut bytes = vec![0u8; n];
    rand::thread_rng().fill_bytes(&mut bytes);
    bytes
}

#[tokio::main]
async fn main() {
    let only = std::env::var("RELIQUARY_BENCH_ONLY").unwrap_or_default();
    if only.is_empty() || only.contains("list") {
        list_latency().await;
    }
    if only.is_empty() || only.contains("mongo") {
        let url = std::env::var("RELIQUARY_TEST_MONGODB")
            .expect("RELIQUARY_TEST_MONGODB (scripts/bench starts a server and sets it)");
        parts::mongo_plans::mongo_list_plans(&url).await;
    }
    if only.is_empty() || only.contains("federation") {
        federation().await;
    }
    if only.is_empty() || only.contains("client") {
        client_cache().await;
    }
    if only.is_empty() || only.contains("node") {
        parts::node_client::node_client().await;
    }
    if only.is_empty() || only.contains("scale") {
        parts::scale_out::downloads().await;
        parts::scale_out::three_replica_mirroring().await;
    }
    if only.is_empty() || only.contains("upkeep") {
        parts::upkeep::upkeep_pass().await;
    }
    if only.is_empty() || only.contains("oidc") {
        parts::oidc::exchange().await;
    }
}
