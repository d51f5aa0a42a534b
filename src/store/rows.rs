//! Reading rows into records: the half of the two SQL stores that is the same on both,
//! written once over sqlx's generic [`Row`].
//!
//! Both schemas name their columns alike and both drivers decode them into the same Rust
//! types (JSON through [`Json`], timestamps through chrono), so a column added to a
//! record is read here, once.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::types::Json;
use sqlx::{ColumnIndex, Database, Decode, Row, Type};
use uuid::Uuid;

use super::{
    Conversation, ConversationDetail, ConversationList, MessagePage, Metadata, StoreError,
    StoredMessage,
};

/// A Rust type a column of `DB` decodes into.
pub(crate) trait Column<DB: Database>: for<'r> Decode<'r, DB> + Type<DB> {}

impl<DB: Database, T> Column<DB> for T where T: for<'r> Decode<'r, DB> + Type<DB> {}

/// The history column of a row: the message exactly as stored (`None` for the one row
/// an empty conversation yields).
pub(crate) fn history<R>(rows: &[R]) -> Result<Vec<Value>, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    Option<Json<Value>>: Column<R::Database>,
{
    let mut history = Vec::with_capacity(rows.len());
    for row in rows {
        if let Some(Json(message)) = row.try_get::<Option<Json<Value>>, _>("message")? {
            history.push(message);
        }
    }
    Ok(history)
}

/// A summary from the columns `id, title, created_at, updated_at, message_count, metadata`.
pub(crate) fn conversation<R>(row: &R) -> Result<Conversation, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    Uuid: Column<R::Database>,
    Option<String>: Column<R::Database>,
    DateTime<Utc>: Column<R::Database>,
    i64: Column<R::Database>,
    Json<Metadata>: Column<R::Database>,
{
    Ok(Conversation {
        id: row.try_get("id")?,
        title: row.try_get("title")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        message_count: row.try_get("message_count")?,
        metadata: row.try_get::<Json<Metadata>, _>("metadata")?.0,
    })
}

/// The messages of page or detail rows, in row order (the one row an empty conversation
/// yields has no message).
fn stored_messages<R>(rows: &[R]) -> Result<Vec<StoredMessage>, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    Option<i64>: Column<R::Database>,
    Option<String>: Column<R::Database>,
    Option<Json<Vec<Value>>>: Column<R::Database>,
    Json<Value>: Column<R::Database>,
    Json<Map<String, Value>>: Column<R::Database>,
    DateTime<Utc>: Column<R::Database>,
{
    let mut messages = Vec::with_capacity(rows.len());
    for row in rows {
        let Some(sequence_number) = row.try_get::<Option<i64>, _>("sequence_number")? else {
            continue;
        };
        let events: Option<Json<Vec<Value>>> = row.try_get("reasoning_events")?;
        messages.push(StoredMessage {
            sequence_number,
            message: row.try_get::<Json<Value>, _>("message")?.0,
            reasoning: row.try_get("reasoning")?,
            reasoning_events: events.map(|Json(events)| events).unwrap_or_default(),
            metadata: row
                .try_get::<Json<Map<String, Value>>, _>("message_metadata")?
                .0,
            created_at: row.try_get("message_created_at")?,
        });
    }
    Ok(messages)
}

/// A listing page from its rows and the total before paging.
pub(crate) fn list<R>(rows: &[R], total: i64) -> Result<ConversationList, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    Uuid: Column<R::Database>,
    Option<String>: Column<R::Database>,
    DateTime<Utc>: Column<R::Database>,
    i64: Column<R::Database>,
    Json<Metadata>: Column<R::Database>,
{
    Ok(ConversationList {
        conversations: rows.iter().map(conversation).collect::<Result<_, _>>()?,
        total: u64::try_from(total).unwrap_or(0),
    })
}

/// A conversation with its messages from detail rows: one per message, or one without a
/// message for an empty conversation. No row: no such conversation for this owner.
pub(crate) fn detail<R>(rows: &[R]) -> Result<ConversationDetail, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    Uuid: Column<R::Database>,
    Option<String>: Column<R::Database>,
    DateTime<Utc>: Column<R::Database>,
    i64: Column<R::Database>,
    Json<Metadata>: Column<R::Database>,
    Option<i64>: Column<R::Database>,
    Option<Json<Vec<Value>>>: Column<R::Database>,
    Json<Value>: Column<R::Database>,
    Json<Map<String, Value>>: Column<R::Database>,
{
    let first = rows.first().ok_or(StoreError::NotFound)?;
    Ok(ConversationDetail {
        conversation: conversation(first)?,
        messages: stored_messages(rows)?,
    })
}

/// A page of `limit` messages from page rows, which hold one more when another page
/// follows. No row: no such conversation for this owner.
pub(crate) fn page<R>(rows: &[R], limit: u32) -> Result<MessagePage, StoreError>
where
    R: Row,
    for<'a> &'a str: ColumnIndex<R>,
    Option<i64>: Column<R::Database>,
    Option<String>: Column<R::Database>,
    Option<Json<Vec<Value>>>: Column<R::Database>,
    Json<Value>: Column<R::Database>,
    Json<Map<String, Value>>: Column<R::Database>,
    DateTime<Utc>: Column<R::Database>,
{
    if rows.is_empty() {
        return Err(StoreError::NotFound);
    }
    let mut messages = stored_messages(rows)?;
    let has_more = messages.len() > limit as usize;
    messages.truncate(limit as usize);
    Ok(MessagePage { messages, has_more })
}
