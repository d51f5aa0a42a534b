//! The JSON bodies the management API accepts, checked field by field.
//!
//! Every failure is a `400 invalid_request` whose `param` names the field at fault
//! (`title`, `metadata`, `messages[3].role`, `at_sequence`, or an unknown field's name),
//! and nothing is stored. A field set to `null` counts as absent.

use std::borrow::Cow;

use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::store::{ConversationUpdate, Metadata, NewConversation, NewMessage};

/// Longest title, in characters.
pub(crate) const MAX_TITLE_CHARS: usize = 200;
/// Most metadata pairs on a conversation.
pub(crate) const MAX_METADATA_PAIRS: usize = 16;
/// Longest metadata key, in characters.
pub(crate) const MAX_METADATA_KEY_CHARS: usize = 64;
/// Longest metadata value, in characters.
pub(crate) const MAX_METADATA_VALUE_CHARS: usize = 512;
/// Most messages a conversation can be created with.
pub(crate) const MAX_SEED_MESSAGES: usize = 100;
/// Most items one call creates, as OpenAI allows.
pub(crate) const MAX_ITEMS: usize = 20;

/// `POST /` : `{"title"?, "metadata"?, "messages"?}` or OpenAI's `{"items"?,
/// "metadata"?}` (chat `messages` or Responses `items`, not both). An empty body creates
/// an empty, untitled conversation.
pub(crate) fn new_conversation(body: &[u8]) -> Result<NewConversation, ApiError> {
    let mut fields = object(body)?;
    reject_unknown(&fields, &["title", "metadata", "messages", "items"])?;
    let given = |value: &Option<Value>| value.as_ref().is_some_and(|value| !value.is_null());
    let (messages_field, items_field) = (fields.remove("messages"), fields.remove("items"));
    let messages = match (given(&messages_field), given(&items_field)) {
        (true, true) => {
            return Err(invalid(
                "items",
                "Give `messages` (chat form) or `items` (Responses form), not both.",
            ));
        }
        (false, true) => items(items_field)?,
        _ => messages(messages_field)?,
    };
    Ok(NewConversation {
        title: title(fields.remove("title"))?,
        metadata: metadata(fields.remove("metadata"))?.unwrap_or_default(),
        messages,
    })
}

/// `POST /{id}/items` : `{"items": [1 to 20 input items]}`.
pub(crate) fn new_items(body: &[u8]) -> Result<Vec<NewMessage>, ApiError> {
    let mut fields = object(body)?;
    reject_unknown(&fields, &["items"])?;
    let messages = items(fields.remove("items"))?;
    if messages.is_empty() {
        return Err(invalid("items", "`items` must hold 1 to 20 items."));
    }
    Ok(messages)
}

/// Responses input items, at most [`MAX_ITEMS`], as the chat messages to store.
fn items(value: Option<Value>) -> Result<Vec<NewMessage>, ApiError> {
    let items = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(invalid("items", "`items` must be an array of items.")),
    };
    if items.len() > MAX_ITEMS {
        return Err(invalid(
            "items",
            format!("`items` holds at most {MAX_ITEMS} items."),
        ));
    }
    let messages = crate::items::to_messages(&items)
        .map_err(|error| invalid(error.param().to_owned(), error.message()))?;
    Ok(messages.into_iter().map(NewMessage::new).collect())
}

/// `PATCH /{id}` or `POST /{id}` : `{"title"?, "metadata"?}`, at least one of them;
/// metadata replaces the old whole, and `"metadata": null` clears it (OpenAI's update
/// sends that), where a `null` title counts as absent.
pub(crate) fn update(body: &[u8]) -> Result<ConversationUpdate, ApiError> {
    let mut fields = object(body)?;
    reject_unknown(&fields, &["title", "metadata"])?;
    let metadata = match fields.remove("metadata") {
        Some(Value::Null) => Some(Metadata::new()),
        other => metadata(other)?,
    };
    let update = ConversationUpdate {
        title: title(fields.remove("title"))?,
        metadata,
    };
    if update.title.is_none() && update.metadata.is_none() {
        return Err(ApiError::invalid_request(
            "Give a new `title`, new `metadata`, or both.",
        ));
    }
    Ok(update)
}

/// `POST /{id}/fork` : `{"at_sequence": N}`, N a non-negative integer.
pub(crate) fn fork_point(body: &[u8]) -> Result<i64, ApiError> {
    let mut fields = object(body)?;
    reject_unknown(&fields, &["at_sequence"])?;
    fields
        .remove("at_sequence")
        .as_ref()
        .and_then(Value::as_u64)
        .and_then(|n| i64::try_from(n).ok())
        .ok_or_else(|| {
            invalid(
                "at_sequence",
                "`at_sequence` is required: the non-negative sequence number of the last message to copy.",
            )
        })
}

/// The body as a JSON object; an empty body is `{}`, so that a missing field is named.
fn object(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Map::new());
    }
    match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(fields)) => Ok(fields),
        Ok(_) => Err(ApiError::invalid_request(
            "The request body must be a JSON object.",
        )),
        Err(error) => Err(ApiError::invalid_request(format!(
            "The request body is not valid JSON: {error}."
        ))),
    }
}

/// A misspelt field would otherwise be dropped without a word.
fn reject_unknown(fields: &Map<String, Value>, known: &[&str]) -> Result<(), ApiError> {
    match fields.keys().find(|name| !known.contains(&name.as_str())) {
        None => Ok(()),
        Some(name) => Err(invalid(
            name.clone(),
            format!(
                "Unrecognized field `{name}`; expected {}.",
                known.join(", ")
            ),
        )),
    }
}

fn title(value: Option<Value>) -> Result<Option<String>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(title)) if title.contains('\0') => Err(no_nul("title")),
        Some(Value::String(title))
            if !title.trim().is_empty() && title.chars().count() <= MAX_TITLE_CHARS =>
        {
            Ok(Some(title))
        }
        Some(_) => Err(invalid(
            "title",
            format!("`title` must be a non-blank string of at most {MAX_TITLE_CHARS} characters."),
        )),
    }
}

/// Titles and metadata are stored as text, which cannot hold U+0000 on PostgreSQL:
/// refused on every backend alike, so that the API answers the same whatever the store.
fn no_nul(param: &'static str) -> ApiError {
    invalid(param, format!("`{param}` must not contain U+0000 (NUL)."))
}

fn metadata(value: Option<Value>) -> Result<Option<Metadata>, ApiError> {
    let pairs = match value {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(pairs)) => pairs,
        Some(_) => {
            return Err(invalid(
                "metadata",
                "`metadata` must be an object of string keys to string values.",
            ));
        }
    };
    if pairs.len() > MAX_METADATA_PAIRS {
        return Err(invalid(
            "metadata",
            format!("`metadata` holds at most {MAX_METADATA_PAIRS} pairs."),
        ));
    }
    let mut metadata = Metadata::new();
    for (key, value) in pairs {
        if key.contains('\0') || value.as_str().is_some_and(|value| value.contains('\0')) {
            return Err(no_nul("metadata"));
        }
        if key.chars().count() > MAX_METADATA_KEY_CHARS {
            return Err(invalid(
                "metadata",
                format!("`metadata` keys are at most {MAX_METADATA_KEY_CHARS} characters."),
            ));
        }
        let Value::String(value) = value else {
            return Err(invalid(
                "metadata",
                format!("`metadata.{key}` must be a string."),
            ));
        };
        if value.chars().count() > MAX_METADATA_VALUE_CHARS {
            return Err(invalid(
                "metadata",
                format!("`metadata.{key}` is longer than {MAX_METADATA_VALUE_CHARS} characters."),
            ));
        }
        metadata.insert(key, value);
    }
    Ok(Some(metadata))
}

fn messages(value: Option<Value>) -> Result<Vec<NewMessage>, ApiError> {
    let messages = match value {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(messages)) => messages,
        Some(_) => {
            return Err(invalid(
                "messages",
                "`messages` must be an array of message objects.",
            ));
        }
    };
    if messages.len() > MAX_SEED_MESSAGES {
        return Err(invalid(
            "messages",
            format!("`messages` holds at most {MAX_SEED_MESSAGES} messages."),
        ));
    }
    messages
        .into_iter()
        .enumerate()
        .map(|(index, message)| seed_message(index, message))
        .collect()
}

/// One seed message. A message as the API returns it (with `sequence_number`,
/// `created_at`, `metadata`, `reasoning`, `reasoning_events`) is accepted too, so that an
/// exported conversation imports unchanged: those fields go beside the message, never
/// into it, where they would be sent upstream. `reasoning_content` goes beside it as
/// well, since several providers reject it in input messages.
fn seed_message(index: usize, message: Value) -> Result<NewMessage, ApiError> {
    let Value::Object(mut fields) = message else {
        return Err(invalid(
            format!("messages[{index}]"),
            "Each message must be an object.",
        ));
    };
    match fields.get("role") {
        Some(Value::String(role)) if !role.is_empty() => {}
        _ => {
            return Err(invalid(
                format!("messages[{index}].role"),
                "Each message needs a `role` string.",
            ));
        }
    }
    fields.remove("sequence_number");
    fields.remove("created_at");
    let metadata = match fields.remove("metadata") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(metadata)) => metadata,
        Some(_) => {
            return Err(invalid(
                format!("messages[{index}].metadata"),
                "A message's `metadata` must be an object.",
            ));
        }
    };
    let mut reasoning = None;
    for field in ["reasoning", "reasoning_content"] {
        match fields.remove(field) {
            None | Some(Value::Null) => {}
            Some(Value::String(text)) => {
                reasoning.get_or_insert(text);
            }
            Some(_) => {
                return Err(invalid(
                    format!("messages[{index}].{field}"),
                    format!("A message's `{field}` must be a string."),
                ));
            }
        }
    }
    let reasoning_events = match fields.remove("reasoning_events") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(events)) => events,
        Some(_) => {
            return Err(invalid(
                format!("messages[{index}].reasoning_events"),
                "A message's `reasoning_events` must be an array.",
            ));
        }
    };
    let mut message = NewMessage::new(Value::Object(fields));
    message.reasoning = reasoning;
    message.reasoning_events = reasoning_events;
    message.set_metadata(metadata);
    Ok(message)
}

fn invalid(param: impl Into<Cow<'static, str>>, message: impl Into<Cow<'static, str>>) -> ApiError {
    ApiError::invalid_request(message).with_param(param)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn param_of(error: ApiError) -> Option<String> {
        assert_eq!(error.code, "invalid_request");
        error.param.map(Cow::into_owned)
    }

    #[test]
    fn an_empty_create_body_is_an_empty_conversation() {
        assert_eq!(new_conversation(b"").unwrap(), NewConversation::default());
        assert_eq!(new_conversation(b"{}").unwrap(), NewConversation::default());
    }

    #[test]
    fn create_takes_title_metadata_and_messages() {
        let body = json!({
            "title": "Trip",
            "metadata": {"project": "alps"},
            "messages": [{"role": "user", "content": "Where to?"}]
        });
        let new = new_conversation(body.to_string().as_bytes()).unwrap();
        assert_eq!(new.title.as_deref(), Some("Trip"));
        assert_eq!(new.metadata["project"], "alps");
        assert_eq!(
            new.messages[0].to_value(),
            json!({"role": "user", "content": "Where to?"})
        );
    }

    #[test]
    fn exported_fields_go_beside_the_seed_message() {
        let body = json!({"messages": [{
            "role": "assistant", "content": "Hi", "sequence_number": 4,
            "created_at": "2025-01-01T00:00:00.000Z", "metadata": {"model": "m"},
            "reasoning": "thought", "reasoning_events": [{"type": "step"}]
        }, {"role": "assistant", "content": "Yo", "reasoning_content": "hm"}]});
        let new = new_conversation(body.to_string().as_bytes()).unwrap();
        let first = &new.messages[0];
        assert_eq!(
            first.to_value(),
            json!({"role": "assistant", "content": "Hi"})
        );
        assert_eq!(first.reasoning.as_deref(), Some("thought"));
        assert_eq!(first.reasoning_events, vec![json!({"type": "step"})]);
        assert_eq!(first.metadata()["model"], "m");
        assert_eq!(
            new.messages[1].to_value(),
            json!({"role": "assistant", "content": "Yo"})
        );
        assert_eq!(new.messages[1].reasoning.as_deref(), Some("hm"));
    }

    #[test]
    fn bad_create_bodies_name_the_field() {
        let many: Map<String, Value> = (0..17).map(|i| (format!("k{i}"), json!("v"))).collect();
        let cases = [
            (json!({"title": ""}), Some("title")),
            (json!({"title": "   "}), Some("title")),
            (json!({"title": "x".repeat(201)}), Some("title")),
            (json!({"title": 5}), Some("title")),
            (json!({"title": "a\u{0}b"}), Some("title")),
            (json!({"metadata": {"k\u{0}": "v"}}), Some("metadata")),
            (json!({"metadata": {"k": "v\u{0}"}}), Some("metadata")),
            (json!({"metadata": many}), Some("metadata")),
            (json!({"metadata": {"k".repeat(65): "v"}}), Some("metadata")),
            (
                json!({"metadata": {"k": "v".repeat(513)}}),
                Some("metadata"),
            ),
            (json!({"metadata": {"k": 1}}), Some("metadata")),
            (json!({"metadata": ["k"]}), Some("metadata")),
            (json!({"messages": {}}), Some("messages")),
            (
                json!({"messages": vec![json!({"role": "user"}); 101]}),
                Some("messages"),
            ),
            (
                json!({"messages": [{"role": "user"}, "hi"]}),
                Some("messages[1]"),
            ),
            (
                json!({"messages": [{"content": "hi"}]}),
                Some("messages[0].role"),
            ),
            (json!({"messages": [{"role": 1}]}), Some("messages[0].role")),
            (
                json!({"messages": [{"role": "user", "metadata": 1}]}),
                Some("messages[0].metadata"),
            ),
            (json!({"titel": "x"}), Some("titel")),
            (json!([]), None),
        ];
        for (body, param) in cases {
            let error = new_conversation(body.to_string().as_bytes()).unwrap_err();
            assert_eq!(param_of(error).as_deref(), param, "{body}");
        }
        assert_eq!(param_of(new_conversation(b"{").unwrap_err()), None);
    }

    #[test]
    fn limits_count_characters_not_bytes() {
        let body = json!({"title": "é".repeat(200), "metadata": {"é".repeat(64): "é".repeat(512)}});
        assert!(new_conversation(body.to_string().as_bytes()).is_ok());
    }

    #[test]
    fn update_needs_a_title_or_metadata() {
        for body in ["", "{}", r#"{"title": null}"#] {
            assert_eq!(
                param_of(update(body.as_bytes()).unwrap_err()),
                None,
                "{body}"
            );
        }
        let change = update(br#"{"metadata": {}}"#).unwrap();
        assert_eq!(change.metadata, Some(Metadata::new()));
        assert_eq!(change.title, None);
        let error = update(br#"{"title": "x", "messages": []}"#).unwrap_err();
        assert_eq!(param_of(error).as_deref(), Some("messages"));
    }

    #[test]
    fn fork_point_is_a_non_negative_integer() {
        assert_eq!(fork_point(br#"{"at_sequence": 3}"#).unwrap(), 3);
        for body in [
            "",
            "{}",
            r#"{"at_sequence": -1}"#,
            r#"{"at_sequence": "3"}"#,
            r#"{"at_sequence": 1.5}"#,
        ] {
            let error = fork_point(body.as_bytes()).unwrap_err();
            assert_eq!(param_of(error).as_deref(), Some("at_sequence"), "{body}");
        }
    }
}
