//! Reading a chat-completions request body and splicing history into it.
//!
//! The body is never re-encoded: the `messages` array is located by its byte span, and
//! splicing copies every byte outside it unchanged, so other fields reach the inner
//! service exactly as the client wrote them (number precision, key order, spacing).

use std::ops::Range;

use serde::Deserialize;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::store::{HistoryMessage, NewMessage};

mod scan;

#[cfg(any(feature = "sqlite", feature = "fuzzing", test))]
pub(crate) use scan::is_one_object;
pub(crate) use scan::{MessageSpans, scan_chat_request};

/// A chat-completions body, read far enough to decide and splice, borrowing the bytes.
#[derive(Debug, PartialEq)]
pub(crate) struct ChatRequest<'a> {
    body: &'a [u8],
    /// Where the `messages` array stands in `body`.
    messages_span: Range<usize>,
    /// The request's messages, in order.
    messages: Vec<RequestMessage>,
    /// Those that belong in the stored turn (all but instructions), in order, each as
    /// the very text the client sent.
    turn: Vec<NewMessage>,
}

/// One message of a request.
#[derive(Debug, PartialEq)]
struct RequestMessage {
    /// Where it stands in the body, so splicing can copy it as it came.
    span: Range<usize>,
    /// Whether it is instructions (see [`is_system_role`]).
    system: bool,
}

/// Room a turn's messages leave for the reply, pushed after them when it has arrived
/// (growing the list then would copy it).
const REPLY: usize = 1;

/// The one top-level field the layer reads. Other fields are skipped (still checked to
/// be valid JSON); a second `messages` key is an error, since upstream parsers disagree
/// on which of the two wins.
#[derive(Deserialize)]
struct Envelope<'a> {
    #[serde(borrow)]
    messages: &'a RawValue,
}

/// Reads `body` as a chat request: a JSON object whose `messages` is an array of objects,
/// each with a string `role`. `None` for anything else.
pub(crate) fn parse_chat_request(body: &[u8]) -> Option<ChatRequest<'_>> {
    // A derived struct would also accept a JSON array (its fields by position).
    if !starts_with_object(body) {
        return None;
    }
    // Skipped members are not checked to be UTF-8 when read from bytes; JSON must be,
    // and a body that is not is no chat request (it passes through untouched).
    let text = std::str::from_utf8(body).ok()?;
    let envelope: Envelope<'_> = serde_json::from_str(text).ok()?;
    let messages_span = span_within(body, envelope.messages.get())?;
    let raw_messages: Vec<&RawValue> = serde_json::from_str(envelope.messages.get()).ok()?;

    let mut messages = Vec::with_capacity(raw_messages.len());
    let mut turn = Vec::with_capacity(raw_messages.len() + REPLY);
    for raw in raw_messages {
        let message: Value = serde_json::from_str(raw.get()).ok()?;
        let system = is_system_role(message.get("role")?.as_str()?);
        if !system {
            turn.push(NewMessage::from_request_value(raw.get(), &message));
        }
        let span = span_within(body, raw.get())?;
        messages.push(RequestMessage { span, system });
    }
    Some(ChatRequest {
        body,
        messages_span,
        messages,
        turn,
    })
}

/// The chat request the scan read, its messages built from the spans the scan noted:
/// what [`parse_chat_request`] gives for the same body (the scan's differential tests
/// hold it to that), without the parse's own reads of the envelope and of the array, and
/// without a tree of each message: a plain message's role and content are where the scan
/// found them, any other's are read from its text (see [`NewMessage::from_request`]).
/// The scan notes spans only for a request without instructions. `None` only where a
/// message does not read as serde reads it, which the scan rules out.
pub(crate) fn chat_request_from_spans(body: &[u8], spans: MessageSpans) -> Option<ChatRequest<'_>> {
    let mut messages = Vec::with_capacity(spans.messages.len());
    let mut turn = Vec::with_capacity(spans.messages.len() + REPLY);
    let text = |span: &Range<usize>| std::str::from_utf8(body.get(span.clone())?).ok();
    for scanned in spans.messages {
        let json = text(&scanned.span)?;
        turn.push(match &scanned.content {
            Some(content) => {
                // Where the content stands within the message's own text.
                let start = content.start.checked_sub(scanned.span.start)?;
                let end = content.end.checked_sub(scanned.span.start)?;
                NewMessage::plain(json, text(&scanned.role)?, start..end)?
            }
            None => NewMessage::from_request(json)?,
        });
        messages.push(RequestMessage {
            span: scanned.span,
            system: false,
        });
    }
    Some(ChatRequest {
        body,
        messages_span: spans.array,
        messages,
        turn,
    })
}

impl<'a> ChatRequest<'a> {
    /// Whether any message has role `system` or `developer`.
    pub(crate) fn has_system_message(&self) -> bool {
        self.messages.iter().any(|message| message.system)
    }

    /// The body with `messages` replaced by: the request's system/developer messages,
    /// then `history`, then the request's other messages. Every other byte of the body
    /// is kept as it was, and each stored message goes in as the text it was stored as.
    pub(crate) fn splice(&self, history: &[HistoryMessage]) -> Vec<u8> {
        // The spans were checked to lie within `body` when it was parsed.
        let before = &self.body[..self.messages_span.start];
        let after = &self.body[self.messages_span.end..];
        let stored: usize = history.iter().map(|message| message.json().len() + 1).sum();
        let mut out = Vec::with_capacity(self.body.len() + stored);
        out.extend_from_slice(before);

        let mut array = ArrayWriter::open(&mut out);
        for message in self.messages.iter().filter(|m| m.system) {
            array.raw(&self.body[message.span.clone()]);
        }
        for message in history {
            array.raw(message.json().as_bytes());
        }
        for message in self.messages.iter().filter(|m| !m.system) {
            array.raw(&self.body[message.span.clone()]);
        }
        array.close();

        out.extend_from_slice(after);
        out
    }

    /// The messages of this request that belong in the stored turn: all but
    /// system/developer ones, in order, each as the client wrote it. Taken, not copied: a
    /// turn needs the request only for the splice, which comes first.
    pub(crate) fn into_turn_messages(self) -> Vec<NewMessage> {
        self.turn
    }
}

/// Checks the scan against the parse on one body: when the scan answers, the parse reads
/// the body as a chat request with the same answer about system messages, or (after a
/// system message, where the scan stops) refuses it; without a system message, the
/// request built from the scan's spans is the parse's, span for span. Panics otherwise
/// (the property tests and the `request_scan` fuzz target call it). Returns whether the
/// scan answered.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn scan_agrees_with_parse(body: &[u8]) -> bool {
    let Some(shape) = scan_chat_request(body) else {
        return false;
    };
    match parse_chat_request(body) {
        Some(parsed) => {
            assert_eq!(
                shape.has_system_message,
                parsed.has_system_message(),
                "the scan and the parse differ on system messages in {:?}",
                String::from_utf8_lossy(body)
            );
            assert_eq!(
                shape.has_system_message,
                shape.spans.is_none(),
                "spans are noted exactly when there is no system message"
            );
            if let Some(spans) = shape.spans {
                assert_eq!(
                    chat_request_from_spans(body, spans).as_ref(),
                    Some(&parsed),
                    "the scan's spans build another request than the parse in {:?}",
                    String::from_utf8_lossy(body)
                );
            }
        }
        // The scan stops at a system message; a body refused for what follows it is
        // forwarded as it came all the same. One without a system message it reads whole.
        None => assert!(
            shape.has_system_message,
            "the scan read a chat request the parse refuses: {:?}",
            String::from_utf8_lossy(body)
        ),
    }
    true
}

/// Checks the object check against serde on one text: when the check is sure, serde
/// reads the text as exactly one object. Panics otherwise (the property tests and the
/// `request_scan` fuzz target call it).
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn object_check_agrees_with_serde(text: &str) {
    if is_one_object(text.as_bytes()) {
        let parsed = serde_json::value::RawValue::from_string(text.to_owned());
        assert!(
            parsed.is_ok_and(|raw| raw.get() == text && text.starts_with('{')),
            "the check was sure of what serde does not read as one object: {text:?}"
        );
    }
}

/// Whether a message of this role is instructions (`system`, or `developer` as newer
/// OpenAI models call it) rather than part of the dialogue.
fn is_system_role(role: &str) -> bool {
    matches!(role, "system" | "developer")
}

/// Writes a JSON array element by element, commas included.
struct ArrayWriter<'o> {
    out: &'o mut Vec<u8>,
    empty: bool,
}

impl<'o> ArrayWriter<'o> {
    fn open(out: &'o mut Vec<u8>) -> Self {
        out.push(b'[');
        Self { out, empty: true }
    }

    fn separate(&mut self) {
        if !self.empty {
            self.out.push(b',');
        }
        self.empty = false;
    }

    /// An element that is already JSON text.
    fn raw(&mut self, json: &[u8]) {
        self.separate();
        self.out.extend_from_slice(json);
    }

    fn close(self) {
        self.out.push(b']');
    }
}

/// Whether the first non-whitespace byte opens a JSON object.
pub(super) fn starts_with_object(body: &[u8]) -> bool {
    body.trim_ascii_start().first() == Some(&b'{')
}

/// Where `part`, a slice borrowed from `whole`, stands in it; `None` when it does not
/// lie within `whole` (a deserializer that copied instead of borrowing).
pub(super) fn span_within(whole: &[u8], part: &str) -> Option<Range<usize>> {
    let start = (part.as_ptr() as usize).checked_sub(whole.as_ptr() as usize)?;
    let end = start.checked_add(part.len())?;
    (whole.get(start..end)? == part.as_bytes()).then_some(start..end)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    /// History as a store hands it back.
    fn stored(messages: &[Value]) -> Vec<HistoryMessage> {
        messages
            .iter()
            .map(|message| HistoryMessage::from_value(message).expect("an object"))
            .collect()
    }

    fn roles(body: &[u8]) -> Vec<String> {
        let value: Value = serde_json::from_slice(body).expect("spliced body is JSON");
        value["messages"]
            .as_array()
            .expect("messages is an array")
            .iter()
            .map(|m| m["role"].as_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn a_json_object_with_a_messages_array_is_a_chat_request() {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let request = parse_chat_request(body).expect("a chat request");
        let turn = request.into_turn_messages();
        assert_eq!(turn.len(), 1);
        assert_eq!(turn[0].to_value(), json!({"role": "user", "content": "hi"}));
    }

    #[test]
    fn an_empty_messages_array_is_a_chat_request() {
        let request = parse_chat_request(br#"{"messages":[]}"#).expect("a chat request");
        assert!(!request.has_system_message());
        assert!(request.into_turn_messages().is_empty());
    }

    #[test]
    fn a_body_that_is_not_json_is_not_a_chat_request() {
        assert!(parse_chat_request(b"").is_none());
        assert!(parse_chat_request(b"hello").is_none());
        assert!(parse_chat_request(br#"{"messages":[{"role":"user"}]"#).is_none());
        assert!(parse_chat_request(br#"{"messages":[{"role":"user"}]} trailing"#).is_none());
        assert!(parse_chat_request(br#"{"messages":[{"role":"user"}],"x":tru}"#).is_none());
        assert!(parse_chat_request(b"\xff\xfe").is_none());
        let invalid_elsewhere = b"{\"user\":\"\x82\",\"messages\":[{\"role\":\"user\"}]}";
        assert!(parse_chat_request(invalid_elsewhere).is_none());
    }

    #[test]
    fn a_body_that_is_not_an_object_is_not_a_chat_request() {
        assert!(parse_chat_request(br#"[[{"role":"user"}]]"#).is_none());
        assert!(parse_chat_request(br#""messages""#).is_none());
        assert!(parse_chat_request(b"null").is_none());
    }

    #[test]
    fn a_body_without_a_messages_array_is_not_a_chat_request() {
        assert!(parse_chat_request(br#"{"model":"m"}"#).is_none());
        assert!(parse_chat_request(br#"{"messages":null}"#).is_none());
        assert!(parse_chat_request(br#"{"messages":"hi"}"#).is_none());
        assert!(parse_chat_request(br#"{"messages":{"role":"user"}}"#).is_none());
    }

    #[test]
    fn messages_that_are_not_objects_with_a_string_role_are_not_a_chat_request() {
        assert!(parse_chat_request(br#"{"messages":["hi"]}"#).is_none());
        assert!(parse_chat_request(br#"{"messages":[{"content":"hi"}]}"#).is_none());
        assert!(parse_chat_request(br#"{"messages":[{"role":1}]}"#).is_none());
        assert!(parse_chat_request(br#"{"messages":[{"role":"user"},null]}"#).is_none());
    }

    #[test]
    fn a_body_with_two_messages_keys_is_not_a_chat_request() {
        let body = br#"{"messages":[{"role":"user"}],"messages":[{"role":"system"}]}"#;
        assert!(parse_chat_request(body).is_none());
    }

    #[test]
    fn system_and_developer_messages_are_detected() {
        let system = br#"{"messages":[{"role":"user"},{"role":"system","content":"x"}]}"#;
        let developer = br#"{"messages":[{"role":"developer","content":"x"}]}"#;
        let neither = br#"{"messages":[{"role":"user"},{"role":"assistant"}]}"#;
        assert!(parse_chat_request(system).unwrap().has_system_message());
        assert!(parse_chat_request(developer).unwrap().has_system_message());
        assert!(!parse_chat_request(neither).unwrap().has_system_message());
    }

    #[test]
    fn splice_keeps_every_other_byte_of_the_body() {
        let before =
            "{ \"z_first\" : 123456789012345678901234567890,\n  \"model\":\"m\", \"messages\" :";
        let after = " ,\"temperature\": 0.10000000000000000001, \"a_last\":{\"k\":[1,2e400]} }\n";
        let body = format!("{before} [ {{\"role\" : \"user\", \"content\":\"hi\"}} ]{after}");
        let request = parse_chat_request(body.as_bytes()).unwrap();

        let spliced = request.splice(&stored(&[
            json!({"role": "assistant", "content": "earlier"}),
        ]));

        let spliced = String::from_utf8(spliced).unwrap();
        assert!(spliced.starts_with(before), "{spliced}");
        assert!(spliced.ends_with(after), "{spliced}");
    }

    #[test]
    fn splice_orders_system_messages_then_history_then_new_messages() {
        let body = br#"{"messages":[{"role":"user","content":"new"},{"role":"system","content":"s"},{"role":"tool","tool_call_id":"t"},{"role":"developer","content":"d"}]}"#;
        let request = parse_chat_request(body).unwrap();
        let history = [
            json!({"role": "user", "content": "old"}),
            json!({"role": "assistant", "content": "old reply"}),
        ];

        let spliced: Value = serde_json::from_slice(&request.splice(&stored(&history))).unwrap();

        assert_eq!(
            spliced["messages"],
            json!([
                {"role": "system", "content": "s"},
                {"role": "developer", "content": "d"},
                {"role": "user", "content": "old"},
                {"role": "assistant", "content": "old reply"},
                {"role": "user", "content": "new"},
                {"role": "tool", "tool_call_id": "t"},
            ])
        );
    }

    #[test]
    fn splice_copies_request_messages_as_they_came() {
        let message = r#"{ "role":"user", "content" : "h\u00e9", "n": 1.000000000000000000001 }"#;
        let body = format!(r#"{{"messages":[{message}]}}"#);
        let request = parse_chat_request(body.as_bytes()).unwrap();

        let spliced =
            String::from_utf8(request.splice(&stored(&[json!({"role": "user"})]))).unwrap();

        assert_eq!(
            spliced,
            format!(r#"{{"messages":[{{"role":"user"}},{message}]}}"#)
        );
    }

    #[test]
    fn splice_with_empty_history_or_no_messages_gives_valid_json() {
        let empty = parse_chat_request(br#"{"messages":[ ]}"#).unwrap();
        assert_eq!(empty.splice(&[]), br#"{"messages":[]}"#);
        assert_eq!(
            roles(&empty.splice(&stored(&[json!({"role": "user"})]))),
            ["user"]
        );

        let one = parse_chat_request(br#"{"messages":[{"role":"user"}]}"#).unwrap();
        assert_eq!(roles(&one.splice(&[])), ["user"]);
    }

    #[test]
    fn the_turn_holds_the_requests_non_system_messages_in_order() {
        let body = br#"{"messages":[{"role":"system","content":"s"},{"role":"user","content":"a"},{"role":"developer"},{"role":"tool","content":"b"}]}"#;
        let turn = parse_chat_request(body).unwrap().into_turn_messages();
        let texts: Vec<&str> = turn.iter().map(NewMessage::json).collect();
        assert_eq!(
            texts,
            [
                r#"{"role":"user","content":"a"}"#,
                r#"{"role":"tool","content":"b"}"#
            ]
        );
    }

    #[test]
    fn numbers_in_a_stored_message_read_back_exactly() {
        // Parsed without care, this reads as 2.056044501558631e-308: one unit off.
        let body = br#"{"messages":[{"role":"user","content":"x","n":2.0560445015586303e-308}]}"#;
        let turn = parse_chat_request(body).unwrap().into_turn_messages();
        assert_eq!(
            turn[0].to_value().to_string(),
            r#"{"content":"x","n":2.0560445015586303e-308,"role":"user"}"#
        );
    }

    #[test]
    fn the_turn_keeps_each_message_as_the_client_wrote_it() {
        let request = |message: &str| format!(r#"{{"messages":[ {message} ]}}"#);
        // Parsed and written again, the number would read 2.056044501558631e-308, one
        // unit off, and the spaces and the escape would be gone. (A float inside a
        // message is left to the parse by the scan.)
        let float = r#"{ "role":"user", "content" : "h\u00e9", "n":2.0560445015586303e-308 }"#;
        let turn = parse_chat_request(request(float).as_bytes())
            .expect("a chat request")
            .into_turn_messages();
        assert_eq!(turn[0].json(), float);

        let plain = r#"{ "n" : [1, 2], "content":"h\u00e9\n", "role" :"user" }"#;
        let body = request(plain);
        let spans = scan_chat_request(body.as_bytes())
            .and_then(|shape| shape.spans)
            .expect("read by the scan");
        let turn = chat_request_from_spans(body.as_bytes(), spans)
            .expect("a chat request")
            .into_turn_messages();
        assert_eq!(turn[0].json(), plain);
    }

    #[test]
    fn a_request_built_from_the_scans_spans_is_the_parses() {
        let body = br#" { "model" : "m", "messages" : [ { "role" : "user", "content" : "a" } ,
            {"role":"tool","n":[1,{"x":null}]} ] , "stream": true } "#;
        let spans = scan_chat_request(body)
            .and_then(|shape| shape.spans)
            .expect("the scan reads it and notes its spans");
        assert_eq!(
            chat_request_from_spans(body, spans),
            parse_chat_request(body),
            "the same messages, the same spans, the same array"
        );
        let stateless = br#"{"messages":[{"role":"system","content":"s"},{"role":"user"}]}"#;
        let shape = scan_chat_request(stateless).expect("read up to its system message");
        assert_eq!(
            shape.spans, None,
            "nothing noted where the scan stopped early"
        );
    }

    #[test]
    fn a_span_outside_the_body_is_refused() {
        let body = b"{\"a\":1}";
        assert_eq!(span_within(body, "elsewhere"), None);
        let inside = std::str::from_utf8(&body[1..4]).unwrap();
        assert_eq!(span_within(body, inside), Some(1..4));
    }

    mod properties {
        use proptest::collection::vec;
        use proptest::prelude::*;
        use serde_json::{Map, Value, json};

        use super::super::*;
        use super::stored;
        use crate::strategies::json_value;

        /// Any JSON value, a few levels deep.
        fn value() -> impl Strategy<Value = Value> {
            json_value(any::<String>().boxed())
        }

        fn message() -> impl Strategy<Value = Value> {
            let role = prop_oneof![
                4 => Just("user"),
                2 => Just("assistant"),
                1 => Just("tool"),
                1 => Just("system"),
                1 => Just("developer"),
            ];
            (role, value(), vec((any::<String>(), value()), 0..3)).prop_map(
                |(role, content, extra)| {
                    let mut message: Map<String, Value> = extra.into_iter().collect();
                    message.insert("role".to_owned(), json!(role));
                    message.insert("content".to_owned(), content);
                    Value::Object(message)
                },
            )
        }

        /// Whitespace JSON allows between tokens.
        fn space() -> impl Strategy<Value = &'static str> {
            prop_oneof![Just(""), Just(" "), Just("\n  "), Just("\t"), Just("\r\n")]
        }

        /// A body: other members in any order with `messages` among them, written with
        /// arbitrary whitespace, as its text and the other members as values.
        fn body() -> impl Strategy<Value = (String, Map<String, Value>, Vec<Value>)> {
            (
                vec((any::<String>(), value(), space()), 0..6),
                vec(message(), 0..5),
                any::<prop::sample::Index>(),
                space(),
            )
                .prop_map(|(members, messages, at, around)| {
                    let others: Map<String, Value> = members
                        .iter()
                        .filter(|(key, _, _)| key != "messages")
                        .map(|(key, value, _)| (key.clone(), value.clone()))
                        .collect();
                    // One member per key: the last one written wins in JSON, so write
                    // each key once with the value kept.
                    let mut written: Vec<String> = others
                        .iter()
                        .zip(members.iter().map(|(_, _, space)| *space).cycle())
                        .map(|((key, value), space)| {
                            format!("{space}{}{space}:{space}{value}", Value::from(key.as_str()))
                        })
                        .collect();
                    let array = format!(
                        "{around}[{around}{}{around}]",
                        messages
                            .iter()
                            .map(Value::to_string)
                            .collect::<Vec<_>>()
                            .join(&format!("{around},"))
                    );
                    let position = at.index(written.len() + 1);
                    written.insert(position, format!("{around}\"messages\":{array}{around}"));
                    (
                        format!("{around}{{{}}}{around}", written.join(",")),
                        others,
                        messages,
                    )
                })
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(128))]

            #[test]
            fn splicing_keeps_every_other_member_and_orders_the_messages(
                (text, others, messages) in body(),
                history in vec(message(), 0..5),
            ) {
                let request = parse_chat_request(text.as_bytes()).expect("a chat request");
                let spliced: Value =
                    serde_json::from_slice(&request.splice(&stored(&history))).expect("spliced is JSON");
                let mut spliced = match spliced {
                    Value::Object(members) => members,
                    other => panic!("not an object: {other}"),
                };
                let forwarded = spliced.remove("messages").expect("messages");
                prop_assert_eq!(&spliced, &others);

                let (system, rest): (Vec<Value>, Vec<Value>) = messages
                    .iter()
                    .cloned()
                    .partition(|m| matches!(m["role"].as_str(), Some("system" | "developer")));
                let expected: Vec<Value> = system.into_iter().chain(history).chain(rest).collect();
                prop_assert_eq!(forwarded, Value::Array(expected));
            }

            #[test]
            fn splicing_copies_every_byte_outside_the_messages_array(
                (text, _, _) in body(),
                history in vec(message(), 0..3),
            ) {
                let request = parse_chat_request(text.as_bytes()).expect("a chat request");
                let spliced = request.splice(&stored(&history));
                let span = request.messages_span.clone();
                let tail = text.len() - span.end;
                prop_assert_eq!(&spliced[..span.start], &text.as_bytes()[..span.start]);
                prop_assert_eq!(&spliced[spliced.len() - tail..], &text.as_bytes()[span.end..]);
            }

            #[test]
            fn any_bytes_parse_without_panicking(bytes in vec(any::<u8>(), 0..256)) {
                if let Some(request) = parse_chat_request(&bytes) {
                    let spliced = request.splice(&stored(&[json!({"role": "user"})]));
                    prop_assert!(serde_json::from_slice::<Value>(&spliced).is_ok());
                }
            }
        }
    }
}
