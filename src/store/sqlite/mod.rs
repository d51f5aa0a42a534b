//! [`ConversationStore`] for [`sqlx::SqlitePool`].
//!
//! Every write runs in a `BEGIN IMMEDIATE` transaction: it takes SQLite's single write
//! lock up front (waiting up to the pool's busy timeout), so concurrent writers queue
//! instead of failing halfway. Correctness never depends on `PRAGMA foreign_keys`, which
//! is a per-connection setting of the caller's pool: messages are deleted explicitly.
//!
//! Writers of one process queue for the database file in process before they ask SQLite
//! for its lock, and turns that wait together are written in one transaction: see
//! [`write_queue`].

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use sqlx::types::Json;
use sqlx::{Row, Sqlite, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::batch::{SqliteBatch, message_count, message_rows_json, search_text};
use super::fork::{FORK_SPAN, fork_copies};
use super::read::Reader;
use super::removal::{deleted_count, plan};
use super::retention::Sweep;
use super::{
    Conversation, ConversationDetail, ConversationList, ConversationPage, ConversationStore,
    ConversationUpdate, CursorQuery, ListQuery, MIGRATIONS_TABLE, MessagePage, MessageQuery,
    Metadata, NewConversation, NewMessage, NewResponse, ResponseKey, ResponsePosition, StoreError,
    StoredResponse, TurnTarget, title_from, title_of, turn_store_built_in_place,
};
use crate::items::ItemId;

/// `?1` id, `?2` owner, `?3` title, `?4` now, `?5` message count, `?6` metadata, `?7`
/// the next sequence number.
const CREATE_CONVERSATION: &str = "
INSERT INTO conversations (id, owner, title, created_at, updated_at, message_count,
                           next_sequence, metadata)
VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?7, ?6)
RETURNING id, title, created_at, updated_at, message_count, metadata";

/// The messages of a batch as rows named `batch` (`key` numbers them from 0), read from
/// `?BATCH`, a JSON array of rows made by [`message_rows_json`] (`->` keeps JSON, `->>`
/// gives text; the message is its own JSON text already). Spliced into the statements
/// below at compile time, as is [`message_pair`].
macro_rules! message_json {
    ($batch:literal) => {
        concat!(
            "(SELECT key, value ->> '$.role' AS role, value ->> '$.message' AS message, ",
            "value ->> '$.text' AS text, value ->> '$.reasoning' AS reasoning, ",
            "value -> '$.events' AS events, value -> '$.metadata' AS metadata ",
            "FROM json_each(",
            $batch,
            ")) AS batch"
        )
    };
}

/// One message's columns in a row of `VALUES`, in [`write_turn`](write_queue::write_turn)'s
/// order: role, message, text, reasoning, events, metadata.
macro_rules! message_columns {
    ($role:literal, $message:literal, $text:literal, $reasoning:literal, $events:literal,
     $metadata:literal) => {
        concat!(
            $role, ", ", $message, ", ", $text, ", ", $reasoning, ", ", $events, ", ", $metadata
        )
    };
}

/// The same rows for a question and its reply, from their columns bound one by one (see
/// [`SqliteBatch`](crate::store::batch::SqliteBatch)), each message's in
/// `message_columns!`'s order, the first's then the second's.
macro_rules! message_pair {
    ($r0:literal, $m0:literal, $t0:literal, $s0:literal, $e0:literal, $d0:literal,
     $r1:literal, $m1:literal, $t1:literal, $s1:literal, $e1:literal, $d1:literal) => {
        concat!(
            "(SELECT column1 AS key, column2 AS role, column3 AS message, column4 AS text, ",
            "column5 AS reasoning, column6 AS events, column7 AS metadata FROM (VALUES (0, ",
            message_columns!($r0, $m0, $t0, $s0, $e0, $d0),
            "), (1, ",
            message_columns!($r1, $m1, $t1, $s1, $e1, $d1),
            "))) AS batch"
        )
    };
}

/// A new conversation's row: `?1` id, `?2` owner, `?3` title, `?4` now, `?5` message
/// count, `?6` metadata. [`CREATE_WITH_MESSAGES`] adds the `RETURNING` clause its caller
/// reads; a turn needs none, and SQLite answers `RETURNING` from a temporary table it
/// opens and closes for the statement.
macro_rules! insert_conversation {
    () => {
        "INSERT INTO conversations (id, owner, title, created_at, updated_at, message_count,
                           next_sequence, metadata)
VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?5, ?6)"
    };
}

/// The first messages of conversation `?1`, numbered from 0 and created at `?4`, read
/// from `$rows` (one of the two macros above).
///
/// A new conversation's first two messages, its usual first turn, go in by
/// `insert_message_pair!`, a plain `INSERT … VALUES`, instead.
macro_rules! insert_messages {
    ($($rows:tt)+) => {
        concat!(
            "INSERT INTO messages (conversation_id, sequence_number, created_at, role, message,
                      content_text, reasoning, reasoning_events, metadata)
SELECT ?1, batch.key, ?4, batch.role, batch.message, batch.text, batch.reasoning,
       batch.events, batch.metadata FROM ",
            $($rows)+
        )
    };
}

/// A question and its reply in conversation `?1`, created at `?4`, numbered 0 and 1, from
/// their columns in `message_pair!`'s order: one plain `INSERT … VALUES` of two rows.
macro_rules! insert_message_pair {
    ($r0:literal, $m0:literal, $t0:literal, $s0:literal, $e0:literal, $d0:literal,
     $r1:literal, $m1:literal, $t1:literal, $s1:literal, $e1:literal, $d1:literal) => {
        concat!(
            "INSERT INTO messages (conversation_id, sequence_number, created_at, role, message,
                      content_text, reasoning, reasoning_events, metadata)
VALUES (?1, 0, ?4, ",
            message_columns!($r0, $m0, $t0, $s0, $e0, $d0),
            "), (?1, 1, ?4, ",
            message_columns!($r1, $m1, $t1, $s1, $e1, $d1),
            ")"
        )
    };
}

// After the SQL macros above, which the turn statements there are built from too.
mod commit_chain;
mod history;
mod responses;
mod retention;
mod search;
mod search_index;
#[cfg(test)]
mod test_file;
mod wal_index;
mod write_queue;

use history::history;
use write_queue::{TurnRows, lock_write, timestamp};

/// Creates a conversation with its first messages, as one call like a turn (see [`write_queue`]).
///
/// `?1` id, `?2` owner, `?3` title, `?4` now, `?5` message count, `?6` metadata, `?7`
/// the batch.
const CREATE_WITH_MESSAGES: &str = concat!(
    insert_conversation!(),
    "\nRETURNING id, title, created_at, updated_at, message_count, metadata;\n",
    insert_messages!(message_json!("?7"))
);

/// `?4` is an FTS5 query made by [`match_expression`]: quoted words, implicitly ANDed.
const SEARCH: &str = "
SELECT id, title, created_at, updated_at, message_count, metadata
FROM conversations
WHERE owner = ?1 AND id IN (
    SELECT m.conversation_id
    FROM messages_search JOIN messages m ON m.id = messages_search.rowid
    WHERE messages_search MATCH ?4)
ORDER BY updated_at DESC, id DESC
LIMIT ?2 OFFSET ?3";

const SEARCH_COUNT: &str = "
SELECT count(*)
FROM conversations
WHERE owner = ?1 AND id IN (
    SELECT m.conversation_id
    FROM messages_search JOIN messages m ON m.id = messages_search.rowid
    WHERE messages_search MATCH ?2)";

const UPDATE: &str = "
UPDATE conversations
SET title = coalesce(?3, title), metadata = coalesce(?4, metadata), updated_at = ?5
WHERE id = ?1 AND owner = ?2
RETURNING id, title, created_at, updated_at, message_count, metadata";

const DELETE_CONVERSATION: &str = "DELETE FROM conversations WHERE id = ?1 AND owner = ?2";

const DELETE_MESSAGES: &str = "DELETE FROM messages WHERE conversation_id = ?1";

const FORK_SOURCE: &str = "
SELECT title, metadata FROM conversations WHERE id = ?1 AND owner = ?2";

const FORK_MESSAGES: &str = "
INSERT INTO messages (conversation_id, sequence_number, role, message, content_text,
                      reasoning, reasoning_events, metadata, created_at, call_numbers)
SELECT ?2, sequence_number, role, message, content_text,
       reasoning, reasoning_events, metadata, created_at, call_numbers
FROM messages
WHERE conversation_id = ?1 AND sequence_number <= ?3";

const CONVERSATION_EXISTS: &str = "SELECT id FROM conversations WHERE id = ?1 AND owner = ?2";

const TRUNCATE_MESSAGES: &str =
    "DELETE FROM messages WHERE conversation_id = ?1 AND sequence_number >= ?2";

/// Lowers the row count by the `?3` messages deleted, run only when there were some, so
/// `updated_at` moves only when messages go. `next_sequence` stays where it is;
/// `revision` moves on.
const TRUNCATE_CONVERSATION: &str = "
UPDATE conversations
SET message_count = message_count - ?3, updated_at = ?4, revision = revision + 1
WHERE id = ?1 AND owner = ?2";

/// The messages an item delete takes: `?2` a JSON array of their sequence numbers.
const DELETE_ITEM_MESSAGES: &str = "
DELETE FROM messages
WHERE conversation_id = ?1 AND sequence_number IN (SELECT value FROM json_each(?2))";

/// A message an item delete rewrites: `?3` its JSON text, `?4` the numbers of its calls
/// (NULL: their places), `?5` its text for search (the full-text index follows by trigger).
const REWRITE_ITEM_MESSAGE: &str = "
UPDATE messages SET message = ?3, call_numbers = ?4, content_text = ?5
WHERE conversation_id = ?1 AND sequence_number = ?2";

/// After an item delete: the row count lowered by the `?3` messages deleted (perhaps
/// none), `updated_at` moved to `?4` and `revision` on; `next_sequence` stays.
const ITEM_DELETED: &str = "
UPDATE conversations
SET message_count = message_count - ?3, updated_at = ?4, revision = revision + 1
WHERE id = ?1 AND owner = ?2
RETURNING id, title, created_at, updated_at, message_count, metadata";

turn_store_built_in_place!(SqlitePool, history, append, history::cache);

/// See [`TurnStore::append_turn`].
async fn append(
    pool: &SqlitePool,
    owner: &str,
    id: Uuid,
    target: TurnTarget,
    messages: &[NewMessage],
) -> Result<i64, StoreError> {
    let create = target == TurnTarget::NewConversation;
    let count = message_count(messages);
    let cache = history::cache(pool);
    let turn = TurnRows {
        owner: owner.to_owned(),
        id,
        title: if create { title_from(messages) } else { None },
        create,
        count,
        rows: SqliteBatch::new(messages)?,
    };
    let written = write_queue::append(pool, turn, cache.clone()).await?;
    let after = written.revision;
    // A new conversation is not kept in the history cache: the first continued turn
    // reads the first turn's messages and keeps them, which costs a new turn nothing.
    if !create {
        cache.appended(id, after.around_turn(count), messages);
        if let Some(link) = written.link {
            cache.link(id, after, link);
        }
    }
    Ok(after.first_of_turn(count))
}

#[async_trait]
impl ConversationStore for SqlitePool {
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut migrator = sqlx::migrate!("migrations/sqlite");
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        migrator.run(self).await?;
        Ok(())
    }

    async fn create(
        &self,
        owner: &str,
        conversation: &NewConversation,
    ) -> Result<Conversation, StoreError> {
        let title = title_of(conversation);
        let mut writing = lock_write(self).await;
        let mut tx = writing.begin().await?;
        let created = insert_conversation(
            &mut tx,
            owner,
            Uuid::now_v7(),
            title.as_deref(),
            &conversation.metadata,
            &timestamp(),
            &conversation.messages,
        )
        .await?;
        tx.commit().await?;
        Ok(created)
    }

    async fn list(&self, owner: &str, query: &ListQuery) -> Result<ConversationList, StoreError> {
        let Some(text) = &query.search else {
            let mut connection = self.acquire().await?;
            return Reader::<Sqlite>::new(&mut connection, true)
                .list(owner, query)
                .await;
        };
        // Nothing to look for finds nothing, as on PostgreSQL.
        let Some(expression) = match_expression(text) else {
            return Ok(ConversationList {
                conversations: Vec::new(),
                total: 0,
            });
        };
        // Before a connection is held: indexing may need one of the pool's.
        search_index::catch_up(self).await?;
        let mut connection = self.acquire().await?;
        let statements = (SEARCH, SEARCH_COUNT);
        Reader::<Sqlite>::new(&mut connection, true)
            .search(statements, owner, query, &expression)
            .await
    }

    async fn list_by_id(
        &self,
        owner: &str,
        query: &CursorQuery,
    ) -> Result<ConversationPage, StoreError> {
        let Some(text) = &query.search else {
            let mut connection = self.acquire().await?;
            return Reader::<Sqlite>::new(&mut connection, true)
                .by_id(owner, query)
                .await;
        };
        // Nothing to look for finds nothing, as on PostgreSQL.
        let Some(expression) = match_expression(text) else {
            return Ok(ConversationPage::default());
        };
        // Before a connection is held: indexing may need one of the pool's.
        search_index::catch_up(self).await?;
        let mut connection = self.acquire().await?;
        search::page(&mut connection, owner, query, &expression).await
    }

    async fn get(&self, owner: &str, id: Uuid) -> Result<ConversationDetail, StoreError> {
        let mut connection = self.acquire().await?;
        Reader::<Sqlite>::new(&mut connection, true)
            .detail(owner, id)
            .await
    }

    async fn messages(
        &self,
        owner: &str,
        id: Uuid,
        query: &MessageQuery,
    ) -> Result<MessagePage, StoreError> {
        let mut connection = self.acquire().await?;
        Reader::<Sqlite>::new(&mut connection, true)
            .page(owner, id, query)
            .await
    }

    async fn update(
        &self,
        owner: &str,
        id: Uuid,
        update: &ConversationUpdate,
    ) -> Result<Conversation, StoreError> {
        let row = sqlx::query(UPDATE)
            .bind(id)
            .bind(owner)
            .bind(update.title.as_deref())
            .bind(update.metadata.as_ref().map(Json))
            .bind(timestamp())
            .fetch_optional(self)
            .await?
            .ok_or(StoreError::NotFound)?;
        Reader::<Sqlite>::conversation(&row)
    }

    async fn delete(&self, owner: &str, id: Uuid) -> Result<(), StoreError> {
        let mut writing = lock_write(self).await;
        let mut tx = writing.begin().await?;
        let deleted = sqlx::query(DELETE_CONVERSATION)
            .bind(id)
            .bind(owner)
            .execute(&mut *tx)
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        sqlx::query(DELETE_MESSAGES)
            .bind(id)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn fork(
        &self,
        owner: &str,
        id: Uuid,
        at_sequence: i64,
    ) -> Result<Conversation, StoreError> {
        let mut writing = lock_write(self).await;
        let mut tx = writing.begin().await?;
        let row = fork_into(&mut tx, owner, id, at_sequence, Uuid::now_v7()).await?;
        tx.commit().await?;
        Reader::<Sqlite>::conversation(&row)
    }

    async fn truncate(&self, owner: &str, id: Uuid, from_sequence: i64) -> Result<u64, StoreError> {
        if from_sequence < 0 {
            return Err(StoreError::OutOfRange);
        }
        let mut writing = lock_write(self).await;
        let mut tx = writing.begin().await?;
        sqlx::query(CONVERSATION_EXISTS)
            .bind(id)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let deleted = sqlx::query(TRUNCATE_MESSAGES)
            .bind(id)
            .bind(from_sequence)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if deleted > 0 {
            sqlx::query(TRUNCATE_CONVERSATION)
                .bind(id)
                .bind(owner)
                .bind(i64::try_from(deleted).map_err(|e| StoreError::Corrupt(Box::new(e)))?)
                .bind(timestamp())
                .execute(&mut *tx)
                .await?;
        }
        tx.commit().await?;
        Ok(deleted)
    }

    async fn delete_item(
        &self,
        owner: &str,
        id: Uuid,
        item: ItemId,
    ) -> Result<Conversation, StoreError> {
        let mut writing = lock_write(self).await;
        let mut tx = writing.begin().await?;
        sqlx::query(CONVERSATION_EXISTS)
            .bind(id)
            .bind(owner)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or(StoreError::NotFound)?;
        let span = Reader::<Sqlite>::new(&mut tx, true)
            .item_span(id, item.sequence_number())
            .await?;
        let removal = plan(item, &span)?;
        if !removal.deleted.is_empty() {
            sqlx::query(DELETE_ITEM_MESSAGES)
                .bind(id)
                .bind(Json(&removal.deleted))
                .execute(&mut *tx)
                .await?;
        }
        if let Some(rewritten) = &removal.rewritten {
            sqlx::query(REWRITE_ITEM_MESSAGE)
                .bind(id)
                .bind(rewritten.sequence_number)
                .bind(rewritten.message.to_string())
                .bind(rewritten.call_numbers.as_ref().map(Json))
                .bind(search_text(&rewritten.message))
                .execute(&mut *tx)
                .await?;
        }
        let row = sqlx::query(ITEM_DELETED)
            .bind(id)
            .bind(owner)
            .bind(deleted_count(&removal)?)
            .bind(timestamp())
            .fetch_one(&mut *tx)
            .await?;
        tx.commit().await?;
        Reader::<Sqlite>::conversation(&row)
    }

    async fn erase_owner(&self, owner: &str) -> Result<u64, StoreError> {
        retention::sweep(self, Sweep::Owner(owner)).await
    }

    async fn purge_idle(&self, idle_since: DateTime<Utc>) -> Result<u64, StoreError> {
        retention::sweep(self, Sweep::IdleSince(idle_since)).await
    }

    async fn append_response(
        &self,
        owner: &str,
        response: &NewResponse<'_>,
    ) -> Result<ResponsePosition, StoreError> {
        responses::append(self, owner, response).await
    }

    async fn response(&self, owner: &str, key: ResponseKey) -> Result<StoredResponse, StoreError> {
        responses::read(self, owner, key).await
    }

    async fn delete_response(&self, owner: &str, key: ResponseKey) -> Result<(), StoreError> {
        responses::delete(self, owner, key).await
    }
}

/// Copies messages `0..=at_sequence` of `id` into a new conversation `fork_id` of the
/// same owner, inside `tx`; answers the new conversation's row.
async fn fork_into(
    tx: &mut SqliteConnection,
    owner: &str,
    id: Uuid,
    at_sequence: i64,
    fork_id: Uuid,
) -> Result<sqlx::sqlite::SqliteRow, StoreError> {
    let source = sqlx::query(FORK_SOURCE)
        .bind(id)
        .bind(owner)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or(StoreError::NotFound)?;
    let span = sqlx::query(FORK_SPAN)
        .bind(id)
        .bind(at_sequence)
        .fetch_one(&mut *tx)
        .await?;
    let copied = fork_copies(
        at_sequence,
        span.try_get("copied")?,
        span.try_get("last_sequence")?,
    )?;
    let row = sqlx::query(CREATE_CONVERSATION)
        .bind(fork_id)
        .bind(owner)
        .bind(source.try_get::<Option<String>, _>("title")?)
        .bind(timestamp())
        .bind(copied)
        .bind(source.try_get::<Json<Metadata>, _>("metadata")?)
        .bind(at_sequence + 1)
        .fetch_one(&mut *tx)
        .await?;
    sqlx::query(FORK_MESSAGES)
        .bind(id)
        .bind(fork_id)
        .bind(at_sequence)
        .execute(&mut *tx)
        .await?;
    Ok(row)
}

/// Creates a conversation row and its first messages inside `tx`, in one call.
async fn insert_conversation(
    tx: &mut SqliteConnection,
    owner: &str,
    id: Uuid,
    title: Option<&str>,
    metadata: &Metadata,
    now: &str,
    messages: &[NewMessage],
) -> Result<Conversation, StoreError> {
    let rows = sqlx::query(CREATE_WITH_MESSAGES)
        .bind(id)
        .bind(owner)
        .bind(title)
        .bind(now)
        .bind(message_count(messages))
        .bind(Json(metadata))
        .bind(message_rows_json(messages)?)
        .fetch_all(&mut *tx)
        .await?;
    let row = rows.first().ok_or(StoreError::NotFound)?;
    Reader::<Sqlite>::conversation(row)
}

/// The FTS5 query that finds messages holding every word of `text`.
///
/// Each whitespace-separated word becomes an FTS5 string (`"` doubled inside), so
/// operators and punctuation in it (`OR`, `NEAR(`, `*`, `:`, `^`) are only text; FTS5
/// ANDs the strings. `None` when `text` has no words.
fn match_expression(text: &str) -> Option<String> {
    let words: Vec<String> = text
        .split_whitespace()
        .map(|word| format!("\"{}\"", word.replace('"', "\"\"")))
        .collect();
    (!words.is_empty()).then(|| words.join(" "))
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;

    use super::match_expression;

    #[test]
    fn every_word_is_quoted_so_query_syntax_is_text() {
        assert_eq!(
            match_expression("  hello  OR NEAR( a*b \"x\" ").as_deref(),
            Some(r#""hello" "OR" "NEAR(" "a*b" """x""""#)
        );
    }

    #[test]
    fn no_words_no_expression() {
        assert_eq!(match_expression(" \t\n"), None);
        assert_eq!(match_expression(""), None);
    }

    #[test]
    fn timestamps_have_a_fixed_width() {
        let now = super::timestamp();
        assert_eq!(now.len(), "2024-01-01T00:00:00.000000Z".len(), "{now}");
        assert!(now.ends_with('Z'));
    }

    /// The pattern the text was first written with: stored times compare as text against
    /// it, so the form can never change.
    const STORED_TIME_PATTERN: &str = "%Y-%m-%dT%H:%M:%S%.6fZ";

    #[test]
    fn stored_times_are_the_text_the_schema_always_held() {
        for (seconds, nanos) in [
            (0, 0),
            (1_704_067_200, 5_000),
            (1_733_333_333, 999_999_999),
            (253_402_300_799, 123_456_789),
            // Past four digits of year, and a leap second: chrono's writer.
            (253_402_300_800, 0),
            (1_483_228_799, 1_500_000_000),
        ] {
            let time = DateTime::from_timestamp(seconds, nanos).expect("in range");
            assert_eq!(
                super::write_queue::stored_time(time),
                time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
            );
            if seconds < 253_402_300_800 && nanos < 1_000_000_000 {
                let written = time.format(STORED_TIME_PATTERN).to_string();
                assert_eq!(super::write_queue::stored_time(time), written);
            }
        }
    }

    proptest::proptest! {
        #[test]
        fn any_stored_time_is_the_patterns_text(
            seconds in 0_i64..253_402_300_800,
            nanos in 0_u32..1_000_000_000,
        ) {
            let time = DateTime::from_timestamp(seconds, nanos).expect("in range");
            proptest::prop_assert_eq!(
                super::write_queue::stored_time(time),
                time.format(STORED_TIME_PATTERN).to_string()
            );
        }
    }
}
