//! Artefact ids: operator-chosen ref ids such as `acme-plugin@1` or `@acme/plugin@main`.
//!
//! The character set and the segment rules guarantee an id can never name anything outside the
//! store: ids are only ever used as database keys and never as paths, but they are safe as both.

pub use reliquary_client::types::MAX_ID_LEN;

/// Patterns a key may carry in `allowedIds`.
pub const MAX_ID_PATTERNS: usize = 32;

/// Whether `id` matches a pattern (`allowedIds`, trusted-publisher claims): `*` matches any run
/// of characters except `/`, everything else matches itself (`acme-plugin@*`, `refs/tags/v1.*`).
pub fn star_match(pattern: &str, id: &str) -> bool {
    let (pattern, id) = (pattern.as_bytes(), id.as_bytes());
    // reachable[j]: the pattern read so far can match the first j bytes of the id. Linear in
    // both lengths, however many stars (no backtracking blow-up).
    let mut reachable = vec![false; id.len() + 1];
    reachable[0] = true;
    for &p in pattern {
        if p == b'*' {
            for j in 1..=id.len() {
                reachable[j] = reachable[j] || (reachable[j - 1] && id[j - 1] != b'/');
            }
        } else {
            for j in (1..=id.len()).rev() {
                reachable[j] = reachable[j - 1] && id[j - 1] == p;
            }
            reachable[0] = false;
        }
    }
    reachable[id.len()]
}

/// An `allowedIds` pattern: an id's alphabet plus `*`, 1 to [`MAX_ID_LEN`] characters.
pub fn validate_id_pattern(pattern: &str) -> Result<(), String> {
    let alphabet = pattern
        .chars()
        .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '.' | '_' | '~' | '@' | '/' | '*'));
    if pattern.is_empty() || pattern.len() > MAX_ID_LEN || !alphabet {
        return Err(format!(
            "`{}` is not an id pattern (1 to {MAX_ID_LEN} of a-z 0-9 - . _ ~ @ / and `*`)",
            pattern.chars().take(100).collect::<String>().escape_debug()
        ));
    }
    Ok(())
}

pub use reliquary_client::types::validate_id;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_patterns_match_any_run_but_a_slash() {
        for (pattern, id, matches) in [
            ("acme-plugin@*", "acme-plugin@1", true),
            ("acme-plugin@*", "acme-plugin@main", true),
            ("acme-plugin@*", "acme-plugin-extra@1", false),
            ("acme-*@1", "acme-plugin@1", true),
            ("acme-*@1", "acme-plugin@2", false),
            ("*@1", "@acme/plugin@1", false),
            ("@acme/*@1", "@acme/plugin@1", true),
            ("*", "anything@1", true),
            ("exact@1", "exact@1", true),
            ("exact@1", "exact@12", false),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "axxbyy", false),
            ("**", "", true),
            ("a", "", false),
        ] {
            assert_eq!(star_match(pattern, id), matches, "{pattern} ~ {id}");
        }
        let long = "a".repeat(MAX_ID_LEN);
        assert!(
            star_match(&"*a".repeat(100), &long),
            "no backtracking blow-up"
        );
        assert!(validate_id_pattern("acme-*@1").is_ok());
        assert!(validate_id_pattern("ACME*").is_err());
        assert!(validate_id_pattern("").is_err());
    }
    use proptest::prelude::*;

    #[test]
    fn accepts_ref_ids() {
        for id in [
            "acme-plugin@1",
            "acme-plugin@main",
            "@acme/plugin@1",
            "a",
            "x.y_z~w@feature-1.2",
            "@s/p",
        ] {
            assert_eq!(validate_id(id), Ok(()), "{id}");
        }
    }

    #[test]
    fn refuses_what_the_spec_forbids() {
        let long = "a".repeat(MAX_ID_LEN + 1);
        for id in [
            "",
            long.as_str(),
            "Acme@1",
            "acme plugin",
            "acme/plugin",
            "@acme/plugin/x",
            "@/x",
            "@acme/",
            ".hidden",
            "_private",
            "@acme/..",
            "@acme/.",
            "..",
            "a\\b",
            "a%2fb",
            "naïve",
        ] {
            assert!(validate_id(id).is_err(), "{id:?} should be refused");
        }
        assert!(validate_id(&"a".repeat(MAX_ID_LEN)).is_ok());
    }

    proptest! {
        #[test]
        fn a_valid_id_is_a_safe_single_path_component_or_scope_pair(id in "[a-z0-9@._~/-]{1,40}") {
            if validate_id(&id).is_ok() {
                let segments: Vec<&str> = id.split('/').collect();
                prop_assert!(segments.len() <= 2);
                prop_assert!(segments.iter().all(|s| !s.is_empty() && *s != "." && *s != ".."));
                prop_assert!(!id.starts_with('/'));
            }
        }
    }
}
