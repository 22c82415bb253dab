//! Federation: a sync worker per enabled remote pulls the peer's change feed and mirrors its
//! release artefacts (see [`pass`]).
//!
//! Each worker long-polls the peer between passes, so a publish there is visible here within
//! about a second while an idle remote costs one request per `intervalSeconds`. Failures back
//! off exponentially with jitter; what was mirrored keeps being served meanwhile. With several
//! replicas on one database, a lease in the metadata store lets one replica sync a remote at a
//! time; another takes over when the lease lapses.

pub mod keyring;
mod pass;
pub use pass::PassError;
mod remotes;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::audit::AuditLog;
use crate::blobs::Blobs;
use crate::changes::ChangeFeed;
use crate::clock::Clock;
use crate::domain::tarball::Limits;
use crate::metrics::Metrics;
use crate::signing::Signer;
use crate::store::{ArtefactStore, RemoteStore};
use crate::upload::BodyLimits;

/// The longest a worker holds one long-poll request open.
const MAX_WAIT_SECONDS: u64 = 25;
/// The longest back-off after repeated failures.
const MAX_BACKOFF_SECONDS: u64 = 300;

/// What a sync pass may touch, and nothing more: the artefact and remote stores, the blob
/// store, the signer (for this registry's name and keys), metrics, the audit log and the change
/// feed — like a background job's own context, never the whole registry.
pub struct SyncContext {
    pub artefacts: Arc<dyn ArtefactStore>,
    pub remotes: Arc<dyn RemoteStore>,
    pub blobs: Blobs,
    pub signer: Arc<Signer>,
    pub metrics: Arc<Metrics>,
    pub audit: AuditLog,
    pub changes: Arc<ChangeFeed>,
    pub body_limits: BodyLimits,
    pub tarball_limits: Limits,
    /// Connect, header and idle-body timeout of every request to a peer.
    pub peer_timeout: Duration,
    /// Replaced slots a mirrored document keeps per architecture.
    pub history_per_slot: usize,
    pub clock: Arc<dyn Clock>,
}

/// The federation service: remotes, their pinned keys, and the running sync workers.
pub struct Federation {
    ctx: Arc<SyncContext>,
    /// Identifies this process as a lease holder: host, process id and a random suffix.
    holder: String,
    /// How long a lease lasts without renewal; a pass renews it every third of that.
    lease: Duration,
    workers: Mutex<HashMap<String, (CancellationToken, JoinHandle<()>)>>,
    /// One pass at a time per remote in this process (the worker's or `POST .../sync`).
    passes: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl Federation {
    pub fn new(ctx: SyncContext, lease: Duration) -> Self {
        let host = std::env::var("HOSTNAME")
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "replica".into());
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        Self {
            ctx: Arc::new(ctx),
            holder: format!("{host}:{}:{}", std::process::id(), &suffix[..8]),
            lease,
            workers: Mutex::default(),
            passes: Mutex::default(),
        }
    }

    pub fn context(&self) -> &SyncContext {
        &self.ctx
    }

    /// Starts a worker for every enabled remote.
    pub async fn start_all(self: &Arc<Self>) {
        match self.ctx.remotes.list_remotes().await {
            Ok(remotes) => {
                for remote in remotes.into_iter().filter(|r| r.config.enabled) {
                    self.restart(&remote.name);
                }
            }
            Err(error) => tracing::error!(%error, "cannot list remotes; no sync workers started"),
        }
    }

    /// Starts workers for enabled remotes this process does not run yet: a remote added
    /// through another replica, or one whose worker ended. Every replica runs a worker per
    /// remote; the lease decides which one syncs.
    pub async fn reconcile(self: &Arc<Self>) {
        let remotes = match self.ctx.remotes.list_remotes().await {
            Ok(remotes) => remotes,
            Err(error) => {
                tracing::warn!(%error, "cannot list remotes to start their workers");
                return;
            }
        };
        for remote in remotes.into_iter().filter(|r| r.config.enabled) {
            let running = lock(&self.workers)
                .get(&remote.name)
                .is_some_and(|(_, task)| !task.is_finished());
            if !running {
                self.restart(&remote.name);
            }
        }
    }

    /// How often [`Self::reconcile`] runs while serving: well within a lease, so a replica
    /// takes over a remote added elsewhere before it matters.
    pub fn reconcile_interval(&self) -> Duration {
        (self.lease / 3).clamp(Duration::from_secs(1), Duration::from_secs(30))
    }

    /// (Re)starts the worker of `name` with its current configuration. One lock over the stop
    /// and the start, so that two restarts at once never leave a worker nobody can cancel.
    pub fn restart(self: &Arc<Self>, name: &str) {
        let mut workers = lock(&self.workers);
        if let Some((cancel, _)) = workers.remove(name) {
            cancel.cancel();
        }
        let cancel = CancellationToken::new();
        let task = tokio::spawn(run_worker(self.clone(), name.to_owned(), cancel.clone()));
        workers.insert(name.to_owned(), (cancel, task));
    }

    pub fn stop(&self, name: &str) {
        if let Some((cancel, _)) = lock(&self.workers).remove(name) {
            cancel.cancel();
        }
    }

    /// Stops every worker and waits for them (at shutdown).
    pub async fn stop_all(&self) {
        let workers: Vec<_> = lock(&self.workers).drain().collect();
        for (_, (cancel, _)) in &workers {
            cancel.cancel();
        }
        for (_, (_, task)) in workers {
            let _ = task.await;
        }
    }

    /// The lock that serialises passes over `name` in this process.
    pub fn pass_lock(&self, name: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.passes)
            .entry(name.to_owned())
            .or_default()
            .clone()
    }

    pub fn holder(&self) -> &str {
        &self.holder
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn backoff(failures: u32) -> Duration {
    let base = 2u64
        .saturating_pow(failures.min(16))
        .min(MAX_BACKOFF_SECONDS);
    let jitter = rand::thread_rng().gen_range(0.5..1.5);
    Duration::from_secs_f64(base as f64 * jitter)
}

async fn sleep_or_cancel(cancel: &CancellationToken, duration: Duration) -> bool {
    tokio::select! {
        _ = cancel.cancelled() => false,
        _ = tokio::time::sleep(duration) => true,
    }
}

/// Renews the lease every third of its length while a pass runs; returns — ending the pass —
/// when the lease was lost, could not be renewed before it would lapse, or the remote was
/// deleted, disabled or reconfigured meanwhile (on this replica or another).
async fn keep_lease(
    ctx: &SyncContext,
    remote: &crate::store::RemoteRecord,
    holder: &str,
    lease: Duration,
) {
    let name = remote.name.as_str();
    let lease_ms = i64::try_from(lease.as_millis()).unwrap_or(i64::MAX);
    let tick = lease / 3;
    let mut renewed = Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        match ctx.remotes.get_remote(name).await {
            Ok(Some(now)) if now.config == remote.config => {}
            Ok(_) => return,
            Err(error) => tracing::warn!(remote = %name, %error, "cannot re-read the remote"),
        }
        match ctx.remotes.acquire_lease(name, holder, lease_ms).await {
            Ok(true) => renewed = Instant::now(),
            Ok(false) => return,
            Err(error) => {
                tracing::warn!(remote = %name, %error, "cannot renew the sync lease");
                // Stop before the lease can lapse: another replica may take it then.
                if renewed.elapsed() + tick >= lease {
                    return;
                }
            }
        }
    }
}

async fn run_worker(federation: Arc<Federation>, name: String, cancel: CancellationToken) {
    let ctx = &federation.ctx;
    let holder = &federation.holder;
    let lease_ms = i64::try_from(federation.lease.as_millis()).unwrap_or(i64::MAX);
    let mut failures = 0u32;
    while !cancel.is_cancelled() {
        let remote = match ctx.remotes.get_remote(&name).await {
            Ok(Some(remote)) if remote.config.enabled => remote,
            Ok(_) => break,
            Err(error) => {
                failures += 1;
                tracing::warn!(remote = %name, %error, "cannot read the remote");
                if !sleep_or_cancel(&cancel, backoff(failures)).await {
                    break;
                }
                continue;
            }
        };
        let interval = Duration::from_secs(remote.config.interval_seconds.max(1));
        match ctx.remotes.acquire_lease(&name, holder, lease_ms).await {
            Ok(true) => {}
            Ok(false) => {
                // Another replica syncs this remote; check again later in case it dies.
                if !sleep_or_cancel(&cancel, interval.min(Duration::from_secs(30))).await {
                    break;
                }
                continue;
            }
            Err(error) => {
                tracing::warn!(remote = %name, %error, "cannot take the sync lease");
                failures += 1;
                if !sleep_or_cancel(&cancel, backoff(failures)).await {
                    break;
                }
                continue;
            }
        }
        let wait = remote.config.interval_seconds.clamp(1, MAX_WAIT_SECONDS);
        let started = Instant::now();
        let pass_lock = federation.pass_lock(&name);
        // A pass may outlast the lease: it is renewed while the pass runs, and a pass whose
        // lease was lost (this replica stalled past it, another took over) stops at once.
        let result = tokio::select! {
            _ = cancel.cancelled() => break,
            () = keep_lease(ctx, &remote, holder, federation.lease) => {
                tracing::warn!(remote = %name, "pass stopped: the lease was lost or the remote changed");
                continue;
            }
            result = async {
                let _guard = pass_lock.lock().await;
                ctx.sync_pass(&remote, Some(wait)).await
            } => result,
        };
        match result {
            Ok(summary) => {
                failures = 0;
                let changed =
                    summary.mirrored + summary.deleted + summary.conflicts + summary.skipped > 0;
                // A peer that answers at once with nothing new does not long-poll: pace by the
                // interval instead of asking again immediately.
                if !changed
                    && started.elapsed() < Duration::from_secs(wait) / 2
                    && !sleep_or_cancel(&cancel, interval).await
                {
                    break;
                }
            }
            Err(error) => {
                failures += 1;
                tracing::warn!(remote = %name, %error, failures, "sync pass failed");
                if !sleep_or_cancel(&cancel, backoff(failures)).await {
                    break;
                }
            }
        }
    }
    if let Err(error) = ctx.remotes.release_lease(&name, holder).await {
        tracing::debug!(remote = %name, %error, "could not release the sync lease");
    }
}
