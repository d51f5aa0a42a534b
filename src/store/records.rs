//! The records a [`ConversationStore`](super::ConversationStore) reads and writes.
//!
//! What a store returns is `#[non_exhaustive]`, so a column added later is not a
//! breaking change. What a caller builds (a new conversation, a query, an update) keeps
//! public fields and a `Default`: build it as `ListQuery { limit: 10, ..Default::default() }`
//! and a field added later leaves your code compiling.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Arc;

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

/// A message to store: its JSON text, made once, and what is kept beside it.
///
/// The message itself is held as the JSON text it is stored as and sent upstream again,
/// never as a [`Value`]: a turn's messages reach the store as text (the request's as the
/// client wrote them, the reply's as the layer assembled it), and parsing them into a
/// tree only to write it out again cost every turn thousands of instructions. Make one
/// from a value with [`new`](Self::new); read it back with [`json`](Self::json) or
/// [`to_value`](Self::to_value).
///
/// ```
/// use serde_json::json;
/// use tower_conversations::store::NewMessage;
///
/// let mut answer = NewMessage::new(json!({"role": "assistant", "content": "Four."}));
/// answer.reasoning = Some("Two and two make four.".into());
/// answer.set_metadata(json!({"model": "gpt-4o"}).as_object().cloned().unwrap_or_default());
/// assert_eq!(answer.json(), r#"{"content":"Four.","role":"assistant"}"#);
/// assert_eq!(answer.role(), "assistant");
/// assert_eq!(answer.to_value()["content"], "Four.");
/// assert_eq!(answer.metadata_json(), r#"{"model":"gpt-4o"}"#);
/// ```
#[derive(Clone, Debug)]
pub struct NewMessage {
    /// One JSON object (`role`, `content`, `name`, `tool_calls`, `tool_call_id`, ...),
    /// without whitespace around it.
    json: String,
    /// Its `role`, or `""` when it has none (only a message made from a value can lack
    /// one); the usual roles are not copied.
    role: Cow<'static, str>,
    /// The words full-text search indexes, taken when the message was made.
    text: SearchText,
    /// Reasoning text the model produced with this message; never spliced back.
    pub reasoning: Option<String>,
    /// Structured reasoning events, in order; never spliced back.
    pub reasoning_events: Vec<Value>,
    /// Facts about the message (`model`, `finish_reason`, `usage`, `incomplete`, ...), as
    /// the text of the JSON object they are stored as: the layer writes a reply's facts
    /// straight into it (see [`metadata`](Self::metadata)).
    metadata: Cow<'static, str>,
}

/// The metadata of a message that has none.
const NO_METADATA: &str = "{}";

impl NewMessage {
    /// A message with no reasoning and no metadata, stored as the JSON text
    /// `serde_json::to_string` writes for `message` (members in key order).
    ///
    /// ```
    /// use tower_conversations::store::NewMessage;
    /// let m = NewMessage::new(serde_json::json!({"role": "user", "content": "hi"}));
    /// assert!(m.reasoning.is_none());
    /// assert_eq!(m.json(), r#"{"content":"hi","role":"user"}"#);
    /// ```
    pub fn new(message: Value) -> Self {
        let json = super::json_text::json_text(&message);
        Self::with_value(json, &message)
    }

    /// A message of a request, stored as the very text the client sent: `json` is one
    /// JSON object with a string `role`, as the request's scan or parse found it, read
    /// from its value (the scan has already read the role and content of a plain one:
    /// see [`plain`](Self::plain)). `None` when the text is no such object.
    pub(crate) fn from_request(json: &str) -> Option<Self> {
        let message: Value = serde_json::from_str(json).ok()?;
        message.get("role")?.as_str()?;
        Some(Self::from_request_value(json, &message))
    }

    /// A plain message of a request (a string `content` and no refusal), stored as the
    /// text `json` the client sent, whose role and content the request's scan found:
    /// `content` is where the string's text stands in `json`, a text without escapes, so
    /// its words as they are. `None` when `content` is not within `json`.
    pub(crate) fn plain(json: &str, role: &str, content: Range<usize>) -> Option<Self> {
        json.get(content.clone())?;
        Some(Self::made(
            json.to_owned(),
            role_text(role),
            SearchText::ContentAt(content),
        ))
    }

    /// A message of a request, stored as the text `json` the client sent, read from its
    /// value `message` (which the request's parse built).
    pub(crate) fn from_request_value(json: &str, message: &Value) -> Self {
        Self::with_value(json.to_owned(), message)
    }

    /// The assistant message of a reply that says only `content`: its text written
    /// straight from the content, exactly as [`new`](Self::new) writes
    /// `{"role": "assistant", "content": content}`.
    pub(crate) fn assistant(content: String) -> Self {
        let json = super::json_text::assistant_content(&content);
        Self::made(
            json,
            Cow::Borrowed("assistant"),
            SearchText::Content(content),
        )
    }

    /// `json`, the text of `message`, with what is read from the value.
    fn with_value(json: String, message: &Value) -> Self {
        let role = message.get("role").and_then(Value::as_str).unwrap_or("");
        Self::made(json, role_text(role), SearchText::of(message))
    }

    fn made(json: String, role: Cow<'static, str>, text: SearchText) -> Self {
        Self {
            json,
            role,
            text,
            reasoning: None,
            reasoning_events: Vec::new(),
            metadata: Cow::Borrowed(NO_METADATA),
        }
    }

    /// The message's `role`, or `""` when it has none.
    pub fn role(&self) -> &str {
        &self.role
    }

    /// The message's JSON text, exactly as it is stored.
    pub fn json(&self) -> &str {
        &self.json
    }

    /// The message parsed, for callers that need to look inside it.
    pub fn to_value(&self) -> Value {
        // The text is JSON by construction: written from a value, or checked as a request's.
        serde_json::from_str(&self.json).unwrap_or(Value::Null)
    }

    /// Facts about the message (`model`, `id`, `finish_reason`, `usage`,
    /// `system_fingerprint`, `incomplete`, `error` on a reply the layer stored), parsed
    /// from the text they are stored as; empty when there are none.
    ///
    /// ```
    /// use serde_json::json;
    /// use tower_conversations::store::NewMessage;
    ///
    /// let mut answer = NewMessage::new(json!({"role": "assistant", "content": "Four."}));
    /// assert!(answer.metadata().is_empty());
    /// let facts = json!({"finish_reason": "stop", "model": "gpt-4o"});
    /// answer.set_metadata(facts.as_object().cloned().unwrap_or_default());
    /// assert_eq!(answer.metadata()["finish_reason"], "stop");
    /// ```
    pub fn metadata(&self) -> Map<String, Value> {
        // The text is a JSON object by construction: written from a map, or by the layer.
        serde_json::from_str(&self.metadata).unwrap_or_default()
    }

    /// The metadata's JSON text, exactly as it is stored: `{}` when there is none.
    ///
    /// ```
    /// use tower_conversations::store::NewMessage;
    /// let m = NewMessage::new(serde_json::json!({"role": "user", "content": "hi"}));
    /// assert_eq!(m.metadata_json(), "{}");
    /// ```
    pub fn metadata_json(&self) -> &str {
        &self.metadata
    }

    /// Replaces the metadata with `metadata`, stored as the text `serde_json::to_string`
    /// writes for it (members in key order).
    ///
    /// ```
    /// use serde_json::{Map, json};
    /// use tower_conversations::store::NewMessage;
    ///
    /// let mut answer = NewMessage::new(json!({"role": "assistant", "content": "Four."}));
    /// let mut facts = Map::new();
    /// facts.insert("model".into(), json!("gpt-4o"));
    /// facts.insert("finish_reason".into(), json!("stop"));
    /// answer.set_metadata(facts);
    /// assert_eq!(answer.metadata_json(), r#"{"finish_reason":"stop","model":"gpt-4o"}"#);
    /// ```
    pub fn set_metadata(&mut self, metadata: Map<String, Value>) {
        self.metadata = if metadata.is_empty() {
            Cow::Borrowed(NO_METADATA)
        } else {
            Cow::Owned(super::json_text::json_text(&Value::Object(metadata)))
        };
    }

    /// Replaces the metadata with `json`, the text of a JSON object the layer wrote.
    pub(crate) fn set_metadata_json(&mut self, json: String) {
        self.metadata = Cow::Owned(json);
    }

    /// The words full-text search indexes.
    pub(crate) fn search_words(&self) -> &str {
        match &self.text {
            // Checked to lie within the text when the message was made.
            SearchText::ContentAt(at) => self.json.get(at.clone()).unwrap_or_default(),
            SearchText::Content(text) | SearchText::Joined(text) => text,
        }
    }

    /// Whether the words are the message's `content` string alone (and there is no
    /// refusal), which PostgreSQL can read out of the stored message itself.
    pub(crate) fn words_are_content(&self) -> bool {
        !matches!(self.text, SearchText::Joined(_))
    }
}

/// Two messages are equal when they are stored alike: the same text, role, search
/// words, and what is kept beside them, however their words were found.
impl PartialEq for NewMessage {
    fn eq(&self, other: &Self) -> bool {
        self.json == other.json
            && self.role == other.role
            && self.search_words() == other.search_words()
            && self.words_are_content() == other.words_are_content()
            && self.reasoning == other.reasoning
            && self.reasoning_events == other.reasoning_events
            && self.metadata == other.metadata
    }
}

/// `role` as a message keeps it: the usual roles without a copy.
fn role_text(role: &str) -> Cow<'static, str> {
    match role {
        "user" => Cow::Borrowed("user"),
        "assistant" => Cow::Borrowed("assistant"),
        "tool" => Cow::Borrowed("tool"),
        "system" => Cow::Borrowed("system"),
        "developer" => Cow::Borrowed("developer"),
        other => Cow::Owned(other.to_owned()),
    }
}

/// The words of a message that full-text search indexes (see
/// [`message_text`](super::message_text)), and whether they are its `content` alone.
#[derive(Clone, Debug, PartialEq, Eq)]
enum SearchText {
    /// `content` is a string without escapes and there is no refusal: the words are its
    /// text, which stands at this range of the message's JSON (a request's plain message,
    /// whose words are not copied).
    ContentAt(Range<usize>),
    /// `content` is a string and there is no refusal: the words are that string, which
    /// PostgreSQL can read out of the stored message itself.
    Content(String),
    /// Anything else: the texts of the content's parts and the refusal, joined.
    Joined(String),
}

impl SearchText {
    /// The search text of `message`.
    fn of(message: &Value) -> Self {
        let refusal = message
            .get("refusal")
            .is_some_and(|refusal| !refusal.is_null());
        match message.get("content") {
            Some(Value::String(content)) if !refusal => Self::Content(content.clone()),
            _ => Self::Joined(super::message_text(message)),
        }
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
    /// Borrowed for the usual roles: a history of 100 messages is 100 allocations fewer.
    role: Cow<'static, str>,
    /// One JSON object, without whitespace around it. Shared, so that a history the
    /// store keeps in process is handed out without copying each message again.
    json: Arc<str>,
}

impl HistoryMessage {
    /// A message with this role and JSON text; `None` when the text is not one JSON
    /// object (the store answers [`StoreError::Corrupt`](super::StoreError::Corrupt)).
    pub fn new(role: impl Into<String>, json: String) -> Option<Self> {
        let json = RawValue::from_string(json).ok()?;
        json.get().starts_with('{').then(|| Self {
            role: Cow::Owned(role.into()),
            json: json.get().into(),
        })
    }

    /// A message whose text the database parsed as JSON when it stored it (PostgreSQL's
    /// `json` type): text that begins and ends with a brace is then one object, and is
    /// taken without a second parse (about 1,100 instructions a message of a continued
    /// conversation's history); anything else goes through [`new`](Self::new).
    #[cfg(feature = "postgres")]
    pub(crate) fn from_checked_json(role: &str, json: &str) -> Option<Self> {
        if json.starts_with('{') && json.ends_with('}') {
            return Some(Self::written(role, json));
        }
        Self::new(role, json.to_owned())
    }

    /// A message whose text is known to be one JSON object without whitespace around
    /// it (a [`NewMessage`]'s, or a stored one checked), taken without a parse.
    #[cfg(any(feature = "postgres", feature = "sqlite"))]
    pub(crate) fn written(role: &str, json: &str) -> Self {
        Self {
            role: role_text(role),
            json: json.into(),
        }
    }

    /// A message read back from a column of plain text (SQLite's): checked by the
    /// request scan's reader, a word at a time, where it is sure the text is one object
    /// as serde reads one (710 instructions for the bench's typical message against
    /// serde's 1,087), by [`new`](Self::new) where it is not.
    #[cfg(feature = "sqlite")]
    pub(crate) fn from_text(role: &str, json: &str) -> Option<Self> {
        if crate::chat::is_one_object(json.as_bytes()) {
            return Some(Self::written(role, json));
        }
        Self::new(role, json.to_owned())
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
#[cfg(any(feature = "postgres", feature = "sqlite"))]
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::{NewMessage, SearchText};
    use crate::strategies::json_value;

    #[test]
    fn a_request_message_keeps_the_text_the_client_wrote() {
        let written = r#"{ "content" : "caf\u00e9", "role":"user", "n": 1.50 }"#;
        let message = NewMessage::from_request(written).expect("a message");
        assert_eq!(message.json(), written);
        assert_eq!(message.role(), "user");
        assert_eq!(message.search_words(), "café");
        assert!(message.words_are_content());
        assert_eq!(
            message.to_value(),
            json!({"role": "user", "content": "café", "n": 1.5})
        );
    }

    #[test]
    fn a_request_message_that_is_not_plain_is_read_from_its_value() {
        for (written, words) in [
            (
                r#"{"role":"user","content":[{"type":"text","text":"a"},{"type":"text","text":"b"}]}"#,
                ("a\nb", false),
            ),
            (
                r#"{"role":"assistant","content":"a","refusal":"no"}"#,
                ("a\nno", false),
            ),
            (
                r#"{"role":"assistant","content":null,"tool_calls":[]}"#,
                ("", false),
            ),
            (
                r#"{"role":"user","content":"first","content":"last"}"#,
                ("last", true),
            ),
        ] {
            let message = NewMessage::from_request(written).expect("a message");
            assert_eq!(message.json(), written);
            let read = (message.search_words(), message.words_are_content());
            assert_eq!(read, words, "{written}");
        }
    }

    #[test]
    fn a_plain_message_reads_as_its_value_does_without_copying_its_words() {
        let written = r#"{"role":"user","content":"Where is the café?"}"#;
        let at = written.find("Where").expect("the content")..written.len() - 2;
        let plain = NewMessage::plain(written, "user", at).expect("within the text");
        assert!(matches!(plain.text, SearchText::ContentAt(_)));
        assert_eq!(plain.search_words(), "Where is the café?");
        assert_eq!(Some(&plain), NewMessage::from_request(written).as_ref());
        assert_eq!(NewMessage::plain(written, "user", 40..60), None);
    }

    #[test]
    fn text_that_is_no_message_is_refused() {
        for text in [
            r#"["user","hi"]"#,
            r#"{"content":"hi"}"#,
            r#"{"role":1}"#,
            "{",
            "null",
        ] {
            assert_eq!(NewMessage::from_request(text), None, "{text}");
        }
    }

    /// A message of a request: any members, `role` a string, `content` of any kind.
    fn message() -> impl Strategy<Value = Value> {
        let content = prop_oneof![
            3 => any::<String>().prop_map(Value::String),
            1 => json_value(any::<String>().boxed()),
        ];
        let refusal = prop_oneof![
            Just(None),
            Just(Some(Value::Null)),
            any::<String>().prop_map(|r| Some(Value::String(r)))
        ];
        (any::<String>(), proptest::option::of(content), refusal).prop_map(
            |(role, content, refusal)| {
                let mut message = json!({"role": role});
                if let Some(content) = content {
                    message["content"] = content;
                }
                if let Some(refusal) = refusal {
                    message["refusal"] = refusal;
                }
                message
            },
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        #[test]
        fn a_request_message_reads_as_its_value_does(message in message(), pretty in any::<bool>()) {
            let written = if pretty {
                serde_json::to_string_pretty(&message).expect("serializes")
            } else {
                message.to_string()
            };
            let read = NewMessage::from_request(&written).expect("a message");
            prop_assert_eq!(&read, &NewMessage::from_request_value(&written, &message));
        }
    }
}
