//! One sync pass over a remote: pull the peer's change feed from the cursor, apply each change,
//! and advance the cursor only after a whole page is applied — a crash mid-page repeats work
//! but never skips it.

use std::collections::{BTreeMap, HashMap};

use anyhow::{anyhow, bail, Context};
use reliquary_client::jws::{Received, TrustedKeys};
use reliquary_client::types::{Artefact, Change, Origin, SyncSummary, Timestamp, Tombstone};
use reliquary_client::Client;

use crate::blobs::BlobKey;
use crate::domain::visibility::Visibility;
use crate::registry::{Outcome, Registry};
use crate::store::{RemoteRecord, StoreError};
use crate::upload::receive;

/// Changes per page pulled from a peer.
const PAGE: usize = 100;

/// The peer's pinned keys, by the registry they belong to.
struct PinnedKeys(HashMap<String, TrustedKeys>);

impl PinnedKeys {
    fn of(remote: &RemoteRecord) -> anyhow::Result<Self> {
        let mut keys = HashMap::new();
        for registry in &remote.config.pinned {
            let trusted = TrustedKeys::from_jwks(&registry.keys).map_err(|e| anyhow!(e))?;
            keys.insert(registry.registry.clone(), trusted);
        }
        Ok(Self(keys))
    }

    /// Verifies a slot signature made by `registry` with one of that registry's pinned keys.
    fn verify(
        &self,
        registry: &str,
        signature: &str,
        received: &Received<'_>,
    ) -> anyhow::Result<()> {
        let trusted = self
            .0
            .get(registry)
            .ok_or_else(|| anyhow!("no pinned keys for registry `{registry}`"))?;
        let payload = trusted.verify(signature).context("slot signature")?;
        if payload.registry != registry {
            bail!(
                "the signature names registry `{}`, expected `{registry}`",
                payload.registry
            );
        }
        payload.check_matches(received)?;
        Ok(())
    }
}

/// What one change did.
enum Applied {
    Mirrored(u64),
    Deleted,
    Conflict,
    Skipped,
}

impl Registry {
    /// Runs one pass; with `wait`, the first page long-polls the peer.
    pub async fn sync_pass(
        &self,
        remote: &RemoteRecord,
        wait: Option<u64>,
    ) -> anyhow::Result<SyncSummary> {
        let client = Client::builder(&remote.config.url)
            .token(remote.token.clone())
            .build()?;
        let pinned = PinnedKeys::of(remote)?;
        let mut state = remote.state.clone();
        let mut summary = SyncSummary::default();
        let mut wait = wait;
        let outcome = loop {
            let page = match client.changes(state.cursor, PAGE, wait.take()).await {
                Ok(page) => page,
                Err(error) => break Err(anyhow!(error).context("reading the peer's change feed")),
            };
            let mut failed = None;
            for change in &page.items {
                match self.apply(remote, &client, &pinned, change).await {
                    Ok(Applied::Mirrored(bytes)) => {
                        summary.mirrored += 1;
                        summary.bytes += bytes;
                    }
                    Ok(Applied::Deleted) => summary.deleted += 1,
                    Ok(Applied::Conflict) => summary.conflicts += 1,
                    Ok(Applied::Skipped) => summary.skipped += 1,
                    Err(error) => {
                        failed = Some(error.context(format!(
                            "applying `{}` (seq {})",
                            change.id(),
                            change.seq()
                        )));
                        break;
                    }
                }
            }
            if let Some(error) = failed {
                break Err(error);
            }
            state.cursor = match page.items.last() {
                Some(last) if page.has_more => last.seq(),
                _ => state.cursor.max(page.last_seq),
            };
            state.peer_last_seq = page.last_seq;
            self.store.set_remote_state(&remote.name, &state).await?;
            if !page.has_more {
                break Ok(());
            }
        };
        let now = Timestamp::now();
        state.last_sync_at = Some(now);
        self.metrics
            .sync_pass(&remote.name, &summary, &state, outcome.is_ok());
        match &outcome {
            Ok(()) => {
                state.last_success_at = Some(now);
                state.last_error = None;
            }
            Err(error) => {
                state.last_error = Some(format!("{error:#}"));
                self.record_sync(
                    &remote.name,
                    "sync.error",
                    Outcome::Invalid,
                    None,
                    format!("{error:#}"),
                )
                .await;
            }
        }
        self.store.set_remote_state(&remote.name, &state).await?;
        summary.cursor = state.cursor;
        outcome.map(|()| summary)
    }

    async fn apply(
        &self,
        remote: &RemoteRecord,
        client: &Client,
        pinned: &PinnedKeys,
        change: &Change,
    ) -> anyhow::Result<Applied> {
        match change {
            Change::Artefact(doc) => self.apply_artefact(remote, client, pinned, doc).await,
            Change::Deleted(tombstone) => self.apply_tombstone(remote, tombstone).await,
        }
    }

    async fn apply_artefact(
        &self,
        remote: &RemoteRecord,
        client: &Client,
        pinned: &PinnedKeys,
        doc: &Artefact,
    ) -> anyhow::Result<Applied> {
        let config = &remote.config;
        let wanted = Visibility {
            releases_only: true,
            id_prefix: config.allowed_name_prefix.clone(),
            category: config.allowed_category.clone(),
        };
        if !wanted.allows(&doc.id, doc.kind, doc.category.as_deref()) {
            return Ok(Applied::Skipped);
        }
        let origin_registry = doc
            .origin
            .as_ref()
            .map_or_else(|| config.registry.clone(), |o| o.registry.clone());
        if origin_registry == self.signer.registry() {
            // Our own artefact coming back through a peer: never mirrored back (no ping-pong).
            return Ok(Applied::Skipped);
        }
        let local = self.store.get(&doc.id, &Visibility::all()).await?;
        if let Some(local) = &local {
            let owner = local.origin.as_ref().map(|o| o.remote.as_str());
            if owner != Some(remote.name.as_str()) {
                let why = match owner {
                    None => "a local artefact with this id exists".to_owned(),
                    Some(other) => format!("already mirrored through remote `{other}`"),
                };
                self.record_sync(
                    &remote.name,
                    "sync.conflict",
                    Outcome::Conflict,
                    Some(&doc.id),
                    why,
                )
                .await;
                return Ok(Applied::Conflict);
            }
        }

        let mut tarballs = BTreeMap::new();
        let mut downloaded = 0;
        for (arch, slot) in &doc.tarballs {
            if config
                .architectures
                .as_ref()
                .is_some_and(|only| !only.contains(arch))
            {
                continue;
            }
            let unchanged = local
                .as_ref()
                .and_then(|l| l.tarballs.get(arch))
                .is_some_and(|mine| mine.sha256 == slot.sha256 && mine.signature == slot.signature);
            if !unchanged {
                let received = Received {
                    id: &doc.id,
                    architecture: arch,
                    sha256: &slot.sha256,
                    size: slot.size,
                };
                pinned
                    .verify(&origin_registry, &slot.signature, &received)
                    .with_context(|| format!("slot `{arch}`"))?;
                if !self.blobs.exists(&BlobKey::sha256(&slot.sha256)).await? {
                    self.mirror_blob(client, &doc.id, arch, &slot.sha256, slot.size)
                        .await?;
                    downloaded += slot.size;
                }
            }
            // The origin's signature, byte for byte: consumers verify against the origin's key.
            tarballs.insert(arch.clone(), slot.clone());
        }
        if tarballs.is_empty() {
            return Ok(Applied::Skipped);
        }
        let mirrored = Artefact {
            tarballs,
            origin: Some(Origin {
                registry: origin_registry,
                remote: remote.name.clone(),
                synced_at: Timestamp::now(),
            }),
            ..doc.clone()
        };
        if let Some(local) = &local {
            if same_content(local, &mirrored) {
                return Ok(Applied::Skipped);
            }
        }
        let expected = local.as_ref().map(|l| l.revision);
        let committed = match self.store.put(mirrored, expected).await {
            Err(StoreError::RevisionMismatch) => bail!("the local copy changed during the pass"),
            other => other?,
        };
        self.changed(committed.seq);
        self.record_sync(
            &remote.name,
            "sync.mirror",
            Outcome::Success,
            Some(&committed.id),
            format!(
                "version {} ({} slots)",
                committed.version,
                committed.tarballs.len()
            ),
        )
        .await;
        Ok(Applied::Mirrored(downloaded))
    }

    /// Downloads one slot into the blob store, checking size and sha256 before it is promoted.
    async fn mirror_blob(
        &self,
        client: &Client,
        id: &str,
        arch: &str,
        sha256: &str,
        size: u64,
    ) -> anyhow::Result<()> {
        let response = client.tarball(id, arch).await?;
        let body = response.bytes_stream();
        // The announced size is the cap: a peer cannot push more than it declared.
        let limits = crate::upload::BodyLimits {
            max_bytes: size.max(1),
            ..self.body_limits.clone()
        };
        let received = receive(&self.blobs, body, &limits, &self.tarball_limits)
            .await
            .map_err(|e| anyhow!("{}: {}", e.code, e.message))?;
        if received.sha256 != sha256 || received.size != size {
            self.blobs.discard(received.upload).await;
            bail!(
                "slot `{arch}` arrived as {} bytes with sha256 {}, but the peer announced {size} bytes with sha256 {sha256}",
                received.size,
                received.sha256
            );
        }
        self.blobs.promote(received.upload, sha256).await?;
        Ok(())
    }

    async fn apply_tombstone(
        &self,
        remote: &RemoteRecord,
        tombstone: &Tombstone,
    ) -> anyhow::Result<Applied> {
        let Some(local) = self.store.get(&tombstone.id, &Visibility::all()).await? else {
            return Ok(Applied::Skipped);
        };
        if local.origin.as_ref().map(|o| o.remote.as_str()) != Some(remote.name.as_str()) {
            return Ok(Applied::Skipped);
        }
        match self.store.delete(&local.id, local.revision).await {
            Ok(gone) => self.changed(gone.seq),
            Err(StoreError::NotFound) => return Ok(Applied::Skipped),
            Err(other) => return Err(other.into()),
        }
        self.record_sync(
            &remote.name,
            "sync.delete",
            Outcome::Success,
            Some(&local.id),
            "deleted at the origin".into(),
        )
        .await;
        Ok(Applied::Deleted)
    }
}

/// Whether two mirrored documents say the same thing (bookkeeping fields aside).
fn same_content(a: &Artefact, b: &Artefact) -> bool {
    let strip = |doc: &Artefact| Artefact {
        revision: 0,
        seq: 0,
        origin: doc.origin.as_ref().map(|o| Origin {
            synced_at: Timestamp::from_millis(0),
            ..o.clone()
        }),
        ..doc.clone()
    };
    strip(a) == strip(b)
}
