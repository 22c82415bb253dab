//! A release's life after upload: its history and the rollback that withdraws a bad version.

use reliquary_client::types::{Artefact, HistoryItem, Rollback};

use super::{Edit, Registry};
use crate::audit::Target;
use crate::auth::Caller;
use crate::domain::arch::validate_architecture;
use crate::domain::document::{validate_document, MAX_DESCRIPTION_CHARS};
use crate::domain::lifecycle::{self, history_items, trim_history, RollbackIntent};
use crate::domain::rules::check_local;
use crate::error::{Error, Result};

impl Registry {
    /// `GET /artefacts/{id}/history`: what the caller may see of the artefact, newest first per
    /// slot.
    pub async fn history(
        &self,
        caller: &Caller,
        id: &str,
        architecture: Option<&str>,
    ) -> Result<Vec<HistoryItem>> {
        let doc = self.artefact(caller, id).await?;
        Ok(history_items(&doc, architecture))
    }

    /// Re-points slots at an earlier slot from their history and yanks what they leave;
    /// audited as `artefact.rollback`.
    pub async fn rollback(&self, caller: &Caller, id: &str, request: Rollback) -> Result<Artefact> {
        let target = match &request.architecture {
            Some(arch) => Target::slot(id, arch),
            None => Target::artefact(id),
        };
        let detail = format!("to version {} ({})", request.version, request.reason);
        let result = self.rollback_unaudited(caller, id, &request).await;
        self.audit
            .record_result(caller, "artefact.rollback", target, &result, |_| detail)
            .await;
        result
    }

    async fn rollback_unaudited(
        &self,
        caller: &Caller,
        id: &str,
        request: &Rollback,
    ) -> Result<Artefact> {
        caller.require_publish(id)?;
        check_rollback(request)?;
        let intent = RollbackIntent {
            version: request.version.trim(),
            architecture: request.architecture.as_deref(),
            reason: request.reason.trim(),
            may_unyank: caller.is_admin(),
        };
        self.edit_artefact(id, |doc| {
            check_local(doc)?;
            caller.require_kind(id, doc.kind)?;
            caller.require_content_scopes(&doc.package_name, doc.category.as_deref())?;
            if lifecycle::rollback(doc, &intent, self.clock.now())?.is_empty() {
                return Ok(Edit::Unchanged);
            }
            trim_history(doc, self.history_per_slot);
            crate::domain::document::bound_text_fields(doc);
            validate_document(doc).map_err(|problems| {
                Error::unprocessable(
                    "invalid_document",
                    "The artefact document this rollback would produce fails validation.",
                    problems,
                )
            })?;
            Ok(Edit::Commit)
        })
        .await
    }
}

/// A rollback names a version and says why; the reason is what hosts and CI are shown.
fn check_rollback(request: &Rollback) -> Result<()> {
    let mut problems = Vec::new();
    if request.version.trim().is_empty() {
        problems.push(("version", "name the version to roll back to".to_owned()));
    }
    if request.reason.trim().is_empty() {
        problems.push((
            "reason",
            "say why (it is shown with the yanked versions)".to_owned(),
        ));
    } else if request.reason.chars().count() > MAX_DESCRIPTION_CHARS {
        problems.push((
            "reason",
            format!("at most {MAX_DESCRIPTION_CHARS} characters"),
        ));
    }
    if let Some(Err(why)) = request.architecture.as_deref().map(validate_architecture) {
        return Err(Error::bad_request("invalid_architecture", why));
    }
    match problems.first() {
        None => Ok(()),
        Some((field, message)) => Err(Error::bad_request(
            "invalid_rollback",
            format!("`{field}`: {message}."),
        )),
    }
}
