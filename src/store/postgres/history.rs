//! A conversation's history on PostgreSQL, a row a message.
//!
//! SQLite reads its history as one row of aggregated texts (see its `history` module),
//! which saves sqlx's work per row in the proxy. Here the same aggregate costs the
//! server more than the rows do (pgbench, 100 messages: 0.092 ms a call by rows, 0.110
//! ms as one ordered text; 20 messages: 0.042 and 0.048 ms), and the database is what
//! many proxy instances share: the rows stay, and each is read as cheaply as sqlx lets.
//!
//! A history the pool holds in process at the conversation's revision is not read at all
//! (see [`HistoryCache`]): the same statement then returns the conversation's row alone.

use std::sync::Arc;

use sqlx::postgres::{PgConnectOptions, PgRow};
use sqlx::{PgPool, Row, ValueRef};
use uuid::Uuid;

use super::session::Session;
use crate::store::history_cache::{HISTORY_CACHE_BYTES, HistoryCache, Revision};
use crate::store::per_pool::PerPool;
use crate::store::{HistoryMessage, NotAMessage, StoreError};

/// The history, or its last `$3` messages (NULL: all): the conversation's [`Revision`]
/// in each row, and each message's role and its JSON as text, which the layer splices as
/// it is. One row with a NULL message when the conversation is empty, no row when it
/// does not exist for this owner.
///
/// When the revision is `$4`, `$5`, `$6` (what the cache holds), no message is read: the
/// range of sequence numbers asked for starts past the largest there can be, so the index
/// scan finds nothing. (A condition on the conversation's row beside the join becomes a
/// filter that PostgreSQL tests on every message it reads.) Every table is named by the
/// conversation's id, so Citus sends the statement to one shard.
///
/// The window counts rows, not numbers (which have gaps after a truncation): it keeps
/// what lies above the number of the `$3 + 1`-th newest message, found by walking the
/// primary key backwards from the end, or everything when there are not that many.
const HISTORY: &str = "
SELECT c.revision, c.next_sequence, c.message_count,
       m.role, CAST(m.message AS TEXT) AS message
FROM conversations c
LEFT JOIN messages m
    ON m.conversation_id = c.id AND m.sequence_number > CASE
        WHEN (c.revision, c.next_sequence, c.message_count) IS NOT DISTINCT FROM ($4, $5, $6)
            THEN 9223372036854775807
        WHEN $3 IS NULL THEN -1
        ELSE coalesce((
            SELECT older.sequence_number FROM messages older
            WHERE older.conversation_id = $1
            ORDER BY older.sequence_number DESC
            LIMIT 1 OFFSET $3), -1)
    END
WHERE c.id = $1 AND c.owner = $2
ORDER BY m.sequence_number";

/// The messages to splice, as stored, in order; the last `last` when given. A message
/// that is not one JSON object makes the history [`StoreError::Corrupt`]. The `json`
/// column's type parsed each text when it was stored, so it is not parsed again (see
/// [`HistoryMessage::from_checked_json`]).
///
/// What the pool's [`HistoryCache`] holds of the conversation is read only when the
/// conversation's row no longer has the revision it was held at; what is read is kept.
pub(super) async fn history(
    pool: &PgPool,
    owner: &str,
    id: Uuid,
    last: Option<u32>,
) -> Result<Vec<HistoryMessage>, StoreError> {
    let read = |known| read(pool, owner, id, last, known);
    cache(pool)
        .read_through(owner, id, last, read, |rows| messages(&rows))
        .await
}

/// The pool's history cache.
pub(super) fn cache(pool: &PgPool) -> Arc<HistoryCache> {
    static CACHES: PerPool<PgConnectOptions, Arc<HistoryCache>> = PerPool::new();
    CACHES.get(&pool.connect_options(), || {
        Arc::new(HistoryCache::new(HISTORY_CACHE_BYTES))
    })
}

/// Runs [`HISTORY`] with the revision the cache holds, if any: the conversation's
/// revision and the rows, or `None` when it does not exist for this owner.
async fn read(
    pool: &PgPool,
    owner: &str,
    id: Uuid,
    last: Option<u32>,
    known: Option<Revision>,
) -> Result<Option<(Revision, Vec<PgRow>)>, StoreError> {
    let mut session = Session::statement(pool).await?;
    let rows = session
        .query(HISTORY)
        .bind(id)
        .bind(owner)
        .bind(last.map(i64::from))
        .bind(known.map(|known| known.revision))
        .bind(known.map(|known| known.next_sequence))
        .bind(known.map(|known| known.message_count))
        .fetch_all(session.connection())
        .await?;
    session.commit().await?;
    let Some(first) = rows.first() else {
        return Ok(None);
    };
    let revision = Revision::from_row(first, 0)?;
    Ok(Some((revision, rows)))
}

/// The messages of [`HISTORY`]'s rows.
fn messages(rows: &[PgRow]) -> Result<Vec<HistoryMessage>, StoreError> {
    let mut history = Vec::with_capacity(rows.len());
    for row in rows {
        // Read by place and as the text the statement casts each column to, without
        // sqlx's check of the column's type and name for each value (about 1,200
        // instructions a message): the statement above is the only one read here.
        let message = row.try_get_raw(4)?;
        if message.is_null() {
            continue;
        }
        let role = row.try_get_raw(3)?;
        let (Ok(role), Ok(message)) = (role.as_str(), message.as_str()) else {
            return Err(StoreError::Corrupt(Box::new(NotAMessage)));
        };
        let message = HistoryMessage::from_checked_json(role, message)
            .ok_or_else(|| StoreError::Corrupt(Box::new(NotAMessage)))?;
        history.push(message);
    }
    Ok(history)
}
