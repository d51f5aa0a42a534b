//! Stored responses on PostgreSQL: a response's turn and its row in one transaction.
//!
//! Every statement names the conversation it touches, so on Citus each goes to one shard;
//! a branch that forks writes two conversations in one transaction, which Citus commits
//! across their workers.

use serde_json::Value;
use sqlx::types::Json;
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::session::Session;
use super::{APPEND, CREATE, fork_into};
use crate::store::batch::{MessageColumns, message_count};
use crate::store::{
    Metadata, NewMessage, NewResponse, ResponseKey, ResponsePlacement, ResponsePosition,
    StoreError, StoredResponse, title_from,
};

/// Locks the conversation against other turns until the transaction ends, and reads the
/// number its next message would take.
const RESPONSE_TIP: &str =
    "SELECT next_sequence FROM conversations WHERE id = $1 AND owner = $2 FOR UPDATE";

/// `$1` the conversation filed under, `$2` the response's id, `$3` owner, `$4` the
/// conversation holding the turn, `$5`/`$6` its first and last sequence numbers, `$7`
/// the response object.
const INSERT_RESPONSE: &str = "
INSERT INTO responses (conversation_id, id, owner, items_conversation_id, first_sequence,
                       last_sequence, body, created_at)
VALUES ($1, $2, $3, $4, $5, $6, $7, now())";

const SELECT_RESPONSE: &str = "
SELECT items_conversation_id, first_sequence, last_sequence, body, created_at
FROM responses
WHERE conversation_id = $1 AND id = $2 AND owner = $3";

const DELETE_RESPONSE: &str =
    "DELETE FROM responses WHERE conversation_id = $1 AND id = $2 AND owner = $3";

pub(super) async fn append(
    pool: &PgPool,
    owner: &str,
    response: &NewResponse<'_>,
) -> Result<ResponsePosition, StoreError> {
    let key = response.key;
    let messages = response.messages;
    let mut tx = Session::transaction(pool).await?;
    let (items, first) = match response.placement {
        ResponsePlacement::NewConversation => {
            create_turn(&mut tx, owner, key.conversation_id, messages).await?;
            (key.conversation_id, 0)
        }
        ResponsePlacement::Append { after: None } => {
            let first = append_turn(&mut tx, owner, key.conversation_id, messages).await?;
            (key.conversation_id, first)
        }
        ResponsePlacement::Append { after: Some(after) } => {
            let next: i64 = tx
                .query(RESPONSE_TIP)
                .bind(key.conversation_id)
                .bind(owner)
                .fetch_optional(tx.connection())
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
            (items, append_turn(&mut tx, owner, items, messages).await?)
        }
        ResponsePlacement::Fork {
            source,
            at_sequence,
        } => {
            fork_into(&mut tx, owner, source, at_sequence, key.conversation_id).await?;
            let first = append_turn(&mut tx, owner, key.conversation_id, messages).await?;
            (key.conversation_id, first)
        }
    };
    let position = ResponsePosition::new(items, first, messages.len());
    tx.query(INSERT_RESPONSE)
        .bind(key.conversation_id)
        .bind(key.id)
        .bind(owner)
        .bind(items)
        .bind(position.first_sequence)
        .bind(position.last_sequence)
        .bind(Json(response.body))
        .execute(tx.connection())
        .await?;
    tx.commit().await?;
    Ok(position)
}

async fn create_turn(
    tx: &mut Session<'_>,
    owner: &str,
    id: Uuid,
    messages: &[NewMessage],
) -> Result<(), StoreError> {
    let title = title_from(messages);
    MessageColumns::new(messages)
        .bind(
            tx.query(CREATE)
                .bind(id)
                .bind(owner)
                .bind(title)
                .bind(message_count(messages))
                .bind(Json(Metadata::new())),
        )
        .fetch_one(tx.connection())
        .await?;
    Ok(())
}

async fn append_turn(
    tx: &mut Session<'_>,
    owner: &str,
    id: Uuid,
    messages: &[NewMessage],
) -> Result<i64, StoreError> {
    let row = MessageColumns::new(messages)
        .bind(
            tx.query(APPEND)
                .bind(id)
                .bind(owner.to_owned())
                .bind(message_count(messages)),
        )
        .fetch_optional(tx.connection())
        .await?
        .ok_or(StoreError::NotFound)?;
    Ok(row.try_get("first_sequence")?)
}

pub(super) async fn read(
    pool: &PgPool,
    owner: &str,
    key: ResponseKey,
) -> Result<StoredResponse, StoreError> {
    let mut session = Session::statement(pool).await?;
    let row = session
        .query(SELECT_RESPONSE)
        .bind(key.conversation_id)
        .bind(key.id)
        .bind(owner.to_owned())
        .fetch_optional(session.connection())
        .await?
        .ok_or(StoreError::NotFound)?;
    session.commit().await?;
    let position = ResponsePosition {
        items_conversation_id: row.try_get("items_conversation_id")?,
        first_sequence: row.try_get("first_sequence")?,
        last_sequence: row.try_get("last_sequence")?,
    };
    let Json(body) = row.try_get::<Json<Value>, _>("body")?;
    Ok(StoredResponse::new(
        key,
        position,
        body,
        row.try_get("created_at")?,
    ))
}

pub(super) async fn delete(pool: &PgPool, owner: &str, key: ResponseKey) -> Result<(), StoreError> {
    let mut session = Session::statement(pool).await?;
    let deleted = session
        .query(DELETE_RESPONSE)
        .bind(key.conversation_id)
        .bind(key.id)
        .bind(owner.to_owned())
        .execute(session.connection())
        .await?;
    session.commit().await?;
    if deleted.rows_affected() == 0 {
        return Err(StoreError::NotFound);
    }
    Ok(())
}
