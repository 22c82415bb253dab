//! API keys: creation (the token is returned once), listing and revocation.

use reliquary_client::types::{ApiKey, CreatedKey, NewKey, Role, Timestamp};

use super::Registry;
use crate::audit::Target;
use crate::auth::Caller;
use crate::domain::document::{validate_name, validate_scopes};
use crate::domain::id::{validate_id_pattern, MAX_ID_PATTERNS};
use crate::error::{Error, Result};
use crate::secrets::{generate_token, token_display_prefix, token_hash};
use crate::store::{KeyRecord, StoreError};

impl Registry {
    pub async fn create_key(&self, caller: &Caller, request: NewKey) -> Result<CreatedKey> {
        let result = self.create_key_inner(caller, request).await;
        let target = Target::default();
        self.audit
            .record_result(caller, "key.create", target, &result, |created| {
                format!(
                    "created key `{}` ({}) with role {}",
                    created.key.name,
                    created.key.id,
                    created.key.role.as_str()
                )
            })
            .await;
        result
    }

    async fn create_key_inner(&self, caller: &Caller, request: NewKey) -> Result<CreatedKey> {
        caller.require_admin()?;
        validate_new_key(&request, self.clock.now())?;
        let token = generate_token();
        let key = ApiKey {
            id: uuid::Uuid::new_v4().to_string(),
            name: request.name,
            role: request.role,
            prefix: token_display_prefix(&token),
            allowed_package_name: request.allowed_package_name,
            allowed_name_prefix: request.allowed_name_prefix,
            allowed_category: request.allowed_category,
            allowed_ids: request.allowed_ids,
            allowed_kinds: request.allowed_kinds,
            created_at: self.clock.now(),
            expires_at: request.expires_at,
            last_used_at: None,
            revoked_at: None,
            trusted_publisher: None,
            oidc: None,
        };
        self.store
            .insert_key(KeyRecord {
                key: key.clone(),
                token_sha256: token_hash(&token),
            })
            .await?;
        Ok(CreatedKey { token, key })
    }

    pub async fn list_keys(&self, caller: &Caller) -> Result<Vec<ApiKey>> {
        caller.require_admin()?;
        Ok(self.store.list_keys().await?)
    }

    pub async fn revoke_key(&self, caller: &Caller, id: &str) -> Result<ApiKey> {
        let result = async {
            caller.require_admin()?;
            let _one_at_a_time = self.admin_revocations.lock().await;
            self.refuse_revoking_the_last_admin(id).await?;
            match self.store.revoke_key(id, self.clock.now()).await {
                Err(StoreError::NotFound) => Err(Error::not_found(
                    "key_not_found",
                    format!("No key with id `{id}`."),
                )),
                other => Ok(other?),
            }
        }
        .await;
        self.audit
            .record_result(caller, "key.revoke", Target::default(), &result, |key| {
                format!("revoked key `{}` ({})", key.name, key.id)
            })
            .await;
        result
    }
}

impl Registry {
    /// No lockout: an admin key may be revoked only while another admin key stays usable and
    /// does not expire (one that will expire would only postpone the lockout).
    async fn refuse_revoking_the_last_admin(&self, id: &str) -> Result<()> {
        let now = self.clock.now();
        let keys = self.store.list_keys().await?;
        let usable = |k: &&ApiKey| {
            k.role == Role::Admin
                && k.revoked_at.is_none()
                && k.expires_at.is_none_or(|at| at > now)
        };
        let target_is_usable_admin = keys.iter().filter(usable).any(|k| k.id == id);
        let another_lasting_admin = keys
            .iter()
            .filter(usable)
            .any(|k| k.id != id && k.expires_at.is_none());
        if target_is_usable_admin && !another_lasting_admin {
            return Err(Error::conflict(
                "last_admin_key",
                "This is the last admin key that does not expire; revoking it would lock every administrator out. Create another admin key first (reliquary keys create --role admin), then revoke this one.",
            ));
        }
        Ok(())
    }
}

fn validate_new_key(request: &NewKey, now: Timestamp) -> Result<()> {
    let mut problems = Vec::new();
    if validate_name(&request.name).is_err() {
        problems
            .push("`name` must have 1 to 64 printable characters (no control or bidi characters)");
    }
    let scoped = request.allowed_package_name.is_some()
        || request.allowed_name_prefix.is_some()
        || request.allowed_category.is_some();
    if scoped && !matches!(request.role, Role::Publish | Role::Mirror) {
        problems.push("scopes apply to publish and mirror keys only");
    }
    let empty_scope = [
        &request.allowed_package_name,
        &request.allowed_name_prefix,
        &request.allowed_category,
    ]
    .iter()
    .any(|scope| scope.as_deref().is_some_and(str::is_empty));
    if empty_scope {
        problems.push("a scope, when given, must not be empty");
    }
    if request.allowed_ids.is_some() && !matches!(request.role, Role::Publish | Role::Mirror) {
        problems.push("`allowedIds` applies to publish and mirror keys only");
    }
    if request.allowed_kinds.is_some() && request.role != Role::Publish {
        problems.push(
            "`allowedKinds` applies to publish keys only (a mirror key reads release artefacts only, whatever it says)",
        );
    }
    if request.allowed_ids.as_ref().is_some_and(Vec::is_empty)
        || request.allowed_kinds.as_ref().is_some_and(Vec::is_empty)
    {
        problems.push("`allowedIds` and `allowedKinds`, when given, list at least one value");
    }
    if request
        .allowed_ids
        .as_ref()
        .is_some_and(|ids| ids.len() > MAX_ID_PATTERNS)
    {
        problems.push("`allowedIds` lists at most 32 patterns");
    }
    if request.expires_at.is_some_and(|at| at <= now) {
        problems.push("`expiresAt` is in the past");
    }
    let mut problems: Vec<String> = problems.into_iter().map(str::to_owned).collect();
    problems.extend(validate_scopes(
        request
            .allowed_package_name
            .as_deref()
            .filter(|s| !s.is_empty()),
        request
            .allowed_name_prefix
            .as_deref()
            .filter(|s| !s.is_empty()),
        request
            .allowed_category
            .as_deref()
            .filter(|s| !s.is_empty()),
    ));
    for pattern in request.allowed_ids.iter().flatten() {
        if let Err(why) = validate_id_pattern(pattern) {
            problems.push(format!("`allowedIds`: {why}"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::bad_request(
            "invalid_key",
            format!("{}.", problems.join("; ")),
        ))
    }
}
