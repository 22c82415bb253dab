//! package.json validation: any bytes give a manifest or a rejection, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = reliquary::domain::tarball::parse_manifest(data);
    let _ = reliquary_client::json::parse_strict(data).map(|v| reliquary_client::json::canonicalize(&v));
});
