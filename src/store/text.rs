//! The plain text of messages: what titles are cut from and full-text search indexes.

use serde_json::Value;

/// The plain text of a message: `content` as a string, or the `text` of its parts,
/// joined with newlines, then a `refusal`. Tool-call arguments are not searched.
pub(crate) fn message_text(message: &Value) -> String {
    let refusal = message.get("refusal").and_then(Value::as_str);
    let mut pieces: Vec<&str> = Vec::new();
    match message.get("content") {
        // Nearly every message: its text as it is, with no list to join.
        Some(Value::String(text)) if refusal.is_none() => return text.clone(),
        Some(Value::String(text)) => pieces.push(text),
        Some(Value::Array(parts)) => pieces.extend(
            parts
                .iter()
                .filter_map(|part| part.get("text").and_then(Value::as_str)),
        ),
        _ => {}
    }
    pieces.extend(refusal);
    pieces.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn text_of_string_content_parts_and_refusal() {
        assert_eq!(
            message_text(&json!({"role": "user", "content": "hi"})),
            "hi"
        );
        let parts = json!({"role": "user", "content": [
            {"type": "text", "text": "a"},
            {"type": "image_url", "image_url": {"url": "x"}},
            {"type": "text", "text": "b"}
        ]});
        assert_eq!(message_text(&parts), "a\nb");
        let refusal = json!({"role": "assistant", "content": null, "refusal": "no"});
        assert_eq!(message_text(&refusal), "no");
        let both = json!({"role": "assistant", "content": "a", "refusal": "no"});
        assert_eq!(message_text(&both), "a\nno");
    }
}
