//! [`HistoryCache`]: each conversation's history as this process last read or wrote it,
//! so that a continued turn reads one row of the database instead of every message.
//!
//! A continued turn needs its conversation's history before it can call the model. Read
//! whole, that is a row a message on PostgreSQL and an aggregate of every message on
//! SQLite, decoded and checked in the proxy (for a 20-message history about 100,000 and
//! 140,000 instructions), and the database reads every message again at every turn.
//! Yet most turns of a conversation go through the process that read its history at the
//! turn before and then wrote that turn itself: what it needs is what it already had.
//!
//! So each store keeps, per pool, the last history it read or wrote of each conversation
//! with the conversation's [`Revision`] at that moment, and sends that revision with the
//! next read. The read's statement compares it with the conversation's row and leaves
//! the messages out when they match: the database looks the conversation up and finds no
//! message to send, and the proxy reads one row. When they differ (another instance
//! wrote a turn, a management call changed the messages) the same statement returns the
//! history as before. Nothing is ever spliced that the database does not hold at that
//! moment: the cache saves reading the messages, and the check only where the backend
//! knows without asking that nothing changed. On SQLite that is when nothing but this
//! process's own turns was committed to the file since a turn of this process left the
//! history as held: each such turn links the entry it extended to its write
//! (`HistoryCache::touch`, `HistoryCache::link`), and `HistoryCache::linked` serves it
//! while the SQLite store's `CommitChain` says the file is still as its writes left it.
//!
//! A turn the store writes itself moves the conversation from one revision to the next,
//! and the append statement returns the new one. When the entry held is at the revision
//! just before it, nothing came between the read and the write, and the entry becomes the
//! history with the turn's messages, as stored, after it; held at any other revision, the
//! entry is dropped.
//!
//! Entries go least recently used first, so that all of a pool's entries hold at most
//! [`HISTORY_CACHE_BYTES`] of messages, or the bound set with
//! [`TurnStore::set_history_cache_limit`](super::TurnStore::set_history_cache_limit); a
//! history larger than an eighth of that is not kept. The map is `lru`'s; its lock is
//! held only to look up, copy or replace an entry.

use std::sync::{Mutex, PoisonError};

use lru::LruCache;
use uuid::Uuid;

use super::batch::text_without_nul;
use super::{HistoryMessage, NewMessage, StoreError};

/// How many bytes of messages a pool's cache holds at most: 16 MiB, the histories of
/// some 4,000 conversations of 20 short messages.
pub(crate) const HISTORY_CACHE_BYTES: usize = 16 << 20;

/// What a conversation's row says of its messages: the three numbers the history read
/// compares.
///
/// `revision` moves on by one with every change this crate makes to a conversation's
/// messages (a turn, a truncation, an item delete), in the statement that changes its
/// `message_count`. `next_sequence` and `message_count` make the check see turns and
/// truncations by instances of an earlier version too, which do not know `revision`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Revision {
    pub(crate) revision: i64,
    pub(crate) next_sequence: i64,
    pub(crate) message_count: i64,
}

impl Revision {
    /// The columns `first`, `first + 1` and `first + 2` of `row`: `revision`,
    /// `next_sequence` and `message_count`, the order in which every statement that
    /// reads a conversation's revision returns them.
    pub(crate) fn from_row<'r, R>(row: &'r R, first: usize) -> Result<Self, sqlx::Error>
    where
        R: sqlx::Row,
        usize: sqlx::ColumnIndex<R>,
        i64: sqlx::Decode<'r, R::Database> + sqlx::Type<R::Database>,
    {
        Ok(Self {
            revision: row.try_get(first)?,
            next_sequence: row.try_get(first + 1)?,
            message_count: row.try_get(first + 2)?,
        })
    }

    /// The revisions before and after a turn of `turn` messages, from the numbers the
    /// conversation's row holds after it.
    pub(crate) fn around_turn(self, turn: i64) -> (Self, Self) {
        let before = Self {
            revision: self.revision - 1,
            next_sequence: self.next_sequence - turn,
            message_count: self.message_count - turn,
        };
        (before, self)
    }

    /// The sequence number of the first message of a turn of `turn` messages, from the
    /// numbers the conversation's row holds after it.
    pub(crate) fn first_of_turn(self, turn: i64) -> i64 {
        self.next_sequence - turn
    }
}

/// The histories of one pool's conversations, by id.
pub(crate) struct HistoryCache {
    state: Mutex<State>,
}

struct State {
    entries: LruCache<Uuid, Entry>,
    /// The sum of the entries' sizes.
    bytes: usize,
    /// How many bytes the entries may take together.
    limit: usize,
}

/// A conversation's history at `revision`.
struct Entry {
    owner: Box<str>,
    revision: Revision,
    /// `None`: the whole history; `Some(n)`: its last `n` messages (or all, if fewer),
    /// as a read with a window of `n` found them.
    window: Option<u32>,
    messages: Vec<HistoryMessage>,
    bytes: usize,
    /// The number of the write of this process that left the conversation as held,
    /// when the backend numbers its writes to tell that nothing came after them (SQLite:
    /// see its `CommitChain`); `None` for a history read or extended otherwise.
    linked: Option<u64>,
    /// The number of the last such write that wrote a turn of the conversation while
    /// the entry was held (0: none).
    #[cfg_attr(
        not(feature = "sqlite"),
        expect(dead_code, reason = "only SQLite numbers its writes")
    )]
    touched: u64,
}

impl Entry {
    fn new(
        owner: &str,
        revision: Revision,
        window: Option<u32>,
        messages: Vec<HistoryMessage>,
    ) -> Self {
        let mut entry = Self {
            owner: owner.into(),
            revision,
            window,
            messages,
            bytes: 0,
            linked: None,
            touched: 0,
        };
        entry.bytes = entry.size();
        entry
    }

    /// The messages a read of the last `last` messages (all: `None`) would find, when
    /// this entry holds them.
    fn serves(&self, owner: &str, last: Option<u32>) -> Option<&[HistoryMessage]> {
        if *self.owner != *owner {
            return None;
        }
        let kept = match (self.window, last) {
            (None, _) => self.messages.len(),
            (Some(window), Some(last)) if last <= window => window as usize,
            (Some(_), _) => return None,
        };
        let wanted = last.map_or(kept, |last| (last as usize).min(kept));
        Some(&self.messages[self.messages.len().saturating_sub(wanted)..])
    }

    /// What the entry takes of the cache's budget: its messages' texts, and the room
    /// they and the entry take besides.
    fn size(&self) -> usize {
        size_of_messages(history_texts(&self.messages))
            + self.owner.len()
            + size_of::<Self>()
            + size_of::<Uuid>()
    }
}

/// Whether an entry of `bytes` is kept at all: one over an eighth of the limit is not,
/// so that one long conversation cannot push out all the others.
fn fits(state: &State, bytes: usize) -> bool {
    bytes <= state.limit / 8
}

/// What messages of these roles and JSON texts take of the cache's budget: their texts
/// and the room each takes besides. Counted before messages are copied, so that a
/// history too large to keep is never copied.
fn size_of_messages<'m>(messages: impl IntoIterator<Item = (&'m str, &'m str)>) -> usize {
    messages
        .into_iter()
        .map(|(role, json)| role.len() + json.len() + size_of::<HistoryMessage>())
        .sum()
}

/// The roles and texts of a history's messages, for [`size_of_messages`].
fn history_texts(messages: &[HistoryMessage]) -> impl Iterator<Item = (&str, &str)> {
    messages.iter().map(|m| (m.role(), m.json()))
}

/// The roles and texts of a turn's messages, for [`size_of_messages`].
fn turn_texts(turn: &[NewMessage]) -> impl Iterator<Item = (&str, &str)> {
    turn.iter().map(|m| (m.role(), m.json()))
}

impl HistoryCache {
    /// An empty cache of at most `limit` bytes.
    pub(crate) fn new(limit: usize) -> Self {
        Self {
            state: Mutex::new(State {
                entries: LruCache::unbounded(),
                bytes: 0,
                limit,
            }),
        }
    }

    /// Bounds the cache to `limit` bytes from now on (0: it keeps nothing), letting the
    /// least recently used go until what it holds fits.
    pub(crate) fn set_limit(&self, limit: usize) {
        let mut state = self.state();
        state.limit = limit;
        Self::shrink(&mut state);
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // Every change to the state is made whole before the lock is let go.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The history of `owner`'s conversation `id` (its last `last` messages), from the
    /// cache when the conversation's row still has the revision it is held at, else as
    /// read, and then kept.
    ///
    /// `read` runs the backend's statement with the revision held (or none) and answers
    /// the row's revision beside what it read, `None` when the conversation does not
    /// exist for this owner; `messages` turns what it read into the history, and is
    /// called only when the revisions differ (the statement then read the messages).
    pub(crate) async fn read_through<T, Read>(
        &self,
        owner: &str,
        id: Uuid,
        last: Option<u32>,
        mut read: impl FnMut(Option<Revision>) -> Read,
        messages: impl Fn(T) -> Result<Vec<HistoryMessage>, StoreError>,
    ) -> Result<Vec<HistoryMessage>, StoreError>
    where
        Read: Future<Output = Result<Option<(Revision, T)>, StoreError>>,
    {
        let mut known = self.revision(owner, id, last);
        loop {
            let Some((revision, found)) = read(known).await? else {
                self.forget(id);
                return Err(StoreError::NotFound);
            };
            if known == Some(revision) {
                match self.messages(owner, id, last, revision) {
                    Some(history) => return Ok(history),
                    // Dropped since it was looked at (a turn of this conversation moved
                    // it on, or it was the least recently used): read the messages.
                    None => {
                        known = None;
                        continue;
                    }
                }
            }
            let history = messages(found)?;
            self.keep(owner, id, last, revision, &history);
            return Ok(history);
        }
    }

    /// The revision at which the cache holds what a read of `owner`'s conversation `id`
    /// (its last `last` messages) would find, if it does.
    fn revision(&self, owner: &str, id: Uuid, last: Option<u32>) -> Option<Revision> {
        let mut state = self.state();
        let entry = state.entries.get(&id)?;
        entry.serves(owner, last).map(|_| entry.revision)
    }

    /// The history a read would find, when the cache still holds it at `revision`.
    fn messages(
        &self,
        owner: &str,
        id: Uuid,
        last: Option<u32>,
        revision: Revision,
    ) -> Option<Vec<HistoryMessage>> {
        let mut state = self.state();
        let entry = state.entries.get(&id)?;
        if entry.revision != revision {
            return None;
        }
        entry.serves(owner, last).map(<[HistoryMessage]>::to_vec)
    }

    /// Keeps what a read of the last `last` messages found at `revision`, unless the
    /// cache already holds a later revision (a turn written while the read was under way).
    fn keep(
        &self,
        owner: &str,
        id: Uuid,
        last: Option<u32>,
        revision: Revision,
        messages: &[HistoryMessage],
    ) {
        let mut state = self.state();
        if let Some(held) = state.entries.peek(&id)
            && held.revision.revision > revision.revision
        {
            return;
        }
        if !fits(&state, size_of_messages(history_texts(messages))) {
            Self::take(&mut state, id);
            return;
        }
        let entry = Entry::new(owner, revision, last, messages.to_vec());
        Self::put(&mut state, id, entry);
    }

    /// After a turn moved the conversation from `before` to `after`: the entry held at
    /// `before` gains the turn's messages, as stored, and is then at `after`; one held at
    /// any other revision no longer says anything and goes.
    pub(crate) fn appended(
        &self,
        id: Uuid,
        (before, after): (Revision, Revision),
        turn: &[NewMessage],
    ) {
        let mut state = self.state();
        let Some(mut entry) = Self::take(&mut state, id) else {
            return;
        };
        let grown = entry.bytes + size_of_messages(turn_texts(turn));
        if entry.revision != before || !fits(&state, grown) {
            return;
        }
        entry.messages.extend(turn.iter().map(stored));
        if let Some(window) = entry.window {
            let over = entry.messages.len().saturating_sub(window as usize);
            entry.messages.drain(..over);
        }
        entry.revision = after;
        entry.bytes = entry.size();
        entry.linked = None;
        Self::put(&mut state, id, entry);
    }

    /// Marks the entry of conversation `id`, if one is held, as written by the write
    /// numbered `write`: an entry linked to an earlier write no longer says anything
    /// without a read.
    #[cfg(feature = "sqlite")]
    pub(crate) fn touch(&self, id: Uuid, write: u64) {
        if let Some(entry) = self.state().entries.peek_mut(&id) {
            entry.touched = entry.touched.max(write);
        }
    }

    /// Links the entry of conversation `id` to the write numbered `write`, which left
    /// the conversation at `revision`: when the entry is at that revision and no later
    /// write marked it, it is the conversation as that write left it.
    #[cfg(feature = "sqlite")]
    pub(crate) fn link(&self, id: Uuid, revision: Revision, write: u64) {
        if let Some(entry) = self.state().entries.peek_mut(&id)
            && entry.revision == revision
            && entry.touched == write
        {
            entry.linked = Some(write);
        }
    }

    /// The history of `owner`'s conversation `id` (its last `last` messages), when the
    /// entry held is linked to the write numbered `since` or a later one, and no write
    /// marked it after that: when the backend knows that nothing but its own writes
    /// from `since` on changed the database, this is the conversation as it is.
    #[cfg(feature = "sqlite")]
    pub(crate) fn linked(
        &self,
        owner: &str,
        id: Uuid,
        last: Option<u32>,
        since: u64,
    ) -> Option<Vec<HistoryMessage>> {
        let mut state = self.state();
        let entry = state.entries.get(&id)?;
        let write = entry.linked.filter(|&write| write >= since)?;
        (entry.touched == write)
            .then(|| entry.serves(owner, last).map(<[HistoryMessage]>::to_vec))
            .flatten()
    }

    /// Drops what the cache holds of conversation `id` (it no longer exists).
    fn forget(&self, id: Uuid) {
        Self::take(&mut self.state(), id);
    }

    fn take(state: &mut State, id: Uuid) -> Option<Entry> {
        let entry = state.entries.pop(&id)?;
        state.bytes -= entry.bytes;
        Some(entry)
    }

    /// Puts `entry` in place of the one held for `id`, then lets the least recently used
    /// go until the whole fits.
    fn put(state: &mut State, id: Uuid, entry: Entry) {
        Self::take(state, id);
        if !fits(state, entry.bytes) {
            return;
        }
        state.bytes += entry.bytes;
        state.entries.put(id, entry);
        Self::shrink(state);
    }

    /// Lets the least recently used entries go until what is left fits the limit.
    fn shrink(state: &mut State) {
        while state.bytes > state.limit {
            let Some((_, gone)) = state.entries.pop_lru() else {
                break;
            };
            state.bytes -= gone.bytes;
        }
    }
}

/// A message of a turn as a history read gives it back: its role as the store writes it
/// (see [`text_without_nul`]) and its JSON text untouched.
fn stored(message: &NewMessage) -> HistoryMessage {
    HistoryMessage::written(&text_without_nul(message.role()), message.json())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn revision(revision: i64, count: i64) -> Revision {
        Revision {
            revision,
            next_sequence: count,
            message_count: count,
        }
    }

    fn said(text: &str) -> NewMessage {
        NewMessage::new(json!({"role": "user", "content": text}))
    }

    /// Keeps these messages as the whole history of `owner`'s conversation `id`, as a
    /// read at revision `at` would.
    fn hold(cache: &HistoryCache, owner: &str, id: Uuid, at: Revision, messages: &[NewMessage]) {
        let history: Vec<_> = messages.iter().map(stored).collect();
        cache.keep(owner, id, None, at, &history);
    }

    fn texts(messages: &[HistoryMessage]) -> Vec<String> {
        messages
            .iter()
            .map(|m| {
                m.to_value()["content"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned()
            })
            .collect()
    }

    /// Holds `a`, `b` at revision 0, then writes turn `c`, `d` as the write numbered
    /// `write` and links it; the revision after.
    #[cfg(feature = "sqlite")]
    fn linked_turn(cache: &HistoryCache, id: Uuid, write: u64) -> Revision {
        hold(cache, "ada", id, revision(0, 2), &[said("a"), said("b")]);
        cache.touch(id, write);
        let (before, after) = revision(1, 4).around_turn(2);
        cache.appended(id, (before, after), &[said("c"), said("d")]);
        cache.link(id, after, write);
        after
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_history_linked_to_a_write_of_the_chain_is_served_without_a_read() {
        let cache = HistoryCache::new(HISTORY_CACHE_BYTES);
        let id = Uuid::now_v7();
        linked_turn(&cache, id, 7);
        let held = cache
            .linked("ada", id, None, 7)
            .expect("linked to the chain's first write");
        assert_eq!(texts(&held), ["a", "b", "c", "d"]);
        assert_eq!(
            cache.linked("ada", id, Some(1), 3).map(|held| texts(&held)),
            Some(vec!["d".to_owned()])
        );
        assert!(
            cache.linked("ada", id, None, 8).is_none(),
            "a chain that began after the write"
        );
        assert!(cache.linked("bob", id, None, 7).is_none(), "another owner");
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_later_write_of_the_conversation_unlinks_its_history() {
        let cache = HistoryCache::new(HISTORY_CACHE_BYTES);
        let id = Uuid::now_v7();
        let after = linked_turn(&cache, id, 7);
        // Written by write 9, whose caller has not extended the entry (and may never).
        cache.touch(id, 9);
        assert!(cache.linked("ada", id, None, 7).is_none());
        // Nor does a link to an earlier write that comes late take.
        cache.link(id, after, 7);
        assert!(cache.linked("ada", id, None, 7).is_none());
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn only_the_write_that_marked_a_history_last_links_it() {
        let cache = HistoryCache::new(HISTORY_CACHE_BYTES);
        let id = Uuid::now_v7();
        hold(&cache, "ada", id, revision(0, 2), &[said("a"), said("b")]);
        cache.touch(id, 7);
        cache.touch(id, 8);
        let (before, after) = revision(1, 4).around_turn(2);
        cache.appended(id, (before, after), &[said("c"), said("d")]);
        // Write 7's caller extends the entry while write 8 (of this conversation too) is
        // not yet told: the entry is not what write 8 left.
        cache.link(id, after, 7);
        assert!(cache.linked("ada", id, None, 1).is_none());
        // Nor a link at a revision the entry is not at.
        cache.link(id, revision(2, 6), 8);
        assert!(cache.linked("ada", id, None, 1).is_none());
    }

    #[cfg(feature = "sqlite")]
    #[test]
    fn a_history_read_again_or_extended_without_a_link_is_not_linked() {
        let cache = HistoryCache::new(HISTORY_CACHE_BYTES);
        let id = Uuid::now_v7();
        let after = linked_turn(&cache, id, 7);
        hold(
            &cache,
            "ada",
            id,
            after,
            &[said("a"), said("b"), said("c"), said("d")],
        );
        assert!(cache.linked("ada", id, None, 1).is_none(), "read again");
        let other = Uuid::now_v7();
        let after = linked_turn(&cache, other, 8);
        cache.appended(
            other,
            revision(2, 6).around_turn(2),
            &[said("e"), said("f")],
        );
        assert_eq!(cache.revision("ada", other, None), Some(revision(2, 6)));
        assert!(
            cache.linked("ada", other, None, 1).is_none(),
            "extended past {after:?} by a write of no link"
        );
    }

    #[test]
    fn a_turn_written_at_the_revision_held_extends_the_history() {
        let cache = HistoryCache::new(HISTORY_CACHE_BYTES);
        let id = Uuid::now_v7();
        hold(&cache, "ada", id, revision(0, 2), &[said("a"), said("b")]);
        let (before, after) = revision(1, 4).around_turn(2);
        assert_eq!(before, revision(0, 2));
        cache.appended(id, (before, after), &[said("c"), said("d")]);
        assert_eq!(cache.revision("ada", id, None), Some(after));
        let held = cache.messages("ada", id, None, after).expect("held");
        assert_eq!(texts(&held), ["a", "b", "c", "d"]);
        assert_eq!(held[0].role(), "user");
        // The text as the turn carried it, not made again.
        assert_eq!(held[0].json(), said("a").json());
    }

    #[test]
    fn a_turn_written_at_another_revision_drops_the_history() {
        let cache = HistoryCache::new(HISTORY_CACHE_BYTES);
        let id = Uuid::now_v7();
        hold(&cache, "ada", id, revision(0, 2), &[said("a"), said("b")]);
        // Another instance's turn came between: the row moved from 1 to 2, not 0 to 1.
        cache.appended(id, revision(2, 6).around_turn(2), &[said("e"), said("f")]);
        assert_eq!(cache.revision("ada", id, None), None);
        assert_eq!(cache.messages("ada", id, None, revision(2, 6)), None);
    }

    #[test]
    fn a_history_is_served_only_at_its_revision_and_to_its_owner() {
        let cache = HistoryCache::new(HISTORY_CACHE_BYTES);
        let id = Uuid::now_v7();
        let at = revision(3, 1);
        hold(&cache, "ada", id, at, &[said("a")]);
        assert_eq!(cache.revision("bob", id, None), None);
        assert_eq!(cache.messages("bob", id, None, at), None);
        assert_eq!(cache.messages("ada", id, None, revision(4, 1)), None);
        assert_eq!(
            cache.messages("ada", id, None, at).map(|m| texts(&m)),
            Some(vec!["a".to_owned()])
        );
    }

    #[test]
    fn a_windowed_history_serves_windows_up_to_its_own() {
        let cache = HistoryCache::new(HISTORY_CACHE_BYTES);
        let id = Uuid::now_v7();
        let read: Vec<_> = ["b", "c", "d"].iter().map(|t| stored(&said(t))).collect();
        cache.keep("ada", id, Some(3), revision(5, 9), &read);
        assert_eq!(cache.revision("ada", id, None), None);
        assert_eq!(cache.revision("ada", id, Some(4)), None);
        let two = cache
            .messages("ada", id, Some(2), revision(5, 9))
            .expect("held");
        assert_eq!(texts(&two), ["c", "d"]);
        // A turn keeps the window's length.
        cache.appended(id, revision(6, 11).around_turn(2), &[said("e"), said("f")]);
        let three = cache
            .messages("ada", id, Some(3), revision(6, 11))
            .expect("held");
        assert_eq!(texts(&three), ["d", "e", "f"]);
    }

    #[test]
    fn a_whole_history_serves_any_window() {
        let cache = HistoryCache::new(HISTORY_CACHE_BYTES);
        let id = Uuid::now_v7();
        hold(
            &cache,
            "",
            id,
            revision(0, 3),
            &[said("a"), said("b"), said("c")],
        );
        let last = cache
            .messages("", id, Some(2), revision(0, 3))
            .expect("held");
        assert_eq!(texts(&last), ["b", "c"]);
        let more = cache
            .messages("", id, Some(10), revision(0, 3))
            .expect("held");
        assert_eq!(texts(&more), ["a", "b", "c"]);
    }

    #[test]
    fn a_read_older_than_the_revision_held_does_not_replace_it() {
        let cache = HistoryCache::new(HISTORY_CACHE_BYTES);
        let id = Uuid::now_v7();
        hold(&cache, "", id, revision(4, 2), &[said("a"), said("b")]);
        hold(&cache, "", id, revision(3, 1), &[said("a")]);
        assert_eq!(cache.revision("", id, None), Some(revision(4, 2)));
    }

    #[test]
    fn the_least_recently_used_histories_go_first_when_the_limit_is_passed() {
        let one = Entry::new("", revision(0, 1), None, vec![stored(&said("x"))]).bytes;
        let cache = HistoryCache::new(one * 8);
        let ids: Vec<Uuid> = (0..9).map(|_| Uuid::now_v7()).collect();
        for id in &ids[..8] {
            hold(&cache, "", *id, revision(0, 1), &[said("x")]);
        }
        // The first is used again, so the second is the least recently used.
        assert!(cache.revision("", ids[0], None).is_some());
        hold(&cache, "", ids[8], revision(0, 1), &[said("x")]);
        assert!(cache.revision("", ids[0], None).is_some());
        assert!(cache.revision("", ids[1], None).is_none());
        assert!(cache.revision("", ids[8], None).is_some());
        assert_eq!(cache.state().bytes, one * 8);
    }

    #[test]
    fn a_history_over_an_eighth_of_the_limit_is_not_kept() {
        let cache = HistoryCache::new(1024);
        let id = Uuid::now_v7();
        hold(&cache, "", id, revision(0, 1), &[said(&"x".repeat(200))]);
        assert_eq!(cache.revision("", id, None), None);
        assert_eq!(cache.state().bytes, 0);
    }

    #[test]
    fn a_history_a_turn_grows_past_an_eighth_of_the_limit_is_dropped() {
        let cache = HistoryCache::new(4096);
        let id = Uuid::now_v7();
        hold(&cache, "", id, revision(0, 1), &[said("a")]);
        assert!(cache.revision("", id, None).is_some());
        cache.appended(id, revision(1, 2).around_turn(1), &[said(&"x".repeat(600))]);
        assert_eq!(cache.revision("", id, None), None);
        assert_eq!(cache.state().bytes, 0);
    }

    #[test]
    fn a_lower_limit_lets_the_least_recently_used_go_and_zero_keeps_nothing() {
        let one = Entry::new("", revision(0, 1), None, vec![stored(&said("x"))]).bytes;
        let cache = HistoryCache::new(one * 8);
        let ids: Vec<Uuid> = (0..4).map(|_| Uuid::now_v7()).collect();
        for id in &ids {
            hold(&cache, "", *id, revision(0, 1), &[said("x")]);
        }
        cache.set_limit(one * 2);
        assert_eq!(cache.state().bytes, one * 2);
        assert!(cache.revision("", ids[1], None).is_none());
        assert!(cache.revision("", ids[3], None).is_some());
        cache.set_limit(0);
        assert_eq!(cache.state().bytes, 0);
        hold(&cache, "", ids[0], revision(0, 1), &[said("x")]);
        assert!(cache.revision("", ids[0], None).is_none());
    }

    #[test]
    fn a_forgotten_conversation_gives_back_its_bytes() {
        let cache = HistoryCache::new(HISTORY_CACHE_BYTES);
        let id = Uuid::now_v7();
        hold(&cache, "", id, revision(0, 1), &[said("a")]);
        assert!(cache.state().bytes > 0);
        cache.forget(id);
        assert_eq!(cache.state().bytes, 0);
        assert_eq!(cache.revision("", id, None), None);
    }
}
