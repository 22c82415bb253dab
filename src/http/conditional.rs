//! HTTP validators and byte ranges: `If-None-Match` and single-range `Range` requests.

use std::ops::Range;

/// Whether an `If-None-Match` header value matches `etag` (weak comparison, as RFC 9110 asks).
pub fn none_match(header: Option<&str>, etag: &str) -> bool {
    let Some(header) = header else { return false };
    let bare = |tag: &str| tag.trim().trim_start_matches("W/").to_owned();
    header
        .split(',')
        .any(|candidate| candidate.trim() == "*" || bare(candidate) == bare(etag))
}

/// The outcome of reading a `Range` header against a blob of `size` bytes.
#[derive(Debug, PartialEq, Eq)]
pub enum RangeRequest {
    /// No usable range: serve everything with 200 (absent, not `bytes`, or several ranges).
    Full,
    /// One satisfiable range: serve it with 206.
    Partial(Range<u64>),
    /// A range that cannot be satisfied: 416.
    Unsatisfiable,
}

/// Parses `bytes=a-b`, `bytes=a-` and `bytes=-n`. Several ranges are answered in full: a
/// multipart/byteranges body buys a tarball client nothing.
pub fn parse_range(header: Option<&str>, size: u64) -> RangeRequest {
    let Some(spec) = header.and_then(|h| h.trim().strip_prefix("bytes=")) else {
        return RangeRequest::Full;
    };
    if spec.contains(',') {
        return RangeRequest::Full;
    }
    let Some((start, end)) = spec.trim().split_once('-') else {
        return RangeRequest::Full;
    };
    let parse = |s: &str| s.trim().parse::<u64>().ok();
    let range = match (start.trim().is_empty(), end.trim().is_empty()) {
        (true, false) => match parse(end) {
            Some(0) | None => return RangeRequest::Unsatisfiable,
            Some(suffix) => size.saturating_sub(suffix)..size,
        },
        (false, true) => match parse(start) {
            Some(first) => first..size,
            None => return RangeRequest::Full,
        },
        (false, false) => match (parse(start), parse(end)) {
            (Some(first), Some(last)) if first <= last => first..last.saturating_add(1).min(size),
            _ => return RangeRequest::Full,
        },
        (true, true) => return RangeRequest::Full,
    };
    if range.start >= size {
        RangeRequest::Unsatisfiable
    } else {
        RangeRequest::Partial(range)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges() {
        assert_eq!(parse_range(None, 10), RangeRequest::Full);
        assert_eq!(
            parse_range(Some("bytes=0-3"), 10),
            RangeRequest::Partial(0..4)
        );
        assert_eq!(
            parse_range(Some("bytes=5-"), 10),
            RangeRequest::Partial(5..10)
        );
        assert_eq!(
            parse_range(Some("bytes=-3"), 10),
            RangeRequest::Partial(7..10)
        );
        assert_eq!(
            parse_range(Some("bytes=-30"), 10),
            RangeRequest::Partial(0..10)
        );
        assert_eq!(
            parse_range(Some("bytes=8-100"), 10),
            RangeRequest::Partial(8..10)
        );
        assert_eq!(
            parse_range(Some("bytes=10-"), 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=-0"), 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(parse_range(Some("bytes=0-1,4-5"), 10), RangeRequest::Full);
        assert_eq!(parse_range(Some("items=0-1"), 10), RangeRequest::Full);
        assert_eq!(parse_range(Some("bytes=5-2"), 10), RangeRequest::Full);
        assert_eq!(parse_range(Some("bytes=x-2"), 10), RangeRequest::Full);
        // Numbers at and past the edge of u64 never wrap.
        assert_eq!(
            parse_range(Some("bytes=1-18446744073709551615"), 10),
            RangeRequest::Partial(1..10)
        );
        assert_eq!(
            parse_range(Some("bytes=0-18446744073709551615"), 10),
            RangeRequest::Partial(0..10)
        );
        assert_eq!(
            parse_range(Some("bytes=0-18446744073709551616"), 10),
            RangeRequest::Full
        );
        assert_eq!(
            parse_range(Some("bytes=18446744073709551615-"), 10),
            RangeRequest::Unsatisfiable
        );
        assert_eq!(
            parse_range(Some("bytes=-18446744073709551615"), 10),
            RangeRequest::Partial(0..10)
        );
    }

    proptest::proptest! {
        /// Whatever the header, a partial range lies inside the blob and is not empty.
        #[test]
        fn any_range_header_is_safe(header in "(bytes=)?[0-9 ,-]{0,45}", size in 0u64..1 << 40) {
            if let RangeRequest::Partial(range) = parse_range(Some(&header), size) {
                proptest::prop_assert!(range.start < range.end && range.end <= size);
            }
        }
    }

    #[test]
    fn etags() {
        assert!(none_match(Some("\"3\""), "\"3\""));
        assert!(none_match(Some("\"1\", W/\"3\""), "\"3\""));
        assert!(none_match(Some("*"), "\"3\""));
        assert!(!none_match(Some("\"4\""), "\"3\""));
        assert!(!none_match(None, "\"3\""));
    }
}
