//! Branch retention's upkeep pass over 100,000 artefacts, and what it costs requests meanwhile.

use std::sync::Arc;
use std::time::{Duration, Instant};

use reliquary::config::Config;
use reliquary_client::types::{Kind, Timestamp};

use crate::{artefact, percentile, row, TOKEN};

const COUNT: usize = 100_000;
const DAY_MS: i64 = 86_400_000;

/// Every tenth artefact is a branch build; half of those are 40 days idle, and half of the idle
/// ones were downloaded yesterday (kept), the other half 35 days ago. So 2,500 of 100,000 are due.
fn populate(path: &std::path::Path, now: Timestamp) -> usize {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA synchronous=OFF; BEGIN;")
        .unwrap();
    let old = Timestamp::from_millis(now.millis() - 40 * DAY_MS);
    let yesterday = Timestamp::from_millis(now.millis() - DAY_MS);
    let long_ago = Timestamp::from_millis(now.millis() - 35 * DAY_MS);
    let mut due = 0;
    {
        let mut insert = conn
            .prepare("INSERT INTO artefacts (id, kind, category, search, seq, revision, doc) VALUES (?1, ?2, ?3, ?4, ?5, 1, ?6)")
            .unwrap();
        let mut download = conn
            .prepare("INSERT INTO downloads (id, last_downloaded_at) VALUES (?1, ?2)")
            .unwrap();
        for i in 0..COUNT {
            let mut doc = artefact(i, now);
            if doc.kind == Kind::Branch && i.is_multiple_of(20) {
                doc.data_updated_at = old;
                // Every idle build has a record: this store was created just now, and a build
                // with none counts as used when recording began.
                let last = if i.is_multiple_of(40) {
                    yesterday
                } else {
                    due += 1;
                    long_ago
                };
                download
                    .execute(rusqlite::params![doc.id, last.to_string()])
                    .unwrap();
            }
            insert
                .execute(rusqlite::params![
                    doc.id,
                    doc.kind.as_str(),
                    doc.category,
                    reliquary::store::search_text(&doc),
                    doc.seq,
                    serde_json::to_string(&doc).unwrap()
                ])
                .unwrap();
        }
    }
    conn.execute(
        "UPDATE counters SET value = ?1 WHERE name = 'seq'",
        [COUNT as i64],
    )
    .unwrap();
    conn.execute_batch("COMMIT;").unwrap();
    due
}

/// Document reads of random release artefacts, one after another, until `stop` is set.
async fn latencies(url: String, stop: Arc<std::sync::atomic::AtomicBool>) -> Vec<f64> {
    let client = reqwest::Client::new();
    let mut samples = Vec::new();
    let mut i = 1usize;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        i = (i * 7919 + 13) % COUNT;
        let id = format!(
            "pkg{:06}@1",
            if i.is_multiple_of(10) { i + 1 } else { i } % COUNT
        );
        let started = Instant::now();
        let response = client
            .get(format!("{url}/artefacts/{id}"))
            .bearer_auth(TOKEN)
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        response.bytes().await.unwrap();
        samples.push(started.elapsed().as_secs_f64() * 1e3);
    }
    samples
}

async fn measure_while<F: std::future::Future>(url: &str, work: F) -> (F::Output, Vec<f64>) {
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn(latencies(url.to_owned(), stop.clone()));
    let output = work.await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    (output, sampler.await.unwrap())
}

pub async fn upkeep_pass() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.admin_token = Some(TOKEN.into());
    // The serving replica keeps everything; the pass is run by a second registry on the same
    // store, so that it starts when the measurement says.
    let app = reliquary::open_registry(&config).await.unwrap();
    let now = Timestamp::now();
    let due = populate(&config.sqlite_path(), now);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(reliquary::serve(app, listener, std::future::pending()));

    let mut with_retention = config.clone();
    with_retention.branch_retention = Some(Duration::from_secs(30 * 86_400));
    let upkeep = reliquary::open_stores_and_keys(&with_retention)
        .await
        .unwrap();

    let (_, mut idle) = measure_while(&url, tokio::time::sleep(Duration::from_secs(3))).await;
    let started = Instant::now();
    let (report, mut during) = measure_while(&url, upkeep.upkeep()).await;
    let took = started.elapsed();
    let report = report.unwrap();
    assert_eq!(
        report.removed.len(),
        due,
        "exactly the idle, unused branch builds"
    );
    let (i50, i99) = (percentile(&mut idle, 0.5), percentile(&mut idle, 0.99));
    let (d50, d99) = (percentile(&mut during, 0.5), percentile(&mut during, 0.99));
    row(
        "Lifecycle",
        &format!("branch retention upkeep pass, {COUNT} artefacts ({due} due), SQLite"),
        format!(
            "{:.2} s ({:.0} deletions/s); GET doc during: p50 {d50:.2} ms / p99 {d99:.2} ms",
            took.as_secs_f64(),
            due as f64 / took.as_secs_f64()
        ),
        format!("idle: p50 {i50:.2} ms / p99 {i99:.2} ms"),
        format!("p50 x{:.2}, p99 x{:.2}", d50 / i50, d99 / i99),
        "during <= 2x idle",
    );
}
