//! The JSON text a message is stored as: the text `serde_json::to_string` writes, byte
//! for byte, with its strings escaped a word at a time.
//!
//! serde_json escapes a string a byte at a time, about seven instructions a byte, and a
//! reply's content is most of a turn's text while almost none of its bytes needs an
//! escape. Here each run of eight bytes without a quote, a backslash or a control
//! character is passed over in one step (see [`escape_stops`]) and copied with the rest
//! of its run. A property test holds the text to serde_json's.

use serde_json::Value;

use crate::swar::escape_stops;

/// `value` as JSON text, exactly as `serde_json::to_string` writes it.
pub(crate) fn json_text(value: &Value) -> String {
    let mut text = String::with_capacity(length_without_escapes(value));
    write_value(value, &mut text);
    text
}

/// The text [`json_text`] writes for `{"role": "assistant", "content": content}`, written
/// straight from `content`: the reply of nearly every turn.
pub(crate) fn assistant_content(content: &str) -> String {
    const BEFORE: &str = r#"{"content":"#;
    const AFTER: &str = r#","role":"assistant"}"#;
    let mut text = String::with_capacity(BEFORE.len() + content.len() + 2 + AFTER.len());
    text.push_str(BEFORE);
    write_string(content, &mut text);
    text.push_str(AFTER);
    text
}

/// About how long `value`'s text is: exact when no string needs an escape and no number
/// is longer than 20 characters, so that the text is written without growing its buffer.
fn length_without_escapes(value: &Value) -> usize {
    match value {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 20,
        Value::String(text) => text.len() + 2,
        Value::Array(items) => {
            2 + items
                .iter()
                .map(|item| length_without_escapes(item) + 1)
                .sum::<usize>()
        }
        Value::Object(members) => {
            2 + members
                .iter()
                .map(|(key, member)| key.len() + 4 + length_without_escapes(member))
                .sum::<usize>()
        }
    }
}

/// Writes `value` to `out` as [`json_text`] does.
pub(crate) fn write_value(value: &Value, out: &mut String) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        // serde_json writes a number as its `Display` does (itoa, ryu); they are rare in
        // a message, so the allocation is no concern.
        Value::Number(number) => out.push_str(&number.to_string()),
        Value::String(text) => write_string(text, out),
        Value::Array(items) => {
            out.push('[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_value(item, out);
            }
            out.push(']');
        }
        Value::Object(members) => {
            out.push('{');
            for (index, (key, member)) in members.iter().enumerate() {
                if index > 0 {
                    out.push(',');
                }
                write_string(key, out);
                out.push(':');
                write_value(member, out);
            }
            out.push('}');
        }
    }
}

/// `text` as a JSON string, with serde_json's escapes: the short ones for quote,
/// backslash, backspace, form feed, newline, carriage return and tab, `\u00XX` (lowercase
/// hex) for the other control characters, every other character as it is.
pub(crate) fn write_string(text: &str, out: &mut String) {
    let bytes = text.as_bytes();
    out.reserve(bytes.len() + 2);
    out.push('"');
    // `copied` is where the text not yet written starts; `at` stops only at ASCII bytes
    // before an escape is written, so both stay on character boundaries.
    let mut copied = 0;
    let mut at = 0;
    while at < bytes.len() {
        if let Some(word) = bytes[at..].first_chunk::<8>() {
            let stops = escape_stops(u64::from_le_bytes(*word));
            if stops == 0 {
                at += 8;
                continue;
            }
            at += (stops.trailing_zeros() / 8) as usize;
        }
        match escape(bytes[at]) {
            None => at += 1,
            Some(escaped) => {
                out.push_str(&text[copied..at]);
                out.push_str(escaped);
                at += 1;
                copied = at;
            }
        }
    }
    out.push_str(&text[copied..]);
    out.push('"');
}

/// The escape serde_json writes for `byte`, if it writes one.
fn escape(byte: u8) -> Option<&'static str> {
    const CONTROL: [&str; 32] = [
        "\\u0000", "\\u0001", "\\u0002", "\\u0003", "\\u0004", "\\u0005", "\\u0006", "\\u0007",
        "\\b", "\\t", "\\n", "\\u000b", "\\f", "\\r", "\\u000e", "\\u000f", "\\u0010", "\\u0011",
        "\\u0012", "\\u0013", "\\u0014", "\\u0015", "\\u0016", "\\u0017", "\\u0018", "\\u0019",
        "\\u001a", "\\u001b", "\\u001c", "\\u001d", "\\u001e", "\\u001f",
    ];
    match byte {
        b'"' => Some("\\\""),
        b'\\' => Some("\\\\"),
        _ => CONTROL.get(usize::from(byte)).copied(),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::{assistant_content, json_text};
    use crate::strategies::json_value;

    /// Text with every kind of byte serde_json escapes, and runs long enough for the
    /// word step.
    fn text() -> impl Strategy<Value = String> {
        prop::collection::vec(
            prop_oneof![
                Just("\"".to_owned()),
                Just("\\".to_owned()),
                (0u32..0x20).prop_map(|c| char::from_u32(c).map(String::from).unwrap_or_default()),
                "[a-z /]{1,20}",
                "\\PC{1,4}",
            ],
            0..12,
        )
        .prop_map(|parts| parts.concat())
    }

    fn value() -> impl Strategy<Value = Value> {
        json_value(text().boxed())
    }

    #[test]
    fn a_typical_message_is_written_as_serde_json_writes_it() {
        let message = json!({
            "role": "assistant",
            "content": "Line one,\nline \"two\"\twith a tab, a \\ and a \u{1} — and more text.",
            "refusal": null,
            "tool_calls": [{"id": "call_1", "arguments": "{\"x\":1.5e300}"}],
            "n": [0, -1, 18446744073709551615u64, 0.1],
        });
        assert_eq!(
            json_text(&message),
            serde_json::to_string(&message).expect("serializes")
        );
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]

        #[test]
        fn any_value_is_written_as_serde_json_writes_it(value in value()) {
            let expected = serde_json::to_string(&value).expect("a value serializes");
            prop_assert_eq!(json_text(&value), expected);
        }

        #[test]
        fn a_reply_of_content_alone_is_written_as_its_value_is(content in text()) {
            let message = json!({"role": "assistant", "content": content});
            prop_assert_eq!(assistant_content(&content), json_text(&message));
        }
    }
}
