//! Handlers for trusted publishing: `/trusted-publishers` (admin) and `POST /oidc/token`.

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use reliquary_client::types::{
    Items, OidcExchange, OidcIssued, PutTrustedPublisher, TrustedPublisher,
};

use super::extract::LaterJson;
use crate::auth::Caller;
use crate::error::Result;
use crate::registry::Registry;

/// `PUT /trusted-publishers/{name}`: 201 created, 200 replaced.
pub async fn put(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path(name): Path<String>,
    body: LaterJson<PutTrustedPublisher>,
) -> Result<(StatusCode, Json<TrustedPublisher>)> {
    registry
        .audit
        .admit(&caller, "publisher.put", Caller::require_admin)
        .await?;
    let (publisher, created) = registry
        .put_publisher(&caller, &name, body.parse().await?)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(publisher)))
}

/// `GET /trusted-publishers`.
pub async fn list(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
) -> Result<Json<Items<TrustedPublisher>>> {
    let items = registry.list_publishers(&caller).await?;
    Ok(Json(Items { items }))
}

/// `DELETE /trusted-publishers/{name}`: 204; the keys it issued are revoked.
pub async fn delete(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode> {
    registry.delete_publisher(&caller, &name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /oidc/token`: no registry credentials; the CI's OIDC token is the credential.
pub async fn exchange(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    body: LaterJson<OidcExchange>,
) -> Result<(StatusCode, Json<OidcIssued>)> {
    let request = body.parse().await?;
    let issued = registry
        .exchange_oidc_token(&caller, &request.token)
        .await?;
    Ok((StatusCode::CREATED, Json(issued)))
}
