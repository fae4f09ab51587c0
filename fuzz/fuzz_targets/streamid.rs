//! Fuzzes SRT streamid parsing: any string must parse or give a typed error, never
//! panic, and a parsed name is always a valid stream name.
#![no_main]

use estuary::ingest::streamid::{parse, validate_name};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(req) = parse(s) {
            assert!(validate_name(&req.name).is_ok());
        }
    }
});
