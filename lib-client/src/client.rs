//! The HTTP client for the Reliquary API.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::jws::TrustedKeys;
use crate::types::{
    ApiKey, Artefact, CreatedKey, ErrorBody, HistoryItem, HistoryPage, Items, Kind, NewKey,
    OidcExchange, OidcIssued, PutRemote, PutTrustedPublisher, Remote, Rollback, SyncSummary,
    TrustedPublisher, WellKnown,
};

/// The most of an error answer's body that is read; the rest is not worth a peer's bandwidth.
const MAX_ERROR_BODY: usize = 64 * 1024;
/// The most of a small JSON answer (a document, a key list, `/.well-known`) that is read.
const MAX_JSON_BODY: usize = 16 << 20;

/// What can go wrong talking to a registry; match on it to react.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No such artefact or slot (or it is hidden from this token).
    #[error("not found: {message}")]
    NotFound { message: String },
    /// The token is missing, unknown, expired or revoked, or may not do this.
    #[error("not allowed: {message}")]
    Unauthorized { status: StatusCode, message: String },
    /// The registry answered with another error document.
    #[error("{} ({}): {}", .body.message, .status.as_u16(), .body.code)]
    Api { status: StatusCode, body: ErrorBody },
    /// The registry could not be reached or the transfer broke.
    #[error("cannot reach the registry: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// The registry is unreachable and no verified copy is cached.
    #[error("the registry is unreachable and nothing is cached: {0}")]
    Offline(#[source] reqwest::Error),
    /// The bytes or the signature do not match what the registry announced.
    #[error("integrity check failed: {0}")]
    Integrity(String),
    /// The tarball breaks an extraction rule.
    #[error("refused to extract: {0}")]
    Extract(#[from] crate::extract::ExtractError),
    /// The local cache could not be written.
    #[error("cache: {0}")]
    Cache(#[source] std::io::Error),
    /// `ensure_artefact` needs `ClientBuilder::cache_dir`.
    #[error("no cache directory configured")]
    NoCacheDir,
    /// The registry answered something that is not the API's JSON.
    #[error("unexpected answer from the registry: {0}")]
    Protocol(String),
}

impl Error {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api { status, .. } | Error::Unauthorized { status, .. } => Some(*status),
            Error::NotFound { .. } => Some(StatusCode::NOT_FOUND),
            _ => None,
        }
    }

    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { body, .. } => Some(&body.code),
            _ => None,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Builds a [`Client`].
pub struct ClientBuilder {
    url: String,
    token: Option<String>,
    timeout: Duration,
    cache_dir: Option<PathBuf>,
    trusted: Option<TrustedKeys>,
    idle_timeout: Option<Duration>,
    header_timeout: Option<Duration>,
    follow_redirects: bool,
}

impl ClientBuilder {
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self
    }

    pub fn maybe_token(mut self, token: Option<String>) -> Self {
        self.token = token;
        self
    }

    /// Where `ensure_artefact` keeps extracted artefacts.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache_dir = Some(dir.into());
        self
    }

    /// Verify every slot signature against these keys before anything is extracted.
    pub fn trusted_keys(mut self, keys: TrustedKeys) -> Self {
        self.trusted = Some(keys);
        self
    }

    /// Timeout to connect and for small requests (transfers are not cut by it).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Never follow redirects (a peer registry must not point this client at other hosts).
    pub fn no_redirects(mut self) -> Self {
        self.follow_redirects = false;
        self
    }

    /// Fail a transfer that receives nothing for this long (a peer that stops sending).
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = Some(timeout);
        self
    }

    /// Fail a download whose response headers do not arrive within this long.
    pub fn header_timeout(mut self, timeout: Duration) -> Self {
        self.header_timeout = Some(timeout);
        self
    }

    pub fn build(self) -> Result<Client> {
        let mut http = reqwest::Client::builder();
        if !self.follow_redirects {
            http = http.redirect(reqwest::redirect::Policy::none());
        }
        if let Some(idle) = self.idle_timeout {
            http = http.read_timeout(idle);
        }
        let http = http
            .connect_timeout(self.timeout)
            .user_agent(concat!("reliquary-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Unreachable)?;
        Ok(Client {
            base: self.url.trim_end_matches('/').to_owned(),
            token: self.token,
            http,
            timeout: self.timeout,
            cache_dir: self.cache_dir,
            trusted: self.trusted,
            header_timeout: self.header_timeout,
        })
    }
}

/// A client of one registry, with one token.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    pub(crate) timeout: Duration,
    pub(crate) cache_dir: Option<PathBuf>,
    pub(crate) trusted: Option<TrustedKeys>,
    header_timeout: Option<Duration>,
}

/// One page of the change feed with its items still undecoded, so that the caller can judge
/// each item on its own: one malformed item must not make the whole page unreadable.
#[derive(Clone, Debug, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RawChangePage {
    pub items: Vec<serde_json::Value>,
    pub last_seq: i64,
    pub has_more: bool,
}

/// An id as one percent-encoded path segment.
pub fn encode_id(id: &str) -> String {
    id.replace('/', "%2F")
}

impl Client {
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            token: None,
            timeout: Duration::from_secs(30),
            cache_dir: None,
            trusted: None,
            idle_timeout: None,
            header_timeout: None,
            follow_redirects: true,
        }
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// A request to `path` (starting with `/`) with the token, if any.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let builder = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends a small request and decodes its JSON answer.
    pub async fn json<T: DeserializeOwned>(&self, builder: RequestBuilder) -> Result<T> {
        let response = builder
            .timeout(self.timeout)
            .send()
            .await
            .map_err(Error::Unreachable)?;
        let response = check(response).await?;
        let body = read_capped(response, MAX_JSON_BODY).await?;
        if body.len() > MAX_JSON_BODY {
            return Err(Error::Protocol(format!(
                "the answer is larger than {MAX_JSON_BODY} bytes"
            )));
        }
        serde_json::from_slice(&body).map_err(|e| Error::Protocol(e.to_string()))
    }

    pub async fn well_known(&self) -> Result<WellKnown> {
        self.json(self.request(Method::GET, "/.well-known/reliquary"))
            .await
    }

    pub async fn artefact(&self, id: &str) -> Result<Artefact> {
        self.json(self.request(Method::GET, &format!("/artefacts/{}", encode_id(id))))
            .await
    }

    /// One page of the change feed after `since`; with `wait`, the registry holds the request
    /// until something changes or `wait` seconds pass (long-polling). A page over `max_bytes`
    /// is refused while it is read, never buffered whole.
    pub async fn changes(
        &self,
        since: i64,
        limit: usize,
        wait: Option<u64>,
        max_bytes: usize,
    ) -> Result<RawChangePage> {
        let mut query = vec![("since", since.to_string()), ("limit", limit.to_string())];
        let mut request = self.request(Method::GET, "/artefacts");
        if let Some(wait) = wait {
            query.push(("wait", wait.to_string()));
            request = request.timeout(self.timeout + Duration::from_secs(wait));
        } else {
            request = request.timeout(self.timeout);
        }
        let response = request
            .query(&query)
            .send()
            .await
            .map_err(Error::Unreachable)?;
        let body = read_capped(check(response).await?, max_bytes).await?;
        if body.len() > max_bytes {
            return Err(Error::Protocol(format!(
                "the change page is larger than {max_bytes} bytes"
            )));
        }
        serde_json::from_slice(&body).map_err(|e| Error::Protocol(e.to_string()))
    }

    /// Starts downloading one slot; the caller streams `bytes_stream()` and verifies it.
    pub async fn tarball(&self, id: &str, architecture: &str) -> Result<reqwest::Response> {
        let send = self
            .request(
                Method::GET,
                &format!("/artefacts/{}/tarball", encode_id(id)),
            )
            .query(&[("architecture", architecture)])
            .send();
        let response = match self.header_timeout {
            Some(limit) => tokio::time::timeout(limit, send).await.map_err(|_| {
                Error::Protocol(format!(
                    "timed out: no response headers within {} s",
                    limit.as_secs_f64()
                ))
            })?,
            None => send.await,
        }
        .map_err(Error::Unreachable)?;
        check(response).await
    }

    /// A small body (at most `max_bytes`) of a slot's attestation bundle.
    pub async fn attestation(
        &self,
        id: &str,
        architecture: &str,
        max_bytes: usize,
    ) -> Result<Vec<u8>> {
        let response = self
            .request(
                Method::GET,
                &format!(
                    "/artefacts/{}/tarballs/{architecture}/attestation",
                    encode_id(id)
                ),
            )
            .timeout(self.timeout)
            .send()
            .await
            .map_err(Error::Unreachable)?;
        let body = read_capped(check(response).await?, max_bytes).await?;
        if body.len() > max_bytes {
            return Err(Error::Protocol(format!(
                "the attestation is larger than {max_bytes} bytes"
            )));
        }
        Ok(body)
    }

    pub async fn create_key(&self, key: &NewKey) -> Result<CreatedKey> {
        self.json(self.request(Method::POST, "/keys").json(key))
            .await
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let items: Items<ApiKey> = self.json(self.request(Method::GET, "/keys")).await?;
        Ok(items.items)
    }

    /// Uploads `tarball` as slot `architecture` of artefact `id`, streaming it from disk;
    /// `progress` sees bytes sent and the total. Returns the document and whether it was created.
    pub async fn publish(
        &self,
        id: &str,
        tarball: &Path,
        options: &PublishOptions,
        progress: Option<std::sync::Arc<dyn Fn(u64, u64) + Send + Sync>>,
    ) -> Result<(Artefact, bool)> {
        use futures::StreamExt;
        let file = tokio::fs::File::open(tarball).await.map_err(Error::Cache)?;
        let total = file.metadata().await.map_err(Error::Cache)?.len();
        let mut sent = 0u64;
        let stream =
            tokio_util::io::ReaderStream::with_capacity(file, 256 * 1024).map(move |chunk| {
                if let (Ok(bytes), Some(progress)) = (&chunk, &progress) {
                    sent += bytes.len() as u64;
                    progress(sent, total);
                }
                chunk
            });
        let mut query = vec![
            ("architecture", options.architecture.clone()),
            ("kind", options.kind.as_str().to_owned()),
        ];
        if let Some(category) = &options.category {
            query.push(("category", category.clone()));
        }
        let response = self
            .request(Method::POST, &format!("/artefacts/npm/{}", encode_id(id)))
            .query(&query)
            .header("content-type", "application/gzip")
            .header("content-length", total)
            .body(reqwest::Body::wrap_stream(stream))
            .send()
            .await
            .map_err(Error::Unreachable)?;
        let response = check(response).await?;
        let created = response.status() == StatusCode::CREATED;
        let doc = response
            .json()
            .await
            .map_err(|e| Error::Protocol(e.to_string()))?;
        Ok((doc, created))
    }

    /// `PUT /remotes/{name}`: returns the remote and whether it was created.
    pub async fn put_remote(&self, name: &str, remote: &PutRemote) -> Result<Remote> {
        self.json(
            self.request(Method::PUT, &format!("/remotes/{name}"))
                .json(remote),
        )
        .await
    }

    pub async fn list_remotes(&self) -> Result<Vec<Remote>> {
        let items: Items<Remote> = self.json(self.request(Method::GET, "/remotes")).await?;
        Ok(items.items)
    }

    pub async fn sync_remote(&self, name: &str) -> Result<SyncSummary> {
        self.sync_remote_from(name, false).await
    }

    /// One pass now; `from_start` re-reads the peer's feed from the beginning, so that items
    /// refused before are judged again.
    pub async fn sync_remote_from(&self, name: &str, from_start: bool) -> Result<SyncSummary> {
        // A pass may download a lot: no request timeout beyond the connect timeout.
        let response = self
            .request(Method::POST, &format!("/remotes/{name}/sync"))
            .query(&[("from_start", from_start)])
            .send()
            .await
            .map_err(Error::Unreachable)?;
        check(response)
            .await?
            .json()
            .await
            .map_err(|e| Error::Protocol(e.to_string()))
    }

    pub async fn delete_remote(&self, name: &str, purge: bool) -> Result<Remote> {
        self.json(
            self.request(Method::DELETE, &format!("/remotes/{name}"))
                .query(&[("purge", purge)]),
        )
        .await
    }

    /// `GET /artefacts/{id}/history`: every slot's (or one slot's) replaced slots, newest first.
    pub async fn history(&self, id: &str, architecture: Option<&str>) -> Result<Vec<HistoryItem>> {
        let mut request = self.request(
            Method::GET,
            &format!("/artefacts/{}/history", encode_id(id)),
        );
        if let Some(arch) = architecture {
            request = request.query(&[("architecture", arch)]);
        }
        let page: HistoryPage = self.json(request).await?;
        Ok(page.items)
    }

    /// `POST /artefacts/{id}/rollback`: reinstates an earlier slot and yanks what it replaces.
    pub async fn rollback(&self, id: &str, rollback: &Rollback) -> Result<Artefact> {
        self.json(
            self.request(
                Method::POST,
                &format!("/artefacts/{}/rollback", encode_id(id)),
            )
            .json(rollback),
        )
        .await
    }

    /// Deprecates an artefact with `message`, or clears its deprecation with `None`.
    pub async fn deprecate(&self, id: &str, message: Option<&str>) -> Result<Artefact> {
        self.json(
            self.request(Method::PATCH, &format!("/artefacts/{}", encode_id(id)))
                .json(&serde_json::json!({"deprecated": message.unwrap_or("")})),
        )
        .await
    }

    pub async fn revoke_key(&self, id: &str) -> Result<ApiKey> {
        self.json(self.request(Method::DELETE, &format!("/keys/{id}")))
            .await
    }

    /// `PUT /trusted-publishers/{name}`.
    pub async fn put_trusted_publisher(
        &self,
        name: &str,
        publisher: &PutTrustedPublisher,
    ) -> Result<TrustedPublisher> {
        self.json(
            self.request(Method::PUT, &format!("/trusted-publishers/{name}"))
                .json(publisher),
        )
        .await
    }

    pub async fn list_trusted_publishers(&self) -> Result<Vec<TrustedPublisher>> {
        let items: Items<TrustedPublisher> = self
            .json(self.request(Method::GET, "/trusted-publishers"))
            .await?;
        Ok(items.items)
    }

    pub async fn delete_trusted_publisher(&self, name: &str) -> Result<()> {
        let response = self
            .request(Method::DELETE, &format!("/trusted-publishers/{name}"))
            .send()
            .await
            .map_err(Error::Unreachable)?;
        check(response).await.map(|_| ())
    }

    /// `POST /oidc/token`: trades a CI's OIDC token for a short-lived publish key (this
    /// client's own token is not sent).
    pub async fn exchange_oidc_token(&self, oidc_token: &str) -> Result<OidcIssued> {
        let url = format!("{}/oidc/token", self.base_url());
        self.json(self.http.post(url).json(&OidcExchange {
            token: oidc_token.to_owned(),
        }))
        .await
    }
}

/// The slot, kind and category of a publish.
#[derive(Clone, Debug)]
pub struct PublishOptions {
    pub architecture: String,
    pub kind: Kind,
    pub category: Option<String>,
}

impl Default for PublishOptions {
    fn default() -> Self {
        Self {
            architecture: crate::types::NOARCH.into(),
            kind: Kind::Release,
            category: None,
        }
    }
}

/// Turns an error status into [`Error::Api`], keeping the registry's message.
pub async fn check(response: Response) -> Result<Response> {
    let status = response.status();
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        return Ok(response);
    }
    let bytes = read_capped(response, MAX_ERROR_BODY)
        .await
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX_ERROR_BODY)]).into_owned();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| ErrorBody {
        code: "http_error".into(),
        message: if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            text
        },
        errors: None,
    });
    Err(match status {
        StatusCode::NOT_FOUND => Error::NotFound {
            message: body.message,
        },
        StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => Error::Unauthorized {
            status,
            message: body.message,
        },
        _ => Error::Api { status, body },
    })
}

/// Reads at most `max + 1` bytes of a body, so that the caller can tell "too large" from
/// "exactly the limit" without ever holding more.
async fn read_capped(response: Response, max: usize) -> Result<Vec<u8>> {
    use futures::StreamExt;
    let mut stream = response.bytes_stream();
    let mut body = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(Error::Unreachable)?;
        let room = (max + 1).saturating_sub(body.len());
        body.extend_from_slice(&chunk[..chunk.len().min(room)]);
        if body.len() > max {
            break;
        }
    }
    Ok(body)
}
