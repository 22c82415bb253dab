//! Remotes: configuring peers to mirror, pinning their keys, and running a pass on demand.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::http::StatusCode;
use reliquary_client::jws::TrustedKeys;
use reliquary_client::types::{
    Jwk, PutRemote, RegistryKeys, Remote, RemoteLease, SyncSummary, Timestamp, WellKnown,
};
use reliquary_client::Client;

use super::keyring::{direct_key_ids, KeyRing};
use super::{Federation, PassError};
use crate::audit::Target;
use crate::auth::Caller;
use crate::domain::arch::validate_architecture;
use crate::domain::document::{validate_name, validate_remote_name, validate_scopes};
use crate::error::{Error, Result};
use crate::store::{RemoteConfig, RemoteRecord, RemoteState, StoreError};

impl Federation {
    /// `GET /.well-known/reliquary`: our keys, plus every key set pinned for the registries we
    /// mirror, each with the remote it came through, so that mirrors of this registry can
    /// verify signatures made at the origin.
    pub async fn well_known(&self) -> WellKnown {
        let mut well_known = self.ctx.signer.well_known();
        if let Ok(ring) = self.key_ring().await {
            well_known.mirrored_keys = ring.published();
        }
        well_known
    }

    /// Every key pinned through every remote.
    pub async fn key_ring(&self) -> Result<KeyRing> {
        let remotes = self.ctx.remotes.list_remotes().await?;
        Ok(KeyRing::build(self.ctx.signer.registry(), &remotes))
    }

    /// `PUT /remotes/{name}`: creates or replaces a remote and (re)starts its worker.
    pub async fn put_remote(
        self: &Arc<Self>,
        caller: &Caller,
        name: &str,
        request: PutRemote,
    ) -> Result<(Remote, bool)> {
        let result = self.put_remote_unaudited(caller, name, request).await;
        self.ctx
            .audit
            .record_result(
                caller,
                "remote.put",
                Target::default(),
                &result,
                |(remote, created)| {
                    format!(
                        "{} remote `{}` -> {} (registry `{}`)",
                        if *created { "created" } else { "replaced" },
                        remote.name,
                        remote.url,
                        remote.registry
                    )
                },
            )
            .await;
        result
    }

    async fn put_remote_unaudited(
        self: &Arc<Self>,
        caller: &Caller,
        name: &str,
        request: PutRemote,
    ) -> Result<(Remote, bool)> {
        caller.require_admin()?;
        validate_remote(name, &request)?;
        let existing = self.ctx.remotes.get_remote(name).await?;
        // Compared as stored: a trailing `/` is not another peer (and must not re-pin keys).
        let same_peer = existing
            .as_ref()
            .filter(|e| e.config.url == request.url.trim_end_matches('/'));
        let (registry, pinned) = match same_peer {
            Some(existing) => (
                existing.config.registry.clone(),
                existing.config.pinned.clone(),
            ),
            None => self.pin_peer_keys(&request).await?,
        };
        let trusted = trusted_keys(&request)?;
        self.check_one_key_set_per_registry(name, &registry, &pinned, &trusted)
            .await?;
        let config = RemoteConfig {
            url: request.url.trim_end_matches('/').to_owned(),
            interval_seconds: request.interval_seconds,
            allowed_name_prefix: request.allowed_name_prefix.filter(|p| !p.is_empty()),
            allowed_category: request.allowed_category.filter(|c| !c.is_empty()),
            architectures: request.architectures,
            enabled: request.enabled,
            registry,
            pinned,
            trusted,
            created_at: existing
                .as_ref()
                .map_or_else(|| self.ctx.clock.now(), |e| e.config.created_at),
        };
        let created = self
            .ctx
            .remotes
            .put_remote(name, &config, &request.token)
            .await?;
        if let Some(existing) = &existing {
            // Another peer or other filters: what was skipped before may be wanted now.
            let refiltered = existing.config.url != config.url
                || existing.config.allowed_name_prefix != config.allowed_name_prefix
                || existing.config.allowed_category != config.allowed_category
                || existing.config.architectures != config.architectures
                // Items refused for want of a key may verify now.
                || existing.config.trusted != config.trusted;
            if refiltered {
                self.ctx
                    .remotes
                    .set_remote_state(name, &RemoteState::default())
                    .await?;
            }
        }
        if config.enabled {
            self.restart(name);
        } else {
            self.stop(name);
        }
        let record = self
            .ctx
            .remotes
            .get_remote(name)
            .await?
            .ok_or_else(|| Error::internal("a remote vanished right after it was written"))?;
        Ok((
            self.remote_view(&record, &self.key_ring().await?).await?,
            created,
        ))
    }

    /// Fetches the peer's `/.well-known/reliquary` with the mirror token and pins its keys.
    async fn pin_peer_keys(&self, request: &PutRemote) -> Result<(String, Vec<RegistryKeys>)> {
        let client = Client::builder(&request.url)
            .token(request.token.clone())
            .build()
            .map_err(|e| Error::bad_request("invalid_remote", e.to_string()))?;
        let well_known = client.well_known().await.map_err(|e| {
            Error::new(
                StatusCode::BAD_GATEWAY,
                "remote_unreachable",
                format!("Cannot read the peer's /.well-known/reliquary to pin its keys: {e}"),
            )
        })?;
        if well_known.registry == self.ctx.signer.registry() {
            return Err(Error::bad_request(
                "remote_is_self",
                format!("The peer is named `{}`, like this registry; a registry does not mirror itself.", well_known.registry),
            ));
        }
        TrustedKeys::from_jwks(&well_known.keys)
            .map_err(|e| Error::new(StatusCode::BAD_GATEWAY, "remote_invalid_keys", e))?;
        if let Err(why) = validate_name(&well_known.registry) {
            return Err(Error::new(
                StatusCode::BAD_GATEWAY,
                "remote_invalid_keys",
                format!("The peer's registry name is not acceptable: {why}."),
            ));
        }
        let mut pinned = vec![RegistryKeys {
            registry: well_known.registry.clone(),
            keys: well_known.keys,
            remote: None,
            source: None,
        }];
        // Relayed sets are kept per registry (the union of what the peer lists for it), and
        // only well-formed ones: they are trusted only through this remote, and only where no
        // registry-owned set exists.
        let mut relayed: BTreeMap<String, Vec<Jwk>> = BTreeMap::new();
        if well_known.mirrored_keys.len() > MAX_RELAYED_SETS
            || pinned[0].keys.len() > MAX_KEYS_PER_SET
            || well_known
                .mirrored_keys
                .iter()
                .any(|set| set.keys.len() > MAX_KEYS_PER_SET)
        {
            return Err(Error::new(
                StatusCode::BAD_GATEWAY,
                "remote_invalid_keys",
                format!("The peer lists more keys than a registry has (at most {MAX_RELAYED_SETS} registries of {MAX_KEYS_PER_SET} keys)."),
            ));
        }
        for set in well_known.mirrored_keys {
            let usable = set.registry != self.ctx.signer.registry()
                && set.registry != well_known.registry
                && validate_name(&set.registry).is_ok()
                && TrustedKeys::from_jwks(&set.keys).is_ok();
            if usable {
                let keys = relayed.entry(set.registry).or_default();
                for key in set.keys {
                    if !keys.contains(&key) {
                        keys.push(key);
                    }
                }
            }
        }
        pinned.extend(relayed.into_iter().map(|(registry, keys)| RegistryKeys {
            registry,
            keys,
            remote: None,
            source: None,
        }));
        Ok((well_known.registry, pinned))
    }

    /// A registry name has one key set: refuses a remote whose own keys, or whose
    /// `trustedKeys`, differ from the set another remote already pinned for that registry.
    async fn check_one_key_set_per_registry(
        &self,
        name: &str,
        registry: &str,
        pinned: &[RegistryKeys],
        trusted: &[RegistryKeys],
    ) -> Result<()> {
        let remotes = self.ctx.remotes.list_remotes().await?;
        let own_set = pinned
            .iter()
            .find(|p| p.registry == registry)
            .filter(|_| !trusted.iter().any(|t| t.registry == registry));
        for set in trusted.iter().chain(own_set) {
            let offered = TrustedKeys::from_jwks(&set.keys)
                .map_err(|e| Error::bad_request("invalid_remote", e))?;
            let offered: BTreeSet<String> = offered.kids().map(str::to_owned).collect();
            // Against every set pinned directly for that name, through any remote — this one's
            // previous pin included: a peer that changes its keys is re-pinned only explicitly.
            for remote in &remotes {
                let previous_of_this_remote = remote.name == name;
                if previous_of_this_remote && !trusted.is_empty() {
                    continue;
                }
                for (other_registry, kids) in direct_key_ids(remote) {
                    if other_registry == set.registry && kids != offered {
                        let how = if previous_of_this_remote {
                            "This remote pinned other keys for it before; if the peer rotated its keys, pin the new ones explicitly with trustedKeys.".to_owned()
                        } else {
                            format!("Remote `{}` pinned other keys for it; a registry name has one key set. Pin the same keys (trustedKeys), or change the other remote first.", remote.name)
                        };
                        return Err(Error::conflict(
                            "registry_keys_conflict",
                            format!(
                                "Registry `{}`'s keys differ from those pinned already. {how}",
                                set.registry
                            ),
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    pub async fn list_remotes(&self, caller: &Caller) -> Result<Vec<Remote>> {
        caller.require_admin()?;
        let mut views = Vec::new();
        let records = self.ctx.remotes.list_remotes().await?;
        let ring = KeyRing::build(self.ctx.signer.registry(), &records);
        for record in &records {
            views.push(self.remote_view(record, &ring).await?);
        }
        Ok(views)
    }

    /// `DELETE /remotes/{name}`: stops mirroring; with `purge`, deletes what it mirrored.
    pub async fn delete_remote(
        self: &Arc<Self>,
        caller: &Caller,
        name: &str,
        purge: bool,
    ) -> Result<Remote> {
        let result = async {
            caller.require_admin()?;
            let record = self
                .ctx
                .remotes
                .get_remote(name)
                .await?
                .ok_or_else(|| remote_not_found(name))?;
            self.stop(name);
            let view = self.remote_view(&record, &self.key_ring().await?).await?;
            if record.config.enabled {
                // Disabled first, so that no replica's worker (nor this one's reconcile) mirrors
                // anything more while the purge runs; a failed purge leaves it disabled, and
                // retrying the DELETE finishes it.
                let disabled = RemoteConfig {
                    enabled: false,
                    ..record.config.clone()
                };
                self.ctx
                    .remotes
                    .put_remote(name, &disabled, &record.token)
                    .await?;
            }
            if purge {
                for (id, revision) in self.ctx.remotes.mirrored_by(name).await? {
                    match self.ctx.artefacts.delete(&id, revision).await {
                        Ok(tombstone) => self.ctx.changes.changed(tombstone.seq),
                        // Gone or changed meanwhile: nothing of this remote's left to purge.
                        Err(StoreError::NotFound | StoreError::RevisionMismatch) => {}
                        // Anything else stops the purge, with the remote still configured, so
                        // that retrying the DELETE finishes it.
                        Err(other) => return Err(other.into()),
                    }
                }
            }
            self.ctx.remotes.delete_remote(name).await?;
            Ok(view)
        }
        .await;
        self.ctx
            .audit
            .record_result(
                caller,
                "remote.delete",
                Target::default(),
                &result,
                |remote| {
                    format!(
                        "deleted remote `{}`{}",
                        remote.name,
                        if purge {
                            " and purged its artefacts"
                        } else {
                            ""
                        }
                    )
                },
            )
            .await;
        result
    }

    /// `POST /remotes/{name}/sync`: one pass now.
    /// `POST /remotes/{name}/sync`: one pass now. With `from_start`, the pass reads the peer's
    /// feed from seq 0, so items refused earlier (a peer's transient fault) are judged again;
    /// what is mirrored already compares equal and costs no download.
    pub async fn sync_remote(
        &self,
        caller: &Caller,
        name: &str,
        from_start: bool,
    ) -> Result<SyncSummary> {
        caller.require_admin()?;
        let lock = self.pass_lock(name);
        let _guard = lock.lock().await;
        let mut record = self
            .ctx
            .remotes
            .get_remote(name)
            .await?
            .ok_or_else(|| remote_not_found(name))?;
        if from_start {
            record.state.cursor = 0;
        }
        self.ctx
            .sync_pass(&record, None)
            .await
            .map_err(|error| match error {
                PassError::Store(error) => error.into(),
                PassError::Blobs(error) => error.into(),
                PassError::Stopped(why) => Error::new(
                    StatusCode::BAD_GATEWAY,
                    "sync_failed",
                    format!("The sync pass failed: {why}"),
                ),
            })
    }

    /// A remote as listed; `ring` is built once per request, not once per remote.
    async fn remote_view(&self, record: &RemoteRecord, ring: &KeyRing) -> Result<Remote> {
        let config = &record.config;
        Ok(Remote {
            name: record.name.clone(),
            url: config.url.clone(),
            enabled: config.enabled,
            interval_seconds: config.interval_seconds,
            allowed_name_prefix: config.allowed_name_prefix.clone(),
            allowed_category: config.allowed_category.clone(),
            architectures: config.architectures.clone(),
            registry: config.registry.clone(),
            cursor: record.state.cursor,
            peer_last_seq: record.state.peer_last_seq,
            last_sync_at: record.state.last_sync_at,
            last_success_at: record.state.last_success_at,
            last_error: record.state.last_error.clone(),
            mirrored_artefacts: self.ctx.remotes.mirrored_by(&record.name).await?.len() as u64,
            created_at: config.created_at,
            pinned_keys: ring.through(&record.name),
            lease: self
                .ctx
                .remotes
                .lease(&record.name)
                .await?
                .filter(|lease| lease.expires_at > Timestamp::now())
                .map(|lease| RemoteLease {
                    this_replica: lease.holder == self.holder,
                    holder: lease.holder,
                    until: lease.expires_at,
                }),
        })
    }
}

fn remote_not_found(name: &str) -> Error {
    Error::not_found("remote_not_found", format!("No remote named `{name}`."))
}

/// A registry publishes a handful of keys (rotation keeps an old one or two), and relays the
/// sets of the few registries it mirrors; far more is a peer trying to fill our store.
const MAX_KEYS_PER_SET: usize = 16;
const MAX_RELAYED_SETS: usize = 64;

/// `trustedKeys` as stored: each set a well-formed Ed25519 JWK set for a well-formed name.
fn trusted_keys(request: &PutRemote) -> Result<Vec<RegistryKeys>> {
    let given = request.trusted_keys.iter().flatten();
    if given.clone().count() > MAX_RELAYED_SETS
        || given.clone().any(|(_, keys)| keys.len() > MAX_KEYS_PER_SET)
    {
        return Err(Error::bad_request(
            "invalid_remote",
            format!("`trustedKeys` holds at most {MAX_RELAYED_SETS} registries of {MAX_KEYS_PER_SET} keys."),
        ));
    }
    let mut sets = Vec::new();
    for (registry, keys) in request.trusted_keys.iter().flatten() {
        validate_name(registry).map_err(|why| {
            Error::bad_request("invalid_remote", format!("`trustedKeys`: {why}."))
        })?;
        if keys.is_empty() {
            return Err(Error::bad_request(
                "invalid_remote",
                format!("`trustedKeys` for `{registry}` lists no key."),
            ));
        }
        TrustedKeys::from_jwks(keys).map_err(|why| {
            Error::bad_request(
                "invalid_remote",
                format!("`trustedKeys` for `{registry}`: {why}."),
            )
        })?;
        sets.push(RegistryKeys {
            registry: registry.clone(),
            keys: keys.clone(),
            remote: None,
            source: None,
        });
    }
    Ok(sets)
}

fn validate_remote(name: &str, request: &PutRemote) -> Result<()> {
    let mut problems = Vec::new();
    if let Err(why) = validate_remote_name(name) {
        problems.push(why);
    }
    problems.extend(validate_scopes(
        None,
        request
            .allowed_name_prefix
            .as_deref()
            .filter(|s| !s.is_empty()),
        request
            .allowed_category
            .as_deref()
            .filter(|s| !s.is_empty()),
    ));
    if !(request.url.starts_with("http://") || request.url.starts_with("https://")) {
        problems.push("`url` must be an http:// or https:// URL".into());
    }
    if request.token.trim().is_empty() {
        problems.push("`token` (a mirror key on the peer) is required".into());
    }
    if !(1..=86_400).contains(&request.interval_seconds) {
        problems.push("`intervalSeconds` must be between 1 and 86400".into());
    }
    for arch in request.architectures.iter().flatten() {
        if let Err(why) = validate_architecture(arch) {
            problems.push(why);
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::bad_request(
            "invalid_remote",
            format!("{}.", problems.join("; ")),
        ))
    }
}
