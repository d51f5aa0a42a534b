//! [`to_messages`]: input items as the chat messages that are stored and sent upstream.

use serde_json::{Map, Value, json};

use super::ItemId;
use super::content::chat_part;

/// An input item that has no chat-completions equivalent, or is malformed.
///
/// [`ItemError::param`] names the offending field the way OpenAI's errors do
/// (`items[2].content[0].type`), for the `param` of a `400` answer.
///
/// ```
/// use serde_json::json;
/// use tower_conversations::items::to_messages;
///
/// let error = to_messages(&[json!({"type": "web_search_call"})]).unwrap_err();
/// assert_eq!(error.param(), "items[0].type");
/// ```
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} ({param})")]
pub struct ItemError {
    param: String,
    message: &'static str,
}

impl ItemError {
    fn new(index: usize, field: &str, message: &'static str) -> Self {
        Self {
            param: format!("items[{index}].{field}"),
            message,
        }
    }

    /// The field at fault, as `items[<index>].<field>`.
    ///
    /// ```
    /// # use serde_json::json;
    /// # use tower_conversations::items::to_messages;
    /// let error = to_messages(&[json!({"role": "user"})]).unwrap_err();
    /// assert_eq!(error.param(), "items[0].content");
    /// ```
    pub fn param(&self) -> &str {
        &self.param
    }

    /// What is wrong with it, without the field.
    ///
    /// ```
    /// # use serde_json::json;
    /// # use tower_conversations::items::to_messages;
    /// let error = to_messages(&[json!({"role": "critic", "content": "x"})]).unwrap_err();
    /// assert!(error.message().contains("role"));
    /// ```
    pub fn message(&self) -> &'static str {
        self.message
    }
}

/// The roles an input `message` item may have.
const INPUT_ROLES: [&str; 4] = ["user", "system", "developer", "assistant"];

/// Where the last chat message came from, so that a `function_call` item can join the
/// assistant message it belongs to.
struct Open {
    /// The index of the assistant message in the output.
    at: usize,
    /// The sequence number the item's id names, when it is one of this store's ids.
    sequence: Option<i64>,
}

/// Input items as chat messages, in order.
///
/// A `message` item (its `type` may be left out or `null`, as in OpenAI's easy input messages)
/// becomes a message of its role, with string content or an array of parts; an
/// assistant message's `refusal` parts become its `refusal`. `function_call` items join
/// the assistant message right before them as its `tool_calls` (when both carry this
/// store's ids, only if they name the same message); a `function_call` with no such
/// message becomes an assistant message with `content: null`. A `function_call_output`
/// becomes a `tool` message. Anything else is an [`ItemError`].
///
/// ```
/// use serde_json::json;
/// use tower_conversations::items::to_messages;
///
/// let messages = to_messages(&[
///     json!({"role": "user", "content": "What time is it?"}),
///     json!({"type": "function_call", "call_id": "c1", "name": "clock", "arguments": "{}"}),
///     json!({"type": "function_call_output", "call_id": "c1", "output": "09:30"}),
/// ])?;
/// assert_eq!(messages, [
///     json!({"role": "user", "content": "What time is it?"}),
///     json!({"role": "assistant", "content": null, "tool_calls": [{
///         "id": "c1", "type": "function", "function": {"name": "clock", "arguments": "{}"}
///     }]}),
///     json!({"role": "tool", "tool_call_id": "c1", "content": "09:30"}),
/// ]);
/// # Ok::<(), tower_conversations::items::ItemError>(())
/// ```
pub fn to_messages(items: &[Value]) -> Result<Vec<Value>, ItemError> {
    let mut messages: Vec<Value> = Vec::with_capacity(items.len());
    let mut open: Option<Open> = None;
    for (index, item) in items.iter().enumerate() {
        let sequence = item["id"]
            .as_str()
            .and_then(|id| id.parse::<ItemId>().ok())
            .map(ItemId::sequence_number);
        // A `type` that is there but not a string names no kind of item; `null` counts as
        // absent, as everywhere in the API.
        let kind = match &item["type"] {
            Value::Null => None,
            Value::String(kind) => Some(kind.as_str()),
            _ => return Err(ItemError::new(index, "type", "type is a string")),
        };
        match kind {
            None | Some("message") => {
                let message = chat_message(index, item)?;
                open = (message["role"] == "assistant").then_some(Open {
                    at: messages.len(),
                    sequence,
                });
                messages.push(message);
            }
            Some("function_call") => {
                let call = tool_call(index, item)?;
                match &open {
                    Some(assistant) if assistant.sequence == sequence => {
                        add_call(&mut messages[assistant.at], call);
                    }
                    _ => {
                        open = Some(Open {
                            at: messages.len(),
                            sequence,
                        });
                        messages.push(json!({
                            "role": "assistant", "content": null, "tool_calls": [call]
                        }));
                    }
                }
            }
            Some("function_call_output") => {
                open = None;
                messages.push(tool_message(index, item)?);
            }
            Some(_) => {
                return Err(ItemError::new(
                    index,
                    "type",
                    "only message, function_call and function_call_output items can be stored",
                ));
            }
        }
    }
    Ok(messages)
}

fn chat_message(index: usize, item: &Value) -> Result<Value, ItemError> {
    let role = item["role"]
        .as_str()
        .filter(|role| INPUT_ROLES.contains(role))
        .ok_or_else(|| {
            ItemError::new(
                index,
                "role",
                "role is user, system, developer or assistant",
            )
        })?;
    let parts = match &item["content"] {
        Value::String(text) => return Ok(json!({"role": role, "content": text})),
        Value::Array(parts) => parts,
        _ => {
            return Err(ItemError::new(
                index,
                "content",
                "content is a string or an array of parts",
            ));
        }
    };
    let mut content = Vec::with_capacity(parts.len());
    let mut refusals = Vec::new();
    for (at, part) in parts.iter().enumerate() {
        let part = chat_part(part).map_err(|(field, message)| {
            ItemError::new(index, &format!("content[{at}].{field}"), message)
        })?;
        if role == "assistant" && part["type"] == "refusal" {
            refusals.push(part["refusal"].as_str().unwrap_or_default().to_owned());
        } else {
            content.push(part);
        }
    }
    let mut message = Map::new();
    message.insert("role".to_owned(), json!(role));
    message.insert("content".to_owned(), chat_content(content, role));
    if !refusals.is_empty() {
        message.insert("refusal".to_owned(), json!(refusals.concat()));
    }
    Ok(Value::Object(message))
}

/// One text part is a plain string, as chat messages mostly carry it; no parts at all are
/// an assistant's `null` (it only called tools or refused).
fn chat_content(mut parts: Vec<Value>, role: &str) -> Value {
    match parts.as_slice() {
        [] if role == "assistant" => Value::Null,
        [] => json!(""),
        [only] if only["type"] == "text" => parts.swap_remove(0)["text"].take(),
        _ => Value::Array(parts),
    }
}

fn tool_call(index: usize, item: &Value) -> Result<Value, ItemError> {
    let field = |name: &'static str| {
        item[name]
            .as_str()
            .ok_or_else(|| ItemError::new(index, name, "a function_call needs this string"))
    };
    Ok(json!({
        "id": field("call_id")?,
        "type": "function",
        "function": {"name": field("name")?, "arguments": field("arguments")?},
    }))
}

fn add_call(assistant: &mut Value, call: Value) {
    match assistant["tool_calls"].as_array_mut() {
        Some(calls) => calls.push(call),
        None => assistant["tool_calls"] = json!([call]),
    }
}

fn tool_message(index: usize, item: &Value) -> Result<Value, ItemError> {
    let call_id = item["call_id"].as_str().ok_or_else(|| {
        ItemError::new(
            index,
            "call_id",
            "a function_call_output needs a string call_id",
        )
    })?;
    let content = match &item["output"] {
        Value::String(text) => json!(text),
        Value::Array(parts) => {
            let mut content = Vec::with_capacity(parts.len());
            for (at, part) in parts.iter().enumerate() {
                content.push(chat_part(part).map_err(|(field, message)| {
                    ItemError::new(index, &format!("output[{at}].{field}"), message)
                })?);
            }
            Value::Array(content)
        }
        _ => {
            return Err(ItemError::new(
                index,
                "output",
                "output is a string or an array of parts",
            ));
        }
    };
    Ok(json!({"role": "tool", "tool_call_id": call_id, "content": content}))
}
