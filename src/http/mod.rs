//! The HTTP API: every route, its body limit and the shared middleware, in one place.

pub mod artefacts;
pub mod conditional;
pub mod extract;
pub mod keys;
pub mod lifecycle;
pub mod ops;
pub mod remotes;
pub mod track;
pub mod trust;

use std::time::Duration;

use axum::extract::DefaultBodyLimit;
use axum::http::{Request, Response};
use axum::routing::{delete, get, post};
use axum::Router;
use tower_http::trace::TraceLayer;
use tracing::Span;

use crate::app::AppState;
use crate::error::Error;

/// JSON request bodies (keys, patches, remotes) are small.
pub const JSON_BODY_LIMIT: usize = 64 * 1024;

/// The upload route: its body is streamed, capped by `--max-upload-bytes` and timed by
/// `--upload-idle-timeout-seconds` in the upload pipeline itself (`408`).
pub fn upload_router() -> Router<AppState> {
    Router::new().route(
        "/artefacts/npm/{id}",
        post(artefacts::upload).layer(DefaultBodyLimit::disable()),
    )
}

/// The HTTP API's other routes (the default body limit, [`JSON_BODY_LIMIT`], and the body
/// idle timeout are set where `app::router` composes this with the UI).
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/artefacts", get(artefacts::list))
        .route(
            "/artefacts/{id}",
            get(artefacts::get)
                .patch(artefacts::patch)
                .delete(artefacts::delete),
        )
        .route("/artefacts/{id}/tarball", get(artefacts::tarball))
        .route("/artefacts/{id}/history", get(lifecycle::history))
        .route("/artefacts/{id}/rollback", post(lifecycle::rollback))
        .route(
            "/artefacts/{id}/tarballs/{arch}",
            delete(artefacts::delete_slot),
        )
        .route(
            "/artefacts/{id}/tarballs/{arch}/attestation",
            get(artefacts::attestation),
        )
        .route("/keys", get(keys::list).post(keys::create))
        .route("/keys/{key_id}", delete(keys::revoke))
        .route("/audit", get(keys::audit))
        .route("/trusted-publishers", get(trust::list))
        .route(
            "/trusted-publishers/{name}",
            axum::routing::put(trust::put).delete(trust::delete),
        )
        .route("/oidc/token", post(trust::exchange))
        .route("/remotes", get(remotes::list))
        .route(
            "/remotes/{name}",
            axum::routing::put(remotes::put).delete(remotes::delete),
        )
        .route("/remotes/{name}/sync", post(remotes::sync))
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/.well-known/reliquary", get(ops::well_known))
        .route("/", get(ops::root))
}

/// `router` with one log line per request, with its status and latency.
pub fn traced(router: Router) -> Router {
    router.layer(
        TraceLayer::new_for_http()
            .make_span_with(|request: &Request<axum::body::Body>| {
                tracing::info_span!("request", method = %request.method(), path = %request.uri().path())
            })
            .on_request(())
            .on_response(|response: &Response<axum::body::Body>, latency: Duration, _span: &Span| {
                tracing::info!(status = response.status().as_u16(), latency_ms = latency.as_secs_f64() * 1e3, "served");
            }),
    )
}

pub async fn method_not_allowed() -> Error {
    Error::new(
        axum::http::StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "This endpoint does not take that method; see docs/api.md.",
    )
}

pub async fn not_found() -> Error {
    Error::not_found("route_not_found", "No such endpoint; see docs/api.md.")
}
