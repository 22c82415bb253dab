//! Extractors that turn request parts into validated values, answering the JSON error shape on
//! failure (axum's own rejections are plain text).

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::app::AppState;
use crate::auth::Caller;
use crate::domain::arch::validate_architecture;
use crate::domain::id::validate_id;
use crate::error::Error;

impl FromRequestParts<AppState> for Caller {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Error> {
        let token = match parts.headers.get(AUTHORIZATION) {
            None => None,
            Some(value) => {
                let value = value.to_str().map_err(|_| {
                    Error::unauthorized("The Authorization header is not valid text.")
                })?;
                let token = value
                    .strip_prefix("Bearer ")
                    .or_else(|| value.strip_prefix("bearer "))
                    .ok_or_else(|| Error::unauthorized("Use `Authorization: Bearer <token>`."))?;
                Some(token.trim())
            }
        };
        let mut caller = state.registry.authenticate(token).await?;
        caller.remote_addr = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| addr.ip().to_string());
        Ok(caller)
    }
}

/// The `{id}` path segment, percent-decoded and validated.
pub struct ArtefactId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ArtefactId {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        let Path(params) = Path::<Vec<(String, String)>>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::bad_request("invalid_id", e.body_text()))?;
        let id = params
            .into_iter()
            .find(|(name, _)| name == "id")
            .map(|(_, value)| value)
            .ok_or_else(|| Error::bad_request("invalid_id", "The path has no artefact id."))?;
        validate_id(&id).map_err(|why| {
            Error::bad_request("invalid_id", format!("`{id}` is not a valid id: {why}."))
        })?;
        Ok(Self(id))
    }
}

/// Validates an architecture name, answering `400 invalid_architecture`.
pub fn architecture(value: Option<String>) -> Result<String, Error> {
    let arch = value.unwrap_or_else(|| crate::domain::arch::NOARCH.to_owned());
    validate_architecture(&arch).map_err(|why| Error::bad_request("invalid_architecture", why))?;
    Ok(arch)
}

/// `Query<T>` with the JSON error shape.
pub struct ApiQuery<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Error> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(value)| Self(value))
            .map_err(|e| Error::bad_request("invalid_query", e.body_text()))
    }
}

/// `Json<T>` with the JSON error shape; the message carries serde's line and column.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = Error;

    async fn from_request(request: Request, state: &S) -> Result<Self, Error> {
        axum::Json::<T>::from_request(request, state)
            .await
            .map(|axum::Json(value)| Self(value))
            .map_err(|e| {
                if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                    Error::too_large("The JSON body is larger than this endpoint accepts (64 KiB).")
                } else {
                    Error::bad_request("invalid_json", e.body_text())
                }
            })
    }
}

/// A JSON body not read yet: the handler decides authorisation first, then `parse`s it, so
/// that nobody without the right to call an endpoint gets as far as its body.
pub struct LaterJson<T>(Request, std::marker::PhantomData<T>);

impl<T: Send, S: Send + Sync> FromRequest<S> for LaterJson<T> {
    type Rejection = Error;

    async fn from_request(request: Request, _state: &S) -> Result<Self, Error> {
        Ok(Self(request, std::marker::PhantomData))
    }
}

impl<T: DeserializeOwned> LaterJson<T> {
    pub async fn parse(self) -> Result<T, Error> {
        ApiJson::<T>::from_request(self.0, &())
            .await
            .map(|ApiJson(value)| value)
    }
}
