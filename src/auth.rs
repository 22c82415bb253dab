//! Who is calling and what they may do: token lookup, roles, scopes and read visibility.

use reliquary_client::types::{ApiKey, Kind, Role, Timestamp};

use crate::config::AnonymousRead;
use crate::domain::id::star_match;
use crate::domain::visibility::Visibility;
use crate::error::{Error, Result};
use crate::secrets::{token_hash, TOKEN_PREFIX};
use crate::store::MetadataStore;

/// The authenticated caller of one request.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// `None` for anonymous callers.
    pub key: Option<ApiKey>,
    /// The peer address, for the audit log.
    pub remote_addr: Option<String>,
}

/// `lastUsedAt` is written at most this often per key, so reads do not turn into writes.
const TOUCH_INTERVAL_MILLIS: i64 = 60_000;

/// Resolves a bearer token to its key. `bootstrap_hash` is the hash of the admin token given
/// through the environment, the one token allowed without the `rlq_` prefix.
pub async fn authenticate(
    store: &dyn MetadataStore,
    token: Option<&str>,
    bootstrap_hash: Option<&str>,
    now: Timestamp,
) -> Result<Caller> {
    let Some(token) = token else {
        return Ok(Caller::default());
    };
    let hash = token_hash(token);
    if !token.starts_with(TOKEN_PREFIX) && bootstrap_hash != Some(hash.as_str()) {
        return Err(Error::unauthorized(
            "That is not a Reliquary token (they start with `rlq_`).",
        ));
    }
    authenticate_hash(store, &hash, now).await
}

/// Resolves the sha256 of a token (as a UI session keeps it) to its key, with the same checks.
pub async fn authenticate_hash(
    store: &dyn MetadataStore,
    hash: &str,
    now: Timestamp,
) -> Result<Caller> {
    let key = store
        .key_by_token_hash(hash)
        .await?
        .ok_or_else(|| Error::unauthorized("Unknown token."))?;
    if key.revoked_at.is_some() {
        return Err(Error::unauthorized(format!(
            "Key `{}` has been revoked.",
            key.name
        )));
    }
    if key.expires_at.is_some_and(|at| at <= now) {
        return Err(Error::unauthorized(format!(
            "Key `{}` has expired.",
            key.name
        )));
    }
    let stale = key
        .last_used_at
        .is_none_or(|at| now.millis() - at.millis() >= TOUCH_INTERVAL_MILLIS);
    if stale {
        if let Err(error) = store.touch_key(&key.id, now).await {
            tracing::warn!(%error, key = %key.id, "could not record lastUsedAt");
        }
    }
    Ok(Caller {
        key: Some(key),
        remote_addr: None,
    })
}

impl Caller {
    pub fn key(&self) -> Option<&ApiKey> {
        self.key.as_ref()
    }

    fn role(&self) -> Option<Role> {
        self.key().map(|k| k.role)
    }

    /// What this caller may read, or 401 when anonymous reads are off.
    pub fn visibility(&self, anonymous: AnonymousRead) -> Result<Visibility> {
        match (self.key(), anonymous) {
            (None, AnonymousRead::None) => Err(Error::unauthorized(
                "This registry needs a token to read: send `Authorization: Bearer rlq_...`.",
            )),
            (None, AnonymousRead::Releases) => Ok(Visibility::releases()),
            (None, AnonymousRead::All) => Ok(Visibility::all()),
            (Some(key), _) if key.role == Role::Mirror => Ok(Visibility {
                releases_only: true,
                id_prefix: key.allowed_name_prefix.clone(),
                category: key.allowed_category.clone(),
                id_patterns: key.allowed_ids.clone(),
            }),
            (Some(_), _) => Ok(Visibility::all()),
        }
    }

    pub fn require_admin(&self) -> Result<()> {
        match self.role() {
            Some(Role::Admin) => Ok(()),
            None => Err(Error::unauthorized("This needs an admin token.")),
            Some(role) => Err(Error::forbidden(format!(
                "This needs an admin key; this key's role is `{}`.",
                role.as_str()
            ))),
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role() == Some(Role::Admin)
    }

    /// May this caller write artefact `id` (before its bytes are read)? Admins always may;
    /// publish keys within their id-prefix scope.
    pub fn require_publish(&self, id: &str) -> Result<()> {
        let key = match self.key() {
            None => {
                return Err(Error::unauthorized(
                    "Publishing needs a publish or admin token.",
                ))
            }
            Some(key) if key.role == Role::Admin => return Ok(()),
            Some(key) if key.role == Role::Publish => key,
            Some(key) => {
                return Err(Error::forbidden(format!(
                    "Key `{}` has role `{}`, which cannot publish.",
                    key.name,
                    key.role.as_str()
                )))
            }
        };
        if let Some(prefix) = &key.allowed_name_prefix {
            if !id.starts_with(prefix.as_str()) {
                return Err(Error::forbidden(format!(
                    "Key `{}` may only publish ids starting with `{prefix}` (allowedNamePrefix); `{id}` does not.",
                    key.name
                )));
            }
        }
        if let Some(patterns) = &key.allowed_ids {
            if !patterns.iter().any(|pattern| star_match(pattern, id)) {
                return Err(Error::forbidden(format!(
                    "Key `{}` may only publish ids matching {} (allowedIds); `{id}` matches none.",
                    key.name,
                    quoted(patterns.iter().map(String::as_str))
                )));
            }
        }
        Ok(())
    }

    /// May this caller write an artefact of `kind`? Publish keys within `allowedKinds`.
    pub fn require_kind(&self, id: &str, kind: Kind) -> Result<()> {
        let Some(key) = self.key().filter(|k| k.role == Role::Publish) else {
            return Ok(());
        };
        match &key.allowed_kinds {
            Some(kinds) if !kinds.contains(&kind) => Err(Error::forbidden(format!(
                "Key `{}` may only publish {} artefacts (allowedKinds); `{id}` is a {kind} artefact.",
                key.name,
                quoted(kinds.iter().map(|kind| kind.as_str()))
            ))),
            _ => Ok(()),
        }
    }

    /// The scopes that depend on the artefact's content: package name and category.
    pub fn require_content_scopes(&self, package_name: &str, category: Option<&str>) -> Result<()> {
        let Some(key) = self.key().filter(|k| k.role == Role::Publish) else {
            return Ok(());
        };
        if let Some(allowed) = &key.allowed_package_name {
            if package_name != allowed {
                return Err(Error::forbidden(format!(
                    "Key `{}` may only publish package `{allowed}` (allowedPackageName); this tarball is `{package_name}`.",
                    key.name
                )));
            }
        }
        if let Some(allowed) = &key.allowed_category {
            if category != Some(allowed.as_str()) {
                return Err(Error::forbidden(format!(
                    "Key `{}` may only publish to category `{allowed}` (allowedCategory); this artefact's category is `{}`.",
                    key.name,
                    category.unwrap_or("(none)")
                )));
            }
        }
        Ok(())
    }
}

/// `a`, `b` — for messages that list a key's scope values.
fn quoted<'a>(values: impl Iterator<Item = &'a str>) -> String {
    values
        .map(|v| format!("`{v}`"))
        .collect::<Vec<_>>()
        .join(", ")
}
