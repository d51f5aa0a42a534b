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
    match message["role"].as_str() {
        Some("tool") => vec![function_call_output(sequence_number, message)],
        Some("assistant") => assistant_items(sequence_number, message),
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

fn assistant_items(sequence_number: i64, message: &Value) -> Vec<Value> {
    // Numbered by their place in `tool_calls`, before calls of other kinds are left out.
    let calls: Vec<(usize, &Value)> = message["tool_calls"]
        .as_array()
        .map(|calls| {
            calls
                .iter()
                .enumerate()
                .filter(|(_, call)| call["type"] == "function")
                .collect()
        })
        .unwrap_or_default();
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
