//! Checks on what a client heard and what the database holds.

use std::sync::Arc;

use bytes::Bytes;
use serde_json::{Value, json};
use tower_conversations::ConversationStore;
use tower_conversations::store::{StoreError, StoredMessage};
use uuid::Uuid;

use super::db::TestDb;
use super::echo::echo_of;
use super::server::Answer;
use super::upstream::{CREATED, MODEL, RESPONSE_ID, concat, done, sse_data};

/// The stored messages of a conversation in the shared space, with everything stored
/// beside them.
pub async fn stored(db: &TestDb, id: Uuid) -> Vec<StoredMessage> {
    db.store()
        .get("", id)
        .await
        .expect("the conversation is stored")
        .messages
}

/// The stored messages of `owner`'s conversation, as message objects in sequence order,
/// after checking that the sequence numbers are `0..n` and `message_count` is `n`.
pub async fn stored_messages(db: &TestDb, owner: &str, id: Uuid) -> Vec<Value> {
    let detail = db
        .store()
        .get(owner, id)
        .await
        .expect("the conversation is stored");
    assert_eq!(
        detail.conversation.message_count as usize,
        detail.messages.len()
    );
    let numbers: Vec<i64> = detail.messages.iter().map(|m| m.sequence_number).collect();
    assert_eq!(numbers, (0..numbers.len() as i64).collect::<Vec<_>>());
    detail.messages.into_iter().map(|m| m.message).collect()
}

/// Message rows in the whole database.
pub async fn message_count(db: &TestDb) -> i64 {
    db.scalar("SELECT COUNT(*) FROM messages").await
}

/// Conversation rows in the whole database.
pub async fn conversation_count(db: &TestDb) -> i64 {
    db.scalar("SELECT COUNT(*) FROM conversations").await
}

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

/// Checks that a streamed answer is the upstream's stream with the `storage_failed`
/// chunk just before `[DONE]`.
pub fn assert_ends_with_storage_failed(answer: &Answer, upstream: &[Bytes]) {
    let (last, content) = upstream.split_last().expect("frames");
    assert_eq!(last, &done(), "the upstream stream ends with [DONE]");
    assert!(
        answer.body.starts_with(&concat(content)),
        "every content chunk reaches the client as sent"
    );
    let events = answer.events();
    let upstream_events = sse_data(std::str::from_utf8(&concat(content)).unwrap());
    assert_eq!(events.len(), upstream_events.len() + 2, "{events:?}");
    assert_eq!(events[..upstream_events.len()], upstream_events[..]);
    let failed: Value = serde_json::from_str(&events[events.len() - 2]).unwrap();
    assert_eq!(
        failed,
        json!({"id": RESPONSE_ID, "object": "chat.completion.chunk", "created": CREATED,
            "model": MODEL, "choices": [], "metadata": {"storage_failed": true}})
    );
    assert_eq!(events.last().map(String::as_str), Some("[DONE]"));
}
