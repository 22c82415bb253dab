//! Trusted publishing: what `POST /oidc/token` costs with the issuer's keys cached, beside the
//! RS256 signature check alone (jsonwebtoken on the same tokens).

use std::time::Instant;

use axum::routing::get;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use reliquary::config::Config;
use serde_json::{json, Map, Value};

use crate::{percentile, row, TOKEN};

const PEM: &[u8] = include_bytes!("../../tests/fixtures/oidc/issuer-rs256.pem");
const EXCHANGES: usize = 300;

fn token(issuer: &str, key: &EncodingKey, i: usize) -> String {
    let now = reliquary_client::types::Timestamp::now().millis() / 1000;
    let claims: Map<String, Value> = json!({
        "iss": issuer, "aud": "bench", "repository": "acme/acme-plugin",
        "ref": "refs/tags/v1.0.0", "run_id": i.to_string(),
        "jti": uuid::Uuid::new_v4().to_string(), "iat": now, "exp": now + 600,
    })
    .as_object()
    .cloned()
    .unwrap();
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some("rs-1".into());
    jsonwebtoken::encode(&header, &claims, key).unwrap()
}

pub async fn exchange() {
    let key = EncodingKey::from_rsa_pem(PEM).unwrap();
    let mut jwk = Jwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    jwk.common.key_id = Some("rs-1".into());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let issuer = format!("http://{}", listener.local_addr().unwrap());
    let (discovery, keys) = (
        json!({"issuer": issuer, "jwks_uri": format!("{issuer}/jwks")}),
        JwkSet {
            keys: vec![jwk.clone()],
        },
    );
    let app = axum::Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move { axum::Json(discovery) }),
        )
        .route("/jwks", get(move || async move { axum::Json(keys) }));
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::new(dir.path());
    config.admin_token = Some(TOKEN.into());
    config.registry_name = "bench".into();
    config.oidc_insecure_issuer = Some(issuer.clone());
    let app = reliquary::open_registry(&config).await.unwrap();
    let registry_listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", registry_listener.local_addr().unwrap());
    tokio::spawn(reliquary::serve(
        app,
        registry_listener,
        std::future::pending(),
    ));
    let http = reqwest::Client::new();
    let put = http
        .put(format!("{url}/trusted-publishers/acme"))
        .bearer_auth(TOKEN)
        .json(&json!({"issuer": issuer, "claims": {"repository": "acme/acme-plugin", "ref": "refs/tags/v1.*"}, "allowedIds": ["acme-plugin@1"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(put.status(), 201);

    let tokens: Vec<String> = (0..=EXCHANGES).map(|i| token(&issuer, &key, i)).collect();
    let exchange = |token: &str| {
        http.post(format!("{url}/oidc/token"))
            .json(&json!({ "token": token }))
            .send()
    };
    // The first exchange fetches discovery and keys; the rest find them cached.
    assert_eq!(exchange(&tokens[0]).await.unwrap().status(), 201);
    let mut ours = Vec::with_capacity(EXCHANGES);
    for token in &tokens[1..] {
        let started = Instant::now();
        let response = exchange(token).await.unwrap();
        ours.push(started.elapsed().as_secs_f64() * 1e3);
        assert_eq!(response.status(), 201);
    }

    let decoding = DecodingKey::from_jwk(&jwk).unwrap();
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&["bench"]);
    let mut verify_only = Vec::with_capacity(EXCHANGES);
    for token in &tokens[1..] {
        let started = Instant::now();
        jsonwebtoken::decode::<Map<String, Value>>(token, &decoding, &validation).unwrap();
        verify_only.push(started.elapsed().as_secs_f64() * 1e3);
    }
    let (p50, p99) = (percentile(&mut ours, 0.5), percentile(&mut ours, 0.99));
    let base = percentile(&mut verify_only, 0.5);
    row(
        "Trusted publishing",
        "POST /oidc/token, issuer keys cached (verify, match, jti claim, key insert, audit)",
        format!("p50 {p50:.2} ms, p99 {p99:.2} ms"),
        format!("RS256 verify alone (jsonwebtoken): p50 {base:.3} ms"),
        format!("{:.0}x", p50 / base),
        "p50 <= 10 ms",
    );
}
