//! Erasing an owner's conversations and purging idle ones, on PostgreSQL: see
//! [`retention`](crate::store::retention) for the shape both backends share.

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row};
use uuid::Uuid;

use super::delete_messages;
use super::session::Session;
use crate::store::StoreError;
use crate::store::retention::{BATCH, Sweep};

const OWNER_BATCH: &str = "SELECT id FROM conversations WHERE owner = $1 LIMIT $2";

/// Messages follow in the same transaction ([`delete_messages`]).
const DELETE_OWNED: &str = "DELETE FROM conversations WHERE id = $1 AND owner = $2";

const IDLE_BATCH: &str = "SELECT id FROM conversations WHERE updated_at < $1 LIMIT $2";

const DELETE_IDLE: &str = "DELETE FROM conversations WHERE id = $1 AND updated_at < $2";

/// Deletes what `sweep` selects, batch after batch, one conversation per statement;
/// returns how many conversations went.
pub(super) async fn sweep(pool: &PgPool, sweep: Sweep<'_>) -> Result<u64, StoreError> {
    let mut deleted = 0;
    loop {
        let ids = batch(pool, sweep).await?;
        if ids.is_empty() {
            return Ok(deleted);
        }
        for id in ids {
            let mut tx = Session::transaction(pool).await?;
            let query = match sweep {
                Sweep::Owner(owner) => tx.query(DELETE_OWNED).bind(id).bind(owner.to_owned()),
                Sweep::IdleSince(before) => tx.query(DELETE_IDLE).bind(id).bind(before),
            };
            let done = query.execute(tx.connection()).await?;
            // A turn may have revived an idle one since the batch was read: then the
            // row stays, and so do its messages.
            if done.rows_affected() > 0 {
                delete_messages(&mut tx, id).await?;
            }
            tx.commit().await?;
            deleted += done.rows_affected();
        }
    }
}

async fn batch(pool: &PgPool, sweep: Sweep<'_>) -> Result<Vec<Uuid>, StoreError> {
    let mut session = Session::statement(pool).await?;
    let query = match sweep {
        Sweep::Owner(owner) => session.query(OWNER_BATCH).bind(owner.to_owned()),
        Sweep::IdleSince(before) => session.query(IDLE_BATCH).bind::<DateTime<Utc>>(before),
    };
    let rows = query.bind(BATCH).fetch_all(session.connection()).await?;
    session.commit().await?;
    rows.iter()
        .map(|row| row.try_get("id").map_err(StoreError::from))
        .collect()
}
