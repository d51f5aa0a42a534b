//! A batch of messages bound as fixed parameters, so that one static statement inserts
//! any number of them: no SQL is built per call, and a turn costs one statement however
//! many messages it has.
//!
//! SQLite binds the columns of a question and its reply (nearly every turn) one by one,
//! and takes any other batch as one JSON array of rows, expanded by `json_each`: reading
//! six fields out of each element re-parsed it for each, which with the escaping of
//! the message inside it cost a SQLite turn about 70,000 instructions. PostgreSQL
//! takes one array per column, expanded by `unnest`: reading fields out of a `json` value
//! re-parses (and unescapes, character by character) the whole element for each field,
//! which profiles of a loaded server showed as a large share of a turn's CPU there.

use std::borrow::Cow;
#[cfg(feature = "sqlite")]
use std::sync::Arc;

#[cfg(feature = "sqlite")]
use serde::Serialize;
use serde_json::Value;
#[cfg(feature = "sqlite")]
use serde_json::value::RawValue;
#[cfg(feature = "postgres")]
use sqlx::Postgres;
#[cfg(feature = "postgres")]
use sqlx::postgres::{PgArguments, PgBindIterExt};
#[cfg(feature = "postgres")]
use sqlx::query::Query;
#[cfg(feature = "postgres")]
use sqlx::types::Json;

#[cfg(feature = "sqlite")]
use super::StoreError;
use super::json_text::json_text;
use super::{NewMessage, message_text};

/// The columns of a SQLite `messages` row, by name: one element of the array a batch
/// binds, or the values a pair binds one by one.
///
/// `message` is the message's own JSON text, carried as a string: the database stores
/// that text untouched. `text` is the plain text search indexes. Absent `reasoning` and
/// empty `events` are left out, so the SQL reads them as NULL.
#[cfg(feature = "sqlite")]
#[derive(Debug, Serialize)]
struct MessageRow<'a> {
    role: Cow<'a, str>,
    message: &'a str,
    text: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    reasoning: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "<[Value]>::is_empty")]
    events: Cow<'a, [Value]>,
    /// The metadata's JSON text, written into a row's JSON as the object it is.
    #[serde(serialize_with = "object_text")]
    metadata: Cow<'a, str>,
}

/// Writes `text`, a JSON object's text, as that object.
#[cfg(feature = "sqlite")]
#[expect(
    clippy::ptr_arg,
    reason = "serde's `serialize_with` hands over the field as it is"
)]
fn object_text<S: serde::Serializer>(
    text: &Cow<'_, str>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let object: &RawValue = serde_json::from_str(text).map_err(serde::ser::Error::custom)?;
    object.serialize(serializer)
}

/// The messages as a JSON array of rows, in order (the SQL numbers them from their
/// position): the one parameter a batch insert binds.
#[cfg(feature = "sqlite")]
pub(crate) fn message_rows_json(messages: &[NewMessage]) -> Result<String, StoreError> {
    let rows = message_rows(messages);
    serde_json::to_string(&rows).map_err(serialization)
}

/// How a SQLite turn binds its messages.
#[cfg(feature = "sqlite")]
#[derive(Debug)]
pub(crate) enum SqliteBatch {
    /// Two messages (a question and its reply), their columns bound one by one.
    Pair(Box<[MessageBinds; 2]>),
    /// Any other number, as [`message_rows_json`] makes them.
    Json(String),
}

/// The columns of one message as SQLite binds them: text, and JSON text for `events`
/// and `metadata`, as `json_each` would hand them over.
///
/// Texts copied out of the message are held as `Arc<str>`, which sqlx binds without a
/// copy; a `String` it wraps in an `Arc` of its own, one more allocation a text. Texts
/// made here (the search words, the events) stay `String`s: making an `Arc<str>` of one
/// copies it.
#[cfg(feature = "sqlite")]
#[derive(Debug)]
pub(crate) struct MessageBinds {
    pub(crate) role: Arc<str>,
    pub(crate) message: Arc<str>,
    pub(crate) text: Option<String>,
    pub(crate) reasoning: Option<Arc<str>>,
    pub(crate) events: Option<String>,
    pub(crate) metadata: Arc<str>,
}

#[cfg(feature = "sqlite")]
impl SqliteBatch {
    pub(crate) fn new(messages: &[NewMessage]) -> Result<Self, StoreError> {
        let [first, second] = messages else {
            return message_rows_json(messages).map(Self::Json);
        };
        let binds = |message| MessageBinds::new(message_row(message));
        Ok(Self::Pair(Box::new([
            binds(first).map_err(serialization)?,
            binds(second).map_err(serialization)?,
        ])))
    }
}

#[cfg(feature = "sqlite")]
impl MessageBinds {
    fn new(row: MessageRow<'_>) -> Result<Self, serde_json::Error> {
        Ok(Self {
            role: Arc::from(row.role.as_ref()),
            message: Arc::from(row.message),
            text: row.text,
            reasoning: row.reasoning.as_deref().map(Arc::from),
            events: if row.events.is_empty() {
                None
            } else {
                Some(serde_json::to_string(&row.events)?)
            },
            metadata: Arc::from(row.metadata.as_ref()),
        })
    }
}

/// The same rows as one array per column, each in message order: the parameters of a
/// PostgreSQL `unnest`. Each array is encoded straight from the messages (sqlx encodes an
/// iterator as an array), with no list of rows or columns made first.
#[cfg(feature = "postgres")]
pub(crate) struct MessageColumns<'a> {
    messages: &'a [NewMessage],
}

#[cfg(feature = "postgres")]
impl<'a> MessageColumns<'a> {
    /// How many column arrays there are: one a field.
    pub(crate) const ARRAYS: usize = 6;

    pub(crate) fn new(messages: &'a [NewMessage]) -> Self {
        Self { messages }
    }

    /// Binds the six arrays, in the order of the statements' `unnest`: role, message,
    /// search text (see [`search_text_beside`]), reasoning, reasoning events, and the
    /// metadata as its JSON text, which the statement casts to `jsonb` (an array of text
    /// costs sqlx less to bind than one of `Json` values, about 1,000 instructions a
    /// turn, and the server parses the JSON either way).
    pub(crate) fn bind(
        self,
        query: Query<'a, Postgres, PgArguments>,
    ) -> Query<'a, Postgres, PgArguments> {
        let messages = self.messages.iter();
        query
            .bind(
                messages
                    .clone()
                    .map(|m| text_without_nul(m.role()))
                    .bind_iter(),
            )
            .bind(messages.clone().map(NewMessage::json).bind_iter())
            .bind(messages.clone().map(search_text_beside).bind_iter())
            .bind(
                messages
                    .clone()
                    .map(|m| m.reasoning.as_deref().map(text_without_nul))
                    .bind_iter(),
            )
            .bind(
                messages
                    .clone()
                    .map(|m| {
                        let events = events_without_nul(&m.reasoning_events);
                        (!events.is_empty()).then_some(Json(events))
                    })
                    .bind_iter(),
            )
            .bind(
                messages
                    .map(|m| metadata_without_nul(m.metadata_json()))
                    .bind_iter(),
            )
    }

    /// About the bytes the columns take once bound: their text (a message's search words
    /// counted whether or not they go beside it), a length before each value and a
    /// header for each array (what reasoning events add is left in [`BOUND_SLACK`]).
    /// Enough room made up front saves sqlx growing its buffer.
    pub(crate) fn bound_size(&self) -> usize {
        let texts: usize = self
            .messages
            .iter()
            .map(|m| {
                m.role().len()
                    + m.json().len()
                    + m.search_words().len()
                    + m.reasoning.as_ref().map_or(0, String::len)
                    + m.metadata_json().len()
            })
            .sum();
        // Each array's header, and each of its values' 4-byte length.
        texts + Self::ARRAYS * (24 + 4 * self.messages.len()) + BOUND_SLACK
    }
}

/// What [`MessageColumns::bound_size`] adds for the values it does not measure: reasoning
/// events (mostly none), and the statement's few scalar parameters.
#[cfg(feature = "postgres")]
const BOUND_SLACK: usize = 256;

/// The text PostgreSQL must be sent beside a message for its search vector, or `None`
/// when the statement reads it from the message itself (`message ->> 'content'`): then a
/// turn's text crosses the wire once, which keeps the statement of a turn with a reply of
/// up to about 16 KiB inside one TLS record (see `docs/performance.md`). The text goes
/// beside the message when its words sit elsewhere (content parts, a refusal) or when the
/// message holds NUL anywhere, in a value or a field name: PostgreSQL refuses to unescape
/// it into text, and `->>` unescapes more of the message than the field it reads. JSON
/// text can only spell NUL as `\u0000`; a text that merely reads so (an escaped
/// backslash before `u0000`) sends its words beside too, which is as correct.
#[cfg(feature = "postgres")]
fn search_text_beside(message: &NewMessage) -> Option<String> {
    if message.words_are_content() && !message.json().contains("\\u0000") {
        return None;
    }
    Some(string_without_nul(message.search_words().to_owned()))
}

/// SQLite's search text: always sent, since its FTS5 table is fed the text of every
/// message.
#[cfg(feature = "sqlite")]
fn search_text_always(message: &NewMessage) -> Option<String> {
    Some(string_without_nul(message.search_words().to_owned()))
}

/// The words search indexes, for every message rewritten: the message's plain text, NUL
/// replaced (PostgreSQL text cannot hold it, and search has no use for it).
pub(crate) fn search_text(message: &Value) -> String {
    string_without_nul(message_text(message))
}

/// Each message as the columns of its row.
#[cfg(feature = "sqlite")]
fn message_rows(messages: &[NewMessage]) -> Vec<MessageRow<'_>> {
    messages.iter().map(message_row).collect()
}

/// One message as the columns of its row.
#[cfg(feature = "sqlite")]
fn message_row(m: &NewMessage) -> MessageRow<'_> {
    MessageRow {
        // The role column is text too; the message keeps its role as sent.
        role: text_without_nul(m.role()),
        message: m.json(),
        text: search_text_always(m),
        // What is kept beside the message goes into text and jsonb columns,
        // which cannot hold NUL either; it is never sent upstream, so a space
        // stands in for it. (The message itself is stored as its JSON text.)
        reasoning: m.reasoning.as_deref().map(text_without_nul),
        events: events_without_nul(&m.reasoning_events),
        metadata: metadata_without_nul(m.metadata_json()),
    }
}

/// Reasoning events with every NUL in their strings and keys replaced by a space,
/// borrowed as they are when they hold none.
fn events_without_nul(events: &[Value]) -> Cow<'_, [Value]> {
    if events.iter().any(has_nul) {
        Cow::Owned(events.iter().cloned().map(without_nul).collect())
    } else {
        Cow::Borrowed(events)
    }
}

/// A message's metadata text with every NUL in its strings and keys replaced by a space
/// (jsonb cannot hold it), borrowed as it is when it holds none. JSON text can only spell
/// NUL as `\u0000`; a text that merely reads so (an escaped backslash before `u0000`) is
/// read and written again, unchanged.
fn metadata_without_nul(text: &str) -> Cow<'_, str> {
    if !text.contains("\\u0000") {
        return Cow::Borrowed(text);
    }
    match serde_json::from_str(text) {
        Ok(value) => Cow::Owned(json_text(&without_nul(value))),
        // Never taken: the text is a JSON object by construction (see `NewMessage`).
        Err(_) => Cow::Borrowed(text),
    }
}

/// Values and string-keyed maps always serialize: this cannot happen in practice.
#[cfg(feature = "sqlite")]
fn serialization(error: serde_json::Error) -> StoreError {
    StoreError::Query(Box::new(error))
}

/// `text` with every NUL (U+0000) replaced by a space.
pub(crate) fn text_without_nul(text: &str) -> Cow<'_, str> {
    if text.contains('\0') {
        Cow::Owned(text.replace('\0', " "))
    } else {
        Cow::Borrowed(text)
    }
}

/// [`text_without_nul`] for an owned `text`, kept as it is when it has no NUL.
pub(crate) fn string_without_nul(text: String) -> String {
    if let Cow::Owned(replaced) = text_without_nul(&text) {
        return replaced;
    }
    text
}

/// Whether a string or key anywhere in `value` holds NUL.
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(text) => text.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(members) => members
            .iter()
            .any(|(key, value)| key.contains('\0') || has_nul(value)),
        _ => false,
    }
}

/// `value` with every NUL in its strings and keys replaced by a space.
fn without_nul(value: Value) -> Value {
    match value {
        Value::String(text) => Value::String(text.replace('\0', " ")),
        Value::Array(items) => Value::Array(items.into_iter().map(without_nul).collect()),
        Value::Object(members) => Value::Object(
            members
                .into_iter()
                .map(|(key, value)| (key.replace('\0', " "), without_nul(value)))
                .collect(),
        ),
        other => other,
    }
}

/// How many messages a batch holds, as the SQL counts.
pub(crate) fn message_count(messages: &[NewMessage]) -> i64 {
    // A slice never holds more than isize::MAX elements, so this cannot saturate.
    i64::try_from(messages.len()).unwrap_or(i64::MAX)
}

#[cfg(all(test, feature = "sqlite"))]
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

    #[test]
    fn nul_beside_the_message_becomes_a_space_and_the_message_keeps_it() {
        let mut message = NewMessage::new(json!({"role": "assistant", "content": "a\u{0}b"}));
        message.reasoning = Some("r\u{0}".into());
        message.reasoning_events = vec![json!({"t\u{0}": ["e\u{0}", 1]})];
        let metadata = json!({"model": "m\u{0}", "k\u{0}": {"usage": ["\u{0}"]}});
        message.set_metadata(metadata.as_object().cloned().unwrap());
        let rows: Value = serde_json::from_str(&message_rows_json(&[message]).unwrap()).unwrap();
        assert_eq!(
            rows,
            json!([{"role": "assistant", "message": r#"{"content":"a\u0000b","role":"assistant"}"#,
                    "text": "a b", "reasoning": "r ", "events": [{"t ": ["e ", 1]}],
                    "metadata": {"model": "m ", "k ": {"usage": [" "]}}}])
        );
    }

    #[test]
    fn metadata_that_only_reads_like_nul_is_kept_as_it_is() {
        let mut message = NewMessage::new(json!({"role": "assistant", "content": "a"}));
        let metadata = json!({"model": "\\u0000", "n": 1.50});
        message.set_metadata(metadata.as_object().cloned().unwrap());
        assert_eq!(message.metadata_json(), r#"{"model":"\\u0000","n":1.5}"#);
        assert_eq!(
            metadata_without_nul(message.metadata_json()),
            message.metadata_json()
        );
        let rows: Value = serde_json::from_str(&message_rows_json(&[message]).unwrap()).unwrap();
        assert_eq!(rows[0]["metadata"], metadata);
    }
}

#[cfg(all(test, feature = "postgres"))]
mod search_text_tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_plain_string_content_is_read_by_the_database_and_not_sent_twice() {
        let message = json!({"role": "assistant", "content": "hello", "refusal": null});
        assert_eq!(search_text_beside(&NewMessage::new(message)), None);
    }

    #[test]
    fn text_kept_outside_a_plain_content_string_is_sent_beside_the_message() {
        let parts = json!({"role": "user", "content": [{"type": "text", "text": "a"}]});
        assert_eq!(
            search_text_beside(&NewMessage::new(parts)).as_deref(),
            Some("a")
        );
        let refusal = json!({"role": "assistant", "content": null, "refusal": "no"});
        assert_eq!(
            search_text_beside(&NewMessage::new(refusal)).as_deref(),
            Some("no")
        );
        let both = json!({"role": "assistant", "content": "a", "refusal": "no"});
        assert_eq!(
            search_text_beside(&NewMessage::new(both)).as_deref(),
            Some("a\nno")
        );
        let tool_call = json!({"role": "assistant", "tool_calls": []});
        assert_eq!(
            search_text_beside(&NewMessage::new(tool_call)).as_deref(),
            Some("")
        );
    }

    #[test]
    fn content_holding_nul_is_sent_beside_with_a_space_for_it() {
        let message = json!({"role": "user", "content": "a\u{0}b"});
        assert_eq!(
            search_text_beside(&NewMessage::new(message)).as_deref(),
            Some("a b")
        );
    }

    #[test]
    fn a_message_holding_nul_anywhere_sends_its_words_beside() {
        let in_a_key = json!({"role": "user", "content": "hi", "x\u{0}": 1});
        assert_eq!(
            search_text_beside(&NewMessage::new(in_a_key)).as_deref(),
            Some("hi")
        );
        let as_sent = r#"{"role":"user","content":"hi","name":"a\u0000"}"#;
        let from_request = NewMessage::from_request(as_sent).expect("a message");
        assert_eq!(search_text_beside(&from_request).as_deref(), Some("hi"));
    }
}
