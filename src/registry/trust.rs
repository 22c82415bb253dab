//! Trusted publishing: the publishers (admin) and the exchange of a CI's OIDC token for a
//! short-lived publish key (anyone holding a valid token).

use axum::http::StatusCode;
use reliquary_client::types::{
    ApiKey, OidcIssued, PutTrustedPublisher, Role, Timestamp, TrustedPublisher,
};

use super::Registry;
use crate::audit::{Outcome, Target};
use crate::auth::Caller;
use crate::config::DEFAULT_REGISTRY_NAME;
use crate::domain::trust::{exchanged_key_name, match_publisher, oidc_facts, validate_publisher};
use crate::error::{Error, Result};
use crate::oidc::invalid;
use crate::secrets::{generate_token, token_display_prefix, token_hash};
use crate::store::KeyRecord;

impl Registry {
    /// `PUT /trusted-publishers/{name}`: returns the publisher and whether it was created.
    pub async fn put_publisher(
        &self,
        caller: &Caller,
        name: &str,
        request: PutTrustedPublisher,
    ) -> Result<(TrustedPublisher, bool)> {
        let result = async {
            caller.require_admin()?;
            let mut problems =
                validate_publisher(name, &request, self.oidc_insecure_issuer.as_deref());
            if request.audience.is_none() && self.registry_name == DEFAULT_REGISTRY_NAME {
                problems.push(format!(
                    "give an `audience`, or name this registry (--registry-name): a token for the default audience `{DEFAULT_REGISTRY_NAME}` would be accepted by every registry left at the default name"
                ));
            }
            if !problems.is_empty() {
                return Err(Error::bad_request(
                    "invalid_publisher",
                    format!("{}.", problems.join("; ")),
                ));
            }
            let now = self.clock.now();
            let existing = self.store.get_publisher(name).await?;
            let created_at = existing.as_ref().map_or(now, |e| e.created_at);
            let publisher = TrustedPublisher {
                name: name.to_owned(),
                issuer: request.issuer,
                audience: request
                    .audience
                    .unwrap_or_else(|| self.registry_name.clone()),
                claims: request.claims,
                allowed_ids: request.allowed_ids,
                allowed_kinds: request.allowed_kinds,
                allowed_category: request.allowed_category,
                created_at,
                updated_at: now,
            };
            let created = self.store.put_publisher(&publisher).await?;
            // New rules apply to keys already issued, too: those issued under the old ones are
            // revoked (an unchanged PUT, as configuration tools repeat, revokes nothing).
            if existing.is_some_and(|old| !same_rules(&old, &publisher)) {
                self.revoke_issued_keys(name).await?;
            }
            Ok((publisher, created))
        }
        .await;
        self.audit
            .record_result(
                caller,
                "publisher.put",
                Target::default(),
                &result,
                |(p, _)| {
                    format!(
                        "trusted publisher `{}`: issuer {}, claims {}, allowedIds {}",
                        p.name,
                        p.issuer,
                        serde_json::to_string(&p.claims).unwrap_or_default(),
                        p.allowed_ids.join(" ")
                    )
                },
            )
            .await;
        result
    }

    pub async fn list_publishers(&self, caller: &Caller) -> Result<Vec<TrustedPublisher>> {
        caller.require_admin()?;
        Ok(self.store.list_publishers().await?)
    }

    /// `DELETE /trusted-publishers/{name}`: the publisher, and every unexpired key it issued
    /// (revoked), so that removing a compromised publisher takes effect at once.
    pub async fn delete_publisher(&self, caller: &Caller, name: &str) -> Result<u64> {
        let result = async {
            caller.require_admin()?;
            if !self.store.delete_publisher(name).await? {
                return Err(Error::not_found(
                    "publisher_not_found",
                    format!("No trusted publisher named `{name}`."),
                ));
            }
            self.revoke_issued_keys(name).await
        }
        .await;
        self.audit
            .record_result(
                caller,
                "publisher.delete",
                Target::default(),
                &result,
                |n| format!("deleted trusted publisher `{name}`; revoked {n} key(s) it had issued"),
            )
            .await;
        result
    }

    /// Revokes every unexpired key publisher `name` issued; returns how many.
    async fn revoke_issued_keys(&self, name: &str) -> Result<u64> {
        let now = self.clock.now();
        let mut revoked = 0;
        for key in self.store.list_keys().await? {
            let live = key.revoked_at.is_none() && key.expires_at.is_none_or(|at| at > now);
            if live && key.trusted_publisher.as_deref() == Some(name) {
                self.store.revoke_key(&key.id, now).await?;
                revoked += 1;
            }
        }
        Ok(revoked)
    }

    /// `POST /oidc/token`: verifies the CI's token, finds the publisher it matches, and issues
    /// a publish key with that publisher's scopes that expires after `--oidc-token-ttl`.
    pub async fn exchange_oidc_token(&self, caller: &Caller, token: &str) -> Result<OidcIssued> {
        let mut token_id = None;
        let result = self.exchange(token, &mut token_id).await;
        match &result {
            Ok((issued, key, detail)) => {
                let actor = Caller {
                    key: Some(key.clone()),
                    remote_addr: caller.remote_addr.clone(),
                };
                let detail = format!("publisher `{}`: {detail}", issued.publisher);
                self.audit
                    .record(
                        &actor,
                        "oidc.exchange",
                        Outcome::Success,
                        Target::default(),
                        detail,
                    )
                    .await;
            }
            // A refusal by a publisher's rules is recorded once per token: whoever holds one
            // may send it again and again. (Tokens that fail verification are not recorded,
            // like unknown API tokens: anyone can make those.)
            Err(error) => {
                if let (Some(outcome), Some(token_id)) =
                    (crate::audit::Outcome::of_error(error), token_id)
                {
                    let once = format!("oidc.exchange:{}:{token_id}", error.code);
                    self.audit
                        .record_once(caller, "oidc.exchange", outcome, error.to_string(), once)
                        .await;
                }
            }
        }
        result.map(|(issued, _, _)| issued)
    }

    /// The exchange; `token_id` is set (issuer and `jti`) once the token is verified.
    async fn exchange(
        &self,
        token: &str,
        token_id: &mut Option<String>,
    ) -> Result<(OidcIssued, ApiKey, String)> {
        let publishers = self.store.list_publishers().await?;
        let mut issuers: Vec<&str> = publishers.iter().map(|p| p.issuer.as_str()).collect();
        issuers.sort_unstable();
        issuers.dedup();
        let verified = self.oidc.verify(token, &issuers).await?;
        let verified_id = format!("{}#{}", verified.issuer, verified.jti);
        *token_id = Some(verified_id.clone());

        let of_issuer: Vec<&TrustedPublisher> = publishers
            .iter()
            .filter(|p| p.issuer == verified.issuer)
            .collect();
        let candidates: Vec<&TrustedPublisher> = of_issuer
            .iter()
            .copied()
            .filter(|p| verified.audiences.contains(&p.audience))
            .collect();
        if candidates.is_empty() {
            let mut expected: Vec<&str> = of_issuer.iter().map(|p| p.audience.as_str()).collect();
            expected.sort_unstable();
            expected.dedup();
            return Err(invalid(format!(
                "its audience {:?} is not the audience of a trusted publisher of `{}` (expected `{}`)",
                verified.audiences,
                verified.issuer,
                expected.join("` or `")
            )));
        }
        let publisher = match_publisher(&candidates, &verified.claims)
            .map_err(|why| Error::new(StatusCode::FORBIDDEN, "oidc_no_publisher", why))?;

        let now = self.clock.now();
        if !self
            .store
            .claim_token_id(&verified_id, verified.replayable_until, now)
            .await?
        {
            return Err(Error::conflict(
                "oidc_token_reused",
                format!(
                    "This OIDC token (jti `{}`) was already exchanged; a token is accepted once. Request a fresh one from the CI.",
                    verified.jti.escape_debug()
                ),
            ));
        }

        let facts = oidc_facts(&verified.issuer, &verified.claims);
        let secret = generate_token();
        let ttl_millis = i64::try_from(self.oidc_token_ttl.as_millis()).unwrap_or(i64::MAX);
        let expires_at = Timestamp::from_millis(now.millis().saturating_add(ttl_millis));
        let key = ApiKey {
            id: uuid::Uuid::new_v4().to_string(),
            name: exchanged_key_name(&publisher.name, &facts),
            role: Role::Publish,
            prefix: token_display_prefix(&secret),
            allowed_package_name: None,
            allowed_name_prefix: None,
            allowed_category: publisher.allowed_category.clone(),
            allowed_ids: Some(publisher.allowed_ids.clone()),
            allowed_kinds: publisher.allowed_kinds.clone(),
            created_at: now,
            expires_at: Some(expires_at),
            last_used_at: None,
            revoked_at: None,
            trusted_publisher: Some(publisher.name.clone()),
            oidc: Some(facts),
        };
        self.store
            .insert_key(KeyRecord {
                key: key.clone(),
                token_sha256: token_hash(&secret),
            })
            .await?;
        let claim = |name: &str| crate::domain::trust::claim_text(&verified.claims, name);
        let detail = [
            "sub",
            "repository",
            "project_path",
            "ref",
            "sha",
            "run_id",
            "pipeline_id",
            "workflow_ref",
        ]
        .iter()
        .filter_map(|name| claim(name).map(|v| format!("{name}={}", v.escape_debug())))
        .fold(format!("issuer={}", verified.issuer), |acc, part| {
            acc + " " + &part
        });
        let issued = OidcIssued {
            token: secret,
            expires_at,
            publisher: publisher.name.clone(),
        };
        Ok((issued, key, detail))
    }
}

/// Whether two versions of a publisher admit the same runs with the same scopes.
fn same_rules(a: &TrustedPublisher, b: &TrustedPublisher) -> bool {
    (
        &a.issuer,
        &a.audience,
        &a.claims,
        &a.allowed_ids,
        &a.allowed_kinds,
        &a.allowed_category,
    ) == (
        &b.issuer,
        &b.audience,
        &b.claims,
        &b.allowed_ids,
        &b.allowed_kinds,
        &b.allowed_category,
    )
}
