//! The write queue of a SQLite database file, and group commit of turns.
//!
//! SQLite lets one connection write a file at a time, and its busy handler waits by
//! sleeping (1, 2, 5, 10 ms and longer), so a writer that found the lock taken would
//! sleep well past the moment it is free. Writers of one process therefore queue here,
//! in process, before they ask SQLite for its lock.
//!
//! Turns, one per streamed reply and so the bulk of the writes, do better than queue.
//! A turn joins its file's list of waiting turns, and whichever of them gets the lock
//! first writes every turn on the list in one transaction, each inside a savepoint of
//! its own so that one turn's failure leaves the others as they were. One commit, and
//! one write of the table and index pages the turns share, then serves them all (FTS5
//! still writes a segment per turn: it flushes its pending terms at every savepoint),
//! and a turn that arrives while a batch is being written waits only for that batch to
//! end. Turns of one conversation are written in the order they joined.
//!
//! Queues are kept per file name. A database private to each connection (`:memory:`
//! or the empty name) is not one file, so its turns are written one by one.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::path::{Path, PathBuf};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::Poll;

use sqlx::SqlitePool;
use tokio::sync::{OwnedMutexGuard, oneshot};

use super::{BEGIN_WRITE, TurnRows, timestamp, write_turn};
use crate::store::StoreError;

/// The queue of one database file.
#[derive(Default)]
struct FileQueue {
    /// Held by the one writer of this process.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Turns waiting for a writer to take them, in the order they came.
    waiting: Mutex<Vec<QueuedTurn>>,
    /// The number of the next turn to join the list.
    next_ticket: AtomicU64,
}

/// A turn on the list, with the way back to the caller that waits for it.
struct QueuedTurn {
    ticket: u64,
    turn: TurnRows,
    written: oneshot::Sender<Result<i64, StoreError>>,
}

/// Held by the caller of a turn on the list. A caller that stops waiting (its future
/// dropped at a timeout) takes its turn off the list if no writer took it yet: it was
/// told the turn failed, so the turn must not be written later by whoever comes next.
struct Ticket<'q> {
    queue: &'q FileQueue,
    number: u64,
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        lock(&self.queue.waiting).retain(|queued| queued.ticket != self.number);
    }
}

/// The queue of a database file; every pool on one file shares it.
fn file_queue(file: &Path) -> Arc<FileQueue> {
    type Queues = Mutex<HashMap<PathBuf, Arc<FileQueue>>>;
    static QUEUES: OnceLock<Queues> = OnceLock::new();
    lock(QUEUES.get_or_init(Queues::default))
        .entry(file.to_path_buf())
        .or_default()
        .clone()
}

/// Locks a map or list that stays whole whatever a panicking holder did: each change to
/// it is one step.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Waits for this process's turn to write to the pool's database file; hold the guard
/// until the transaction ends.
pub(super) async fn queue_for_writing(pool: &SqlitePool) -> OwnedMutexGuard<()> {
    file_queue(pool.connect_options().get_filename())
        .writer
        .clone()
        .lock_owned()
        .await
}

/// Writes `turn`, in a batch with every other turn waiting for the same file, and
/// returns the sequence number of its first message.
pub(super) async fn append(pool: &SqlitePool, turn: TurnRows) -> Result<i64, StoreError> {
    let options = pool.connect_options();
    let queue = file_queue(options.get_filename());
    if is_private(options.get_filename()) {
        let _writing = queue.writer.clone().lock_owned().await;
        return write_batch(pool, vec![turn])
            .await
            .pop()
            .unwrap_or_else(|| Err(abandoned()));
    }
    let (written, mut result) = oneshot::channel();
    let ticket = Ticket {
        queue: &queue,
        number: queue.next_ticket.fetch_add(1, Ordering::Relaxed),
    };
    lock(&queue.waiting).push(QueuedTurn {
        ticket: ticket.number,
        turn,
        written,
    });
    let _writing = match writer_or_outcome(&queue, &mut result).await {
        Woken::Written(outcome) => return outcome,
        Woken::Writer(writing) => writing,
    };
    match result.try_recv() {
        // The batch that ended as the lock came took this turn along.
        Ok(outcome) => return outcome,
        Err(oneshot::error::TryRecvError::Closed) => return Err(abandoned()),
        // Still on the list: no writer took it, since each takes the list under the lock.
        Err(oneshot::error::TryRecvError::Empty) => {}
    }
    write_waiting_turns(pool, &queue).await;
    result.await.unwrap_or_else(|_| Err(abandoned()))
}

/// What a queued turn's caller woke up to.
enum Woken {
    /// A writer ahead of it took its turn along: it need not write at all.
    Written(Result<i64, StoreError>),
    /// It is the file's writer now.
    Writer(OwnedMutexGuard<()>),
}

async fn writer_or_outcome(
    queue: &FileQueue,
    result: &mut oneshot::Receiver<Result<i64, StoreError>>,
) -> Woken {
    let mut writer = pin!(queue.writer.clone().lock_owned());
    poll_fn(|cx| match Pin::new(&mut *result).poll(cx) {
        Poll::Ready(outcome) => {
            Poll::Ready(Woken::Written(outcome.unwrap_or_else(|_| Err(abandoned()))))
        }
        Poll::Pending => writer.as_mut().poll(cx).map(Woken::Writer),
    })
    .await
}

/// Takes every turn on the list, writes them as one batch and answers their callers.
/// Only the file's writer calls this.
async fn write_waiting_turns(pool: &SqlitePool, queue: &FileQueue) {
    let batch = std::mem::take(&mut *lock(&queue.waiting));
    let (turns, callers): (Vec<_>, Vec<_>) = batch
        .into_iter()
        .map(|queued| (queued.turn, queued.written))
        .unzip();
    let outcomes = write_batch(pool, turns).await;
    for (caller, outcome) in callers.into_iter().zip(outcomes) {
        // A caller that stopped waiting (its future dropped) needs no answer.
        let _ = caller.send(outcome);
    }
}

/// Whether each connection to this name opens a database of its own.
fn is_private(file: &Path) -> bool {
    file.as_os_str().is_empty() || file.as_os_str() == ":memory:"
}

/// Writes the turns in one transaction and returns each one's outcome, in order. When
/// the transaction itself fails, every turn fails with it: none of them is stored.
async fn write_batch(pool: &SqlitePool, turns: Vec<TurnRows>) -> Vec<Result<i64, StoreError>> {
    let count = turns.len();
    match write_in_one_transaction(pool, &turns).await {
        Ok(outcomes) => outcomes,
        Err(error) => fan_out(error, count),
    }
}

async fn write_in_one_transaction(
    pool: &SqlitePool,
    turns: &[TurnRows],
) -> Result<Vec<Result<i64, StoreError>>, StoreError> {
    let mut tx = pool.begin_with(BEGIN_WRITE).await?;
    let now = timestamp();
    let mut outcomes = Vec::with_capacity(turns.len());
    for turn in turns {
        outcomes.push(write_turn(&mut tx, turn, &now).await?);
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// One failure of a whole batch, told to each of its turns: the same kind of error
/// for every copy, with the original as its source.
fn fan_out(error: StoreError, count: usize) -> Vec<Result<i64, StoreError>> {
    let shared = Arc::new(error);
    (0..count)
        .map(|_| {
            let cause = Box::new(BatchFailed(shared.clone()));
            Err(match *shared {
                StoreError::Unavailable(_) => StoreError::Unavailable(cause),
                StoreError::Corrupt(_) => StoreError::Corrupt(cause),
                _ => StoreError::Query(cause),
            })
        })
        .collect()
}

/// The error of the transaction a turn was written in.
#[derive(Debug, thiserror::Error)]
#[error("the transaction of this turn's batch failed")]
struct BatchFailed(#[source] Arc<StoreError>);

/// The writer that took this turn along stopped before it committed (its caller gave up
/// waiting), so the turn was rolled back with the rest of that batch.
#[derive(Debug, thiserror::Error)]
#[error("the batch holding this turn was abandoned before it committed")]
struct Abandoned;

fn abandoned() -> StoreError {
    StoreError::Unavailable(Box::new(Abandoned))
}
