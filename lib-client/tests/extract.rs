//! Safe extraction, rule by rule: every hostile tarball fails and leaves nothing usable behind.

#![allow(clippy::unwrap_used)] // tests: a failed unwrap is a failed test

use std::io::Read;
use std::path::Path;

use reliquary_client::extract::{extract, ExtractError, ExtractLimits};
use reliquary_test_support::{gzip, npm_tarball, tarball, Entry};

fn run(bytes: &[u8], limits: &ExtractLimits) -> (tempfile::TempDir, Result<(), ExtractError>) {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join("a.tgz");
    std::fs::write(&archive, bytes).unwrap();
    let result = extract(&archive, &dir.path().join("out"), limits);
    (dir, result)
}

const MANIFEST: Entry<'static> =
    Entry::File("package/package.json", br#"{"name":"a","version":"1.0.0"}"#);

#[test]
fn npm_tarballs_extract_with_the_package_prefix_stripped() {
    let (dir, result) = run(&npm_tarball("acme", "1.0.0"), &ExtractLimits::default());
    result.unwrap();
    let out = dir.path().join("out");
    assert!(out.join("package.json").is_file());
    assert!(out.join("index.js").is_file());
    assert!(!out.join("package").exists());
}

#[test]
fn relative_symlinks_inside_the_package_are_kept() {
    let bytes = tarball(&[
        MANIFEST,
        Entry::File("package/bin/cli.js", b"x"),
        Entry::Symlink("package/node_modules/.bin/cli", "../../bin/cli.js"),
    ]);
    let (dir, result) = run(&bytes, &ExtractLimits::default());
    result.unwrap();
    let link = dir.path().join("out/node_modules/.bin/cli");
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        Path::new("../../bin/cli.js")
    );
    assert_eq!(std::fs::read(link).unwrap(), b"x");
}

#[cfg(unix)]
#[test]
fn setuid_setgid_and_sticky_bits_are_dropped() {
    use std::os::unix::fs::PermissionsExt;
    let bytes = tarball(&[
        MANIFEST,
        Entry::FileWithMode("package/run.sh", b"#!/bin/sh\n", 0o6755),
    ]);
    let (dir, result) = run(&bytes, &ExtractLimits::default());
    result.unwrap();
    let mode = std::fs::metadata(dir.path().join("out/run.sh"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o7000, 0, "mode {mode:o}");
    assert_eq!(mode & 0o100, 0o100, "the owner's execute bit survives");
}

/// Every hostile tarball, by file name. The same bytes live in `tests/fixtures/hostile/`, where
/// the Node client's suite reads them: both clients must refuse exactly these.
fn hostile_cases() -> Vec<(&'static str, Vec<u8>)> {
    let big = vec![0u8; 4 << 20];
    let many: Vec<String> = (0..150).map(|i| format!("package/f{i}")).collect();
    let many: Vec<Entry> = many.iter().map(|n| Entry::File(n, b"")).collect();
    vec![
        (
            "parent-dir",
            tarball(&[MANIFEST, Entry::File("package/../../evil", b"x")]),
        ),
        (
            "absolute",
            tarball(&[MANIFEST, Entry::File("/etc/evil", b"x")]),
        ),
        (
            "many-slashes",
            tarball(&[MANIFEST, Entry::File("////etc/evil", b"x")]),
        ),
        (
            "windows-drive",
            tarball(&[MANIFEST, Entry::File("C:\\evil", b"x")]),
        ),
        (
            "windows-relative-drive",
            tarball(&[MANIFEST, Entry::File("C:../evil", b"x")]),
        ),
        (
            "backslashes",
            tarball(&[MANIFEST, Entry::File("package\\..\\evil", b"x")]),
        ),
        (
            "absolute-symlink",
            tarball(&[MANIFEST, Entry::Symlink("package/l", "/etc/passwd")]),
        ),
        (
            "escaping-symlink",
            tarball(&[MANIFEST, Entry::Symlink("package/l", "../../etc/passwd")]),
        ),
        (
            "hard-link",
            tarball(&[
                MANIFEST,
                Entry::HardLink("package/h", "package/package.json"),
            ]),
        ),
        ("fifo", tarball(&[MANIFEST, Entry::Fifo("package/f")])),
        (
            "duplicate-names",
            tarball(&[
                MANIFEST,
                Entry::File("package/A.js", b"1"),
                Entry::File("package/a.js", b"2"),
            ]),
        ),
        (
            "write-through-symlink",
            tarball(&[
                MANIFEST,
                Entry::Dir("package/d/"),
                Entry::Symlink("package/s", "d"),
                Entry::File("package/s/x", b"x"),
            ]),
        ),
        (
            "pax-size-mismatch",
            tarball(&[
                MANIFEST,
                Entry::PaxSizeMismatch("package/index.js", b"module.exports = 1;", 3),
            ]),
        ),
        ("not-gzip", b"plain bytes".to_vec()),
        ("gzip-not-tar", gzip(&[1u8; 4096])),
        (
            // `d/l -> ..` is fine alone; through it, `d/l/d/l/../../evil` climbs out.
            "symlink-chain",
            tarball(&[
                MANIFEST,
                Entry::Dir("package/d/"),
                Entry::Symlink("package/d/l", ".."),
                Entry::Symlink("package/e", "d/l/d/l/../../evil"),
            ]),
        ),
        ("second-gzip-member", second_member()),
        (
            "bomb",
            tarball(&[MANIFEST, Entry::File("package/zeros", &big)]),
        ),
        ("too-many-entries", tarball(&many)),
    ]
}

/// A valid tarball followed by a second gzip member: one file tree to readers that stop at the
/// first member, another to those that go on.
fn second_member() -> Vec<u8> {
    let mut bytes = tarball(&[MANIFEST]);
    bytes.extend(gzip(b"a second member, which only some readers see"));
    bytes
}

/// The limits the hostile cases are judged with (the bomb and the entry count need them small).
fn test_limits() -> ExtractLimits {
    ExtractLimits {
        max_unpacked_bytes: 1 << 20,
        max_ratio: 20,
        max_entries: 100,
    }
}

#[test]
fn every_hostile_entry_is_refused() {
    for (name, bytes) in hostile_cases() {
        let (dir, result) = run(&bytes, &test_limits());
        assert!(result.is_err(), "{name}: extracted");
        let escaped = dir.path().parent().unwrap().join("evil");
        assert!(!escaped.exists(), "{name}: wrote outside");
    }
    let too_many = hostile_cases().pop().unwrap().1;
    let (_dir, result) = run(&too_many, &test_limits());
    assert!(matches!(result, Err(ExtractError::TooManyEntries(100))));
}

/// The fixture files are exactly [`hostile_cases`]; `RELIQUARY_UPDATE_FIXTURES=1` rewrites them.
#[test]
fn hostile_fixture_files_are_current() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/hostile");
    let update = std::env::var_os("RELIQUARY_UPDATE_FIXTURES").is_some();
    let limits = test_limits();
    // Written by hand, not by serde_json: its key order depends on features other crates of
    // the workspace turn on.
    let limits = format!(
        "{{\n  \"maxEntries\": {},\n  \"maxRatio\": {},\n  \"maxUnpackedBytes\": {}\n}}\n",
        limits.max_entries, limits.max_ratio, limits.max_unpacked_bytes
    );
    let mut expected = vec![("limits.json".to_owned(), limits.into_bytes())];
    for (name, bytes) in hostile_cases() {
        expected.push((format!("{name}.tgz"), bytes));
    }
    if update {
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
    }
    for (file, bytes) in &expected {
        let path = root.join(file);
        if update {
            std::fs::write(&path, bytes).unwrap();
        }
        let on_disk = std::fs::read(&path).unwrap_or_default();
        assert!(
            &on_disk == bytes,
            "{} is out of date: run RELIQUARY_UPDATE_FIXTURES=1 cargo test -p reliquary-client --test extract",
            path.display()
        );
    }
    assert_eq!(std::fs::read_dir(&root).unwrap().count(), expected.len());
}

/// A body that is never written (here a directory's) is still inflated by the tar reader: it
/// counts, so a bomb hidden there stops at the cap instead of costing minutes of CPU.
#[test]
fn bodies_that_are_never_written_count_toward_the_cap() {
    let mut raw = tar::Builder::new(Vec::new());
    let mut header = tar::Header::new_ustar();
    header.set_path("package/d/").unwrap();
    header.set_entry_type(tar::EntryType::Directory);
    header.set_size(48 << 20);
    header.set_mode(0o755);
    header.set_cksum();
    raw.append(&header, std::io::repeat(0).take(48 << 20))
        .unwrap();
    let bytes = gzip(&raw.into_inner().unwrap());
    let limits = ExtractLimits {
        max_unpacked_bytes: 1 << 20,
        max_ratio: 20,
        max_entries: 100,
    };
    let (_dir, result) = run(&bytes, &limits);
    assert!(
        matches!(result, Err(ExtractError::TooLarge(_))),
        "{result:?}"
    );
}
