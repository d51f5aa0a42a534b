//! Entry points for the fuzz targets in `fuzz/`, compiled only with the `fuzzing`
//! feature. Not part of the crate's API: hidden from its docs, outside semver, and free
//! to change with the internals it reaches.
//!
//! Each function takes the fuzzer's raw bytes, drives crate internals with them, and
//! panics when an invariant breaks; the fuzzer reports the panic with its input.

use serde_json::{Value, json};

use std::collections::VecDeque;

use crate::chat::ModeError;
use crate::chat::{
    ConversationHeader, Mode, ModePolicy, ReplyAssembler, StorageFailedMarker, assemble_json_reply,
    decide, decide_parsed, mark_storage_failed, object_check_agrees_with_serde, parse_chat_request,
    scan_agrees_with_parse, scanner_agrees_with_serde,
};
use crate::sse::{StreamEnd, run_stream};
use crate::store::HistoryMessage;

/// Splits the fuzzer's input into cut points (up to 8, from the first byte's count and
/// two bytes each) and the payload they cut.
fn cuts_and_payload(data: &[u8]) -> (Vec<usize>, &[u8]) {
    let Some((&count, rest)) = data.split_first() else {
        return (Vec::new(), data);
    };
    let count = usize::from(count % 9).min(rest.len() / 2);
    let (points, payload) = rest.split_at(count * 2);
    let mut cuts: Vec<usize> = points
        .chunks_exact(2)
        .map(|pair| usize::from(u16::from_le_bytes([pair[0], pair[1]])) % (payload.len() + 1))
        .collect();
    cuts.sort_unstable();
    (cuts, payload)
}

/// `payload` cut at `cuts` (sorted, within its length).
fn pieces<'a>(payload: &'a [u8], cuts: &[usize]) -> Vec<&'a [u8]> {
    let mut pieces = Vec::with_capacity(cuts.len() + 1);
    let mut start = 0;
    for &cut in cuts.iter().chain([payload.len()].iter()) {
        pieces.push(&payload[start..cut]);
        start = cut;
    }
    pieces
}

/// The SSE parser and the reply assembler on an arbitrary stream cut at arbitrary
/// points: the same events and bytes however it is cut, every byte before `[DONE]`
/// forwarded, `[DONE]` recognised even once capturing stopped, and an assembled
/// message and `storage_failed` chunk that are valid JSON.
pub fn sse_stream(data: &[u8]) {
    let (cuts, stream) = cuts_and_payload(data);
    let whole = run_stream(&[stream], None);
    let cut = run_stream(&pieces(stream, &cuts), None);
    assert_eq!(cut, whole, "cutting changed what the stream means");
    let (events, sent, done) = whole;
    if done {
        assert!(
            stream.starts_with(&sent),
            "forwarded bytes the stream did not have"
        );
    } else {
        assert_eq!(
            sent, stream,
            "bytes were held back from a stream without [DONE]"
        );
    }

    // Past the capture limit only `[DONE]` is still looked for, and found the same.
    let cut_pieces = pieces(stream, &cuts);
    let (_, limited_sent, limited_done) = run_stream(&cut_pieces, Some(cut_pieces.len() / 2));
    assert_eq!(
        (limited_sent, limited_done),
        (sent, done),
        "[DONE] lost past the limit"
    );

    // The assembler's fast paths read what serde alone reads.
    let mut reply = ReplyAssembler::new();
    let mut reference = ReplyAssembler::new();
    for event in &events {
        reply.on_event_bytes(event);
        if let Ok(event) = std::str::from_utf8(event) {
            reference.on_event_reference(event);
        }
    }
    let message = reply.take_message(done);
    assert_eq!(
        message,
        reference.take_message(done),
        "the assembler and serde alone differ"
    );
    assert_eq!(message.to_value()["role"], "assistant");
    let text = serde_json::to_string(&message.to_value()).expect("the message serializes");
    serde_json::from_str::<Value>(&text).expect("and reads back");
    let end = StreamEnd::default();
    let mut closing = VecDeque::new();
    end.close(false, || reply.storage_failed_chunk(), &mut closing);
    let failed: Vec<u8> = closing
        .iter()
        .flat_map(|bytes| bytes.iter().copied())
        .collect();
    let failed = std::str::from_utf8(&failed).expect("UTF-8");
    let chunk = failed
        .strip_prefix("data: ")
        .and_then(|rest| rest.strip_suffix("\n\n"))
        .expect("one event");
    let chunk: Value = serde_json::from_str(chunk).expect("the storage_failed chunk is JSON");
    assert_eq!(chunk["metadata"]["storage_failed"], true);
}

/// One event's data read by the chunk scanner and by serde: the scanner either reads
/// exactly what serde reads or hands the data to serde. Input that is not UTF-8 (which
/// never reaches the reader) is skipped.
pub fn chunk_read(data: &[u8]) {
    if let Ok(data) = std::str::from_utf8(data) {
        scanner_agrees_with_serde(data);
    }
}

/// The request path on an arbitrary body and `X-Conversation-ID`: parse, decide under
/// both policies, splice (the result is JSON with every other member unchanged and the
/// messages in order), and the reply-side marking of the same bytes as a JSON reply.
pub fn chat_request(data: &[u8]) {
    let (header, body) = match data.split_first() {
        Some((&length, rest)) => rest.split_at(usize::from(length).min(rest.len()) % 40),
        None => (&data[..0], data),
    };
    let chat = parse_chat_request(body);
    let header = ConversationHeader::from_values([header]);
    for policy in [ModePolicy::SystemMessage, ModePolicy::Header] {
        let decided = decide(policy, header, body);
        if header == ConversationHeader::Invalid {
            assert!(decided.is_err(), "an invalid header was accepted");
        }
        let reference = decide_parsed(policy, header, parse_chat_request(body));
        assert!(
            same_mode(&decided, &reference),
            "the scan decided {decided:?}, the parse {reference:?}"
        );
    }
    if let Some(chat) = chat {
        let history = [
            json!({"role": "user", "content": "earlier"}),
            json!({"role": "assistant", "content": null, "tool_calls": [{"id": "c"}]}),
        ];
        let stored: Vec<HistoryMessage> = history
            .iter()
            .filter_map(HistoryMessage::from_value)
            .collect();
        let spliced = chat.splice(&stored);
        serde_json::from_slice::<serde::de::IgnoredAny>(&spliced).expect("spliced is JSON");
        // Compared member by member where serde_json's `Value` can hold the body: JSON
        // numbers may be of any size, a `Value`'s may not, and the splice keeps them as
        // they came.
        if let Ok(Value::Object(mut original)) = serde_json::from_slice::<Value>(body) {
            let spliced: Value = serde_json::from_slice(&spliced).expect("spliced is a value");
            let Value::Object(mut spliced) = spliced else {
                panic!("spliced is not an object");
            };
            let messages = spliced.remove("messages").expect("messages");
            let sent = original.remove("messages").expect("messages");
            assert_eq!(spliced, original, "another member changed");
            let sent = sent.as_array().expect("an array");
            let is_system = |m: &&Value| matches!(m["role"].as_str(), Some("system" | "developer"));
            let expected: Vec<&Value> = sent
                .iter()
                .filter(is_system)
                .chain(history.iter())
                .chain(sent.iter().filter(|m| !is_system(m)))
                .collect();
            let messages: Vec<&Value> = messages.as_array().expect("an array").iter().collect();
            assert_eq!(messages, expected, "messages out of order");
            assert_eq!(
                chat.into_turn_messages().len(),
                sent.iter().filter(|m| !is_system(m)).count()
            );
        }
    }
    json_reply(body);
}

/// Whether the scan's decision (`left`) is the parse's (`right`): the same mode (a new
/// conversation's id is fresh each time, so only its request is compared), or stateless
/// where the parse refuses the body after the system message the scan stopped at; both
/// forward the body as it came.
fn same_mode(left: &Result<Mode<'_>, ModeError>, right: &Result<Mode<'_>, ModeError>) -> bool {
    match (left, right) {
        (Ok(Mode::New(_, left)), Ok(Mode::New(_, right))) => left == right,
        (Ok(Mode::Stateless), Ok(Mode::Passthrough)) => true,
        _ => left == right,
    }
}

/// One body read by the request scan and by the parse: the scan either answers as the
/// parse does or leaves the body to it; and the same bytes, as text, checked as one
/// stored message's object by the scan's reader and by serde.
pub fn request_scan(data: &[u8]) {
    scan_agrees_with_parse(data);
    if let Ok(text) = std::str::from_utf8(data) {
        object_check_agrees_with_serde(text);
    }
}

/// A JSON reply: assembled without panicking; marked `storage_failed` whole or as it
/// streams past, both giving JSON with the mark and every other member unchanged.
fn json_reply(body: &[u8]) {
    if let Some(message) = assemble_json_reply(body) {
        serde_json::to_string(&message.to_value()).expect("the message serializes");
    }
    let original = serde_json::from_slice::<Value>(body).ok();
    // Valid JSON serde_json cannot hold whole (a number beyond f64) stays so when
    // marked; what it can read, it must read after marking too.
    if let (Some(marked), Some(_)) = (mark_storage_failed(body), &original) {
        let marked: Value = serde_json::from_slice(&marked).expect("marked is JSON");
        assert_eq!(marked["metadata"]["storage_failed"], true);
    }
    let mut marker = StorageFailedMarker::new();
    let mut out = Vec::with_capacity(body.len() + 40);
    for piece in body.chunks(7) {
        match marker.feed(piece) {
            Some(insertion) => {
                out.extend_from_slice(&piece[..insertion.at]);
                out.extend_from_slice(insertion.member);
                out.extend_from_slice(&piece[insertion.at..]);
            }
            None => out.extend_from_slice(piece),
        }
    }
    if !marker.marked() {
        assert_eq!(out, body, "an unmarked reply changed");
        return;
    }
    if let Some(Value::Object(mut original)) = original {
        let Ok(Value::Object(mut marked)) = serde_json::from_slice::<Value>(&out) else {
            panic!("a JSON object stopped being one when marked");
        };
        let metadata = marked.remove("metadata").expect("the mark");
        assert_eq!(metadata, json!({"storage_failed": true}));
        assert_eq!(
            original.remove("metadata"),
            None,
            "metadata of its own was marked"
        );
        assert_eq!(marked, original, "another member changed");
    }
}

/// Any JSON value the bytes hold, written out by the store's `json_text` and by
/// serde_json: the same text, byte for byte.
pub fn json_text(data: &[u8]) {
    let Ok(value) = serde_json::from_slice::<Value>(data) else {
        return;
    };
    let expected = serde_json::to_string(&value).expect("a parsed value serializes");
    assert_eq!(crate::store::json_text(&value), expected);
}
