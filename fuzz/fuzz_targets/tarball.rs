//! The upload tarball walk: any bytes are a manifest or a rejection, with bounded work.
#![no_main]
use libfuzzer_sys::fuzz_target;
use reliquary::domain::tarball::{inspect, Limits};

fuzz_target!(|data: &[u8]| {
    let limits = Limits {
        max_unpacked_bytes: 8 << 20,
        max_ratio: 20,
        max_entries: 1000,
        max_name_bytes: 4096,
        max_manifest_bytes: 1 << 20,
    };
    let _ = inspect(data, &limits);
});
