//! The request path (parse, decide, splice) and the marking of JSON replies, on any
//! body and `X-Conversation-ID`.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    tower_conversations::fuzzing::chat_request(data);
});
