//! Logging in and out of the web UI.

use askama::Template;
use axum::extract::{Query, State};
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Form;
use serde::Deserialize;

use super::admin::CsrfForm;
use super::pages::{nav, render, Nav, PageResult};
use super::session::Sessions;
use super::{Page, Visitor};
use crate::app::AppState;

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

    #[test]
    fn only_local_ui_paths_are_followed_after_login() {
        assert_eq!(safe_next(Some("/ui/keys")), "/ui/keys");
        assert_eq!(safe_next(Some("https://evil.example")), "/ui/");
        assert_eq!(safe_next(Some("//evil.example/ui/")), "/ui/");
        assert_eq!(safe_next(None), "/ui/");
    }
}
