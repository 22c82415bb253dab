//! Reading the audit log back, and its retention.

use reliquary_client::types::{AuditPage, Timestamp};

use super::Registry;
use crate::auth::Caller;
use crate::error::Result;
use crate::store::AuditQuery;

impl Registry {
    /// `GET /audit`: newest first.
    pub async fn audit_log(
        &self,
        caller: &Caller,
        action: Option<String>,
        cursor: Option<String>,
        limit: usize,
    ) -> Result<AuditPage> {
        caller.require_admin()?;
        let query = AuditQuery {
            action,
            before: cursor.map(|c| super::decode_cursor(&c)).transpose()?,
            limit: limit + 1,
        };
        let mut items = self.store.list_audit(&query).await?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|entry| super::encode_cursor(&entry.id))
        } else {
            None
        };
        Ok(AuditPage { items, next_cursor })
    }

    /// Drops entries older than the retention period; returns how many.
    pub async fn prune_audit(&self) -> Result<u64> {
        if self.audit_retention_days == 0 {
            return Ok(0);
        }
        let cutoff = Timestamp::from_millis(
            self.clock.now().millis() - i64::from(self.audit_retention_days) * 86_400_000,
        );
        Ok(self.store.prune_audit(cutoff).await?)
    }
}
