//! A test OIDC issuer on a loopback port: discovery, a JWKS, GitHub Actions' token endpoint,
//! and a minter of good and bad tokens. Its keys are fixtures (tests/fixtures/oidc).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Map, Value};

const RS256_PEM: &[u8] = include_bytes!("../fixtures/oidc/issuer-rs256.pem");
const ES256_PEM: &[u8] = include_bytes!("../fixtures/oidc/issuer-es256.pem");
const ROTATED_PEM: &[u8] = include_bytes!("../fixtures/oidc/rotated-rs256.pem");
const ATTACKER_PEM: &[u8] = include_bytes!("../fixtures/oidc/attacker-rs256.pem");

/// The bearer GitHub Actions gives a job (`ACTIONS_ID_TOKEN_REQUEST_TOKEN`).
pub const REQUEST_TOKEN: &str = "actions-request-token";

pub const REPOSITORY: &str = "acme/acme-plugin";

/// The audience the tokens carry: the name of the registries under test.
pub const AUDIENCE: &str = "acme-registry";

#[derive(Clone, Copy, Debug)]
pub enum SigningKey {
    Rs256,
    Es256,
    /// Published only after [`TestIssuer::rotate`].
    Rotated,
    /// Never published.
    Attacker,
}

impl SigningKey {
    fn pem(self) -> (&'static [u8], Algorithm) {
        match self {
            Self::Rs256 => (RS256_PEM, Algorithm::RS256),
            Self::Es256 => (ES256_PEM, Algorithm::ES256),
            Self::Rotated => (ROTATED_PEM, Algorithm::RS256),
            Self::Attacker => (ATTACKER_PEM, Algorithm::RS256),
        }
    }

    fn encoding_key(self) -> EncodingKey {
        match self.pem() {
            (pem, Algorithm::ES256) => EncodingKey::from_ec_pem(pem).unwrap(),
            (pem, _) => EncodingKey::from_rsa_pem(pem).unwrap(),
        }
    }

    pub fn kid(self) -> &'static str {
        match self {
            Self::Rs256 => "rs-1",
            Self::Es256 => "es-1",
            Self::Rotated => "rs-2",
            // Claims the published key's kid: a forgery.
            Self::Attacker => "rs-1",
        }
    }

    fn jwk(self) -> Jwk {
        let (_, alg) = self.pem();
        let mut jwk = Jwk::from_encoding_key(&self.encoding_key(), alg).unwrap();
        jwk.common.key_id = Some(self.kid().into());
        jwk
    }
}

struct Shared {
    url: String,
    keys: Mutex<Vec<SigningKey>>,
    jwks_fetches: AtomicUsize,
}

pub struct TestIssuer {
    pub url: String,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestIssuer {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            url: url.clone(),
            keys: Mutex::new(vec![SigningKey::Rs256, SigningKey::Es256]),
            jwks_fetches: AtomicUsize::new(0),
        });
        let app = Router::new()
            .route("/.well-known/openid-configuration", get(discovery))
            .route("/jwks", get(jwks))
            .route("/token", get(actions_token))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, shared, task }
    }

    /// Publishes the rotated key beside the others.
    pub fn rotate(&self) {
        self.shared.keys.lock().unwrap().push(SigningKey::Rotated);
    }

    pub fn jwks_fetches(&self) -> usize {
        self.shared.jwks_fetches.load(Ordering::SeqCst)
    }

    /// The claims of a GitHub Actions release job of [`REPOSITORY`] at tag `v1.4.0`, for
    /// [`AUDIENCE`], valid for five minutes from now.
    pub fn claims(&self) -> Map<String, Value> {
        github_claims(&self.url, AUDIENCE)
    }

    pub fn mint(&self, claims: &Map<String, Value>, key: SigningKey) -> String {
        let (_, alg) = key.pem();
        let mut header = Header::new(alg);
        header.kid = Some(key.kid().into());
        jsonwebtoken::encode(&header, claims, &key.encoding_key()).unwrap()
    }

    /// A token as an issuer would mint it, with the claims changed by `edit`.
    pub fn token_with(&self, edit: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut claims = self.claims();
        edit(&mut claims);
        self.mint(&claims, SigningKey::Rs256)
    }
}

pub fn now_seconds() -> i64 {
    reliquary_client::types::Timestamp::now().millis() / 1000
}

fn github_claims(issuer: &str, audience: &str) -> Map<String, Value> {
    let now = now_seconds();
    json!({
        "iss": issuer,
        "aud": audience,
        "sub": format!("repo:{REPOSITORY}:ref:refs/tags/v1.4.0"),
        "repository": REPOSITORY,
        "repository_owner": "acme",
        "ref": "refs/tags/v1.4.0",
        "ref_type": "tag",
        "sha": "4f1c2a9e8b7d6c5a4f1c2a9e8b7d6c5a4f1c2a9e",
        "run_id": "7301",
        "workflow_ref": format!("{REPOSITORY}/.github/workflows/release.yml@refs/tags/v1.4.0"),
        "environment": "production",
        "jti": uuid::Uuid::new_v4().to_string(),
        "iat": now,
        "nbf": now - 5,
        "exp": now + 300,
    })
    .as_object()
    .cloned()
    .unwrap()
}

async fn discovery(State(shared): State<Arc<Shared>>) -> Json<Value> {
    Json(json!({
        "issuer": shared.url,
        "jwks_uri": format!("{}/jwks", shared.url),
        "id_token_signing_alg_values_supported": ["RS256", "ES256"],
    }))
}

async fn jwks(State(shared): State<Arc<Shared>>) -> Json<JwkSet> {
    shared.jwks_fetches.fetch_add(1, Ordering::SeqCst);
    let keys = shared
        .keys
        .lock()
        .unwrap()
        .iter()
        .map(|k| k.jwk())
        .collect();
    Json(JwkSet { keys })
}

/// GitHub Actions' `ACTIONS_ID_TOKEN_REQUEST_URL`: a token for `?audience=`, to the holder of
/// the request token.
async fn actions_token(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    Query(query): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<Value>, StatusCode> {
    let authorized = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case(&format!("bearer {REQUEST_TOKEN}")));
    if !authorized || query.get("api-version").map(String::as_str) != Some("2.0") {
        return Err(StatusCode::UNAUTHORIZED);
    }
    let audience = query.get("audience").ok_or(StatusCode::BAD_REQUEST)?;
    let claims = github_claims(&shared.url, audience);
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(SigningKey::Rs256.kid().into());
    let token = jsonwebtoken::encode(&header, &claims, &SigningKey::Rs256.encoding_key()).unwrap();
    Ok(Json(json!({ "value": token })))
}
