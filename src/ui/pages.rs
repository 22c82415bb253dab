//! The page helpers every page shares, and the public pages: the artefact list and one
//! artefact. Admin pages are in `admin`, logging in in `login`.

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use reliquary_client::types::{Artefact, Kind, Origin, Timestamp};
use serde::Deserialize;

use super::views::{self, ArtefactRow, HistoryRow, SlotView};
use super::{Page, Visitor};
use crate::app::AppState;
use crate::domain::id::validate_id;
use crate::domain::lifecycle::history_items;
use crate::registry::{decode_cursor, DEFAULT_PAGE};
use crate::store::BrowseQuery;
use reliquary_client::jws::verify_slot;

pub(super) type PageResult = Result<Page, Page>;

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

pub(super) fn nav(state: &AppState, visitor: &Visitor, section: &'static str) -> Nav {
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

pub(super) fn render(template: &impl Template) -> PageResult {
    template
        .render()
        .map(Page::html)
        .map_err(|e| Page::from(crate::error::Error::internal(e)))
}

/// Admin pages send everyone else to the login form.
pub(super) fn require_admin(visitor: &Visitor, here: &str) -> Result<(), Page> {
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
    history: Vec<HistoryRow>,
    /// The versions a rollback may go back to, for the admin's form (empty: no form).
    rollback_versions: Vec<String>,
    rollback_architectures: Vec<String>,
    last_downloaded: String,
    retention: Option<String>,
    flash: Option<String>,
    /// The id as one path segment, for the form's action.
    path_id: String,
    ensure_snippet: String,
    curl_snippet: String,
}

/// `/ui/artefacts/{id}`: one artefact with every slot and their history.
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
                published_by: slot.published_by.as_ref().map_or_else(
                    || "—".to_owned(),
                    |by| format!("{} ({})", by.key_name, by.key_id),
                ),
                published_oidc: slot
                    .published_by
                    .as_ref()
                    .and_then(|by| by.oidc.as_ref())
                    .map(views::oidc_line),
            }
        })
        .collect();
    let history: Vec<HistoryRow> = history_items(&doc, None)
        .iter()
        .map(HistoryRow::of)
        .collect();
    let may_roll_back = visitor.caller.is_admin() && doc.origin.is_none();
    let mut rollback_versions: Vec<String> = Vec::new();
    if may_roll_back {
        for row in &history {
            if !rollback_versions.contains(&row.version) {
                rollback_versions.push(row.version.clone());
            }
        }
    }
    let rollback_architectures = doc.history.keys().cloned().collect();
    let last_downloaded = state
        .registry
        .last_downloaded(&doc.id)
        .await?
        .map_or_else(|| "not recorded".to_owned(), |at| at.to_string());
    let retention = match (doc.kind, state.registry.branch_retention) {
        (Kind::Branch, Some(period)) => Some(format!(
            "removed after {} with neither a new build nor a download",
            humantime::format_duration(period)
        )),
        _ => None,
    };
    render(&ArtefactPage {
        nav: nav(&state, &visitor, "artefacts"),
        history,
        rollback_versions,
        rollback_architectures,
        last_downloaded,
        retention,
        flash: visitor.take_flash(&state),
        path_id: path_id.clone(),
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
            deprecated: None,
            history: Default::default(),
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
            history: vec![HistoryRow {
                architecture: "x64".into(),
                version: "1.0.0".into(),
                sha256: "a".repeat(64),
                sha256_short: "a".repeat(12),
                uploaded_at: now.to_string(),
                replaced_at: now.to_string(),
                yanked: Some(("<script>alert(2)</script>".into(), now.to_string())),
            }],
            rollback_versions: vec!["1.0.0".into()],
            rollback_architectures: vec!["x64".into()],
            last_downloaded: "not recorded".into(),
            retention: None,
            flash: Some("<img src=x onerror=alert(3)>".into()),
            path_id: "acme%401".into(),
            ensure_snippet: String::new(),
            curl_snippet: String::new(),
            doc: doc.clone(),
        };
        let html = page.render().unwrap();
        assert!(!html.contains("<script>alert(1)</script>"), "{html}");
        assert!(
            !html.contains("<script>alert(2)</script>"),
            "a yank reason is text"
        );
        assert!(html.contains("alert(2)") && html.contains("alert(3)"));
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
}
