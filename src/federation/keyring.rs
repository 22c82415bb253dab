//! Which keys may sign for which registry, and through which remote.
//!
//! A registry name has one key set: the keys pinned *directly* for it, either from the remote
//! that is that registry (its own `/.well-known/reliquary`) or given by the operator as
//! `trustedKeys`. Keys a remote relays for other registries (`mirroredKeys`, for chains) are
//! trusted only for documents that arrive through that remote, only where no direct set exists,
//! and a relayed set that names a key the direct set does not hold is a conflict, never an
//! addition. So a second remote can neither override nor extend the keys of a registry another
//! remote pinned.

use std::collections::{BTreeMap, BTreeSet};

use reliquary_client::jws::TrustedKeys;
use reliquary_client::types::{Jwk, RegistryKeys};

use crate::store::RemoteRecord;

/// How a key set was pinned.
pub const SOURCE_PEER: &str = "peer";
pub const SOURCE_TRUSTED: &str = "trusted";
pub const SOURCE_RELAYED: &str = "relayed";

/// One pinned key set with where it came from.
#[derive(Clone, Debug)]
struct Pinned {
    registry: String,
    remote: String,
    source: &'static str,
    jwks: Vec<Jwk>,
    keys: TrustedKeys,
}

impl Pinned {
    fn new(registry: &str, remote: &str, source: &'static str, jwks: &[Jwk]) -> Option<Self> {
        // Sets were checked when pinned; one that no longer parses trusts nothing.
        let keys = TrustedKeys::from_jwks(jwks).ok()?;
        Some(Self {
            registry: registry.to_owned(),
            remote: remote.to_owned(),
            source,
            jwks: jwks.to_vec(),
            keys,
        })
    }

    fn kids(&self) -> BTreeSet<&str> {
        self.keys.kids().collect()
    }

    fn view(&self) -> RegistryKeys {
        RegistryKeys {
            registry: self.registry.clone(),
            keys: self.jwks.clone(),
            remote: Some(self.remote.clone()),
            source: Some(self.source.to_owned()),
        }
    }
}

/// Every key pinned on this registry, built from the remotes' configurations.
#[derive(Clone, Debug, Default)]
pub struct KeyRing {
    /// By registry name: its one direct key set.
    direct: BTreeMap<String, Pinned>,
    /// By (remote, registry): what that remote relays for a registry other than itself.
    relayed: BTreeMap<(String, String), Pinned>,
}

impl KeyRing {
    /// Builds the ring; `own` (this registry's name) is never pinned. When two remotes pinned
    /// different direct sets for one name (refused at `PUT`, but possible in old data), the
    /// remote created first keeps it — never the one whose name sorts first.
    pub fn build<'a>(own: &str, remotes: impl IntoIterator<Item = &'a RemoteRecord>) -> Self {
        let mut remotes: Vec<&RemoteRecord> = remotes.into_iter().collect();
        remotes.sort_by(|a, b| (a.config.created_at, &a.name).cmp(&(b.config.created_at, &b.name)));
        let mut ring = Self::default();
        for remote in &remotes {
            for (registry, pinned) in direct_sets(remote) {
                if registry != own {
                    ring.direct.entry(registry).or_insert(pinned);
                }
            }
        }
        for remote in &remotes {
            for relayed in &remote.config.pinned {
                let pinned_directly_here = relayed.registry == remote.config.registry
                    || remote
                        .config
                        .trusted
                        .iter()
                        .any(|t| t.registry == relayed.registry);
                if pinned_directly_here || relayed.registry == own {
                    continue;
                }
                if let Some(pinned) = Pinned::new(
                    &relayed.registry,
                    &remote.name,
                    SOURCE_RELAYED,
                    &relayed.keys,
                ) {
                    ring.relayed
                        .insert((remote.name.clone(), relayed.registry.clone()), pinned);
                }
            }
        }
        ring
    }

    /// The keys that verify a document claiming origin `registry` that arrived through
    /// `remote`; the error says why there are none.
    pub fn keys_for(&self, remote: &str, registry: &str) -> Result<&TrustedKeys, String> {
        let relayed = self.relayed.get(&(remote.to_owned(), registry.to_owned()));
        if let Some(direct) = self.direct.get(registry) {
            if let Some(relayed) = relayed {
                let direct_kids = direct.kids();
                if let Some(stranger) = relayed
                    .kids()
                    .into_iter()
                    .find(|k| !direct_kids.contains(k))
                {
                    return Err(format!(
                        "remote `{remote}` relays key `{stranger}` for registry `{registry}`, which conflicts with the keys pinned for it through remote `{}` ({})",
                        direct.remote, direct.source
                    ));
                }
            }
            return Ok(&direct.keys);
        }
        relayed.map(|r| &r.keys).ok_or_else(|| {
            format!("no keys are pinned for registry `{registry}` through remote `{remote}`")
        })
    }

    /// Every pinned set with the remote it came through: direct sets first, then relayed ones
    /// for registries with no direct set (what `/.well-known/reliquary` publishes for chains).
    pub fn published(&self) -> Vec<RegistryKeys> {
        let mut out: Vec<RegistryKeys> = self.direct.values().map(Pinned::view).collect();
        out.extend(
            self.relayed
                .values()
                .filter(|r| !self.direct.contains_key(&r.registry))
                .map(Pinned::view),
        );
        out
    }

    /// The sets pinned through one remote, for its entry in `GET /remotes` and the UI.
    pub fn through(&self, remote: &str) -> Vec<RegistryKeys> {
        self.direct
            .values()
            .chain(self.relayed.values())
            .filter(|p| p.remote == remote)
            .map(Pinned::view)
            .collect()
    }
}

/// The key ids of every set one remote pins directly, by registry.
pub fn direct_key_ids(remote: &RemoteRecord) -> Vec<(String, BTreeSet<String>)> {
    direct_sets(remote)
        .into_iter()
        .map(|(registry, pinned)| {
            let kids = pinned.kids().into_iter().map(str::to_owned).collect();
            (registry, kids)
        })
        .collect()
}

/// The direct sets one remote pins: the operator's `trustedKeys`, and the peer's own keys
/// unless the operator pinned that registry explicitly.
fn direct_sets(remote: &RemoteRecord) -> Vec<(String, Pinned)> {
    let config = &remote.config;
    let mut sets: Vec<(String, Pinned)> = config
        .trusted
        .iter()
        .filter_map(|t| {
            Pinned::new(&t.registry, &remote.name, SOURCE_TRUSTED, &t.keys)
                .map(|p| (t.registry.clone(), p))
        })
        .collect();
    if !config.trusted.iter().any(|t| t.registry == config.registry) {
        if let Some(own) = config.pinned.iter().find(|p| p.registry == config.registry) {
            if let Some(pinned) = Pinned::new(&own.registry, &remote.name, SOURCE_PEER, &own.keys) {
                sets.push((config.registry.clone(), pinned));
            }
        }
    }
    sets
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{RemoteConfig, RemoteState};
    use ed25519_dalek::SigningKey;
    use reliquary_client::jws::jwk_for;
    use reliquary_client::types::Timestamp;

    fn jwk(seed: u8) -> Jwk {
        jwk_for(&SigningKey::from_bytes(&[seed; 32]).verifying_key())
    }

    fn set(registry: &str, keys: Vec<Jwk>) -> RegistryKeys {
        RegistryKeys {
            registry: registry.into(),
            keys,
            remote: None,
            source: None,
        }
    }

    fn remote(
        name: &str,
        created: i64,
        pinned: Vec<RegistryKeys>,
        trusted: Vec<RegistryKeys>,
    ) -> RemoteRecord {
        RemoteRecord {
            name: name.into(),
            config: RemoteConfig {
                url: format!("http://{name}"),
                interval_seconds: 60,
                allowed_name_prefix: None,
                allowed_category: None,
                architectures: None,
                enabled: true,
                registry: pinned[0].registry.clone(),
                pinned,
                trusted,
                created_at: Timestamp::from_millis(created),
            },
            token: String::new(),
            state: RemoteState::default(),
        }
    }

    fn kids(keys: &TrustedKeys) -> Vec<&str> {
        keys.kids().collect()
    }

    #[test]
    fn a_direct_set_wins_and_a_conflicting_relay_is_refused() {
        let production = remote("prod", 2, vec![set("production", vec![jwk(1)])], vec![]);
        // Sorts first by name, created first too: neither may override production's keys.
        let evil = remote(
            "aaa",
            1,
            vec![set("evil", vec![jwk(9)]), set("production", vec![jwk(9)])],
            vec![],
        );
        let ring = KeyRing::build("staging", [&production, &evil]);
        assert_eq!(
            kids(ring.keys_for("prod", "production").unwrap()),
            [jwk(1).kid.as_str()]
        );
        let refused = ring.keys_for("aaa", "production").unwrap_err();
        assert!(refused.contains("conflicts"), "{refused}");
        assert_eq!(
            kids(ring.keys_for("aaa", "evil").unwrap()),
            [jwk(9).kid.as_str()]
        );
        // A direct set verifies its registry's documents whichever remote they come through.
        assert!(ring.keys_for("prod", "evil").is_ok());
    }

    #[test]
    fn relayed_keys_count_only_through_their_remote_and_trusted_keys_pin_directly() {
        let relay = remote(
            "relay",
            1,
            vec![
                set("staging", vec![jwk(2)]),
                set("production", vec![jwk(1)]),
            ],
            vec![],
        );
        let other = remote("other", 2, vec![set("other", vec![jwk(3)])], vec![]);
        let ring = KeyRing::build("dev", [&relay, &other]);
        assert!(ring.keys_for("relay", "production").is_ok());
        assert!(ring.keys_for("other", "production").is_err());
        let published = ring.published();
        assert!(published
            .iter()
            .any(|s| s.registry == "production" && s.source.as_deref() == Some(SOURCE_RELAYED)));

        let pinned = remote(
            "other",
            2,
            vec![set("other", vec![jwk(3)])],
            vec![set("production", vec![jwk(1)])],
        );
        let ring = KeyRing::build("dev", [&relay, &pinned]);
        assert!(
            ring.keys_for("other", "production").is_ok(),
            "trusted keys are direct"
        );
        assert!(
            ring.keys_for("relay", "production").is_ok(),
            "a relay that agrees is fine"
        );
        assert_eq!(ring.through("other").len(), 2);
    }

    #[test]
    fn this_registrys_own_name_is_never_pinned() {
        let peer = remote(
            "peer",
            1,
            vec![set("peer", vec![jwk(4)]), set("me", vec![jwk(9)])],
            vec![],
        );
        let ring = KeyRing::build("me", [&peer]);
        assert!(ring.keys_for("peer", "me").is_err());
        assert!(ring.published().iter().all(|s| s.registry != "me"));
    }
}
