//! The rules that keep a tarball's entries inside an extraction root. The registry applies them
//! to every upload and the client again to every extraction, independently: neither trusts the
//! other to have done it.

/// Refuses anything that could land outside an extraction root on any platform.
pub fn check_entry_path(path: &str) -> Result<(), String> {
    if path.is_empty() {
        return Err("empty entry name".into());
    }
    if path.contains('\\') {
        return Err("backslashes are not allowed in entry names".into());
    }
    if path.starts_with('/') {
        return Err("absolute paths are not allowed".into());
    }
    let bytes = path.as_bytes();
    if bytes.len() >= 2 && bytes[0].is_ascii_alphabetic() && bytes[1] == b':' {
        return Err("Windows drive paths are not allowed".into());
    }
    if path.split('/').any(|c| c == "..") {
        return Err("`..` is not allowed in entry names".into());
    }
    if path.chars().any(char::is_control) {
        return Err("control characters are not allowed in entry names".into());
    }
    Ok(())
}

/// A symlink must be relative and resolve, from its own directory, inside the top-level
/// directory it lives in (e.g. `package/node_modules/.bin/x -> ../x/cli.js`). Its `..`s must all
/// come first: this check reads the target as text, and cannot know that a name in the middle
/// is itself a symlink (`d/l -> ..` makes `d/l/d/l/../../etc` climb out). With the `..`s first,
/// the climb is through real directories, and every later name descends or is a symlink that
/// passed this same check.
pub fn check_symlink(path: &str, target: &str) -> Result<(), String> {
    if target.is_empty() {
        return Err("symlink with an empty target".into());
    }
    if target.starts_with('/') || target.contains('\\') || target.as_bytes().get(1) == Some(&b':') {
        return Err(format!(
            "symlink to `{}` is not relative",
            truncate_chars(target, 200)
        ));
    }
    let mut resolved: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    resolved.pop();
    let floor = usize::from(!resolved.is_empty());
    let mut descended = false;
    for component in target.split('/') {
        match component {
            "" | "." => {}
            ".." if descended => {
                return Err(format!(
                    "symlink to `{}` climbs (`..`) after naming a directory",
                    truncate_chars(target, 200)
                ));
            }
            ".." => {
                if resolved.len() <= floor {
                    return Err(format!(
                        "symlink to `{}` escapes the package",
                        truncate_chars(target, 200)
                    ));
                }
                resolved.pop();
            }
            other => {
                descended = true;
                resolved.push(other);
            }
        }
    }
    Ok(())
}

/// Whatever follows the first gzip member must be zeros (block padding): a second member
/// would be read by some decompressors (gzip, Node's zlib) and not by others (this crate's
/// readers stop at the first), so one tarball would hold two different file trees.
pub fn check_trailing_bytes(rest: &mut impl std::io::Read) -> std::io::Result<Result<(), String>> {
    let mut buffer = [0u8; 8192];
    loop {
        let n = rest.read(&mut buffer)?;
        if n == 0 {
            return Ok(Ok(()));
        }
        if buffer[..n].iter().any(|&b| b != 0) {
            return Ok(Err(
                "data follows the end of the gzip stream (a second member?)".into(),
            ));
        }
    }
}

/// The path an extractor writes an entry to: empty and `.` components dropped, so
/// `package/./package.json`, `package//package.json` and `./package/package.json` are all
/// `package/package.json` — as GNU tar and npm resolve them.
pub fn normalise_path(path: &str) -> String {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect::<Vec<_>>()
        .join("/")
}

/// Two names that would land on the same file are duplicates: compare them after path
/// normalisation, Unicode NFC and case folding (macOS, Windows). Otherwise a tarball could hold
/// two `package.json` that different readers pick differently.
pub fn normalise_for_duplicates(path: &str) -> String {
    use unicode_normalization::UnicodeNormalization;
    normalise_path(path)
        .nfc()
        .collect::<String>()
        .to_lowercase()
}

/// A PAX `size` record that contradicts the ustar header's size field: two parsers would read
/// different entries out of the same bytes, the classic way to smuggle content past a scanner.
pub fn pax_size_disagreement<R: std::io::Read>(entry: &mut tar::Entry<'_, R>) -> Option<String> {
    let ustar = entry.header().size().ok()?;
    let extensions = entry.pax_extensions().ok()??;
    for extension in extensions.flatten() {
        if extension.key() == Ok("size") {
            // Digits only, as the Node client reads them: ` 5` or `+5` would be read as 5 here
            // and refused there, so one of them is refused by both.
            let text = extension.value().unwrap_or_default();
            if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
                return Some(format!(
                    "PAX size `{}` is not a number",
                    truncate_chars(text, 40)
                ));
            }
            let Ok(pax) = text.parse::<u64>() else {
                return Some("PAX size is out of range".into());
            };
            // Writers leave the ustar field at 0 when only PAX can hold the size (over 8 GiB).
            if ustar != 0 && pax != ustar {
                return Some(format!(
                    "PAX size {pax} disagrees with the ustar header's size {ustar}"
                ));
            }
        }
    }
    None
}

/// At most `max` characters of `text`, for messages about hostile input.
pub fn truncate_chars(text: &str, max: usize) -> &str {
    match text.char_indices().nth(max) {
        Some((end, _)) => &text[..end],
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_normalise_like_an_extractor_resolves_them() {
        for smuggled in [
            "package/./package.json",
            "package//package.json",
            "./package/package.json",
            "package/package.json/",
            "./package/.//package.json",
        ] {
            assert_eq!(
                normalise_path(smuggled),
                "package/package.json",
                "{smuggled}"
            );
            assert_eq!(
                normalise_for_duplicates(smuggled),
                normalise_for_duplicates("package/package.json")
            );
        }
    }

    #[test]
    fn entry_paths() {
        for ok in [
            "package/index.js",
            "package/a/b/c.js",
            "./package/x",
            "package.json",
            "package/..foo",
            "package/a..b",
        ] {
            assert_eq!(check_entry_path(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "////etc/x",
            "../x",
            "package/../../x",
            "C:\\x",
            "C:../x",
            "c:/x",
            "package\\x",
            "package/\u{0}x",
            "package/a\nb",
        ] {
            assert!(check_entry_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn symlinks() {
        assert!(check_symlink("package/node_modules/.bin/cli", "../x/cli.js").is_ok());
        assert!(check_symlink("package/a", "b/c").is_ok());
        assert!(
            check_symlink("package/a/b", "../../package/c").is_err(),
            "leaves its top-level directory"
        );
        assert!(check_symlink("package/a", "../etc/passwd").is_err());
        assert!(check_symlink("package/a", "/etc/passwd").is_err());
        assert!(check_symlink("package/a", "").is_err());
        assert!(check_symlink("package/a", "C:/x").is_err());
        assert!(check_symlink("a", "..").is_err());
        // Through a symlink in the middle, text alone cannot tell where `..` lands.
        assert!(check_symlink("package/d/l", "..").is_ok());
        assert!(check_symlink("package/e", "d/l/d/l/../../etc/passwd").is_err());
        assert!(check_symlink("package/e", "d/../x").is_err());
        assert!(check_symlink("package/a/b/e", "../../x/./y").is_ok());
    }

    #[test]
    fn duplicates_fold_case() {
        assert_eq!(
            normalise_for_duplicates("./Package/A.js"),
            normalise_for_duplicates("package/a.js")
        );
        // "é" precomposed and as e + combining acute accent.
        assert_eq!(
            normalise_for_duplicates("package/caf\u{e9}.js"),
            normalise_for_duplicates("package/cafe\u{301}.js")
        );
    }
}
