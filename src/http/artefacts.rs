//! Handlers for `/artefacts`: parse, call the registry, shape the answer.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Multipart, Request, State};
use axum::http::header::{
    ACCEPT_RANGES, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_RANGE, CONTENT_TYPE, ETAG, IF_NONE_MATCH,
    IF_RANGE, LOCATION, RANGE,
};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures::TryStreamExt;
use serde::Deserialize;

use super::conditional::{none_match, parse_range, RangeRequest};
use super::extract::{architecture, ApiQuery, ArtefactId, LaterJson};
use crate::auth::Caller;
use crate::blobs::BlobBody;
use crate::edge::Edge;
use crate::error::{Error, Result};
use crate::registry::Registry;
use crate::registry::{decode_cursor, ArtefactPatch, UploadRequest, DEFAULT_PAGE, MAX_PAGE};
use crate::store::BrowseQuery;

#[derive(Deserialize)]
pub struct UploadQuery {
    architecture: Option<String>,
    kind: Option<String>,
    category: Option<String>,
    #[serde(default)]
    force: bool,
}

/// `POST /artefacts/npm/{id}`: the raw body or the multipart field `tarball`.
pub async fn upload(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    ArtefactId(id): ArtefactId,
    ApiQuery(query): ApiQuery<UploadQuery>,
    request: Request,
) -> Result<Response> {
    let kind = match query.kind.as_deref() {
        None => reliquary_client::types::Kind::Release,
        Some(kind) => kind
            .parse()
            .map_err(|why: String| Error::bad_request("invalid_kind", why))?,
    };
    if let Some(category) = &query.category {
        validate_category(category)?;
    }
    let mut upload = UploadRequest {
        id,
        architecture: architecture(query.architecture)?,
        kind,
        category: query.category,
        force: query.force,
        attestation: None,
        imported: None,
    };
    // Authentication and authorisation are decided before a byte of the body is read.
    registry.admit_upload(&caller, &upload).await?;
    if let Some(length) = content_length(request.headers()) {
        if length > registry.body_limits.max_bytes {
            return Err(Error::too_large(format!(
                "The upload is {length} bytes; this registry accepts at most {} bytes.",
                registry.body_limits.max_bytes
            )));
        }
    }
    let uploaded = if is_multipart(request.headers()) {
        let mut skipped = 0usize;
        let mut multipart = Multipart::from_request(request, &registry)
            .await
            .map_err(|e| Error::bad_request("invalid_multipart", e.body_text()))?;
        loop {
            let field = multipart
                .next_field()
                .await
                .map_err(|e| Error::bad_request("invalid_multipart", e.body_text()))?
                .ok_or_else(|| {
                    Error::bad_request(
                        "missing_tarball",
                        "The multipart body has no `tarball` field.",
                    )
                })?;
            match field.name() {
                Some("tarball") => break registry.upload(&caller, upload, field).await?,
                Some("attestation") => upload.attestation = Some(read_attestation(field).await?),
                _ => {
                    // Other fields are skipped, up to a small total: skipping still reads them.
                    skipped = skip_field(field, skipped).await?;
                }
            }
        }
    } else {
        registry
            .upload(&caller, upload, request.into_body().into_data_stream())
            .await?
    };
    let status = if uploaded.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(uploaded.doc)).into_response())
}

/// `GET /artefacts/{id}`.
pub async fn get(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    ArtefactId(id): ArtefactId,
    headers: HeaderMap,
) -> Result<Response> {
    let served = registry.served(&caller, &id).await?;
    // A host whose cached copy is current asks for the document only: that is a use too.
    registry.record_download(&id);
    let etag = format!("\"{}\"", served.doc.revision);
    if none_match(header(&headers, IF_NONE_MATCH), &etag) {
        return Ok((StatusCode::NOT_MODIFIED, [(ETAG, etag)]).into_response());
    }
    let json = HeaderValue::from_static("application/json");
    Ok(([(ETAG, value(&etag)), (CONTENT_TYPE, json)], served.json).into_response())
}

#[derive(Deserialize)]
pub struct TarballQuery {
    architecture: Option<String>,
}

/// `GET /artefacts/{id}/tarball?architecture=`: streamed, with 304 and single-range 206.
pub async fn tarball(
    State(registry): State<Arc<Registry>>,
    State(edge): State<Arc<Edge>>,
    caller: Caller,
    ArtefactId(id): ArtefactId,
    ApiQuery(query): ApiQuery<TarballQuery>,
    headers: HeaderMap,
) -> Result<Response> {
    let requested = architecture(query.architecture)?;
    let (doc, resolved, slot) = registry.resolve_tarball(&caller, &id, &requested).await?;
    registry.record_download(&id);
    let etag = format!("\"sha256:{}\"", slot.sha256);
    let mut response_headers = HeaderMap::new();
    response_headers.insert(ETAG, value(&etag));
    response_headers.insert("x-artefact-architecture", value(&resolved));
    response_headers.insert("x-artefact-version", value(&slot.version));
    response_headers.insert(ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    if none_match(header(&headers, IF_NONE_MATCH), &etag) {
        return Ok((StatusCode::NOT_MODIFIED, response_headers).into_response());
    }
    let filename = attachment_name(&doc.package_name, &slot.version, "tgz");
    if let Some(url) = registry
        .download_redirect(&caller, &slot, &filename)
        .await?
    {
        // The bucket carries the bytes (ranges included); the URL expires, so nothing may
        // cache this answer.
        registry.metrics.tarball_download("redirect");
        response_headers.insert(LOCATION, value(&url));
        response_headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
        return Ok((StatusCode::FOUND, response_headers).into_response());
    }
    registry.metrics.tarball_download("stream");
    // A Range is honoured only if the client's copy is still the current one.
    let range_header = match header(&headers, IF_RANGE) {
        Some(if_range) if if_range.trim() != etag => None,
        _ => header(&headers, RANGE),
    };
    let (status, range) = match parse_range(range_header, slot.size) {
        RangeRequest::Full => (StatusCode::OK, None),
        RangeRequest::Partial(range) => (StatusCode::PARTIAL_CONTENT, Some(range)),
        RangeRequest::Unsatisfiable => {
            response_headers.insert(CONTENT_RANGE, value(&format!("bytes */{}", slot.size)));
            return Ok((StatusCode::RANGE_NOT_SATISFIABLE, response_headers).into_response());
        }
    };
    let blob = registry.open_blob(&slot.sha256, range.clone()).await?;
    if blob.size != slot.size {
        // Serving it would send a short (or long) body under a Content-Length computed from
        // the slot: the client would hang or be cut. Refuse, loudly: someone must repair it.
        tracing::error!(
            id = %doc.id, arch = %resolved, sha256 = %slot.sha256,
            stored = blob.size, expected = slot.size,
            "BLOB CORRUPT: the stored blob's length differs from its slot"
        );
        return Err(Error::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "blob_corrupt",
            "The stored tarball is damaged (its length differs from its slot); the operator has been alerted in the log.",
        ));
    }
    let length = match &range {
        Some(range) => {
            response_headers.insert(
                CONTENT_RANGE,
                value(&format!(
                    "bytes {}-{}/{}",
                    range.start,
                    range.end - 1,
                    blob.size
                )),
            );
            range.end - range.start
        }
        None => blob.size,
    };
    response_headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/gzip"));
    response_headers.insert(CONTENT_LENGTH, value(&length.to_string()));
    download_headers(&mut response_headers, &filename);
    tracing::debug!(id = %doc.id, arch = %resolved, bytes = length, "serving tarball");
    let body = match blob.body {
        // Charged to the budget too: a whole small blob read for a stalled reader is memory
        // that reader holds.
        BlobBody::InMemory(bytes) => {
            let size = bytes.len();
            Body::from_stream(edge.budgeted(futures::stream::iter([Ok(bytes)]), size))
        }
        BlobBody::Streaming(stream) => Body::from_stream(edge.budgeted(
            stream.map_err(std::io::Error::other),
            crate::blobs::MAX_STREAM_CHUNK,
        )),
    };
    Ok((status, response_headers, body).into_response())
}

/// The longest a change-feed request may be held open.
const MAX_WAIT_SECONDS: u64 = 60;

#[derive(Deserialize)]
pub struct ListQuery {
    q: Option<String>,
    kind: Option<String>,
    category: Option<String>,
    limit: Option<usize>,
    cursor: Option<String>,
    since: Option<i64>,
    /// Sync mode: seconds to hold an empty answer until something changes (at most 60).
    wait: Option<u64>,
}

/// `GET /artefacts`: browse mode, or sync mode with `since`.
pub async fn list(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<Response> {
    let limit = query.limit.unwrap_or(DEFAULT_PAGE);
    if !(1..=MAX_PAGE).contains(&limit) {
        return Err(Error::bad_request(
            "invalid_query",
            format!("`limit` must be between 1 and {MAX_PAGE}."),
        ));
    }
    if let Some(since) = query.since {
        if since < 0 {
            return Err(Error::bad_request(
                "invalid_query",
                "`since` must be 0 or more.",
            ));
        }
        let wait = match query.wait {
            Some(seconds) if seconds > MAX_WAIT_SECONDS => {
                return Err(Error::bad_request(
                    "invalid_query",
                    format!("`wait` is at most {MAX_WAIT_SECONDS} seconds."),
                ))
            }
            other => other.map(std::time::Duration::from_secs),
        };
        let page = registry.changes(&caller, since, limit, wait).await?;
        return Ok(Json(page).into_response());
    }
    let kind = query
        .kind
        .as_deref()
        .map(str::parse)
        .transpose()
        .map_err(|why: String| Error::bad_request("invalid_kind", why))?;
    let after = query.cursor.as_deref().map(decode_cursor).transpose()?;
    let browse = BrowseQuery {
        q: query.q.filter(|q| !q.is_empty()),
        kind,
        category: query.category.filter(|c| !c.is_empty()),
        after,
        limit,
    };
    Ok(Json(registry.browse(&caller, browse).await?).into_response())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct PatchBody {
    category: Option<String>,
    description: Option<String>,
    /// A message deprecates the artefact; `""` clears the deprecation.
    deprecated: Option<String>,
}

/// `PATCH /artefacts/{id}`.
pub async fn patch(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    ArtefactId(id): ArtefactId,
    body: LaterJson<PatchBody>,
) -> Result<Json<reliquary_client::types::Artefact>> {
    registry
        .audit
        .admit(&caller, "artefact.patch", |c| c.require_publish(&id))
        .await?;
    let body = body.parse().await?;
    if let Some(category) = body.category.as_deref().filter(|c| !c.is_empty()) {
        validate_category(category)?;
    }
    let patch = ArtefactPatch {
        category: body.category,
        description: body.description,
        deprecated: body.deprecated,
    };
    Ok(Json(registry.patch(&caller, &id, patch).await?))
}

/// `DELETE /artefacts/{id}`.
pub async fn delete(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    ArtefactId(id): ArtefactId,
) -> Result<Json<reliquary_client::types::Tombstone>> {
    Ok(Json(registry.delete(&caller, &id).await?))
}

/// `DELETE /artefacts/{id}/tarballs/{arch}`.
pub async fn delete_slot(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    ArtefactId(id): ArtefactId,
    axum::extract::Path((_, arch)): axum::extract::Path<(String, String)>,
) -> Result<Json<reliquary_client::types::Artefact>> {
    let arch = architecture(Some(arch))?;
    Ok(Json(registry.delete_slot(&caller, &id, &arch).await?))
}

/// The largest provenance bundle kept with a slot.
const MAX_ATTESTATION_BYTES: usize = 64 * 1024;

/// Reads the multipart `attestation` field, which must come before `tarball`.
async fn read_attestation(mut field: axum::extract::multipart::Field<'_>) -> Result<bytes::Bytes> {
    let mut bundle = bytes::BytesMut::new();
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| Error::bad_request("invalid_multipart", e.body_text()))?
    {
        if bundle.len() + chunk.len() > MAX_ATTESTATION_BYTES {
            return Err(Error::too_large(format!(
                "The attestation is larger than {MAX_ATTESTATION_BYTES} bytes."
            )));
        }
        bundle.extend_from_slice(&chunk);
    }
    Ok(bundle.freeze())
}

/// `GET /artefacts/{id}/tarballs/{arch}/attestation`: the bundle as uploaded, unverified.
pub async fn attestation(
    State(registry): State<Arc<Registry>>,
    caller: Caller,
    ArtefactId(id): ArtefactId,
    axum::extract::Path((_, arch)): axum::extract::Path<(String, String)>,
) -> Result<Response> {
    let arch = architecture(Some(arch))?;
    let bundle = registry.attestation(&caller, &id, &arch).await?;
    let mut headers = HeaderMap::new();
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    download_headers(
        &mut headers,
        &attachment_name(&id, &arch, "attestation.json"),
    );
    Ok((headers, bundle).into_response())
}

fn validate_category(category: &str) -> Result<()> {
    crate::domain::document::validate_category(category)
        .map_err(|why| Error::bad_request("invalid_category", why))
}

/// The most of other multipart fields an upload may carry besides `attestation` and `tarball`.
const MAX_SKIPPED_MULTIPART_BYTES: usize = 64 * 1024;

/// Reads past a field the upload does not use; `400` once such fields pass their small total.
async fn skip_field(
    mut field: axum::extract::multipart::Field<'_>,
    mut skipped: usize,
) -> Result<usize> {
    while let Some(chunk) = field
        .chunk()
        .await
        .map_err(|e| Error::bad_request("invalid_multipart", e.body_text()))?
    {
        skipped += chunk.len();
        if skipped > MAX_SKIPPED_MULTIPART_BYTES {
            return Err(Error::bad_request(
                "invalid_multipart",
                format!("Fields other than `attestation` and `tarball` may hold at most {MAX_SKIPPED_MULTIPART_BYTES} bytes."),
            ));
        }
    }
    Ok(skipped)
}

/// Downloads are files, never pages: the browser must neither sniff nor render them.
fn download_headers(headers: &mut HeaderMap, filename: &str) {
    headers.insert(
        axum::http::header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        axum::http::header::CONTENT_DISPOSITION,
        value(&format!("attachment; filename=\"{filename}\"")),
    );
}

/// `acme-plugin-1.4.2.tgz`, as `npm pack` names it (`@scope/name` -> `scope-name`). Package
/// names and versions were validated, so the name holds no quote or control character.
fn attachment_name(package: &str, version: &str, extension: &str) -> String {
    let base = package.trim_start_matches('@').replace('/', "-");
    format!("{base}-{version}.{extension}")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-._+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn is_multipart(headers: &HeaderMap) -> bool {
    header(headers, CONTENT_TYPE).is_some_and(|ct| ct.starts_with("multipart/form-data"))
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    header(headers, CONTENT_LENGTH).and_then(|v| v.parse().ok())
}

fn header(headers: &HeaderMap, name: axum::http::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn value(text: &str) -> HeaderValue {
    HeaderValue::from_str(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}
