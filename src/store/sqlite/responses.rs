//! Stored responses on SQLite: a response's turn and its row in one write transaction.
//!
//! The transaction takes the file's write lock through the same in-process queue as every
//! other write, so it never races a batch of turns.

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::types::Json;
use sqlx::{Row, SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::fork_into;
use super::write_queue::{TurnRows, lock_write, timestamp, write_turn};
use crate::store::batch::{SqliteBatch, message_count};
use crate::store::{
    NewMessage, NewResponse, ResponseKey, ResponsePlacement, ResponsePosition, StoreError,
    StoredResponse, title_from,
};

/// The number the conversation's next message would take (inside the write transaction,
/// which already holds off every other writer).
const RESPONSE_TIP: &str = "SELECT next_sequence FROM conversations WHERE id = ?1 AND owner = ?2";

/// `?1` the conversation filed under, `?2` the response's id, `?3` owner, `?4` the
/// conversation holding the turn, `?5`/`?6` its first and last sequence numbers, `?7`
/// the response object, `?8` now.
const INSERT_RESPONSE: &str = "
INSERT INTO responses (conversation_id, id, owner, items_conversation_id, first_sequence,
                       last_sequence, body, created_at)
VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)";

const SELECT_RESPONSE: &str = "
SELECT items_conversation_id, first_sequence, last_sequence, body, created_at
FROM responses
WHERE conversation_id = ?1 AND id = ?2 AND owner = ?3";

const DELETE_RESPONSE: &str =
    "DELETE FROM responses WHERE conversation_id = ?1 AND id = ?2 AND owner = ?3";

pub(super) async fn append(
    pool: &SqlitePool,
    owner: &str,
    response: &NewResponse<'_>,
) -> Result<ResponsePosition, StoreError> {
    let key = response.key;
    let messages = response.messages;
    let now = timestamp();
    let mut writing = lock_write(pool).await;
    let mut tx = writing.begin().await?;
    let (items, first) = match response.placement {
        ResponsePlacement::NewConversation => {
            let first = turn(&mut tx, owner, key.conversation_id, true, messages, &now).await?;
            (key.conversation_id, first)
        }
        ResponsePlacement::Append { after: None } => {
            let first = turn(&mut tx, owner, key.conversation_id, false, messages, &now).await?;
            (key.conversation_id, first)
        }
        ResponsePlacement::Append { after: Some(after) } => {
            let next: i64 = sqlx::query(RESPONSE_TIP)
                .bind(key.conversation_id)
                .bind(owner)
                .fetch_optional(&mut *tx)
                .await?
                .ok_or(StoreError::NotFound)?
                .try_get("next_sequence")?;
            // Another turn took the place after `after` first: this branch forks there.
            let items = if next == after.saturating_add(1) {
                key.conversation_id
            } else {
                let fork = Uuid::now_v7();
                fork_into(&mut tx, owner, key.conversation_id, after, fork).await?;
                fork
            };
            (
                items,
                turn(&mut tx, owner, items, false, messages, &now).await?,
            )
        }
        ResponsePlacement::Fork {
            source,
            at_sequence,
        } => {
            fork_into(&mut tx, owner, source, at_sequence, key.conversation_id).await?;
            let first = turn(&mut tx, owner, key.conversation_id, false, messages, &now).await?;
            (key.conversation_id, first)
        }
    };
    let position = ResponsePosition::new(items, first, messages.len());
    sqlx::query(INSERT_RESPONSE)
        .bind(key.conversation_id)
        .bind(key.id)
        .bind(owner)
        .bind(items)
        .bind(position.first_sequence)
        .bind(position.last_sequence)
        .bind(Json(response.body))
        .bind(&now)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(position)
}

/// Creates or continues conversation `id` with `messages`; the first one's number.
async fn turn(
    tx: &mut SqliteConnection,
    owner: &str,
    id: Uuid,
    create: bool,
    messages: &[NewMessage],
    now: &str,
) -> Result<i64, StoreError> {
    let rows = TurnRows {
        owner: owner.to_owned(),
        id,
        create,
        title: if create { title_from(messages) } else { None },
        count: message_count(messages),
        rows: SqliteBatch::new(messages)?,
    };
    let count = rows.count;
    Ok(write_turn(tx, rows, now).await??.first_of_turn(count))
}

pub(super) async fn read(
    pool: &SqlitePool,
    owner: &str,
    key: ResponseKey,
) -> Result<StoredResponse, StoreError> {
    let mut connection = pool.acquire().await?;
    let row = sqlx::query(SELECT_RESPONSE)
        .bind(key.conversation_id)
        .bind(key.id)
        .bind(owner)
        .fetch_optional(&mut *connection)
        .await?
        .ok_or(StoreError::NotFound)?;
    let position = ResponsePosition {
        items_conversation_id: row.try_get("items_conversation_id")?,
        first_sequence: row.try_get("first_sequence")?,
        last_sequence: row.try_get("last_sequence")?,
    };
    let Json(body) = row.try_get::<Json<Value>, _>("body")?;
    let created_at: String = row.try_get("created_at")?;
    let created_at = DateTime::parse_from_rfc3339(&created_at)
        .map_err(|e| StoreError::Corrupt(Box::new(e)))?
        .with_timezone(&Utc);
    Ok(StoredResponse::new(key, position, body, created_at))
}

pub(super) async fn delete(
    pool: &SqlitePool,
    owner: &str,
    key: ResponseKey,
) -> Result<(), StoreError> {
    let mut writing = lock_write(pool).await;
    let mut tx = writing.begin().await?;
    let deleted = sqlx::query(DELETE_RESPONSE)
        .bind(key.conversation_id)
        .bind(key.id)
        .bind(owner)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    if deleted.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}
