//! The floor under the cost of storing a turn: the rows a new conversation's turn stores
//! (the conversation, the user's message, the reply), inserted the plainest way sqlx
//! allows, on one connection held for the whole run. `load --instructions` counts this
//! program under callgrind beside the proxy, so a turn's cost in the proxy can be read
//! against what the database driver itself needs for the same rows.
//!
//! ```text
//! floor sqlite://FILE TURNS      # a file the proxy has migrated; its search trigger is dropped
//! floor postgres://... TURNS     # a database the proxy has migrated
//! ```
//!
//! SQLite: one transaction a turn (`BEGIN IMMEDIATE`, one call with both inserts,
//! `COMMIT`), with `synchronous = NORMAL` as the proxy runs it, and without the
//! full-text index: the trigger that puts a message on the list to index is dropped
//! first. PostgreSQL: one statement a turn, prepared once and cached by sqlx, over the
//! URL's own TLS setting, the search vector computed by the server as the store does.

use std::process::ExitCode;
use std::str::FromStr;

use sqlx::postgres::PgConnection;
use sqlx::sqlite::{SqliteConnectOptions, SqliteConnection, SqliteSynchronous};
use sqlx::{Connection, Executor};
use uuid::Uuid;

/// The user's message of the load tool's requests, and an empty reply with the metadata
/// the layer keeps, as the JSON text the stores keep.
const USER: &str = r#"{"role":"user","content":"Tell me something."}"#;
const REPLY: &str = r#"{"role":"assistant","content":""}"#;
const REPLY_METADATA: &str = r#"{"model":"m","id":"chatcmpl-1","finish_reason":"stop"}"#;
const TITLE: &str = "Tell me something.";
/// A timestamp as the SQLite schema stores them (fixed width, so text order is time order).
const NOW: &str = "2026-12-03T00:00:00.000000Z";
const OWNER: &str = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";

/// Without it, each message would also go on the list the full-text index is fed from.
const DROP_SEARCH_TRIGGER: &str = "DROP TRIGGER IF EXISTS messages_search_insert";

const SQLITE_TURN: &str = "
INSERT INTO conversations (id, owner, title, created_at, updated_at, message_count,
                           next_sequence, metadata)
VALUES (?1, ?2, ?3, ?4, ?4, 2, 2, '{}');
INSERT INTO messages (conversation_id, sequence_number, created_at, role, message,
                      content_text, metadata)
VALUES (?1, 0, ?4, 'user', ?5, ?6, '{}'), (?1, 1, ?4, 'assistant', ?7, '', ?8)";

const POSTGRES_TURN: &str = "
WITH conversation AS (
    INSERT INTO conversations (id, owner, title, created_at, updated_at, message_count,
                               next_sequence, metadata)
    VALUES ($1, $2, $3, now(), now(), 2, 2, '{}')
    RETURNING id, created_at
)
INSERT INTO messages (conversation_id, sequence_number, role, message, content_search,
                      metadata, created_at)
SELECT id, 0, 'user', $4::json, to_tsvector('simple', $5), '{}', created_at FROM conversation
UNION ALL
SELECT id, 1, 'assistant', $6::json, to_tsvector('simple', ''), $7::jsonb, created_at
FROM conversation";

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let (Some(url), Some(Ok(turns))) = (args.next(), args.next().map(|n| n.parse::<usize>()))
    else {
        eprintln!("usage: floor DATABASE_URL TURNS");
        return ExitCode::FAILURE;
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("no runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = if url.starts_with("sqlite:") {
        runtime.block_on(sqlite(&url, turns))
    } else {
        runtime.block_on(postgres(&url, turns))
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("floor: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn sqlite(url: &str, turns: usize) -> Result<(), sqlx::Error> {
    let options = SqliteConnectOptions::from_str(url)?.synchronous(SqliteSynchronous::Normal);
    let mut connection = SqliteConnection::connect_with(&options).await?;
    connection.execute(DROP_SEARCH_TRIGGER).await?;
    for _ in 0..turns {
        let mut tx = connection.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query(SQLITE_TURN)
            .bind(Uuid::now_v7())
            .bind(OWNER)
            .bind(TITLE)
            .bind(NOW)
            .bind(USER)
            .bind(TITLE)
            .bind(REPLY)
            .bind(REPLY_METADATA)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
    }
    connection.close().await
}

async fn postgres(url: &str, turns: usize) -> Result<(), sqlx::Error> {
    let mut connection = PgConnection::connect(url).await?;
    for _ in 0..turns {
        sqlx::query(POSTGRES_TURN)
            .bind(Uuid::now_v7())
            .bind(OWNER)
            .bind(TITLE)
            .bind(USER)
            .bind(TITLE)
            .bind(REPLY)
            .bind(REPLY_METADATA)
            .execute(&mut connection)
            .await?;
    }
    connection.close().await
}
