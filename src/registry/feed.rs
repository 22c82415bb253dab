//! The two modes of `GET /artefacts`: browsing by id, and the change feed mirrors pull.

use std::time::{Duration, Instant};

use reliquary_client::types::{BrowsePage, Change, ChangePage};

use super::Registry;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::store::BrowseQuery;

impl Registry {
    /// Browse mode of `GET /artefacts`.
    pub async fn browse(&self, caller: &Caller, mut query: BrowseQuery) -> Result<BrowsePage> {
        let visibility = caller.visibility(self.anonymous_read)?;
        let limit = query.limit;
        query.limit = limit + 1;
        let mut items = self.store.browse(&query, &visibility).await?;
        let next_cursor = if items.len() > limit {
            items.truncate(limit);
            items.last().map(|doc| encode_cursor(&doc.id))
        } else {
            None
        };
        Ok(BrowsePage { items, next_cursor })
    }

    /// Sync mode of `GET /artefacts?since=N`. With `wait`, an empty answer is held back until
    /// a change commits or `wait` passes (long-polling); the store is also re-read every second
    /// so that commits made by other replicas are seen too.
    pub async fn changes(
        &self,
        caller: &Caller,
        since: i64,
        limit: usize,
        wait: Option<Duration>,
    ) -> Result<ChangePage> {
        let visibility = caller.visibility(self.anonymous_read)?;
        let deadline = Instant::now() + wait.unwrap_or_default();
        let mut commits = self.subscribe_changes();
        loop {
            let changes = self.store.changes(since, limit, &visibility).await?;
            let remaining = deadline.saturating_duration_since(Instant::now());
            if !changes.items.is_empty() || remaining.is_zero() {
                let (items, cut) = within_budget(changes.items, MAX_CHANGE_PAGE_BYTES);
                return Ok(ChangePage {
                    items,
                    last_seq: changes.last_seq,
                    has_more: changes.has_more || cut,
                });
            }
            tokio::select! {
                _ = commits.changed() => {}
                _ = tokio::time::sleep(remaining.min(Duration::from_secs(1))) => {}
            }
        }
    }
}

/// The most a change-feed page carries: half of what a mirror accepts (16 MiB), so that pages of
/// documents with long histories split instead of being refused.
const MAX_CHANGE_PAGE_BYTES: usize = 8 << 20;

/// The items that fit `budget` bytes of JSON (always the first, so a page makes progress), and
/// whether any were left for the next page.
fn within_budget(mut items: Vec<Change>, budget: usize) -> (Vec<Change>, bool) {
    let mut total = 0;
    let mut keep = 0;
    for item in &items {
        total += serde_json::to_vec(item).map_or(0, |bytes| bytes.len());
        if total > budget && keep > 0 {
            break;
        }
        keep += 1;
    }
    let cut = keep < items.len();
    items.truncate(keep);
    (items, cut)
}

/// Browse cursors are opaque to clients: the last id seen, base64url-encoded.
pub fn encode_cursor(id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id)
}

pub fn decode_cursor(cursor: &str) -> Result<String> {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| {
            Error::bad_request(
                "invalid_cursor",
                "That cursor is not one this registry issued; start again without it.",
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use reliquary_client::types::{Kind, Timestamp, Tombstone};

    fn tombstone(seq: i64) -> Change {
        Change::Deleted(Tombstone {
            id: format!("a{seq}@1"),
            deleted: true,
            kind: Kind::Release,
            seq,
            deleted_at: Timestamp::from_millis(0),
            revision: 1,
        })
    }

    #[test]
    fn a_change_page_is_cut_to_its_byte_budget_but_always_progresses() {
        let one = serde_json::to_vec(&tombstone(1)).unwrap().len();
        let items: Vec<Change> = (1..=10).map(tombstone).collect();
        let (kept, cut) = within_budget(items.clone(), one * 3);
        assert_eq!((kept.len(), cut), (3, true));
        let (kept, cut) = within_budget(items.clone(), 1);
        assert_eq!(
            (kept.len(), cut),
            (1, true),
            "one item over the budget still goes"
        );
        let (kept, cut) = within_budget(items, usize::MAX);
        assert_eq!((kept.len(), cut), (10, false));
    }
}
