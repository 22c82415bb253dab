//! Outages: the database or the bucket goes away mid-run. Requests answer 503 with the JSON
//! error shape and change nothing; the registry recovers by itself when the service is back.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::common::*;

/// A TCP proxy in front of a real service that can cut every connection and refuse new ones.
struct ChaosProxy {
    address: String,
    up: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<JoinHandle<()>>>>,
}

impl ChaosProxy {
    async fn start(target: String) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let up = Arc::new(AtomicBool::new(true));
        let connections = Arc::new(Mutex::new(Vec::new()));
        let (flag, tasks) = (up.clone(), connections.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !flag.load(Ordering::SeqCst) {
                    continue; // dropping the socket refuses the connection
                }
                let target = target.clone();
                let task = tokio::spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                tasks.lock().unwrap().push(task);
            }
        });
        Self {
            address,
            up,
            connections,
        }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for task in self.connections.lock().unwrap().drain(..) {
            task.abort();
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn host_port(url: &str) -> String {
    url.split("://")
        .nth(1)
        .unwrap()
        .split('/')
        .next()
        .unwrap()
        .to_owned()
}

async fn wait_until_ready(server: &TestServer) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while server.get("/readyz").send().await.unwrap().status() != 200 {
        assert!(Instant::now() < deadline, "the registry did not recover");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn a_database_outage_is_503_and_recovers_without_a_restart() {
    let mongo = require_env("RELIQUARY_TEST_MONGODB");
    let proxy = ChaosProxy::start(host_port(&mongo)).await;
    // directConnection: the server announces its real address as a replica set member, and the
    // driver would otherwise bypass the proxy to talk to it.
    let url = format!(
        "mongodb://{}/t_{}?retryWrites=false&directConnection=true",
        proxy.address,
        uuid::Uuid::new_v4().simple()
    );
    let server = TestServer::start_with(move |c| c.database = Some(url)).await;
    server
        .upload_ok("acme@1", "", npm_tarball("acme", "1.0.0"), 201)
        .await;

    proxy.cut();
    let ready = server.get("/readyz").send().await.unwrap();
    expect_error(ready, 503, "metadata_store_unavailable").await;
    expect_error(
        server.get("/artefacts/acme@1").send().await.unwrap(),
        503,
        "metadata_store_unavailable",
    )
    .await;
    let upload = server
        .upload("acme@1", "", npm_tarball("acme", "2.0.0"))
        .await;
    expect_error(upload, 503, "metadata_store_unavailable").await;

    proxy.restore();
    wait_until_ready(&server).await;
    let doc: Value = server
        .get("/artefacts/acme@1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["version"], "1.0.0",
        "the upload during the outage changed nothing"
    );
    assert_eq!(doc["revision"], 1);
    server
        .upload_ok("acme@1", "", npm_tarball("acme", "2.0.0"), 200)
        .await;
}

#[tokio::test]
async fn a_bucket_outage_is_503_and_recovers_without_a_restart() {
    let endpoint = require_env("RELIQUARY_S3_ENDPOINT");
    let proxy = ChaosProxy::start(host_port(&endpoint)).await;
    let proxied = format!("http://{}", proxy.address);
    let storage = s3_url();
    let server = TestServer::start_with(move |c| {
        c.storage = Some(storage);
        c.s3_endpoint = Some(proxied);
    })
    .await;
    let tarball = npm_tarball("acme", "1.0.0");
    server.upload_ok("acme@1", "", tarball.clone(), 201).await;

    proxy.cut();
    expect_error(
        server.get("/readyz").send().await.unwrap(),
        503,
        "blob_store_unavailable",
    )
    .await;
    let download = server
        .get("/artefacts/acme@1/tarball")
        .send()
        .await
        .unwrap();
    expect_error(download, 503, "blob_store_unavailable").await;
    let upload = server
        .upload("acme@1", "architecture=x64", npm_tarball("acme", "1.0.0"))
        .await;
    expect_error(upload, 503, "blob_store_unavailable").await;

    proxy.restore();
    wait_until_ready(&server).await;
    let doc: Value = server
        .admin_get("/artefacts/acme@1")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        doc["tarballs"].as_object().unwrap().len(),
        1,
        "the failed upload left no slot"
    );
    let bytes = server
        .get("/artefacts/acme@1/tarball")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&bytes[..], &tarball[..]);
}
