//! Upkeep: recording downloads off the request path, and branch retention.
//!
//! A download is noted in memory ([`Downloads::saw`], a map insert); the upkeep task writes the
//! notes in batches. Each artefact's `lastDownloadedAt` is written at most once per tenth of the
//! retention period (an hour when retention is off), so a hot artefact costs the store one
//! write per period whatever its traffic. A first download after a quiet spell is written at the
//! next flush (every 5 s). Retention allows for the lag: it takes the last use as the recorded
//! time plus the debounce (`domain::lifecycle::download_record_lag`).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use reliquary_client::types::{Kind, Timestamp};
use serde::Serialize;

use super::Registry;
use crate::audit::Outcome;
use crate::domain::lifecycle::{download_record_lag, retention_due};
use crate::error::Result;
use crate::store::{RetentionCandidate, StoreError};

/// Downloads noted since the last flush, and when each artefact's time was last written.
#[derive(Default)]
pub struct Downloads {
    /// Writes of one artefact's time are at least this far apart.
    debounce_ms: i64,
    state: Mutex<DownloadState>,
}

#[derive(Default)]
struct DownloadState {
    pending: HashMap<String, Timestamp>,
    written: HashMap<String, Timestamp>,
}

impl Downloads {
    pub fn new(branch_retention: Option<Duration>) -> Self {
        let debounce = branch_retention.map_or(Duration::from_secs(3600), |r| r / 10);
        Self {
            debounce_ms: i64::try_from(debounce.as_millis()).unwrap_or(i64::MAX),
            state: Mutex::default(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, DownloadState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// On the request path: a map lookup and at most one insert, never a store write.
    pub fn saw(&self, id: &str, now: Timestamp) {
        let mut state = self.lock();
        let recent = state
            .written
            .get(id)
            .is_some_and(|at| now.millis() - at.millis() < self.debounce_ms);
        if !recent && !state.pending.contains_key(id) {
            state.pending.insert(id.to_owned(), now);
        }
    }

    fn take(&self, now: Timestamp) -> Vec<(String, Timestamp)> {
        let mut state = self.lock();
        let debounce_ms = self.debounce_ms;
        // Forget writes older than the debounce: the next download is written again anyway.
        state
            .written
            .retain(|_, at| now.millis() - at.millis() < debounce_ms);
        state.pending.drain().collect()
    }

    fn written(&self, batch: &[(String, Timestamp)]) {
        let mut state = self.lock();
        for (id, at) in batch {
            state.written.insert(id.clone(), *at);
        }
    }

    fn put_back(&self, batch: Vec<(String, Timestamp)>) {
        let mut state = self.lock();
        for (id, at) in batch {
            state.pending.entry(id).or_insert(at);
        }
    }
}

/// What one retention pass removed (or, dry, would remove).
#[derive(Debug, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RetentionReport {
    pub dry_run: bool,
    /// `None`: retention is off.
    pub cutoff: Option<Timestamp>,
    pub removed: Vec<RetentionCandidate>,
}

impl Registry {
    /// Notes a download (a document or tarball read) for `lastDownloadedAt`.
    pub fn record_download(&self, id: &str) {
        self.downloads.saw(id, self.clock.now());
    }

    /// Writes the downloads noted so far; on a store failure they are kept for the next try.
    pub async fn flush_downloads(&self) -> Result<()> {
        let batch = self.downloads.take(self.clock.now());
        if batch.is_empty() {
            return Ok(());
        }
        match self.store.record_downloads(&batch).await {
            Ok(()) => {
                self.downloads.written(&batch);
                Ok(())
            }
            Err(error) => {
                self.downloads.put_back(batch);
                Err(error.into())
            }
        }
    }

    pub async fn last_downloaded(&self, id: &str) -> Result<Option<Timestamp>> {
        Ok(self.store.last_downloaded(id).await?)
    }

    /// One upkeep pass: pending downloads written, then branch retention (when configured).
    pub async fn upkeep(&self) -> Result<RetentionReport> {
        self.flush_downloads().await?;
        self.prune_exchanged_keys().await?;
        self.apply_retention(false).await
    }

    /// Every CI run that uses trusted publishing leaves a key that expires within the hour;
    /// a day after that it is deleted, so the key list stays readable (`oidc.exchange` in the
    /// audit log keeps the record).
    async fn prune_exchanged_keys(&self) -> Result<()> {
        const KEEP_EXPIRED_MILLIS: i64 = 24 * 3600 * 1000;
        let before = Timestamp::from_millis(self.clock.now().millis() - KEEP_EXPIRED_MILLIS);
        let removed = self.store.prune_exchanged_keys(before).await?;
        if removed > 0 {
            tracing::info!(removed, "deleted expired keys from trusted publishing");
        }
        Ok(())
    }

    /// Deletes (or, `dry_run`, lists) every branch artefact idle for the retention period.
    /// Each deletion is a compare-and-swap on the revision seen, so a rebuild in the meantime
    /// wins; it leaves an ordinary tombstone and is audited as `retention.delete`.
    pub async fn apply_retention(&self, dry_run: bool) -> Result<RetentionReport> {
        let Some(retention) = self.branch_retention else {
            return Ok(RetentionReport {
                dry_run,
                ..Default::default()
            });
        };
        let now = self.clock.now();
        let period = i64::try_from(retention.as_millis()).unwrap_or(i64::MAX);
        let cutoff = Timestamp::from_millis(now.millis().saturating_sub(period));
        let mut report = RetentionReport {
            dry_run,
            cutoff: Some(cutoff),
            removed: Vec::new(),
        };
        let lag = download_record_lag(retention);
        let tracked_since = self.store.downloads_tracked_since().await?;
        // The store's query is an index walk with no allowance for the write lag; the rule
        // itself is written once, in the domain.
        let candidates = self.store.retention_candidates(cutoff).await?;
        let due = candidates.into_iter().filter(|c| {
            retention_due(
                Kind::Branch,
                c.data_updated_at,
                c.last_downloaded_at,
                tracked_since,
                lag,
                cutoff,
            )
        });
        for candidate in due {
            if dry_run {
                report.removed.push(candidate);
                continue;
            }
            match self.store.delete(&candidate.id, candidate.revision).await {
                Ok(tombstone) => {
                    self.changed(tombstone.seq);
                    self.audit_retention(&candidate, retention).await;
                    report.removed.push(candidate);
                }
                // Rebuilt, deleted or re-created since the candidates were read: not idle.
                Err(StoreError::RevisionMismatch | StoreError::NotFound) => {}
                Err(other) => return Err(other.into()),
            }
            // A long pass shares the runtime with requests.
            tokio::task::yield_now().await;
        }
        Ok(report)
    }

    async fn audit_retention(&self, candidate: &RetentionCandidate, retention: Duration) {
        let downloaded = candidate.last_downloaded_at.map_or_else(
            || "never downloaded".to_owned(),
            |at| format!("last downloaded {at}"),
        );
        self.audit
            .record_system(
                "retention",
                "retention.delete",
                Outcome::Success,
                Some(&candidate.id),
                format!(
                    "branch build idle for {}: bytes unchanged since {}, {downloaded}",
                    humantime::format_duration(retention),
                    candidate.data_updated_at
                ),
            )
            .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_is_written_once_per_debounce_period() {
        let downloads = Downloads::new(Some(Duration::from_secs(100)));
        let at = Timestamp::from_millis;
        downloads.saw("a", at(0));
        downloads.saw("a", at(1));
        let batch = downloads.take(at(2));
        assert_eq!(batch, vec![("a".to_owned(), at(0))]);
        downloads.written(&batch);
        downloads.saw("a", at(9_000));
        assert!(downloads.take(at(9_000)).is_empty(), "within a tenth");
        downloads.saw("a", at(10_000));
        assert_eq!(
            downloads.take(at(10_000)),
            vec![("a".to_owned(), at(10_000))]
        );
    }

    #[test]
    fn a_failed_write_is_kept_for_the_next_flush() {
        let downloads = Downloads::new(None);
        downloads.saw("a", Timestamp::from_millis(5));
        let batch = downloads.take(Timestamp::from_millis(6));
        downloads.put_back(batch);
        assert_eq!(downloads.take(Timestamp::from_millis(7)).len(), 1);
    }
}
