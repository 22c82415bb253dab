//! The admin pages: remotes ("sync now"), keys (create, revoke) and the audit log.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::response::IntoResponse;
use axum::Form;
use reliquary_client::types::{NewKey, Role, Rollback, Timestamp};
use serde::Deserialize;

use super::pages::{nav, render, require_admin, Nav, PageResult};
use super::views::{self, AuditRow, KeyRow, PublisherRow, RemoteRow};
use super::{Page, Visitor};
use crate::app::AppState;
use crate::registry::DEFAULT_PAGE;

#[derive(Template)]
#[template(path = "remotes.html")]
struct RemotesPage {
    nav: Nav,
    remotes: Vec<RemoteRow>,
    flash: Option<String>,
}

/// `/ui/remotes`: federation health.
pub async fn remotes(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    require_admin(&visitor, "/ui/remotes")?;
    let now = Timestamp::now();
    let remotes = state.federation.list_remotes(&visitor.caller).await?;
    render(&RemotesPage {
        nav: nav(&state, &visitor, "remotes"),
        remotes: remotes.iter().map(|r| RemoteRow::of(r, now)).collect(),
        flash: visitor.take_flash(&state),
    })
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    pub(super) csrf: String,
}

/// "Sync now".
pub async fn sync_remote(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(name): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    visitor.check_csrf(&form.csrf)?;
    let message = match state
        .federation
        .sync_remote(&visitor.caller, &name, false)
        .await
    {
        Ok(s) => format!(
            "{name}: mirrored {}, deleted {}, conflicts {}, skipped {}",
            s.mirrored, s.deleted, s.conflicts, s.skipped
        ),
        Err(error) => format!("{name}: {}", error.message),
    };
    visitor.flash(&state, message);
    Ok(Page::redirect("/ui/remotes"))
}

#[derive(Deserialize)]
pub struct RollbackForm {
    #[serde(default)]
    csrf: String,
    version: String,
    /// Empty: every slot whose history holds the version.
    #[serde(default)]
    architecture: String,
    #[serde(default)]
    reason: String,
}

/// The rollback button on an artefact's page (admin).
pub async fn rollback(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
    Form(form): Form<RollbackForm>,
) -> PageResult {
    let page = format!("/ui/artefacts/{}", views::path_id(&id));
    require_admin(&visitor, &page)?;
    visitor.check_csrf(&form.csrf)?;
    let request = Rollback {
        version: form.version.clone(),
        architecture: Some(form.architecture).filter(|a| !a.is_empty()),
        reason: form.reason,
    };
    let message = match state.registry.rollback(&visitor.caller, &id, request).await {
        Ok(_) => format!(
            "Rolled back to {}; the versions it replaced are yanked.",
            form.version
        ),
        Err(error) => format!("Rollback refused: {}", error.message),
    };
    visitor.flash(&state, message);
    Ok(Page::redirect(&page))
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    nav: Nav,
    keys: Vec<KeyRow>,
    publishers: Vec<PublisherRow>,
    created: Option<String>,
    error: Option<String>,
}

async fn keys_page(
    state: &AppState,
    visitor: &Visitor,
    created: Option<String>,
    error: Option<String>,
) -> PageResult {
    let now = Timestamp::now();
    let keys = state.registry.list_keys(&visitor.caller).await?;
    let publishers = state.registry.list_publishers(&visitor.caller).await?;
    render(&KeysPage {
        nav: nav(state, visitor, "keys"),
        keys: keys.iter().map(|k| KeyRow::of(k, now)).collect(),
        publishers: publishers.iter().map(PublisherRow::of).collect(),
        created,
        error,
    })
}

/// `/ui/keys`.
pub async fn keys(State(state): State<AppState>, visitor: Visitor) -> PageResult {
    require_admin(&visitor, "/ui/keys")?;
    keys_page(&state, &visitor, None, None).await
}

#[derive(Deserialize)]
pub struct CreateKeyForm {
    #[serde(default)]
    csrf: String,
    name: String,
    role: Role,
    #[serde(default)]
    allowed_package_name: String,
    #[serde(default)]
    allowed_name_prefix: String,
    #[serde(default)]
    allowed_category: String,
    /// Comma-separated id patterns.
    #[serde(default)]
    allowed_ids: String,
    /// `release`, `branch`, or empty for both.
    #[serde(default)]
    allowed_kind: String,
}

/// Creates a key and shows its token, once.
pub async fn create_key(
    State(state): State<AppState>,
    visitor: Visitor,
    Form(form): Form<CreateKeyForm>,
) -> PageResult {
    require_admin(&visitor, "/ui/keys")?;
    visitor.check_csrf(&form.csrf)?;
    let optional = |value: String| Some(value.trim().to_owned()).filter(|v| !v.is_empty());
    let request = NewKey {
        name: form.name,
        role: form.role,
        allowed_package_name: optional(form.allowed_package_name),
        allowed_name_prefix: optional(form.allowed_name_prefix),
        allowed_category: optional(form.allowed_category),
        allowed_ids: Some(
            form.allowed_ids
                .split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect::<Vec<_>>(),
        )
        .filter(|ids| !ids.is_empty()),
        allowed_kinds: match form.allowed_kind.as_str() {
            "" => None,
            kind => Some(vec![kind.parse().map_err(|why: String| {
                Page::error(axum::http::StatusCode::BAD_REQUEST, "Bad kind", &why)
            })?]),
        },
        expires_at: None,
    };
    match state.registry.create_key(&visitor.caller, request).await {
        Ok(created) => {
            let mut page = keys_page(&state, &visitor, Some(created.token), None)
                .await?
                .into_response();
            // The token is on this page only: never cache it.
            page.headers_mut().insert(
                axum::http::header::CACHE_CONTROL,
                "no-store".parse().expect("valid"),
            );
            Ok(Page::with_response(page))
        }
        Err(error) => keys_page(&state, &visitor, None, Some(error.message)).await,
    }
}

/// Revokes a key.
pub async fn revoke_key(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    require_admin(&visitor, "/ui/keys")?;
    visitor.check_csrf(&form.csrf)?;
    state.registry.revoke_key(&visitor.caller, &id).await?;
    Ok(Page::redirect("/ui/keys"))
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    nav: Nav,
    action: String,
    known_actions: &'static [&'static str],
    entries: Vec<AuditRow>,
    next_page: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct AuditQuery {
    #[serde(default)]
    action: String,
    cursor: Option<String>,
}

const KNOWN_ACTIONS: &[&str] = &[
    "artefact.upload",
    "artefact.upload_denied",
    "artefact.upload_conflict",
    "artefact.upload_invalid",
    "artefact.patch",
    "artefact.delete",
    "artefact.import",
    "key.create",
    "key.revoke",
    "remote.put",
    "remote.delete",
    "sync.mirror",
    "sync.delete",
    "sync.conflict",
    "sync.error",
];

/// `/ui/audit`.
pub async fn audit(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(query): Query<AuditQuery>,
) -> PageResult {
    require_admin(&visitor, "/ui/audit")?;
    let action = Some(query.action.clone()).filter(|a| !a.is_empty());
    let page = state
        .registry
        .audit_log(&visitor.caller, action, query.cursor, DEFAULT_PAGE)
        .await?;
    let next_page = page.next_cursor.map(|cursor| {
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("action", &query.action)
            .append_pair("cursor", &cursor)
            .finish();
        format!("/ui/audit?{q}")
    });
    render(&AuditPage {
        nav: nav(&state, &visitor, "audit"),
        action: query.action,
        known_actions: KNOWN_ACTIONS,
        entries: page.items.iter().map(AuditRow::of).collect(),
        next_page,
    })
}
