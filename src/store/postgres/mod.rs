//! [`ConversationStore`] for [`sqlx::PgPool`].
//!
//! Writes that touch one conversation are single statements where that is safe, so the
//! hot path (appending a turn) costs one round trip on a direct connection. Timestamps
//! come from the server's clock (`now()`), which every instance of the layer shares.
//! Every call goes through a [`Session`], which also serves transaction poolers.

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use sqlx::postgres::PgRow;
use sqlx::types::Json;
use sqlx::{PgPool, Postgres, Row};
use uuid::Uuid;

mod distribute;
mod history;
mod responses;
mod retention;
mod session;

pub use self::distribute::distribute;

use self::history::history;
use self::session::Session;
use super::batch::{MessageColumns, message_count, search_text};
use super::fork::{FORK_SPAN, fork_copies};
use super::history_cache::Revision;
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

/// Creates a conversation and stores its first messages, in one statement.
///
/// `$1` id, `$2` owner, `$3` title, `$4` message count (numbered `0..count`, so also the
/// next number), `$5` metadata, `$6`..`$11` the messages' columns from [`MessageColumns`];
/// each message is stored as the very text its element carries. The search vector is
/// computed here, from the text sent beside a message or else from its `content` string,
/// so a message's text is stored once (in the message) and usually sent once.
const CREATE: &str = "
WITH conversation AS (
    INSERT INTO conversations (id, owner, title, created_at, updated_at, message_count,
                               next_sequence, metadata)
    VALUES ($1, $2, $3, now(), now(), $4, $4, $5)
    RETURNING id, title, created_at, updated_at, message_count, metadata
), turn AS (
    INSERT INTO messages (conversation_id, sequence_number, role, message, content_search,
                          reasoning, reasoning_events, metadata, created_at)
    SELECT conversation.id, batch.position - 1, batch.role, batch.message::json,
           to_tsvector('simple', coalesce(batch.text, batch.message::json ->> 'content')),
           batch.reasoning, batch.events, batch.metadata::jsonb, conversation.created_at
    FROM conversation,
         unnest($6::text[], $7::text[], $8::text[], $9::text[], $10::jsonb[], $11::text[])
             WITH ORDINALITY AS batch (role, message, text, reasoning, events, metadata, position)
)
SELECT id, title, created_at, updated_at, message_count, metadata FROM conversation";

/// Appends a turn to an existing conversation, in one statement (one round trip).
///
/// The UPDATE takes the same row lock `SELECT ... FOR UPDATE` would: a concurrent turn
/// on this conversation waits for it, then re-reads the row and continues from the count
/// this one left, so sequence numbers never collide and each turn stays contiguous.
/// Numbers come from `next_sequence`, never from the row count: after a truncation the
/// count is lower, and the numbers it dropped are not handed out again. No row (unknown
/// id, or another owner's) means nothing is inserted either. The row returned says
/// where the turn starts and the conversation's [`Revision`] after it.
///
/// `$1` id, `$2` owner, `$3` message count, `$4`..`$9` the messages' columns from
/// [`MessageColumns`].
const APPEND: &str = "
WITH conversation AS (
    UPDATE conversations
    SET message_count = message_count + $3, next_sequence = next_sequence + $3,
        updated_at = now(), revision = revision + 1
    WHERE id = $1 AND owner = $2
    RETURNING id, next_sequence - $3 AS first_sequence, updated_at,
              revision, next_sequence, message_count
), turn AS (
    INSERT INTO messages (conversation_id, sequence_number, role, message, content_search,
                          reasoning, reasoning_events, metadata, created_at)
    SELECT conversation.id, conversation.first_sequence + batch.position - 1, batch.role,
           batch.message::json,
           to_tsvector('simple', coalesce(batch.text, batch.message::json ->> 'content')),
           batch.reasoning, batch.events, batch.metadata::jsonb, conversation.updated_at
    FROM conversation,
         unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::jsonb[], $9::text[])
             WITH ORDINALITY AS batch (role, message, text, reasoning, events, metadata, position)
)
SELECT first_sequence, revision, next_sequence, message_count FROM conversation";

/// `plainto_tsquery` reads `$4` as plain words joined by AND: operators, quotes and
/// punctuation in it are text, never query syntax.
const SEARCH: &str = "
SELECT c.id, c.title, c.created_at, c.updated_at, c.message_count, c.metadata
FROM conversations c
WHERE c.owner = $1 AND EXISTS (
    SELECT 1 FROM messages m
    WHERE m.conversation_id = c.id
      AND m.content_search @@ plainto_tsquery('simple', $4))
ORDER BY c.updated_at DESC, c.id DESC
LIMIT $2 OFFSET $3";

const SEARCH_COUNT: &str = "
SELECT count(*)
FROM conversations c
WHERE c.owner = $1 AND EXISTS (
    SELECT 1 FROM messages m
    WHERE m.conversation_id = c.id
      AND m.content_search @@ plainto_tsquery('simple', $2))";

/// A page by id of the conversations whose messages match `$4` (`plainto_tsquery`, as
/// [`SEARCH`]), after the cursor `$2`. Sent unnamed, so planned for each term: for a word
/// in most conversations PostgreSQL walks them by id and probes each one's few messages,
/// stopping after `$3`; for a rare one (or one in none) it asks the GIN index first and
/// sorts the few conversations found. A plan cached for either is slow for the other.
const SEARCH_BY_ID_ASC: &str = "
SELECT c.id, c.title, c.created_at, c.updated_at, c.message_count, c.metadata
FROM conversations c
WHERE c.owner = $1 AND c.id > $2 AND EXISTS (
    SELECT 1 FROM messages m
    WHERE m.conversation_id = c.id
      AND m.content_search @@ plainto_tsquery('simple', $4))
ORDER BY c.id
LIMIT $3";

const SEARCH_BY_ID_DESC: &str = "
SELECT c.id, c.title, c.created_at, c.updated_at, c.message_count, c.metadata
FROM conversations c
WHERE c.owner = $1 AND c.id < $2 AND EXISTS (
    SELECT 1 FROM messages m
    WHERE m.conversation_id = c.id
      AND m.content_search @@ plainto_tsquery('simple', $4))
ORDER BY c.id DESC
LIMIT $3";

const UPDATE: &str = "
UPDATE conversations
SET title = coalesce($3, title), metadata = coalesce($4, metadata), updated_at = now()
WHERE id = $1 AND owner = $2
RETURNING id, title, created_at, updated_at, message_count, metadata";

/// The first half of a delete: the conversation row, which also waits for a turn still
/// writing to it (the turn holds the row's lock). [`DELETE_MESSAGES`] follows in the
/// same transaction.
const DELETE: &str = "DELETE FROM conversations WHERE id = $1 AND owner = $2";

/// The second half of every delete (this one, erasure, purge): the messages of a
/// conversation whose row the same transaction has just deleted. No foreign key cascades
/// it (migration 0005 dropped the key: its check ran once per message inserted). A
/// statement of its own, after the row's: its snapshot sees every turn that committed
/// while the row's delete waited, where a single statement's snapshot would miss them,
/// and no turn can add to the conversation after it (APPEND finds no row).
const DELETE_MESSAGES: &str = "DELETE FROM messages WHERE conversation_id = $1";

/// Holds the source still (no turn, truncation or delete) while it is copied.
const FORK_SOURCE: &str = "
SELECT title, metadata FROM conversations
WHERE id = $1 AND owner = $2
FOR SHARE";

/// `$4` the messages copied, `$5` the next sequence number, `$6` metadata.
const FORK_CONVERSATION: &str = "
INSERT INTO conversations (id, owner, title, created_at, updated_at, message_count,
                           next_sequence, metadata)
VALUES ($1, $2, $3, now(), now(), $4, $5, $6)
RETURNING id, title, created_at, updated_at, message_count, metadata";

const FORK_MESSAGES: &str = "
INSERT INTO messages (conversation_id, sequence_number, role, message, content_search,
                      reasoning, reasoning_events, metadata, created_at, call_numbers)
SELECT $2, sequence_number, role, message, content_search,
       reasoning, reasoning_events, metadata, created_at, call_numbers
FROM messages
WHERE conversation_id = $1 AND sequence_number <= $3";

/// Locks the conversation against turns (and says whether it is there for this owner)
/// before its messages are deleted.
const TRUNCATE_LOCK: &str = "SELECT id FROM conversations WHERE id = $1 AND owner = $2 FOR UPDATE";

const TRUNCATE_MESSAGES: &str =
    "DELETE FROM messages WHERE conversation_id = $1 AND sequence_number >= $2";

/// Lowers the row count by the `$3` messages deleted, run only when there were some, so
/// `updated_at` moves only when messages go. The condition is decided in Rust, not in a
/// `CASE` around `now()`: Citus refuses functions that are not immutable inside `CASE`
/// and `COALESCE` of a distributed modification. `next_sequence` stays where it is;
/// `revision` moves on.
const TRUNCATE_CONVERSATION: &str = "
UPDATE conversations
SET message_count = message_count - $3, updated_at = now(), revision = revision + 1
WHERE id = $1 AND owner = $2";

/// The messages an item delete takes: `$2` their sequence numbers.
const DELETE_ITEM_MESSAGES: &str =
    "DELETE FROM messages WHERE conversation_id = $1 AND sequence_number = ANY($2)";

/// A message an item delete rewrites: `$3` its JSON text, `$4` the numbers of its calls
/// (NULL: their places), `$5` its text for search.
const REWRITE_ITEM_MESSAGE: &str = "
UPDATE messages
SET message = $3::json, call_numbers = $4, content_search = to_tsvector('simple', $5)
WHERE conversation_id = $1 AND sequence_number = $2";

/// After an item delete: the row count lowered by the `$3` messages deleted (perhaps
/// none, when a message was only rewritten), `updated_at` and `revision` moved;
/// `next_sequence` stays.
const ITEM_DELETED: &str = "
UPDATE conversations
SET message_count = message_count - $3, updated_at = now(), revision = revision + 1
WHERE id = $1 AND owner = $2
RETURNING id, title, created_at, updated_at, message_count, metadata";

turn_store_built_in_place!(PgPool, history, append, history::cache);

/// See [`TurnStore::append_turn`].
async fn append(
    pool: &PgPool,
    owner: &str,
    id: Uuid,
    target: TurnTarget,
    messages: &[NewMessage],
) -> Result<i64, StoreError> {
    if target == TurnTarget::NewConversation {
        let title = title_from(messages);
        insert_conversation(
            pool,
            owner,
            id,
            title.as_deref(),
            &Metadata::new(),
            messages,
        )
        .await?;
        // Not kept in the history cache: the first continued turn reads the first turn's
        // messages and keeps them, which costs a new turn nothing.
        return Ok(0);
    }
    let columns = MessageColumns::new(messages);
    let mut session = Session::statement(pool).await?;
    let size = columns.bound_size() + owner.len();
    let row = columns
        .bind(
            session
                .query_sized(APPEND, 3 + MessageColumns::ARRAYS, size)
                .bind(id)
                .bind(owner)
                .bind(message_count(messages)),
        )
        .fetch_optional(session.connection())
        .await?
        .ok_or(StoreError::NotFound)?;
    session.commit().await?;
    // APPEND returns `first_sequence`, then the revision.
    let after = Revision::from_row(&row, 1)?;
    let count = message_count(messages);
    history::cache(pool).appended(id, after.around_turn(count), messages);
    Ok(after.first_of_turn(count))
}

#[async_trait]
impl ConversationStore for PgPool {
    async fn migrate(&self) -> Result<(), StoreError> {
        let mut migrator = sqlx::migrate!("migrations/postgres");
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
        let row = insert_conversation(
            self,
            owner,
            Uuid::now_v7(),
            title.as_deref(),
            &conversation.metadata,
            &conversation.messages,
        )
        .await?;
        Reader::<Postgres>::conversation(&row)
    }

    async fn list(&self, owner: &str, query: &ListQuery) -> Result<ConversationList, StoreError> {
        let mut session = Session::statement(self).await?;
        let named = session.named();
        let mut reader = Reader::<Postgres>::new(session.connection(), named);
        let list = match &query.search {
            None => reader.list(owner, query).await?,
            Some(words) => {
                let statements = (SEARCH, SEARCH_COUNT);
                reader.search(statements, owner, query, words).await?
            }
        };
        session.commit().await?;
        Ok(list)
    }

    async fn list_by_id(
        &self,
        owner: &str,
        query: &CursorQuery,
    ) -> Result<ConversationPage, StoreError> {
        let mut session = Session::statement(self).await?;
        let named = session.named();
        let mut reader = Reader::<Postgres>::new(session.connection(), named);
        let page = match &query.search {
            None => reader.by_id(owner, query).await?,
            Some(words) => {
                let statements = (SEARCH_BY_ID_ASC, SEARCH_BY_ID_DESC);
                reader
                    .by_id_matching(statements, owner, query, words, true)
                    .await?
            }
        };
        session.commit().await?;
        Ok(page)
    }

    async fn get(&self, owner: &str, id: Uuid) -> Result<ConversationDetail, StoreError> {
        let mut session = Session::statement(self).await?;
        let named = session.named();
        let detail = Reader::<Postgres>::new(session.connection(), named)
            .detail(owner, id)
            .await?;
        session.commit().await?;
        Ok(detail)
    }

    async fn messages(
        &self,
        owner: &str,
        id: Uuid,
        query: &MessageQuery,
    ) -> Result<MessagePage, StoreError> {
        let mut session = Session::statement(self).await?;
        let named = session.named();
        let page = Reader::<Postgres>::new(session.connection(), named)
            .page(owner, id, query)
            .await?;
        session.commit().await?;
        Ok(page)
    }

    async fn update(
        &self,
        owner: &str,
        id: Uuid,
        update: &ConversationUpdate,
    ) -> Result<Conversation, StoreError> {
        let mut session = Session::statement(self).await?;
        let row = session
            .query(UPDATE)
            .bind(id)
            .bind(owner)
            .bind(update.title.as_deref())
            .bind(update.metadata.as_ref().map(Json))
            .fetch_optional(session.connection())
            .await?
            .ok_or(StoreError::NotFound)?;
        session.commit().await?;
        Reader::<Postgres>::conversation(&row)
    }

    async fn delete(&self, owner: &str, id: Uuid) -> Result<(), StoreError> {
        let mut tx = Session::transaction(self).await?;
        let deleted = tx
            .query(DELETE)
            .bind(id)
            .bind(owner)
            .execute(tx.connection())
            .await?;
        if deleted.rows_affected() == 0 {
            return Err(StoreError::NotFound);
        }
        delete_messages(&mut tx, id).await?;
        tx.commit().await
    }

    async fn fork(
        &self,
        owner: &str,
        id: Uuid,
        at_sequence: i64,
    ) -> Result<Conversation, StoreError> {
        let mut tx = Session::transaction(self).await?;
        let row = fork_into(&mut tx, owner, id, at_sequence, Uuid::now_v7()).await?;
        tx.commit().await?;
        Reader::<Postgres>::conversation(&row)
    }

    async fn truncate(&self, owner: &str, id: Uuid, from_sequence: i64) -> Result<u64, StoreError> {
        if from_sequence < 0 {
            return Err(StoreError::OutOfRange);
        }
        let mut tx = Session::transaction(self).await?;
        tx.query(TRUNCATE_LOCK)
            .bind(id)
            .bind(owner)
            .fetch_optional(tx.connection())
            .await?
            .ok_or(StoreError::NotFound)?;
        // A statement of its own, after the lock above: it sees every turn that
        // committed while this one waited, so none of them survives past the cut.
        let deleted = tx
            .query(TRUNCATE_MESSAGES)
            .bind(id)
            .bind(from_sequence)
            .execute(tx.connection())
            .await?
            .rows_affected();
        if deleted > 0 {
            tx.query(TRUNCATE_CONVERSATION)
                .bind(id)
                .bind(owner)
                .bind(i64::try_from(deleted).map_err(|e| StoreError::Corrupt(Box::new(e)))?)
                .execute(tx.connection())
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
        let mut tx = Session::transaction(self).await?;
        tx.query(TRUNCATE_LOCK)
            .bind(id)
            .bind(owner)
            .fetch_optional(tx.connection())
            .await?
            .ok_or(StoreError::NotFound)?;
        let named = tx.named();
        let span = Reader::<Postgres>::new(tx.connection(), named)
            .item_span(id, item.sequence_number())
            .await?;
        let removal = plan(item, &span)?;
        if !removal.deleted.is_empty() {
            tx.query(DELETE_ITEM_MESSAGES)
                .bind(id)
                .bind(&removal.deleted)
                .execute(tx.connection())
                .await?;
        }
        if let Some(rewritten) = &removal.rewritten {
            tx.query(REWRITE_ITEM_MESSAGE)
                .bind(id)
                .bind(rewritten.sequence_number)
                .bind(rewritten.message.to_string())
                .bind(rewritten.call_numbers.as_ref().map(Json))
                .bind(search_text(&rewritten.message))
                .execute(tx.connection())
                .await?;
        }
        let row = tx
            .query(ITEM_DELETED)
            .bind(id)
            .bind(owner)
            .bind(deleted_count(&removal)?)
            .fetch_one(tx.connection())
            .await?;
        tx.commit().await?;
        Reader::<Postgres>::conversation(&row)
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
/// same owner, inside the caller's transaction; answers the new conversation's row.
async fn fork_into(
    tx: &mut Session<'_>,
    owner: &str,
    id: Uuid,
    at_sequence: i64,
    fork_id: Uuid,
) -> Result<sqlx::postgres::PgRow, StoreError> {
    let source = tx
        .query(FORK_SOURCE)
        .bind(id)
        .bind(owner)
        .fetch_optional(tx.connection())
        .await?
        .ok_or(StoreError::NotFound)?;
    let span = tx
        .query(FORK_SPAN)
        .bind(id)
        .bind(at_sequence)
        .fetch_one(tx.connection())
        .await?;
    let copied = fork_copies(
        at_sequence,
        span.try_get("copied")?,
        span.try_get("last_sequence")?,
    )?;
    let row = tx
        .query(FORK_CONVERSATION)
        .bind(fork_id)
        .bind(owner)
        .bind(source.try_get::<Option<String>, _>("title")?)
        .bind(copied)
        .bind(at_sequence + 1)
        .bind(source.try_get::<Json<Metadata>, _>("metadata")?)
        .fetch_one(tx.connection())
        .await?;
    tx.query(FORK_MESSAGES)
        .bind(id)
        .bind(fork_id)
        .bind(at_sequence)
        .execute(tx.connection())
        .await?;
    Ok(row)
}

/// Deletes the messages of conversation `id`, whose row `tx` has just deleted (see
/// [`DELETE_MESSAGES`]).
async fn delete_messages(tx: &mut Session<'_>, id: Uuid) -> Result<(), StoreError> {
    tx.query(DELETE_MESSAGES)
        .bind(id)
        .execute(tx.connection())
        .await?;
    Ok(())
}

/// Creates a conversation with its messages (the [`CREATE`] statement) and returns its
/// row; a turn has no use for it, so only [`ConversationStore::create`] decodes it.
async fn insert_conversation(
    pool: &PgPool,
    owner: &str,
    id: Uuid,
    title: Option<&str>,
    metadata: &Metadata,
    messages: &[NewMessage],
) -> Result<PgRow, StoreError> {
    let columns = MessageColumns::new(messages);
    let mut session = Session::statement(pool).await?;
    let size = columns.bound_size() + owner.len() + title.map_or(0, str::len);
    let row = columns
        .bind(
            session
                .query_sized(CREATE, 5 + MessageColumns::ARRAYS, size)
                .bind(id)
                .bind(owner)
                .bind(title)
                .bind(message_count(messages))
                .bind(Json(metadata)),
        )
        .fetch_one(session.connection())
        .await?;
    session.commit().await?;
    Ok(row)
}
