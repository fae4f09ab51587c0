//! Fuzzes the LL-HLS delivery directive parser (`_HLS_msn`, `_HLS_part`, `_HLS_skip`):
//! any query string must parse or be refused, never panic; `_HLS_part` never comes
//! without `_HLS_msn`.
#![no_main]

use estuary::http::parse_delivery;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(q) = std::str::from_utf8(data) {
        if let Ok(d) = parse_delivery(Some(q)) {
            assert!(d.part.is_none() || d.msn.is_some());
        }
    }
});
