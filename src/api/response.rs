//! The JSON the management API answers with, and the responses that carry it.

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::Full;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::store::{Conversation, StoredMessage};

/// OpenAI's conversation object `{"id", "object": "conversation", "created_at",
/// "metadata"}` with ours beside it: `title`, `updated_at`, `message_count`.
pub(crate) fn summary(conversation: &Conversation) -> Value {
    json!({
        "id": conversation.id.to_string(),
        "object": "conversation",
        "title": conversation.title,
        "created_at": timestamp(&conversation.created_at),
        "updated_at": timestamp(&conversation.updated_at),
        "message_count": conversation.message_count,
        "metadata": conversation.metadata,
    })
}

/// The stored message object with `sequence_number`, `created_at` and `metadata` added,
/// and `reasoning` / `reasoning_events` when there are any. The added fields win over
/// fields of the same name in the message, so a reader can always rely on them.
pub(crate) fn message(stored: &StoredMessage) -> Value {
    let mut fields = match &stored.message {
        Value::Object(fields) => fields.clone(),
        // Stores only keep objects; anything else is shown rather than dropped.
        other => [("message".to_owned(), other.clone())]
            .into_iter()
            .collect(),
    };
    fields.insert("sequence_number".into(), stored.sequence_number.into());
    fields.insert("created_at".into(), timestamp(&stored.created_at).into());
    fields.insert("metadata".into(), Value::Object(stored.metadata.clone()));
    if let Some(reasoning) = &stored.reasoning {
        fields.insert("reasoning".into(), reasoning.clone().into());
    }
    if !stored.reasoning_events.is_empty() {
        fields.insert(
            "reasoning_events".into(),
            Value::Array(stored.reasoning_events.clone()),
        );
    }
    Value::Object(fields)
}

/// The messages of a conversation or page, in the order given.
pub(crate) fn messages(stored: &[StoredMessage]) -> Value {
    Value::Array(stored.iter().map(message).collect())
}

/// OpenAI's deletion object, `{"id", "object": "conversation.deleted", "deleted": true}`.
pub(crate) fn deleted(id: Uuid) -> Value {
    json!({"id": id.to_string(), "object": "conversation.deleted", "deleted": true})
}

/// `{"id": ..., "deleted_messages": K}`.
pub(crate) fn truncated(id: Uuid, deleted_messages: u64) -> Value {
    json!({"id": id.to_string(), "deleted_messages": deleted_messages})
}

/// Unix seconds, as every OpenAI object (chat completions' `created` included) writes
/// its times.
fn timestamp(at: &DateTime<Utc>) -> i64 {
    at.timestamp()
}

/// A JSON response with `status`.
pub(crate) fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use serde_json::Map;

    fn at() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2025, 3, 1, 12, 30, 5).unwrap()
    }

    #[test]
    fn summary_is_a_conversation_object_with_unix_seconds_and_a_null_title_when_untitled() {
        let conversation = Conversation {
            id: Uuid::nil(),
            title: None,
            created_at: at(),
            updated_at: at(),
            message_count: 2,
            metadata: [("k".to_owned(), "v".to_owned())].into(),
        };
        assert_eq!(
            summary(&conversation),
            json!({
                "id": "00000000-0000-0000-0000-000000000000",
                "object": "conversation",
                "title": null,
                "created_at": 1740832205,
                "updated_at": 1740832205,
                "message_count": 2,
                "metadata": {"k": "v"}
            })
        );
    }

    #[test]
    fn message_adds_its_place_and_reasoning_only_when_present() {
        let mut stored = StoredMessage {
            sequence_number: 3,
            message: json!({"role": "assistant", "content": "Hi"}),
            reasoning: None,
            reasoning_events: Vec::new(),
            metadata: Map::new(),
            created_at: at(),
            call_numbers: None,
        };
        assert_eq!(
            message(&stored),
            json!({
                "role": "assistant", "content": "Hi", "sequence_number": 3,
                "created_at": 1740832205, "metadata": {}
            })
        );
        stored.reasoning = Some("because".into());
        stored.reasoning_events = vec![json!({"type": "step"})];
        let shown = message(&stored);
        assert_eq!(shown["reasoning"], "because");
        assert_eq!(shown["reasoning_events"], json!([{"type": "step"}]));
    }
}
