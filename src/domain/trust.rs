//! Trusted publishing: which CI runs may trade their OIDC token for a publish key.
//!
//! A trusted publisher names an issuer, an audience and claim patterns; a verified token whose
//! claims all match gets a short-lived key with the publisher's scopes. The rules here are plain
//! functions over the publisher and the token's claims; verifying the token is `crate::oidc`.

use reliquary_client::types::{OidcFacts, PutTrustedPublisher, TrustedPublisher};
use serde_json::{Map, Value};

use super::document::{validate_remote_name, validate_scopes};
use super::id::{star_match, validate_id_pattern, MAX_ID_PATTERNS};

pub const MAX_CLAIMS: usize = 16;
const MAX_CLAIM_NAME: usize = 64;
const MAX_CLAIM_VALUE: usize = 256;
const MAX_URL: usize = 512;

/// Claims that name one repository (GitHub) or project (GitLab). A publisher pins at least one
/// of them exactly, so that no pattern can ever admit another repository's runs. (An owner or
/// group claim alone would admit all of its repositories; `sub` names one repository in the
/// providers' default format, which is why it counts, and why customising it is on the
/// operator.)
pub const IDENTITY_CLAIMS: &[&str] = &[
    "repository",
    "repository_id",
    "project_path",
    "project_id",
    "sub",
];

/// Checks a `PUT /trusted-publishers/{name}` request; each problem is one sentence.
pub fn validate_publisher(
    name: &str,
    request: &PutTrustedPublisher,
    insecure_issuer: Option<&str>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Err(why) = validate_remote_name(name) {
        problems.push(why.replace("a remote name", "a publisher name"));
    }
    if let Err(why) = validate_issuer(&request.issuer, insecure_issuer) {
        problems.push(why);
    }
    if let Some(audience) = &request.audience {
        if audience.is_empty() || audience.len() > MAX_CLAIM_VALUE || has_control(audience) {
            problems.push(format!(
                "`audience` has 1 to {MAX_CLAIM_VALUE} printable characters"
            ));
        }
    }
    if request.claims.is_empty() || request.claims.len() > MAX_CLAIMS {
        problems.push(format!("`claims` names 1 to {MAX_CLAIMS} claims"));
    }
    for (claim, pattern) in &request.claims {
        let name_ok = !claim.is_empty()
            && claim.len() <= MAX_CLAIM_NAME
            && claim
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'));
        if !name_ok {
            problems.push(format!(
                "claim name `{}` is not 1 to {MAX_CLAIM_NAME} of A-Z a-z 0-9 _ - . :",
                shown(claim)
            ));
        }
        if pattern.is_empty() || pattern.len() > MAX_CLAIM_VALUE || has_control(pattern) {
            problems.push(format!(
                "claim `{}` needs a value of 1 to {MAX_CLAIM_VALUE} printable characters",
                shown(claim)
            ));
        }
    }
    let pinned = request.claims.iter().any(|(claim, pattern)| {
        IDENTITY_CLAIMS.contains(&claim.as_str()) && !pattern.contains('*')
    });
    if !pinned {
        problems.push(format!(
            "`claims` must pin one of {} exactly (no `*`), so that no other repository's runs can match",
            IDENTITY_CLAIMS.join(", ")
        ));
    }
    if request.allowed_ids.is_empty() || request.allowed_ids.len() > MAX_ID_PATTERNS {
        problems.push(format!(
            "`allowedIds` lists 1 to {MAX_ID_PATTERNS} id patterns"
        ));
    }
    for pattern in &request.allowed_ids {
        if let Err(why) = validate_id_pattern(pattern) {
            problems.push(format!("`allowedIds`: {why}"));
        }
    }
    if request.allowed_kinds.as_ref().is_some_and(Vec::is_empty) {
        problems.push("`allowedKinds`, when given, lists at least one kind".into());
    }
    match request.allowed_category.as_deref() {
        Some("") => problems.push("`allowedCategory`, when given, is not empty".into()),
        category => problems.extend(validate_scopes(None, None, category)),
    }
    problems
}

/// An issuer is an `https://` URL without query or fragment; `insecure` allows one `http://`
/// issuer on a loopback address, for tests.
fn validate_issuer(issuer: &str, insecure: Option<&str>) -> Result<(), String> {
    if insecure == Some(issuer) {
        return Ok(());
    }
    let url = reqwest::Url::parse(issuer)
        .map_err(|_| format!("`issuer` `{}` is not a URL", shown(issuer)))?;
    if url.scheme() != "https" {
        return Err(format!(
            "`issuer` must be an https:// URL (`{}` is not; only --oidc-insecure-issuer may be http://)",
            shown(issuer)
        ));
    }
    if issuer.len() > MAX_URL || url.query().is_some() || url.fragment().is_some() {
        return Err(format!(
            "`issuer` is an https:// URL of at most {MAX_URL} bytes, without query or fragment"
        ));
    }
    Ok(())
}

/// The `--oidc-insecure-issuer` value: an `http://` URL whose host is a loopback address.
pub fn validate_insecure_issuer(issuer: &str) -> Result<(), String> {
    let url = reqwest::Url::parse(issuer).map_err(|e| format!("not a URL: {e}"))?;
    let loopback = match url.host() {
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        Some(url::Host::Domain(name)) => name == "localhost",
        None => false,
    };
    if url.scheme() != "http" || !loopback {
        return Err(format!(
            "`{issuer}` is not an http:// URL on a loopback address (the flag exists for tests)"
        ));
    }
    Ok(())
}

/// A claim's value as text, the way patterns see it: strings as they are, numbers and booleans
/// in JSON. Arrays, objects and null match nothing.
pub fn claim_text(claims: &Map<String, Value>, name: &str) -> Option<String> {
    match claims.get(name)? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The publisher among `candidates` (same issuer and audience) whose every claim pattern
/// matches; the first by name when several do. When none does, the sentence for the refusal:
/// among the publishers that trust this token's repository (their pinned identity claims
/// match), the one that came closest and its first claim that did not. A publisher of some
/// other repository is never described, so a token from anywhere cannot read the
/// configuration.
pub fn match_publisher<'a>(
    candidates: &'a [&'a TrustedPublisher],
    claims: &Map<String, Value>,
) -> Result<&'a TrustedPublisher, String> {
    let matches = |claim: &str, pattern: &str| {
        claim_text(claims, claim).is_some_and(|value| star_match(pattern, &value))
    };
    let mut closest: Option<(usize, &TrustedPublisher, &str, &str)> = None;
    for publisher in candidates {
        let trusts_repository = publisher
            .claims
            .iter()
            .filter(|(claim, _)| IDENTITY_CLAIMS.contains(&claim.as_str()))
            .all(|(claim, pattern)| matches(claim, pattern));
        let misses: Vec<(&String, &String)> = publisher
            .claims
            .iter()
            .filter(|(claim, pattern)| !matches(claim, pattern))
            .collect();
        let Some((claim, pattern)) = misses.first() else {
            return Ok(publisher);
        };
        let matched = publisher.claims.len() - misses.len();
        if trusts_repository && closest.is_none_or(|(best, ..)| matched > best) {
            closest = Some((matched, publisher, claim.as_str(), pattern.as_str()));
        }
    }
    Err(match closest {
        Some((_, publisher, claim, pattern)) => {
            let actual = match claim_text(claims, claim) {
                Some(value) => format!("the token has `{}`", shown(&value)),
                None => "the token does not carry it".into(),
            };
            format!(
                "No trusted publisher matches this token. Closest: `{}`, whose claim `{}` must match `{}`; {actual}.",
                publisher.name,
                shown(claim),
                shown(pattern)
            )
        }
        None => {
            let identity: Vec<String> = IDENTITY_CLAIMS
                .iter()
                .filter_map(|claim| {
                    claim_text(claims, claim).map(|v| format!("`{claim}` `{}`", shown(&v)))
                })
                .collect();
            format!(
                "No trusted publisher trusts the repository of this token ({}).",
                if identity.is_empty() {
                    "it carries none of the identity claims".to_owned()
                } else {
                    identity.join(", ")
                }
            )
        }
    })
}

/// The facts a slot records about the run behind its key, from GitHub's or GitLab's claims.
pub fn oidc_facts(issuer: &str, claims: &Map<String, Value>) -> OidcFacts {
    let first = |names: &[&str]| {
        names
            .iter()
            .find_map(|name| claim_text(claims, name))
            .map(|value| printable(&value, MAX_CLAIM_VALUE))
    };
    OidcFacts {
        issuer: issuer.to_owned(),
        repository: first(&["repository", "project_path"]),
        git_ref: first(&["ref"]),
        sha: first(&["sha"]),
        run_id: first(&["run_id", "pipeline_id"]),
        workflow_ref: first(&["workflow_ref", "ci_config_ref_uri"]),
    }
}

/// The name of a key issued by trusted publishing: the publisher and the run, within the
/// 64 characters a key name has.
pub fn exchanged_key_name(publisher: &str, facts: &OidcFacts) -> String {
    let run = facts.run_id.as_deref().unwrap_or("run");
    printable(&format!("oidc:{publisher}:{run}"), 64)
}

/// `value` without control or bidi characters, cut to `max_bytes` on a character boundary:
/// what a token says is shown in the UI and the audit log, and travels to mirrors, which
/// refuse anything else.
fn printable(value: &str, max_bytes: usize) -> String {
    let mut out = String::new();
    for c in value
        .chars()
        .filter(|&c| !c.is_control() && !super::document::is_bidi_control(c))
    {
        if out.len() + c.len_utf8() > max_bytes {
            break;
        }
        out.push(c);
    }
    out
}

/// Checks the OIDC facts a peer sends with a mirrored slot (they are shown, so bounded).
pub fn check_facts(facts: &OidcFacts) -> Result<(), String> {
    let fields = [
        Some(&facts.issuer),
        facts.repository.as_ref(),
        facts.git_ref.as_ref(),
        facts.sha.as_ref(),
        facts.run_id.as_ref(),
        facts.workflow_ref.as_ref(),
    ];
    let bad = fields
        .into_iter()
        .flatten()
        .any(|v| v.len() > MAX_URL || has_control(v));
    if bad {
        return Err(format!(
            "holds a value longer than {MAX_URL} bytes or with control or bidi characters"
        ));
    }
    Ok(())
}

fn has_control(value: &str) -> bool {
    value
        .chars()
        .any(|c| c.is_control() || super::document::is_bidi_control(c))
}

/// A value from a token or a request, safe to quote in a message: escaped and cut short.
fn shown(value: &str) -> String {
    let escaped: String = value
        .chars()
        .take(120)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if value.chars().count() > 120 {
        format!("{escaped}…")
    } else {
        escaped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use reliquary_client::types::Timestamp;
    use serde_json::json;
    use std::collections::BTreeMap;

    fn publisher(name: &str, claims: &[(&str, &str)]) -> TrustedPublisher {
        TrustedPublisher {
            name: name.into(),
            issuer: "https://token.actions.githubusercontent.com".into(),
            audience: "reliquary".into(),
            claims: claims
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect::<BTreeMap<_, _>>(),
            allowed_ids: vec!["acme-plugin@*".into()],
            allowed_kinds: None,
            allowed_category: None,
            created_at: Timestamp::now(),
            updated_at: Timestamp::now(),
        }
    }

    fn claims(value: Value) -> Map<String, Value> {
        value.as_object().cloned().unwrap()
    }

    #[test]
    fn every_named_claim_must_match() {
        let release = publisher(
            "release",
            &[("repository", "acme/plugin"), ("ref", "refs/tags/v1.*")],
        );
        let list = [&release];
        let tag = claims(json!({"repository": "acme/plugin", "ref": "refs/tags/v1.4.0"}));
        assert_eq!(match_publisher(&list, &tag).unwrap().name, "release");

        let branch = claims(json!({"repository": "acme/plugin", "ref": "refs/heads/main"}));
        let miss = match_publisher(&list, &branch).unwrap_err();
        assert!(
            miss.contains("`release`, whose claim `ref` must match `refs/tags/v1.*`; the token has `refs/heads/main`"),
            "{miss}"
        );

        // `*` never crosses a `/`: a tag pattern does not admit a path-shaped ref under it.
        let nested = claims(json!({"repository": "acme/plugin", "ref": "refs/tags/v1.x/evil"}));
        assert!(match_publisher(&list, &nested).is_err());
    }

    #[test]
    fn the_closest_publisher_is_named_when_none_matches() {
        let a = publisher("a", &[("repository", "acme/other")]);
        let b = publisher(
            "b",
            &[("repository", "acme/plugin"), ("environment", "prod")],
        );
        let list = [&a, &b];
        let token = claims(json!({"repository": "acme/plugin", "ref": "refs/tags/v1"}));
        let miss = match_publisher(&list, &token).unwrap_err();
        assert!(
            miss.contains("Closest: `b`, whose claim `environment` must match `prod`; the token does not carry it"),
            "{miss}"
        );
        // A publisher of another repository is never described to the token's holder.
        let other = claims(json!({"repository": "mallory/plugin", "ref": "refs/tags/v1"}));
        let miss = match_publisher(&list, &other).unwrap_err();
        assert_eq!(
            miss,
            "No trusted publisher trusts the repository of this token (`repository` `mallory/plugin`)."
        );
    }

    #[test]
    fn non_text_claims_match_nothing_and_numbers_match_as_text() {
        let p = publisher("p", &[("repository_id", "42")]);
        let list = [&p];
        assert!(match_publisher(&list, &claims(json!({"repository_id": 42}))).is_ok());
        assert!(match_publisher(&list, &claims(json!({"repository_id": ["42"]}))).is_err());
    }

    fn request(claims: &[(&str, &str)]) -> PutTrustedPublisher {
        PutTrustedPublisher {
            issuer: "https://token.actions.githubusercontent.com".into(),
            audience: None,
            claims: claims
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
            allowed_ids: vec!["acme-plugin@1".into()],
            allowed_kinds: None,
            allowed_category: None,
        }
    }

    #[test]
    fn a_publisher_pins_its_repository_exactly() {
        assert!(
            validate_publisher("ok", &request(&[("repository", "acme/plugin")]), None).is_empty()
        );
        // An owner or a group alone admits all of its repositories.
        for claim in ["repository_owner", "namespace_path"] {
            let problems = validate_publisher("p", &request(&[(claim, "acme")]), None);
            assert!(
                problems.iter().any(|p| p.contains("must pin one of")),
                "{claim}"
            );
        }
        let problems = validate_publisher("p", &request(&[("ref", "refs/tags/*")]), None);
        assert!(
            problems.iter().any(|p| p.contains("must pin one of")),
            "{problems:?}"
        );
        let problems = validate_publisher("p", &request(&[("repository", "acme/*")]), None);
        assert!(
            problems.iter().any(|p| p.contains("must pin one of")),
            "{problems:?}"
        );
    }

    #[test]
    fn issuers_are_https_unless_the_one_insecure_loopback_issuer() {
        let mut plain = request(&[("repository", "acme/plugin")]);
        plain.issuer = "http://127.0.0.1:9/".into();
        assert!(!validate_publisher("p", &plain, None).is_empty());
        assert!(validate_publisher("p", &plain, Some("http://127.0.0.1:9/")).is_empty());
        assert!(validate_insecure_issuer("http://127.0.0.1:9").is_ok());
        assert!(validate_insecure_issuer("http://example.com").is_err());
        assert!(validate_insecure_issuer("https://127.0.0.1").is_err());
    }

    #[test]
    fn facts_come_from_github_or_gitlab_claims() {
        let github = oidc_facts(
            "https://token.actions.githubusercontent.com",
            &claims(
                json!({"repository": "acme/plugin", "ref": "refs/tags/v1", "sha": "abc", "run_id": "7", "workflow_ref": "acme/plugin/.github/workflows/release.yml@refs/tags/v1"}),
            ),
        );
        assert_eq!(github.repository.as_deref(), Some("acme/plugin"));
        assert_eq!(github.run_id.as_deref(), Some("7"));
        let gitlab = oidc_facts(
            "https://gitlab.com",
            &claims(
                json!({"project_path": "acme/plugin", "pipeline_id": "9", "ci_config_ref_uri": "gitlab.com/acme/plugin//.gitlab-ci.yml@refs/heads/main"}),
            ),
        );
        assert_eq!(gitlab.repository.as_deref(), Some("acme/plugin"));
        assert_eq!(gitlab.run_id.as_deref(), Some("9"));
        assert!(gitlab.workflow_ref.is_some());
        assert_eq!(exchanged_key_name("release", &github), "oidc:release:7");

        // Whatever a token carries, the facts are what a mirror accepts.
        let odd = oidc_facts(
            "https://gitlab.com",
            &claims(
                json!({"ref": format!("v1\u{202e}\u{1b}{}", "é".repeat(400)), "run_id": "\u{202e}9"}),
            ),
        );
        assert!(check_facts(&odd).is_ok());
        assert!(odd.git_ref.as_ref().unwrap().len() <= MAX_CLAIM_VALUE);
        assert!(odd.git_ref.as_ref().unwrap().starts_with("v1é"));
        assert_eq!(exchanged_key_name("p", &odd), "oidc:p:9");
    }

    #[test]
    fn a_peers_facts_are_bounded_and_printable() {
        let mut facts = OidcFacts {
            issuer: "https://token.actions.githubusercontent.com".into(),
            ..OidcFacts::default()
        };
        assert!(check_facts(&facts).is_ok());
        facts.git_ref = Some("refs/tags/v1\u{1b}[31m".into());
        assert!(check_facts(&facts).is_err());
        facts.git_ref = Some("r".repeat(MAX_URL + 1));
        assert!(check_facts(&facts).is_err());
    }
}
