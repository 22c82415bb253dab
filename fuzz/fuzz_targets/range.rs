//! `Range` header parsing: whatever the header and the blob size, no panic, and a partial range
//! lies inside the blob and is not empty.
#![no_main]

use libfuzzer_sys::fuzz_target;
use reliquary::http::conditional::{parse_range, RangeRequest};

fuzz_target!(|input: (u64, &[u8])| {
    let (size, header) = input;
    let header = String::from_utf8_lossy(header);
    if let RangeRequest::Partial(range) = parse_range(Some(&header), size) {
        assert!(range.start < range.end && range.end <= size, "{header:?} {size} -> {range:?}");
    }
});
