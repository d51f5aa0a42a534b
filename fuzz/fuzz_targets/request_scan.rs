//! One request body read by the request scan and by the parse: the same answer, or the
//! parse's alone.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tower_conversations::fuzzing::request_scan(data);
});
