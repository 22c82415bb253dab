//! The HTTP client for the Reliquary API.

use std::time::Duration;

use reqwest::{Method, RequestBuilder, Response, StatusCode};
use serde::de::DeserializeOwned;

use crate::types::{ApiKey, Artefact, CreatedKey, ErrorBody, Items, NewKey, WellKnown};

/// What can go wrong talking to a registry; match on it to react.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The registry answered with an error document.
    #[error("{} ({}): {}", .body.message, .status.as_u16(), .body.code)]
    Api { status: StatusCode, body: ErrorBody },
    /// The registry could not be reached or the transfer broke.
    #[error("cannot reach the registry: {0}")]
    Unreachable(#[source] reqwest::Error),
    /// The registry answered something that is not the API's JSON.
    #[error("unexpected answer from the registry: {0}")]
    Protocol(String),
}

impl Error {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Error::Api { status, .. } => Some(*status),
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

    /// Timeout to connect and for small requests (transfers are not cut by it).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    pub fn build(self) -> Result<Client> {
        let http = reqwest::Client::builder()
            .connect_timeout(self.timeout)
            .user_agent(concat!("reliquary-client/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(Error::Unreachable)?;
        Ok(Client {
            base: self.url.trim_end_matches('/').to_owned(),
            token: self.token,
            http,
            timeout: self.timeout,
        })
    }
}

/// A client of one registry, with one token.
#[derive(Clone)]
pub struct Client {
    base: String,
    token: Option<String>,
    http: reqwest::Client,
    timeout: Duration,
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
        response
            .json()
            .await
            .map_err(|e| Error::Protocol(e.to_string()))
    }

    pub async fn well_known(&self) -> Result<WellKnown> {
        self.json(self.request(Method::GET, "/.well-known/reliquary"))
            .await
    }

    pub async fn artefact(&self, id: &str) -> Result<Artefact> {
        self.json(self.request(Method::GET, &format!("/artefacts/{}", encode_id(id))))
            .await
    }

    pub async fn create_key(&self, key: &NewKey) -> Result<CreatedKey> {
        self.json(self.request(Method::POST, "/keys").json(key))
            .await
    }

    pub async fn list_keys(&self) -> Result<Vec<ApiKey>> {
        let items: Items<ApiKey> = self.json(self.request(Method::GET, "/keys")).await?;
        Ok(items.items)
    }

    pub async fn revoke_key(&self, id: &str) -> Result<ApiKey> {
        self.json(self.request(Method::DELETE, &format!("/keys/{id}")))
            .await
    }
}

/// Turns an error status into [`Error::Api`], keeping the registry's message.
pub async fn check(response: Response) -> Result<Response> {
    let status = response.status();
    if status.is_success() || status == StatusCode::NOT_MODIFIED {
        return Ok(response);
    }
    let text = response.text().await.unwrap_or_default();
    let body = serde_json::from_str(&text).unwrap_or_else(|_| ErrorBody {
        code: "http_error".into(),
        message: if text.is_empty() {
            status.canonical_reason().unwrap_or("error").to_owned()
        } else {
            text
        },
        errors: None,
    });
    Err(Error::Api { status, body })
}
