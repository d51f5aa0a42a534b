//! The read half of the two SQL stores, the same on both: one set of statements and
//! one way of turning rows into records, written once over sqlx's generic connection.
//!
//! Both schemas name their columns alike, both drivers decode them into the same Rust
//! types (JSON through [`Json`], timestamps through chrono), and sqlx binds `$N`
//! parameters by number on SQLite as on PostgreSQL. So a column added to a record is read
//! here once, and a change to a read query is made once. What differs (full-text search,
//! every write) stays in each backend's file.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use sqlx::database::HasStatementCache;
use sqlx::types::Json;
use sqlx::{ColumnIndex, Database, Decode, Encode, Executor, IntoArguments, Row, Type};
use uuid::Uuid;

use super::{
    Conversation, ConversationDetail, ConversationList, ConversationPage, CursorQuery, ListQuery,
    MessagePage, MessageQuery, Metadata, Order, StoreError, StoredMessage,
};

const LIST: &str = "
SELECT id, title, created_at, updated_at, message_count, metadata
FROM conversations
WHERE owner = $1
ORDER BY updated_at DESC, id DESC
LIMIT $2 OFFSET $3";

const COUNT: &str = "SELECT count(*) FROM conversations WHERE owner = $1";

/// Cursor pages by id; without a cursor, `$2` is the nil id (below every UUIDv7) or the
/// max id (above every one).
const BY_ID_ASC: &str = "
SELECT id, title, created_at, updated_at, message_count, metadata
FROM conversations
WHERE owner = $1 AND id > $2
ORDER BY id
LIMIT $3";

const BY_ID_DESC: &str = "
SELECT id, title, created_at, updated_at, message_count, metadata
FROM conversations
WHERE owner = $1 AND id < $2
ORDER BY id DESC
LIMIT $3";

/// A conversation and its messages: a row per message, or one without a message.
const DETAIL: &str = "
SELECT c.id, c.title, c.created_at, c.updated_at, c.message_count, c.metadata,
       m.sequence_number, m.message, m.reasoning, m.reasoning_events,
       m.metadata AS message_metadata, m.created_at AS message_created_at, m.call_numbers
FROM conversations c
LEFT JOIN messages m ON m.conversation_id = c.id
WHERE c.id = $1 AND c.owner = $2
ORDER BY m.sequence_number";

/// A page of messages, or one row without a message when the conversation is there but
/// the page is empty, no row when it does not exist for this owner.
///
/// The page is taken in a subquery of its own, ordered and limited there, so that it is
/// read from the primary key in order and stops after `$4` rows; ordering the rows of a
/// join instead reads and sorts every message of the conversation first (7.5 ms for a
/// page of a 10,000-message conversation, see `docs/performance.md`). The subquery names
/// the conversation by `$1`, not by the join, so it needs no `LATERAL` (which SQLite
/// lacks), and Citus routes the whole statement to the conversation's shard.
const PAGE_ASC: &str = "
SELECT m.sequence_number, m.message, m.reasoning, m.reasoning_events,
       m.message_metadata, m.message_created_at, m.call_numbers
FROM conversations c
LEFT JOIN (
    SELECT sequence_number, message, reasoning, reasoning_events,
           metadata AS message_metadata, created_at AS message_created_at, call_numbers
    FROM messages
    WHERE conversation_id = $1 AND sequence_number > $3
    ORDER BY sequence_number
    LIMIT $4) m ON 1 = 1
WHERE c.id = $1 AND c.owner = $2
ORDER BY m.sequence_number";

const PAGE_DESC: &str = "
SELECT m.sequence_number, m.message, m.reasoning, m.reasoning_events,
       m.message_metadata, m.message_created_at, m.call_numbers
FROM conversations c
LEFT JOIN (
    SELECT sequence_number, message, reasoning, reasoning_events,
           metadata AS message_metadata, created_at AS message_created_at, call_numbers
    FROM messages
    WHERE conversation_id = $1 AND sequence_number < $3
    ORDER BY sequence_number DESC
    LIMIT $4) m ON 1 = 1
WHERE c.id = $1 AND c.owner = $2
ORDER BY m.sequence_number DESC";

/// The messages an item delete may touch (see [`crate::items`]): from the nearest
/// message at or before `$2` that is not a `tool` message, through the `tool` messages
/// after it, up to the next message of another role. Read under the conversation's
/// write lock; every subquery names the conversation, so Citus keeps it on one shard.
const ITEM_SPAN: &str = "
SELECT m.sequence_number, m.message, m.reasoning, m.reasoning_events,
       m.metadata AS message_metadata, m.created_at AS message_created_at, m.call_numbers
FROM messages m
WHERE m.conversation_id = $1
  AND m.sequence_number >= coalesce((
      SELECT s.sequence_number FROM messages s
      WHERE s.conversation_id = $1 AND s.sequence_number <= $2 AND s.role <> 'tool'
      ORDER BY s.sequence_number DESC
      LIMIT 1), 0)
  AND m.sequence_number < coalesce((
      SELECT e.sequence_number FROM messages e
      WHERE e.conversation_id = $1 AND e.sequence_number > $2 AND e.role <> 'tool'
      ORDER BY e.sequence_number
      LIMIT 1), 9223372036854775807)
ORDER BY m.sequence_number";

/// A Rust type a column of `DB` decodes into.
pub(crate) trait Column<DB: Database>: for<'r> Decode<'r, DB> + Type<DB> {}

impl<DB: Database, T> Column<DB> for T where T: for<'r> Decode<'r, DB> + Type<DB> {}

/// A Rust type bound as a parameter of `DB`.
pub(crate) trait Param<DB: Database>: for<'q> Encode<'q, DB> + Type<DB> {}

impl<DB: Database, T> Param<DB> for T where T: for<'q> Encode<'q, DB> + Type<DB> {}

/// Runs the shared reads on a connection of either backend.
pub(crate) struct Reader<'c, DB: Database> {
    connection: &'c mut DB::Connection,
    /// Whether statements are prepared under a name and cached on the connection (not
    /// behind a transaction pooler: see the PostgreSQL store's `session`).
    named: bool,
}

impl<'c, DB: Database> Reader<'c, DB> {
    pub(crate) fn new(connection: &'c mut DB::Connection, named: bool) -> Self {
        Self { connection, named }
    }
}

impl<DB> Reader<'_, DB>
where
    DB: Database + HasStatementCache,
    for<'e> &'e mut DB::Connection: Executor<'e, Database = DB>,
    DB::Arguments: IntoArguments<DB>,
    for<'a> &'a str: ColumnIndex<DB::Row>,
    (i64,): for<'r> sqlx::FromRow<'r, DB::Row>,
    Uuid: Param<DB> + Column<DB>,
    for<'a> &'a str: Param<DB>,
    i64: Param<DB> + Column<DB>,
    Option<i64>: Param<DB>,
    Option<i64>: Column<DB>,
    Option<String>: Column<DB>,
    DateTime<Utc>: Column<DB>,
    Json<Metadata>: Column<DB>,
    Json<Value>: Column<DB>,
    String: Column<DB>,
    Option<Json<Vec<Value>>>: Column<DB>,
    Option<Json<Vec<u32>>>: Column<DB>,
    Json<Map<String, Value>>: Column<DB>,
{
    /// A page of the owner's conversations, newest first, with the total before paging.
    pub(crate) async fn list(
        &mut self,
        owner: &str,
        query: &ListQuery,
    ) -> Result<ConversationList, StoreError> {
        let rows = sqlx::query(LIST)
            .persistent(self.named)
            .bind(owner)
            .bind(i64::from(query.limit))
            .bind(i64::try_from(query.offset).unwrap_or(i64::MAX))
            .fetch_all(&mut *self.connection)
            .await?;
        let total: i64 = sqlx::query_scalar(COUNT)
            .persistent(self.named)
            .bind(owner)
            .fetch_one(&mut *self.connection)
            .await?;
        Self::listing(&rows, total)
    }

    /// A page of the conversations that `search` (the backend's own full-text statement,
    /// `$4` the search term) finds, with their total from `count` (`$2` the term).
    pub(crate) async fn search(
        &mut self,
        (search, count): (&'static str, &'static str),
        owner: &str,
        query: &ListQuery,
        term: &str,
    ) -> Result<ConversationList, StoreError> {
        let rows = sqlx::query(search)
            .persistent(self.named)
            .bind(owner)
            .bind(i64::from(query.limit))
            .bind(i64::try_from(query.offset).unwrap_or(i64::MAX))
            .bind(term)
            .fetch_all(&mut *self.connection)
            .await?;
        let total: i64 = sqlx::query_scalar(count)
            .persistent(self.named)
            .bind(owner)
            .bind(term)
            .fetch_one(&mut *self.connection)
            .await?;
        Self::listing(&rows, total)
    }

    /// A page of the owner's conversations by id, after the cursor (its `search` is the
    /// backend's to handle: see [`by_id_matching`](Self::by_id_matching)).
    pub(crate) async fn by_id(
        &mut self,
        owner: &str,
        query: &CursorQuery,
    ) -> Result<ConversationPage, StoreError> {
        let sql = match query.order {
            Order::Asc => BY_ID_ASC,
            Order::Desc => BY_ID_DESC,
        };
        // One more than asked tells whether another page follows.
        let rows = sqlx::query(sql)
            .persistent(self.named)
            .bind(owner)
            .bind(Self::cursor_start(query))
            .bind(i64::from(query.limit) + 1)
            .fetch_all(&mut *self.connection)
            .await?;
        Self::cursor_page(&rows, query.limit)
    }

    /// A page by id of the conversations that `statements` (the backend's own full-text
    /// statements for each order, `$1` owner, `$2` cursor, `$3` limit, `$4` the search
    /// term) find. `planned_per_term` sends the statement unnamed, so that the database
    /// plans it for the term at hand: which way is fast depends on how common the words
    /// are, and a plan cached for one term can be a hundred times slower for another.
    /// (SQLite searches its own way, in bounded stages: see its `search` module.)
    #[cfg(feature = "postgres")]
    pub(crate) async fn by_id_matching(
        &mut self,
        (asc, desc): (&'static str, &'static str),
        owner: &str,
        query: &CursorQuery,
        term: &str,
        planned_per_term: bool,
    ) -> Result<ConversationPage, StoreError> {
        let sql = match query.order {
            Order::Asc => asc,
            Order::Desc => desc,
        };
        let rows = sqlx::query(sql)
            .persistent(self.named && !planned_per_term)
            .bind(owner)
            .bind(Self::cursor_start(query))
            .bind(i64::from(query.limit) + 1)
            .bind(term)
            .fetch_all(&mut *self.connection)
            .await?;
        Self::cursor_page(&rows, query.limit)
    }

    /// Where a page by id starts: after the cursor, or without one below every UUIDv7
    /// (the nil id) going up, above every one (the max id) going down.
    pub(crate) fn cursor_start(query: &CursorQuery) -> Uuid {
        match (query.after, query.order) {
            (Some(after), _) => after,
            (None, Order::Asc) => Uuid::nil(),
            (None, Order::Desc) => Uuid::max(),
        }
    }

    /// A page by id from up to `limit + 1` rows: the extra one says more follow.
    pub(crate) fn cursor_page(
        rows: &[DB::Row],
        limit: u32,
    ) -> Result<ConversationPage, StoreError> {
        let mut conversations: Vec<Conversation> = rows
            .iter()
            .map(Self::conversation)
            .collect::<Result<_, _>>()?;
        let has_more = conversations.len() > limit as usize;
        conversations.truncate(limit as usize);
        Ok(ConversationPage {
            conversations,
            has_more,
        })
    }

    /// One conversation with all its messages.
    pub(crate) async fn detail(
        &mut self,
        owner: &str,
        id: Uuid,
    ) -> Result<ConversationDetail, StoreError> {
        let rows = sqlx::query(DETAIL)
            .persistent(self.named)
            .bind(id)
            .bind(owner)
            .fetch_all(&mut *self.connection)
            .await?;
        let first = rows.first().ok_or(StoreError::NotFound)?;
        Ok(ConversationDetail {
            conversation: Self::conversation(first)?,
            messages: Self::stored_messages(&rows)?,
        })
    }

    /// A page of messages by sequence-number cursor.
    pub(crate) async fn page(
        &mut self,
        owner: &str,
        id: Uuid,
        query: &MessageQuery,
    ) -> Result<MessagePage, StoreError> {
        let (sql, start) = match query.order {
            Order::Asc => (PAGE_ASC, query.after.unwrap_or(-1)),
            Order::Desc => (PAGE_DESC, query.after.unwrap_or(i64::MAX)),
        };
        // One more than asked tells whether another page follows.
        let rows = sqlx::query(sql)
            .persistent(self.named)
            .bind(id)
            .bind(owner)
            .bind(start)
            .bind(i64::from(query.limit) + 1)
            .fetch_all(&mut *self.connection)
            .await?;
        if rows.is_empty() {
            return Err(StoreError::NotFound);
        }
        let mut messages = Self::stored_messages(&rows)?;
        let has_more = messages.len() > query.limit as usize;
        messages.truncate(query.limit as usize);
        Ok(MessagePage { messages, has_more })
    }

    /// The messages an item delete of an item of message `sequence` may touch, in
    /// order; the caller holds the conversation's write lock.
    pub(crate) async fn item_span(
        &mut self,
        id: Uuid,
        sequence: i64,
    ) -> Result<Vec<StoredMessage>, StoreError> {
        let rows = sqlx::query(ITEM_SPAN)
            .persistent(self.named)
            .bind(id)
            .bind(sequence)
            .fetch_all(&mut *self.connection)
            .await?;
        Self::stored_messages(&rows)
    }

    /// A listing page from its rows and the total before paging.
    fn listing(rows: &[DB::Row], total: i64) -> Result<ConversationList, StoreError> {
        Ok(ConversationList {
            conversations: rows
                .iter()
                .map(Self::conversation)
                .collect::<Result<_, _>>()?,
            total: u64::try_from(total).unwrap_or(0),
        })
    }

    /// A summary from the columns `id, title, created_at, updated_at, message_count,
    /// metadata`.
    pub(crate) fn conversation(row: &DB::Row) -> Result<Conversation, StoreError> {
        Ok(Conversation {
            id: row.try_get("id")?,
            title: row.try_get("title")?,
            created_at: row.try_get("created_at")?,
            updated_at: row.try_get("updated_at")?,
            message_count: row.try_get("message_count")?,
            metadata: row.try_get::<Json<Metadata>, _>("metadata")?.0,
        })
    }

    /// The messages of page or detail rows, in row order (the one row an empty
    /// conversation yields has no message).
    fn stored_messages(rows: &[DB::Row]) -> Result<Vec<StoredMessage>, StoreError> {
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
                call_numbers: row
                    .try_get::<Option<Json<Vec<u32>>>, _>("call_numbers")?
                    .map(|Json(numbers)| numbers),
            });
        }
        Ok(messages)
    }
}
