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
//! one write of the table and index pages the turns share, then serves them all, and a
//! turn that arrives while a batch is being written waits only for that batch to end.
//! A batch of one turn, the usual batch when turns do not overlap, is written on the
//! caller's thread when it is a question and its reply (see [`inline`]), and otherwise goes
//! to SQLite as one call, its `BEGIN IMMEDIATE` and `COMMIT` included (see
//! [`write_alone`]).
//! Turns of one conversation are written in the order they joined. The full-text index
//! is fed after a batch, at most once a second unless many turns wait (see
//! [`search_index`](super::search_index)). Each batch, and each feed of the index, is
//! offered to the file's [`CommitChain`] as a link: the WAL index's header read before
//! and after it tells whether its commit was the only one between.
//!
//! Writes of one process also go through one connection of their own, which the file's
//! writer keeps from write to write (see [`Writer`] and [`Writes`]): SQLite drops a
//! connection's page cache whenever another connection wrote the file since its last
//! transaction, so with the pool handing its connections out in turn, every write read
//! again each page it touched. (A lone turn written on the caller's thread goes through
//! a second one, held beside it, and the reads between writes follow it: see [`inline`].)
//!
//! Queues are kept per file name. A database private to each connection (`:memory:`
//! or the empty name) is not one file, so its turns are written one by one, on the
//! caller's pool.

use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::path::{Path, PathBuf};
use std::pin::{Pin, pin};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::task::Poll;
use std::time::Duration;

use chrono::{DateTime, Datelike, SecondsFormat, Timelike, Utc};
use sqlx::pool::PoolConnection;
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqlitePoolOptions, SqliteRow};
use sqlx::{Connection, Sqlite, SqliteConnection, SqlitePool, Transaction};
use tokio::sync::{OwnedMutexGuard, oneshot};
use uuid::Uuid;

use super::commit_chain::CommitChain;
use super::search_index::{Indexing, index_pending};
use crate::store::StoreError;
use crate::store::batch::SqliteBatch;
use crate::store::history_cache::{HistoryCache, Revision};
use crate::store::per_pool::PerPool;

/// Takes the write lock at once rather than at the first write.
pub(super) const BEGIN_WRITE: &str = "BEGIN IMMEDIATE";

/// Appends a turn: its messages, numbered on from the conversation's next sequence
/// number (never from its count, which a truncation lowers), then both moved past them
/// and the conversation's revision moved on (see [`Revision`]), which the call returns.
/// The statements are sent as one call, since every call is a round trip to the
/// connection's worker thread; inside the batch's `BEGIN IMMEDIATE` nothing can come
/// between them. An unknown id (or another owner's) inserts nothing and returns no row.
///
/// `?1` id, `?2` owner, `?3` message count, `?4` now, then the messages: `?5` the batch
/// ([`APPEND_TURN`]), or `?5` to `?16` the columns of a pair ([`APPEND_PAIR`]).
macro_rules! append_turn {
    ($($rows:tt)+) => {
        concat!(append_messages!($($rows)+), ";\n", move_on!(), ";\n", revision_after!())
    };
}

/// The first of [`append_turn!`]'s statements: the messages.
macro_rules! append_messages {
    ($($rows:tt)+) => {
        concat!(
            "INSERT INTO messages (conversation_id, sequence_number, created_at, role, message,
                      content_text, reasoning, reasoning_events, metadata)
SELECT c.id, c.next_sequence + batch.key, ?4, batch.role, batch.message, batch.text,
       batch.reasoning, batch.events, batch.metadata
FROM conversations AS c, ",
            $($rows)+,
            " WHERE c.id = ?1 AND c.owner = ?2"
        )
    };
}

/// The second of [`append_turn!`]'s statements: the conversation's row moved past the
/// `?3` messages appended.
macro_rules! move_on {
    () => {
        "UPDATE conversations
SET message_count = message_count + ?3, next_sequence = next_sequence + ?3, updated_at = ?4,
    revision = revision + 1
WHERE id = ?1 AND owner = ?2"
    };
}

/// The last of [`append_turn!`]'s statements: the conversation's revision after the turn.
macro_rules! revision_after {
    () => {
        "SELECT revision, next_sequence, message_count FROM conversations WHERE id = ?1 AND owner = ?2"
    };
}

/// An appended pair's rows, from its columns bound as `?5` to `?16`.
macro_rules! appended_pair {
    () => {
        message_pair!(
            "?5", "?6", "?7", "?8", "?9", "?10", "?11", "?12", "?13", "?14", "?15", "?16"
        )
    };
}

/// A new conversation's pair, from its columns bound as `?7` to `?18`.
macro_rules! created_pair {
    () => {
        insert_message_pair!(
            "?7", "?8", "?9", "?10", "?11", "?12", "?13", "?14", "?15", "?16", "?17", "?18"
        )
    };
}

/// The first turn of a conversation: its row and messages as `CREATE_WITH_MESSAGES`
/// writes them, without the `RETURNING` clause (a turn reads nothing back): `?1` id,
/// `?2` owner, `?3` title, `?4` now, `?5` message count, `?6` metadata, then `?7` the
/// batch ([`CREATE_TURN`]) or `?7` to `?18` the columns of a pair ([`CREATE_PAIR`], in
/// one `INSERT … VALUES`: see `insert_message_pair!`).
macro_rules! create_turn {
    (json) => {
        concat!(
            insert_conversation!(),
            ";\n",
            insert_messages!(message_json!("?7"))
        )
    };
    (pair) => {
        concat!(insert_conversation!(), ";\n", created_pair!())
    };
}

/// A turn of a batch of several: inside a savepoint, so that a failed turn leaves
/// nothing behind ([`ROLLBACK_TURN`] undoes it) and the batch's other turns commit.
macro_rules! in_savepoint {
    ($($turn:tt)+) => {
        concat!("SAVEPOINT turn;\n", $($turn)+, ";\nRELEASE turn")
    };
}

/// A batch of one turn: its transaction begun and committed in the same call as its
/// statements (see [`write_alone`]).
macro_rules! alone {
    ($($turn:tt)+) => {
        concat!("BEGIN IMMEDIATE;\n", $($turn)+, ";\nCOMMIT")
    };
}

const APPEND_TURN: &str = in_savepoint!(append_turn!(message_json!("?5")));
const APPEND_TURN_ALONE: &str = alone!(append_turn!(message_json!("?5")));
const APPEND_PAIR: &str = in_savepoint!(append_turn!(appended_pair!()));
const APPEND_PAIR_ALONE: &str = alone!(append_turn!(appended_pair!()));

const CREATE_TURN: &str = in_savepoint!(create_turn!(json));
const CREATE_TURN_ALONE: &str = alone!(create_turn!(json));
const CREATE_PAIR: &str = in_savepoint!(create_turn!(pair));
const CREATE_PAIR_ALONE: &str = alone!(create_turn!(pair));

/// Undoes what a turn that failed halfway wrote, and leaves the batch's transaction open.
const ROLLBACK_TURN: &str = "ROLLBACK TO turn; RELEASE turn";

// After the turn statements' macros, which it builds its statements from.
mod inline;

use inline::{Inline, Written, inline_pair};
pub(super) use inline::{InlineWriter, query_error};

/// The queue of one database file.
struct FileQueue {
    /// Held by the one writer of this process, with the connection it writes on.
    writer: Arc<tokio::sync::Mutex<Writer>>,
    /// The pool that connection comes from.
    writes: Mutex<Writes>,
    /// Turns waiting for a writer to take them, in the order they came.
    waiting: Mutex<Vec<QueuedTurn>>,
    /// The number of the next turn to join the list.
    next_ticket: AtomicU64,
    /// When its writers last fed the full-text index.
    indexing: Indexing,
    /// The writes of this process that nothing else came between.
    chain: CommitChain,
}

impl FileQueue {
    fn new(file: &Path) -> Self {
        Self {
            writer: Arc::default(),
            writes: Mutex::default(),
            waiting: Mutex::default(),
            next_ticket: AtomicU64::default(),
            indexing: Indexing::default(),
            chain: CommitChain::new((!is_private(file)).then_some(file)),
        }
    }
}

/// The pool of one connection that a file's writes in this process go through, so that
/// the connection's page cache stays valid from one write to the next: the pages a turn
/// touches (a conversation's row and index entries, its messages) are read from the
/// file once, not again by each write (about 35,000 instructions of a SQLite turn; see
/// `docs/performance.md`).
///
/// It is opened from the caller's pool's connect options (its `after_connect` hook, if
/// it has one, does not run on it), in addition to that pool's connections, held by the
/// [`Writer`] from write to write and closed [`WRITER_IDLE`] to twice that after the last
/// one, and is given up when that pool closes or is dropped, or when the runtime it was
/// opened on ends.
#[derive(Default)]
struct Writes {
    pool: Option<SqlitePool>,
    /// Which pool this is, for the task that gives it up.
    generation: u64,
}

/// What the file's writer holds besides its place in the queue: the writer pool's
/// connection, kept from one write to the next rather than taken from the pool and given
/// back each time (a pool's acquire, and the task its connection's drop spawns to return
/// it, cost a SQLite turn about 8,000 instructions; see `docs/performance.md`).
#[derive(Default)]
struct Writer {
    held: Option<Held>,
    /// Whether a write took the connection since the idle check last looked.
    wrote: bool,
    /// Whether a call that begins and commits its own transaction ([`write_alone`]) is
    /// under way on the held connection: cut off, it may leave that transaction open.
    may_be_open: bool,
}

/// A connection the writer holds.
struct Held {
    /// The connection a batch of one turn is written on, on the caller's thread, beside
    /// `connection` (see [`inline`]). Declared first: it closes first, so that SQLite
    /// never finds it the file's last connection, whose close checkpoints.
    inline: Inline,
    connection: PoolConnection<Sqlite>,
    /// The writer pool it came from ([`Writes::generation`]), or `None` for one of the
    /// caller's own pool's (a database private to each connection, a closed pool), given
    /// back as soon as the write ends.
    generation: Option<u64>,
}

/// How long the writer's connection is kept without writes: a task looks once a period
/// and closes it when no write took it since the last look, one to two periods after
/// the last write.
const WRITER_IDLE: Duration = Duration::from_secs(60);

/// The pool `pool`'s writes go through and its generation: the file's writer pool,
/// opened when there is none (or it was closed), or `pool` itself (no generation) for a
/// database private to each connection and for a closed pool (whose writes fail as they
/// always did).
fn writes_pool(pool: &SqlitePool, queue: &Arc<FileQueue>) -> (SqlitePool, Option<u64>) {
    if pool.is_closed() || is_private(pool.connect_options().get_filename()) {
        return (pool.clone(), None);
    }
    let mut writes = lock(&queue.writes);
    if let Some(writer) = writes.pool.as_ref().filter(|writer| !writer.is_closed()) {
        return (writer.clone(), Some(writes.generation));
    }
    // The connection lives in this process and cannot go stale: no ping before each use.
    let writer = SqlitePoolOptions::new()
        .max_connections(1)
        .min_connections(0)
        .idle_timeout(WRITER_IDLE)
        .test_before_acquire(false)
        .connect_lazy_with(SqliteConnectOptions::clone(&pool.connect_options()));
    writes.generation += 1;
    writes.pool = Some(writer.clone());
    let give_up = GiveUp {
        queue: queue.clone(),
        generation: writes.generation,
    };
    let generation = writes.generation;
    let closed = pool.close_event();
    tokio::spawn(async move {
        let mut closed = pin!(closed);
        while tokio::time::timeout(WRITER_IDLE, closed.as_mut())
            .await
            .is_err()
        {
            give_up.let_go_if_idle().await;
        }
        drop(give_up);
    });
    (writer, Some(generation))
}

/// Lets go of the writer pool of one generation, and of the connection the writer holds
/// from it, when the caller's pool closes, or when the runtime drops the task waiting
/// for that.
struct GiveUp {
    queue: Arc<FileQueue>,
    generation: u64,
}

impl GiveUp {
    /// Lets go of the held connection of this generation if no write took it since the
    /// last look.
    async fn let_go_if_idle(&self) {
        let mut writer = self.queue.writer.lock().await;
        if !std::mem::take(&mut writer.wrote) {
            self.let_go(&mut writer);
        }
    }

    fn let_go(&self, writer: &mut Writer) {
        if let Some(held) = writer
            .held
            .take_if(|held| held.generation == Some(self.generation))
        {
            // Detached, its drop needs no runtime (the runtime may be ending): the
            // connection closes, and the pool counts it gone.
            held.close();
        }
    }
}

impl Drop for GiveUp {
    fn drop(&mut self) {
        {
            let mut writes = lock(&self.queue.writes);
            if writes.generation == self.generation {
                // The pool closes once the last write holding it ends.
                writes.pool = None;
            }
        }
        // A write under way keeps the connection until it ends; the next write finds its
        // generation gone and lets go of it then.
        if let Ok(mut writer) = self.queue.writer.try_lock() {
            self.let_go(&mut writer);
        }
    }
}

/// A turn on the list, with the way back to the caller that waits for it.
struct QueuedTurn {
    ticket: u64,
    turn: TurnRows,
    /// The history cache of the pool the turn came from (see [`CommitChain`]).
    cache: Arc<HistoryCache>,
    written: oneshot::Sender<Result<Appended, StoreError>>,
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

/// The queue of the pool's database file, remembered per pool: finding it by the file's
/// name hashed the name and copied it for every write (about 1,500 instructions a turn).
fn pool_queue(pool: &SqlitePool) -> Arc<FileQueue> {
    static QUEUES: PerPool<SqliteConnectOptions, Arc<FileQueue>> = PerPool::new();
    let options = pool.connect_options();
    QUEUES.get(&options, || file_queue(options.get_filename()))
}

/// The queue of a database file; every pool on one file shares it.
fn file_queue(file: &Path) -> Arc<FileQueue> {
    type Queues = Mutex<HashMap<PathBuf, Arc<FileQueue>>>;
    static QUEUES: OnceLock<Queues> = OnceLock::new();
    lock(QUEUES.get_or_init(Queues::default))
        .entry(file.to_path_buf())
        .or_insert_with(|| Arc::new(FileQueue::new(file)))
        .clone()
}

/// Locks a map or list that stays whole whatever a panicking holder did: each change to
/// it is one step.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// This process's place at the head of a file's write queue, and the connection that goes
/// with it: held until the write ends, so the next writer asks SQLite for the lock only
/// once it is free.
pub(super) struct WriteLock {
    writer: OwnedMutexGuard<Writer>,
    pool: SqlitePool,
    queue: Arc<FileQueue>,
}

/// Waits for this process's turn to write to the pool's database file.
pub(super) async fn lock_write(pool: &SqlitePool) -> WriteLock {
    let queue = pool_queue(pool);
    let writer = queue.writer.clone().lock_owned().await;
    WriteLock {
        writer,
        pool: pool.clone(),
        queue,
    }
}

impl WriteLock {
    /// The connection to write on: the one the writer holds, or (when it holds none, or
    /// one of a writer pool given up since) one taken from the pool writes go through.
    pub(super) async fn connection(&mut self) -> Result<&mut SqliteConnection, StoreError> {
        Ok(&mut self.held().await?.connection)
    }

    /// What the writer holds to write on: see [`connection`](Self::connection).
    async fn held(&mut self) -> Result<&mut Held, StoreError> {
        let (pool, generation) = writes_pool(&self.pool, &self.queue);
        let writer = &mut *self.writer;
        writer.wrote = true;
        let held = match writer.held.take() {
            Some(held) if held.generation.is_some() && held.generation == generation => held,
            _ => Held {
                inline: Inline::default(),
                connection: pool.acquire().await?,
                generation,
            },
        };
        Ok(writer.held.insert(held))
    }

    /// Writes a batch of one turn on the inline connection, opening it when the held
    /// connection has none yet (see [`inline`]); `None` when the turn is to go the sqlx
    /// way: too large, no inline connection, or the file's write lock held elsewhere.
    async fn write_inline(
        &mut self,
        turn: &TurnRows,
        now: &str,
    ) -> Option<Result<Revision, StoreError>> {
        let pair = inline_pair(turn)?;
        let options = self.pool.connect_options();
        let held = self.held().await.ok()?;
        // A connection of the caller's pool goes back to it after this write.
        held.generation?;
        if matches!(held.inline, Inline::Unopened) {
            held.inline = Inline::open(&mut held.connection, &options).await;
        }
        let Inline::Open(inline) = &mut held.inline else {
            return None;
        };
        match inline.write(turn, pair, now) {
            Written::Done(outcome) => Some(outcome),
            Written::Busy => None,
            Written::Unbegun(error) => {
                tracing::debug!(%error, "SQLite turn goes through sqlx: the inline connection failed");
                // Closed; the next turn opens another.
                held.inline = Inline::Unopened;
                None
            }
            Written::Broken(error) => {
                // Closed; the next turn opens another.
                held.inline = Inline::Unopened;
                Some(Err(error))
            }
        }
    }

    /// A transaction that holds SQLite's write lock from the start; dropped uncommitted,
    /// it is rolled back before the connection's next statement.
    pub(super) async fn begin(&mut self) -> Result<Transaction<'_, Sqlite>, StoreError> {
        Ok(self.connection().await?.begin_with(BEGIN_WRITE).await?)
    }

    /// Moves the messages waiting for the full-text index into it. The index's tables hold
    /// no history: the write is offered to the file's [`CommitChain`] as a link that
    /// writes none.
    pub(super) async fn index_pending(&mut self) -> Result<(), StoreError> {
        let before = self.queue.chain.before();
        index_pending(self.connection().await?).await?;
        self.queue.chain.link(before, &[]);
        Ok(())
    }

    /// Whether the pool's database is private to each connection (`:memory:`), whose
    /// connection must never be closed: its database would go with it.
    fn private(&self) -> bool {
        is_private(self.pool.connect_options().get_filename())
    }

    /// Gives the held connection back to its pool, after a failure that may have broken it.
    fn let_go(&mut self) {
        self.writer.held = None;
    }

    /// Closes the held connection, which a cut-off or failed call may have left inside a
    /// transaction that sqlx does not know of: back in the pool, it would hand that
    /// transaction to the next write. Detached, its drop needs no runtime.
    fn close_held(&mut self) {
        self.writer.may_be_open = false;
        if let Some(held) = self.writer.held.take() {
            held.close();
        }
    }
}

impl Held {
    /// Closes both connections, the inline one first. Detached, the sqlx connection's
    /// drop needs no runtime.
    fn close(self) {
        drop(self.inline);
        drop(self.connection.detach());
    }
}

impl Drop for WriteLock {
    fn drop(&mut self) {
        if self.writer.may_be_open {
            self.close_held();
        }
        // A connection of the caller's pool goes back to it at once.
        self.writer.held.take_if(|held| held.generation.is_none());
    }
}

/// The first write of the pool's file's [`CommitChain`] when nothing else was committed
/// to the file since that write, and the chain's turns came from the pool with `cache`.
pub(super) fn unchanged_since(pool: &SqlitePool, cache: &Arc<HistoryCache>) -> Option<u64> {
    pool_queue(pool).chain.unchanged_since(cache)
}

/// The connection the file's writer holds, lent to a read while no write is under way.
///
/// SQLite drops a connection's whole page cache when it begins a transaction and finds
/// that another connection wrote the file since its last one. A pool's connection that
/// reads a history just after a turn was written therefore reads every page again, each
/// one a system call (about 15 a continued request at a model's pace, 20 stored
/// messages), after emptying its cache. The writer's connection wrote those pages
/// itself and still holds them. Lent while the queue is idle and given back when the
/// read ends, it costs a write that comes meanwhile at most the read's time; a read that
/// finds a write under way, or no connection held, reads on the pool as before (`None`).
/// Where the writer writes turns on its inline connection, that is the one lent: the
/// sqlx connection's cache is as stale as a pool connection's.
/// Like the writes, such a read does not go through the caller's pool (none of its hooks
/// runs on it).
pub(super) fn idle_writer(pool: &SqlitePool) -> Option<IdleWriter> {
    if pool.is_closed() {
        return None;
    }
    let writer = pool_queue(pool).writer.clone().try_lock_owned().ok()?;
    let held = writer.held.as_ref()?;
    // A connection of the caller's pool (a private database's) goes back to it after
    // each write; one a cut-off call may have left in a transaction is not lent.
    (held.generation.is_some() && !writer.may_be_open).then_some(IdleWriter { writer })
}

/// The writer's connection, lent to a read by [`idle_writer`]: no write takes it until
/// this is dropped.
pub(super) struct IdleWriter {
    writer: OwnedMutexGuard<Writer>,
}

impl IdleWriter {
    /// The connection to read on: the inline one when the writer has it open, since
    /// that one wrote the last turns (see [`inline`]).
    pub(super) fn connection(&mut self) -> Option<Lent<'_>> {
        let held = self.writer.held.as_mut()?;
        Some(match &mut held.inline {
            Inline::Open(inline) => Lent::Inline(inline),
            _ => Lent::Sqlx(&mut held.connection),
        })
    }
}

/// A connection [`IdleWriter`] lends.
pub(super) enum Lent<'a> {
    /// Read on the caller's thread (see [`InlineWriter::read_row`]).
    Inline(&'a mut InlineWriter),
    Sqlx(&'a mut SqliteConnection),
}

/// What a turn's write left: the conversation's revision after it, and the number of
/// the write when it is a link of the file's [`CommitChain`].
pub(super) struct Appended {
    pub(super) revision: Revision,
    pub(super) link: Option<u64>,
}

/// Writes `turn`, in a batch with every other turn waiting for the same file; `cache`
/// is the history cache of `pool`.
pub(super) async fn append(
    pool: &SqlitePool,
    turn: TurnRows,
    cache: Arc<HistoryCache>,
) -> Result<Appended, StoreError> {
    if is_private(pool.connect_options().get_filename()) {
        let mut writing = lock_write(pool).await;
        let written = [(cache, turn.id)];
        let outcome = write_batch(&mut writing, vec![turn], &written)
            .await
            .pop()
            .unwrap_or_else(|| Err(abandoned()));
        index_if_due(writing, 1);
        return outcome;
    }
    let queue = pool_queue(pool);
    let (written, mut result) = oneshot::channel();
    let ticket = Ticket {
        queue: &queue,
        number: queue.next_ticket.fetch_add(1, Ordering::Relaxed),
    };
    lock(&queue.waiting).push(QueuedTurn {
        ticket: ticket.number,
        turn,
        cache,
        written,
    });
    let writer = match writer_or_outcome(&queue, &mut result).await {
        Woken::Written(outcome) => return outcome,
        Woken::Writer(writer) => writer,
    };
    match result.try_recv() {
        // The batch that ended as the lock came took this turn along.
        Ok(outcome) => return outcome,
        Err(oneshot::error::TryRecvError::Closed) => return Err(abandoned()),
        // Still on the list: no writer took it, since each takes the list under the lock.
        Err(oneshot::error::TryRecvError::Empty) => {}
    }
    let mut writing = WriteLock {
        writer,
        pool: pool.clone(),
        queue: queue.clone(),
    };
    let written = write_waiting_turns(&mut writing).await;
    index_if_due(writing, written);
    result.await.unwrap_or_else(|_| Err(abandoned()))
}

/// What a queued turn's caller woke up to.
enum Woken {
    /// A writer ahead of it took its turn along: it need not write at all.
    Written(Result<Appended, StoreError>),
    /// It is the file's writer now.
    Writer(OwnedMutexGuard<Writer>),
}

async fn writer_or_outcome(
    queue: &FileQueue,
    result: &mut oneshot::Receiver<Result<Appended, StoreError>>,
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

/// Takes every turn on the list, writes them as one batch, answers their callers and
/// returns how many there were. Only the file's writer calls this.
async fn write_waiting_turns(writing: &mut WriteLock) -> usize {
    let batch = std::mem::take(&mut *lock(&writing.queue.waiting));
    let mut turns = Vec::with_capacity(batch.len());
    let mut conversations = Vec::with_capacity(batch.len());
    let mut callers = Vec::with_capacity(batch.len());
    for queued in batch {
        conversations.push((queued.cache, queued.turn.id));
        turns.push(queued.turn);
        callers.push(queued.written);
    }
    let outcomes = write_batch(writing, turns, &conversations).await;
    let written = callers.len();
    for (caller, outcome) in callers.into_iter().zip(outcomes) {
        // A caller that stopped waiting (its future dropped) needs no answer.
        let _ = caller.send(outcome);
    }
    written
}

/// Feeds the full-text index what is pending, after a batch of `turns`, when
/// [`Indexing::due`](super::search_index::Indexing::due) says so, in a task of its own
/// that keeps the file's place in the queue (`writing`) until it is done: the batch's
/// callers, the writer's own included, have their answers without waiting for it (see
/// [`search_index`](super::search_index)). A failure only leaves the messages pending,
/// for the next time or the next search.
fn index_if_due(mut writing: WriteLock, turns: usize) {
    if !writing.queue.indexing.due(turns) {
        return;
    }
    tokio::spawn(async move {
        if let Err(error) = writing.index_pending().await {
            tracing::warn!(%error, "indexing messages for search failed; they stay pending");
        }
    });
}

/// Whether each connection to this name opens a database of its own.
fn is_private(file: &Path) -> bool {
    file.as_os_str().is_empty() || file.as_os_str() == ":memory:"
}

/// Writes the turns in one transaction and returns each one's outcome, in order. When
/// the transaction itself fails, every turn fails with it: none of them is stored, and
/// the writer lets go of its connection (its pool tests it before handing it out again,
/// and closes it if it is broken).
async fn write_batch(
    writing: &mut WriteLock,
    turns: Vec<TurnRows>,
    written: &[(Arc<HistoryCache>, Uuid)],
) -> Vec<Result<Appended, StoreError>> {
    let count = turns.len();
    let before = writing.queue.chain.before();
    match write_in_one_transaction(writing, turns).await {
        Ok(outcomes) => {
            let link = writing.queue.chain.link(before, written);
            let links = turn_links(written, link);
            outcomes
                .into_iter()
                .zip(links)
                .map(|(outcome, link)| outcome.map(|revision| Appended { revision, link }))
                .collect()
        }
        Err(error) => {
            writing.let_go();
            fan_out(error, count)
        }
    }
}

async fn write_in_one_transaction(
    writing: &mut WriteLock,
    mut turns: Vec<TurnRows>,
) -> Result<Vec<Result<Revision, StoreError>>, StoreError> {
    let now = timestamp();
    if turns.len() == 1
        && !writing.private()
        && let Some(turn) = turns.pop()
    {
        return Ok(vec![write_alone(writing, turn, &now).await]);
    }
    let mut tx = writing.begin().await?;
    let mut outcomes = Vec::with_capacity(turns.len());
    for turn in turns {
        outcomes.push(write_turn(&mut tx, turn, &now).await?);
    }
    tx.commit().await?;
    Ok(outcomes)
}

/// The link each turn of a batch written as `link` hands its caller: only a
/// conversation's last turn in the batch leaves it as the link left it. An earlier one,
/// linked, would stay linked if the later turn's caller never extended the history.
fn turn_links(written: &[(Arc<HistoryCache>, Uuid)], link: Option<u64>) -> Vec<Option<u64>> {
    (0..written.len())
        .map(|turn| {
            let id = written[turn].1;
            let last = written[turn + 1..].iter().all(|(_, later)| *later != id);
            link.filter(|_| last)
        })
        .collect()
}

/// One failure of a whole batch, told to each of its turns: the same kind of error
/// for every copy, with the original as its source.
fn fan_out<T>(error: StoreError, count: usize) -> Vec<Result<T, StoreError>> {
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

/// What the statements of one turn bind, apart from the time (one per batch).
pub(super) struct TurnRows {
    pub(super) owner: String,
    pub(super) id: Uuid,
    /// Whether the turn creates the conversation.
    pub(super) create: bool,
    pub(super) title: Option<String>,
    pub(super) count: i64,
    pub(super) rows: SqliteBatch,
}

/// Writes one turn of a batch inside `tx`. The outer error is the batch's: its
/// transaction can no longer be used. The inner one is this turn's alone, whose writes
/// were rolled back.
pub(super) async fn write_turn(
    tx: &mut SqliteConnection,
    turn: TurnRows,
    now: &str,
) -> Result<Result<Revision, StoreError>, StoreError> {
    let count = turn.count;
    let (query, create) = turn_query(turn, now, Wrapped::InSavepoint);
    match query.fetch_all(&mut *tx).await {
        Ok(rows) => Ok(turn_outcome(create, count, &rows)),
        Err(error) => {
            sqlx::query(ROLLBACK_TURN).execute(&mut *tx).await?;
            Ok(Err(error.into()))
        }
    }
}

/// A batch of one turn, the usual batch when turns do not overlap: written on the inline
/// connection when it can take it (see [`inline`]); otherwise `BEGIN IMMEDIATE`,
/// the turn and `COMMIT` go as one call rather than three, since each call is a round
/// trip to the connection's worker thread and back, two hand-offs between threads
/// (see `docs/performance.md`). sqlx stops a call at its first failing statement, so
/// `COMMIT` runs only after the whole turn did; a failed or cut-off call may leave the
/// transaction open, so the writer then closes that connection (SQLite rolls back what
/// it held) rather than keep it, and the next write opens another.
async fn write_alone(
    writing: &mut WriteLock,
    turn: TurnRows,
    now: &str,
) -> Result<Revision, StoreError> {
    if let Some(written) = writing.write_inline(&turn, now).await {
        return written;
    }
    let count = turn.count;
    let (query, create) = turn_query(turn, now, Wrapped::Alone);
    writing.writer.may_be_open = true;
    let written = match writing.connection().await {
        Ok(connection) => query.fetch_all(connection).await.map_err(StoreError::from),
        Err(error) => Err(error),
    };
    match written {
        Ok(rows) => {
            writing.writer.may_be_open = false;
            turn_outcome(create, count, &rows)
        }
        Err(error) => {
            writing.close_held();
            Err(error)
        }
    }
}

/// How a turn's statements are wrapped: [`in_savepoint!`] or [`alone!`].
#[derive(Clone, Copy)]
enum Wrapped {
    InSavepoint,
    Alone,
}

/// The statements of `turn` with their parameters bound, and whether they create the
/// conversation.
fn turn_query(
    turn: TurnRows,
    now: &str,
    wrapped: Wrapped,
) -> (Query<'static, Sqlite, SqliteArguments>, bool) {
    // The rows are taken by value: sqlx copies every borrowed string it binds, and
    // moves an owned one.
    let TurnRows {
        owner,
        id,
        create,
        title,
        count,
        rows,
    } = turn;
    let (in_savepoint, alone) = match (create, &rows) {
        (true, SqliteBatch::Pair(_)) => (CREATE_PAIR, CREATE_PAIR_ALONE),
        (true, SqliteBatch::Json(_)) => (CREATE_TURN, CREATE_TURN_ALONE),
        (false, SqliteBatch::Pair(_)) => (APPEND_PAIR, APPEND_PAIR_ALONE),
        (false, SqliteBatch::Json(_)) => (APPEND_TURN, APPEND_TURN_ALONE),
    };
    let statement = match wrapped {
        Wrapped::InSavepoint => in_savepoint,
        Wrapped::Alone => alone,
    };
    // Texts are bound as `Arc<str>`, which sqlx binds without a copy of its own (see
    // `MessageBinds`).
    let now = Arc::<str>::from(now);
    let query = sqlx::query(statement).bind(id).bind(owner);
    let query = if create {
        query
            .bind(title)
            .bind(now)
            .bind(count)
            // A turn's new conversation has no metadata: the text of an empty object.
            .bind(Arc::<str>::from("{}"))
    } else {
        query.bind(count).bind(now)
    };
    let query = match rows {
        SqliteBatch::Json(rows) => query.bind(rows),
        SqliteBatch::Pair(pair) => (*pair).into_iter().fold(query, |query, message| {
            query
                .bind(message.role)
                .bind(message.message)
                .bind(message.text)
                .bind(message.reasoning)
                .bind(message.events)
                .bind(message.metadata)
        }),
    };
    (query, create)
}

/// What a turn's statements returned, read as its outcome: the conversation's
/// [`Revision`] after the turn. All rows were fetched, not the first: the call has to
/// step every statement to its end. A new conversation's statements return none (an id
/// taken fails them): its row is at revision 0 with `count` messages. An appended
/// turn's return the row, or none for an unknown conversation.
fn turn_outcome(create: bool, count: i64, rows: &[SqliteRow]) -> Result<Revision, StoreError> {
    if create {
        return Ok(first_revision(count));
    }
    let row = rows.first().ok_or(StoreError::NotFound)?;
    Ok(Revision::from_row(row, 0)?)
}

/// A new conversation's [`Revision`] after its first turn of `count` messages: its row
/// starts at revision 0.
fn first_revision(count: i64) -> Revision {
    Revision {
        revision: 0,
        next_sequence: count,
        message_count: count,
    }
}

/// The current time as the schema stores it (see [`stored_time`]).
pub(super) fn timestamp() -> String {
    stored_time(Utc::now())
}

/// A time as the schema stores it: UTC, fixed width, microseconds, so that comparing the
/// text compares the times: the text of the format pattern `%Y-%m-%dT%H:%M:%S%.6fZ`,
/// written digit by digit (the pattern is parsed again at every call, about 4,200
/// instructions; chrono's RFC 3339 writer, which makes the same text, about 700). A year
/// outside four digits, or a leap second, takes chrono's writer.
pub(super) fn stored_time(time: DateTime<Utc>) -> String {
    let micros = time.timestamp_subsec_micros();
    // UTC's naive time once: each field read from a `DateTime` converts it again.
    let naive = time.naive_utc();
    let year = u32::try_from(naive.year())
        .ok()
        .filter(|year| *year <= 9999);
    let (Some(year), true) = (year, micros < 1_000_000) else {
        return time.to_rfc3339_opts(SecondsFormat::Micros, true);
    };
    let mut text = *b"0000-00-00T00:00:00.000000Z";
    for (at, value) in [
        (0..4, year),
        (5..7, naive.month()),
        (8..10, naive.day()),
        (11..13, naive.hour()),
        (14..16, naive.minute()),
        (17..19, naive.second()),
        (20..26, micros),
    ] {
        let mut value = value;
        for digit in text[at].iter_mut().rev() {
            *digit = b'0' + (value % 10) as u8;
            value /= 10;
        }
    }
    // Digits and the pattern's ASCII: the fallback is never taken.
    String::from_utf8(text.to_vec())
        .unwrap_or_else(|_| time.to_rfc3339_opts(SecondsFormat::Micros, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_conversation_s_last_turn_in_a_batch_is_linked() {
        let cache = Arc::new(HistoryCache::new(0));
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let written: Vec<_> = [a, b, a]
            .into_iter()
            .map(|id| (cache.clone(), id))
            .collect();
        assert_eq!(turn_links(&written, Some(5)), [None, Some(5), Some(5)]);
        assert_eq!(turn_links(&written, None), [None, None, None]);
    }
}
