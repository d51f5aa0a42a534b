//! Conversations made straight through the store, as the layer makes them.

use std::sync::Arc;

use serde_json::{Value, json};
use tower_conversations::store::{
    ConversationStore, HistoryMessage, ListQuery, NewMessage, StoreError, StoredMessage, TurnTarget,
};
use uuid::Uuid;

/// A user message, as the store takes it.
pub fn user(text: &str) -> NewMessage {
    NewMessage::new(json!({"role": "user", "content": text}))
}

/// An assistant message, as the store takes it.
pub fn assistant(text: &str) -> NewMessage {
    NewMessage::new(json!({"role": "assistant", "content": text}))
}

/// A turn: a user message and the assistant's answer.
pub fn turn(question: &str, answer: &str) -> Vec<NewMessage> {
    vec![user(question), assistant(answer)]
}

/// A listing page without a search.
pub fn page(limit: u32, offset: u64) -> ListQuery {
    ListQuery {
        limit,
        offset,
        search: None,
    }
}

/// The first 100 conversations whose messages hold these words.
pub fn search(words: &str) -> ListQuery {
    ListQuery {
        limit: 100,
        offset: 0,
        search: Some(words.to_owned()),
    }
}

/// A new conversation of `owner` holding `turns`, appended one after the other.
pub async fn conversation_with(
    store: &Arc<dyn ConversationStore>,
    owner: &str,
    turns: &[Vec<NewMessage>],
) -> Uuid {
    let id = Uuid::now_v7();
    for (index, messages) in turns.iter().enumerate() {
        store
            .append_turn(
                owner,
                id,
                if index == 0 {
                    TurnTarget::NewConversation
                } else {
                    TurnTarget::Existing
                },
                messages,
            )
            .await
            .unwrap();
    }
    id
}

/// Checks that the store answered `NotFound`, as it does for another owner's conversation.
pub fn assert_not_found<T: std::fmt::Debug>(result: Result<T, StoreError>, what: &str) {
    assert!(
        matches!(result, Err(StoreError::NotFound)),
        "{what}: expected NotFound, got {result:?}"
    );
}

/// The sequence numbers of stored messages, in their order.
pub fn sequence_numbers(messages: &[StoredMessage]) -> Vec<i64> {
    messages.iter().map(|m| m.sequence_number).collect()
}

/// A loaded history as values, to compare with what was sent.
pub fn values(history: Vec<HistoryMessage>) -> Vec<Value> {
    history.iter().map(HistoryMessage::to_value).collect()
}
