//! The audit log: what is recorded for each write (reading it back is `Registry::audit_log`).
//!
//! Successful writes and writes refused by policy (403), by a conflict (409) or as invalid
//! (413, 422) are recorded. 401s are not: an unauthenticated caller is noise, not an actor.

use axum::http::StatusCode;

use std::sync::Arc;

use crate::auth::Caller;
use crate::clock::Clock;
use crate::error::{Error, Result};
use crate::store::{AuditRecord, AuditStore};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Denied,
    Conflict,
    Invalid,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::Conflict => "conflict",
            Outcome::Invalid => "invalid",
        }
    }

    /// The outcome an error is audited as, or `None` when it is not audited.
    pub fn of_error(error: &Error) -> Option<Self> {
        match error.status {
            StatusCode::FORBIDDEN => Some(Outcome::Denied),
            StatusCode::CONFLICT => Some(Outcome::Conflict),
            StatusCode::UNPROCESSABLE_ENTITY | StatusCode::PAYLOAD_TOO_LARGE => {
                Some(Outcome::Invalid)
            }
            _ => None,
        }
    }
}

/// What an audited action was about.
#[derive(Clone, Copy, Debug, Default)]
pub struct Target<'a> {
    pub artefact_id: Option<&'a str>,
    pub architecture: Option<&'a str>,
}

impl<'a> Target<'a> {
    pub fn artefact(id: &'a str) -> Self {
        Self {
            artefact_id: Some(id),
            architecture: None,
        }
    }

    pub fn slot(id: &'a str, architecture: &'a str) -> Self {
        Self {
            artefact_id: Some(id),
            architecture: Some(architecture),
        }
    }
}

/// Appends audit entries; shared by the services that write (registry, federation).
#[derive(Clone)]
pub struct AuditLog {
    store: Arc<dyn AuditStore>,
    clock: Arc<dyn Clock>,
}

impl AuditLog {
    pub fn new(store: Arc<dyn AuditStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// Appends one entry. A failure to audit is logged, not turned into a failed request: the
    /// write it describes has already happened.
    pub async fn record(
        &self,
        caller: &Caller,
        action: &str,
        outcome: Outcome,
        target: Target<'_>,
        detail: impl Into<String>,
    ) {
        self.record_keyed(caller, action, outcome, target, detail.into(), None)
            .await;
    }

    /// Like [`Self::record`], at most once per `once_key`: a refusal anyone can repeat at will
    /// (the same OIDC token sent again) is one entry, not a flood.
    pub async fn record_once(
        &self,
        caller: &Caller,
        action: &str,
        outcome: Outcome,
        detail: String,
        once_key: String,
    ) {
        self.record_keyed(
            caller,
            action,
            outcome,
            Target::default(),
            detail,
            Some(once_key),
        )
        .await;
    }

    async fn record_keyed(
        &self,
        caller: &Caller,
        action: &str,
        outcome: Outcome,
        target: Target<'_>,
        detail: String,
        once_key: Option<String>,
    ) {
        let record = AuditRecord {
            at: self.clock.now(),
            action: action.to_owned(),
            outcome: outcome.as_str().to_owned(),
            key_id: caller.key().map(|k| k.id.clone()),
            key_name: caller.key().map(|k| k.name.clone()),
            artefact_id: target.artefact_id.map(str::to_owned),
            architecture: target.architecture.map(str::to_owned),
            detail: Some(bounded_detail(detail)).filter(|d: &String| !d.is_empty()),
            remote_addr: caller.remote_addr.clone(),
            once_key,
        };
        if let Err(error) = self.store.append_audit(record).await {
            tracing::error!(%error, action, "could not write the audit log");
        }
    }

    /// Records what the sync worker of `remote` did; the actor is the remote.
    pub async fn record_sync(
        &self,
        remote: &str,
        action: &str,
        outcome: Outcome,
        artefact_id: Option<&str>,
        detail: String,
    ) {
        self.append_system(
            &format!("remote:{remote}"),
            action,
            outcome,
            artefact_id,
            detail,
            None,
        )
        .await;
    }

    /// Like [`Self::record_sync`], at most once per `once_key` (the peer's change): written
    /// just before the change is committed, so that a replica dying in between leaves the
    /// entry, and the replica that takes over and commits adds no second one.
    pub async fn record_sync_once(
        &self,
        remote: &str,
        action: &str,
        artefact_id: &str,
        detail: String,
        once_key: String,
    ) {
        self.append_system(
            &format!("remote:{remote}"),
            action,
            Outcome::Success,
            Some(artefact_id),
            detail,
            Some(once_key),
        )
        .await;
    }

    /// Records what the registry did on its own behalf (`actor` names the mechanism).
    pub async fn record_system(
        &self,
        actor: &str,
        action: &str,
        outcome: Outcome,
        artefact_id: Option<&str>,
        detail: String,
    ) {
        self.append_system(actor, action, outcome, artefact_id, detail, None)
            .await;
    }

    async fn append_system(
        &self,
        actor: &str,
        action: &str,
        outcome: Outcome,
        artefact_id: Option<&str>,
        detail: String,
        once_key: Option<String>,
    ) {
        let record = AuditRecord {
            at: self.clock.now(),
            action: action.to_owned(),
            outcome: outcome.as_str().to_owned(),
            key_id: None,
            key_name: Some(actor.to_owned()),
            artefact_id: artefact_id.map(str::to_owned),
            architecture: None,
            detail: Some(bounded_detail(detail)),
            remote_addr: None,
            once_key,
        };
        if let Err(error) = self.store.append_audit(record).await {
            tracing::error!(%error, action, "could not write the audit log");
        }
    }

    /// Runs an authorisation check before the request's body is read; a refusal is audited
    /// under `action` as the operation itself would have audited it.
    pub async fn admit(
        &self,
        caller: &Caller,
        action: &str,
        check: impl FnOnce(&Caller) -> Result<()>,
    ) -> Result<()> {
        let result = check(caller);
        if let Err(error) = &result {
            if let Some(outcome) = Outcome::of_error(error) {
                self.record(
                    caller,
                    action,
                    outcome,
                    Target::default(),
                    error.to_string(),
                )
                .await;
            }
        }
        result
    }

    /// Records the outcome of an operation that has a single action name.
    pub async fn record_result<T>(
        &self,
        caller: &Caller,
        action: &str,
        target: Target<'_>,
        result: &Result<T>,
        success_detail: impl FnOnce(&T) -> String,
    ) {
        match result {
            Ok(value) => {
                self.record(
                    caller,
                    action,
                    Outcome::Success,
                    target,
                    success_detail(value),
                )
                .await;
            }
            Err(error) => {
                if let Some(outcome) = Outcome::of_error(error) {
                    self.record(caller, action, outcome, target, error.to_string())
                        .await;
                }
            }
        }
    }
}

/// The most of a detail an audit entry (or a remote's `lastError`) keeps, in bytes: error text
/// can come from a peer, and a peer must not be able to fill the audit log.
pub const MAX_DETAIL_BYTES: usize = 1024;

/// `detail` cut to [`MAX_DETAIL_BYTES`] on a character boundary, marked with `…` when cut.
pub fn bounded_detail(mut detail: String) -> String {
    if detail.len() > MAX_DETAIL_BYTES {
        let mut cut = MAX_DETAIL_BYTES - '…'.len_utf8();
        while !detail.is_char_boundary(cut) {
            cut -= 1;
        }
        detail.truncate(cut);
        detail.push('…');
    }
    detail
}
