//! Safe extraction of a downloaded tarball into a fresh directory.
//!
//! Every entry is checked per path component (never by string prefix), nothing is ever written
//! through a symlink, links may only be relative and stay inside their package, hard links,
//! devices and FIFOs are refused, setuid/setgid/sticky bits are dropped (the process umask
//! applies as usual), and the unpacked size is capped while inflating. A tarball that breaks any
//! rule fails the whole extraction; the caller removes the directory.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::path::{Component, Path, PathBuf};

use flate2::bufread::GzDecoder;

use crate::archive::{
    check_entry_path, check_symlink, check_trailing_bytes, normalise_for_duplicates,
    pax_size_disagreement,
};

/// Bounds on what an extraction may produce.
#[derive(Clone, Debug)]
pub struct ExtractLimits {
    pub max_unpacked_bytes: u64,
    pub max_ratio: u64,
    pub max_entries: u64,
}

impl Default for ExtractLimits {
    fn default() -> Self {
        Self {
            max_unpacked_bytes: 512 << 20,
            max_ratio: 20,
            max_entries: 200_000,
        }
    }
}

/// Why an extraction was refused.
#[derive(Debug, thiserror::Error)]
pub enum ExtractError {
    #[error("entry `{path}`: {reason}")]
    Unsafe { path: String, reason: String },
    #[error("the tarball unpacks to more than {0} bytes")]
    TooLarge(u64),
    #[error("the tarball has more than {0} entries")]
    TooManyEntries(u64),
    #[error("the tarball is unreadable: {0}")]
    Io(#[from] io::Error),
}

/// Extracts the gzip tar at `archive` into `dest` (which must not exist yet), dropping the
/// `package/` prefix that `npm pack` puts on every entry.
pub fn extract(archive: &Path, dest: &Path, limits: &ExtractLimits) -> Result<(), ExtractError> {
    let compressed = fs::metadata(archive)?.len();
    let cap = limits
        .max_unpacked_bytes
        .max(compressed.saturating_mul(limits.max_ratio));
    fs::create_dir(dest)?;
    // Every inflated byte counts, not only file bodies: a directory entry or an extension header
    // with a huge body would otherwise be inflated for nothing. Headers and padding get room
    // of their own beside the cap on file contents.
    let inflated = Inflated {
        inner: GzDecoder::new(io::BufReader::new(fs::File::open(archive)?)),
        left: cap
            .saturating_add(limits.max_entries.saturating_mul(3 * 512))
            .saturating_add(16 << 20),
        cap,
    };
    let mut tar = tar::Archive::new(inflated);
    let mut seen = HashSet::new();
    let mut unpacked = 0u64;
    let mut count = 0u64;
    for entry in tar.entries()? {
        let mut entry = entry.map_err(too_large)?;
        count += 1;
        if count > limits.max_entries {
            return Err(ExtractError::TooManyEntries(limits.max_entries));
        }
        let raw = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let unsafe_entry = |reason: String| ExtractError::Unsafe {
            path: raw.clone(),
            reason,
        };
        check_entry_path(&raw).map_err(unsafe_entry)?;
        if !seen.insert(normalise_for_duplicates(&raw)) {
            return Err(unsafe_entry("duplicate entry name".into()));
        }
        if let Some(why) = pax_size_disagreement(&mut entry) {
            return Err(unsafe_entry(why));
        }
        let Some(relative) = strip_package(&raw) else {
            continue; // the `package/` directory itself
        };
        let target = dest.join(&relative);
        let kind = entry.header().entry_type();
        match kind {
            tar::EntryType::Directory => {
                create_dirs(dest, &relative).map_err(|e| unsafe_entry(e.to_string()))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                if let Some(parent) = relative.parent() {
                    create_dirs(dest, parent).map_err(|e| unsafe_entry(e.to_string()))?;
                }
                let mode = entry.header().mode().unwrap_or(0o644) & 0o777;
                let mut file =
                    create_file(&target, mode).map_err(|e| unsafe_entry(e.to_string()))?;
                let budget = cap.saturating_sub(unpacked);
                let written =
                    io::copy(&mut (&mut entry).take(budget + 1), &mut file).map_err(too_large)?;
                unpacked += written;
                if written > budget {
                    return Err(ExtractError::TooLarge(cap));
                }
            }
            tar::EntryType::Symlink => {
                let link = entry
                    .link_name_bytes()
                    .map(|t| String::from_utf8_lossy(&t).into_owned())
                    .unwrap_or_default();
                check_symlink(&raw, &link).map_err(unsafe_entry)?;
                if let Some(parent) = relative.parent() {
                    create_dirs(dest, parent).map_err(|e| unsafe_entry(e.to_string()))?;
                }
                symlink(&link, &target)?;
            }
            tar::EntryType::XGlobalHeader => {}
            tar::EntryType::Link => return Err(unsafe_entry("hard links are not allowed".into())),
            other => return Err(unsafe_entry(format!("entry type {other:?} is not allowed"))),
        }
    }
    // The rest of the member (the tar's end blocks) within the cap, then nothing but padding.
    let mut member = tar.into_inner();
    io::copy(&mut member, &mut io::sink()).map_err(too_large)?;
    check_trailing_bytes(member.inner.get_mut())?.map_err(|reason| ExtractError::Unsafe {
        path: "(end of archive)".into(),
        reason,
    })
}

/// The inflater, failing once more bytes come out of it than the archive may hold.
struct Inflated<R> {
    inner: R,
    left: u64,
    cap: u64,
}

/// The error [`Inflated`] fails with, carrying the cap on file contents for the message.
#[derive(Debug, thiserror::Error)]
#[error("the tarball inflates to more than its cap allows")]
struct InflatedTooMuch(u64);

impl<R: Read> Read for Inflated<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.left = self
            .left
            .checked_sub(n as u64)
            .ok_or_else(|| io::Error::other(InflatedTooMuch(self.cap)))?;
        Ok(n)
    }
}

/// An I/O error caused by [`InflatedTooMuch`] (however the tar reader wrapped it) becomes
/// [`ExtractError::TooLarge`].
fn too_large(error: io::Error) -> ExtractError {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(&error);
    while let Some(e) = cause {
        if let Some(InflatedTooMuch(cap)) = e.downcast_ref::<InflatedTooMuch>() {
            return ExtractError::TooLarge(*cap);
        }
        // An io::Error's `source` skips the error it wraps; look at that one too.
        cause = match e.downcast_ref::<io::Error>().and_then(io::Error::get_ref) {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => e.source(),
        };
    }
    ExtractError::Io(error)
}

/// The entry's path below the package root, or `None` for the root itself.
fn strip_package(raw: &str) -> Option<PathBuf> {
    let trimmed = raw.trim_start_matches("./");
    let inner = trimmed.strip_prefix("package/").unwrap_or(trimmed);
    let path: PathBuf = Path::new(inner)
        .components()
        .filter(|c| matches!(c, Component::Normal(_)))
        .collect();
    (!path.as_os_str().is_empty()).then_some(path)
}

/// Creates `relative` under `root` one component at a time, refusing to pass through anything
/// that is not a real directory (a symlink planted by an earlier entry, say).
fn create_dirs(root: &Path, relative: &Path) -> io::Result<()> {
    let mut current = root.to_path_buf();
    for component in relative.components() {
        current.push(component);
        match fs::symlink_metadata(&current) {
            Ok(meta) if meta.is_dir() => {}
            Ok(_) => {
                return Err(io::Error::other(format!(
                    "`{}` is not a directory",
                    current.display()
                )))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => fs::create_dir(&current)?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

fn create_file(path: &Path, mode: u32) -> io::Result<fs::File> {
    let mut options = fs::OpenOptions::new();
    // create_new: an existing file or a symlink in the way is an error, never followed.
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        // Only permission bits: setuid, setgid and sticky are dropped. The umask still applies.
        options.mode(mode & 0o777);
    }
    #[cfg(not(unix))]
    let _ = mode;
    options.open(path)
}

#[cfg(unix)]
fn symlink(link: &str, target: &Path) -> io::Result<()> {
    std::os::unix::fs::symlink(link, target)
}

#[cfg(not(unix))]
fn symlink(_link: &str, _target: &Path) -> io::Result<()> {
    Err(io::Error::other(
        "symlinks are not supported on this platform",
    ))
}
