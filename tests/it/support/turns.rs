//! Checks on what a client heard and what the database holds, for tests that drive
//! many turns through the echo model.

use std::sync::Arc;

use serde_json::Value;
use tower_conversations::ConversationStore;
use tower_conversations::store::StoreError;
use uuid::Uuid;

use super::echo::echo_of;
use super::server::Answer;
use super::upstream::sse_data;

/// The data of each event of a streamed answer, read leniently: bytes that are not
/// UTF-8 (an upstream may send them) do not stop the reading.
fn events(answer: &Answer) -> Vec<String> {
    sse_data(&String::from_utf8_lossy(&answer.body))
}

/// Whether a streamed answer carried the `storage_failed` chunk.
pub fn storage_failed(answer: &Answer) -> bool {
    events(answer).iter().any(|data| {
        serde_json::from_str::<Value>(data)
            .is_ok_and(|chunk| chunk["metadata"]["storage_failed"] == Value::Bool(true))
    })
}

/// Whether a streamed answer ended with `data: [DONE]`.
pub fn ends_with_done(answer: &Answer) -> bool {
    events(answer).last().map(String::as_str) == Some("[DONE]")
}

/// The user texts of a conversation's turns, in order, after checking that it is well
/// formed: sequence numbers exactly `0..n`, `message_count == n`, and every turn a user
/// message immediately followed by the echo model's answer to it. `None` when the
/// conversation does not exist.
pub async fn echo_turns(store: &Arc<dyn ConversationStore>, id: Uuid) -> Option<Vec<String>> {
    let detail = match store.get("", id).await {
        Ok(detail) => detail,
        Err(StoreError::NotFound) => return None,
        Err(error) => panic!("reading {id}: {error}"),
    };
    let messages = detail.messages;
    let count = detail.conversation.message_count;
    assert_eq!(count as usize, messages.len(), "{id}: message_count");
    for (at, message) in messages.iter().enumerate() {
        assert_eq!(message.sequence_number, at as i64, "{id}: sequence numbers");
    }
    assert_eq!(messages.len() % 2, 0, "{id}: every turn has two messages");
    let mut texts = Vec::with_capacity(messages.len() / 2);
    for turn in messages.chunks(2) {
        let (asked, answered) = (&turn[0].message, &turn[1].message);
        assert_eq!(asked["role"], "user", "{id}: {asked}");
        let text = asked["content"].as_str().expect("a text").to_owned();
        assert_eq!(answered["role"], "assistant", "{id}: {answered}");
        assert_eq!(
            answered["content"],
            echo_of(&text),
            "{id}: the answer follows its question"
        );
        texts.push(text);
    }
    Some(texts)
}
