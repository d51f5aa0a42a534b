//! The records a [`ConversationStore`](super::ConversationStore) reads and writes.
//!
//! What a store returns is `#[non_exhaustive]`, so a column added later is not a
//! breaking change. What a caller builds (a new conversation, a query, an update) keeps
//! public fields and a `Default`: build it as `ListQuery { limit: 10, ..Default::default() }`
//! and a field added later leaves your code compiling.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use uuid::Uuid;

/// A conversation's metadata: string keys to string values (at most 16 pairs through
/// the management API).
pub type Metadata = BTreeMap<String, String>;

/// A conversation without its messages: what listings and the management API return.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct Conversation {
    /// The conversation id (UUIDv7, made by the crate).
    pub id: Uuid,
    /// The first user message's text trimmed to 80 characters, until renamed.
    pub title: Option<String>,
    /// When the conversation was created.
    pub created_at: DateTime<Utc>,
    /// When a turn was last appended or the conversation last changed.
    pub updated_at: DateTime<Utc>,
    /// How many messages it holds (not the next sequence number: numbers a truncation
    /// dropped are not handed out again).
    pub message_count: i64,
    /// Caller-defined string pairs.
    pub metadata: Metadata,
}

/// A message to store.
#[derive(Clone, Debug, PartialEq)]
pub struct NewMessage {
    /// The message object exactly as it must be sent upstream again
    /// (`role`, `content`, `name`, `tool_calls`, `tool_call_id`, ...).
    pub message: Value,
    /// Reasoning text the model produced with this message; never spliced back.
    pub reasoning: Option<String>,
    /// Structured reasoning events, in order; never spliced back.
    pub reasoning_events: Vec<Value>,
    /// Facts about the message (`model`, `finish_reason`, `usage`, `incomplete`, ...).
    pub metadata: Map<String, Value>,
}

impl NewMessage {
    /// A message with no reasoning and no metadata.
    ///
    /// ```
    /// use tower_conversations::store::NewMessage;
    /// let m = NewMessage::new(serde_json::json!({"role": "user", "content": "hi"}));
    /// assert!(m.reasoning.is_none());
    /// ```
    pub fn new(message: Value) -> Self {
        Self {
            message,
            reasoning: None,
            reasoning_events: Vec::new(),
            metadata: Map::new(),
        }
    }

    /// The message's `role`, or `""` when it has none.
    pub fn role(&self) -> &str {
        self.message
            .get("role")
            .and_then(Value::as_str)
            .unwrap_or("")
    }
}

/// A message of the history the layer splices in front of a request: its role, and its
/// JSON exactly as stored, never parsed into a [`Value`] and written out again.
///
/// ```
/// use tower_conversations::store::HistoryMessage;
/// let message = HistoryMessage::new("user", r#"{"role":"user","content":"hi"}"#.to_owned()).unwrap();
/// assert_eq!(message.role(), "user");
/// assert_eq!(message.json(), r#"{"role":"user","content":"hi"}"#);
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistoryMessage {
    role: String,
    /// One JSON object, without whitespace around it.
    json: Box<str>,
}

impl HistoryMessage {
    /// A message with this role and JSON text; `None` when the text is not one JSON
    /// object (the store answers [`StoreError::Corrupt`](super::StoreError::Corrupt)).
    pub fn new(role: impl Into<String>, json: String) -> Option<Self> {
        let json = RawValue::from_string(json).ok()?;
        json.get().starts_with('{').then(|| Self {
            role: role.into(),
            json: json.into(),
        })
    }

    /// A message whose text the database parsed as JSON when it stored it (PostgreSQL's
    /// `json` type): text that begins and ends with a brace is then one object, and is
    /// taken without a second parse (about 1,100 instructions a message of a continued
    /// conversation's history); anything else goes through [`new`](Self::new).
    #[cfg(feature = "postgres")]
    pub(crate) fn from_checked_json(role: String, json: String) -> Option<Self> {
        if json.starts_with('{') && json.ends_with('}') {
            return Some(Self {
                role,
                json: json.into_boxed_str(),
            });
        }
        Self::new(role, json)
    }

    /// A message read back from a column of plain text (SQLite's): checked by the
    /// request scan's reader, a word at a time, where it is sure the text is one object
    /// as serde reads one (710 instructions for the bench's typical message against
    /// serde's 1,087), by [`new`](Self::new) where it is not.
    #[cfg(feature = "sqlite")]
    pub(crate) fn from_text(role: &str, json: String) -> Option<Self> {
        if crate::chat::is_one_object(json.as_bytes()) {
            return Some(Self {
                role: role.to_owned(),
                json: json.into_boxed_str(),
            });
        }
        Self::new(role, json)
    }

    /// A message from its parsed form, for stores that keep messages as values; `None`
    /// when it is not a JSON object.
    ///
    /// ```
    /// use tower_conversations::store::HistoryMessage;
    /// let message = HistoryMessage::from_value(&serde_json::json!({"role": "tool"})).unwrap();
    /// assert_eq!(message.role(), "tool");
    /// ```
    pub fn from_value(message: &Value) -> Option<Self> {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        Self::new(role, message.to_string())
    }

    /// The message's `role`, as stored beside it.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The message's JSON text, exactly as stored.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The message parsed, for callers that need to look inside it.
    pub fn to_value(&self) -> Value {
        // The text was checked to be JSON when the message was made.
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }
}

/// A stored message whose text is not one JSON object (or, on SQLite, a history that
/// does not read as messages): the history is
/// [`StoreError::Corrupt`](super::StoreError::Corrupt), never spliced.
#[derive(Debug, thiserror::Error)]
#[error("a stored message is not a JSON object")]
pub(crate) struct NotAMessage;

/// A message as stored, with its place in the conversation.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct StoredMessage {
    /// Its position, from 0: unique and increasing within the conversation, never reused,
    /// with gaps where messages were truncated.
    pub sequence_number: i64,
    /// The message object exactly as stored.
    pub message: Value,
    /// Reasoning text stored beside it.
    pub reasoning: Option<String>,
    /// Reasoning events stored beside it (empty when none).
    pub reasoning_events: Vec<Value>,
    /// Facts about the message.
    pub metadata: Map<String, Value>,
    /// When it was stored.
    pub created_at: DateTime<Utc>,
    /// The numbers its tool calls have in item ids (`fc_<seq>_<n>`), one per call in
    /// `tool_calls` order, once a call of it was deleted; `None` while they are numbered
    /// by their place (see [`to_items_numbered`](crate::items::to_items_numbered)).
    pub call_numbers: Option<Vec<u32>>,
}

/// A conversation with all its messages in sequence order.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ConversationDetail {
    /// The summary.
    pub conversation: Conversation,
    /// The messages, in sequence order.
    pub messages: Vec<StoredMessage>,
}

/// What to create with [`ConversationStore::create`](super::ConversationStore::create).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct NewConversation {
    /// The title; when `None`, taken from the first user message.
    pub title: Option<String>,
    /// Initial metadata.
    pub metadata: Metadata,
    /// Seed messages, stored with sequence numbers `0..`.
    pub messages: Vec<NewMessage>,
}

/// Paging (and optional full-text search) for listings: by default the first 50.
#[derive(Clone, Debug, PartialEq)]
pub struct ListQuery {
    /// Page size.
    pub limit: u32,
    /// How many conversations to skip.
    pub offset: u64,
    /// Only conversations whose messages contain every word of this text.
    pub search: Option<String>,
}

impl Default for ListQuery {
    fn default() -> Self {
        Self {
            limit: 50,
            offset: 0,
            search: None,
        }
    }
}

/// One page of a listing.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ConversationList {
    /// The page, newest `updated_at` first.
    pub conversations: Vec<Conversation>,
    /// How many conversations match, across all pages.
    pub total: u64,
}

/// A page of conversations by id (UUIDv7, so in creation order): stable however
/// conversations are updated meanwhile, and as cheap at any depth as on the first page.
/// By default the newest 20.
///
/// ```
/// use tower_conversations::store::{CursorQuery, Order};
/// let query = CursorQuery { search: Some("invoice".into()), ..CursorQuery::default() };
/// assert_eq!((query.limit, query.order), (20, Order::Desc));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CursorQuery {
    /// Start after this conversation id (exclusive), in the page's direction.
    pub after: Option<Uuid>,
    /// Page size.
    pub limit: u32,
    /// `Desc` is newest first.
    pub order: Order,
    /// Only conversations whose messages hold every word of this text (full-text, as
    /// [`ListQuery::search`]); the page is still ordered by id.
    pub search: Option<String>,
}

impl Default for CursorQuery {
    fn default() -> Self {
        Self {
            after: None,
            limit: 20,
            order: Order::Desc,
            search: None,
        }
    }
}

/// One page of conversations by id.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct ConversationPage {
    /// The page, in the requested order.
    pub conversations: Vec<Conversation>,
    /// Whether more conversations follow in this direction.
    pub has_more: bool,
}

/// Direction of a message page.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Order {
    /// Oldest first.
    #[default]
    Asc,
    /// Newest first.
    Desc,
}

/// A cursor over a conversation's messages: by default the first 20, oldest first.
#[derive(Clone, Debug, PartialEq)]
pub struct MessageQuery {
    /// Start after this sequence number (exclusive), in the page's direction.
    pub after: Option<i64>,
    /// Page size.
    pub limit: u32,
    /// Direction.
    pub order: Order,
}

impl Default for MessageQuery {
    fn default() -> Self {
        Self {
            after: None,
            limit: 20,
            order: Order::Asc,
        }
    }
}

/// One page of messages.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct MessagePage {
    /// The messages, in the requested order.
    pub messages: Vec<StoredMessage>,
    /// Whether more messages follow in this direction.
    pub has_more: bool,
}

/// A change to a conversation; `None` fields stay as they are.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ConversationUpdate {
    /// The new title.
    pub title: Option<String>,
    /// The new metadata, replacing the old whole.
    pub metadata: Option<Metadata>,
}
