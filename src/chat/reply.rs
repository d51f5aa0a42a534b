//! Assembling the assistant message from a reply: streamed deltas or a JSON body.
//!
//! The stored message is exactly what the next request must send upstream:
//! `{"role": "assistant", "content": ...}`, with `tool_calls` and `refusal` only when the
//! reply carried them. Reasoning is kept beside the message, never in it, because
//! several providers reject `reasoning_content` in input messages.

mod chunk;
mod completion;
mod facts;
mod marker;
mod pattern;

use std::mem;

use serde_json::{Map, Value, json};

#[cfg(feature = "fuzzing")]
pub(crate) use self::chunk::scanner_agrees_with_serde;
use self::chunk::{ChunkParts, DeltaParts, Text, ToolCallDelta};
pub(crate) use self::completion::{assemble_json_reply, mark_storage_failed};
use self::facts::{ReplyFacts, known};
pub(crate) use self::marker::StorageFailedMarker;
use self::pattern::Pattern;
use crate::store::NewMessage;

/// The room a reply's content starts with: a typical reply's text, a few hundred
/// tokens.
const CONTENT_START: usize = 1024;

/// Builds the assistant message of a streamed reply from its SSE events' data.
///
/// Laid out as declared (`repr(C)`): the content and the pattern, all that a chunk
/// repeating the pattern touches, come first and fill one cache line between them.
#[derive(Debug, Default)]
#[repr(C)]
pub(crate) struct ReplyAssembler {
    content: String,
    /// The last chunk read in full, when the chunks that repeat it but for their
    /// content need only that content appended.
    pattern: Pattern,
    /// In order of first appearance; sorted by index when the message is taken.
    tool_calls: Vec<ToolCall>,
    refusal: String,
    reasoning: String,
    reasoning_events: Vec<Value>,
    finish_reason: Option<String>,
    id: Option<String>,
    model: Option<String>,
    created: Option<Value>,
    system_fingerprint: Option<String>,
    usage: Option<Value>,
    error: Option<Value>,
}

/// One tool call, merged from the deltas that share its index.
#[derive(Debug, Default)]
struct ToolCall {
    index: u64,
    id: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    arguments: String,
}

impl ReplyAssembler {
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Takes one SSE event's data (`[DONE]` never reaches it). Non-JSON data and events
    /// without `choices` are ignored; `{"error": ...}` is remembered.
    pub(crate) fn on_event(&mut self, data: &str) {
        if !self.repeats_pattern(data.as_bytes()) {
            self.read_in_full(data);
        }
    }

    /// [`on_event`](Self::on_event) for data that may not be UTF-8: such an event is
    /// ignored. A chunk that repeats the last one but for its content has only that
    /// content checked.
    pub(crate) fn on_event_bytes(&mut self, data: &[u8]) {
        if !self.repeats_pattern(data)
            && let Ok(data) = std::str::from_utf8(data)
        {
            self.read_in_full(data);
        }
    }

    /// Reads a byte of each line of memory the next chunk that repeats the pattern
    /// reads (the pattern's bytes, the end of the content it appends to), so that they
    /// are on their way before that chunk arrives, and returns them combined (the caller
    /// keeps the loads with `black_box`); changes nothing.
    #[inline]
    pub(crate) fn warm(&self) -> usize {
        let last = self.content.as_bytes().last().copied().unwrap_or_default();
        self.pattern.warm() ^ usize::from(last)
    }

    /// Appends the content of a chunk that repeats the last one read in full but for
    /// its content: all else it says was applied by that chunk and is still in place
    /// (see `pattern.rs`). Returns whether it did.
    fn repeats_pattern(&mut self, data: &[u8]) -> bool {
        let Some(content) = self.pattern.content(data) else {
            return false;
        };
        self.push_content(&content);
        true
    }

    /// Appends a chunk's content. The first reserves [`CONTENT_START`] bytes: a reply's
    /// content arrives a few characters a chunk, and grown by doubling from empty it was
    /// copied eight times on its way to a typical reply's length.
    fn push_content(&mut self, content: &str) {
        if self.content.capacity() == 0 {
            self.content.reserve(CONTENT_START.max(content.len()));
        }
        self.content.push_str(content);
    }

    fn read_in_full(&mut self, data: &str) {
        let mut chunk = ChunkParts::default();
        // Data that does not read changes nothing, the pattern included.
        let Ok(content_at) = chunk.read_noting_content(data) else {
            return;
        };
        match content_at {
            Some(content) if chunk.has_choice && chunk.adds_only_content() => {
                self.pattern.set(data, content);
            }
            _ => self.pattern.clear(),
        }
        self.apply(chunk);
    }

    /// [`on_event`](Self::on_event) with every chunk read by serde alone, the reference
    /// the fast paths are checked against.
    #[cfg(any(test, feature = "fuzzing"))]
    pub(crate) fn on_event_reference(&mut self, data: &str) {
        let mut chunk = ChunkParts::default();
        if chunk.read_with_serde(data).is_ok() {
            self.apply(chunk);
        }
    }

    fn apply(&mut self, chunk: ChunkParts<'_>) {
        remember(&mut self.id, &chunk.id);
        remember(&mut self.model, &chunk.model);
        remember(&mut self.system_fingerprint, &chunk.system_fingerprint);
        if let Some(created) = chunk.created {
            self.created = Some(created);
        }
        // `include_usage` streams send `"usage": null` on every chunk but the last.
        if let Some(usage) = chunk.usage {
            self.usage = Some(usage);
        }
        if let Some(error) = chunk.error {
            self.error = Some(error);
        }
        if chunk.has_choice {
            remember(&mut self.finish_reason, &chunk.choice.finish_reason);
            self.add_delta(chunk.choice.delta);
        }
    }

    fn add_delta(&mut self, delta: DeltaParts<'_>) {
        if let Some(content) = &delta.content.0 {
            self.push_content(content);
        }
        if let Some(refusal) = &delta.refusal.0 {
            self.refusal.push_str(refusal);
        }
        // Some servers send the same text under both names; one of them per delta is
        // the reasoning, the other a copy.
        let reasoning = delta.reasoning_content.non_empty();
        if let Some(reasoning) = reasoning.or(delta.reasoning.non_empty()) {
            self.reasoning.push_str(reasoning);
        }
        if let Some(event @ Value::Object(_)) = delta.reasoning_event {
            self.reasoning_events.push(event);
        }
        for call in delta.tool_calls {
            self.add_tool_call(call);
        }
    }

    fn add_tool_call(&mut self, delta: ToolCallDelta<'_>) {
        let index = match delta.index {
            Some(index) => index,
            None => self.index_of_unindexed_call(delta.id.non_empty()),
        };
        let position = match self.tool_calls.iter().position(|c| c.index == index) {
            Some(position) => position,
            None => {
                self.tool_calls.push(ToolCall {
                    index,
                    ..ToolCall::default()
                });
                self.tool_calls.len() - 1
            }
        };
        let call = &mut self.tool_calls[position];
        remember(&mut call.id, &delta.id);
        remember(&mut call.kind, &delta.kind);
        if let Some(function) = delta.function {
            remember(&mut call.name, &function.name);
            if let Some(arguments) = &function.arguments.0 {
                call.arguments.push_str(arguments);
            }
        }
    }

    /// Some servers leave `index` out of tool call deltas. Then a delta that names a new
    /// call id starts a call; any other continues the latest one.
    fn index_of_unindexed_call(&self, id: Option<&str>) -> u64 {
        let Some(latest) = self.tool_calls.last() else {
            return 0;
        };
        match id {
            Some(id) if latest.id.as_deref() != Some(id) => {
                let highest = self.tool_calls.iter().map(|c| c.index).max();
                highest.map_or(0, |index| index.saturating_add(1))
            }
            _ => latest.index,
        }
    }

    /// Whether a `finish_reason` arrived.
    pub(crate) fn finished(&self) -> bool {
        self.finish_reason.is_some()
    }

    /// The assistant message and what is kept beside it. `complete` is false when the
    /// stream was cut short (client gone, upstream failed); the message then carries
    /// `metadata.incomplete = true`, as it does after an error event.
    ///
    /// What the reply said is taken; what names the stream (`id`, `model`, `created`)
    /// stays, for [`storage_failed_chunk`](Self::storage_failed_chunk).
    pub(crate) fn take_message(&mut self, complete: bool) -> NewMessage {
        // What the pattern's chunk applied is taken below.
        self.pattern.clear();
        let mut calls = mem::take(&mut self.tool_calls);
        let refusal = mem::take(&mut self.refusal);
        let content = mem::take(&mut self.content);
        let mut message = if calls.is_empty() && refusal.is_empty() {
            // Nearly every reply: its text is written straight from the content.
            NewMessage::assistant(content)
        } else {
            calls.sort_by_key(|call| call.index);
            let tool_calls: Vec<Value> = calls.into_iter().map(ToolCall::into_json).collect();
            // Chat APIs spell "no text, only tool calls (or a refusal)" as `content: null`.
            let content = if content.is_empty() {
                Value::Null
            } else {
                Value::String(content)
            };
            NewMessage::new(Value::Object(assistant_message(
                content, tool_calls, refusal,
            )))
        };

        let error = self.error.take();
        let usage = self.usage.take();
        let finish_reason = self.finish_reason.take();
        let facts = ReplyFacts {
            error: known(error.as_ref()),
            finish_reason: finish_reason.as_deref(),
            id: self.id.as_deref(),
            incomplete: !complete || error.is_some(),
            model: self.model.as_deref(),
            system_fingerprint: self.system_fingerprint.as_deref(),
            usage: known(usage.as_ref()),
        };
        message.set_metadata_json(facts.to_json());

        let reasoning = mem::take(&mut self.reasoning);
        message.reasoning = (!reasoning.is_empty()).then_some(reasoning);
        message.reasoning_events = mem::take(&mut self.reasoning_events);
        message
    }

    /// The chunk that tells the client its turn was not stored, to be sent as the last
    /// event before `[DONE]`: `{"id", "object": "chat.completion.chunk", "created",
    /// "model", "choices": [], "metadata": {"storage_failed": true}}` with the stream's own
    /// `id`, `created` and `model`.
    pub(crate) fn storage_failed_chunk(&self) -> String {
        json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": [],
            "metadata": {"storage_failed": true},
        })
        .to_string()
    }
}

impl ToolCall {
    fn into_json(self) -> Value {
        let mut call = Map::new();
        if let Some(id) = self.id {
            call.insert("id".to_owned(), Value::String(id));
        }
        let kind = self.kind.unwrap_or_else(|| "function".to_owned());
        call.insert("type".to_owned(), Value::String(kind));
        call.insert(
            "function".to_owned(),
            json!({"name": self.name.unwrap_or_default(), "arguments": self.arguments}),
        );
        Value::Object(call)
    }
}

/// Keeps the latest non-empty value of a field that names the reply, allocating only
/// when it changes (it almost never does between chunks).
fn remember(slot: &mut Option<String>, text: &Text<'_>) {
    if let Some(text) = text.non_empty()
        && slot.as_deref() != Some(text)
    {
        *slot = Some(text.to_owned());
    }
}

/// `{"role": "assistant", "content": ...}`, plus `tool_calls` and `refusal` when there
/// are any.
fn assistant_message(
    content: Value,
    tool_calls: Vec<Value>,
    refusal: String,
) -> Map<String, Value> {
    let mut message = Map::new();
    message.insert("role".to_owned(), Value::from("assistant"));
    message.insert("content".to_owned(), content);
    if !tool_calls.is_empty() {
        message.insert("tool_calls".to_owned(), Value::Array(tool_calls));
    }
    if !refusal.is_empty() {
        message.insert("refusal".to_owned(), Value::String(refusal));
    }
    message
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A chunk as OpenAI streams it, carrying `delta` in choice 0.
    fn chunk(delta: Value) -> String {
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "gpt-4o",
            "system_fingerprint": "fp_1",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}],
            "usage": null,
        })
        .to_string()
    }

    fn finish(reason: &str) -> String {
        json!({
            "id": "chatcmpl-1",
            "object": "chat.completion.chunk",
            "created": 1_700_000_000,
            "model": "gpt-4o",
            "choices": [{"index": 0, "delta": {}, "finish_reason": reason}],
        })
        .to_string()
    }

    fn assemble<S: AsRef<str>>(events: &[S]) -> ReplyAssembler {
        let mut assembler = ReplyAssembler::new();
        for event in events {
            assembler.on_event(event.as_ref());
        }
        assembler
    }

    #[test]
    fn content_deltas_are_concatenated() {
        let mut assembler = assemble(&[
            chunk(json!({"role": "assistant", "content": ""})),
            chunk(json!({"content": "Hel"})),
            chunk(json!({"content": "lo, \"wörld\"\n"})),
            finish("stop"),
        ]);
        let message = assembler.take_message(true);
        assert_eq!(
            message.to_value(),
            json!({"role": "assistant", "content": "Hello, \"wörld\"\n"})
        );
    }

    #[test]
    fn the_metadata_names_the_reply() {
        let mut assembler = assemble(&[chunk(json!({"content": "hi"})), finish("stop")]);
        assert!(assembler.finished());
        let message = assembler.take_message(true);
        assert_eq!(
            Value::Object(message.metadata()),
            json!({
                "model": "gpt-4o",
                "id": "chatcmpl-1",
                "finish_reason": "stop",
                "system_fingerprint": "fp_1",
            })
        );
        assert_eq!(message.reasoning, None);
        assert!(message.reasoning_events.is_empty());
    }

    #[test]
    fn a_stream_without_finish_reason_is_not_finished() {
        let assembler = assemble(&[chunk(json!({"content": "hi"}))]);
        assert!(!assembler.finished());
    }

    #[test]
    fn tool_calls_over_many_deltas_merge_by_index() {
        let call = |index: u64, id: Option<&str>, name: Option<&str>, arguments: &str| {
            let mut function = json!({"arguments": arguments});
            if let Some(name) = name {
                function["name"] = json!(name);
            }
            let mut call = json!({"index": index, "function": function});
            if let Some(id) = id {
                call["id"] = json!(id);
                call["type"] = json!("function");
            }
            chunk(json!({"tool_calls": [call]}))
        };
        let mut assembler = assemble(&[
            chunk(json!({"role": "assistant", "content": null})),
            call(1, Some("call_b"), Some("get_time"), ""),
            call(0, Some("call_a"), Some("get_weather"), ""),
            call(0, None, None, "{\"city\":"),
            call(1, None, None, "{\"tz\":\"UTC\"}"),
            call(0, None, None, "\"Paris\"}"),
            finish("tool_calls"),
        ]);
        let message = assembler.take_message(true);
        assert_eq!(
            message.to_value(),
            json!({
                "role": "assistant",
                "content": null,
                "tool_calls": [
                    {"id": "call_a", "type": "function",
                     "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_b", "type": "function",
                     "function": {"name": "get_time", "arguments": "{\"tz\":\"UTC\"}"}},
                ],
            })
        );
        assert_eq!(message.metadata()["finish_reason"], "tool_calls");
    }

    #[test]
    fn tool_calls_in_one_delta_merge_by_their_own_index() {
        let mut assembler = assemble(&[
            chunk(json!({"tool_calls": [
                {"index": 0, "id": "a", "type": "function", "function": {"name": "f", "arguments": "{"}},
                {"index": 1, "id": "b", "type": "function", "function": {"name": "g", "arguments": "["}},
            ]})),
            chunk(json!({"tool_calls": [
                {"index": 1, "function": {"arguments": "]"}},
                {"index": 0, "function": {"arguments": "}"}},
            ]})),
        ]);
        let message = assembler.take_message(true).to_value();
        assert_eq!(message["tool_calls"][0]["function"]["arguments"], "{}");
        assert_eq!(message["tool_calls"][1]["function"]["arguments"], "[]");
    }

    #[test]
    fn tool_calls_without_index_start_a_call_at_each_new_id() {
        let mut assembler = assemble(&[
            chunk(
                json!({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{\"x\""}}]}),
            ),
            chunk(json!({"tool_calls": [{"function": {"arguments": ":1}"}}]})),
            chunk(
                json!({"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": "{}"}}]}),
            ),
        ]);
        let message = assembler.take_message(true).to_value();
        assert_eq!(
            message["tool_calls"],
            json!([
                {"id": "a", "type": "function", "function": {"name": "f", "arguments": "{\"x\":1}"}},
                {"id": "b", "type": "function", "function": {"name": "g", "arguments": "{}"}},
            ])
        );
    }

    #[test]
    fn text_with_tool_calls_keeps_its_content() {
        let mut assembler = assemble(&[
            chunk(json!({"content": "Let me check."})),
            chunk(
                json!({"tool_calls": [{"index": 0, "id": "a", "type": "function",
                "function": {"name": "f", "arguments": "{}"}}]}),
            ),
        ]);
        let message = assembler.take_message(true).to_value();
        assert_eq!(message["content"], "Let me check.");
        assert_eq!(message["tool_calls"][0]["id"], "a");
    }

    #[test]
    fn a_refusal_is_concatenated_and_content_is_null() {
        let mut assembler = assemble(&[
            chunk(json!({"role": "assistant", "content": null, "refusal": ""})),
            chunk(json!({"refusal": "I can't "})),
            chunk(json!({"refusal": "help with that."})),
            finish("stop"),
        ]);
        assert_eq!(
            assembler.take_message(true).to_value(),
            json!({"role": "assistant", "content": null, "refusal": "I can't help with that."})
        );
    }

    #[test]
    fn an_empty_reply_has_empty_content() {
        let mut assembler = assemble(&[finish("length")]);
        assert_eq!(
            assembler.take_message(true).to_value(),
            json!({"role": "assistant", "content": ""})
        );
    }

    #[test]
    fn reasoning_text_is_kept_beside_the_message() {
        let mut assembler = assemble(&[
            chunk(json!({"reasoning_content": "First, ", "content": null})),
            chunk(json!({"reasoning": "think."})),
            chunk(json!({"reasoning_content": " Then", "reasoning": " Then"})),
            chunk(json!({"content": "42"})),
        ]);
        let message = assembler.take_message(true);
        assert_eq!(message.reasoning.as_deref(), Some("First, think. Then"));
        assert_eq!(
            message.to_value(),
            json!({"role": "assistant", "content": "42"})
        );
    }

    #[test]
    fn reasoning_events_are_kept_in_order() {
        let mut assembler = assemble(&[
            chunk(json!({"reasoning_event": {"type": "start", "n": 1}})),
            chunk(json!({"reasoning_event": null, "content": "a"})),
            chunk(json!({"reasoning_event": "not an object"})),
            chunk(json!({"reasoning_event": {"type": "end", "n": 2}})),
        ]);
        let message = assembler.take_message(true);
        assert_eq!(
            message.reasoning_events,
            [
                json!({"type": "start", "n": 1}),
                json!({"type": "end", "n": 2})
            ]
        );
        assert!(message.to_value().get("reasoning_event").is_none());
    }

    #[test]
    fn usage_comes_from_the_final_chunk_without_choices() {
        let usage = json!({"prompt_tokens": 9, "completion_tokens": 2, "total_tokens": 11});
        let last = json!({
            "id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": "gpt-4o", "choices": [], "usage": usage,
        });
        let mut assembler = assemble(&[
            chunk(json!({"content": "hi"})),
            finish("stop"),
            last.to_string(),
        ]);
        let message = assembler.take_message(true);
        assert_eq!(message.metadata()["usage"], usage);
        assert_eq!(message.metadata()["finish_reason"], "stop");
        assert_eq!(message.to_value()["content"], "hi");
    }

    #[test]
    fn only_the_choice_with_index_zero_is_assembled() {
        let both = json!({"choices": [
            {"index": 1, "delta": {"content": "other"}, "finish_reason": "length"},
            {"index": 0, "delta": {"content": "mine"}},
        ]});
        let mut assembler = assemble(&[both.to_string()]);
        assert!(!assembler.finished());
        assert_eq!(assembler.take_message(true).to_value()["content"], "mine");
    }

    #[test]
    fn an_error_event_marks_the_message_incomplete_and_keeps_the_error() {
        let error = json!({"message": "overloaded", "type": "server_error", "code": null});
        let mut assembler = assemble(&[
            chunk(json!({"content": "par"})),
            json!({"error": error}).to_string(),
        ]);
        let message = assembler.take_message(true);
        assert_eq!(message.to_value()["content"], "par");
        assert_eq!(message.metadata()["incomplete"], true);
        assert_eq!(message.metadata()["error"], error);
    }

    #[test]
    fn a_stream_cut_short_marks_the_message_incomplete() {
        let mut cut = assemble(&[chunk(json!({"content": "par"}))]);
        assert_eq!(cut.take_message(false).metadata()["incomplete"], true);

        let mut whole = assemble(&[chunk(json!({"content": "all"})), finish("stop")]);
        let metadata = whole.take_message(true).metadata();
        assert!(!metadata.contains_key("incomplete"));
        assert!(!metadata.contains_key("error"));
    }

    #[test]
    fn junk_events_are_ignored() {
        let mut assembler = assemble(&[
            chunk(json!({"content": "a"})),
            "not json".to_owned(),
            "{\"choices\": [{\"delta\": {\"content\": \"cut".to_owned(),
            "[{\"choices\": []}]".to_owned(),
            "\"text\"".to_owned(),
            "42".to_owned(),
            String::new(),
            "{}".to_owned(),
            r#"{"choices": "none"}"#.to_owned(),
            r#"{"choices": [1, 2]}"#.to_owned(),
            r#"{"choices": [{"index": 0, "delta": {"content": 5}}]}"#.to_owned(),
            r#"{"choices": [{"index": 0, "delta": "x"}]}"#.to_owned(),
            r#"{"object": "ping", "extra": {"deep": [1, {"x": null}]}}"#.to_owned(),
            chunk(json!({"content": "b", "unknown": {"field": [1]}})),
        ]);
        let message = assembler.take_message(true);
        assert_eq!(
            message.to_value(),
            json!({"role": "assistant", "content": "ab"})
        );
        assert!(!message.metadata().contains_key("incomplete"));
    }

    #[test]
    fn taking_the_message_twice_gives_an_empty_second_one() {
        let mut assembler = assemble(&[chunk(json!({"content": "a"}))]);
        assembler.take_message(true);
        assert_eq!(
            assembler.take_message(true).to_value(),
            json!({"role": "assistant", "content": ""})
        );
    }

    fn chunk_json(chunk: &str) -> Value {
        serde_json::from_str(chunk).unwrap()
    }

    #[test]
    fn the_storage_failed_chunk_names_the_stream() {
        let mut assembler = assemble(&[chunk(json!({"content": "hi"})), finish("stop")]);
        assembler.take_message(true);
        assert_eq!(
            chunk_json(&assembler.storage_failed_chunk()),
            json!({
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": "gpt-4o",
                "choices": [],
                "metadata": {"storage_failed": true},
            })
        );
    }

    #[test]
    fn the_storage_failed_chunk_has_nulls_for_what_never_arrived() {
        let assembler = ReplyAssembler::new();
        assert_eq!(
            chunk_json(&assembler.storage_failed_chunk()),
            json!({
                "id": null,
                "object": "chat.completion.chunk",
                "created": null,
                "model": null,
                "choices": [],
                "metadata": {"storage_failed": true},
            })
        );
    }

    #[test]
    fn chunks_that_repeat_the_last_but_for_their_content_append_it() {
        let mut assembler = assemble(&[
            chunk(json!({"role": "assistant", "content": ""})),
            chunk(json!({"content": "Hel"})),
            chunk(json!({"content": "lo, \"wörld\" \u{1F30D}"})),
            chunk(json!({"content": "!"})),
            chunk(json!({"refusal": "no"})),
            chunk(json!({"refusal": "no"})),
            chunk(json!({"content": "?"})),
            finish("stop"),
        ]);
        let message = assembler.take_message(true);
        assert_eq!(
            message.to_value(),
            json!({"role": "assistant", "content": "Hello, \"wörld\" \u{1F30D}!?", "refusal": "nono"})
        );
        assert_eq!(message.metadata()["finish_reason"], "stop");
    }

    #[test]
    fn events_that_are_not_utf8_are_skipped() {
        let mut assembler = ReplyAssembler::new();
        let word = chunk(json!({"content": "word"}));
        let at = word.find("word").expect("the content");
        assembler.on_event_bytes(word.as_bytes());
        // Once as the pattern's repeat, once read in full.
        for content in [b"\xff".as_slice(), b"w\xc3", b"\\\"\xff"] {
            let bad = [&word.as_bytes()[..at], content, &word.as_bytes()[at + 4..]].concat();
            assembler.on_event_bytes(&bad);
        }
        assembler.on_event_bytes(b"{\"choices\":[],\"usage\":\"\xff\"}");
        assembler.on_event_bytes(word.as_bytes());
        let message = assembler.take_message(true);
        assert_eq!(message.to_value()["content"], "wordword");
        assert!(!message.metadata().contains_key("usage"));
    }

    #[test]
    fn a_repeated_chunk_after_the_message_was_taken_is_read_again() {
        let last = json!({"choices": [{"index": 0, "delta": {"content": "a"}}], "usage": {"n": 1}})
            .to_string();
        let mut assembler = assemble(&[&last]);
        assert_eq!(
            assembler.take_message(true).metadata()["usage"],
            json!({"n": 1})
        );
        assembler.on_event(&last);
        let message = assembler.take_message(true);
        assert_eq!(message.metadata()["usage"], json!({"n": 1}));
        assert_eq!(message.to_value()["content"], "a");
    }

    mod properties {
        use proptest::collection::vec;
        use proptest::prelude::*;

        use super::super::ReplyAssembler;

        /// Chunks with a placeholder where a content literal goes: the usual shapes,
        /// and shapes whose other parts must not be skipped when they repeat.
        const SHAPES: [&str; 14] = [
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":CONTENT}}]}"#,
            r#"{"id":"chatcmpl-1","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":CONTENT},"logprobs":null,"finish_reason":null}],"usage":null}"#,
            r#"{"id":"chatcmpl-2","created":2,"model":"n","system_fingerprint":"fp","choices":[{"index":0,"delta":{"content":CONTENT},"finish_reason":"stop"}],"usage":{"total_tokens":3}}"#,
            r#"{"choices":[{"index":0,"delta":{"content":CONTENT,"refusal":"no"}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning_content":"r","content":CONTENT}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"reasoning":"s","content":CONTENT}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":CONTENT,"reasoning_event":{"t":1}}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":CONTENT,"tool_calls":[{"index":0,"function":{"arguments":"{"}}]}}]}"#,
            r#"{"choices":[{"index":1,"delta":{"content":CONTENT}},{"index":0,"delta":{"content":"zero"}}]}"#,
            r#"{"choices":[{"delta":{"content":"zero"}},{"delta":{"content":CONTENT}}]}"#,
            r#"{"error":{"message":"x"},"choices":[{"index":0,"delta":{"content":CONTENT}}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":CONTENT,"content":"b"}}]}"#,
            r#"{ "choices" : [ { "index" : 0 , "delta" : { "content" : CONTENT } } ] , "x" : CONTENT }"#,
            r#"{"id":CONTENT,"choices":[{"index":0,"delta":{"content":"x"}}]}"#,
        ];

        /// What goes where the placeholder is: well-formed strings, and text that makes
        /// the chunk something else (other types, broken strings, injected members).
        fn literal() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => "[ -~é世🌍]{0,8}".prop_map(|text| serde_json::to_string(&text).unwrap_or_default()),
                2 => any::<String>().prop_map(|text| serde_json::to_string(&text).unwrap_or_default()),
                2 => "[ -~]{0,8}".prop_map(|text| format!("\"{text}\"")),
                1 => prop::sample::select(&[
                    "null", "5", "\"\"", r#""\ud800""#, r#""\ud83c\udf0d\u00e9\/\b""#,
                    "\"a\nb\"", r#""a\""#, r#""a","refusal":"b""#, r#""a"},"finish_reason":"x"#,
                    r#""\\""#, r#""\x""#, "\"a\u{1}\"",
                ][..]).prop_map(str::to_owned),
            ]
        }

        /// One step of a stream: a run of events of one shape, as streams repeat one
        /// shape with another content in each chunk, or the message taken.
        fn step() -> impl Strategy<Value = Option<(usize, Vec<String>)>> {
            prop_oneof![
                12 => (0..SHAPES.len(), vec(literal(), 1..5)).prop_map(Some),
                1 => Just(None),
            ]
        }

        proptest! {
            #![proptest_config(ProptestConfig::with_cases(1024))]

            #[test]
            fn a_stream_of_chunks_gives_the_message_serde_alone_gives(
                steps in vec(step(), 0..16),
            ) {
                let mut assembler = ReplyAssembler::new();
                let mut reference = ReplyAssembler::new();
                for step in &steps {
                    match step {
                        Some((shape, literals)) => {
                            for literal in literals {
                                let data = SHAPES[*shape].replace("CONTENT", literal);
                                assembler.on_event(&data);
                                reference.on_event_reference(&data);
                            }
                        }
                        None => prop_assert_eq!(
                            assembler.take_message(true),
                            reference.take_message(true)
                        ),
                    }
                }
                prop_assert_eq!(assembler.storage_failed_chunk(), reference.storage_failed_chunk());
                prop_assert_eq!(assembler.take_message(false), reference.take_message(false));
            }
        }
    }
}
