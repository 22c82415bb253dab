//! What the templates show, computed in Rust: chips, human sizes, "5 minutes ago".

use reliquary_client::types::{
    ApiKey, Artefact, AuditEntry, Kind, OidcFacts, Remote, Timestamp, TrustedPublisher,
};

/// `release`, `branch` or `mirrored`.
pub fn chip(doc: &Artefact) -> &'static str {
    match (&doc.origin, doc.kind) {
        (Some(_), _) => "mirrored",
        (None, Kind::Release) => "release",
        (None, Kind::Branch) => "branch",
    }
}

pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub fn ago(at: Timestamp, now: Timestamp) -> String {
    let seconds = (now.millis() - at.millis()).max(0) / 1000;
    let (n, unit) = match seconds {
        0..=59 => return "just now".into(),
        60..=3599 => (seconds / 60, "minute"),
        3600..=86_399 => (seconds / 3600, "hour"),
        86_400..=2_591_999 => (seconds / 86_400, "day"),
        _ => (seconds / 2_592_000, "month"),
    };
    format!("{n} {unit}{} ago", if n == 1 { "" } else { "s" })
}

/// An id as it appears in a `/ui/artefacts/{id}` link: one percent-encoded segment.
pub fn path_id(id: &str) -> String {
    reliquary_client::client::encode_id(id)
}

pub struct ArtefactRow {
    pub id: String,
    pub path_id: String,
    pub chip: &'static str,
    pub version: String,
    pub architectures: String,
    pub category: String,
    pub data_updated_at: String,
    pub changed_ago: String,
}

impl ArtefactRow {
    pub fn of(doc: &Artefact, now: Timestamp) -> Self {
        Self {
            id: doc.id.clone(),
            path_id: path_id(&doc.id),
            chip: chip(doc),
            version: doc.version.clone(),
            architectures: doc.tarballs.keys().cloned().collect::<Vec<_>>().join(", "),
            category: doc.category.clone().unwrap_or_default(),
            data_updated_at: doc.data_updated_at.to_string(),
            changed_ago: ago(doc.data_updated_at, now),
        }
    }
}

pub struct SlotView {
    pub architecture: String,
    pub version: String,
    pub size: String,
    pub sha256: String,
    pub sha256_short: String,
    pub uploaded_at: String,
    pub signature_status: &'static str,
    pub signature_class: &'static str,
    pub download: String,
    /// The key that uploaded it, by name (and id), or `—`.
    pub published_by: String,
    /// The CI run behind a trusted-publishing key: repository, ref, commit, run.
    pub published_oidc: Option<String>,
}

/// One history entry on the artefact page.
pub struct HistoryRow {
    pub architecture: String,
    pub version: String,
    pub sha256: String,
    pub sha256_short: String,
    pub uploaded_at: String,
    pub replaced_at: String,
    /// `Some((reason, at))` when a rollback withdrew it.
    pub yanked: Option<(String, String)>,
}

impl HistoryRow {
    pub fn of(item: &reliquary_client::types::HistoryItem) -> Self {
        let entry = &item.entry;
        Self {
            architecture: item.architecture.clone(),
            version: entry.slot.version.clone(),
            sha256: entry.slot.sha256.clone(),
            sha256_short: entry.slot.sha256.chars().take(12).collect(),
            uploaded_at: entry.slot.uploaded_at.to_string(),
            replaced_at: entry.replaced_at.to_string(),
            yanked: entry
                .yanked
                .as_ref()
                .map(|y| (y.reason.clone(), y.at.to_string())),
        }
    }
}

pub struct RemoteRow {
    pub name: String,
    pub url: String,
    pub registry: String,
    pub state: &'static str,
    pub last_success: String,
    pub lag: i64,
    pub mirrored: u64,
    pub last_error: String,
    /// One line per pinned key set: registry, source and key ids.
    pub pinned_keys: Vec<String>,
    /// Which replica syncs it now, and until when its lease runs.
    pub lease: String,
}

impl RemoteRow {
    pub fn of(remote: &Remote, now: Timestamp) -> Self {
        Self {
            name: remote.name.clone(),
            url: remote.url.clone(),
            registry: remote.registry.clone(),
            state: match (remote.enabled, &remote.last_error) {
                (false, _) => "disabled",
                (true, Some(_)) => "failing",
                (true, None) => "ok",
            },
            last_success: remote
                .last_success_at
                .map_or_else(|| "never".into(), |at| ago(at, now)),
            lag: remote.peer_last_seq - remote.cursor,
            mirrored: remote.mirrored_artefacts,
            last_error: remote.last_error.clone().unwrap_or_default(),
            pinned_keys: remote
                .pinned_keys
                .iter()
                .map(|set| {
                    let kids: Vec<&str> = set.keys.iter().map(|k| k.kid.as_str()).collect();
                    format!(
                        "{} ({}): {}",
                        set.registry,
                        set.source.as_deref().unwrap_or("peer"),
                        kids.join(", ")
                    )
                })
                .collect(),
            lease: remote.lease.as_ref().map_or_else(
                || "no replica holds it".to_owned(),
                |lease| {
                    let here = if lease.this_replica {
                        " (this replica)"
                    } else {
                        ""
                    };
                    format!("{}{here}, until {}", lease.holder, lease.until)
                },
            ),
        }
    }
}

pub struct KeyRow {
    pub id: String,
    pub name: String,
    pub role: &'static str,
    pub prefix: String,
    pub scopes: String,
    pub created: String,
    pub last_used: String,
    pub status: String,
    pub revocable: bool,
}

impl KeyRow {
    pub fn of(key: &ApiKey, now: Timestamp) -> Self {
        let mut scopes: Vec<String> = [
            ("package", &key.allowed_package_name),
            ("prefix", &key.allowed_name_prefix),
            ("category", &key.allowed_category),
        ]
        .iter()
        .filter_map(|(label, value)| value.as_ref().map(|v| format!("{label}={v}")))
        .collect();
        if let Some(ids) = &key.allowed_ids {
            scopes.push(format!("ids={}", ids.join(",")));
        }
        if let Some(kinds) = &key.allowed_kinds {
            let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            scopes.push(format!("kinds={}", kinds.join(",")));
        }
        let status = match (key.revoked_at, key.expires_at) {
            (Some(at), _) => format!("revoked {}", ago(at, now)),
            (None, Some(at)) if at <= now => "expired".into(),
            (None, Some(at)) => format!("expires {at}"),
            (None, None) => "active".into(),
        };
        Self {
            id: key.id.clone(),
            name: key.name.clone(),
            role: key.role.as_str(),
            prefix: key.prefix.clone(),
            scopes: if scopes.is_empty() {
                "—".into()
            } else {
                scopes.join(", ")
            },
            created: key.created_at.to_string(),
            last_used: key
                .last_used_at
                .map_or_else(|| "never".into(), |at| ago(at, now)),
            revocable: key.revoked_at.is_none(),
            status,
        }
    }
}

pub struct AuditRow {
    pub at: String,
    pub action: String,
    pub outcome: String,
    pub key: String,
    pub artefact: String,
    pub detail: String,
    pub remote_addr: String,
}

impl AuditRow {
    pub fn of(entry: &AuditEntry) -> Self {
        let artefact = match (&entry.artefact_id, &entry.architecture) {
            (Some(id), Some(arch)) => format!("{id} [{arch}]"),
            (Some(id), None) => id.clone(),
            _ => String::new(),
        };
        Self {
            at: entry.at.to_string(),
            action: entry.action.clone(),
            outcome: entry.outcome.clone(),
            key: entry.key_name.clone().unwrap_or_default(),
            artefact,
            detail: entry.detail.clone().unwrap_or_default(),
            remote_addr: entry.remote_addr.clone().unwrap_or_default(),
        }
    }
}

/// One line about the CI run behind a slot: where, which ref and commit, which run.
pub fn oidc_line(facts: &OidcFacts) -> String {
    let mut parts = vec![format!("OIDC {}", facts.issuer)];
    if let Some(repository) = &facts.repository {
        parts.push(repository.clone());
    }
    if let Some(git_ref) = &facts.git_ref {
        parts.push(git_ref.clone());
    }
    if let Some(sha) = &facts.sha {
        parts.push(format!(
            "commit {}",
            sha.chars().take(12).collect::<String>()
        ));
    }
    if let Some(run) = &facts.run_id {
        parts.push(format!("run {run}"));
    }
    if let Some(workflow) = &facts.workflow_ref {
        parts.push(workflow.clone());
    }
    parts.join(" · ")
}

/// A trusted publisher on the keys page.
pub struct PublisherRow {
    pub name: String,
    pub issuer: String,
    pub audience: String,
    pub claims: String,
    pub scopes: String,
}

impl PublisherRow {
    pub fn of(p: &TrustedPublisher) -> Self {
        let mut scopes = vec![format!("ids={}", p.allowed_ids.join(","))];
        if let Some(kinds) = &p.allowed_kinds {
            let kinds: Vec<&str> = kinds.iter().map(|k| k.as_str()).collect();
            scopes.push(format!("kinds={}", kinds.join(",")));
        }
        if let Some(category) = &p.allowed_category {
            scopes.push(format!("category={category}"));
        }
        Self {
            name: p.name.clone(),
            issuer: p.issuer.clone(),
            audience: p.audience.clone(),
            claims: p
                .claims
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(", "),
            scopes: scopes.join(", "),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_ages_read_like_a_person_writes_them() {
        assert_eq!(human_bytes(512), "512 B");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(5 << 30), "5.0 GiB");
        let now = Timestamp::from_millis(10_000_000_000);
        assert_eq!(ago(now, now), "just now");
        assert_eq!(
            ago(Timestamp::from_millis(now.millis() - 60_000), now),
            "1 minute ago"
        );
        assert_eq!(
            ago(Timestamp::from_millis(now.millis() - 7_200_000), now),
            "2 hours ago"
        );
        assert_eq!(
            ago(Timestamp::from_millis(now.millis() - 3 * 86_400_000), now),
            "3 days ago"
        );
    }
}
