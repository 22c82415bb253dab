//! The one error type of the HTTP API and how it becomes the JSON error shape of `api.md`.
//!
//! Policy:
//! - Every handler and service function returns `Result<_, Error>`: a stable snake_case `code`
//!   and a sentence a person can act on. Handlers never build errors from strings of their own;
//!   they map what services return.
//! - Domain rules (`src/domain/`) know nothing of HTTP: they return their own typed refusals
//!   (`Refusal`), turned into statuses here, once.
//! - Storage errors are mapped here, once: a missing record is the caller's 404, a revision race
//!   a 409, an unreachable store a 503 that changed nothing, a full disk a 507.
//! - Internal failures are logged with their cause and answered with a generic 500, so no
//!   internals leak to clients.
//! - `anyhow` is for the edges that only report: the CLI, start-up and configuration, `gc` and
//!   the legacy importer (batch jobs that print their errors). Nothing that answers an HTTP
//!   request returns `anyhow`: the sync pass, which `POST /remotes/{name}/sync` runs, has its
//!   own `federation::PassError` (a store failure stays a 503, a peer failure is a 502).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use reliquary_client::types::{ErrorBody, FieldError};

use crate::domain::refusal::{Refusal, RefusalKind};
use crate::store::StoreError;

#[derive(Debug)]
pub struct Error {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub errors: Vec<FieldError>,
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            errors: Vec::new(),
        }
    }

    pub fn bad_request(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, code, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn not_found(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, code, message)
    }

    pub fn conflict(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, code, message)
    }

    pub fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large", message)
    }

    /// A `422` listing every violation found: at least one, so that a client can always show
    /// a field and a reason (a refusal of the whole tarball names the tarball).
    pub fn unprocessable(
        code: &'static str,
        message: impl Into<String>,
        mut errors: Vec<FieldError>,
    ) -> Self {
        let message = message.into();
        if errors.is_empty() {
            errors.push(FieldError {
                field: "tarball".into(),
                message: message.clone(),
            });
        }
        Self {
            errors,
            ..Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
        }
    }

    pub fn unavailable(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(StatusCode::SERVICE_UNAVAILABLE, code, message)
    }

    /// Logs the cause and answers a 500 that reveals nothing about it.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(%cause, "internal error");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "The registry hit an unexpected error; it has been logged.",
        )
    }

    pub fn artefact_not_found(id: &str) -> Self {
        Self::not_found("artefact_not_found", format!("No artefact `{id}` here."))
    }
}

impl From<Refusal> for Error {
    fn from(refusal: Refusal) -> Self {
        let status = match refusal.kind {
            RefusalKind::Conflict => StatusCode::CONFLICT,
            RefusalKind::Invalid => StatusCode::BAD_REQUEST,
            RefusalKind::NotFound => StatusCode::NOT_FOUND,
        };
        Self::new(status, refusal.code, refusal.message)
    }
}

impl From<StoreError> for Error {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::NotFound => Self::not_found("not_found", "No such record."),
            StoreError::RevisionMismatch => Self::conflict(
                "revision_mismatch",
                "The record changed while this request was in flight; retry it.",
            ),
            StoreError::BadCursor => Self::bad_request(
                "invalid_cursor",
                "That cursor was not issued by this registry; start again without one.",
            ),
            StoreError::Duplicate(what) => {
                Self::conflict("already_exists", format!("{what} already exists."))
            }
            StoreError::Unavailable(cause) => {
                tracing::warn!(%cause, "metadata store unavailable");
                Self::unavailable(
                    "metadata_store_unavailable",
                    "The metadata store is unreachable; nothing was changed. Retry shortly.",
                )
            }
            StoreError::Other(cause) => Self::internal(cause),
        }
    }
}

/// Whether an error, or anything it was caused by, is "no space left on device".
fn is_storage_full(error: &(dyn std::error::Error + 'static)) -> bool {
    let mut current = Some(error);
    while let Some(cause) = current {
        if let Some(io) = cause.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::StorageFull || io.raw_os_error() == Some(28) {
                return true;
            }
        }
        current = cause.source();
    }
    false
}

impl From<object_store::Error> for Error {
    fn from(error: object_store::Error) -> Self {
        if is_storage_full(&error) {
            tracing::error!(cause = %error, "blob store full");
            return Self::new(
                StatusCode::INSUFFICIENT_STORAGE,
                "insufficient_storage",
                "The blob store is out of space; nothing was changed. Free space or grow the volume, then retry.",
            );
        }
        match error {
            object_store::Error::NotFound { path, .. } => {
                Self::internal(format!("blob {path} is referenced but missing"))
            }
            other => {
                tracing::warn!(cause = %other, "blob store unavailable");
                Self::unavailable(
                    "blob_store_unavailable",
                    "The blob store is unreachable; nothing was changed. Retry shortly.",
                )
            }
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for Error {}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            code: self.code.to_owned(),
            message: self.message,
            errors: (self.status == StatusCode::UNPROCESSABLE_ENTITY || !self.errors.is_empty())
                .then_some(self.errors),
        };
        (self.status, Json(body)).into_response()
    }
}
