//! A non-streaming reply (`chat.completion`): its assistant message, and the
//! `storage_failed` mark when that message could not be stored.

use std::ops::Range;

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;
use serde_json::{Map, Value};

use super::assistant_message;
use super::facts::{ReplyFacts, known};
use crate::chat::request::{span_within, starts_with_object};
use crate::store::NewMessage;

/// The parts of a `chat.completion` that are stored. Values stay loosely typed: the
/// metadata is kept as the server wrote it.
#[derive(Deserialize)]
struct Completion {
    #[serde(default)]
    object: Option<Value>,
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    model: Option<Value>,
    #[serde(default)]
    system_fingerprint: Option<Value>,
    #[serde(default)]
    usage: Option<Value>,
    choices: Vec<CompletionChoice>,
}

#[derive(Deserialize)]
struct CompletionChoice {
    #[serde(default)]
    index: Option<u64>,
    message: Map<String, Value>,
    #[serde(default)]
    finish_reason: Option<Value>,
}

/// The assistant message of a non-streaming reply (`choices[0].message`), or `None`
/// when the body is not such a reply.
///
/// The message keeps `role`, `content`, and `tool_calls`, `refusal` and the legacy
/// `function_call` when they carry something: what the next request sends upstream.
/// `reasoning_content` (or `reasoning`) moves beside it; response-only fields such as
/// `annotations` and `audio` are dropped.
pub(crate) fn assemble_json_reply(body: &[u8]) -> Option<NewMessage> {
    if !starts_with_object(body) {
        return None;
    }
    let completion: Completion = serde_json::from_slice(body).ok()?;
    if completion
        .object
        .as_ref()
        .is_some_and(|object| object != "chat.completion")
    {
        return None;
    }
    let (_, choice) = completion
        .choices
        .into_iter()
        .enumerate()
        .find(|(position, choice)| choice.index.unwrap_or(*position as u64) == 0)?;
    let mut reply = choice.message;

    let tool_calls = match reply.remove("tool_calls") {
        Some(Value::Array(calls)) => calls,
        _ => Vec::new(),
    };
    let refusal = match reply.remove("refusal") {
        Some(Value::String(refusal)) => refusal,
        _ => String::new(),
    };
    let content = reply.remove("content").unwrap_or(Value::Null);
    let mut message = assistant_message(content, tool_calls, refusal);
    // Legacy function calling: the call must go back upstream like `tool_calls` do.
    if let Some(call) = reply.remove("function_call").filter(|call| !call.is_null()) {
        message.insert("function_call".to_owned(), call);
    }

    let reasoning = [reply.remove("reasoning_content"), reply.remove("reasoning")]
        .into_iter()
        .flatten()
        .find_map(|reasoning| match reasoning {
            Value::String(text) if !text.is_empty() => Some(text),
            _ => None,
        });

    let facts = ReplyFacts {
        error: None,
        finish_reason: known(choice.finish_reason.as_ref()),
        id: known(completion.id.as_ref()),
        incomplete: false,
        model: known(completion.model.as_ref()),
        system_fingerprint: known(completion.system_fingerprint.as_ref()),
        usage: known(completion.usage.as_ref()),
    };
    let mut message = NewMessage::new(Value::Object(message));
    message.reasoning = reasoning;
    message.set_metadata_json(facts.to_json());
    Some(message)
}

/// The one top-level field `mark_storage_failed` looks at. A present `null` counts as
/// present, so that it is replaced rather than followed by a second `metadata` key.
#[derive(Deserialize)]
struct WithMetadata<'a> {
    #[serde(default, borrow, deserialize_with = "present")]
    metadata: Option<&'a RawValue>,
}

fn present<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<&'de RawValue>, D::Error> {
    <&RawValue>::deserialize(deserializer).map(Some)
}

const STORAGE_FAILED: &str = r#""storage_failed":true"#;

/// The JSON reply with a top-level `"metadata": {"storage_failed": true}` merged in;
/// `None` when the body is not a JSON object.
///
/// Only the `metadata` value changes; every other byte is kept. An existing `metadata`
/// object keeps its members; a `metadata` that is not an object is replaced.
pub(crate) fn mark_storage_failed(body: &[u8]) -> Option<Vec<u8>> {
    if !starts_with_object(body) {
        return None;
    }
    // Skipped members are not checked to be UTF-8 when read from bytes; JSON must be,
    // and a reply that is not is passed on as it came rather than marked.
    let text = std::str::from_utf8(body).ok()?;
    let reply: WithMetadata<'_> = serde_json::from_str(text).ok()?;
    let mut out = Vec::with_capacity(body.len() + 40);
    match reply.metadata {
        None => {
            let member = format!(r#""metadata":{{{STORAGE_FAILED}}}"#);
            insert_member(&mut out, body, 0..body.len(), &member);
        }
        Some(metadata) => {
            let span = span_within(body, metadata.get())?;
            out.extend_from_slice(&body[..span.start]);
            write_marked_metadata(&mut out, body, span.clone());
            out.extend_from_slice(&body[span.end..]);
        }
    }
    Some(out)
}

/// Writes the `metadata` value at `span` with `storage_failed` set.
fn write_marked_metadata(out: &mut Vec<u8>, body: &[u8], span: Range<usize>) {
    let parsed = serde_json::from_slice::<Value>(&body[span.clone()]);
    match parsed {
        Ok(Value::Object(members)) if !members.contains_key("storage_failed") => {
            insert_member(out, body, span, STORAGE_FAILED);
        }
        Ok(Value::Object(mut members)) => {
            members.insert("storage_failed".to_owned(), Value::Bool(true));
            out.extend_from_slice(Value::Object(members).to_string().as_bytes());
        }
        _ => out.extend_from_slice(format!("{{{STORAGE_FAILED}}}").as_bytes()),
    }
}

/// Writes the JSON object at `span` of `body` with `member` added as its last member,
/// keeping the object's own bytes.
fn insert_member(out: &mut Vec<u8>, body: &[u8], span: Range<usize>, member: &str) {
    let object = &body[span];
    // The object was parsed: it opens with `{` and closes with `}` (whitespace aside).
    let open = object.iter().position(|&b| b == b'{').unwrap_or(0);
    let close = object
        .iter()
        .rposition(|&b| b == b'}')
        .unwrap_or(object.len());
    let empty = object
        .get(open + 1..close)
        .is_none_or(|inside| inside.trim_ascii().is_empty());
    out.extend_from_slice(&object[..close]);
    if !empty {
        out.push(b',');
    }
    out.extend_from_slice(member.as_bytes());
    out.extend_from_slice(&object[close..]);
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn completion(message: Value) -> Vec<u8> {
        json!({
            "id": "chatcmpl-9",
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": "gpt-4o",
            "system_fingerprint": "fp_9",
            "choices": [{"index": 0, "message": message, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
        })
        .to_string()
        .into_bytes()
    }

    #[test]
    fn a_json_reply_stores_its_first_message_and_metadata() {
        let body = completion(json!({"role": "assistant", "content": "Hi!", "refusal": null}));
        let message = assemble_json_reply(&body).expect("a chat completion");
        assert_eq!(
            message.to_value(),
            json!({"role": "assistant", "content": "Hi!"})
        );
        assert_eq!(
            Value::Object(message.metadata()),
            json!({
                "model": "gpt-4o",
                "id": "chatcmpl-9",
                "finish_reason": "stop",
                "usage": {"prompt_tokens": 5, "completion_tokens": 1, "total_tokens": 6},
                "system_fingerprint": "fp_9",
            })
        );
        assert_eq!(message.reasoning, None);
    }

    #[test]
    fn a_json_reply_keeps_tool_calls_and_refusal_only_when_not_empty() {
        let calls = json!([{"id": "a", "type": "function",
            "function": {"name": "f", "arguments": "{\"x\":1}"}}]);
        let with_calls = completion(json!({
            "role": "assistant", "content": null, "tool_calls": calls, "refusal": null,
        }));
        assert_eq!(
            assemble_json_reply(&with_calls).unwrap().to_value(),
            json!({"role": "assistant", "content": null, "tool_calls": calls})
        );

        let refused = completion(json!({
            "role": "assistant", "content": null, "tool_calls": [], "refusal": "No.",
        }));
        assert_eq!(
            assemble_json_reply(&refused).unwrap().to_value(),
            json!({"role": "assistant", "content": null, "refusal": "No."})
        );
    }

    #[test]
    fn a_json_reply_moves_reasoning_beside_the_message_and_drops_response_only_fields() {
        let body = completion(json!({
            "role": "assistant",
            "content": "42",
            "reasoning_content": "Let me think.",
            "annotations": [{"type": "url_citation"}],
            "audio": {"id": "audio_1", "data": "..."},
        }));
        let message = assemble_json_reply(&body).unwrap();
        assert_eq!(
            message.to_value(),
            json!({"role": "assistant", "content": "42"})
        );
        assert_eq!(message.reasoning.as_deref(), Some("Let me think."));

        let other_name = completion(json!({"role": "assistant", "content": "", "reasoning": "r"}));
        assert_eq!(
            assemble_json_reply(&other_name)
                .unwrap()
                .reasoning
                .as_deref(),
            Some("r")
        );
    }

    #[test]
    fn a_json_reply_keeps_a_legacy_function_call() {
        let call = json!({"name": "f", "arguments": "{}"});
        let body = completion(json!({"role": "assistant", "content": null, "function_call": call}));
        assert_eq!(
            assemble_json_reply(&body).unwrap().to_value()["function_call"],
            call
        );
    }

    #[test]
    fn a_body_that_is_not_a_chat_completion_is_not_assembled() {
        let no_choice = json!({"object": "chat.completion", "choices": []}).to_string();
        let no_message = json!({"choices": [{"index": 0, "text": "hi"}]}).to_string();
        let other_index =
            json!({"choices": [{"index": 1, "message": {"content": "x"}}]}).to_string();
        let list = json!({"object": "list", "choices": [{"message": {}}], "data": []}).to_string();
        for body in [
            &b"not json"[..],
            b"[]",
            br#"{"error": {"message": "bad"}}"#,
            no_choice.as_bytes(),
            no_message.as_bytes(),
            other_index.as_bytes(),
            list.as_bytes(),
        ] {
            assert!(
                assemble_json_reply(body).is_none(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_json_reply_without_object_field_is_still_assembled() {
        let body = json!({"choices": [{"message": {"role": "assistant", "content": "ok"}}]});
        let message = assemble_json_reply(body.to_string().as_bytes()).unwrap();
        assert_eq!(
            message.to_value(),
            json!({"role": "assistant", "content": "ok"})
        );
        assert!(message.metadata().is_empty());
    }

    fn marked(body: &str) -> String {
        String::from_utf8(mark_storage_failed(body.as_bytes()).expect("a JSON object")).unwrap()
    }

    #[test]
    fn storage_failed_is_added_as_top_level_metadata() {
        let body = "{\"id\":\"x\", \"n\": 123456789012345678901234567890 }\n";
        assert_eq!(
            marked(body),
            "{\"id\":\"x\", \"n\": 123456789012345678901234567890 ,\"metadata\":{\"storage_failed\":true}}\n"
        );
        assert_eq!(
            marked(" { } "),
            " { \"metadata\":{\"storage_failed\":true}} "
        );
    }

    #[test]
    fn storage_failed_is_merged_into_existing_metadata() {
        let body = r#"{"metadata": {"trace": "t1"}, "n": 1e400}"#;
        assert_eq!(
            marked(body),
            r#"{"metadata": {"trace": "t1","storage_failed":true}, "n": 1e400}"#
        );
        assert_eq!(
            marked(r#"{"metadata":{}}"#),
            r#"{"metadata":{"storage_failed":true}}"#
        );
        assert_eq!(
            marked(r#"{"metadata":{"storage_failed":false}}"#),
            r#"{"metadata":{"storage_failed":true}}"#
        );
    }

    #[test]
    fn metadata_that_is_not_an_object_is_replaced() {
        assert_eq!(
            marked(r#"{"metadata":null,"a":1}"#),
            r#"{"metadata":{"storage_failed":true},"a":1}"#
        );
        assert_eq!(
            marked(r#"{"metadata":"x"}"#),
            r#"{"metadata":{"storage_failed":true}}"#
        );
    }

    #[test]
    fn marked_replies_stay_valid_json() {
        for body in [
            r#"{"metadata": {"a": {"b": "}"}}}"#,
            r#"{"x": "}", "y": ["{"]}"#,
            "\t{\n}\n",
        ] {
            let value: Value = serde_json::from_str(&marked(body)).unwrap();
            assert_eq!(value["metadata"]["storage_failed"], true, "{body}");
        }
    }

    #[test]
    fn only_a_json_object_can_be_marked() {
        for body in [&b"not json"[..], b"[1]", b"\"s\"", b"{\"a\":1", b"{} {}"] {
            assert!(
                mark_storage_failed(body).is_none(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn a_reply_that_is_not_utf8_is_not_marked() {
        assert_eq!(
            mark_storage_failed(b"{\"object\":\"\x97\",\"choices\":[]}"),
            None
        );
    }
}
