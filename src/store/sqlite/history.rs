//! A conversation's history on SQLite, read as one row of texts.
//!
//! sqlx reads a SQLite row by copying each of its values (`sqlite3_value_dup`), decodes
//! each column into a `String` of its own and frees the copies with the row: about
//! 5,000 instructions a message, half a million for a 100-message history, more than
//! the rest of a continued turn together (see `docs/performance.md`). [`HISTORY`] hands
//! the history back as one row of three texts instead (the messages, the roles and the
//! sequence numbers, each joined by a separator), and [`cut`] cuts them back into
//! messages.
//!
//! Messages are joined by NUL: a JSON text holds no raw control character (inside a
//! string it must be escaped, and outside one only spaces, tabs and line breaks may
//! stand), and every message is stored as a JSON text, checked as one when written.
//! Cutting at NUL needs no lengths, which cost SQLite an aggregate of their own
//! (`octet_length`, the number made text, a step a message: 12,000 of 120,000
//! instructions for a 26-message history).
//! A stored text that did hold a NUL would cut into more messages than there are roles,
//! and the history is [`StoreError::Corrupt`].
//!
//! Each text is a plain aggregate of a column: building one record a message in SQL
//! (`sequence || ' ' || length || ' ' || role || message`, or `format()`) made SQLite
//! allocate and copy each piece again and cost more than the aggregates together
//! (a 100-message history: 431,000 and 411,000 instructions in SQLite against 349,000).
//! Roles are joined by NUL too, which no stored role holds (every write replaces it, see
//! `text_without_nul`); a role that did would leave the roles out of step with the
//! messages, and the history [`StoreError::Corrupt`].
//!
//! The aggregates are not ordered in SQL: `string_agg(... ORDER BY ...)` makes SQLite
//! copy every message into an ordered temporary index first, which cost more than the
//! rows it saved. The rows come in the primary key's order anyway, and all three
//! aggregates read them in the same order; [`cut`] sorts the messages by their sequence
//! numbers only when they do not come in it.
//!
//! A history the pool holds in process at the conversation's revision is not read at all
//! (see [`HistoryCache`]): the same statement then returns the conversation's row alone.
//! And when nothing but this process's own turns was committed to the file since one of
//! them left the history as held, not even that row is read (see [`CommitChain`]).
//!
//! [`CommitChain`]: super::commit_chain::CommitChain

use std::sync::Arc;

use rusqlite::ToSql;
use sqlx::query::Query;
use sqlx::sqlite::{SqliteArguments, SqliteConnectOptions, SqliteRow};
use sqlx::{Row, Sqlite, SqlitePool};
use uuid::Uuid;

use super::write_queue::{self, IdleWriter, InlineWriter, Lent, idle_writer, query_error};
use crate::store::history_cache::{HISTORY_CACHE_BYTES, HistoryCache, Revision};
use crate::store::kept::Kept;
use crate::store::per_pool::PerPool;
use crate::store::{HistoryMessage, NotAMessage, StoreError};

/// The history, or its last `?3` messages (NULL: all), as one row: how many rows the
/// conversation gave (0: it does not exist for this owner), its [`Revision`], then its
/// messages' JSON texts and their roles, each joined by NUL, and their sequence numbers
/// joined by a space (all three NULL when it has no message).
///
/// When the revision is `?4`, `?5`, `?6` (what the cache holds), no message is read: the
/// range of sequence numbers asked for starts past the largest there can be, so the look
/// up in the primary key finds nothing. (A condition on the conversation's row beside the
/// join would not stop SQLite from reading every message and testing it.)
///
/// The window counts rows, not numbers (which have gaps after a truncation): it keeps
/// what lies above the number of the `?3 + 1`-th newest message, found by walking the
/// primary key backwards from the end, or everything when there are not that many.
const HISTORY: &str = "
SELECT count(c.id), c.revision, c.next_sequence, c.message_count,
       string_agg(m.message, char(0)),
       string_agg(m.role, char(0)),
       string_agg(m.sequence_number, ' ')
FROM conversations c
LEFT JOIN messages m
    ON m.conversation_id = c.id AND m.sequence_number > CASE
        WHEN c.revision IS ?4 AND c.next_sequence IS ?5 AND c.message_count IS ?6
            THEN 9223372036854775807
        WHEN ?3 IS NULL THEN -1
        ELSE coalesce((
            SELECT older.sequence_number FROM messages older
            WHERE older.conversation_id = ?1
            ORDER BY older.sequence_number DESC
            LIMIT 1 OFFSET ?3), -1)
    END
WHERE c.id = ?1 AND c.owner = ?2";

/// The messages to splice, as stored, in order; the last `last` when given. A message
/// that is not one JSON object makes the history [`StoreError::Corrupt`]: SQLite's
/// column is plain text, so each is checked before it is spliced (see
/// [`HistoryMessage::from_text`]).
///
/// What the pool's [`HistoryCache`] holds of the conversation is read only when the
/// conversation's row no longer has the revision it was held at; what is read is kept.
pub(super) async fn history(
    pool: &SqlitePool,
    owner: &str,
    id: Uuid,
    last: Option<u32>,
) -> Result<Vec<HistoryMessage>, StoreError> {
    let cache = cache(pool);
    // Nothing but this process's own turns was committed since it wrote what it holds:
    // no read at all (see `CommitChain`).
    if let Some(since) = write_queue::unchanged_since(pool, &cache)
        && let Some(held) = cache.linked(owner, id, last, since)
    {
        return Ok(held);
    }
    let read = |known| read(pool, owner, id, last, known);
    cache.read_through(owner, id, last, read, Ok).await
}

/// The messages of [`HISTORY`]'s row.
fn messages(row: SqliteRow) -> Result<Vec<HistoryMessage>, StoreError> {
    let texts = Texts {
        messages: row.try_get::<Option<&str>, _>(4)?,
        roles: row.try_get(5)?,
        sequences: row.try_get(6)?,
    };
    messages_of(texts)
}

/// The messages `texts` hold, or [`StoreError::Corrupt`] when they do not read as
/// messages (see [`cut`]).
fn messages_of(texts: Texts<'_>) -> Result<Vec<HistoryMessage>, StoreError> {
    cut(texts).ok_or_else(|| StoreError::Corrupt(Box::new(NotAMessage)))
}

/// [`HISTORY`]'s row as the inline connection reads it: the conversation's revision
/// and messages, or `None` when it does not exist for this owner.
fn inline_found(row: &rusqlite::Row<'_>) -> Result<Found, StoreError> {
    let number = |index| row.get::<_, i64>(index).map_err(query_error);
    if number(0)? == 0 {
        return Ok(None);
    }
    let revision = Revision {
        revision: number(1)?,
        next_sequence: number(2)?,
        message_count: number(3)?,
    };
    let text = |index| {
        let value = row.get_ref(index).map_err(query_error)?;
        value
            .as_str_or_null()
            .map_err(|error| StoreError::Corrupt(Box::new(error)))
    };
    let texts = Texts {
        messages: text(4)?,
        roles: text(5)?,
        sequences: text(6)?,
    };
    Ok(Some((revision, messages_of(texts)?)))
}

/// What a read of a history found: the conversation's revision and the messages read
/// (none when the cache holds them at that revision), or `None` when it does not exist
/// for this owner.
type Found = Option<(Revision, Vec<HistoryMessage>)>;

/// The pool's history cache.
pub(super) fn cache(pool: &SqlitePool) -> Arc<HistoryCache> {
    static CACHES: PerPool<SqliteConnectOptions, Arc<HistoryCache>> = PerPool::new();
    CACHES.get(&pool.connect_options(), || {
        Arc::new(HistoryCache::new(HISTORY_CACHE_BYTES))
    })
}

/// Runs [`HISTORY`] with the revision the cache holds, if any: the conversation's
/// revision and messages, or `None` when it does not exist for this owner.
///
/// The read goes to a connection the file's writer holds while no write is under way:
/// its page cache holds the pages the last turns wrote (see [`idle_writer`]); on the
/// inline connection, it runs on this thread. Otherwise
/// it goes to the pool, and on a pool that does not test each connection it hands out,
/// the read's connection is kept for the next one (see [`Kept`]): given back to the
/// pool, it would cost a round trip to its worker thread.
async fn read(
    pool: &SqlitePool,
    owner: &str,
    id: Uuid,
    last: Option<u32>,
    known: Option<Revision>,
) -> Result<Found, StoreError> {
    static KEPT: PerPool<SqliteConnectOptions, Arc<Kept<Sqlite>>> = PerPool::new();
    let last = last.map(i64::from);
    let [revision, next_sequence, message_count] = match known {
        Some(known) => [known.revision, known.next_sequence, known.message_count].map(Some),
        None => [None; 3],
    };
    let query = || {
        sqlx::query(HISTORY)
            .bind(id)
            .bind(owner)
            .bind(last)
            .bind(revision)
            .bind(next_sequence)
            .bind(message_count)
    };
    let mut idle = idle_writer(pool);
    let row = match idle.as_mut().and_then(IdleWriter::connection) {
        Some(Lent::Inline(inline)) => {
            if let Some(found) = read_inline(
                inline,
                id,
                owner,
                [last, revision, next_sequence, message_count],
            ) {
                return found;
            }
            // SQLite answered busy: read where a read waits, and let writes go on.
            drop(idle);
            read_on_the_pool(pool, &KEPT, query()).await?
        }
        Some(Lent::Sqlx(connection)) => query().fetch_one(connection).await?,
        None => read_on_the_pool(pool, &KEPT, query()).await?,
    };
    if row.try_get::<i64, _>(0)? == 0 {
        return Ok(None);
    }
    let revision = Revision::from_row(&row, 1)?;
    Ok(Some((revision, messages(row)?)))
}

/// Runs [`HISTORY`] on the inline connection: `numbers` are its parameters after the id
/// and owner. `None` when SQLite answered busy.
fn read_inline(
    inline: &mut InlineWriter,
    id: Uuid,
    owner: &str,
    numbers: [Option<i64>; 4],
) -> Option<Result<Found, StoreError>> {
    let [last, revision, next_sequence, message_count] = &numbers;
    let parameters: [&dyn ToSql; 6] = [
        id.as_bytes(),
        &owner,
        last,
        revision,
        next_sequence,
        message_count,
    ];
    inline.read_row(HISTORY, &parameters, inline_found)
}

/// Runs `query` on the connection `kept` holds for the pool, or one taken from it.
async fn read_on_the_pool(
    pool: &SqlitePool,
    kept: &PerPool<SqliteConnectOptions, Arc<Kept<Sqlite>>>,
    query: Query<'_, Sqlite, SqliteArguments>,
) -> Result<SqliteRow, StoreError> {
    let kept = kept.get(&pool.connect_options(), || Arc::new(Kept::new(pool)));
    let mut taken = kept.take_or_acquire(pool).await?;
    let row = query.fetch_one(&mut *taken.connection).await?;
    kept.give_back(pool, taken);
    Ok(row)
}

/// The three texts [`HISTORY`] reads, `None` where the conversation has no message.
struct Texts<'a> {
    messages: Option<&'a str>,
    roles: Option<&'a str>,
    sequences: Option<&'a str>,
}

/// The messages `texts` hold (see [`HISTORY`]), in sequence order; `None` when they do
/// not read that way (texts out of step with each other) or a message is not one JSON
/// object.
fn cut(texts: Texts<'_>) -> Option<Vec<HistoryMessage>> {
    let (Some(messages), Some(roles), Some(sequences)) =
        (texts.messages, texts.roles, texts.sequences)
    else {
        let none = [texts.messages, texts.roles, texts.sequences];
        return none.iter().all(Option::is_none).then(Vec::new);
    };
    let mut roles = Parts::of(roles, b'\0');
    let mut sequences = Parts::of(sequences, b' ');
    let mut numbered = Vec::new();
    for json in Parts::of(messages, b'\0') {
        let message = HistoryMessage::from_text(roles.next()?, json)?;
        numbered.push((sequences.next()?.parse::<i64>().ok()?, message));
    }
    if roles.next().is_some() || sequences.next().is_some() {
        return None;
    }
    if !numbered.is_sorted_by_key(|(sequence, _)| *sequence) {
        numbered.sort_unstable_by_key(|(sequence, _)| *sequence);
    }
    Some(numbered.into_iter().map(|(_, message)| message).collect())
}

/// The parts of a text between single `separator` bytes (ASCII), found with `memchr`: a
/// byte at a time, the messages cost a 26-message history 23,000 instructions more, and
/// `str::split` spent more setting up its search than scanning the short parts (a role,
/// a number: about 130 instructions a part).
struct Parts<'a> {
    rest: Option<&'a str>,
    separator: u8,
}

impl<'a> Parts<'a> {
    fn of(text: &'a str, separator: u8) -> Self {
        Self {
            rest: Some(text),
            separator,
        }
    }
}

impl<'a> Iterator for Parts<'a> {
    type Item = &'a str;

    fn next(&mut self) -> Option<&'a str> {
        let rest = self.rest?;
        match memchr::memchr(self.separator, rest.as_bytes()) {
            Some(at) => {
                self.rest = rest.get(at + 1..);
                rest.get(..at)
            }
            None => self.rest.take(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The three texts of `messages` as [`HISTORY`] writes them.
    fn written(messages: &[(i64, &str, &str)]) -> [String; 3] {
        let joined = |part: &dyn Fn(&(i64, &str, &str)) -> String, separator: &str| {
            let parts: Vec<String> = messages.iter().map(part).collect();
            parts.join(separator)
        };
        [
            joined(&|(_, _, json)| (*json).to_owned(), "\0"),
            joined(&|(_, role, _)| (*role).to_owned(), "\0"),
            joined(&|(sequence, _, _)| sequence.to_string(), " "),
        ]
    }

    fn read(texts: [Option<&str>; 3]) -> Option<Vec<(String, String)>> {
        let [messages, roles, sequences] = texts;
        let history = cut(Texts {
            messages,
            roles,
            sequences,
        })?;
        Some(
            history
                .iter()
                .map(|message| (message.role().to_owned(), message.json().to_owned()))
                .collect(),
        )
    }

    fn read_written(texts: &[String; 3]) -> Option<Vec<(String, String)>> {
        read(texts.each_ref().map(|text| Some(text.as_str())))
    }

    #[test]
    fn messages_are_cut_at_nul_and_put_in_sequence_order() {
        let user = r#"{"role":"user","content":"Zoë 🌍 12 34 \u0000"}"#;
        let assistant = r#"{"role":"assistant","content":""}"#;
        let odd = r#"{"role":"1 2"}"#;
        let expected = vec![
            ("user".to_owned(), user.to_owned()),
            ("assistant".to_owned(), assistant.to_owned()),
            (String::new(), "{}".to_owned()),
            ("1 2".to_owned(), odd.to_owned()),
        ];
        let in_order = [
            (3, "user", user),
            (4, "assistant", assistant),
            (7, "", "{}"),
            (12, "1 2", odd),
        ];
        assert_eq!(read_written(&written(&in_order)), Some(expected.clone()));
        let shuffled = [in_order[2], in_order[0], in_order[3], in_order[1]];
        assert_eq!(read_written(&written(&shuffled)), Some(expected));
        assert_eq!(read([None; 3]), Some(Vec::new()));
    }

    #[test]
    fn parts_are_what_split_gives() {
        for text in [
            "",
            " ",
            "a",
            "a b",
            " a",
            "a ",
            "a  b",
            "é b 12",
            "user\0\0tool",
        ] {
            for separator in [b' ', b'\0'] {
                let parts: Vec<&str> = Parts::of(text, separator).collect();
                let split: Vec<&str> = text.split(char::from(separator)).collect();
                assert_eq!(parts, split, "{text:?}");
            }
        }
    }

    #[test]
    fn texts_that_do_not_read_as_messages_are_refused() {
        let [json, role, sequence] = [r#"{"a":1}"#, "user", "0"];
        let two = "{\"a\":1}\0{\"é\":2}";
        for texts in [
            // A message holding a NUL, which no JSON text does: cut into more messages
            // than there are roles.
            ["{\"a\":\"x\0y\"}", role, sequence],
            ["{\"a\":1}\0{}", role, sequence],
            // Roles or sequence numbers out of step with the messages; a sequence number
            // that is not one.
            [two, role, "0 1"],
            [json, "user\0user", sequence],
            [two, "user\0user", "0"],
            [json, role, "0 1"],
            [json, role, "x"],
            // Messages that are not one JSON object, or two back to back.
            ["[1]", role, sequence],
            [r#"{"a":}"#, role, sequence],
            [r#"{"a":1}{"b":2}"#, role, sequence],
            ["", role, sequence],
        ] {
            assert!(read(texts.map(Some)).is_none(), "{texts:?}");
        }
        // Some texts NULL, others not.
        assert!(read([Some(json), None, Some(sequence)]).is_none());
        assert!(read([None, Some(role), None]).is_none());
    }
}
