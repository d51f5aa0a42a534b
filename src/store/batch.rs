//! Messages as one JSON array, so that one static statement inserts any number of them.
//!
//! Both backends bind the array as a single parameter and expand it in SQL
//! (`jsonb_array_elements` on PostgreSQL, `json_each` on SQLite): no SQL is built per
//! call, and a turn costs one statement however many messages it has.

use serde::Serialize;
use serde_json::{Map, Value};

use super::{NewMessage, message_text};

/// One element of the array: the columns of a `messages` row, by name.
///
/// Absent `reasoning` and empty `events` are left out, so the SQL reads them as NULL.
#[derive(Debug, Serialize)]
pub(crate) struct MessageRow<'a> {
    role: &'a str,
    message: &'a Value,
    text: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<&'a str>,
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    events: &'a [Value],
    metadata: &'a Map<String, Value>,
}

/// The rows for `messages`, in order; the SQL numbers them from their position.
pub(crate) fn message_rows(messages: &[NewMessage]) -> Vec<MessageRow<'_>> {
    messages
        .iter()
        .map(|m| MessageRow {
            role: m.role(),
            message: &m.message,
            text: message_text(&m.message),
            reasoning: m.reasoning.as_deref(),
            events: &m.reasoning_events,
            metadata: &m.metadata,
        })
        .collect()
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
    fn rows_leave_out_absent_reasoning_and_events() {
        let plain = NewMessage::new(json!({"role": "user", "content": "hi"}));
        let mut thinking = NewMessage::new(json!({"role": "assistant", "content": "ok"}));
        thinking.reasoning = Some("because".into());
        thinking.reasoning_events = vec![json!({"type": "step"})];
        let rows = serde_json::to_value(message_rows(&[plain, thinking])).unwrap();
        assert_eq!(
            rows,
            json!([
                {"role": "user", "message": {"role": "user", "content": "hi"},
                 "text": "hi", "metadata": {}},
                {"role": "assistant", "message": {"role": "assistant", "content": "ok"},
                 "text": "ok", "reasoning": "because", "events": [{"type": "step"}],
                 "metadata": {}}
            ])
        );
    }
}
