//! Verifying a CI's OIDC token: the issuer's signing keys (discovery, JWKS, a cache) and the
//! JWT's own checks. Which publisher the token speaks for is decided afterwards, by the rules in
//! `domain::trust`.
//!
//! Only issuers some trusted publisher names are ever contacted: the `iss` of an unverified
//! token is looked up in that list before any request, so a token cannot make the registry
//! fetch from a URL of its choosing.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use jsonwebtoken::jwk::{Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use reliquary_client::types::Timestamp;
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::clock::Clock;
use crate::error::Error;

/// Clock skew allowed on `exp`, `nbf` and `iat`.
pub const LEEWAY_SECONDS: i64 = 60;
/// CI tokens live minutes; one that claims to live longer than this is refused (its `jti`
/// would have to be remembered that long).
const MAX_REMAINING_SECONDS: i64 = 24 * 3600;
/// A token larger than this is not a CI's OIDC token.
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// Discovery documents and key sets are small; an issuer sending more is refused.
const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Keys are refetched after this long even when every `kid` is known (a provider may
/// withdraw a key).
const KEYS_MAX_AGE_MILLIS: i64 = 3600 * 1000;
/// An issuer's keys are fetched at most this often, whatever happened last time (an unknown
/// `kid`, a stale set, a failed fetch), so no stream of tokens can make the registry hammer it.
const REFETCH_COOLDOWN_MILLIS: i64 = 60 * 1000;
/// A `jti` is remembered this long after the last moment any replica could accept its token,
/// so that clock skew between replicas cannot open a window for a replay.
const REPLAY_MEMORY_SECONDS: i64 = 300;

/// What a verified token says.
#[derive(Clone, Debug)]
pub struct VerifiedToken {
    pub issuer: String,
    /// `aud`, as a list (a JWT may carry one or several).
    pub audiences: Vec<String>,
    pub jti: String,
    /// `exp` plus the leeway: until when a replay could still pass the time checks.
    pub replayable_until: Timestamp,
    pub claims: Map<String, Value>,
}

/// `401 oidc_invalid_token`, saying which check failed.
pub fn invalid(check: impl std::fmt::Display) -> Error {
    Error::new(
        StatusCode::UNAUTHORIZED,
        "oidc_invalid_token",
        format!("The OIDC token was refused: {check}."),
    )
}

fn issuer_unavailable(issuer: &str, why: impl std::fmt::Display) -> Error {
    Error::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "oidc_issuer_unavailable",
        format!(
            "The signing keys of issuer `{issuer}` could not be fetched ({why}); try again later."
        ),
    )
}

struct CachedKeys {
    keys: JwkSet,
    fetched_at: i64,
}

#[derive(Default)]
struct IssuerCache {
    keys: Option<CachedKeys>,
    last_fetch: Option<i64>,
    /// Why the last fetch failed, answered while the cooldown lasts.
    last_error: Option<String>,
}

pub struct OidcVerifier {
    http: reqwest::Client,
    /// The one `http://` issuer allowed (`--oidc-insecure-issuer`, loopback, for tests).
    insecure_issuer: Option<String>,
    /// One entry per issuer, each with its own lock: held across that issuer's fetch so that a
    /// burst of exchanges fetches once, without making other issuers' exchanges wait.
    cache: std::sync::Mutex<HashMap<String, Arc<tokio::sync::Mutex<IssuerCache>>>>,
    clock: Arc<dyn Clock>,
}

#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl OidcVerifier {
    pub fn new(insecure_issuer: Option<String>, clock: Arc<dyn Clock>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .connect_timeout(Duration::from_secs(5))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("reliquary/", env!("CARGO_PKG_VERSION")))
            .build()
            .expect("a client with static settings");
        Self {
            http,
            insecure_issuer,
            cache: Default::default(),
            clock,
        }
    }

    /// Verifies `token`'s signature and times. `issuers` are those some publisher names; a
    /// token from any other is refused before anything is fetched.
    pub async fn verify(&self, token: &str, issuers: &[&str]) -> Result<VerifiedToken, Error> {
        if token.len() > MAX_TOKEN_BYTES {
            return Err(invalid(format!(
                "it is longer than {MAX_TOKEN_BYTES} bytes"
            )));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|e| invalid(format!("it is not a JWT ({e})")))?;
        if !matches!(header.alg, Algorithm::RS256 | Algorithm::ES256) {
            return Err(invalid(format!(
                "algorithm `{:?}` is not accepted (RS256 or ES256)",
                header.alg
            )));
        }
        let kid = header
            .kid
            .ok_or_else(|| invalid("its header names no signing key (`kid`)"))?;
        let unverified: Map<String, Value> = jsonwebtoken::dangerous::insecure_decode_claims(token)
            .map_err(|e| invalid(format!("its claims are not a JSON object ({e})")))?;
        let issuer = match unverified.get("iss") {
            Some(Value::String(iss)) => iss.clone(),
            _ => return Err(invalid("it has no issuer (`iss`)")),
        };
        if !issuers.contains(&issuer.as_str()) {
            return Err(invalid(format!(
                "issuer `{}` is not the issuer of any trusted publisher",
                issuer.escape_debug()
            )));
        }

        let jwk = self.key(&issuer, &kid).await?;
        if jwk
            .common
            .key_algorithm
            .is_some_and(|alg| format!("{alg:?}") != format!("{:?}", header.alg))
            || jwk
                .common
                .public_key_use
                .as_ref()
                .is_some_and(|usage| *usage != PublicKeyUse::Signature)
        {
            return Err(invalid(format!(
                "key `{kid}` of `{issuer}` is not an {:?} signing key",
                header.alg
            )));
        }
        let key = DecodingKey::from_jwk(&jwk)
            .map_err(|e| invalid(format!("key `{kid}` of `{issuer}` is unusable ({e})")))?;
        // Times and audience are checked below, against the registry's clock and publishers.
        let mut validation = Validation::new(header.alg);
        validation.required_spec_claims.clear();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        let claims = jsonwebtoken::decode::<Map<String, Value>>(token, &key, &validation)
            .map_err(|e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::InvalidSignature => invalid(format!(
                    "its signature does not verify with key `{kid}` of `{issuer}`"
                )),
                _ => invalid(format!("its signature could not be checked ({e})")),
            })?
            .claims;
        let exp = self.check_times(&claims)?;
        let audiences = match claims.get("aud") {
            Some(Value::String(aud)) => vec![aud.clone()],
            Some(Value::Array(list)) => list
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            _ => return Err(invalid("it has no audience (`aud`)")),
        };
        let jti = match claims.get("jti") {
            Some(Value::String(jti)) if !jti.is_empty() && jti.len() <= 256 => jti.clone(),
            _ => {
                return Err(invalid(
                    "it has no token id (`jti`), so a replay could not be told apart",
                ))
            }
        };
        let forget_after = exp + LEEWAY_SECONDS + REPLAY_MEMORY_SECONDS;
        Ok(VerifiedToken {
            issuer,
            audiences,
            jti,
            replayable_until: Timestamp::from_millis(forget_after * 1000),
            claims,
        })
    }

    /// Checks `exp`, `nbf` and `iat` on the registry's clock; returns `exp`.
    fn check_times(&self, claims: &Map<String, Value>) -> Result<i64, Error> {
        let now = self.clock.now().millis() / 1000;
        let at = |secs: i64| Timestamp::from_millis(secs.saturating_mul(1000)).to_string();
        let exp = seconds(claims, "exp")?.ok_or_else(|| invalid("it has no expiry (`exp`)"))?;
        if now > exp.saturating_add(LEEWAY_SECONDS) {
            return Err(invalid(format!("it expired at {} (`exp`)", at(exp))));
        }
        if exp.saturating_sub(now) > MAX_REMAINING_SECONDS {
            return Err(invalid(
                "it is valid for more than 24 hours (`exp`); CI tokens live minutes",
            ));
        }
        if let Some(nbf) = seconds(claims, "nbf")? {
            if nbf > now + LEEWAY_SECONDS {
                return Err(invalid(format!(
                    "it is not valid before {} (`nbf`)",
                    at(nbf)
                )));
            }
        }
        if let Some(iat) = seconds(claims, "iat")? {
            if iat > now + LEEWAY_SECONDS {
                return Err(invalid(format!(
                    "it was issued in the future, at {} (`iat`)",
                    at(iat)
                )));
            }
        }
        Ok(exp)
    }

    /// The issuer's key `kid`: from the cache, or fetched when unknown or when the cached set
    /// is older than an hour — at most once a minute either way.
    async fn key(&self, issuer: &str, kid: &str) -> Result<Jwk, Error> {
        let entry = {
            let mut issuers = self
                .cache
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            issuers.entry(issuer.to_owned()).or_default().clone()
        };
        let mut entry = entry.lock().await;
        let now = self.clock.now().millis();
        let fresh = entry
            .keys
            .as_ref()
            .is_some_and(|c| now - c.fetched_at < KEYS_MAX_AGE_MILLIS);
        let known =
            |entry: &IssuerCache| entry.keys.as_ref().and_then(|c| c.keys.find(kid)).cloned();
        if let Some(jwk) = known(&entry).filter(|_| fresh) {
            return Ok(jwk);
        }
        let cooling = entry
            .last_fetch
            .is_some_and(|at| now - at < REFETCH_COOLDOWN_MILLIS);
        if !cooling {
            entry.last_fetch = Some(now);
            match self.fetch_keys(issuer).await {
                Ok(keys) => {
                    entry.keys = Some(CachedKeys {
                        keys,
                        fetched_at: now,
                    });
                    entry.last_error = None;
                }
                Err(why) => {
                    tracing::warn!(%issuer, error = %why, "could not fetch the OIDC issuer's keys");
                    entry.last_error = Some(why);
                }
            }
        }
        // A failed refresh keeps serving the keys we have.
        if let Some(jwk) = known(&entry) {
            return Ok(jwk);
        }
        match (&entry.keys, &entry.last_error) {
            (None, Some(why)) => Err(issuer_unavailable(issuer, why)),
            _ => Err(invalid(format!(
                "key `{}` is not among the signing keys of `{issuer}`",
                kid.escape_debug()
            ))),
        }
    }

    /// Discovery, then the key set it names; the error says what failed, for the 503.
    async fn fetch_keys(&self, issuer: &str) -> Result<JwkSet, String> {
        let discovery_url = format!(
            "{}/.well-known/openid-configuration",
            issuer.trim_end_matches('/')
        );
        let discovery: Discovery = self.fetch_json(issuer, &discovery_url).await?;
        if discovery.issuer != issuer {
            return Err(format!(
                "its discovery document names issuer `{}`",
                discovery.issuer.escape_debug()
            ));
        }
        self.fetch_json(issuer, &discovery.jwks_uri).await
    }

    /// GETs a small JSON document over https (or from the insecure test issuer's own origin).
    async fn fetch_json<T: serde::de::DeserializeOwned>(
        &self,
        issuer: &str,
        url: &str,
    ) -> Result<T, String> {
        let shown = url.escape_debug();
        let parsed = reqwest::Url::parse(url).map_err(|_| format!("`{shown}` is not a URL"))?;
        let allowed = parsed.scheme() == "https"
            || (self.insecure_issuer.as_deref() == Some(issuer)
                && reqwest::Url::parse(issuer).is_ok_and(|i| i.origin() == parsed.origin()));
        if !allowed {
            return Err(format!("`{shown}` is not an https:// URL"));
        }
        let mut response = self
            .http
            .get(parsed)
            .send()
            .await
            .map_err(|e| format!("{shown}: {e}"))?;
        if !response.status().is_success() {
            return Err(format!("{shown} answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| format!("{shown}: {e}"))?
        {
            if body.len() + chunk.len() > MAX_DOCUMENT_BYTES {
                return Err(format!("{shown} sent more than {MAX_DOCUMENT_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("{shown} is not the expected JSON ({e})"))
    }
}

/// A NumericDate claim (seconds since the epoch; fractions are cut): `None` when absent, an
/// error when present but not a number.
fn seconds(claims: &Map<String, Value>, name: &str) -> Result<Option<i64>, Error> {
    let Some(value) = claims.get(name) else {
        return Ok(None);
    };
    value
        .as_i64()
        .or_else(|| value.as_f64().filter(|f| f.is_finite()).map(|f| f as i64))
        .map(Some)
        .ok_or_else(|| invalid(format!("`{name}` is not a number of seconds")))
}
