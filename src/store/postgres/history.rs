//! A conversation's history on PostgreSQL, a row a message.
//!
//! SQLite reads its history as one row of aggregated texts (see its `history` module),
//! which saves sqlx's work per row in the proxy. Here the same aggregate costs the
//! server more than the rows do (pgbench, 100 messages: 0.092 ms a call by rows, 0.110
//! ms as one ordered text; 20 messages: 0.042 and 0.048 ms), and the database is what
//! many proxy instances share: the rows stay, and each is read as cheaply as sqlx lets.

use sqlx::{PgPool, Row, ValueRef};
use uuid::Uuid;

use super::session::Session;
use crate::store::{HistoryMessage, NotAMessage, StoreError};

/// The history, or its last `$3` messages (NULL: all): each message's role and its JSON
/// as text, which the layer splices as it is. One row with a NULL message when the
/// conversation is empty, no row when it does not exist for this owner.
///
/// The window counts rows, not numbers (which have gaps after a truncation): it keeps
/// what lies above the number of the `$3 + 1`-th newest message, found by walking the
/// primary key backwards from the end, or everything when there are not that many.
const HISTORY: &str = "
SELECT m.role, CAST(m.message AS TEXT) AS message
FROM conversations c
LEFT JOIN messages m
    ON m.conversation_id = c.id AND ($3 IS NULL OR m.sequence_number > coalesce((
        SELECT older.sequence_number FROM messages older
        WHERE older.conversation_id = $1
        ORDER BY older.sequence_number DESC
        LIMIT 1 OFFSET $3), -1))
WHERE c.id = $1 AND c.owner = $2
ORDER BY m.sequence_number";

/// The messages to splice, as stored, in order; the last `last` when given. A message
/// that is not one JSON object makes the history [`StoreError::Corrupt`]. The `json`
/// column's type parsed each text when it was stored, so it is not parsed again (see
/// [`HistoryMessage::from_checked_json`]).
pub(super) async fn history(
    pool: &PgPool,
    owner: &str,
    id: Uuid,
    last: Option<u32>,
) -> Result<Vec<HistoryMessage>, StoreError> {
    let mut session = Session::statement(pool).await?;
    let rows = session
        .query(HISTORY)
        .bind(id)
        .bind(owner)
        .bind(last.map(i64::from))
        .fetch_all(session.connection())
        .await?;
    session.commit().await?;
    if rows.is_empty() {
        return Err(StoreError::NotFound);
    }
    let mut history = Vec::with_capacity(rows.len());
    for row in &rows {
        // Read by place and as the text the statement casts each column to, without
        // sqlx's check of the column's type and name for each value (about 1,200
        // instructions a message): the statement above is the only one read here.
        let message = row.try_get_raw(1)?;
        if message.is_null() {
            continue;
        }
        let role = row.try_get_raw(0)?;
        let (Ok(role), Ok(message)) = (role.as_str(), message.as_str()) else {
            return Err(StoreError::Corrupt(Box::new(NotAMessage)));
        };
        let message = HistoryMessage::from_checked_json(role, message.to_owned())
            .ok_or_else(|| StoreError::Corrupt(Box::new(NotAMessage)))?;
        history.push(message);
    }
    Ok(history)
}
