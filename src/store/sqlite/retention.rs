//! Erasing an owner's conversations and purging idle ones, on SQLite: see
//! [`retention`](crate::store::retention) for the shape both backends share.
//!
//! Each batch is one write transaction, so other writers wait for at most one batch.
//! Messages are deleted explicitly, as everywhere in this store: the caller's pool may
//! have foreign keys off.

use sqlx::{Row, SqlitePool};
use uuid::Uuid;

use super::write_queue::{lock_write, stored_time};
use crate::store::StoreError;
use crate::store::retention::{BATCH, Sweep};

const OWNER_BATCH: &str = "SELECT id FROM conversations WHERE owner = ?1 LIMIT ?2";

const DELETE_OWNED: &str = "DELETE FROM conversations WHERE id = ?1 AND owner = ?2";

const IDLE_BATCH: &str = "SELECT id FROM conversations WHERE updated_at < ?1 LIMIT ?2";

const DELETE_IDLE: &str = "DELETE FROM conversations WHERE id = ?1 AND updated_at < ?2";

const DELETE_MESSAGES: &str = "DELETE FROM messages WHERE conversation_id = ?1";

/// Deletes what `sweep` selects, a batch per transaction; returns how many
/// conversations went.
pub(super) async fn sweep(pool: &SqlitePool, sweep: Sweep<'_>) -> Result<u64, StoreError> {
    // The schema's text form of a time, so that comparing the text compares the times.
    let before = match sweep {
        Sweep::IdleSince(before) => stored_time(before),
        Sweep::Owner(_) => String::new(),
    };
    let mut deleted = 0;
    loop {
        let mut writing = lock_write(pool).await;
        let mut tx = writing.begin().await?;
        let rows = match sweep {
            Sweep::Owner(owner) => sqlx::query(OWNER_BATCH).bind(owner),
            Sweep::IdleSince(_) => sqlx::query(IDLE_BATCH).bind(before.as_str()),
        }
        .bind(BATCH)
        .fetch_all(&mut *tx)
        .await?;
        if rows.is_empty() {
            return Ok(deleted);
        }
        for row in &rows {
            let id: Uuid = row.try_get("id")?;
            let done = match sweep {
                Sweep::Owner(owner) => sqlx::query(DELETE_OWNED).bind(id).bind(owner),
                Sweep::IdleSince(_) => sqlx::query(DELETE_IDLE).bind(id).bind(before.as_str()),
            }
            .execute(&mut *tx)
            .await?;
            if done.rows_affected() > 0 {
                sqlx::query(DELETE_MESSAGES)
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                deleted += 1;
            }
        }
        tx.commit().await?;
    }
}
