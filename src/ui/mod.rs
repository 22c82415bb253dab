//! The web UI: server-rendered pages (askama templates from `ui/templates`, compiled into the
//! binary) over the same registry operations as the API, so roles and the federation filter
//! apply exactly as they do there. Static assets come from `ui/static`, also compiled in: the UI
//! works air-gapped.

mod admin;
mod login;
mod pages;
pub mod session;
pub mod views;

use axum::extract::FromRequestParts;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE, COOKIE};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::app::AppState;
use crate::auth::Caller;
use crate::error::Error;
use session::{Session, COOKIE as SESSION_COOKIE};

use axum::http::{header, HeaderValue};
use tower_http::set_header::SetResponseHeaderLayer;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/ui", get(|| async { Redirect::permanent("/ui/") }))
        .route("/ui/", get(pages::list))
        .route("/ui/artefacts/{id}", get(pages::artefact))
        .route("/ui/artefacts/{id}/rollback", post(admin::rollback))
        .route("/ui/remotes", get(admin::remotes))
        .route("/ui/remotes/{name}/sync", post(admin::sync_remote))
        .route("/ui/keys", get(admin::keys).post(admin::create_key))
        .route("/ui/keys/{id}/revoke", post(admin::revoke_key))
        .route("/ui/audit", get(admin::audit))
        .route("/ui/login", get(login::login_form).post(login::login))
        .route("/ui/logout", post(login::logout))
        .route(
            "/ui/static/style.css",
            get(|| static_asset("text/css", include_str!("../../ui/static/style.css"))),
        )
        .route(
            "/ui/static/app.js",
            get(|| static_asset("text/javascript", include_str!("../../ui/static/app.js"))),
        )
        .layer(SetResponseHeaderLayer::overriding(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_FRAME_OPTIONS,
            HeaderValue::from_static("DENY"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::X_CONTENT_TYPE_OPTIONS,
            HeaderValue::from_static("nosniff"),
        ))
        .layer(SetResponseHeaderLayer::overriding(
            header::REFERRER_POLICY,
            HeaderValue::from_static("same-origin"),
        ))
}

/// Scripts and styles only from our own static files (the templates hold no inline script or
/// style), never framed (clickjacking), forms only to ourselves.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

async fn static_asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (CONTENT_TYPE, content_type),
            (CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}

/// The visitor of a page: who they are (from the session cookie, if any) and their session.
pub struct Visitor {
    pub caller: Caller,
    pub session: Option<(String, Session)>,
}

impl Visitor {
    pub fn csrf(&self) -> String {
        self.session
            .as_ref()
            .map(|(_, s)| s.csrf.clone())
            .unwrap_or_default()
    }

    /// Keeps `message` for this visitor's next page.
    pub fn flash(&self, state: &AppState, message: String) {
        if let Some((id, _)) = &self.session {
            state.sessions.set_flash(id, message);
        }
    }

    /// The message the last form left for this page, once.
    pub fn take_flash(&self, state: &AppState) -> Option<String> {
        self.session
            .as_ref()
            .and_then(|(id, _)| state.sessions.take_flash(id))
    }

    /// Fails unless `token` is this session's CSRF token.
    pub fn check_csrf(&self, token: &str) -> Result<(), Page> {
        match &self.session {
            Some((_, session)) if !token.is_empty() && session.csrf == token => Ok(()),
            _ => Err(Page::error(
                StatusCode::FORBIDDEN,
                "Forbidden",
                "The form expired or did not come from this site; reload the page and try again.",
            )),
        }
    }
}

impl FromRequestParts<AppState> for Visitor {
    type Rejection = Page;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Page> {
        let session_id = parts
            .headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(name, _)| *name == SESSION_COOKIE)
            .map(|(_, value)| value.to_owned());
        let session = session_id.and_then(|id| state.sessions.get(&id).map(|s| (id, s)));
        let caller = match &session {
            Some((_, s)) => match crate::auth::authenticate_hash(
                state.registry.store.as_ref(),
                &s.token_sha256,
                state.registry.clock.now(),
            )
            .await
            {
                Ok(caller) => caller,
                // A revoked or expired key ends its sessions too: the visitor is anonymous again.
                Err(error) if error.status == StatusCode::UNAUTHORIZED => Caller::default(),
                // A store outage is not a logout: the page says the store is unreachable.
                Err(error) => return Err(Page::from(error)),
            },
            None => Caller::default(),
        };
        let session = session.filter(|_| caller.key.is_some());
        Ok(Visitor { caller, session })
    }
}

/// A rendered page or an error page; handlers return `Result<Page, Page>`.
pub struct Page(Box<Response>);

impl Page {
    pub fn html(body: String) -> Self {
        Self(Box::new(Html(body).into_response()))
    }

    pub fn redirect(to: &str) -> Self {
        Self(Box::new(Redirect::to(to).into_response()))
    }

    pub fn error(status: StatusCode, title: &str, message: &str) -> Self {
        let body = pages::ErrorPage::render(title, message);
        Self(Box::new((status, Html(body)).into_response()))
    }

    pub fn with_response(response: Response) -> Self {
        Self(Box::new(response))
    }
}

impl IntoResponse for Page {
    fn into_response(self) -> Response {
        *self.0
    }
}

/// API errors become pages: a missing session sends the visitor to the login form.
impl From<Error> for Page {
    fn from(error: Error) -> Self {
        match error.status {
            StatusCode::UNAUTHORIZED => Page::redirect("/ui/login"),
            status => {
                let title = status.canonical_reason().unwrap_or("Error");
                Page::error(status, title, &error.message)
            }
        }
    }
}
