//! The SSE parser and the reply assembler, on any stream cut at any points.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tower_conversations::fuzzing::sse_stream(data);
});
