//! Handlers for a release's lifecycle: `GET /artefacts/{id}/history` and
//! `POST /artefacts/{id}/rollback`.

use std::sync::Arc;

use axum::extract::State;
use axum::Json;
use reliquary_client::types::{Artefact, HistoryPage, Rollback};
use serde::Deserialize;

use super::extract::{architecture, ApiQuery, ArtefactId, LaterJson};
use crate::auth::Caller;
use crate::error::Result;
use crate::registry::Registry;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HistoryQuery {
    architecture: Option<String>,
}

/// `GET /artefacts/{id}/history?architecture=`: readers, with the federation filter.
pub async fn history(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    ArtefactId(id): ArtefactId,
    ApiQuery(query): ApiQuery<HistoryQuery>,
) -> Result<Json<HistoryPage>> {
    let only = query
        .architecture
        .map(|arch| architecture(Some(arch)))
        .transpose()?;
    let items = registry.history(&caller, &id, only.as_deref()).await?;
    Ok(Json(HistoryPage { items }))
}

/// `POST /artefacts/{id}/rollback` `{"version", "architecture"?, "reason"}`.
pub async fn rollback(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    ArtefactId(id): ArtefactId,
    body: LaterJson<Rollback>,
) -> Result<Json<Artefact>> {
    registry
        .audit
        .admit(&caller, "artefact.rollback", |c| c.require_publish(&id))
        .await?;
    let request = body.parse().await?;
    Ok(Json(registry.rollback(&caller, &id, request).await?))
}
