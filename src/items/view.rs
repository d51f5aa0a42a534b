//! [`to_items`]: the items of one stored chat message.

use serde_json::{Value, json};

use super::ItemId;
use super::content::{Speaker, item_parts};

/// The roles a `message` item may have, as OpenAI's conversation items name them.
const MESSAGE_ROLES: [&str; 4] = ["user", "system", "developer", "assistant"];

/// The items a stored chat message is seen as, in order: a `message` item, then for an
/// assistant message one `function_call` item per tool call (an assistant message that
/// only calls tools has no `message` item); a `tool` message is one
/// `function_call_output` item. Every item is `"status": "completed"`.
///
/// Tool calls other than function calls have no item here. A role outside
/// `user`/`system`/`developer`/`assistant`/`tool` (the legacy `function`) is shown as a
/// message of role `unknown`.
///
/// Tool calls are numbered by their place in `tool_calls`; a message some of whose calls
/// were deleted keeps the numbers its calls had, through [`to_items_numbered`].
///
/// ```
/// use serde_json::json;
/// use tower_conversations::items::to_items;
///
/// let stored = json!({"role": "assistant", "content": null, "tool_calls": [{
///     "id": "call_1", "type": "function",
///     "function": {"name": "clock", "arguments": "{}"}
/// }]});
/// assert_eq!(to_items(4, &stored), [json!({
///     "type": "function_call", "id": "fc_4_0", "status": "completed",
///     "call_id": "call_1", "name": "clock", "arguments": "{}"
/// })]);
/// ```
pub fn to_items(sequence_number: i64, message: &Value) -> Vec<Value> {
    to_items_numbered(sequence_number, message, None)
}

/// [`to_items`] for a stored message whose tool calls carry the numbers `call_numbers`
/// (one per call, in `tool_calls` order) rather than their places: what the store keeps
/// beside a message once one of its calls was deleted, so that the calls left keep their
/// item ids. `None` numbers calls by their place, as [`to_items`] does.
///
/// ```
/// use serde_json::json;
/// use tower_conversations::items::to_items_numbered;
///
/// // Call 0 was deleted; the call left was call 1 and stays `fc_4_1`.
/// let stored = json!({"role": "assistant", "content": null, "tool_calls": [{
///     "id": "call_2", "type": "function",
///     "function": {"name": "weather", "arguments": "{}"}
/// }]});
/// assert_eq!(to_items_numbered(4, &stored, Some(&[1]))[0]["id"], "fc_4_1");
/// ```
pub fn to_items_numbered(
    sequence_number: i64,
    message: &Value,
    call_numbers: Option<&[u32]>,
) -> Vec<Value> {
    match message["role"].as_str() {
        Some("tool") => vec![function_call_output(sequence_number, message)],
        Some("assistant") => assistant_items(sequence_number, message, call_numbers),
        role => {
            let role = role
                .filter(|role| MESSAGE_ROLES.contains(role))
                .unwrap_or("unknown");
            let content = item_parts(&message["content"], Speaker::Input);
            vec![message_item(sequence_number, role, content)]
        }
    }
}

fn message_item(sequence_number: i64, role: &str, content: Vec<Value>) -> Value {
    json!({
        "type": "message",
        "id": ItemId::Message { sequence_number }.to_string(),
        "status": "completed",
        "role": role,
        "content": content,
    })
}

fn assistant_items(
    sequence_number: i64,
    message: &Value,
    call_numbers: Option<&[u32]>,
) -> Vec<Value> {
    let calls = function_calls(message, call_numbers);
    let mut content = item_parts(&message["content"], Speaker::Output);
    if let Some(refusal) = message["refusal"].as_str() {
        content.push(json!({"type": "refusal", "refusal": refusal}));
    }
    let mut items = Vec::with_capacity(calls.len() + 1);
    // Content `null` with calls says only "call these"; without calls it is still a turn.
    if !message["content"].is_null() || !content.is_empty() || calls.is_empty() {
        items.push(message_item(sequence_number, "assistant", content));
    }
    for (index, call) in calls {
        let function = &call["function"];
        items.push(json!({
            "type": "function_call",
            "id": ItemId::FunctionCall { sequence_number, index }.to_string(),
            "status": "completed",
            "call_id": call["id"].as_str().unwrap_or_default(),
            "name": function["name"].as_str().unwrap_or_default(),
            "arguments": function["arguments"].as_str().unwrap_or_default(),
        }));
    }
    items
}

/// The function calls of an assistant message with their numbers: the numbers kept
/// beside it, else their places in `tool_calls` (taken before calls of other kinds are
/// left out, so that a call's number never depends on its neighbours' kinds).
pub(super) fn function_calls<'m>(
    message: &'m Value,
    call_numbers: Option<&[u32]>,
) -> Vec<(usize, &'m Value)> {
    let Some(calls) = message["tool_calls"].as_array() else {
        return Vec::new();
    };
    calls
        .iter()
        .enumerate()
        .map(|(place, call)| (call_number(call_numbers, place), call))
        .filter(|(_, call)| call["type"] == "function")
        .collect()
}

/// The number of the call at `place`: the one kept for it, else the place itself.
pub(super) fn call_number(call_numbers: Option<&[u32]>, place: usize) -> usize {
    call_numbers
        .and_then(|numbers| numbers.get(place))
        .map_or(place, |&number| number as usize)
}

fn function_call_output(sequence_number: i64, message: &Value) -> Value {
    let output = match &message["content"] {
        Value::String(text) => json!(text),
        content => json!(item_parts(content, Speaker::Input)),
    };
    json!({
        "type": "function_call_output",
        "id": ItemId::FunctionCallOutput { sequence_number }.to_string(),
        "status": "completed",
        "call_id": message["tool_call_id"].as_str().unwrap_or_default(),
        "output": output,
    })
}
