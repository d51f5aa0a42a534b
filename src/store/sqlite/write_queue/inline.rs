//! A turn written on the thread that asked for it, rather than on sqlx's.
//!
//! sqlx runs each SQLite connection on a thread of its own: a call is sent to that
//! thread and its answer sent back, two hand-offs between threads, and at a model's pace,
//! when turns seldom overlap, each one wakes a sleeping thread and then a sleeping
//! runtime worker: about eight context switches a turn, more than the rest of the
//! layer's work on a continued turn's request (see `docs/performance.md`). A batch of
//! one turn of a question and its reply, the usual batch, is written here instead, on
//! the runtime's thread, through a connection of the writer's own (rusqlite's, which
//! links the same SQLite as sqlx), opened on the same file beside the writer's sqlx
//! connection and closed with it. A history read between writes goes to it too (see
//! [`idle_writer`](super::idle_writer)): it wrote the last turns' pages and holds them,
//! where the sqlx connection's cache would be stale.
//!
//! It never waits, since a runtime thread must not:
//! - its busy timeout is zero: when another connection holds SQLite's write lock
//!   (another process's, or a write of this one that does not queue, such as a rename),
//!   `BEGIN IMMEDIATE` fails at once and the turn goes to the sqlx connection, which
//!   waits on its own thread as before;
//! - nothing it commits syncs the disk: it is used only on a file in WAL mode with
//!   `synchronous` at most `NORMAL`, and it never checkpoints (`wal_autocheckpoint` is 0
//!   on it). The writer's other commits, the full-text index's feed at least once a
//!   second while turns come, checkpoint as they always did, on sqlx's thread;
//! - a turn of more than [`INLINE_BYTES`] of text goes the sqlx way.
//!
//! It is opened with the settings of the writer's sqlx connection that a write depends
//! on: its file (`pragma_database_list`, so a relative name cannot resolve elsewhere),
//! `synchronous` and `foreign_keys`. Other pragmas and the pool's `after_connect` hook
//! do not reach it, as they do not reach the writer's sqlx connection. A pool whose
//! options name a VFS, or open the file read-only or immutable, or whose connections
//! lock it exclusively, or a database in memory, writes every turn the sqlx way.

use std::time::Duration;

use rusqlite::{Connection, ErrorCode, OpenFlags, ToSql};
use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Row, SqliteConnection};

use super::{BEGIN_WRITE, TurnRows, first_revision};
use crate::store::StoreError;
use crate::store::batch::{MessageBinds, SqliteBatch};
use crate::store::history_cache::Revision;

/// [`append_turn!`]'s statements for a pair, one by one: rusqlite prepares one statement
/// at a time (and keeps each prepared), where sqlx takes them as one call. Each binds the
/// parameters it names of the turn's list (`?1` id, `?2` owner, `?3` count, `?4` now,
/// `?5` to `?16` the pair).
const APPEND: [&str; 3] = [
    append_messages!(appended_pair!()),
    move_on!(),
    revision_after!(),
];

/// [`create_turn!`]'s statements for a pair, one by one (`?1` id, `?2` owner, `?3`
/// title, `?4` now, `?5` count, `?6` metadata, `?7` to `?18` the pair).
const CREATE: [&str; 2] = [insert_conversation!(), created_pair!()];

const COMMIT: &str = "COMMIT";
const ROLLBACK: &str = "ROLLBACK";

/// The settings of the writer's sqlx connection the inline connection depends on.
const SETTINGS: &str = "
SELECT (SELECT file FROM pragma_database_list WHERE name = 'main'),
       (SELECT journal_mode FROM pragma_journal_mode),
       (SELECT locking_mode FROM pragma_locking_mode),
       (SELECT synchronous FROM pragma_synchronous),
       (SELECT foreign_keys FROM pragma_foreign_keys)";

/// `synchronous` as the sqlx connection has it: `OFF` (0) or `NORMAL` (1), the two a
/// WAL commit does not sync the disk with.
const SYNCHRONOUS: [&str; 2] = ["PRAGMA synchronous = OFF", "PRAGMA synchronous = NORMAL"];
const FOREIGN_KEYS: [&str; 2] = ["PRAGMA foreign_keys = OFF", "PRAGMA foreign_keys = ON"];
/// Leaves checkpoints, and the syncs they make, to the sqlx connections.
const NO_CHECKPOINTS: &str = "PRAGMA wal_autocheckpoint = 0";

/// The most text a turn written inline binds, in bytes: SQLite copies each byte a few
/// times on its way into the pages, so a turn within it takes the runtime's thread for a
/// fraction of a millisecond; a larger one takes sqlx's.
pub(super) const INLINE_BYTES: usize = 64 * 1024;

/// What the writer knows of the inline connection beside its sqlx connection.
#[derive(Default)]
pub(super) enum Inline {
    /// Not opened yet: the next turn that can go inline opens it.
    #[default]
    Unopened,
    Open(InlineWriter),
    /// The file or the pool's settings do not allow it (see the module's docs), or it
    /// failed to open: turns go the sqlx way until the sqlx connection is replaced.
    Unused,
}

/// The inline connection.
pub(in crate::store::sqlite) struct InlineWriter {
    connection: Connection,
}

/// How a turn offered to the inline connection went.
pub(super) enum Written {
    /// Written, or failed as it would have on the sqlx connection (nothing of it stays).
    Done(Result<Revision, StoreError>),
    /// The file's write lock is held elsewhere: write the turn the sqlx way.
    Busy,
    /// The connection could not begin a transaction: close it, and write the turn the
    /// sqlx way (nothing of it was written).
    Unbegun(StoreError),
    /// The connection could not end the turn's transaction: close it (which rolls the
    /// transaction back), and tell the turn.
    Broken(StoreError),
}

/// The pair of a turn the inline connection takes: one of a question and its reply, of
/// at most [`INLINE_BYTES`].
pub(super) fn inline_pair(turn: &TurnRows) -> Option<&[MessageBinds; 2]> {
    let SqliteBatch::Pair(pair) = &turn.rows else {
        return None;
    };
    let bytes: usize = pair.iter().map(text_bytes).sum();
    (bytes + turn.owner.len() <= INLINE_BYTES).then_some(&**pair)
}

impl Inline {
    /// The inline connection for the writer's sqlx `connection`, opened with its
    /// settings, when the file and the pool's `options` allow one.
    pub(super) async fn open(
        connection: &mut SqliteConnection,
        options: &SqliteConnectOptions,
    ) -> Self {
        if !default_file_access(options) {
            return Self::Unused;
        }
        match InlineWriter::open(connection).await {
            Ok(Some(writer)) => Self::Open(writer),
            Ok(None) => Self::Unused,
            Err(error) => {
                tracing::debug!(%error, "SQLite turns go through sqlx: no inline connection");
                Self::Unused
            }
        }
    }
}

/// Whether the pool's options open the file the way a plain connection does: no VFS of
/// their own, writable, not immutable. sqlx has no getter for these, so they are read
/// from the options' `Debug` text; should its form change, the check fails and turns go
/// the sqlx way, which is always safe (a lib test pins that plain options pass).
fn default_file_access(options: &SqliteConnectOptions) -> bool {
    let described = format!("{options:?}");
    ["vfs: None", "read_only: false", "immutable: false"]
        .iter()
        .all(|setting| described.contains(setting))
}

impl InlineWriter {
    /// Opens the connection on the sqlx connection's file with its settings, or `None`
    /// when they do not allow one.
    async fn open(sqlx: &mut SqliteConnection) -> Result<Option<Self>, StoreError> {
        let settings = sqlx::query(SETTINGS).fetch_one(&mut *sqlx).await?;
        let file: String = settings.try_get(0)?;
        let journal: String = settings.try_get(1)?;
        let locking: String = settings.try_get(2)?;
        let synchronous: i64 = settings.try_get(3)?;
        let foreign_keys: i64 = settings.try_get(4)?;
        let (Ok(synchronous), Ok(foreign_keys)) =
            (usize::try_from(synchronous), usize::try_from(foreign_keys))
        else {
            return Ok(None);
        };
        let (Some(synchronous), Some(foreign_keys)) =
            (SYNCHRONOUS.get(synchronous), FOREIGN_KEYS.get(foreign_keys))
        else {
            return Ok(None);
        };
        let wal = journal.eq_ignore_ascii_case("wal");
        let shared = locking.eq_ignore_ascii_case("normal");
        // An empty name is a database in memory or a temporary one.
        if file.is_empty() || !wal || !shared {
            return Ok(None);
        }
        // The file exists (the sqlx connection has it open): no `CREATE`. Its name is a
        // path, not a URI.
        let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let connection = Connection::open_with_flags(file, flags).map_err(query_error)?;
        connection
            .busy_timeout(Duration::ZERO)
            .map_err(query_error)?;
        for setting in [synchronous, foreign_keys, NO_CHECKPOINTS] {
            connection.execute_batch(setting).map_err(query_error)?;
        }
        // It reads in WAL mode too: a file that left it since is not written inline.
        let journal: String = connection
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .map_err(query_error)?;
        Ok(journal
            .eq_ignore_ascii_case("wal")
            .then_some(Self { connection }))
    }

    /// Writes `turn`, whose messages are `pair`, in a transaction of its own at `now`.
    pub(super) fn write(
        &mut self,
        turn: &TurnRows,
        pair: &[MessageBinds; 2],
        now: &str,
    ) -> Written {
        if let Err(error) = self.run(BEGIN_WRITE) {
            return if error.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) {
                Written::Busy
            } else {
                Written::Unbegun(query_error(error))
            };
        }
        let written = self.statements(turn, pair, now);
        let ended = match written {
            Ok(_) => self.run(COMMIT),
            Err(_) => self.run(ROLLBACK),
        };
        match ended {
            Ok(()) => Written::Done(written),
            // A failed commit leaves the transaction open: roll it back, or close the
            // connection, which rolls it back.
            Err(error) if written.is_ok() && self.run(ROLLBACK).is_ok() => {
                Written::Done(Err(query_error(error)))
            }
            Err(error) => Written::Broken(query_error(error)),
        }
    }

    /// The turn's statements, each bound with the parameters it names.
    fn statements(
        &mut self,
        turn: &TurnRows,
        pair: &[MessageBinds; 2],
        now: &str,
    ) -> Result<Revision, StoreError> {
        let id = turn.id.as_bytes();
        let [first, second] = pair;
        let [first, second] = [columns(first), columns(second)];
        if turn.create {
            // A turn's new conversation has no metadata: the text of an empty object.
            let head: [&dyn ToSql; 6] = [id, &turn.owner, &turn.title, &now, &turn.count, &"{}"];
            let parameters = concat_parameters(&head, &first, &second);
            for statement in CREATE {
                self.execute(statement, &parameters)?;
            }
            return Ok(first_revision(turn.count));
        }
        let head: [&dyn ToSql; 4] = [id, &turn.owner, &turn.count, &now];
        let parameters = concat_parameters(&head, &first, &second);
        let [messages, row, revision] = APPEND;
        self.execute(messages, &parameters)?;
        self.execute(row, &parameters)?;
        let mut statement = self.bound(revision, &parameters)?;
        let mut rows = statement.raw_query();
        let row = rows
            .next()
            .map_err(query_error)?
            .ok_or(StoreError::NotFound)?;
        Ok(Revision {
            revision: row.get(0).map_err(query_error)?,
            next_sequence: row.get(1).map_err(query_error)?,
            message_count: row.get(2).map_err(query_error)?,
        })
    }

    /// Runs `statement`, a read of one row, with `parameters`, and hands the row to
    /// `read`; `None` when SQLite answers busy (a reader of a WAL file seldom is, while
    /// another connection recovers or resets the log), for the caller to read on a
    /// connection that waits.
    ///
    /// A read here takes the caller's thread as a turn does, for as long as SQLite takes
    /// to gather the row; for a history that is of the order of what the layer spends on
    /// it after (checking each message's JSON, splicing it into the request).
    pub(in crate::store::sqlite) fn read_row<T>(
        &mut self,
        statement: &str,
        parameters: &[&dyn ToSql],
        read: impl FnOnce(&rusqlite::Row<'_>) -> Result<T, StoreError>,
    ) -> Option<Result<T, StoreError>> {
        let mut statement = match self.bound(statement, parameters) {
            Ok(statement) => statement,
            Err(error) => return Some(Err(error)),
        };
        let mut rows = statement.raw_query();
        match rows.next() {
            Ok(Some(row)) => Some(read(row)),
            Ok(None) => Some(Err(StoreError::NotFound)),
            Err(error) if error.sqlite_error_code() == Some(ErrorCode::DatabaseBusy) => None,
            Err(error) => Some(Err(query_error(error))),
        }
    }

    fn execute(&self, statement: &str, parameters: &[&dyn ToSql]) -> Result<(), StoreError> {
        self.bound(statement, parameters)?
            .raw_execute()
            .map_err(query_error)?;
        Ok(())
    }

    /// `statement`, prepared once and kept, with the parameters it names bound (`?N` is
    /// the `N`-th of `parameters`).
    fn bound(
        &self,
        statement: &str,
        parameters: &[&dyn ToSql],
    ) -> Result<rusqlite::CachedStatement<'_>, StoreError> {
        let mut prepared = self
            .connection
            .prepare_cached(statement)
            .map_err(query_error)?;
        for index in 1..=prepared.parameter_count() {
            let value = parameters
                .get(index - 1)
                .ok_or_else(|| StoreError::Query(Box::new(Unbound(index))))?;
            prepared
                .raw_bind_parameter(index, value)
                .map_err(query_error)?;
        }
        Ok(prepared)
    }

    fn run(&self, statement: &str) -> Result<(), rusqlite::Error> {
        self.connection.prepare_cached(statement)?.raw_execute()?;
        Ok(())
    }
}

/// A turn's parameters: its own, then the pair's columns.
fn concat_parameters<'a>(
    head: &[&'a dyn ToSql],
    first: &[&'a dyn ToSql; 6],
    second: &[&'a dyn ToSql; 6],
) -> Vec<&'a dyn ToSql> {
    let mut parameters = Vec::with_capacity(head.len() + 12);
    parameters.extend_from_slice(head);
    parameters.extend_from_slice(first);
    parameters.extend_from_slice(second);
    parameters
}

/// A message's columns in `message_columns!`'s order, as the inline connection binds them.
fn columns(message: &MessageBinds) -> [&dyn ToSql; 6] {
    [
        &message.role,
        &message.message,
        &message.text,
        &message.reasoning,
        &message.events,
        &message.metadata,
    ]
}

/// The bytes of text a message binds.
fn text_bytes(message: &MessageBinds) -> usize {
    let optional =
        [&message.text, &message.events].map(|text| text.as_ref().map_or(0, String::len));
    message.role.len()
        + message.message.len()
        + message
            .reasoning
            .as_ref()
            .map_or(0, |reasoning| reasoning.len())
        + message.metadata.len()
        + optional.iter().sum::<usize>()
}

/// A statement names a parameter the turn's list does not have: a statement and its
/// list out of step, which the lib tests rule out.
#[derive(Debug, thiserror::Error)]
#[error("statement parameter ?{0} has no value")]
struct Unbound(usize);

/// A failure of SQLite on the inline connection, as sqlx's are told (see
/// [`StoreError`]'s `From<sqlx::Error>`): a failed query.
pub(in crate::store::sqlite) fn query_error(error: rusqlite::Error) -> StoreError {
    StoreError::Query(Box::new(error))
}

#[cfg(test)]
mod tests {
    use serde_json::json;
    use sqlx::sqlite::{SqliteConnectOptions, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
    use sqlx::{Connection, Row, SqliteConnection};
    use uuid::Uuid;

    use super::super::super::test_file::TestFile;
    use super::super::pool_queue;
    use crate::store::{ConversationStore, NewMessage, StoreError, TurnStore, TurnTarget};

    use super::*;

    /// A migrated database in a file of its own, opened as the example proxy opens it
    /// (WAL, `synchronous = NORMAL`) unless `options` says otherwise.
    async fn database(
        options: impl FnOnce(SqliteConnectOptions) -> SqliteConnectOptions,
    ) -> (SqlitePool, TestFile) {
        let file = TestFile::new("inline");
        let plain = SqliteConnectOptions::new()
            .filename(file.path())
            .create_if_missing(true)
            .synchronous(SqliteSynchronous::Normal);
        let pool = SqlitePoolOptions::new()
            .connect_with(options(plain))
            .await
            .expect("open");
        pool.migrate().await.expect("migrate");
        (pool, file)
    }

    fn turn(question: &str, answer: &str) -> Vec<NewMessage> {
        vec![
            NewMessage::new(json!({"role": "user", "content": question})),
            NewMessage::new(json!({"role": "assistant", "content": answer})),
        ]
    }

    /// A new conversation of `owner`, its first turn of `question` and `answer` written.
    async fn conversation(pool: &SqlitePool, owner: &str, question: &str, answer: &str) -> Uuid {
        let id = Uuid::now_v7();
        pool.append_turn(
            owner,
            id,
            TurnTarget::NewConversation,
            &turn(question, answer),
        )
        .await
        .expect("first turn");
        id
    }

    /// What the file's writer holds beside its sqlx connection, read between writes.
    fn inline_state(pool: &SqlitePool) -> &'static str {
        let queue = pool_queue(pool);
        let writer = queue.writer.try_lock().expect("no write under way");
        match writer.held.as_ref().map(|held| &held.inline) {
            None => "no connection held",
            Some(Inline::Unopened) => "unopened",
            Some(Inline::Open(_)) => "open",
            Some(Inline::Unused) => "unused",
        }
    }

    /// The contents of a conversation's messages, in order, as stored.
    async fn stored(pool: &SqlitePool, id: Uuid) -> Vec<(i64, String)> {
        let rows = sqlx::query(
            "SELECT sequence_number, message ->> '$.content' FROM messages
             WHERE conversation_id = ?1 ORDER BY sequence_number",
        )
        .bind(id)
        .fetch_all(pool)
        .await
        .expect("read");
        rows.iter().map(|row| (row.get(0), row.get(1))).collect()
    }

    #[tokio::test]
    async fn a_question_and_its_reply_are_written_on_the_inline_connection() {
        let (pool, _file) = database(|options| options).await;
        let id = Uuid::now_v7();
        let first = pool
            .append_turn("ada", id, TurnTarget::NewConversation, &turn("q0", "a0"))
            .await
            .expect("first turn");
        assert_eq!(inline_state(&pool), "open");
        let second = pool
            .append_turn("ada", id, TurnTarget::Existing, &turn("q1", "a1"))
            .await
            .expect("second turn");
        assert_eq!((first, second), (0, 2));
        let expected: Vec<(i64, String)> = [(0, "q0"), (1, "a0"), (2, "q1"), (3, "a1")]
            .map(|(sequence, text)| (sequence, text.to_owned()))
            .into();
        assert_eq!(stored(&pool, id).await, expected);
        let detail = pool.get("ada", id).await.expect("detail");
        assert_eq!(detail.conversation.message_count, 4);
        assert_eq!(detail.conversation.title.as_deref(), Some("q0"));
        let history = pool.load_history("ada", id, None).await.expect("history");
        assert_eq!(history.len(), 4);
        assert_eq!(inline_state(&pool), "open");
    }

    /// Another pool on the file has a history cache of its own but the same writer: its
    /// reads between writes go to the inline connection.
    #[tokio::test]
    async fn a_history_read_on_the_inline_connection_is_the_history_stored() {
        let (pool, file) = database(|options| options).await;
        let id = conversation(&pool, "ada", "q0", "a0").await;
        pool.append_turn("ada", id, TurnTarget::Existing, &turn("q1 \u{e9}", "a1"))
            .await
            .expect("second turn");
        let reader = SqlitePool::connect_with(SqliteConnectOptions::new().filename(file.path()))
            .await
            .expect("open");
        assert_eq!(inline_state(&reader), "open");
        let contents = |history: Vec<crate::store::HistoryMessage>| -> Vec<(String, String)> {
            history
                .iter()
                .map(|message| (message.role().to_owned(), message.json().to_owned()))
                .collect()
        };
        let expected: Vec<(String, String)> = turn("q0", "a0")
            .iter()
            .chain(&turn("q1 \u{e9}", "a1"))
            .map(|message| (message.role().to_owned(), message.json().to_owned()))
            .collect();
        let whole = reader.load_history("ada", id, None).await.expect("history");
        assert_eq!(contents(whole), expected);
        // Read again at the revision now held: the row alone, the same history.
        let again = reader.load_history("ada", id, None).await.expect("history");
        assert_eq!(contents(again), expected);
        let window = reader
            .load_history("ada", id, Some(2))
            .await
            .expect("window");
        assert_eq!(contents(window), expected[2..]);
        for (owner, id) in [("bob", id), ("ada", Uuid::now_v7())] {
            let missing = reader.load_history(owner, id, None).await;
            assert!(matches!(missing, Err(StoreError::NotFound)), "{missing:?}");
        }
        // A stored text that is not a JSON object is told as such, not spliced.
        sqlx::query("UPDATE messages SET message = 'not json' WHERE sequence_number = 1")
            .execute(&pool)
            .await
            .expect("spoil a message");
        sqlx::query("UPDATE conversations SET revision = revision + 1")
            .execute(&pool)
            .await
            .expect("move the revision on");
        let spoiled = reader.load_history("ada", id, None).await;
        assert!(
            matches!(spoiled, Err(StoreError::Corrupt(_))),
            "{spoiled:?}"
        );
    }

    #[tokio::test]
    async fn the_inline_connection_has_the_writer_s_synchronous_and_foreign_keys_and_never_waits() {
        let (pool, _file) = database(|options| {
            options
                .synchronous(SqliteSynchronous::Off)
                .foreign_keys(false)
        })
        .await;
        conversation(&pool, "", "q", "a").await;
        let queue = pool_queue(&pool);
        let writer = queue.writer.try_lock().expect("no write under way");
        let Some(Inline::Open(inline)) = writer.held.as_ref().map(|held| &held.inline) else {
            panic!("no inline connection");
        };
        let setting = |pragma: &str| -> i64 {
            inline
                .connection
                .query_row(pragma, [], |row| row.get(0))
                .expect("pragma")
        };
        assert_eq!(setting("PRAGMA synchronous"), 0);
        assert_eq!(setting("PRAGMA foreign_keys"), 0);
        assert_eq!(setting("PRAGMA busy_timeout"), 0);
        assert_eq!(setting("PRAGMA wal_autocheckpoint"), 0);
    }

    #[tokio::test]
    async fn a_turn_finding_the_write_lock_taken_elsewhere_waits_for_it_the_sqlx_way() {
        let (pool, _file) = database(|options| options).await;
        let id = conversation(&pool, "", "q0", "a0").await;
        assert_eq!(inline_state(&pool), "open");
        let mut elsewhere = SqliteConnection::connect_with(&pool.connect_options())
            .await
            .expect("open");
        sqlx::query("BEGIN IMMEDIATE")
            .execute(&mut elsewhere)
            .await
            .expect("take the write lock");
        let writing = {
            let pool = pool.clone();
            tokio::spawn(async move {
                pool.append_turn("", id, TurnTarget::Existing, &turn("q1", "a1"))
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(!writing.is_finished(), "the turn waits for the lock");
        sqlx::query("COMMIT")
            .execute(&mut elsewhere)
            .await
            .expect("let go of the lock");
        assert_eq!(writing.await.expect("task").expect("second turn"), 2);
        assert_eq!(stored(&pool, id).await.len(), 4);
        // Busy is no failure of the inline connection: the next turn takes it again.
        assert_eq!(inline_state(&pool), "open");
    }

    #[tokio::test]
    async fn a_turn_the_inline_connection_cannot_begin_is_written_the_sqlx_way() {
        let (pool, _file) = database(|options| options).await;
        let id = conversation(&pool, "", "q0", "a0").await;
        {
            let queue = pool_queue(&pool);
            let writer = queue.writer.try_lock().expect("no write under way");
            let Some(Inline::Open(inline)) = writer.held.as_ref().map(|held| &held.inline) else {
                panic!("no inline connection");
            };
            // Left inside a transaction, it cannot begin the next turn's.
            inline.connection.execute_batch("BEGIN").expect("begin");
        }
        pool.append_turn("", id, TurnTarget::Existing, &turn("q1", "a1"))
            .await
            .expect("second turn");
        assert_eq!(stored(&pool, id).await.len(), 4);
        assert_eq!(inline_state(&pool), "unopened");
        pool.append_turn("", id, TurnTarget::Existing, &turn("q2", "a2"))
            .await
            .expect("third turn");
        assert_eq!(inline_state(&pool), "open");
    }

    #[tokio::test]
    async fn a_pool_whose_commits_sync_the_disk_keeps_turns_on_sqlx_s_thread() {
        // SQLite's default, and sqlx's.
        let (pool, _file) = database(|options| options.synchronous(SqliteSynchronous::Full)).await;
        let id = conversation(&pool, "", "q", "a").await;
        assert_eq!(inline_state(&pool), "unused");
        assert_eq!(stored(&pool, id).await.len(), 2);
    }

    #[tokio::test]
    async fn a_database_in_memory_keeps_turns_on_sqlx_s_thread() {
        let pool = SqlitePool::connect("sqlite::memory:").await.expect("open");
        pool.migrate().await.expect("migrate");
        let id = conversation(&pool, "", "q", "a").await;
        assert_eq!(inline_state(&pool), "unused");
        assert_eq!(stored(&pool, id).await.len(), 2);
    }

    #[test]
    fn options_naming_a_vfs_or_opening_the_file_read_only_or_immutable_are_not_plain() {
        let plain = SqliteConnectOptions::new().filename("a.db");
        assert!(default_file_access(&plain));
        assert!(default_file_access(
            &plain.clone().synchronous(SqliteSynchronous::Normal)
        ));
        for options in [
            plain.clone().vfs("unix-dotfile"),
            plain.clone().read_only(true),
            plain.clone().immutable(true),
        ] {
            assert!(!default_file_access(&options), "{options:?}");
        }
    }

    #[tokio::test]
    async fn a_turn_larger_than_the_inline_bound_goes_the_sqlx_way() {
        let (pool, _file) = database(|options| options).await;
        let id = Uuid::now_v7();
        let large = "x".repeat(INLINE_BYTES);
        pool.append_turn("", id, TurnTarget::NewConversation, &turn("q0", &large))
            .await
            .expect("a large turn");
        assert_eq!(inline_state(&pool), "unopened");
        pool.append_turn("", id, TurnTarget::Existing, &turn("q1", "a1"))
            .await
            .expect("a small turn");
        assert_eq!(inline_state(&pool), "open");
        let stored = stored(&pool, id).await;
        assert_eq!(stored.len(), 4);
        assert_eq!(stored[1].1, large);
    }

    #[tokio::test]
    async fn a_turn_of_an_unknown_conversation_written_inline_writes_nothing() {
        let (pool, _file) = database(|options| options).await;
        let known = conversation(&pool, "ada", "q", "a").await;
        let unknown = Uuid::now_v7();
        for (owner, id) in [("ada", unknown), ("bob", known)] {
            let appended = pool
                .append_turn(owner, id, TurnTarget::Existing, &turn("q1", "a1"))
                .await;
            assert!(
                matches!(appended, Err(StoreError::NotFound)),
                "{appended:?}"
            );
        }
        let count: i64 = sqlx::query_scalar("SELECT count(*) FROM messages")
            .fetch_one(&pool)
            .await
            .expect("count");
        assert_eq!(count, 2);
        assert_eq!(inline_state(&pool), "open");
    }

    #[tokio::test]
    async fn a_new_conversation_whose_id_is_taken_leaves_the_one_there_as_it_was() {
        let (pool, _file) = database(|options| options).await;
        let id = conversation(&pool, "ada", "q", "a").await;
        let taken = pool
            .append_turn("ada", id, TurnTarget::NewConversation, &turn("q'", "a'"))
            .await;
        assert!(matches!(taken, Err(StoreError::Query(_))), "{taken:?}");
        let expected: Vec<(i64, String)> = vec![(0, "q".to_owned()), (1, "a".to_owned())];
        assert_eq!(stored(&pool, id).await, expected);
        // Rolled back, the connection takes the next turn.
        pool.append_turn("ada", id, TurnTarget::Existing, &turn("q1", "a1"))
            .await
            .expect("next turn");
        assert_eq!(inline_state(&pool), "open");
    }
}
