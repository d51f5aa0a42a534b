//! The full-text index on SQLite, fed after the turn, in batches.
//!
//! FTS5 writes a segment of its index at every commit that added terms (and at every
//! savepoint release: each turn of a batch has one), and merges segments later; fed row
//! by row by a trigger, the index took most of a turn's instructions (see
//! `docs/performance.md`). Since migration 0007 an inserted message goes on a list,
//! `search_pending`, and [`INDEX_PENDING`] moves the whole list into the index in one
//! statement, so one segment serves many turns. That runs:
//!
//! - after a batch of turns, in a task that holds the file's place in the write queue,
//!   when the last indexing is [`INDEX_EVERY`] old or more ([`Indexing::due`]); the
//!   batch's turns have their answers without waiting for it. The only work a turn adds
//!   to the index is an insert into a plain table;
//! - before every search ([`catch_up`]), when anything is pending, so a search sees
//!   every message committed before it began, as it did when the trigger fed the index.
//!
//! Nothing else reads the index. Pending rows are in the database file, so they survive
//! a restart and another process on the same file indexes them as well.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::{Connection, SqliteConnection, SqlitePool};

use super::write_queue::{BEGIN_WRITE, lock_write};
use crate::store::StoreError;

/// How long pending messages may wait for a batch of turns to index them. Searches never
/// wait for it: they index what is pending first. Short enough that one indexing holds
/// few turns: FTS5 builds a batch's terms in memory, and at once a second (about 1,200
/// messages under the soak's load) the proxy's resident memory grew 10 to 12 % over
/// 20,000 turns, against 6 to 8 % at 200 ms.
pub(super) const INDEX_EVERY: Duration = Duration::from_millis(200);

/// Moves every pending message into the full-text index, with its current text: one
/// call, two statements, inside a write transaction.
const INDEX_PENDING: &str = "
INSERT INTO messages_search (rowid, content_text)
SELECT m.id, m.content_text FROM search_pending p JOIN messages m ON m.id = p.id;
DELETE FROM search_pending";

const ANY_PENDING: &str = "SELECT EXISTS (SELECT 1 FROM search_pending)";

/// When a database file's pending messages were last indexed by a batch of turns.
#[derive(Debug)]
pub(super) struct Indexing {
    last: Mutex<Instant>,
}

impl Default for Indexing {
    fn default() -> Self {
        Self {
            last: Mutex::new(Instant::now()),
        }
    }
}

impl Indexing {
    /// Whether the writer that just wrote a batch should index what is pending, and if
    /// so, notes that it does (indexing that fails leaves the list for the next time).
    pub(super) fn due(&self) -> bool {
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        if now.duration_since(*last) < INDEX_EVERY {
            return false;
        }
        *last = now;
        true
    }
}

/// Indexes every pending message, in a write transaction of its own. Only a holder of
/// the file's place in this process's write queue calls it.
pub(super) async fn index_pending(connection: &mut SqliteConnection) -> Result<(), StoreError> {
    let mut tx = connection.begin_with(BEGIN_WRITE).await?;
    sqlx::query(INDEX_PENDING).execute(&mut *tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Indexes every pending message before a search, queued behind this process's other
/// writers; nothing when nothing is pending.
pub(super) async fn catch_up(pool: &SqlitePool) -> Result<(), StoreError> {
    let pending: bool = sqlx::query_scalar(ANY_PENDING).fetch_one(pool).await?;
    if !pending {
        return Ok(());
    }
    let mut writing = lock_write(pool).await;
    index_pending(writing.connection().await?).await
}
