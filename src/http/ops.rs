//! Operational endpoints: liveness, readiness, the registry's identity and signing keys.

use axum::extract::State;
use axum::response::{IntoResponse, Redirect, Response};
use axum::Json;
use reliquary_client::types::WellKnown;
use serde_json::json;

use crate::app::AppState;
use crate::error::Result;

/// `GET /healthz`: the process is up.
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({"status": "ok"}))
}

/// `GET /readyz`: both stores answer; 503 otherwise.
pub async fn readyz(State(state): State<AppState>) -> Result<Json<serde_json::Value>> {
    state.registry.ready().await?;
    Ok(Json(json!({"status": "ready"})))
}

/// `GET /.well-known/reliquary`.
pub async fn well_known(State(state): State<AppState>) -> Json<WellKnown> {
    Json(state.federation.well_known().await)
}

/// `GET /`: the web UI lives under `/ui/`.
pub async fn root() -> Response {
    Redirect::temporary("/ui/").into_response()
}

/// `GET /metrics`: Prometheus text exposition.
pub async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        state.metrics.render(),
    )
        .into_response()
}
