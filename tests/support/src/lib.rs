//! Test-only helpers shared by the server's and the client's suites: tarballs made by hand,
//! hostile ones included (names are written raw, so nothing sanitises them on the way).

#![allow(clippy::unwrap_used)] // test helpers: a failure is the test failing

use std::io::Write;

use flate2::write::GzEncoder;

/// An entry of a hand-made tarball.
pub enum Entry<'a> {
    File(&'a str, &'a [u8]),
    /// A file whose PAX `size` record says `data.len()` while its ustar header claims another
    /// size: the parser-confusion trick.
    PaxSizeMismatch(&'a str, &'a [u8], u64),
    /// A file with explicit permission bits (setuid and friends included).
    FileWithMode(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    HardLink(&'a str, &'a str),
    Fifo(&'a str),
}

/// Builds a gzip tar from entries, writing names raw so hostile ones survive.
pub fn tarball(entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    for entry in entries {
        let mut header = tar::Header::new_gnu();
        let mut mode = 0o644;
        let mut ustar_size = None;
        let (name, kind, data, link): (&str, tar::EntryType, &[u8], Option<&str>) = match entry {
            Entry::File(name, data) => (name, tar::EntryType::Regular, data, None),
            Entry::PaxSizeMismatch(name, data, claimed) => {
                let size = data.len().to_string();
                builder
                    .append_pax_extensions([("size", size.as_bytes())])
                    .expect("pax header");
                ustar_size = Some(*claimed);
                (name, tar::EntryType::Regular, data, None)
            }
            Entry::FileWithMode(name, data, bits) => {
                mode = *bits;
                (name, tar::EntryType::Regular, data, None)
            }
            Entry::Dir(name) => (name, tar::EntryType::Directory, b"", None),
            Entry::Symlink(name, target) => (name, tar::EntryType::Symlink, b"", Some(target)),
            Entry::HardLink(name, target) => (name, tar::EntryType::Link, b"", Some(target)),
            Entry::Fifo(name) => (name, tar::EntryType::Fifo, b"", None),
        };
        set_raw_name(&mut header, name.as_bytes());
        if let Some(link) = link {
            set_raw_link(&mut header, link.as_bytes());
        }
        header.set_entry_type(kind);
        header.set_size(ustar_size.unwrap_or(data.len() as u64));
        header.set_mode(if kind == tar::EntryType::Directory {
            0o755
        } else {
            mode
        });
        header.set_mtime(1_700_000_000);
        header.set_cksum();
        builder.append(&header, data).expect("append");
    }
    builder
        .into_inner()
        .expect("finish tar")
        .finish()
        .expect("finish gzip")
}

fn set_raw_name(header: &mut tar::Header, name: &[u8]) {
    let field = &mut header.as_old_mut().name;
    assert!(
        name.len() < field.len(),
        "test names must fit the ustar name field"
    );
    field[..name.len()].copy_from_slice(name);
}

fn set_raw_link(header: &mut tar::Header, link: &[u8]) {
    let field = &mut header.as_old_mut().linkname;
    field[..link.len()].copy_from_slice(link);
}

/// A minimal `npm pack`-shaped tarball.
pub fn npm_tarball(name: &str, version: &str) -> Vec<u8> {
    npm_tarball_with(name, version, b"module.exports = 1;\n")
}

/// An `npm pack`-shaped tarball whose `index.js` holds `payload` (so bytes differ at will).
pub fn npm_tarball_with(name: &str, version: &str, payload: &[u8]) -> Vec<u8> {
    let manifest = serde_json::json!({
        "name": name,
        "version": version,
        "license": "MIT",
        "description": format!("{name} for tests"),
    })
    .to_string();
    tarball(&[
        Entry::File("package/package.json", manifest.as_bytes()),
        Entry::File("package/index.js", payload),
    ])
}

pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}
