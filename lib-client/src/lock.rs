//! The cache-entry lock, a protocol the Node client implements too (`lib-client/README.md`,
//! "Cache format"): a lock file created exclusively, refreshed while held, broken when stale.
//!
//! `flock` would be simpler, but Node cannot take it with its own modules, and both clients
//! must exclude each other on one cache. What the protocol relies on instead: an exclusive
//! create (`O_CREAT|O_EXCL`) succeeds for one process only; a holder touches the file's mtime
//! every [`LockTiming::heartbeat`]; a lock not touched for [`LockTiming::stale_after`], or
//! whose holder is a dead process on this host, is abandoned; and a rename succeeds for one
//! breaker only.

use std::fs;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

/// The lock file's name inside a cache entry.
pub const LOCK_FILE: &str = ".lock";
/// The most of a lock file that is read: its content is only a hint about its holder.
const MAX_LOCK_BYTES: u64 = 4096;

/// How the lock behaves in time. Both clients use the defaults; tests shorten them.
#[derive(Clone, Copy, Debug)]
pub struct LockTiming {
    /// A lock whose mtime is older than this is abandoned.
    pub stale_after: Duration,
    /// How often a holder touches its lock (well inside `stale_after`).
    pub heartbeat: Duration,
    /// How long a waiter waits before giving up with an error.
    pub wait: Duration,
}

impl Default for LockTiming {
    fn default() -> Self {
        Self {
            stale_after: Duration::from_secs(10),
            heartbeat: Duration::from_secs(2),
            wait: Duration::from_secs(600),
        }
    }
}

/// What a lock file says about its holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Holder {
    pub pid: u32,
    pub host: String,
    /// The PID namespace (`/proc/self/ns/pid` on Linux, else empty): two containers may share
    /// a hostname, never a PID namespace, and only then do their pids mean the same process.
    #[serde(default)]
    pub pid_namespace: String,
    pub acquired_at: String,
    pub nonce: String,
}

impl Holder {
    fn me() -> Self {
        Self {
            pid: std::process::id(),
            host: hostname(),
            pid_namespace: pid_namespace(),
            acquired_at: crate::types::Timestamp::now().to_string(),
            nonce: crate::cache::nonce(),
        }
    }

    /// A holder on this host (same hostname and PID namespace) whose process is gone.
    fn is_dead_here(&self) -> bool {
        self.host == hostname() && self.pid_namespace == pid_namespace() && !pid_alive(self.pid)
    }
}

/// A held lock; released on drop.
pub struct EntryLock {
    path: PathBuf,
    content: Vec<u8>,
    stop: Option<mpsc::Sender<()>>,
    heartbeat: Option<thread::JoinHandle<()>>,
}

impl EntryLock {
    /// Takes the lock of the cache entry `dir`, waiting while another live holder has it.
    /// Blocking: call it off the async runtime.
    pub fn acquire(dir: &Path, timing: LockTiming) -> io::Result<Self> {
        let path = dir.join(LOCK_FILE);
        let deadline = Instant::now() + timing.wait;
        let mut pause = Duration::from_millis(5);
        loop {
            let holder = Holder::me();
            let content = serde_json::to_vec(&holder).map_err(io::Error::other)?;
            match fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&path)
            {
                Ok(mut file) => {
                    if let Err(e) = file.write_all(&content) {
                        let _ = fs::remove_file(&path);
                        return Err(e);
                    }
                    return Ok(Self::held(path, content, file, timing.heartbeat));
                }
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                Err(e) => return Err(e),
            }
            match Snapshot::read(&path) {
                Ok(seen) if seen.is_stale(timing.stale_after) => {
                    break_stale(&path, &seen)?;
                    continue;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            }
            if Instant::now() >= deadline {
                let holder = Snapshot::read(&path).ok().and_then(|s| s.holder());
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "waited {} s for the lock {} (held by {})",
                        timing.wait.as_secs(),
                        path.display(),
                        holder.map_or_else(
                            || "an unknown process".to_owned(),
                            |h| format!("pid {} on {}", h.pid, h.host)
                        )
                    ),
                ));
            }
            thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
    }

    /// Fails unless the lock file is still this holder's. Called before each write others read
    /// (the directory swap, the meta): a holder whose lock was broken stops instead of writing
    /// beside the new holder.
    pub fn assert_held(&self) -> io::Result<()> {
        match Snapshot::read(&self.path) {
            Ok(now) if now.content == self.content => Ok(()),
            _ => Err(io::Error::other(format!(
                "the lock {} was taken over by another process; nothing more is written",
                self.path.display()
            ))),
        }
    }

    fn held(path: PathBuf, content: Vec<u8>, file: fs::File, every: Duration) -> Self {
        let (stop, stopped) = mpsc::channel::<()>();
        // A thread, not a task: the heartbeat must go on while the runtime is busy extracting.
        let heartbeat = thread::spawn(move || {
            // The handle touches the file this holder created, even if a breaker renamed it.
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(every) {
                let _ = file.set_modified(SystemTime::now());
            }
        });
        Self {
            path,
            content,
            stop: Some(stop),
            heartbeat: Some(heartbeat),
        }
    }
}

impl Drop for EntryLock {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(heartbeat) = self.heartbeat.take() {
            let _ = heartbeat.join();
        }
        // Only our own lock: if it was judged stale and broken, the file there is someone else's.
        if Snapshot::read(&self.path).is_ok_and(|s| s.content == self.content) {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// A lock file as one waiter saw it.
struct Snapshot {
    content: Vec<u8>,
    modified: SystemTime,
}

impl Snapshot {
    fn read(path: &Path) -> io::Result<Self> {
        let file = fs::File::open(path)?;
        let modified = file.metadata()?.modified()?;
        let mut content = Vec::new();
        file.take(MAX_LOCK_BYTES).read_to_end(&mut content)?;
        Ok(Self { content, modified })
    }

    fn holder(&self) -> Option<Holder> {
        serde_json::from_slice(&self.content).ok()
    }

    /// Not touched for `stale_after`, or held by a dead process on this host. A file without a
    /// readable holder (being written right now, or left by a v1.0 client) is judged by its
    /// mtime alone.
    fn is_stale(&self, stale_after: Duration) -> bool {
        let age = SystemTime::now()
            .duration_since(self.modified)
            .unwrap_or_default();
        age > stale_after || self.holder().is_some_and(|h| h.is_dead_here())
    }
}

/// Removes an abandoned lock so that exactly one waiter wins: rename it to a unique name (one
/// rename succeeds), then make sure it is the file that was judged. If it changed in between,
/// its holder is alive (a heartbeat, or a new holder): put it back, unless the name is taken
/// again, and let the caller look once more.
fn break_stale(path: &Path, seen: &Snapshot) -> io::Result<()> {
    let grave = path.with_file_name(format!("{LOCK_FILE}.stale-{}", crate::cache::nonce()));
    match fs::rename(path, &grave) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(e),
    }
    let taken = Snapshot::read(&grave)?;
    if taken.content != seen.content || taken.modified != seen.modified {
        // A hard link never replaces an existing file: a lock taken meanwhile stays.
        let _ = fs::hard_link(&grave, path);
    }
    fs::remove_file(&grave)
}

/// This machine's hostname (the kernel's, as Node's `os.hostname()` reads it).
pub fn hostname() -> String {
    fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| fs::read_to_string("/etc/hostname"))
        .map(|h| h.trim().to_owned())
        .unwrap_or_default()
}

/// The PID namespace this process lives in, or empty where that cannot be told.
pub fn pid_namespace() -> String {
    fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// Whether a process with this pid exists here. Without `/proc` it cannot be told, and a
/// holder is then assumed alive (its lock goes stale by mtime alone).
fn pid_alive(pid: u32) -> bool {
    if !Path::new("/proc/self").exists() {
        return true;
    }
    Path::new(&format!("/proc/{pid}")).exists()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    fn quick() -> LockTiming {
        LockTiming {
            stale_after: Duration::from_millis(400),
            heartbeat: Duration::from_millis(50),
            wait: Duration::from_secs(20),
        }
    }

    fn write_lock(dir: &Path, holder: &Holder, age: Duration) {
        let path = dir.join(LOCK_FILE);
        fs::write(&path, serde_json::to_vec(holder).unwrap()).unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - age).unwrap();
    }

    fn elsewhere() -> Holder {
        Holder {
            pid: 1,
            host: "another-host".into(),
            pid_namespace: String::new(),
            acquired_at: "2026-01-01T00:00:00.000Z".into(),
            nonce: "x".into(),
        }
    }

    #[test]
    fn threads_take_turns_and_the_lock_file_goes_with_the_last() {
        let dir = tempfile::tempdir().unwrap();
        let inside = Arc::new(AtomicUsize::new(0));
        let turns = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..6)
            .map(|_| {
                let (dir, inside, turns) = (dir.path().to_owned(), inside.clone(), turns.clone());
                thread::spawn(move || {
                    for _ in 0..5 {
                        let _lock = EntryLock::acquire(&dir, quick()).unwrap();
                        assert_eq!(inside.fetch_add(1, Ordering::SeqCst), 0, "two holders");
                        thread::sleep(Duration::from_millis(2));
                        inside.fetch_sub(1, Ordering::SeqCst);
                        turns.fetch_add(1, Ordering::SeqCst);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(turns.load(Ordering::SeqCst), 30);
        assert!(!dir.path().join(LOCK_FILE).exists());
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
    }

    #[test]
    fn a_lock_not_touched_for_stale_after_is_broken() {
        let dir = tempfile::tempdir().unwrap();
        write_lock(dir.path(), &elsewhere(), Duration::from_secs(5));
        let started = Instant::now();
        let lock = EntryLock::acquire(dir.path(), quick()).unwrap();
        assert!(started.elapsed() < Duration::from_millis(300));
        let now: Holder =
            serde_json::from_slice(&fs::read(dir.path().join(LOCK_FILE)).unwrap()).unwrap();
        assert_eq!(now.pid, std::process::id());
        drop(lock);
    }

    #[test]
    fn a_v1_0_lock_file_left_empty_is_broken_by_its_age() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        fs::write(&path, b"").unwrap();
        let file = fs::File::options().write(true).open(&path).unwrap();
        file.set_modified(SystemTime::now() - Duration::from_secs(60))
            .unwrap();
        EntryLock::acquire(dir.path(), quick()).unwrap();
    }

    #[test]
    fn a_dead_holder_on_this_host_is_broken_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let mut dead = Holder::me();
        dead.pid = 4_194_305; // above Linux's largest pid_max: never a live process
        write_lock(dir.path(), &dead, Duration::ZERO);
        let started = Instant::now();
        EntryLock::acquire(dir.path(), quick()).unwrap();
        assert!(started.elapsed() < Duration::from_millis(300));
    }

    #[test]
    fn a_fresh_lock_elsewhere_is_waited_for_until_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        write_lock(dir.path(), &elsewhere(), Duration::ZERO);
        let timing = LockTiming {
            stale_after: Duration::from_secs(60),
            wait: Duration::from_millis(300),
            ..quick()
        };
        let error = EntryLock::acquire(dir.path(), timing).err().unwrap();
        assert_eq!(error.kind(), io::ErrorKind::TimedOut);
        assert!(error.to_string().contains("another-host"), "{error}");
    }

    #[test]
    fn the_heartbeat_keeps_a_long_holders_lock() {
        let dir = tempfile::tempdir().unwrap();
        let holder = EntryLock::acquire(dir.path(), quick()).unwrap();
        let started = Instant::now();
        let path = dir.path().to_owned();
        let waiter = thread::spawn(move || {
            EntryLock::acquire(&path, quick()).unwrap();
            Instant::now()
        });
        // Three times stale_after: without the heartbeat the waiter would have broken it.
        thread::sleep(Duration::from_millis(1200));
        let released = Instant::now();
        drop(holder);
        let acquired = waiter.join().unwrap();
        assert!(acquired >= released, "the waiter broke a live lock");
        assert!(acquired.duration_since(started) >= Duration::from_millis(1200));
    }

    #[test]
    fn a_holder_whose_lock_was_taken_over_knows_it_and_leaves_the_new_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(LOCK_FILE);
        let lock = EntryLock::acquire(dir.path(), quick()).unwrap();
        lock.assert_held().unwrap();
        // Judged stale (a starved heartbeat), broken and taken by another holder.
        let other = serde_json::to_vec(&elsewhere()).unwrap();
        fs::write(&path, &other).unwrap();
        let error = lock.assert_held().unwrap_err();
        assert!(error.to_string().contains("taken over"), "{error}");
        drop(lock);
        assert_eq!(
            fs::read(&path).unwrap(),
            other,
            "the new holder's lock stays"
        );
    }

    #[test]
    fn breaking_leaves_a_lock_that_changed_meanwhile() {
        let dir = tempfile::tempdir().unwrap();
        write_lock(dir.path(), &elsewhere(), Duration::from_secs(5));
        let path = dir.path().join(LOCK_FILE);
        let judged = Snapshot::read(&path).unwrap();
        // Meanwhile another waiter broke it and took the lock anew.
        fs::remove_file(&path).unwrap();
        let live = EntryLock::acquire(dir.path(), quick()).unwrap();
        let live_content = fs::read(&path).unwrap();
        break_stale(&path, &judged).unwrap();
        assert_eq!(
            fs::read(&path).unwrap(),
            live_content,
            "the live lock is back"
        );
        drop(live);
        assert!(!path.exists());
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "no grave left"
        );
    }

    /// Run by `processes_take_turns` in child processes (ignored on its own).
    #[test]
    #[ignore = "a child of processes_take_turns"]
    fn lock_child() {
        let Ok(dir) = std::env::var("RELIQUARY_LOCK_CHILD_DIR") else {
            return;
        };
        let dir = Path::new(&dir);
        for _ in 0..5 {
            let _lock = EntryLock::acquire(dir, LockTiming::default()).unwrap();
            let log = dir.join("log");
            let mut file = fs::OpenOptions::new()
                .append(true)
                .create(true)
                .open(&log)
                .unwrap();
            writeln!(file, "in {}", std::process::id()).unwrap();
            thread::sleep(Duration::from_millis(10));
            writeln!(file, "out {}", std::process::id()).unwrap();
        }
    }

    #[test]
    fn processes_take_turns() {
        let dir = tempfile::tempdir().unwrap();
        let children: Vec<_> = (0..4)
            .map(|_| {
                std::process::Command::new(std::env::current_exe().unwrap())
                    .args(["lock::tests::lock_child", "--exact", "--ignored"])
                    .env("RELIQUARY_LOCK_CHILD_DIR", dir.path())
                    .stdout(std::process::Stdio::null())
                    .spawn()
                    .unwrap()
            })
            .collect();
        for mut child in children {
            assert!(child.wait().unwrap().success());
        }
        let log = fs::read_to_string(dir.path().join("log")).unwrap();
        let lines: Vec<&str> = log.lines().collect();
        assert_eq!(lines.len(), 40, "{log}");
        for pair in lines.chunks(2) {
            let (a, b) = (pair[0], pair[1]);
            assert!(
                a.starts_with("in ") && b == a.replace("in ", "out "),
                "interleaved: {log}"
            );
        }
    }
}
