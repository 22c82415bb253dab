//! Handlers for `/remotes` (admin).

use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::Json;
use reliquary_client::types::{Items, PutRemote, Remote, SyncSummary};
use serde::Deserialize;

use super::extract::{ApiQuery, LaterJson};
use crate::auth::Caller;
use crate::error::Result;
use crate::federation::Federation;

/// `PUT /remotes/{name}`: 201 created, 200 replaced; never echoes the token.
pub async fn put(
    State(federation): State<Arc<Federation>>,
    caller: Caller,
    Path(name): Path<String>,
    body: LaterJson<PutRemote>,
) -> Result<(StatusCode, Json<Remote>)> {
    federation
        .context()
        .audit
        .admit(&caller, "remote.put", Caller::require_admin)
        .await?;
    let (remote, created) = federation
        .put_remote(&caller, &name, body.parse().await?)
        .await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(remote)))
}

/// `GET /remotes`.
pub async fn list(
    State(federation): State<Arc<Federation>>,
    caller: Caller,
) -> Result<Json<Items<Remote>>> {
    let items = federation.list_remotes(&caller).await?;
    Ok(Json(Items { items }))
}

#[derive(Deserialize)]
pub struct DeleteQuery {
    #[serde(default)]
    purge: bool,
}

/// `DELETE /remotes/{name}?purge=`.
pub async fn delete(
    State(federation): State<Arc<Federation>>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(query): ApiQuery<DeleteQuery>,
) -> Result<Json<Remote>> {
    Ok(Json(
        federation
            .delete_remote(&caller, &name, query.purge)
            .await?,
    ))
}

/// `POST /remotes/{name}/sync`: one pass now.
#[derive(Deserialize)]
pub struct SyncQuery {
    /// Read the peer's feed from the start: items refused before are judged again.
    #[serde(default)]
    from_start: bool,
}

/// `POST /remotes/{name}/sync[?from_start=true]`: one pass now.
pub async fn sync(
    State(federation): State<Arc<Federation>>,
    caller: Caller,
    Path(name): Path<String>,
    ApiQuery(query): ApiQuery<SyncQuery>,
) -> Result<Json<SyncSummary>> {
    Ok(Json(
        federation
            .sync_remote(&caller, &name, query.from_start)
            .await?,
    ))
}
