//! Search on pages by id, on SQLite: the owner's conversations in id order that hold
//! every word, found in up to three stages chosen by how many messages hold the words.
//!
//! FTS5 answers two questions, "which messages hold the words" (about 0.3 µs a match)
//! and "does this message hold them" (a probe: about 100 µs, as each probe reopens the
//! words' lists). A page needs the first 21 conversations in id order, so its cost
//! depends on both the number of matches and how many of the owner's conversations must
//! be looked at before 21 are found. The count of matches (the index alone, capped at
//! [`MANY`], about 0.06 µs a match) picks the stages:
//!
//! - fewer than [`FEW`] matches: read them, then their conversations, sorted
//!   ([`SET_ASC`]); about 3 µs a match at most;
//! - up to [`MANY`]: walk the owner's conversations by id, each one's messages looked up
//!   in a set of the matches read once ([`PROBE_ASC`], ~1.3 µs a conversation), for at
//!   most [`PROBE_SPAN`] conversations; then, if the page is not full, the words are in
//!   fewer than about 1 % of the conversations walked, and the rest of the page is read
//!   matches first from where the walk stopped;
//! - from [`MANY`] on: first walk at most [`WALK_SPAN`] conversations probing the index
//!   itself ([`WALK_ASC`]): a word this common in most of the owner's conversations fills
//!   a page there, where reading every match would cost tens of milliseconds; then the
//!   two stages above, each from where the one before stopped.
//!
//! So no word, whatever its frequency, walks all of an owner's conversations, or probes
//! the index in more than [`WALK_SPAN`] of them (figures in
//! `docs/performance.md`: one owner with 100,000 conversations). What still costs in
//! proportion to its matches is a word in more than [`MANY`] messages that few of the
//! owner's conversations hold: about 0.3 µs a match.

use sqlx::{Sqlite, SqliteConnection};
use uuid::Uuid;

use super::super::read::Reader;
use super::super::{ConversationPage, CursorQuery, Order, StoreError};

/// Below this many matching messages, the matches are read first.
const FEW: i64 = 2_000;

/// From this many matching messages on, a walk probing the full-text index itself comes
/// first; below it, reading the matches into a set costs at most about 6 ms.
const MANY: i64 = 20_000;

/// How many of the owner's conversations a walk probing the index looks at (~100 µs
/// each when the words are not in their first message) before the next way takes over.
const WALK_SPAN: i64 = 64;

/// How many a walk probing the set of matches looks at (~1.3 µs each) before the rest of
/// the page is read match first.
const PROBE_SPAN: i64 = 2_000;

/// Counts the messages matching `?1`, up to `?2`: the full-text index alone, no lookup.
const MATCHES: &str = "
SELECT count(*) FROM (SELECT 1 FROM messages_search WHERE messages_search MATCH ?1 LIMIT ?2)";

// Every page statement takes `?1` owner, `?2` the id the page starts after, `?3` how
// many rows, `?4` the FTS5 expression, and `?5`, the last id it may look at (inclusive;
// [`Uuid::nil`] or [`Uuid::max`] for no bound; the statements reading matches first
// need none).

/// Matches first, then their conversations, in order.
const SET_ASC: &str = "
SELECT id, title, created_at, updated_at, message_count, metadata
FROM conversations
WHERE owner = ?1 AND id > ?2 AND id IN (
    SELECT m.conversation_id
    FROM messages_search JOIN messages m ON m.id = messages_search.rowid
    WHERE messages_search MATCH ?4)
ORDER BY id
LIMIT ?3";

const SET_DESC: &str = "
SELECT id, title, created_at, updated_at, message_count, metadata
FROM conversations
WHERE owner = ?1 AND id < ?2 AND id IN (
    SELECT m.conversation_id
    FROM messages_search JOIN messages m ON m.id = messages_search.rowid
    WHERE messages_search MATCH ?4)
ORDER BY id DESC
LIMIT ?3";

/// The owner's conversations in order, each one's messages looked up in the set of
/// matching row ids, which SQLite builds once per statement (the `IN` list does not
/// depend on the conversation).
const PROBE_ASC: &str = "
SELECT c.id, c.title, c.created_at, c.updated_at, c.message_count, c.metadata
FROM conversations c
WHERE c.owner = ?1 AND c.id > ?2 AND c.id <= ?5 AND EXISTS (
    SELECT 1 FROM messages m
    WHERE m.conversation_id = c.id AND m.id IN (
        SELECT rowid FROM messages_search WHERE messages_search MATCH ?4))
ORDER BY c.id
LIMIT ?3";

const PROBE_DESC: &str = "
SELECT c.id, c.title, c.created_at, c.updated_at, c.message_count, c.metadata
FROM conversations c
WHERE c.owner = ?1 AND c.id < ?2 AND c.id >= ?5 AND EXISTS (
    SELECT 1 FROM messages m
    WHERE m.conversation_id = c.id AND m.id IN (
        SELECT rowid FROM messages_search WHERE messages_search MATCH ?4))
ORDER BY c.id DESC
LIMIT ?3";

/// The owner's conversations in order, each message probed in the full-text index.
/// `CROSS JOIN` pins that order of loops (the conversation's few messages, then the
/// index by row id), so the planner cannot turn it into reading every match per
/// conversation.
const WALK_ASC: &str = "
SELECT c.id, c.title, c.created_at, c.updated_at, c.message_count, c.metadata
FROM conversations c
WHERE c.owner = ?1 AND c.id > ?2 AND c.id <= ?5 AND EXISTS (
    SELECT 1 FROM messages m CROSS JOIN messages_search s ON s.rowid = m.id
    WHERE m.conversation_id = c.id AND s.messages_search MATCH ?4)
ORDER BY c.id
LIMIT ?3";

const WALK_DESC: &str = "
SELECT c.id, c.title, c.created_at, c.updated_at, c.message_count, c.metadata
FROM conversations c
WHERE c.owner = ?1 AND c.id < ?2 AND c.id >= ?5 AND EXISTS (
    SELECT 1 FROM messages m CROSS JOIN messages_search s ON s.rowid = m.id
    WHERE m.conversation_id = c.id AND s.messages_search MATCH ?4)
ORDER BY c.id DESC
LIMIT ?3";

/// The last of the next `?3 + 1` of the owner's conversations after `?2`: where a walk
/// stops (none when fewer remain).
const SPAN_END_ASC: &str = "
SELECT id FROM conversations WHERE owner = ?1 AND id > ?2 ORDER BY id LIMIT 1 OFFSET ?3";

const SPAN_END_DESC: &str = "
SELECT id FROM conversations WHERE owner = ?1 AND id < ?2 ORDER BY id DESC LIMIT 1 OFFSET ?3";

/// One way of finding matching conversations, over at most `span` of the owner's
/// conversations (all of them for `None`).
struct Stage {
    asc: &'static str,
    desc: &'static str,
    span: Option<i64>,
}

const SET: Stage = Stage {
    asc: SET_ASC,
    desc: SET_DESC,
    span: None,
};

const PROBE: Stage = Stage {
    asc: PROBE_ASC,
    desc: PROBE_DESC,
    span: Some(PROBE_SPAN),
};

const WALK: Stage = Stage {
    asc: WALK_ASC,
    desc: WALK_DESC,
    span: Some(WALK_SPAN),
};

/// One page by id of `owner`'s conversations holding `expression` (an FTS5 expression
/// of quoted words).
pub(super) async fn page(
    connection: &mut SqliteConnection,
    owner: &str,
    query: &CursorQuery,
    expression: &str,
) -> Result<ConversationPage, StoreError> {
    let matches: i64 = sqlx::query_scalar(MATCHES)
        .bind(expression)
        .bind(MANY)
        .fetch_one(&mut *connection)
        .await?;
    let stages: &[Stage] = if matches < FEW {
        &[SET]
    } else if matches < MANY {
        &[PROBE, SET]
    } else {
        &[WALK, PROBE, SET]
    };
    let ascending = query.order == Order::Asc;
    let wanted = i64::from(query.limit) + 1;
    let mut start = Reader::<Sqlite>::cursor_start(query);
    let mut rows = Vec::new();
    for stage in stages {
        let missing = wanted - i64::try_from(rows.len()).unwrap_or(wanted);
        let end = match stage.span {
            Some(span) => span_end(connection, owner, start, span, ascending).await?,
            None => None,
        };
        let sql = if ascending { stage.asc } else { stage.desc };
        let mut statement = sqlx::query(sql)
            .bind(owner)
            .bind(start)
            .bind(missing)
            .bind(expression);
        if stage.span.is_some() {
            let unbounded = if ascending { Uuid::max() } else { Uuid::nil() };
            statement = statement.bind(end.unwrap_or(unbounded));
        }
        rows.extend(statement.fetch_all(&mut *connection).await?);
        match end {
            Some(end) if i64::try_from(rows.len()).unwrap_or(wanted) < wanted => start = end,
            // The page is full, or this stage saw every conversation left.
            _ => break,
        }
    }
    Reader::<Sqlite>::cursor_page(&rows, query.limit)
}

/// The id `span` conversations of the owner's after `start`, in the page's direction:
/// where a stage stops looking (`None` when fewer are left).
async fn span_end(
    connection: &mut SqliteConnection,
    owner: &str,
    start: Uuid,
    span: i64,
    ascending: bool,
) -> Result<Option<Uuid>, StoreError> {
    let sql = if ascending {
        SPAN_END_ASC
    } else {
        SPAN_END_DESC
    };
    Ok(sqlx::query_scalar(sql)
        .bind(owner)
        .bind(start)
        .bind(span - 1)
        .fetch_optional(connection)
        .await?)
}
