//! Any JSON value written out as a stored message's text and by serde_json: the same
//! text.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tower_conversations::fuzzing::json_text(data);
});
