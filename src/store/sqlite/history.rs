//! A conversation's history on SQLite, read as one text.
//!
//! sqlx reads a SQLite row by copying each of its values (`sqlite3_value_dup`), decodes
//! each column into a `String` of its own and frees the copies with the row: about
//! 5,000 instructions a message, half a million for a 100-message history, more than
//! the rest of a continued turn together (see `docs/performance.md`). [`HISTORY`] hands
//! the history back as one text instead, each message after its sequence number and
//! the lengths of its role and its JSON (`"0 4 33 user{...}1 9 35 assistant{...}"`),
//! and [`cut`] cuts it back into messages.
//!
//! The aggregate is not ordered in SQL: `string_agg(... ORDER BY ...)` makes SQLite copy
//! every message into an ordered temporary index first, which cost more than the rows
//! it saved. The rows come in the primary key's order anyway; [`cut`] sorts them by their
//! sequence numbers only when they do not.

use std::sync::Arc;

use sqlx::sqlite::SqliteConnectOptions;
use sqlx::{Row, Sqlite, SqlitePool};
use uuid::Uuid;

use crate::store::kept::Kept;
use crate::store::per_pool::PerPool;
use crate::store::{HistoryMessage, NotAMessage, StoreError};

/// The history, or its last `?3` messages (NULL: all), as one row: how many rows the
/// conversation gave (0: it does not exist for this owner) and its messages as one text
/// (NULL when it has none), each as its sequence number, the length in bytes of its
/// role, the length of its JSON text, each followed by a space, then the role and the
/// JSON.
///
/// The window counts rows, not numbers (which have gaps after a truncation): it keeps
/// what lies above the number of the `?3 + 1`-th newest message, found by walking the
/// primary key backwards from the end, or everything when there are not that many.
const HISTORY: &str = "
SELECT count(c.id),
       string_agg(m.sequence_number || ' ' || octet_length(m.role) || ' '
                      || octet_length(m.message) || ' ' || m.role || m.message, '')
FROM conversations c
LEFT JOIN messages m
    ON m.conversation_id = c.id AND (?3 IS NULL OR m.sequence_number > coalesce((
        SELECT older.sequence_number FROM messages older
        WHERE older.conversation_id = ?1
        ORDER BY older.sequence_number DESC
        LIMIT 1 OFFSET ?3), -1))
WHERE c.id = ?1 AND c.owner = ?2";

/// The messages to splice, as stored, in order; the last `last` when given. A message
/// that is not one JSON object makes the history [`StoreError::Corrupt`]: SQLite's
/// column is plain text, so each is checked before it is spliced (see
/// [`HistoryMessage::from_text`]). On a pool that does not test each connection it hands
/// out, the read's connection is kept for the next one (see [`Kept`]): given back to the
/// pool, it would cost a round trip to its worker thread.
pub(super) async fn history(
    pool: &SqlitePool,
    owner: &str,
    id: Uuid,
    last: Option<u32>,
) -> Result<Vec<HistoryMessage>, StoreError> {
    static KEPT: PerPool<SqliteConnectOptions, Arc<Kept<Sqlite>>> = PerPool::new();
    let kept = KEPT.get(&pool.connect_options(), || Arc::new(Kept::new(pool)));
    let mut taken = kept.take_or_acquire(pool).await?;
    let row = sqlx::query(HISTORY)
        .bind(id)
        .bind(owner)
        .bind(last.map(i64::from))
        .fetch_one(&mut *taken.connection)
        .await?;
    kept.give_back(pool, taken);
    if row.try_get::<i64, _>(0)? == 0 {
        return Err(StoreError::NotFound);
    }
    let text: Option<&str> = row.try_get(1)?;
    cut(text.unwrap_or_default()).ok_or_else(|| StoreError::Corrupt(Box::new(NotAMessage)))
}

/// The messages `text` holds (see [`HISTORY`]), in sequence order; `None` when it does
/// not read that way or a message is not one JSON object.
fn cut(mut text: &str) -> Option<Vec<HistoryMessage>> {
    let mut numbered = Vec::new();
    while !text.is_empty() {
        let (sequence, rest) = text.split_once(' ')?;
        let (role_length, rest) = rest.split_once(' ')?;
        let (json_length, rest) = rest.split_once(' ')?;
        let role_end = role_length.parse::<usize>().ok()?;
        let json_end = role_end.checked_add(json_length.parse::<usize>().ok()?)?;
        let role = rest.get(..role_end)?;
        let json = rest.get(role_end..json_end)?;
        text = rest.get(json_end..)?;
        let message = HistoryMessage::from_text(role, json.to_owned())?;
        numbered.push((sequence.parse::<i64>().ok()?, message));
    }
    if !numbered.is_sorted_by_key(|(sequence, _)| *sequence) {
        numbered.sort_unstable_by_key(|(sequence, _)| *sequence);
    }
    Some(numbered.into_iter().map(|(_, message)| message).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(messages: &[(i64, &str, &str)]) -> String {
        messages
            .iter()
            .map(|(sequence, role, json)| {
                format!("{sequence} {} {} {role}{json}", role.len(), json.len())
            })
            .collect()
    }

    fn read(text: &str) -> Option<Vec<(String, String)>> {
        let history = cut(text)?;
        Some(
            history
                .iter()
                .map(|message| (message.role().to_owned(), message.json().to_owned()))
                .collect(),
        )
    }

    #[test]
    fn messages_are_cut_by_their_lengths_in_bytes_and_put_in_sequence_order() {
        let user = r#"{"role":"user","content":"Zoë 🌍 12 34"}"#;
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
        assert_eq!(read(&written(&in_order)), Some(expected.clone()));
        let shuffled = [in_order[2], in_order[0], in_order[3], in_order[1]];
        assert_eq!(read(&written(&shuffled)), Some(expected));
        assert_eq!(read(""), Some(Vec::new()));
    }

    #[test]
    fn a_text_that_does_not_read_as_messages_is_refused() {
        for text in [
            // Lengths too short, too long, missing, not numbers, not on a char boundary,
            // past usize; a sequence number that is not one; bytes left over.
            "0 4 6 user{\"a\":1}",
            "0 4 8 user{\"a\":1}",
            "0 4 user{\"a\":1}",
            "0 4 x user{\"a\":1}",
            "0 1 7 é{\"a\":1}",
            "0 18446744073709551615 7 user{\"a\":1}",
            "x 4 7 user{\"a\":1}",
            "0 4 7 user{\"a\":1}x",
            // Messages that are not one JSON object.
            "0 4 3 user[1]",
            "0 4 6 user{\"a\":}",
        ] {
            assert!(cut(text).is_none(), "{text}");
        }
    }
}
