//! Scale-out: what a download costs a replica when it streams the bytes and when it redirects to
//! the bucket, and mirroring throughput with three replicas on one MongoDB and one bucket.
//! Replicas are `target/release/reliquary serve` processes (scripts/bench builds it), so their
//! CPU time is their own, read from /proc.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use reliquary_test_support::npm_tarball_with;
use serde_json::{json, Value};

use crate::{random, row, start, TOKEN};

struct Replica {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name}: scripts/bench starts the services"))
}

async fn replica(envs: &[(&str, String)]) -> Replica {
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let binary = concat!(env!("CARGO_MANIFEST_DIR"), "/target/release/reliquary");
    let child = Command::new(binary)
        .args(["serve", "--listen", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .env("RELIQUARY_ADMIN_TOKEN", TOKEN)
        .env("RELIQUARY_LOG", "warn")
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let url = format!("http://127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while reqwest::get(format!("{url}/healthz")).await.is_err() {
        assert!(Instant::now() < deadline, "a replica did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Replica {
        child,
        url,
        _dir: dir,
    }
}

/// User + system CPU time of a process so far, in milliseconds.
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap()
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks * 1000.0 / 100.0 // USER_HZ is 100 on Linux
}

async fn tarball_bytes_sent(url: &str) -> f64 {
    let text = reqwest::get(format!("{url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|l| {
            l.starts_with("reliquary_http_response_bytes_total{")
                && l.contains("route=\"/artefacts/{id}/tarball\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn s3_envs(redirect: bool) -> Vec<(&'static str, String)> {
    let mut envs = vec![
        (
            "RELIQUARY_STORAGE",
            format!(
                "s3://{}/bench-{}",
                env("RELIQUARY_TEST_S3_BUCKET"),
                uuid::Uuid::new_v4().simple()
            ),
        ),
        ("RELIQUARY_S3_ENDPOINT", env("RELIQUARY_S3_ENDPOINT")),
    ];
    if redirect {
        envs.push(("RELIQUARY_STORAGE_REDIRECT", "true".into()));
    }
    envs
}

/// CPU and bytes a replica spends per 16 MiB download, streamed and redirected.
pub async fn downloads() {
    const DOWNLOADS: usize = 40;
    let tarball = npm_tarball_with("big", "1.0.0", &random(16 << 20));
    let http = reqwest::Client::new();
    let mut measured = Vec::new();
    for redirect in [false, true] {
        let replica = replica(&s3_envs(redirect)).await;
        let response = http
            .post(format!("{}/artefacts/npm/big@1", replica.url))
            .bearer_auth(TOKEN)
            .body(tarball.clone())
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
        let (cpu_before, bytes_before) = (
            cpu_ms(replica.child.id()),
            tarball_bytes_sent(&replica.url).await,
        );
        let started = Instant::now();
        for _ in 0..DOWNLOADS {
            // reqwest follows the redirect to the bucket, as the client library does.
            let body = http
                .get(format!("{}/artefacts/big@1/tarball", replica.url))
                .send()
                .await
                .unwrap()
                .bytes()
                .await
                .unwrap();
            assert_eq!(body.len(), tarball.len());
        }
        let wall = started.elapsed().as_secs_f64() / DOWNLOADS as f64;
        let cpu = (cpu_ms(replica.child.id()) - cpu_before) / DOWNLOADS as f64;
        let bytes = (tarball_bytes_sent(&replica.url).await - bytes_before) / DOWNLOADS as f64;
        measured.push((cpu, bytes, wall));
    }
    let [(stream_cpu, stream_bytes, stream_wall), (redirect_cpu, redirect_bytes, redirect_wall)] =
        measured[..]
    else {
        unreachable!()
    };
    row(
        "Scale-out",
        "16 MiB download from S3 storage, per download: replica CPU and tarball bytes it sends",
        format!(
            "redirect: {redirect_cpu:.1} ms CPU, {:.0} bytes; {:.0} ms end to end",
            redirect_bytes,
            redirect_wall * 1e3
        ),
        format!(
            "streamed through the replica: {stream_cpu:.1} ms CPU, {:.1} MiB; {:.0} ms end to end",
            stream_bytes / f64::from(1 << 20),
            stream_wall * 1e3
        ),
        format!("CPU x{:.2}", redirect_cpu / stream_cpu),
        "redirect: 0 tarball bytes",
    );
}

/// Mirroring through three replicas on one store (one holds the lease), against one replica.
pub async fn three_replica_mirroring() {
    const ARTEFACTS: usize = 300;
    let http = reqwest::Client::new();
    let (peer, _registry, _dir) = start("production").await;
    for i in 0..ARTEFACTS {
        let response = http
            .post(format!("{peer}/artefacts/npm/rep{i}@1"))
            .bearer_auth(TOKEN)
            .body(npm_tarball_with(
                &format!("rep{i}"),
                "1.0.0",
                &random(64 << 10),
            ))
            .send()
            .await
            .unwrap();
        assert!(response.status().is_success());
    }
    let mut measured = Vec::new();
    for count in [1usize, 3] {
        let mut envs = s3_envs(false);
        envs.push((
            "RELIQUARY_DATABASE",
            format!(
                "{}/bench_{}?retryWrites=false",
                env("RELIQUARY_TEST_MONGODB"),
                uuid::Uuid::new_v4().simple()
            ),
        ));
        envs.push(("RELIQUARY_REGISTRY_NAME", "staging".into()));
        let mut replicas = Vec::new();
        for _ in 0..count {
            replicas.push(replica(&envs).await);
        }
        let key: Value = http
            .post(format!("{peer}/keys"))
            .bearer_auth(TOKEN)
            .json(&json!({"name": format!("mirror-{count}"), "role": "mirror"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let started = Instant::now();
        let put = http
            .put(format!("{}/remotes/prod", replicas[0].url))
            .bearer_auth(TOKEN)
            .json(
                &json!({"url": peer, "token": key["token"], "enabled": true, "intervalSeconds": 1}),
            )
            .send()
            .await
            .unwrap();
        assert_eq!(put.status(), 201);
        loop {
            let page: Value = http
                .get(format!("{}/remotes", replicas[count - 1].url))
                .bearer_auth(TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if page["items"][0]["mirroredArtefacts"] == ARTEFACTS as u64 {
                break;
            }
            assert!(
                started.elapsed() < Duration::from_secs(600),
                "mirroring stalled"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        measured.push(started.elapsed().as_secs_f64());
    }
    row(
        "Scale-out",
        &format!(
            "mirror {ARTEFACTS} artefacts x 64 KiB, MongoDB + S3, from PUT /remotes to complete"
        ),
        format!(
            "3 replicas: {:.2} s ({:.0} artefacts/s)",
            measured[1],
            ARTEFACTS as f64 / measured[1]
        ),
        format!(
            "1 replica: {:.2} s ({:.0} artefacts/s)",
            measured[0],
            ARTEFACTS as f64 / measured[0]
        ),
        format!("x{:.2}", measured[1] / measured[0]),
        "3 replicas ~ 1 (one syncs; the others stand by)",
    );
}
