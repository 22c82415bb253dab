//! The page handlers and their templates.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Form;
use reliquary_client::types::{Artefact, NewKey, Origin, Role, Timestamp};
use serde::Deserialize;

use super::session::Sessions;
use super::views::{self, ArtefactRow, AuditRow, KeyRow, RemoteRow, SlotView};
use super::{Page, Visitor};
use crate::app::AppState;
use crate::domain::id::validate_id;
use crate::registry::{decode_cursor, DEFAULT_PAGE};
use crate::store::BrowseQuery;
use reliquary_client::jws::verify_slot;

type PageResult = Result<Page, Page>;

/// One word for a POSIX shell, whatever it holds: every value in a copyable snippet goes
/// through this (the Host header and stored names are not ours to trust).
fn shell_quote(value: &str) -> String {
    shlex::try_quote(value).map_or_else(
        // Only a NUL cannot be quoted; no valid id or URL holds one.
        |_| "''".to_owned(),
        std::borrow::Cow::into_owned,
    )
}

/// What every page's header shows.
pub struct Nav {
    pub registry: String,
    pub section: &'static str,
    pub user: Option<String>,
    pub csrf: String,
}

fn nav(state: &AppState, visitor: &Visitor, section: &'static str) -> Nav {
    Nav {
        registry: state.registry.signer.registry().to_owned(),
        section,
        user: visitor
            .caller
            .key()
            .map(|k| format!("{} ({})", k.name, k.role.as_str())),
        csrf: visitor.csrf(),
    }
}

fn render(template: &impl Template) -> PageResult {
    template
        .render()
        .map(Page::html)
        .map_err(|e| Page::from(crate::error::Error::internal(e)))
}

/// Admin pages send everyone else to the login form.
fn require_admin(visitor: &Visitor, here: &str) -> Result<(), Page> {
    if visitor.caller.is_admin() {
        Ok(())
    } else {
        Err(Page::redirect(&format!("/ui/login?next={here}")))
    }
}

#[derive(Template)]
#[template(path = "error.html")]
pub struct ErrorPage {
    nav: Nav,
    title: String,
    message: String,
}

impl ErrorPage {
    pub fn render(title: &str, message: &str) -> String {
        let page = ErrorPage {
            nav: Nav {
                registry: String::new(),
                section: "",
                user: None,
                csrf: String::new(),
            },
            title: title.to_owned(),
            message: message.to_owned(),
        };
        page.render().unwrap_or_else(|_| message.to_owned())
    }
}

#[derive(Template)]
#[template(path = "list.html")]
struct ListPage {
    nav: Nav,
    q: String,
    kind: String,
    category: String,
    rows: Vec<ArtefactRow>,
    next_page: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct ListQuery {
    #[serde(default)]
    q: String,
    #[serde(default)]
    kind: String,
    #[serde(default)]
    category: String,
    cursor: Option<String>,
}

/// `/ui/`: the artefact list, with search, filters and paging.
pub async fn list(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(query): Query<ListQuery>,
) -> PageResult {
    let kind = match query.kind.as_str() {
        "" => None,
        other => Some(
            other
                .parse()
                .map_err(|why: String| Page::error(StatusCode::BAD_REQUEST, "Bad filter", &why))?,
        ),
    };
    let browse = BrowseQuery {
        q: Some(query.q.clone()).filter(|q| !q.is_empty()),
        kind,
        category: Some(query.category.clone()).filter(|c| !c.is_empty()),
        after: query.cursor.as_deref().map(decode_cursor).transpose()?,
        limit: DEFAULT_PAGE,
    };
    let page = state.registry.browse(&visitor.caller, browse).await?;
    let now = Timestamp::now();
    let next_page = page.next_cursor.map(|cursor| {
        let q = form_urlencoded::Serializer::new(String::new())
            .append_pair("q", &query.q)
            .append_pair("kind", &query.kind)
            .append_pair("category", &query.category)
            .append_pair("cursor", &cursor)
            .finish();
        format!("/ui/?{q}")
    });
    render(&ListPage {
        nav: nav(&state, &visitor, "artefacts"),
        rows: page
            .items
            .iter()
            .map(|doc| ArtefactRow::of(doc, now))
            .collect(),
        q: query.q,
        kind: query.kind,
        category: query.category,
        next_page,
    })
}

#[derive(Template)]
#[template(path = "artefact.html")]
struct ArtefactPage {
    nav: Nav,
    doc: Artefact,
    chip: &'static str,
    licence: String,
    description: String,
    category: String,
    changed_ago: String,
    origin: Option<Origin>,
    slots: Vec<SlotView>,
    ensure_snippet: String,
    curl_snippet: String,
}

/// `/ui/artefacts/{id}`: one artefact with every slot.
pub async fn artefact(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(id): Path<String>,
    headers: HeaderMap,
) -> PageResult {
    let base = headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .map_or_else(|| "<registry>".to_owned(), |host| format!("http://{host}"));
    validate_id(&id).map_err(|why| Page::error(StatusCode::BAD_REQUEST, "Bad id", &why))?;
    let doc = state.registry.artefact(&visitor.caller, &id).await?;
    let ring = match &doc.origin {
        Some(_) => Some(state.federation.key_ring().await?),
        None => None,
    };
    let own_keys = state.registry.signer.trusted_keys();
    let path_id = views::path_id(&doc.id);
    let slots = doc
        .tarballs
        .iter()
        .map(|(arch, slot)| {
            // The one slot check the sync worker and the client run too: a local slot against
            // this registry's keys, a mirrored one against the keys pinned for its origin
            // through the remote it came by; the payload must say what the document says.
            let verdict = match (&doc.origin, &ring) {
                (Some(origin), Some(ring)) => ring
                    .keys_for(&origin.remote, &origin.registry)
                    .map_err(|_| ())
                    .and_then(|keys| {
                        verify_slot(keys, &doc, arch, Some(&origin.registry)).map_err(|_| ())
                    }),
                _ => verify_slot(
                    &own_keys,
                    &doc,
                    arch,
                    Some(state.registry.signer.registry()),
                )
                .map_err(|_| ()),
            };
            let (status, class) = match (verdict, &doc.origin) {
                (Ok(_), None) => ("verified", "present"),
                (Ok(_), Some(_)) => ("verified (origin's key)", "present"),
                (Err(()), _) => ("invalid", "missing"),
            };
            SlotView {
                architecture: arch.clone(),
                version: slot.version.clone(),
                size: views::human_bytes(slot.size),
                sha256: slot.sha256.clone(),
                sha256_short: slot.sha256.chars().take(12).collect(),
                uploaded_at: slot.uploaded_at.to_string(),
                signature_status: status,
                signature_class: class,
                download: format!("/artefacts/{path_id}/tarball?architecture={arch}"),
            }
        })
        .collect();
    render(&ArtefactPage {
        nav: nav(&state, &visitor, "artefacts"),
        chip: views::chip(&doc),
        licence: doc.licence.clone().unwrap_or_else(|| "—".into()),
        description: doc.description.clone().unwrap_or_default(),
        category: doc.category.clone().unwrap_or_else(|| "—".into()),
        changed_ago: views::ago(doc.data_updated_at, Timestamp::now()),
        origin: doc.origin.clone(),
        slots,
        ensure_snippet: format!(
            "reliquary ensure {} --arch auto --registry {}",
            shell_quote(&doc.id),
            shell_quote(&base)
        ),
        curl_snippet: format!(
            "curl -fL -o {} -H \"Authorization: Bearer $RELIQUARY_TOKEN\" {}",
            shell_quote(&format!("{}.tgz", doc.package_name.replace('/', "-"))),
            shell_quote(&format!(
                "{base}/artefacts/{path_id}/tarball?architecture=x64"
            ))
        ),
        doc,
    })
}

#[derive(Template)]
#[template(path = "remotes.html")]
struct RemotesPage {
    nav: Nav,
    remotes: Vec<RemoteRow>,
    flash: Option<String>,
}

#[derive(Deserialize, Default)]
pub struct FlashQuery {
    flash: Option<String>,
}

/// `/ui/remotes`: federation health.
pub async fn remotes(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(query): Query<FlashQuery>,
) -> PageResult {
    require_admin(&visitor, "/ui/remotes")?;
    let now = Timestamp::now();
    let remotes = state.federation.list_remotes(&visitor.caller).await?;
    render(&RemotesPage {
        nav: nav(&state, &visitor, "remotes"),
        remotes: remotes.iter().map(|r| RemoteRow::of(r, now)).collect(),
        flash: query.flash,
    })
}

#[derive(Deserialize)]
pub struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

/// "Sync now".
pub async fn sync_remote(
    State(state): State<AppState>,
    visitor: Visitor,
    Path(name): Path<String>,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    visitor.check_csrf(&form.csrf)?;
    let message = match state.federation.sync_remote(&visitor.caller, &name).await {
        Ok(s) => format!(
            "{name}: mirrored {}, deleted {}, conflicts {}, skipped {}",
            s.mirrored, s.deleted, s.conflicts, s.skipped
        ),
        Err(error) => format!("{name}: {}", error.message),
    };
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair("flash", &message)
        .finish();
    Ok(Page::redirect(&format!("/ui/remotes?{q}")))
}

#[derive(Template)]
#[template(path = "keys.html")]
struct KeysPage {
    nav: Nav,
    keys: Vec<KeyRow>,
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
    render(&KeysPage {
        nav: nav(state, visitor, "keys"),
        keys: keys.iter().map(|k| KeyRow::of(k, now)).collect(),
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

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    nav: Nav,
    reason: String,
    error: Option<String>,
    next: String,
}

#[derive(Deserialize, Default)]
pub struct NextQuery {
    next: Option<String>,
}

/// Only local paths under `/ui/` are followed after logging in (no open redirects).
fn safe_next(next: Option<&str>) -> String {
    next.filter(|n| n.starts_with("/ui/") && !n.starts_with("//") && !n.contains('\\'))
        .unwrap_or("/ui/")
        .to_owned()
}

pub async fn login_form(
    State(state): State<AppState>,
    visitor: Visitor,
    Query(query): Query<NextQuery>,
) -> PageResult {
    render(&LoginPage {
        nav: nav(&state, &visitor, ""),
        reason: "Admin pages and branch artefacts need a token.".into(),
        error: None,
        next: safe_next(query.next.as_deref()),
    })
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    next: Option<String>,
}

/// Whether a browser says this request came from another site: an `Origin` whose host is not
/// the one addressed, or `Sec-Fetch-Site: cross-site` (login CSRF plants the attacker's
/// session in the victim's browser). Requests without either header are not from a browser
/// form on another site.
fn is_cross_origin(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if text("sec-fetch-site") == Some("cross-site") {
        return true;
    }
    match (text("origin"), text("host")) {
        (Some(origin), Some(host)) => {
            let origin_host = origin
                .split_once("://")
                .map_or(origin, |(_, rest)| rest)
                .trim_end_matches('/');
            !origin_host.eq_ignore_ascii_case(host)
        }
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Checks the token once and starts a session; the cookie never holds the token.
pub async fn login(
    State(state): State<AppState>,
    visitor: Visitor,
    headers: HeaderMap,
    Form(form): Form<LoginForm>,
) -> PageResult {
    if is_cross_origin(&headers) {
        return Err(Page::error(
            StatusCode::FORBIDDEN,
            "Cross-site login refused",
            "This login form was posted from another site. Open the registry's own /ui/login page and sign in there.",
        ));
    }
    let next = safe_next(form.next.as_deref());
    match state.registry.authenticate(Some(form.token.trim())).await {
        Ok(caller) if caller.key.is_some() => {
            let id = state
                .sessions
                .create(crate::secrets::token_hash(form.token.trim()));
            let secure = headers
                .get("x-forwarded-proto")
                .is_some_and(|p| p == "https");
            let mut response = Page::redirect(&next).into_response();
            response.headers_mut().insert(
                SET_COOKIE,
                Sessions::cookie(Some(&id), secure)
                    .parse()
                    .expect("valid cookie"),
            );
            Ok(Page::with_response(response))
        }
        _ => {
            let page = LoginPage {
                nav: nav(&state, &visitor, ""),
                reason: "Admin pages and branch artefacts need a token.".into(),
                error: Some("That token is not valid here (unknown, revoked or expired).".into()),
                next,
            };
            let body = page
                .render()
                .map_err(|e| Page::from(crate::error::Error::internal(e)))?;
            Ok(Page::with_response(
                (StatusCode::UNAUTHORIZED, axum::response::Html(body)).into_response(),
            ))
        }
    }
}

pub async fn logout(
    State(state): State<AppState>,
    visitor: Visitor,
    Form(form): Form<CsrfForm>,
) -> PageResult {
    visitor.check_csrf(&form.csrf)?;
    if let Some((id, _)) = &visitor.session {
        state.sessions.remove(id);
    }
    let mut response = Page::redirect("/ui/").into_response();
    response.headers_mut().insert(
        SET_COOKIE,
        Sessions::cookie(None, false).parse().expect("valid cookie"),
    );
    Ok(Page::with_response(response))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn nav() -> Nav {
        Nav {
            registry: "test".into(),
            section: "artefacts",
            user: None,
            csrf: String::new(),
        }
    }

    #[test]
    fn descriptions_render_as_text_never_as_markup() {
        let now = Timestamp::now();
        let doc = Artefact {
            id: "evil@1".into(),
            kind: reliquary_client::types::Kind::Release,
            package_name: "evil".into(),
            version: "1.0.0".into(),
            licence: None,
            description: Some("<script>alert(1)</script>".into()),
            category: Some("\"><img src=x onerror=alert(1)>".into()),
            tarballs: BTreeMap::new(),
            origin: None,
            created_at: now,
            updated_at: now,
            data_updated_at: now,
            revision: 1,
            seq: 1,
        };
        let page = ArtefactPage {
            nav: nav(),
            chip: "release",
            licence: "—".into(),
            description: doc.description.clone().unwrap(),
            category: doc.category.clone().unwrap(),
            changed_ago: "just now".into(),
            origin: None,
            slots: vec![],
            ensure_snippet: String::new(),
            curl_snippet: String::new(),
            doc: doc.clone(),
        };
        let html = page.render().unwrap();
        assert!(!html.contains("<script>alert(1)</script>"), "{html}");
        assert!(html.contains("alert(1)"), "shown as text");
        assert!(!html.contains("<img src=x"));

        let list = ListPage {
            nav: nav(),
            q: "\"><script>x</script>".into(),
            kind: String::new(),
            category: String::new(),
            rows: vec![ArtefactRow::of(&doc, now)],
            next_page: None,
        };
        let html = list.render().unwrap();
        assert!(
            !html.contains("<script>x</script>") && !html.contains("<img src=x"),
            "{html}"
        );
    }

    #[test]
    fn only_local_ui_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/ui/keys")), "/ui/keys");
        assert_eq!(safe_next(Some("https://evil.example")), "/ui/");
        assert_eq!(safe_next(Some("//evil.example/ui/")), "/ui/");
        assert_eq!(safe_next(None), "/ui/");
    }
}
