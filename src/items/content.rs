//! Content parts, each way: chat-completions parts and Responses parts.
//!
//! | chat | item |
//! |---|---|
//! | `{"type": "text", "text"}` | `{"type": "input_text", "text"}`, or for the assistant `{"type": "output_text", "text", "annotations": []}` |
//! | `{"type": "image_url", "image_url": {"url", "detail"?}}` | `{"type": "input_image", "image_url", "detail"}` (`"auto"` when the chat part has none) |
//! | `{"type": "file", "file": {...}}` | `{"type": "input_file", ...}` (`file_id`, `file_data`, `filename`) |
//! | `{"type": "refusal", "refusal"}` | the same |
//! | `{"type": "input_audio", "input_audio"}` | the same |

use serde_json::{Map, Value, json};

/// Which text part a role's text becomes: the model's own words are output.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Speaker {
    /// `input_text`: what the user, system, developer or a tool said.
    Input,
    /// `output_text`: what the assistant said.
    Output,
}

/// The fields a file part carries, in both shapes.
const FILE_FIELDS: [&str; 3] = ["file_id", "file_data", "filename"];

/// A text part of the speaker's kind.
pub(super) fn text_part(speaker: Speaker, text: &str) -> Value {
    match speaker {
        Speaker::Input => json!({"type": "input_text", "text": text}),
        Speaker::Output => json!({"type": "output_text", "text": text, "annotations": []}),
    }
}

/// The item parts of a chat message's `content`: a string is one text part, `null` none.
/// A part this view does not know is kept as it is: the view of a stored message never
/// fails.
pub(super) fn item_parts(content: &Value, speaker: Speaker) -> Vec<Value> {
    match content {
        Value::Null => Vec::new(),
        Value::String(text) => vec![text_part(speaker, text)],
        Value::Array(parts) => parts.iter().map(|part| item_part(part, speaker)).collect(),
        other => vec![text_part(speaker, &other.to_string())],
    }
}

fn item_part(part: &Value, speaker: Speaker) -> Value {
    match part["type"].as_str() {
        Some("text") => match part["text"].as_str() {
            Some(text) => text_part(speaker, text),
            None => part.clone(),
        },
        Some("image_url") => {
            let image = &part["image_url"];
            match image["url"].as_str() {
                Some(url) => json!({
                    "type": "input_image",
                    "image_url": url,
                    "detail": image["detail"].as_str().unwrap_or("auto"),
                }),
                None => part.clone(),
            }
        }
        Some("file") => {
            let mut item = Map::new();
            item.insert("type".to_owned(), json!("input_file"));
            copy_fields(&part["file"], &mut item);
            Value::Object(item)
        }
        _ => part.clone(),
    }
}

/// Why an item part has no chat equivalent: the field to name and what is wrong.
pub(super) type PartError = (&'static str, &'static str);

/// The chat part of an item part.
pub(super) fn chat_part(part: &Value) -> Result<Value, PartError> {
    let Some(kind) = part["type"].as_str() else {
        return Err(("type", "a content part needs a string type"));
    };
    match kind {
        "input_text" | "output_text" | "text" => match part["text"].as_str() {
            Some(text) => Ok(json!({"type": "text", "text": text})),
            None => Err(("text", "a text part needs a string text")),
        },
        "input_image" => {
            let Some(url) = part["image_url"].as_str() else {
                return Err((
                    "image_url",
                    "an image part needs an image_url (file ids cannot be sent upstream)",
                ));
            };
            let mut image = Map::new();
            image.insert("url".to_owned(), json!(url));
            // Absent and "auto" say the same to a chat model; absent is the chat default.
            match &part["detail"] {
                Value::Null => {}
                Value::String(detail) if detail == "auto" => {}
                Value::String(detail) if detail == "low" || detail == "high" => {
                    image.insert("detail".to_owned(), json!(detail));
                }
                _ => return Err(("detail", "detail is low, high or auto")),
            }
            Ok(json!({"type": "image_url", "image_url": image}))
        }
        "input_file" => {
            let mut file = Map::new();
            copy_fields(part, &mut file);
            if file.is_empty() {
                return Err(("file_id", "a file part needs a file_id or file_data"));
            }
            Ok(json!({"type": "file", "file": file}))
        }
        "refusal" => match part["refusal"].as_str() {
            Some(refusal) => Ok(json!({"type": "refusal", "refusal": refusal})),
            None => Err(("refusal", "a refusal part needs a string refusal")),
        },
        "input_audio" if part["input_audio"].is_object() => Ok(part.clone()),
        _ => Err((
            "type",
            "this content part type has no chat-completions equivalent",
        )),
    }
}

/// Copies the file fields that are strings.
fn copy_fields(from: &Value, to: &mut Map<String, Value>) {
    for field in FILE_FIELDS {
        if let Some(value) = from[field].as_str() {
            to.insert(field.to_owned(), json!(value));
        }
    }
}
