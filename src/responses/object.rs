//! The response object (OpenAI's `Response`), made from the assistant message the chat
//! reply was assembled into.
//!
//! Output items are the items view of the stored assistant message ([`to_items`]): a
//! `message` item with `output_text` (and `refusal`) parts, then a `function_call` item
//! per tool call, preceded by a `reasoning` item when the upstream sent reasoning text.
//! Their ids come from the sequence number the assistant message is stored under
//! (`msg_<seq>`, `fc_<seq>_<n>`, `rs_<seq>`), so they are the ids the conversation's
//! items show. [`renumber`] sets them once the turn is stored.

use serde_json::{Map, Value, json};

use super::request::ResponsesRequest;
use crate::items::to_items;
use crate::store::NewMessage;

/// How a response ended.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Status {
    Completed,
    /// `max_output_tokens` (`finish_reason: length`), `content_filter`, or `None` when
    /// the reply was cut short.
    Incomplete(Option<&'static str>),
    /// The upstream reported an error inside its reply.
    Failed(Value),
}

impl Status {
    /// How a reply ended, from the metadata the layer assembled for it.
    pub(crate) fn of(metadata: &Map<String, Value>) -> Self {
        if let Some(error) = metadata.get("error") {
            let message = error["message"]
                .as_str()
                .map_or_else(|| error.to_string(), str::to_owned);
            return Self::Failed(json!({"code": "server_error", "message": message}));
        }
        match metadata.get("finish_reason").and_then(Value::as_str) {
            Some("length") => Self::Incomplete(Some("max_output_tokens")),
            Some("content_filter") => Self::Incomplete(Some("content_filter")),
            _ if metadata.get("incomplete") == Some(&Value::Bool(true)) => Self::Incomplete(None),
            _ => Self::Completed,
        }
    }

    pub(crate) fn name(&self) -> &'static str {
        match self {
            Self::Completed => "completed",
            Self::Incomplete(_) => "incomplete",
            Self::Failed(_) => "failed",
        }
    }

    /// The status output items carry.
    fn item_status(&self) -> &'static str {
        match self {
            Self::Completed => "completed",
            _ => "incomplete",
        }
    }
}

/// A response object with no output yet: what `response.created` carries.
pub(crate) fn in_progress(id: &str, created_at: i64, request: &ResponsesRequest) -> Value {
    let mut object = skeleton(id, created_at, request);
    object.insert("status".to_owned(), json!("in_progress"));
    Value::Object(object)
}

/// The finished response object for the assistant message `reply`, stored under
/// sequence number `sequence`.
pub(crate) fn finished(
    id: &str,
    created_at: i64,
    request: &ResponsesRequest,
    reply: &NewMessage,
    sequence: i64,
) -> Value {
    let mut metadata = reply.metadata();
    let status = Status::of(&metadata);
    let mut object = skeleton(id, created_at, request);
    if let Some(model) = metadata.remove("model").filter(Value::is_string) {
        object.insert("model".to_owned(), model);
    }
    let output = output_items(reply, sequence, &status);
    object.insert("output_text".to_owned(), json!(output_text(&output)));
    object.insert("output".to_owned(), Value::Array(output));
    object.insert("status".to_owned(), json!(status.name()));
    match &status {
        Status::Incomplete(reason) => {
            object.insert("incomplete_details".to_owned(), json!({"reason": reason}));
        }
        Status::Failed(error) => {
            object.insert("error".to_owned(), error.clone());
        }
        Status::Completed => {}
    }
    object.insert("usage".to_owned(), usage(metadata.get("usage")));
    Value::Object(object)
}

/// The fields every response object has, from the request.
fn skeleton(id: &str, created_at: i64, request: &ResponsesRequest) -> Map<String, Value> {
    let echo = |name: &str, default: Value| request.echo.get(name).cloned().unwrap_or(default);
    let mut object = Map::new();
    object.insert("id".to_owned(), json!(id));
    object.insert("object".to_owned(), json!("response"));
    object.insert("created_at".to_owned(), json!(created_at));
    object.insert("status".to_owned(), json!("in_progress"));
    object.insert("model".to_owned(), request.model().clone());
    object.insert("output".to_owned(), json!([]));
    object.insert("error".to_owned(), Value::Null);
    object.insert("incomplete_details".to_owned(), Value::Null);
    object.insert("background".to_owned(), json!(false));
    for (name, default) in [
        ("instructions", Value::Null),
        ("tools", json!([])),
        ("tool_choice", json!("auto")),
        ("parallel_tool_calls", json!(true)),
        ("temperature", Value::Null),
        ("top_p", Value::Null),
        ("max_output_tokens", Value::Null),
        ("previous_response_id", Value::Null),
        ("conversation", Value::Null),
        ("reasoning", Value::Null),
        ("metadata", json!({})),
        ("text", json!({"format": {"type": "text"}})),
        ("truncation", json!("disabled")),
        ("user", Value::Null),
    ] {
        object.insert(name.to_owned(), echo(name, default));
    }
    object.insert("store".to_owned(), json!(request.store));
    object.insert("usage".to_owned(), Value::Null);
    object
}

/// The output items of the assistant message stored under `sequence`.
pub(crate) fn output_items(reply: &NewMessage, sequence: i64, status: &Status) -> Vec<Value> {
    let mut items = Vec::new();
    if let Some(reasoning) = &reply.reasoning {
        items.push(reasoning_item(sequence, reasoning));
    }
    for mut item in to_items(sequence, &reply.to_value()) {
        item["status"] = json!(status.item_status());
        items.push(item);
    }
    items
}

/// A `reasoning` item: the upstream's reasoning text, which is never sent upstream again.
pub(crate) fn reasoning_item(sequence: i64, text: &str) -> Value {
    json!({
        "type": "reasoning",
        "id": format!("rs_{sequence}"),
        "summary": [],
        "content": [{"type": "reasoning_text", "text": text}],
    })
}

/// The text of every `output_text` part, joined: the SDK's `output_text`.
pub(crate) fn output_text(items: &[Value]) -> String {
    items
        .iter()
        .filter(|item| item["type"] == "message")
        .filter_map(|item| item["content"].as_array())
        .flatten()
        .filter(|part| part["type"] == "output_text")
        .filter_map(|part| part["text"].as_str())
        .collect()
}

/// Chat usage as Responses usage; every field present (zeros when the upstream sent no
/// usage), as the SDK's strict validation requires.
pub(crate) fn usage(chat: Option<&Value>) -> Value {
    let number = |value: &Value| value.as_u64().unwrap_or(0);
    let chat = chat.unwrap_or(&Value::Null);
    let input = number(&chat["prompt_tokens"]);
    let output = number(&chat["completion_tokens"]);
    let total = chat["total_tokens"].as_u64().unwrap_or(input + output);
    json!({
        "input_tokens": input,
        "input_tokens_details": {
            "cached_tokens": number(&chat["prompt_tokens_details"]["cached_tokens"]),
            "cache_write_tokens": number(&chat["prompt_tokens_details"]["cache_write_tokens"]),
        },
        "output_tokens": output,
        "output_tokens_details": {
            "reasoning_tokens": number(&chat["completion_tokens_details"]["reasoning_tokens"]),
        },
        "total_tokens": total,
    })
}

/// Gives the output items of `object` the ids of the assistant message stored under
/// `sequence`: the one place item ids of a response are decided.
pub(crate) fn renumber(object: &mut Value, sequence: i64) {
    let Some(items) = object["output"].as_array_mut() else {
        return;
    };
    let mut calls = 0;
    for item in items {
        let id = match item["type"].as_str() {
            Some("message") => format!("msg_{sequence}"),
            Some("reasoning") => format!("rs_{sequence}"),
            Some("function_call") => {
                calls += 1;
                format!("fc_{sequence}_{}", calls - 1)
            }
            _ => continue,
        };
        item["id"] = json!(id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usage_is_whole_even_when_the_upstream_sent_none() {
        assert_eq!(
            usage(None),
            json!({"input_tokens": 0, "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
                   "output_tokens": 0, "output_tokens_details": {"reasoning_tokens": 0},
                   "total_tokens": 0})
        );
        let chat = json!({"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12,
                          "completion_tokens_details": {"reasoning_tokens": 2}});
        assert_eq!(
            usage(Some(&chat))["output_tokens_details"]["reasoning_tokens"],
            2
        );
        assert_eq!(usage(Some(&chat))["total_tokens"], 12);
    }

    #[test]
    fn a_length_finish_is_incomplete_for_max_output_tokens() {
        let reply = json!({"finish_reason": "length"});
        assert_eq!(
            Status::of(reply.as_object().unwrap()),
            Status::Incomplete(Some("max_output_tokens"))
        );
    }

    #[test]
    fn renumbering_follows_the_items_view() {
        let mut reply =
            NewMessage::new(json!({"role": "assistant", "content": "a", "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}},
                {"id": "c2", "type": "function", "function": {"name": "g", "arguments": "{}"}}
            ]}));
        reply.reasoning = Some("think".to_owned());
        let items = output_items(&reply, 3, &Status::Completed);
        let mut object = json!({"output": items.clone()});
        renumber(&mut object, 3);
        assert_eq!(object["output"], json!(items));
        let ids: Vec<&str> = items.iter().map(|i| i["id"].as_str().unwrap()).collect();
        assert_eq!(ids, ["rs_3", "msg_3", "fc_3_0", "fc_3_1"]);
    }
}
