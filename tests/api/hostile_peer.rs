//! A hostile peer registry for the federation trust tests: a small HTTP server on loopback that
//! speaks just enough of the API for a mirror to sync from it, and lies, stalls or floods as the
//! test tells it to, one scenario at a time.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use ed25519_dalek::SigningKey;
use reliquary_client::jws::{self, SigningPayload};
use reliquary_client::types::{Kind, Timestamp};
use serde_json::{json, Value};
use tokio::net::TcpListener;

use crate::common::sha256_hex;

/// What the peer answers to `GET /artefacts?since=...`.
pub enum Feed {
    /// These items, then nothing more.
    Items(Vec<Value>),
    /// Always `hasMore: true` and no items: a feed that goes nowhere.
    NoProgress,
    /// This many copies of one item, whatever limit was asked for.
    Oversized(usize, Value),
    /// A body of this many bytes of JSON padding.
    Huge(usize),
    /// An error status with a body of this many bytes.
    Error(u16, usize),
}

/// What the peer answers to a tarball request.
#[derive(Clone)]
pub enum Tarball {
    Bytes(Vec<u8>),
    /// Accepts the request and never answers.
    StallHeaders,
    NotFound,
    /// Sends the mirror elsewhere.
    Redirect(String),
}

struct Scenario {
    registry: String,
    well_known_extra: Value,
    feed: Feed,
    tarballs: HashMap<(String, String), Tarball>,
}

pub struct HostilePeer {
    pub url: String,
    pub key: SigningKey,
    pub registry: String,
    scenario: Arc<Mutex<Scenario>>,
    pub requests: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for HostilePeer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl HostilePeer {
    /// A peer calling itself `registry`, with a fresh signing key and an empty feed.
    pub async fn start(registry: &str) -> Self {
        let key = SigningKey::from_bytes(&rand_bytes());
        let scenario = Arc::new(Mutex::new(Scenario {
            registry: registry.to_owned(),
            well_known_extra: json!({}),
            feed: Feed::Items(Vec::new()),
            tarballs: HashMap::new(),
        }));
        let requests = Arc::new(AtomicUsize::new(0));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = {
            let (scenario, requests, key) = (scenario.clone(), requests.clone(), key.clone());
            axum::Router::new().fallback(move |request: Request| {
                let (scenario, requests, key) = (scenario.clone(), requests.clone(), key.clone());
                async move {
                    requests.fetch_add(1, Ordering::SeqCst);
                    answer(&scenario, &key, request).await
                }
            })
        };
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self {
            url,
            key,
            registry: registry.to_owned(),
            scenario,
            requests,
            task,
        }
    }

    /// The peer's public key as a JWK.
    pub fn jwk(&self) -> Value {
        serde_json::to_value(jws::jwk_for(&self.key.verifying_key())).unwrap()
    }

    /// Extra members of `/.well-known/reliquary` (e.g. `mirroredKeys`).
    pub fn set_well_known_extra(&self, extra: Value) {
        self.scenario.lock().unwrap().well_known_extra = extra;
    }

    pub fn set_feed(&self, feed: Feed) {
        self.scenario.lock().unwrap().feed = feed;
    }

    pub fn set_tarball(&self, id: &str, arch: &str, tarball: Tarball) {
        self.scenario
            .lock()
            .unwrap()
            .tarballs
            .insert((id.to_owned(), arch.to_owned()), tarball);
    }

    /// Signs a payload with the peer's key.
    pub fn sign(&self, payload: &SigningPayload) -> String {
        jws::sign(&self.key, payload)
    }

    /// A release document with one slot over `bytes`, signed by this peer as `signer`, served
    /// by the peer under `(id, arch)`; `seq` orders it in the feed.
    pub fn document(&self, id: &str, arch: &str, bytes: &[u8], seq: i64) -> Value {
        self.set_tarball(id, arch, Tarball::Bytes(bytes.to_vec()));
        let name = id.split('@').next().unwrap_or(id);
        self.signed_document(
            id,
            arch,
            name,
            &sha256_hex(bytes),
            bytes.len() as u64,
            seq,
            &self.registry.clone(),
        )
    }

    /// A document whose one slot is signed exactly as given (a lie if the caller says so).
    #[allow(clippy::too_many_arguments)]
    pub fn signed_document(
        &self,
        id: &str,
        arch: &str,
        package: &str,
        sha256: &str,
        size: u64,
        seq: i64,
        registry: &str,
    ) -> Value {
        let payload = SigningPayload {
            architecture: arch.to_owned(),
            id: id.to_owned(),
            kind: Kind::Release,
            package_name: package.to_owned(),
            registry: registry.to_owned(),
            sha256: sha256.to_owned(),
            signed_at: Timestamp::now(),
            size,
            version: "1.0.0".into(),
        };
        let signature = self.sign(&payload);
        let now = Timestamp::now().to_string();
        let origin = if registry == self.registry {
            Value::Null
        } else {
            json!({"registry": registry, "remote": "upstream", "syncedAt": now})
        };
        json!({
            "id": id, "kind": "release", "packageName": package, "version": "1.0.0",
            "licence": "MIT", "description": "from a hostile peer", "category": null,
            "tarballs": {arch: {"sha256": sha256, "size": size, "version": "1.0.0",
                                "uploadedAt": now, "signature": signature}},
            "origin": origin, "createdAt": now, "updatedAt": now, "dataUpdatedAt": now,
            "revision": 1, "seq": seq
        })
    }
}

async fn answer(scenario: &Mutex<Scenario>, key: &SigningKey, request: Request) -> Response {
    let path = request.uri().path().to_owned();
    let query: HashMap<String, String> =
        form_urlencoded::parse(request.uri().query().unwrap_or("").as_bytes())
            .into_owned()
            .collect();
    if path == "/.well-known/reliquary" {
        let s = scenario.lock().unwrap();
        let mut body = json!({
            "registry": s.registry, "apiVersion": 1,
            "keys": [jws::jwk_for(&key.verifying_key())],
        });
        for (k, v) in s.well_known_extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        return axum::Json(body).into_response();
    }
    if path == "/artefacts" {
        let since: i64 = query.get("since").and_then(|s| s.parse().ok()).unwrap_or(0);
        let s = scenario.lock().unwrap();
        return match &s.feed {
            Feed::Items(items) => {
                let after: Vec<&Value> = items
                    .iter()
                    .filter(|i| i["seq"].as_i64().is_none_or(|seq| seq > since))
                    .collect();
                let last = items
                    .iter()
                    .filter_map(|i| i["seq"].as_i64())
                    .max()
                    .unwrap_or(0);
                axum::Json(json!({"items": after, "lastSeq": last, "hasMore": false}))
                    .into_response()
            }
            Feed::NoProgress => {
                axum::Json(json!({"items": [], "lastSeq": since, "hasMore": true})).into_response()
            }
            Feed::Oversized(count, item) => {
                let items = vec![item.clone(); *count];
                axum::Json(json!({"items": items, "lastSeq": 1, "hasMore": false})).into_response()
            }
            Feed::Huge(bytes) => {
                let padding = "x".repeat(*bytes);
                let body = format!(
                    r#"{{"items": [], "lastSeq": 1, "hasMore": false, "pad": "{padding}"}}"#
                );
                ([("content-type", "application/json")], body).into_response()
            }
            Feed::Error(status, bytes) => (
                StatusCode::from_u16(*status).unwrap(),
                Body::from("E".repeat(*bytes)),
            )
                .into_response(),
        };
    }
    if let Some(rest) = path.strip_prefix("/artefacts/") {
        if let Some(id) = rest.strip_suffix("/tarball") {
            let id = id.replace("%2F", "/");
            let arch = query
                .get("architecture")
                .cloned()
                .unwrap_or_else(|| "noarch".into());
            let tarball = scenario.lock().unwrap().tarballs.get(&(id, arch)).cloned();
            return match tarball {
                Some(Tarball::Bytes(bytes)) => {
                    ([("content-type", "application/gzip")], bytes).into_response()
                }
                Some(Tarball::StallHeaders) => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    StatusCode::GATEWAY_TIMEOUT.into_response()
                }
                Some(Tarball::Redirect(to)) => {
                    (StatusCode::FOUND, [("location", to)]).into_response()
                }
                Some(Tarball::NotFound) | None => StatusCode::NOT_FOUND.into_response(),
            };
        }
    }
    StatusCode::NOT_FOUND.into_response()
}

fn rand_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    let seed = uuid::Uuid::new_v4();
    bytes[..16].copy_from_slice(seed.as_bytes());
    bytes[16..].copy_from_slice(uuid::Uuid::new_v4().as_bytes());
    bytes
}
