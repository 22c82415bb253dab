//! Fault injection for the crash tests: in debug builds, `RELIQUARY_FAULT=<point>` aborts the
//! process at that point, exactly like `kill -9` would. Release builds compile it to nothing.

/// Aborts here if this is the configured fault point (debug builds only).
#[inline]
pub fn point(name: &str) {
    #[cfg(debug_assertions)]
    if std::env::var("RELIQUARY_FAULT").is_ok_and(|configured| configured == name) {
        eprintln!("reliquary: fault injection: aborting at {name}");
        std::process::abort();
    }
    #[cfg(not(debug_assertions))]
    let _ = name;
}
