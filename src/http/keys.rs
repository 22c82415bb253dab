//! Handlers for `/keys` and `/audit` (admin).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use reliquary_client::types::{ApiKey, AuditPage, CreatedKey, Items, NewKey};
use serde::Deserialize;

use super::extract::{ApiQuery, LaterJson};
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::registry::{DEFAULT_PAGE, MAX_PAGE};

/// `POST /keys`: the answer holds the token, the only time it exists in plaintext.
pub async fn create(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    body: LaterJson<NewKey>,
) -> Result<(StatusCode, Json<CreatedKey>)> {
    registry
        .audit
        .admit(&caller, "key.create", Caller::require_admin)
        .await?;
    let created = registry.create_key(&caller, body.parse().await?).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

/// `GET /keys`.
pub async fn list(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
) -> Result<Json<Items<ApiKey>>> {
    let items = registry.list_keys(&caller).await?;
    Ok(Json(Items { items }))
}

/// `DELETE /keys/{keyId}`: revokes; the key stays listed with `revokedAt`.
pub async fn revoke(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    Path(key_id): Path<String>,
) -> Result<Json<ApiKey>> {
    Ok(Json(registry.revoke_key(&caller, &key_id).await?))
}

#[derive(Deserialize)]
pub struct AuditQuery {
    limit: Option<usize>,
    cursor: Option<String>,
    action: Option<String>,
}

/// `GET /audit?limit=&cursor=&action=`: newest first.
pub async fn audit(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<AuditQuery>,
) -> Result<Json<AuditPage>> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::bad_request(
            "invalid_query",
            format!("`limit` must be between 1 and {MAX_PAGE}."),
        ));
    }
    let action = query.action.filter(|a| !a.is_empty());
    Ok(Json(
        registry
            .audit_log(&caller, action, query.cursor, limit)
            .await?,
    ))
}
