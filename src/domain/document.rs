//! The rules every artefact document obeys, whichever way it enters the store: an upload, a
//! mirrored document from a peer, or a legacy import. A peer cannot plant what a local upload
//! could not, so all three run [`validate_document`] before a write.

use reliquary_client::archive::truncate_chars;
use reliquary_client::types::{Artefact, FieldError, Slot};
use semver::Version;

use super::arch::validate_architecture;
use super::id::validate_id;
use super::lifecycle::MAX_HISTORY_ENTRIES;

/// `description` is stored cut to this many characters.
pub const MAX_DESCRIPTION_CHARS: usize = 1024;
/// `licence` is stored cut to this many characters.
pub const MAX_LICENCE_CHARS: usize = 128;
/// Key, remote, publisher and registry names: 1 to this many printable characters.
pub const MAX_NAME_CHARS: usize = 64;
/// A JWS over the signing payload is a few hundred bytes; anything far larger is not one.
const MAX_SIGNATURE_BYTES: usize = 4096;
/// Slots per artefact: one per architecture a plugin ships for, with room to spare.
pub const MAX_SLOTS: usize = 64;
/// npm's limit for a package name.
const MAX_PACKAGE_NAME_LEN: usize = 214;

/// Cuts the free-text fields to their stored bounds (they are not signed, so cutting them
/// never breaks a signature).
pub fn bound_text_fields(doc: &mut Artefact) {
    let cut = |text: &mut String, max: usize| {
        let keep = truncate_chars(text, max).len();
        text.truncate(keep);
    };
    for (field, max) in [
        (doc.description.as_mut(), MAX_DESCRIPTION_CHARS),
        (doc.licence.as_mut(), MAX_LICENCE_CHARS),
        (
            doc.deprecated.as_mut().map(|d| &mut d.message),
            MAX_DESCRIPTION_CHARS,
        ),
    ] {
        if let Some(text) = field {
            cut(text, max);
        }
    }
    for entry in doc.history.values_mut().flatten() {
        if let Some(yank) = &mut entry.yanked {
            cut(&mut yank.reason, MAX_DESCRIPTION_CHARS);
        }
    }
}

/// Checks every field of a document a peer or an importer hands us; lists every violation.
pub fn validate_document(doc: &Artefact) -> Result<(), Vec<FieldError>> {
    let mut problems = Vec::new();
    let mut check = |field: &str, result: Result<(), String>| {
        if let Err(message) = result {
            problems.push(FieldError {
                field: field.to_owned(),
                message,
            });
        }
    };
    check("id", validate_id(&doc.id));
    check("packageName", check_package_name(&doc.package_name));
    check("version", check_semver(&doc.version));
    if let Some(category) = &doc.category {
        check("category", validate_category(category));
    }
    let deprecation = doc.deprecated.as_ref().map(|d| &d.message);
    for (field, text, max) in [
        (
            "description",
            doc.description.as_ref(),
            MAX_DESCRIPTION_CHARS,
        ),
        ("licence", doc.licence.as_ref(), MAX_LICENCE_CHARS),
        ("deprecated.message", deprecation, MAX_DESCRIPTION_CHARS),
    ] {
        if text.is_some_and(|t| t.chars().count() > max) {
            check(field, Err(format!("is longer than {max} characters")));
        }
    }
    if let Some(origin) = &doc.origin {
        check("origin.registry", validate_name(&origin.registry));
    }
    if doc.tarballs.is_empty() {
        check("tarballs", Err("a document has at least one slot".into()));
    }
    if doc.tarballs.len() > MAX_SLOTS {
        check(
            "tarballs",
            Err(format!("a document has at most {MAX_SLOTS} slots")),
        );
    }
    let mut check_slot = |field: &dyn Fn(&str) -> String, slot: &Slot| {
        check(&field("version"), check_semver(&slot.version));
        check(&field("sha256"), check_sha256(&slot.sha256));
        if slot.signature.len() > MAX_SIGNATURE_BYTES {
            check(
                &field("signature"),
                Err(format!("is longer than {MAX_SIGNATURE_BYTES} bytes")),
            );
        }
        if let Some(attestation) = &slot.attestation {
            check(&field("attestation"), check_sha256(&attestation.sha256));
        }
        if let Some(by) = &slot.published_by {
            check(&field("publishedBy/keyName"), validate_name(&by.key_name));
            if by.key_id.is_empty() || by.key_id.len() > MAX_NAME_CHARS {
                check(
                    &field("publishedBy/keyId"),
                    Err(format!("has 1 to {MAX_NAME_CHARS} characters")),
                );
            }
            if let Some(oidc) = &by.oidc {
                check(
                    &field("publishedBy/oidc"),
                    crate::domain::trust::check_facts(oidc),
                );
            }
        }
    };
    for (arch, slot) in &doc.tarballs {
        let field = |name: &str| format!("tarballs/{}/{name}", truncate_chars(arch, 40));
        check_slot(&field, slot);
    }
    for (arch, entries) in &doc.history {
        for (index, entry) in entries.iter().enumerate() {
            let field = |name: &str| format!("history/{}/{index}/{name}", truncate_chars(arch, 40));
            check_slot(&field, &entry.slot);
        }
    }
    let mut check = |field: &str, result: Result<(), String>| {
        if let Err(message) = result {
            problems.push(FieldError {
                field: field.to_owned(),
                message,
            });
        }
    };
    for arch in doc.tarballs.keys() {
        check(
            &format!("tarballs/{}", truncate_chars(arch, 40)),
            validate_architecture(arch),
        );
    }
    if doc.history.len() > MAX_SLOTS {
        check(
            "history",
            Err(format!(
                "a document has history for at most {MAX_SLOTS} slots"
            )),
        );
    }
    for (arch, entries) in &doc.history {
        let field = format!("history/{}", truncate_chars(arch, 40));
        check(&field, validate_architecture(arch));
        if entries.len() > MAX_HISTORY_ENTRIES {
            check(
                &field,
                Err(format!(
                    "a slot keeps at most {MAX_HISTORY_ENTRIES} history entries"
                )),
            );
        }
        for yank in entries.iter().filter_map(|e| e.yanked.as_ref()) {
            if yank.reason.chars().count() > MAX_DESCRIPTION_CHARS {
                check(
                    &field,
                    Err(format!(
                        "a yank reason is longer than {MAX_DESCRIPTION_CHARS} characters"
                    )),
                );
            }
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems)
    }
}

/// One line for a log or an audit entry: every violation, `field: message`.
pub fn describe_problems(problems: &[FieldError]) -> String {
    problems
        .iter()
        .map(|p| format!("{}: {}", p.field, p.message))
        .collect::<Vec<_>>()
        .join("; ")
}

/// npm's rules for a package name, the part that matters for a registry: lowercase, URL-safe,
/// at most 214 characters, optionally scoped.
pub fn check_package_name(name: &str) -> Result<(), String> {
    let plain = |part: &str| {
        !part.is_empty()
            && !part.starts_with('.')
            && !part.starts_with('_')
            && part
                .chars()
                .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '.' | '_' | '~'))
    };
    let valid = name.len() <= MAX_PACKAGE_NAME_LEN
        && match name.strip_prefix('@').and_then(|s| s.split_once('/')) {
            Some((scope, bare)) => plain(scope) && plain(bare),
            None => plain(name),
        };
    if valid {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a valid npm package name (lowercase, URL-safe, optionally `@scope/name`)",
            truncate_chars(name, 100).escape_debug()
        ))
    }
}

/// Categories are short labels: the same alphabet as ids, without `@` and `/`.
pub fn validate_category(category: &str) -> Result<(), String> {
    let ok = !category.is_empty()
        && category.len() <= 64
        && category
            .chars()
            .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '.' | '_'));
    if ok {
        Ok(())
    } else {
        Err(format!(
            "`{}` is not a category: use 1 to 64 of a-z 0-9 - . _",
            truncate_chars(category, 100).escape_debug()
        ))
    }
}

/// The scopes a key or a remote may carry, checked with the same rules as what they scope:
/// `allowedPackageName` is a package name, `allowedCategory` a category, `allowedNamePrefix` the
/// start of an id (so of the id alphabet). Returns every violation.
pub fn validate_scopes(
    package_name: Option<&str>,
    name_prefix: Option<&str>,
    category: Option<&str>,
) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(Err(why)) = package_name.map(check_package_name) {
        problems.push(format!("`allowedPackageName`: {why}"));
    }
    if let Some(prefix) = name_prefix {
        let id_alphabet = prefix
            .chars()
            .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '.' | '_' | '~' | '@' | '/'));
        if prefix.is_empty() || prefix.len() > super::id::MAX_ID_LEN || !id_alphabet {
            problems.push(format!(
                "`allowedNamePrefix` `{}` is not the start of an id (lowercase a-z, 0-9 and - . _ ~ @ /)",
                truncate_chars(prefix, 100).escape_debug()
            ));
        }
    }
    if let Some(Err(why)) = category.map(validate_category) {
        problems.push(format!("`allowedCategory`: {why}"));
    }
    problems
}

/// A remote's name is also a path segment and a metrics label: a short slug.
pub fn validate_remote_name(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= MAX_NAME_CHARS
        && name
            .chars()
            .all(|c| matches!(c, 'a'..='z' | '0'..='9' | '-' | '_' | '.'))
        && !name.starts_with('.');
    if ok {
        Ok(())
    } else {
        Err("a remote name has 1 to 64 of a-z 0-9 - _ . and does not start with `.`".into())
    }
}

/// Names people give to keys, remotes and publishers, and registry names: 1 to 64 printable
/// characters — no control characters, and none of the bidi controls that make a name read
/// differently from what it is (CVE-2021-42574, "Trojan Source").
pub fn validate_name(name: &str) -> Result<(), String> {
    let count = name.chars().count();
    if count == 0 || count > MAX_NAME_CHARS || name.trim().is_empty() {
        return Err(format!(
            "a name has 1 to {MAX_NAME_CHARS} printable characters"
        ));
    }
    if let Some(bad) = name.chars().find(|&c| c.is_control() || is_bidi_control(c)) {
        return Err(format!(
            "a name may not hold control or bidi characters (found U+{:04X})",
            bad as u32
        ));
    }
    Ok(())
}

pub(crate) fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

fn check_semver(version: &str) -> Result<(), String> {
    Version::parse(version).map(drop).map_err(|e| {
        format!(
            "`{}` is not valid semver: {e}",
            truncate_chars(version, 64).escape_debug()
        )
    })
}

fn check_sha256(hex: &str) -> Result<(), String> {
    if hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        Ok(())
    } else {
        Err("is not 64 lowercase hex digits".into())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use reliquary_client::types::{Kind, Origin, Slot, Timestamp};

    pub(crate) fn doc() -> Artefact {
        let slot = Slot {
            sha256: "a".repeat(64),
            size: 10,
            version: "1.0.0".into(),
            uploaded_at: Timestamp::from_millis(0),
            signature: "x.y.z".into(),
            attestation: None,
            published_by: None,
        };
        Artefact {
            id: "acme@1".into(),
            kind: Kind::Release,
            package_name: "acme".into(),
            version: "1.0.0".into(),
            licence: Some("MIT".into()),
            description: Some("d".into()),
            category: Some("plugins".into()),
            tarballs: [("noarch".to_owned(), slot)].into(),
            origin: Some(Origin {
                registry: "production".into(),
                remote: "prod".into(),
                synced_at: Timestamp::from_millis(0),
            }),
            deprecated: None,
            history: Default::default(),
            created_at: Timestamp::from_millis(0),
            updated_at: Timestamp::from_millis(0),
            data_updated_at: Timestamp::from_millis(0),
            revision: 1,
            seq: 1,
        }
    }

    fn fields(result: Result<(), Vec<FieldError>>) -> Vec<String> {
        result
            .err()
            .unwrap_or_default()
            .into_iter()
            .map(|p| p.field)
            .collect()
    }

    #[test]
    fn a_valid_document_passes() {
        assert_eq!(validate_document(&doc()), Ok(()));
    }

    #[test]
    fn what_a_hostile_peer_sent_is_refused_field_by_field() {
        type Break = Box<dyn Fn(&mut Artefact)>;
        let cases: Vec<(&str, Break)> = vec![
            ("id", Box::new(|d| d.id = "EVIL@1".into())),
            ("id", Box::new(|d| d.id = "../../etc/passwd".into())),
            ("id", Box::new(|d| d.id = String::new())),
            ("id", Box::new(|d| d.id = "a\0b".into())),
            ("id", Box::new(|d| d.id = "a".repeat(3000))),
            (
                "packageName",
                Box::new(|d| d.package_name = "x; rm -rf ~".into()),
            ),
            ("packageName", Box::new(|d| d.package_name = "$(id)".into())),
            ("version", Box::new(|d| d.version = "latest".into())),
            (
                "description",
                Box::new(|d| d.description = Some("x".repeat(1025))),
            ),
            ("licence", Box::new(|d| d.licence = Some("x".repeat(129)))),
            (
                "category",
                Box::new(|d| d.category = Some("Bad Category".into())),
            ),
            (
                "origin.registry",
                Box::new(|d| d.origin.as_mut().unwrap().registry = "\u{202e}x".into()),
            ),
            ("tarballs", Box::new(|d| d.tarballs.clear())),
        ];
        for (field, break_it) in cases {
            let mut d = doc();
            break_it(&mut d);
            assert_eq!(fields(validate_document(&d)), [field], "{field}");
        }
        for arch in ["X64", "../../x", ""] {
            let mut d = doc();
            let slot = d.tarballs["noarch"].clone();
            d.tarballs.insert(arch.into(), slot);
            assert!(!fields(validate_document(&d)).is_empty(), "{arch:?}");
        }
        let mut d = doc();
        let slot = d.tarballs["noarch"].clone();
        for i in 0..MAX_SLOTS {
            d.tarballs.insert(format!("arch{i}"), slot.clone());
        }
        assert_eq!(
            fields(validate_document(&d)),
            ["tarballs"],
            "too many slots"
        );
        let mut d = doc();
        d.tarballs.get_mut("noarch").unwrap().sha256 = "A".repeat(64);
        assert_eq!(fields(validate_document(&d)), ["tarballs/noarch/sha256"]);
    }

    #[test]
    fn a_peers_history_is_checked_like_its_slots() {
        let entry = |version: &str| reliquary_client::types::HistoryEntry {
            slot: Slot {
                version: version.into(),
                ..doc().tarballs["noarch"].clone()
            },
            replaced_at: Timestamp::from_millis(0),
            yanked: None,
        };
        let mut d = doc();
        d.history.insert("x64".into(), vec![entry("1.0.0")]);
        assert_eq!(validate_document(&d), Ok(()));
        d.history
            .insert("x64".into(), vec![entry("1.0.0"), entry("not semver")]);
        assert_eq!(fields(validate_document(&d)), ["history/x64/1/version"]);
        let mut d = doc();
        d.history.insert("../x".into(), vec![entry("1.0.0")]);
        assert_eq!(fields(validate_document(&d)), ["history/../x"]);
        let mut d = doc();
        d.history
            .insert("x64".into(), vec![entry("1.0.0"); MAX_HISTORY_ENTRIES + 1]);
        assert_eq!(fields(validate_document(&d)), ["history/x64"]);
        let mut d = doc();
        let mut yanked = entry("1.0.0");
        yanked.yanked = Some(reliquary_client::types::Yank {
            reason: "x".repeat(MAX_DESCRIPTION_CHARS + 1),
            at: Timestamp::from_millis(0),
        });
        d.history.insert("x64".into(), vec![yanked]);
        assert_eq!(fields(validate_document(&d)), ["history/x64"]);
        bound_text_fields(&mut d);
        assert_eq!(
            validate_document(&d),
            Ok(()),
            "a reason is cut, not refused"
        );
    }

    #[test]
    fn text_fields_are_cut_on_character_boundaries() {
        let mut d = doc();
        d.description = Some("é".repeat(2000));
        d.licence = Some("x".repeat(500));
        bound_text_fields(&mut d);
        assert_eq!(
            d.description.as_ref().unwrap().chars().count(),
            MAX_DESCRIPTION_CHARS
        );
        assert_eq!(d.licence.as_ref().unwrap().len(), MAX_LICENCE_CHARS);
        assert_eq!(validate_document(&d), Ok(()));
    }

    #[test]
    fn scopes_follow_the_rules_of_what_they_scope() {
        assert!(validate_scopes(Some("@acme/x"), Some("acme-"), Some("plugins")).is_empty());
        assert_eq!(validate_scopes(Some("Bad Name"), None, None).len(), 1);
        assert_eq!(validate_scopes(None, Some("ACME"), None).len(), 1);
        assert_eq!(validate_scopes(None, None, Some("no spaces")).len(), 1);
        assert_eq!(validate_remote_name("prod"), Ok(()));
        assert!(validate_remote_name(".hidden").is_err());
        assert!(validate_remote_name("Prod").is_err());
    }

    #[test]
    fn names_are_printable_without_bidi_controls() {
        for ok in ["ci", "CI key (prod) ✓", &"x".repeat(64)] {
            assert_eq!(validate_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            " ",
            "a\nb",
            "a\u{7}b",
            "evil\u{202E}txt.exe",
            "\u{2066}x",
            &"x".repeat(65),
        ] {
            assert!(validate_name(bad).is_err(), "{bad:?}");
        }
    }
}
