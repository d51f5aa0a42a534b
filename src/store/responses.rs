//! The records of stored responses (OpenAI's Responses API): where a response's turn
//! goes, and what is read back.
//!
//! A chain of responses is a conversation. A response's turn (its input messages, then
//! the assistant message) is appended like any turn, and a row beside it keeps the
//! response object and the sequence numbers its turn took. A response made from an older
//! response than the conversation's last forks the conversation at that point once, and
//! its chain goes on in the fork: each response costs one turn, never a copy of the
//! history, except when a chain branches.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::NewMessage;

/// Names a stored response: the conversation it is filed under (and found by, so that on
/// a distributed database every lookup goes to one shard) and its own id.
///
/// ```
/// use tower_conversations::store::ResponseKey;
/// let key = ResponseKey { conversation_id: uuid::Uuid::now_v7(), id: uuid::Uuid::now_v7() };
/// assert_ne!(key.conversation_id, key.id);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ResponseKey {
    /// The conversation the response is filed under.
    pub conversation_id: Uuid,
    /// The response's own part of its id.
    pub id: Uuid,
}

/// Where the turn of a new response goes, relative to the conversation of its
/// [`ResponseKey`].
///
/// ```
/// use tower_conversations::store::ResponsePlacement;
/// // A chain continued from the response whose turn ended at sequence number 5.
/// let placement = ResponsePlacement::Append { after: Some(5) };
/// assert_ne!(placement, ResponsePlacement::NewConversation);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResponsePlacement {
    /// The turn creates the key's conversation (a chain's first response).
    NewConversation,
    /// The turn is appended to the key's conversation, which must exist for the owner.
    ///
    /// With `after: Some(n)` the turn must follow sequence number `n` directly (a chain
    /// continued from its last response): when anything was appended after `n` meanwhile
    /// (another branch took that place first), the conversation is forked at `n` into a
    /// new one and the turn goes there, so that branches never see each other.
    Append {
        /// The sequence number the turn must follow, if any.
        after: Option<i64>,
    },
    /// The turn goes to a new conversation with the key's id, made as a fork of `source`
    /// at `at_sequence` (a branch from an older response).
    Fork {
        /// The conversation forked.
        source: Uuid,
        /// The last sequence number copied.
        at_sequence: i64,
    },
}

/// A response to store with its turn, in one transaction (see
/// [`ConversationStore::append_response`](super::ConversationStore::append_response)).
///
/// ```
/// use serde_json::json;
/// use tower_conversations::store::{NewMessage, NewResponse, ResponseKey, ResponsePlacement};
/// let key = ResponseKey { conversation_id: uuid::Uuid::now_v7(), id: uuid::Uuid::now_v7() };
/// let turn = [NewMessage::new(json!({"role": "user", "content": "Hi"}))];
/// let body = json!({"object": "response"});
/// let response = NewResponse { key, placement: ResponsePlacement::NewConversation, messages: &turn, body: &body };
/// assert_eq!(response.messages.len(), 1);
/// ```
#[derive(Clone, Copy, Debug)]
pub struct NewResponse<'a> {
    /// What names it.
    pub key: ResponseKey,
    /// Where its turn goes.
    pub placement: ResponsePlacement,
    /// The turn: input messages, then the assistant message.
    pub messages: &'a [NewMessage],
    /// The response object, as answered.
    pub body: &'a Value,
}

/// Where a stored response's turn landed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ResponsePosition {
    /// The conversation holding the turn.
    pub items_conversation_id: Uuid,
    /// The sequence number of the turn's first message.
    pub first_sequence: i64,
    /// The sequence number of its last message, the assistant's.
    pub last_sequence: i64,
}

impl ResponsePosition {
    /// The position of a turn of `count` messages starting at `first`.
    ///
    /// ```
    /// use tower_conversations::store::ResponsePosition;
    /// let position = ResponsePosition::new(uuid::Uuid::nil(), 4, 3);
    /// assert_eq!(position.last_sequence, 6);
    /// ```
    pub fn new(items_conversation_id: Uuid, first_sequence: i64, count: usize) -> Self {
        let count = i64::try_from(count).unwrap_or(i64::MAX);
        Self {
            items_conversation_id,
            first_sequence,
            last_sequence: first_sequence.saturating_add(count.saturating_sub(1)),
        }
    }
}

/// A stored response, read back.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StoredResponse {
    /// What names it.
    pub key: ResponseKey,
    /// Where its turn lies.
    pub position: ResponsePosition,
    /// The response object, as answered.
    pub body: Value,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
}

impl StoredResponse {
    /// A stored response from its parts, for stores other than the crate's own.
    ///
    /// ```
    /// use tower_conversations::store::{ResponseKey, ResponsePosition, StoredResponse};
    /// let key = ResponseKey { conversation_id: uuid::Uuid::nil(), id: uuid::Uuid::nil() };
    /// let position = ResponsePosition::new(key.conversation_id, 0, 2);
    /// let stored = StoredResponse::new(key, position, serde_json::json!({}), chrono::Utc::now());
    /// assert_eq!(stored.position.last_sequence, 1);
    /// ```
    pub fn new(
        key: ResponseKey,
        position: ResponsePosition,
        body: Value,
        created_at: DateTime<Utc>,
    ) -> Self {
        Self {
            key,
            position,
            body,
            created_at,
        }
    }
}
