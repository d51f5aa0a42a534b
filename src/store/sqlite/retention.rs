//! Erasing an owner's conversations and purging idle ones, on SQLite: see
//! [`retention`](crate::store::retention) for the shape both backends share.
//!
//! Each batch is one write transaction, so other writers wait for at most one batch.
//! Messages are deleted explicitly, as everywhere in this store: the caller's pool may
//! have foreign keys off.
//!
//! Idle conversations are found owner by owner, in the order of their owners, through
//! `conversations_owner_recent`, where one owner's conversations idle since a time are
//! one range: the file keeps no index on `updated_at` alone, which every turn would move
//! its entry in (two more pages written a turn) for the sake of a sweep that runs rarely.
//! A sweep then costs one look-up an owner besides what it deletes.

use sqlx::{SqliteConnection, SqlitePool};
use uuid::Uuid;

use super::write_queue::{lock_write, stored_time};
use crate::store::StoreError;
use crate::store::retention::{BATCH, Sweep};

const OWNER_BATCH: &str = "SELECT id FROM conversations WHERE owner = ?1 LIMIT ?2";

const DELETE_OWNED: &str = "DELETE FROM conversations WHERE id = ?1 AND owner = ?2";

/// The first owner after `?1` in the order the owners' index keeps them.
const NEXT_OWNER: &str = "SELECT owner FROM conversations WHERE owner > ?1 ORDER BY owner LIMIT 1";

/// The first owner of all, which may be the empty text.
const FIRST_OWNER: &str = "SELECT owner FROM conversations ORDER BY owner LIMIT 1";

const IDLE_BATCH: &str =
    "SELECT id FROM conversations WHERE owner = ?1 AND updated_at < ?2 LIMIT ?3";

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
    let mut walk = Walk::Start;
    let mut deleted = 0;
    loop {
        let mut writing = lock_write(pool).await;
        let mut tx = writing.begin().await?;
        let ids: Vec<Uuid> = match sweep {
            Sweep::Owner(owner) => {
                sqlx::query_scalar(OWNER_BATCH)
                    .bind(owner)
                    .bind(BATCH)
                    .fetch_all(&mut *tx)
                    .await?
            }
            Sweep::IdleSince(_) => pick_idle(&mut tx, &before, &mut walk).await?,
        };
        // Erasing ends with the first empty batch; purging, once the walk has passed every
        // owner (a batch may come back empty before that).
        let last = match sweep {
            Sweep::Owner(_) => ids.is_empty(),
            Sweep::IdleSince(_) => matches!(walk, Walk::Done),
        };
        for id in ids {
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
        if last {
            return Ok(deleted);
        }
    }
}

/// Where a purge is in its walk over the owners.
enum Walk {
    /// No owner looked at yet.
    Start,
    /// This owner's idle conversations are the next to pick.
    At(String),
    /// Every owner was looked at.
    Done,
}

/// Up to [`BATCH`] conversations idle since `before`, owner by owner from where `walk`
/// stands, which moves on past each owner found to have no more. At most [`BATCH`]
/// owners are looked at, so that a transaction stays short across many owners with
/// nothing idle: a batch may come back empty with the walk not done.
async fn pick_idle(
    tx: &mut SqliteConnection,
    before: &str,
    walk: &mut Walk,
) -> Result<Vec<Uuid>, StoreError> {
    let mut ids = Vec::new();
    for _ in 0..BATCH {
        let owner = match std::mem::replace(walk, Walk::Done) {
            Walk::Start => {
                sqlx::query_scalar(FIRST_OWNER)
                    .fetch_optional(&mut *tx)
                    .await?
            }
            Walk::At(owner) => Some(owner),
            Walk::Done => None,
        };
        let Some(owner) = owner else {
            break;
        };
        let room = BATCH - ids.len() as i64;
        let found: Vec<Uuid> = sqlx::query_scalar(IDLE_BATCH)
            .bind(owner.as_str())
            .bind(before)
            .bind(room)
            .fetch_all(&mut *tx)
            .await?;
        let exhausted = (found.len() as i64) < room;
        ids.extend(found);
        *walk = if exhausted {
            sqlx::query_scalar(NEXT_OWNER)
                .bind(owner)
                .fetch_optional(&mut *tx)
                .await?
                .map_or(Walk::Done, Walk::At)
        } else {
            Walk::At(owner)
        };
        if !exhausted {
            break;
        }
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use sqlx::Row;
    use sqlx::sqlite::SqlitePoolOptions;

    use super::*;
    use crate::store::ConversationStore;

    /// A sweep's reads, planned on the migrated schema: each reads a range of an index
    /// that holds what it selects, in the index's order, never the whole table and never
    /// a sort.
    #[tokio::test]
    async fn purging_reads_ranges_of_the_owners_indexes_never_the_whole_table() {
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .expect("open");
        pool.migrate().await.expect("migrate");
        // The first owner is the first entry of an index read in its order, where the
        // limit stops the read; the others are searches of a range.
        for (statement, read) in [
            (
                FIRST_OWNER,
                "SCAN conversations USING COVERING INDEX conversations_owner_id",
            ),
            (
                NEXT_OWNER,
                "SEARCH conversations USING COVERING INDEX conversations_owner_id (owner>?)",
            ),
            (
                IDLE_BATCH,
                "SEARCH conversations USING COVERING INDEX conversations_owner_recent (owner=? AND updated_at<?)",
            ),
            (
                OWNER_BATCH,
                "SEARCH conversations USING COVERING INDEX conversations_owner_id (owner=?)",
            ),
        ] {
            // Two constants of this module joined, no outside text.
            let explain = ["EXPLAIN QUERY PLAN ", statement].concat();
            let rows = sqlx::query(sqlx::AssertSqlSafe(explain))
                .fetch_all(&pool)
                .await
                .expect("plan");
            let plan: Vec<String> = rows.iter().map(|row| row.get("detail")).collect();
            assert_eq!(plan, [read], "{statement}");
        }
    }
}
