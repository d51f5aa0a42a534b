//! [`CommitChain`]: the commits this process made to a database file one after the other
//! with nothing else committed between them, so that a history the store wrote itself
//! within them is known to be the file's without asking SQLite.
//!
//! A continued turn checks the history it holds (see [`HistoryCache`]) with the
//! conversation's row before it calls the model, since another process may have
//! changed the conversation. On SQLite that check is a call to a connection's worker
//! thread and back, two hand-offs between threads: at a model's pace some 60 µs of
//! SQLite's thread and three context switches a request, and 35,000 instructions in a
//! sequential bench (see `docs/performance.md`). Yet when this process was the last to
//! commit anything to the file, there is nothing to check.
//!
//! The file's WAL index header tells that (see [`WalIndex`]): every commit, from any
//! process, rewrites it, so while it still reads as it did right after this process's
//! last commit, nothing was committed since. What is left is to know that a header read
//! after a commit of ours is the header that commit left, and not that of one that
//! followed it. The writer reads the header before each write and again after it; when
//! `iChange` moved on by exactly one, the only commit between the two reads was its own
//! (see [`Header::follows`]). Such a write is a link, and links whose header before is
//! the header the link before them left make a chain: from the chain's first link on,
//! nothing was committed to the file but the links.
//!
//! A link marks each conversation it wrote in the cache of the pool its turn came from
//! ([`HistoryCache::touch`]) before it ends, and the turn's caller then links its entry
//! to it ([`HistoryCache::link`]), which takes only if no later link marked the
//! conversation since. A history held is then the file's, without a read, when it is
//! linked to a link of the chain, no later link marked it, and the header still reads as
//! the chain's last link left it ([`CommitChain::unchanged_since`]). Anything else (a
//! write of another process, or of this one outside a turn's batch: a management call,
//! a sweep; a write whose header did not move by one; turns of two pools in one batch)
//! ends the chain, and every history is checked as before until a new one begins. The
//! full-text index's writes touch no history: they are links that mark nothing.
//!
//! One thing could pass for a link that is not one: when a process dies halfway through
//! writing the header, the next connection rebuilds the index, and its count starts
//! from 0 again. For that to read as one commit, the rebuild would have to fall within
//! one write of this process and be followed, within the same write, by as many commits
//! as the count stood at before it (a count of 0 before is never trusted; after a while
//! it stands in the thousands).

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use uuid::Uuid;

use super::wal_index::{Header, WalIndex};
use crate::store::history_cache::HistoryCache;

/// The chain of one database file.
pub(super) struct CommitChain {
    index: WalIndex,
    state: Mutex<State>,
}

struct State {
    /// The number the next link takes.
    next: u64,
    /// The number of the chain's first link.
    since: u64,
    /// The header the chain's last link left; `None`: there is no chain.
    tip: Option<Header>,
    /// The cache of the pool whose turns the chain's links wrote.
    cache: Weak<HistoryCache>,
}

impl CommitChain {
    /// The chain of the database file `database`; `None` for a database that is not a
    /// file, which never has one.
    pub(super) fn new(database: Option<&Path>) -> Self {
        Self {
            index: WalIndex::new(database),
            state: Mutex::new(State {
                next: 1,
                since: 1,
                tip: None,
                cache: Weak::new(),
            }),
        }
    }

    /// The header to hand to [`link`](Self::link) after the write about to begin. Read
    /// from the file now at the path (opened again when SQLite made another), which the
    /// read after the write then trusts.
    pub(super) fn before(&self) -> Option<Header> {
        self.index.header()
    }

    /// A write that began when the header read `before` ended well: it wrote the turns
    /// of conversations `turns` (none: the full-text index). Marks them, then returns
    /// the link's number when the write is a link of a chain that the pool's cache can
    /// link its histories to.
    pub(super) fn link(
        &self,
        before: Option<Header>,
        turns: &[(Arc<HistoryCache>, Uuid)],
    ) -> Option<u64> {
        let after = self.index.header_after_a_write();
        let mut state = self.state();
        let number = state.next;
        state.next += 1;
        // Marked before the chain moves on, so that a read that finds the chain's new
        // tip finds the marks too.
        for (cache, id) in turns {
            cache.touch(*id, number);
        }
        let cache = match turns.split_first() {
            None => None,
            Some(((first, _), rest)) if rest.iter().all(|(cache, _)| Arc::ptr_eq(cache, first)) => {
                Some(first)
            }
            Some(_) => return state.end(number),
        };
        let (Some(before), Some(after)) = (before, after) else {
            return state.end(number);
        };
        if after == before && turns.is_empty() {
            // Nothing to index: nothing was committed.
            return None;
        }
        if !after.follows(&before) {
            return state.end(number);
        }
        let same_cache = cache.is_none_or(|cache| state.wrote_to(cache));
        if state.tip != Some(before) || !same_cache {
            state.since = number;
            state.cache = cache.map_or_else(Weak::new, Arc::downgrade);
        }
        state.tip = Some(after);
        Some(number)
    }

    /// The first link of the chain when nothing but its links was committed to the file
    /// so far and `cache` is the one they wrote to: a history linked to a link from this
    /// one on, and not marked since, is the file's.
    pub(super) fn unchanged_since(&self, cache: &Arc<HistoryCache>) -> Option<u64> {
        let (since, tip) = {
            let state = self.state();
            if !state.wrote_to(cache) {
                return None;
            }
            (state.since, state.tip?)
        };
        (self.index.header()? == tip).then_some(since)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every change to the state is made whole before the lock is let go.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    /// Whether the chain's links wrote to `cache`.
    fn wrote_to(&self, cache: &Arc<HistoryCache>) -> bool {
        self.cache.strong_count() > 0 && std::ptr::eq(self.cache.as_ptr(), Arc::as_ptr(cache))
    }

    /// Ends the chain at the write numbered `number`, which is not a link.
    fn end(&mut self, number: u64) -> Option<u64> {
        self.tip = None;
        self.since = number + 1;
        None
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool};
    use sqlx::{Connection, SqliteConnection};

    use super::super::test_file::TestFile;
    use super::super::{history, write_queue};
    use crate::store::{ConversationStore, NewMessage, TurnStore, TurnTarget};

    use super::*;

    /// A migrated database in a file of its own.
    struct Database {
        pool: SqlitePool,
        file: TestFile,
    }

    impl Database {
        async fn new() -> Self {
            let file = TestFile::new("commit-chain");
            let options = SqliteConnectOptions::new()
                .filename(file.path())
                .create_if_missing(true);
            let pool = SqlitePool::connect_with(options).await.expect("open");
            pool.migrate().await.expect("migrate");
            Self { pool, file }
        }

        /// Another pool on the same file: a cache of its own, the file's chain shared.
        async fn another_pool(&self) -> SqlitePool {
            SqlitePool::connect_with(SqliteConnectOptions::new().filename(self.file.path()))
                .await
                .expect("open")
        }

        fn since(&self) -> Option<u64> {
            write_queue::unchanged_since(&self.pool, &history::cache(&self.pool))
        }

        fn linked(&self, id: Uuid) -> Option<usize> {
            let since = self.since()?;
            history::cache(&self.pool)
                .linked("", id, None, since)
                .map(|held| held.len())
        }

        /// How many messages a history read of `id` gives.
        async fn read(&self, id: Uuid) -> usize {
            let history = self.pool.load_history("", id, None).await;
            history.expect("read").len()
        }

        /// A conversation of one turn, read once (so held), then continued by a turn.
        async fn conversation(&self) -> Uuid {
            let id = Uuid::now_v7();
            let pool = &self.pool;
            pool.append_turn("", id, TurnTarget::NewConversation, &turn("q0", "a0"))
                .await
                .expect("first turn");
            pool.load_history("", id, None).await.expect("read");
            pool.append_turn("", id, TurnTarget::Existing, &turn("q1", "a1"))
                .await
                .expect("second turn");
            id
        }
    }

    fn turn(question: &str, answer: &str) -> Vec<NewMessage> {
        vec![
            NewMessage::new(json!({"role": "user", "content": question})),
            NewMessage::new(json!({"role": "assistant", "content": answer})),
        ]
    }

    #[tokio::test]
    async fn a_history_this_process_wrote_last_is_served_without_a_read() {
        let db = Database::new().await;
        let id = db.conversation().await;
        assert_eq!(db.linked(id), Some(4));
        // Turns of other conversations are links of the same chain.
        let other = db.conversation().await;
        assert_eq!(db.linked(id), Some(4));
        assert_eq!(db.linked(other), Some(4));
    }

    #[tokio::test]
    async fn a_commit_of_another_connection_ends_the_chain_until_the_next_turn() {
        let db = Database::new().await;
        let id = db.conversation().await;
        let since = db.since().expect("a chain");
        let mut other = SqliteConnection::connect_with(&db.pool.connect_options())
            .await
            .expect("open");
        // Any commit, even of a row no history holds.
        sqlx::query("UPDATE conversations SET title = 'elsewhere'")
            .execute(&mut other)
            .await
            .expect("update");
        assert_eq!(db.since(), None);
        assert_eq!(db.linked(id), None);
        // The next turn begins a new chain; what was linked before it stays unlinked.
        let next = db.conversation().await;
        assert!(db.since().expect("a new chain") > since);
        assert_eq!(db.linked(id), None);
        assert_eq!(db.linked(next), Some(4));
    }

    #[tokio::test]
    async fn a_turn_another_pool_writes_ends_the_chain_for_this_pool() {
        let db = Database::new().await;
        let id = db.conversation().await;
        let there = db.another_pool().await;
        there
            .append_turn("", id, TurnTarget::Existing, &turn("q2", "a2"))
            .await
            .expect("a turn through the other pool");
        // The write is a link, of the other pool's cache: this one's entry says nothing.
        assert_eq!(db.linked(id), None);
        assert_eq!(db.read(id).await, 6);
    }

    #[tokio::test]
    async fn a_write_outside_a_turn_ends_the_chain() {
        let db = Database::new().await;
        let id = db.conversation().await;
        assert_eq!(db.pool.truncate("", id, 2).await.expect("truncate"), 2);
        assert_eq!(db.linked(id), None);
        assert_eq!(db.read(id).await, 2);
    }
}
