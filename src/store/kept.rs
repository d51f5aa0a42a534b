//! [`Kept`]: connections that store calls ended in good order, kept for the next call
//! for up to a second instead of going back to the pool.
//!
//! sqlx tests every connection that goes back to its pool, in a task that the
//! connection's drop spawns (`Floating::return_to_pool` in sqlx-core; it cannot be
//! turned off): on PostgreSQL a round trip to the server, on SQLite one to the
//! connection's worker thread. The next call's acquire then runs the pool's bookkeeping
//! and its `before_acquire` hook. For a PostgreSQL turn that was one of its two round
//! trips and about 15,000 of the proxy's instructions (see `docs/performance.md`). A
//! connection whose last statement was read to its end a moment ago needs none of it.
//!
//! Used by PostgreSQL's one-statement calls (`Session`) and SQLite's history reads that
//! find the file's writer busy (see `sqlite::write_queue::idle_writer`).
//!
//! The rules:
//! - Only a pool that does not test each connection it hands out
//!   (`test_before_acquire(false)`) has connections kept: one that does (sqlx's default)
//!   was promised a tested connection at every acquire, and gets it.
//! - A call's connection is kept only when the call ended in good order: every
//!   statement read to its end. A call that failed or was cancelled drops its connection
//!   as before, and the pool's test decides what becomes of it.
//! - A connection is out of the pool for at most [`KEEP_FOR`] from the moment a call took
//!   it from the pool; then it goes back, and the pool tests it as usual. So the pool's
//!   hooks, its `max_lifetime` and its `idle_timeout` still see every connection at least
//!   once a second, and a connection that the server closed (a restart, an idle timeout)
//!   fails at most the one call that takes it within that second, as a connection closed
//!   just after the pool's test would.
//! - At most half the pool's `max_connections` are kept (none of a pool of one), so the
//!   pool always has connections for everything else: transactions, the caller's own
//!   queries.
//! - A task gives the kept connections back once their second is over, at once when the
//!   pool closes (so [`Pool::close`](sqlx::Pool::close) does not wait on them), and closes
//!   them (detached, which needs no runtime) when the runtime ends.

use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{Database, Pool};
use tokio::time::Instant;

use super::StoreError;

/// How long a connection may stay out of the pool, counted from the moment a call took
/// it from the pool: the same second within which the example proxy's pool takes a
/// connection as alive without a ping.
pub(crate) const KEEP_FOR: Duration = Duration::from_secs(1);

/// A pool's kept connections.
pub(crate) struct Kept<DB: Database> {
    shelf: Mutex<Shelf<DB>>,
    /// How many connections may be kept at once.
    room: usize,
}

struct Shelf<DB: Database> {
    connections: Vec<Taken<DB>>,
    /// Whether a task is watching the shelf; there is one exactly when it is not empty.
    watched: bool,
}

/// A connection out of the pool, and when a call took it from the pool.
pub(crate) struct Taken<DB: Database> {
    pub(crate) connection: PoolConnection<DB>,
    since: Instant,
}

impl<DB: Database> Taken<DB> {
    fn expired(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.since) >= KEEP_FOR
    }
}

impl<DB: Database> Kept<DB> {
    /// The kept connections of `pool`: none yet, and none ever if the pool tests every
    /// connection it hands out.
    pub(crate) fn new(pool: &Pool<DB>) -> Self {
        let options = pool.options();
        let room = match options.get_test_before_acquire() {
            true => 0,
            false => options.get_max_connections() as usize / 2,
        };
        Self {
            shelf: Mutex::new(Shelf {
                connections: Vec::new(),
                watched: false,
            }),
            room,
        }
    }

    /// A kept connection whose second is not over, else one from `pool`.
    pub(crate) async fn take_or_acquire(&self, pool: &Pool<DB>) -> Result<Taken<DB>, StoreError> {
        if self.room > 0
            && let Some(taken) = self.take()
        {
            return Ok(taken);
        }
        Ok(Taken {
            connection: pool.acquire().await?,
            since: Instant::now(),
        })
    }

    /// The connection given back last, if one is kept whose second is not over.
    fn take(&self) -> Option<Taken<DB>> {
        let now = Instant::now();
        let mut shelf = self.lock();
        while let Some(taken) = shelf.connections.pop() {
            if !taken.expired(now) {
                return Some(taken);
            }
            // Back to the pool, outside the lock: its drop spawns the pool's test.
            drop(shelf);
            drop(taken);
            shelf = self.lock();
        }
        None
    }

    /// Keeps `taken` for the next call, or gives it back to `pool` when its second is
    /// over, the shelf is full or the pool is closing.
    pub(crate) fn give_back(self: &Arc<Self>, pool: &Pool<DB>, taken: Taken<DB>) {
        if self.room == 0 || taken.expired(Instant::now()) || pool.is_closed() {
            return;
        }
        let mut shelf = self.lock();
        if shelf.connections.len() >= self.room {
            return;
        }
        shelf.connections.push(taken);
        if !std::mem::replace(&mut shelf.watched, true) {
            drop(shelf);
            tokio::spawn(watch(self.clone(), pool.close_event()));
        }
    }

    fn lock(&self) -> MutexGuard<'_, Shelf<DB>> {
        // Every change to the shelf is one step: a panicking holder leaves it whole.
        self.shelf.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes the connections whose second is over (all of them when `all`), and the
    /// time the next one's is, if one is left. With none left, the shelf is no longer
    /// watched.
    fn expire(&self, all: bool) -> (Vec<Taken<DB>>, Option<Instant>) {
        let now = Instant::now();
        let mut shelf = self.lock();
        let (gone, left) = std::mem::take(&mut shelf.connections)
            .into_iter()
            .partition(|taken| all || taken.expired(now));
        shelf.connections = left;
        let next = shelf
            .connections
            .iter()
            .map(|taken| taken.since + KEEP_FOR)
            .min();
        shelf.watched = next.is_some();
        (gone, next)
    }
}

/// Gives `kept`'s connections back to their pool as their second ends, and all of them
/// once `closed` (the pool's close) fires; returns when the shelf is empty.
async fn watch<DB: Database>(kept: Arc<Kept<DB>>, closed: impl Future<Output = ()>) {
    let mut watching = Watching { kept, done: false };
    let mut closed = pin!(closed);
    let mut all = false;
    loop {
        let (gone, next) = watching.kept.expire(all);
        drop(gone);
        let Some(next) = next else {
            watching.done = true;
            return;
        };
        // Once the pool closed, the next look takes every connection and ends.
        all = tokio::time::timeout_at(next, closed.as_mut()).await.is_ok();
    }
}

/// The watching task's hold on the shelf: dropped before the task ended on its own (the
/// runtime is ending), it closes every kept connection, since no task is left to give
/// them back.
struct Watching<DB: Database> {
    kept: Arc<Kept<DB>>,
    done: bool,
}

impl<DB: Database> Drop for Watching<DB> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let mut shelf = self.kept.lock();
        shelf.watched = false;
        for taken in shelf.connections.drain(..) {
            // Detached, its drop needs no runtime: the connection closes, and the pool
            // counts it gone.
            drop(taken.connection.detach());
        }
    }
}
