//! Fuzzes the WebSocket message decoder: any bytes must decode or give a typed error,
//! never panic; every error maps to an error frame that encodes and parses back.
#![no_main]

use estuary::interact::protocol::{decode, encode, error, ServerMsg};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    match decode(data) {
        Ok(frame) => {
            // A decoded ref is bounded.
            if let Some(r) = &frame.r#ref {
                assert!(r.len() <= estuary::interact::protocol::MAX_REF_LEN);
            }
        }
        Err(e) => {
            let text = encode(&error(e.code(), e.to_string(), None));
            let back: ServerMsg = serde_json::from_str(&text).expect("error frames parse back");
            assert!(matches!(back, ServerMsg::Error { .. }));
        }
    }
});
