//! The test harness: a real registry on an ephemeral port, its admin token, and tarball makers.

use std::path::{Path, PathBuf};

use reliquary::config::Config;
use reqwest::{Client, RequestBuilder, Response};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub use reliquary_test_support::*;

pub const ADMIN_TOKEN: &str = "test-admin-token-that-is-long-enough-0123456789";

pub struct TestServer {
    pub url: String,
    pub app: reliquary::AppState,
    pub registry: std::sync::Arc<reliquary::registry::Registry>,
    pub config: Config,
    pub client: Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
    _dir: Option<tempfile::TempDir>,
}

impl TestServer {
    /// A fresh registry in its own temporary data dir.
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(adjust: impl FnOnce(&mut Config)) -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::new(dir.path());
        config.admin_token = Some(ADMIN_TOKEN.into());
        apply_test_backend(&mut config);
        adjust(&mut config);
        let mut server = Self::launch(config).await;
        server._dir = Some(dir);
        server
    }

    /// Runs a registry on `config` (used to restart on the same data dir).
    pub async fn launch(config: Config) -> Self {
        Self::launch_at(config, "127.0.0.1:0").await
    }

    /// Runs a registry on `config` at `address` (to come back on the same port).
    pub async fn launch_at(config: Config, address: &str) -> Self {
        let listener = TcpListener::bind(address).await.expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let app = reliquary::open_registry(&config)
            .await
            .expect("open registry");
        let registry = app.registry.clone();
        let task = tokio::spawn(reliquary::serve(app.clone(), listener, async move {
            let _ = rx.await;
        }));
        Self {
            url,
            app,
            registry,
            config,
            client: Client::new(),
            shutdown: Some(tx),
            task: Some(task),
            _dir: None,
        }
    }

    /// Stops the server gracefully and returns its config and data dir for a restart.
    pub async fn stop(mut self) -> (Config, Option<tempfile::TempDir>) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            task.await.expect("server task").expect("server result");
        }
        (self.config.clone(), self._dir.take())
    }

    /// Blob keys under `prefix` in whichever blob store the server uses.
    pub async fn blob_keys(&self, prefix: &str) -> Vec<String> {
        self.registry
            .blobs
            .list(prefix)
            .await
            .expect("listing blobs")
    }

    pub fn data_dir(&self) -> &Path {
        &self.config.data_dir
    }

    pub fn get(&self, path: &str) -> RequestBuilder {
        self.client.get(format!("{}{path}", self.url))
    }

    pub fn admin(&self, builder: RequestBuilder) -> RequestBuilder {
        builder.bearer_auth(ADMIN_TOKEN)
    }

    pub fn admin_get(&self, path: &str) -> RequestBuilder {
        self.admin(self.get(path))
    }

    /// `GET path` with the admin token, as JSON (whatever the status).
    pub async fn admin_json(&self, path: &str) -> Value {
        self.admin_get(path)
            .send()
            .await
            .expect("request")
            .json()
            .await
            .expect("a JSON body")
    }

    /// An admin request with any method to `path`.
    pub fn admin_request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.admin(self.client.request(method, format!("{}{path}", self.url)))
    }

    pub fn admin_post(&self, path: &str) -> RequestBuilder {
        self.admin_request(reqwest::Method::POST, path)
    }

    pub fn admin_put(&self, path: &str) -> RequestBuilder {
        self.admin_request(reqwest::Method::PUT, path)
    }

    pub fn admin_patch(&self, path: &str) -> RequestBuilder {
        self.admin_request(reqwest::Method::PATCH, path)
    }

    pub fn admin_delete(&self, path: &str) -> RequestBuilder {
        self.admin_request(reqwest::Method::DELETE, path)
    }

    /// Uploads `tarball` as the raw body with the admin token.
    pub async fn upload(&self, id: &str, query: &str, tarball: Vec<u8>) -> Response {
        self.admin(
            self.client
                .post(format!("{}/artefacts/npm/{}?{query}", self.url, encode(id)))
                .header("content-type", "application/gzip")
                .body(tarball),
        )
        .send()
        .await
        .expect("upload request")
    }

    /// Uploads and asserts the status, returning the document.
    pub async fn upload_ok(&self, id: &str, query: &str, tarball: Vec<u8>, status: u16) -> Value {
        let response = self.upload(id, query, tarball).await;
        let actual = response.status().as_u16();
        let body: Value = response.json().await.expect("json body");
        assert_eq!(actual, status, "upload of {id}?{query}: {body}");
        body
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// An id as one percent-encoded path segment.
pub fn encode(id: &str) -> String {
    id.replace('/', "%2F")
}

/// Reads a JSON error body and checks its status and code.
pub async fn expect_error(response: Response, status: u16, code: &str) -> Value {
    let actual = response.status().as_u16();
    let body: Value = response.json().await.expect("error body is JSON");
    assert_eq!(actual, status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert!(
        body["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{body}"
    );
    body
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                out.extend(files_under(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// A setting that scripts/test provides; the suite never skips silently without it.
pub fn require_env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run the suite through scripts/test, which starts the services it needs")
    })
}

/// A fresh MongoDB database URL on the test server.
pub fn mongo_url() -> String {
    let base = require_env("RELIQUARY_TEST_MONGODB");
    format!(
        "{base}/t_{}?retryWrites=false",
        uuid::Uuid::new_v4().simple()
    )
}

/// A fresh root dir in the test bucket on the S3 test server.
pub fn s3_url() -> String {
    require_env("RELIQUARY_S3_ENDPOINT");
    let bucket = require_env("RELIQUARY_TEST_S3_BUCKET");
    format!("s3://{bucket}/t_{}", uuid::Uuid::new_v4().simple())
}

/// `RELIQUARY_TEST_BACKEND=mongo-s3` runs the HTTP suite on MongoDB + S3 instead of the
/// embedded default.
pub fn apply_test_backend(config: &mut Config) {
    match std::env::var("RELIQUARY_TEST_BACKEND").as_deref() {
        Ok("mongo-s3") => {
            config.database = Some(mongo_url());
            config.storage = Some(s3_url());
            config.s3_endpoint = Some(require_env("RELIQUARY_S3_ENDPOINT"));
        }
        Ok("embedded") | Err(_) => {}
        Ok(other) => panic!("unknown RELIQUARY_TEST_BACKEND `{other}`"),
    }
}

/// A plugin host's client of the registry at `url`: caching in `cache`, verifying slots with the
/// keys the registry at `signer` publishes (the origin's, for a mirror), with `token` if any.
pub async fn host_client(
    url: &str,
    signer: &str,
    cache: &Path,
    token: Option<&str>,
) -> reliquary_client::Client {
    let published = reliquary_client::Client::builder(signer)
        .build()
        .unwrap()
        .well_known()
        .await
        .unwrap();
    let keys = reliquary_client::jws::TrustedKeys::from_jwks(&published.keys).unwrap();
    reliquary_client::Client::builder(url)
        .maybe_token(token.map(str::to_owned))
        .cache_dir(cache)
        .trusted_keys(keys)
        .build()
        .unwrap()
}
