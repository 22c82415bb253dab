//! The wire types of the Reliquary HTTP API (`shared/spec/api.md`), shared by the server and the
//! client so that the two can never drift apart.

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The portable slot every download falls back to.
pub const NOARCH: &str = "noarch";

/// An RFC 3339 UTC instant, always written with millisecond precision (`2026-11-22T01:23:45.678Z`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    /// Now, truncated to whole milliseconds so that a value survives a round trip through JSON.
    pub fn now() -> Self {
        Self::from_millis(Utc::now().timestamp_millis())
    }

    pub fn from_millis(millis: i64) -> Self {
        Self(DateTime::from_timestamp_millis(millis).unwrap_or_default())
    }

    pub fn millis(&self) -> i64 {
        self.0.timestamp_millis()
    }

    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

impl std::str::FromStr for Timestamp {
    type Err = chrono::ParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(DateTime::parse_from_rfc3339(s)?.with_timezone(&Utc)))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// Fixed when an artefact is created: a release major or a dev branch build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Release,
    Branch,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Release => "release",
            Kind::Branch => "branch",
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Kind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "release" => Ok(Kind::Release),
            "branch" => Ok(Kind::Branch),
            other => Err(format!("kind must be `release` or `branch`, not `{other}`")),
        }
    }
}

/// One per-architecture tarball of an artefact.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Slot {
    pub sha256: String,
    pub size: u64,
    pub version: String,
    pub uploaded_at: Timestamp,
    /// JWS compact serialization over the slot's signing payload (see `signing`).
    pub signature: String,
    /// A provenance bundle (e.g. sigstore) uploaded with the slot, stored as given and not
    /// verified by the registry; served at `/artefacts/{id}/tarballs/{arch}/attestation`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<BlobRef>,
    /// The key that uploaded it (not signed: who, not what; kept across mirrors).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_by: Option<PublishedBy>,
}

/// Who published a slot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PublishedBy {
    pub key_id: String,
    pub key_name: String,
    /// The CI run behind a key from trusted publishing (`POST /oidc/token`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcFacts>,
}

/// What an OIDC token from CI said about the run that published: the facts a reader needs to
/// find the workflow, commit and run. Absent claims are `None`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OidcFacts {
    pub issuer: String,
    /// GitHub `repository`, GitLab `project_path`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub repository: Option<String>,
    #[serde(default, rename = "ref", skip_serializing_if = "Option::is_none")]
    pub git_ref: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha: Option<String>,
    /// GitHub `run_id`, GitLab `pipeline_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_id: Option<String>,
    /// GitHub `workflow_ref`, GitLab `ci_config_ref_uri`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workflow_ref: Option<String>,
}

/// A stored blob by digest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlobRef {
    pub sha256: String,
    pub size: u64,
}

/// Where a mirrored artefact came from; `null` for local artefacts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Origin {
    /// The peer's registry name (its identity in signatures).
    pub registry: String,
    /// The name of the local remote it was mirrored through.
    pub remote: String,
    pub synced_at: Timestamp,
}

/// The artefact document.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Artefact {
    pub id: String,
    pub kind: Kind,
    pub package_name: String,
    pub version: String,
    pub licence: Option<String>,
    pub description: Option<String>,
    pub category: Option<String>,
    pub tarballs: BTreeMap<String, Slot>,
    pub origin: Option<Origin>,
    /// Set by `PATCH {"deprecated": "..."}`: still delivered, but hosts are told why not to use it.
    #[serde(default)]
    pub deprecated: Option<Deprecation>,
    /// The slots each architecture held before, newest first, with their original signatures;
    /// a rollback reinstates one of them. Empty until a slot is first replaced.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub history: BTreeMap<String, Vec<HistoryEntry>>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub data_updated_at: Timestamp,
    pub revision: i64,
    pub seq: i64,
}

/// A slot as it was before it was replaced: byte for byte what was served, signature included.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    #[serde(flatten)]
    pub slot: Slot,
    pub replaced_at: Timestamp,
    /// Set when a rollback withdrew this version; re-uploading it is refused (`version_yanked`).
    #[serde(default)]
    pub yanked: Option<Yank>,
}

/// Why a version was withdrawn by a rollback, and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Yank {
    pub reason: String,
    pub at: Timestamp,
}

/// One item of `GET /artefacts/{id}/history`: a history entry and the slot it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryItem {
    pub architecture: String,
    #[serde(flatten)]
    pub entry: HistoryEntry,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryPage {
    pub items: Vec<HistoryItem>,
}

/// `POST /artefacts/{id}/rollback`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Rollback {
    pub version: String,
    /// Only this slot; every slot whose history holds `version` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architecture: Option<String>,
    pub reason: String,
}

/// Why an artefact should no longer be used, and since when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deprecation {
    pub message: String,
    pub at: Timestamp,
}

impl Artefact {
    /// The slot a download for `architecture` is served from: the exact slot, else `noarch`.
    pub fn resolve_slot(&self, architecture: &str) -> Option<(&str, &Slot)> {
        self.tarballs
            .get_key_value(architecture)
            .or_else(|| self.tarballs.get_key_value(NOARCH))
            .map(|(arch, slot)| (arch.as_str(), slot))
    }
}

/// What remains of a deleted artefact, so that mirrors learn about the deletion.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tombstone {
    pub id: String,
    /// Always `true`; it is what tells a tombstone from a document in a change list.
    pub deleted: bool,
    pub kind: Kind,
    pub seq: i64,
    pub deleted_at: Timestamp,
    /// The last revision the document had; a re-created artefact continues from it.
    pub revision: i64,
}

/// One entry of the sync-mode list: a document or a tombstone.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Change {
    Deleted(Tombstone),
    Artefact(Box<Artefact>),
}

impl Change {
    pub fn seq(&self) -> i64 {
        match self {
            Change::Deleted(t) => t.seq,
            Change::Artefact(a) => a.seq,
        }
    }

    pub fn id(&self) -> &str {
        match self {
            Change::Deleted(t) => &t.id,
            Change::Artefact(a) => &a.id,
        }
    }
}

/// `GET /artefacts` in browse mode.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BrowsePage {
    pub items: Vec<Artefact>,
    pub next_cursor: Option<String>,
}

/// `GET /artefacts?since=N` in sync mode.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangePage {
    pub items: Vec<Change>,
    /// The registry's highest seq when the page was read.
    pub last_seq: i64,
    /// `true` when more changes follow this page; ask again with `since` = the last item's seq.
    pub has_more: bool,
}

/// One violation in a `422` answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

/// The body of every error answer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub errors: Option<Vec<FieldError>>,
}

/// A public signing key as published in `/.well-known/reliquary`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    pub kty: String,
    pub crv: String,
    pub x: String,
    pub kid: String,
    #[serde(rename = "use")]
    pub use_: String,
}

/// `GET /.well-known/reliquary`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WellKnown {
    pub registry: String,
    pub api_version: u32,
    pub keys: Vec<Jwk>,
    /// The keys this registry pinned for the registries it mirrors, so that a mirror of a
    /// mirror can verify signatures made at the origin.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mirrored_keys: Vec<RegistryKeys>,
}

/// The public keys of one registry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegistryKeys {
    pub registry: String,
    pub keys: Vec<Jwk>,
    /// The local remote these keys were pinned through (in `/.well-known/reliquary` and
    /// `GET /remotes`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote: Option<String>,
    /// `peer` (the remote's own keys), `trusted` (pinned by the operator) or `relayed` (the
    /// remote's keys for another registry, trusted only through that remote).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
}

/// `PUT /remotes/{name}` request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutRemote {
    pub url: String,
    /// A mirror key on the peer.
    pub token: String,
    #[serde(default = "default_interval")]
    pub interval_seconds: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_name_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_category: Option<String>,
    /// Mirror only these slots (all when absent).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<String>>,
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// Keys pinned explicitly, by registry name; they win over what any peer publishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_keys: Option<BTreeMap<String, Vec<Jwk>>>,
}

fn default_interval() -> u64 {
    60
}

fn default_true() -> bool {
    true
}

/// A remote as listed: never its token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Remote {
    pub name: String,
    pub url: String,
    pub enabled: bool,
    pub interval_seconds: u64,
    pub allowed_name_prefix: Option<String>,
    pub allowed_category: Option<String>,
    pub architectures: Option<Vec<String>>,
    /// The peer's registry name, learnt when its keys were pinned.
    pub registry: String,
    /// The peer's seq up to which everything has been applied.
    pub cursor: i64,
    /// The peer's highest seq when last seen (lag = peerLastSeq - cursor).
    pub peer_last_seq: i64,
    pub last_sync_at: Option<Timestamp>,
    pub last_success_at: Option<Timestamp>,
    pub last_error: Option<String>,
    pub mirrored_artefacts: u64,
    pub created_at: Timestamp,
    /// Every key set pinned through this remote, with its source.
    #[serde(default)]
    pub pinned_keys: Vec<RegistryKeys>,
    /// The replica that syncs this remote now, while its lease is live; `null` otherwise.
    #[serde(default)]
    pub lease: Option<RemoteLease>,
}

/// Which replica holds a remote's sync lease, and until when (it renews it while it syncs).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RemoteLease {
    pub holder: String,
    pub until: Timestamp,
    /// Whether the replica that answered is the holder.
    pub this_replica: bool,
}

/// `POST /remotes/{name}/sync`: what one pass did.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncSummary {
    pub mirrored: u64,
    pub deleted: u64,
    pub conflicts: u64,
    pub skipped: u64,
    pub cursor: i64,
    /// Tarball bytes downloaded from the peer.
    #[serde(default)]
    pub bytes: u64,
    /// The items skipped as invalid (counted in `skipped` too), with the reason; at most the
    /// first [`MAX_LISTED_INVALID`].
    #[serde(default)]
    pub invalid: Vec<InvalidItem>,
}

/// How many invalid items a pass summary lists.
pub const MAX_LISTED_INVALID: usize = 50;

/// A change a peer offered that failed validation or verification.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InvalidItem {
    pub id: Option<String>,
    pub seq: Option<i64>,
    pub reason: String,
}

/// What a key may do (see the roles table in `api.md`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Admin,
    Publish,
    Read,
    Mirror,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Publish => "publish",
            Role::Read => "read",
            Role::Mirror => "mirror",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "publish" => Ok(Role::Publish),
            "read" => Ok(Role::Read),
            "mirror" => Ok(Role::Mirror),
            other => Err(format!(
                "role must be admin, publish, read or mirror, not `{other}`"
            )),
        }
    }
}

/// An API key as listed; the token itself is never part of it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub id: String,
    pub name: String,
    pub role: Role,
    /// `rlq_` and the token's first characters, so people can tell keys apart.
    pub prefix: String,
    pub allowed_package_name: Option<String>,
    pub allowed_name_prefix: Option<String>,
    pub allowed_category: Option<String>,
    /// Id patterns a publish key may write (`*`: any run of characters except `/`).
    #[serde(default)]
    pub allowed_ids: Option<Vec<String>>,
    /// The kinds a publish key may write (a staging CI key: `["branch"]`).
    #[serde(default)]
    pub allowed_kinds: Option<Vec<Kind>>,
    pub created_at: Timestamp,
    pub expires_at: Option<Timestamp>,
    pub last_used_at: Option<Timestamp>,
    pub revoked_at: Option<Timestamp>,
    /// The trusted publisher that issued this key in exchange for a CI's OIDC token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trusted_publisher: Option<String>,
    /// The CI run the token spoke for; recorded on every slot the key publishes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oidc: Option<OidcFacts>,
}

/// `POST /keys` answer: the only time the token's plaintext exists.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct CreatedKey {
    pub token: String,
    pub key: ApiKey,
}

/// `POST /keys` request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct NewKey {
    pub name: String,
    pub role: Role,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_package_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_name_prefix: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_category: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_ids: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_kinds: Option<Vec<Kind>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<Timestamp>,
}

/// `PUT /trusted-publishers/{name}` request: which CI runs may trade their OIDC token for a
/// short-lived publish key, and the scopes that key gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PutTrustedPublisher {
    /// `https://token.actions.githubusercontent.com`, `https://gitlab.com`, ...
    pub issuer: String,
    /// The `aud` the token must carry; default: the registry's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
    /// Claim name to an exact value or a pattern (`*`: any run of characters except `/`);
    /// every one must be present in the token and match.
    pub claims: BTreeMap<String, String>,
    pub allowed_ids: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_kinds: Option<Vec<Kind>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allowed_category: Option<String>,
}

/// A trusted publisher as stored and listed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TrustedPublisher {
    pub name: String,
    pub issuer: String,
    pub audience: String,
    pub claims: BTreeMap<String, String>,
    pub allowed_ids: Vec<String>,
    pub allowed_kinds: Option<Vec<Kind>>,
    pub allowed_category: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// `POST /oidc/token` request.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcExchange {
    pub token: String,
}

/// `POST /oidc/token` answer: a publish key that expires by itself.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OidcIssued {
    pub token: String,
    pub expires_at: Timestamp,
    pub publisher: String,
}

/// A list answer without paging.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Items<T> {
    pub items: Vec<T>,
}

/// One entry of the audit log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEntry {
    pub id: String,
    pub at: Timestamp,
    pub action: String,
    /// `success`, `denied`, `conflict` or `invalid`.
    pub outcome: String,
    pub key_id: Option<String>,
    pub key_name: Option<String>,
    pub artefact_id: Option<String>,
    pub architecture: Option<String>,
    pub detail: Option<String>,
    pub remote_addr: Option<String>,
}

/// `GET /audit`.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditPage {
    pub items: Vec<AuditEntry>,
    pub next_cursor: Option<String>,
}

/// The longest artefact id accepted (npm's package-name limit).
pub const MAX_ID_LEN: usize = 214;

/// Checks an artefact id against `api.md`; the error is a sentence naming what is wrong. The
/// server refuses such ids, and the client never makes a cache path of one.
pub fn validate_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > MAX_ID_LEN {
        return Err(format!("an id has 1 to {MAX_ID_LEN} characters"));
    }
    if let Some(bad) = id
        .chars()
        .find(|c| !matches!(c, 'a'..='z' | '0'..='9' | '-' | '.' | '_' | '~' | '@' | '/'))
    {
        return Err(format!(
            "`{bad}` is not allowed in an id (use lowercase a-z, 0-9 and - . _ ~ @ /)"
        ));
    }
    if id.starts_with('.') || id.starts_with('_') {
        return Err("an id may not start with `.` or `_`".into());
    }
    let segments: Vec<&str> = id.split('/').collect();
    match segments.as_slice() {
        [_] => {}
        [scope, name] => {
            if !scope.starts_with('@') || scope.len() < 2 || name.is_empty() {
                return Err("a `/` in an id must follow a leading `@scope`".into());
            }
        }
        _ => return Err("an id has at most one `/`".into()),
    }
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err("an id may not have a `.` or `..` segment".into());
    }
    Ok(())
}
