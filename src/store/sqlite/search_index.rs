//! The full-text index on SQLite, fed after the turn, in batches.
//!
//! FTS5 writes a segment of its index at every commit that added terms (and at every
//! savepoint release: each turn of a batch has one), and merges segments later; fed row
//! by row by a trigger, the index took most of a turn's instructions (see
//! `docs/performance.md`). Since migration 0007 a message waits to be indexed, and
//! [`INDEX_PENDING`] moves every waiting message into the index in one statement, so one
//! segment serves many turns. Since migration 0008 a new message waits by its id alone:
//! `search_indexed.through` marks how far the index has come, and the list
//! `search_pending` holds only messages the index had passed whose text was rewritten
//! (the migration says how a deleted highest id is kept from coming back unindexed).
//! [`INDEX_PENDING`] runs:
//!
//! - after a batch of turns, in a task that holds the file's place in the write queue,
//!   when the last indexing is [`INDEX_EVERY`] old or more, or [`INDEX_AFTER_TURNS`]
//!   turns were written since ([`Indexing::due`]); the batch's turns have their answers
//!   without waiting for it. A turn adds no work to the index itself;
//! - before every search ([`catch_up`]), when anything is pending, so a search sees
//!   every message committed before it began, as it did when the trigger fed the index.
//!
//! Nothing else reads the index. The mark and the list are in the database file, so
//! pending messages survive a restart and another process on the same file indexes them
//! as well.

use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use sqlx::{Connection, SqliteConnection, SqlitePool};

use super::write_queue::{BEGIN_WRITE, lock_write};
use crate::store::StoreError;

/// How long pending messages may wait for a batch of turns to index them. Searches never
/// wait for it: they index what is pending first. Each indexing costs much the same
/// whether it holds a few turns or a hundred (FTS5 writes a segment, its structure and
/// their pages, and merges segments): at a turn every 25 ms or so, indexing every
/// 200 ms cost each turn about 14,000 instructions, which a second brings down to a
/// few thousand (`docs/performance.md`).
pub(super) const INDEX_EVERY: Duration = Duration::from_secs(1);

/// How many turns written since the last indexing make the next batch index at once,
/// however recent the last indexing. FTS5 builds an indexing's terms in memory: at once
/// a second under the soak's load (about 1,200 messages a second) the proxy's resident
/// memory grew 10 to 12 % over 20,000 turns, against 6 to 8 % at every 200 ms, which is
/// about what this many turns take at that load.
pub(super) const INDEX_AFTER_TURNS: usize = 120;

/// Moves every pending message into the full-text index, with its current text (the new
/// ones, past the mark, and the rewritten ones on the list), and moves the mark to the
/// highest id: one call, three statements, inside a write transaction.
const INDEX_PENDING: &str = "
INSERT INTO messages_search (rowid, content_text)
SELECT id, content_text FROM messages WHERE id > (SELECT through FROM search_indexed)
UNION ALL
SELECT m.id, m.content_text FROM search_pending p JOIN messages m ON m.id = p.id;
DELETE FROM search_pending;
UPDATE search_indexed SET through = (SELECT coalesce(max(id), 0) FROM messages)";

const ANY_PENDING: &str = "
SELECT EXISTS (SELECT 1 FROM search_pending)
    OR EXISTS (SELECT 1 FROM messages WHERE id > (SELECT through FROM search_indexed))";

/// When a database file's pending messages were last indexed by a batch of turns, and
/// how many turns were written since.
#[derive(Debug)]
pub(super) struct Indexing {
    since: Mutex<Since>,
}

#[derive(Debug)]
struct Since {
    indexed: Instant,
    turns: usize,
}

impl Default for Indexing {
    fn default() -> Self {
        Self {
            since: Mutex::new(Since {
                indexed: Instant::now(),
                turns: 0,
            }),
        }
    }
}

impl Indexing {
    /// Whether the writer that just wrote a batch of `turns` should index what is
    /// pending, and if so, notes that it does (indexing that fails leaves the list for
    /// the next time).
    pub(super) fn due(&self, turns: usize) -> bool {
        let mut since = self.since.lock().unwrap_or_else(PoisonError::into_inner);
        since.turns = since.turns.saturating_add(turns);
        let now = Instant::now();
        if since.turns < INDEX_AFTER_TURNS && now.duration_since(since.indexed) < INDEX_EVERY {
            return false;
        }
        *since = Since {
            indexed: now,
            turns: 0,
        };
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
    lock_write(pool).await.index_pending().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enough_turns_make_an_indexing_due_before_its_time() {
        let indexing = Indexing::default();
        assert!(!indexing.due(1), "one turn, just after the last indexing");
        assert!(!indexing.due(INDEX_AFTER_TURNS - 2));
        assert!(
            indexing.due(1),
            "the turn that makes it {INDEX_AFTER_TURNS}"
        );
        assert!(!indexing.due(1), "counted afresh from the indexing");
    }

    #[test]
    fn a_batch_indexes_once_the_last_indexing_is_old_enough() {
        let indexing = Indexing::default();
        indexing.since.lock().unwrap().indexed -= INDEX_EVERY;
        assert!(indexing.due(1));
        assert!(!indexing.due(1));
    }
}
