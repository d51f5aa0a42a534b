//! One event's data through the chunk scanner and serde: the same chunk, or serde's alone.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tower_conversations::fuzzing::chunk_read(data);
});
