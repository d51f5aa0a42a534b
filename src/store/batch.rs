//! Messages as one JSON array, so that one static statement inserts any number of them.
//!
//! Both backends bind the array as a single parameter and expand it in SQL
//! (`json_array_elements` on PostgreSQL, `json_each` on SQLite): no SQL is built per
//! call, and a turn costs one statement however many messages it has.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{NewMessage, StoreError, message_text};

/// One element of the array: the columns of a `messages` row, by name.
///
/// `message` is the message's own JSON text, carried as a string: the database stores
/// that text untouched, and never has to unescape what is inside it (PostgreSQL refuses
/// to unescape `\u0000` into text, which a client's message may well contain).
/// Absent `reasoning` and empty `events` are left out, so the SQL reads them as NULL.
#[derive(Debug, Serialize)]
struct MessageRow<'a> {
    role: &'a str,
    message: String,
    text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<&'a str>,
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    events: &'a [Value],
    metadata: &'a Map<String, Value>,
}

/// The messages as a JSON array of rows, in order (the SQL numbers them from their
/// position): the one parameter a batch insert binds.
pub(crate) fn message_rows_json(messages: &[NewMessage]) -> Result<String, StoreError> {
    let rows = messages
        .iter()
        .map(|m| {
            Ok(MessageRow {
                role: m.role(),
                message: serde_json::to_string(&m.message)?,
                // PostgreSQL text cannot hold NUL, and search has no use for it.
                text: message_text(&m.message).replace('\0', " "),
                reasoning: m.reasoning.as_deref(),
                events: &m.reasoning_events,
                metadata: &m.metadata,
            })
        })
        .collect::<Result<Vec<_>, serde_json::Error>>();
    // Values and string-keyed maps always serialize; this cannot fail in practice.
    rows.and_then(|rows| serde_json::to_string(&rows))
        .map_err(|e| StoreError::Query(Box::new(e)))
}

/// How many messages a batch holds, as the SQL counts.
pub(crate) fn message_count(messages: &[NewMessage]) -> i64 {
    // A slice never holds more than isize::MAX elements, so this cannot saturate.
    i64::try_from(messages.len()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rows_carry_the_message_text_and_leave_out_absent_reasoning_and_events() {
        let plain = NewMessage::new(json!({"role": "user", "content": "hi\u{0}"}));
        let mut thinking = NewMessage::new(json!({"role": "assistant", "content": "ok"}));
        thinking.reasoning = Some("because".into());
        thinking.reasoning_events = vec![json!({"type": "step"})];
        let rows: Value =
            serde_json::from_str(&message_rows_json(&[plain, thinking]).unwrap()).unwrap();
        assert_eq!(
            rows,
            json!([
                {"role": "user", "message": r#"{"content":"hi\u0000","role":"user"}"#,
                 "text": "hi ", "metadata": {}},
                {"role": "assistant", "message": r#"{"content":"ok","role":"assistant"}"#,
                 "text": "ok", "reasoning": "because", "events": [{"type": "step"}],
                 "metadata": {}}
            ])
        );
    }
}
