//! Reads an uploaded tarball as a stream, once: inflates it, walks every tar entry, refuses
//! hostile ones, and returns the validated `package.json` manifest.
//!
//! Every tarball is hostile until proven otherwise: entries that would escape an extraction root,
//! links, devices, decompression bombs and oversized manifests are all refused here, while the
//! bytes stream past, with memory that stays flat whatever the tarball's size.

use std::cell::Cell;
use std::collections::HashSet;
use std::io::{self, Read};
use std::rc::Rc;

use flate2::bufread::GzDecoder;
use reliquary_client::archive::{
    check_entry_path, check_symlink, check_trailing_bytes, normalise_for_duplicates,
    normalise_path, pax_size_disagreement, truncate_chars,
};
use reliquary_client::json::parse_strict;
use reliquary_client::types::FieldError;
use semver::Version;

use super::document::check_package_name;
use serde_json::Value;

/// The validated fields of `package.json` that the registry keeps.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manifest {
    pub name: String,
    pub version: Version,
    pub licence: Option<String>,
    pub description: Option<String>,
}

/// Bounds on what an upload may unpack to.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Unpacked bytes always allowed, whatever the ratio.
    pub max_unpacked_bytes: u64,
    /// Unpacked bytes allowed per compressed byte, above `max_unpacked_bytes`.
    pub max_ratio: u64,
    pub max_entries: u64,
    pub max_name_bytes: usize,
    pub max_manifest_bytes: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_unpacked_bytes: 512 << 20,
            max_ratio: 20,
            max_entries: 200_000,
            max_name_bytes: 4096,
            max_manifest_bytes: 1 << 20,
        }
    }
}

/// Why a tarball was refused: a `422` code and every violation found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Rejection {
    pub code: &'static str,
    pub message: String,
    pub problems: Vec<FieldError>,
}

impl Rejection {
    fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            problems: Vec::new(),
        }
    }
}

/// How many entry problems are listed before the walk stops.
const MAX_LISTED_PROBLEMS: usize = 50;

/// Walks the whole gzip tar read from `input` and returns its manifest. On success `input` has
/// been read to its end, so a caller tee-ing the same bytes elsewhere sees all of them.
pub fn inspect(input: impl Read, limits: &Limits) -> Result<Manifest, Rejection> {
    let compressed = Rc::new(Cell::new(0u64));
    let mut counted_input = Counting {
        inner: input,
        count: compressed.clone(),
    };
    let result = walk(&mut counted_input, compressed, limits);
    if result.is_ok() {
        // Whatever follows the gzip member (padding, garbage) is not ours to judge, but it must be
        // consumed so the upload's hash and size cover the whole body.
        io::copy(&mut counted_input, &mut io::sink()).map_err(|e| {
            Rejection::new("invalid_tarball", format!("reading the upload failed: {e}"))
        })?;
    }
    result
}

fn walk(
    input: &mut impl Read,
    compressed: Rc<Cell<u64>>,
    limits: &Limits,
) -> Result<Manifest, Rejection> {
    let unpacked = Capped {
        inner: GzDecoder::new(io::BufReader::new(input)),
        unpacked: 0,
        compressed,
        limits: limits.clone(),
    };
    let mut archive = tar::Archive::new(unpacked);
    let mut problems = Vec::new();
    let mut seen = HashSet::new();
    let mut manifest_bytes: Option<Vec<u8>> = None;
    let mut entry_count = 0u64;

    let entries = archive.entries().map_err(|e| read_failure(&e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| read_failure(&e))?;
        entry_count += 1;
        if entry_count > limits.max_entries {
            return Err(Rejection::new(
                "too_many_entries",
                format!("The tarball has more than {} entries.", limits.max_entries),
            ));
        }
        let path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let field = format!("tarball/{}", truncate_chars(&path, 200));
        let mut complain = |message: String| {
            problems.push(FieldError {
                field: field.clone(),
                message,
            });
        };
        if path.len() > limits.max_name_bytes {
            complain(format!(
                "entry name is longer than {} bytes",
                limits.max_name_bytes
            ));
        } else if let Err(why) = check_entry_path(&path) {
            complain(why);
        } else if !seen.insert(normalise_for_duplicates(&path)) {
            complain("duplicate entry name (after Unicode NFC and case folding)".into());
        }
        if let Some(why) = pax_size_disagreement(&mut entry) {
            complain(why);
        }
        match entry.header().entry_type() {
            tar::EntryType::Regular | tar::EntryType::Continuous => {}
            tar::EntryType::Directory | tar::EntryType::XGlobalHeader => {}
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                if let Err(why) = check_symlink(&path, &target) {
                    complain(why);
                }
            }
            tar::EntryType::Link => complain("hard links are not allowed".into()),
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                complain("device files and FIFOs are not allowed".into());
            }
            other => complain(format!("entry type {other:?} is not allowed")),
        }
        if is_manifest_path(&path) && entry.header().entry_type().is_file() {
            let mut bytes = Vec::new();
            (&mut entry)
                .take(limits.max_manifest_bytes + 1)
                .read_to_end(&mut bytes)
                .map_err(|e| read_failure(&e))?;
            if bytes.len() as u64 > limits.max_manifest_bytes {
                return Err(Rejection::new(
                    "invalid_manifest",
                    format!(
                        "package.json is larger than {} bytes.",
                        limits.max_manifest_bytes
                    ),
                ));
            }
            // `package/package.json` wins over a top-level one when both exist.
            if manifest_bytes.is_none() || normalise_path(&path).starts_with("package/") {
                manifest_bytes = Some(bytes);
            }
        }
        if problems.len() >= MAX_LISTED_PROBLEMS {
            break;
        }
        // Reading the entry's data through the inflater is what enforces the unpacked-size cap.
        io::copy(&mut entry, &mut io::sink()).map_err(|e| read_failure(&e))?;
    }
    if !problems.is_empty() {
        return Err(Rejection {
            code: "unsafe_tarball",
            message: "The tarball has entries that could escape or abuse an extraction directory."
                .into(),
            problems,
        });
    }
    // Drain the inflater to the end of the gzip member so its CRC is checked; after it, only
    // padding: a second member is a second file tree to some decompressors.
    let mut inflater = archive.into_inner();
    io::copy(&mut inflater, &mut io::sink()).map_err(|e| read_failure(&e))?;
    check_trailing_bytes(inflater.inner.get_mut())
        .map_err(|e| read_failure(&e))?
        .map_err(|why| {
            Rejection::new(
                "invalid_tarball",
                format!("The tarball is not one gzip stream: {why}."),
            )
        })?;
    let bytes = manifest_bytes.ok_or_else(|| {
        Rejection::new(
            "missing_manifest",
            "The tarball holds no package/package.json (or top-level package.json); is it an `npm pack` tarball?",
        )
    })?;
    parse_manifest(&bytes)
}

/// Validates `package.json` bytes; a `422` lists every field that is wrong.
pub fn parse_manifest(bytes: &[u8]) -> Result<Manifest, Rejection> {
    let invalid = |problems: Vec<FieldError>| Rejection {
        code: "invalid_manifest",
        message: "package.json fails validation.".into(),
        problems,
    };
    let field = |name: &str, message: String| FieldError {
        field: format!("package.json/{name}"),
        message,
    };
    let value = parse_strict(bytes)
        .map_err(|e| invalid(vec![field("", format!("not valid JSON: {e}"))]))?;
    let Value::Object(object) = value else {
        return Err(invalid(vec![field("", "must be a JSON object".into())]));
    };
    let mut problems = Vec::new();
    let name = match object.get("name") {
        Some(Value::String(name)) => match check_package_name(name) {
            Ok(()) => Some(name.clone()),
            Err(why) => {
                problems.push(field("name", why));
                None
            }
        },
        Some(_) => {
            problems.push(field("name", "must be a string".into()));
            None
        }
        None => {
            problems.push(field("name", "is required".into()));
            None
        }
    };
    let version = match object.get("version") {
        Some(Value::String(v)) => match Version::parse(v) {
            Ok(version) => Some(version),
            Err(e) => {
                problems.push(field("version", format!("`{v}` is not valid semver: {e}")));
                None
            }
        },
        Some(_) => {
            problems.push(field("version", "must be a string".into()));
            None
        }
        None => {
            problems.push(field("version", "is required".into()));
            None
        }
    };
    let licence = match object.get("license") {
        Some(Value::String(s)) => Some(s.clone()),
        // The long-deprecated `{"type": "MIT"}` form still appears in old packages.
        Some(Value::Object(o)) => o.get("type").and_then(Value::as_str).map(str::to_owned),
        _ => None,
    };
    let description = object
        .get("description")
        .and_then(Value::as_str)
        .map(str::to_owned);
    match (name, version) {
        (Some(name), Some(version)) if problems.is_empty() => Ok(Manifest {
            name,
            version,
            licence,
            description,
        }),
        _ => Err(invalid(problems)),
    }
}

fn is_manifest_path(path: &str) -> bool {
    matches!(
        normalise_path(path).as_str(),
        "package/package.json" | "package.json"
    )
}

fn read_failure(error: &io::Error) -> Rejection {
    if let Some(limit) = error
        .get_ref()
        .and_then(|e| e.downcast_ref::<UnpackedLimit>())
    {
        return Rejection::new(
            "unpacked_too_large",
            format!(
                "The tarball unpacks to more than {} bytes (a decompression bomb, or raise the limit).",
                limit.0
            ),
        );
    }
    Rejection::new(
        "invalid_tarball",
        format!("The upload is not a readable gzip tar: {error}."),
    )
}

struct Counting<R> {
    inner: R,
    count: Rc<Cell<u64>>,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.count.set(self.count.get() + n as u64);
        Ok(n)
    }
}

#[derive(Debug)]
struct UnpackedLimit(u64);

impl std::fmt::Display for UnpackedLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "unpacked size over {} bytes", self.0)
    }
}

impl std::error::Error for UnpackedLimit {}

/// The inflated stream, cut off as soon as it passes the unpacked-size cap.
struct Capped<R> {
    inner: R,
    unpacked: u64,
    compressed: Rc<Cell<u64>>,
    limits: Limits,
}

impl<R: Read> Read for Capped<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.unpacked += n as u64;
        let cap = self
            .limits
            .max_unpacked_bytes
            .max(self.compressed.get().saturating_mul(self.limits.max_ratio));
        if self.unpacked > cap {
            return Err(io::Error::other(UnpackedLimit(cap)));
        }
        Ok(n)
    }
}
