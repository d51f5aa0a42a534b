//! What a turn costs PostgreSQL, beside what PostgreSQL itself needs for the same rows.
//!
//! ```text
//! cargo bench --bench postgres_turn
//! DATABASE_URL=postgres://user@host:5432/postgres cargo bench --bench postgres_turn
//! ```
//!
//! Two tables, printed in markdown (the server must run on this machine: its CPU is read
//! from `/proc`):
//!
//! - **Server CPU per new turn**: the CPU time of the server's processes (backends, WAL
//!   writer, checkpointer; no other server's) over sequential new turns of two messages,
//!   each committed, divided by the turns (autovacuum off on the tables measured).
//!   Columns: the store as it is (`append_turn` of a new conversation); the same with the
//!   foreign key and checks that migration 0005 dropped put back; the statement of the
//!   first schema (text stored twice, the search vector a generated column), kept only to
//!   show that change; and the floor, the same rows inserted by one prepared statement
//!   into tables with no key, index or search column, on a connection already held.
//!   Columns run in turns, `ROUNDS` times, and the median is printed: the machine's other
//!   work moves single runs.
//! - **A long turn over TLS**: the wall time to store a new conversation's first turn
//!   whose reply has N characters, over TLS (`sslmode=require`) and over plain TCP
//!   (`sslmode=disable`), median of `TIMES` each; and the same difference for the first
//!   schema's statement, which sent the text twice.
//!
//! Each run works in databases of its own (`tc_test_bench_pg_*`), dropped at the end.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions, PgSslMode};
use sqlx::{Executor, PgPool};
use tokio::runtime::Runtime;
use tower_conversations::store::{NewMessage, TurnStore, TurnTarget};
use uuid::Uuid;

/// Sequential turns per measurement.
const TURNS: usize = 2000;
/// Measurements of each row; the median is printed.
const ROUNDS: usize = 5;
/// Appends per size and transport in the TLS table.
const TIMES: usize = 15;
/// Reply sizes of the TLS table, in characters.
const REPLY_CHARS: [usize; 5] = [2_000, 6_000, 10_000, 14_000, 22_000];

/// The first schema's statement for a new conversation, as it was before the text was
/// stored once: the row's plain text sent and stored beside the message, and the
/// vector generated from it.
const FIRST_SCHEMA_CREATE: &str = "
WITH conversation AS (
    INSERT INTO conversations (id, owner, title, created_at, updated_at, message_count, metadata)
    VALUES ($1, '', 'title', now(), now(), 2, '{}')
    RETURNING id, created_at
)
INSERT INTO messages (conversation_id, sequence_number, role, message, content_text,
                      metadata, created_at)
SELECT conversation.id, batch.position - 1, batch.role, batch.message::json, batch.text,
       '{}', conversation.created_at
FROM conversation,
     unnest($2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS batch (role, message, text, position)";

/// The constraints migration 0005 dropped, put back on today's schema: the store as it
/// was just before that migration.
const CONSTRAINTS_BACK: [&str; 6] = [
    "ALTER TABLE messages ADD FOREIGN KEY (conversation_id) REFERENCES conversations (id)
        ON DELETE CASCADE",
    "ALTER TABLE messages ADD CHECK (sequence_number >= 0)",
    "ALTER TABLE messages ADD CHECK (jsonb_typeof(metadata) = 'object')",
    "ALTER TABLE conversations ADD CHECK (message_count >= 0)",
    "ALTER TABLE conversations ADD CHECK (jsonb_typeof(metadata) = 'object')",
    "ALTER TABLE conversations ADD CHECK (next_sequence >= message_count)",
];

const FLOOR_SCHEMA: [&str; 2] = [
    "CREATE TABLE conversations (id uuid, owner text, title text, created_at timestamptz,
        updated_at timestamptz, message_count bigint, metadata jsonb)",
    "CREATE TABLE messages (conversation_id uuid, sequence_number bigint, role text,
        message json, metadata jsonb, created_at timestamptz)",
];

/// The same rows as the store writes, into tables with nothing to maintain.
const FLOOR_CREATE: &str = "
WITH conversation AS (
    INSERT INTO conversations (id, owner, title, created_at, updated_at, message_count, metadata)
    VALUES ($1, '', 'title', now(), now(), 2, '{}')
    RETURNING id, created_at
)
INSERT INTO messages (conversation_id, sequence_number, role, message, metadata, created_at)
SELECT conversation.id, batch.position - 1, batch.role, batch.message::json, '{}',
       conversation.created_at
FROM conversation,
     unnest($2::text[], $3::text[]) WITH ORDINALITY AS batch (role, message, position)";

/// A turn as the proxy's demo model makes one (a short question and answer), or with a
/// reply of `reply_chars` characters of varied words.
fn turn(reply_chars: Option<usize>) -> Vec<Value> {
    let question = "Please explain how the borrow checker works in Rust, with a short example.";
    let reply = match reply_chars {
        None => {
            format!("You sent 1 message; the last one said: \"{question}\". (I am the demo model.)")
        }
        Some(chars) => prose(chars),
    };
    vec![
        json!({"role": "user", "content": question}),
        json!({"role": "assistant", "content": reply}),
    ]
}

/// `chars` characters of words that differ, as a model's reply does (a repeated phrase
/// would compress to nothing and index a handful of words).
fn prose(chars: usize) -> String {
    const WORDS: [&str; 12] = [
        "borrow",
        "checker",
        "reference",
        "lifetime",
        "value",
        "mutable",
        "shared",
        "owner",
        "scope",
        "move",
        "slice",
        "thread",
    ];
    let mut text = String::with_capacity(chars + 16);
    let mut n = 0usize;
    while text.len() < chars {
        text.push_str(WORDS[n % WORDS.len()]);
        text.push_str(&(n * 7919 % 1000).to_string());
        text.push(' ');
        n += 1;
    }
    text.truncate(chars);
    text
}

fn messages(turn: &[Value]) -> Vec<NewMessage> {
    turn.iter().cloned().map(NewMessage::new).collect()
}

/// Time on CPU so far of the server's processes (the postmaster `server` and its
/// children: backends, WAL writer, checkpointer), by pid, in nanoseconds (the first field
/// of `/proc/<pid>/schedstat`, which counts finer than `stat`'s 10 ms ticks). Other
/// servers on the machine (a test suite's, say) are not counted.
fn postgres_cpu(server: u32) -> HashMap<u32, u64> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let pid = entry.file_name().to_str()?.parse().ok()?;
            if pid != server && parent(pid)? != server {
                return None;
            }
            let schedstat = std::fs::read_to_string(entry.path().join("schedstat")).ok()?;
            Some((pid, schedstat.split_whitespace().next()?.parse().ok()?))
        })
        .collect()
}

/// The parent of process `pid`: the fourth field of `/proc/<pid>/stat`, counted after
/// the command name (which may hold spaces, but ends at the last `)`).
fn parent(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, fields) = stat.rsplit_once(')')?;
    fields.split_whitespace().nth(1)?.parse().ok()
}

/// The postmaster of the server `pool` talks to: the parent of one of its backends.
async fn postmaster(pool: &PgPool) -> u32 {
    let backend: i32 = sqlx::query_scalar("SELECT pg_backend_pid()")
        .fetch_one(pool)
        .await
        .expect("backend pid");
    let backend = u32::try_from(backend).expect("a pid");
    parent(backend).expect("the server must run on this machine: its CPU is read from /proc")
}

/// CPU the `postgres` processes used between two readings: what each process still
/// alive added, and all of a process that started in between. (A process that exited
/// in between takes its time with it; with autovacuum off, none does.)
fn cpu_between(before: &HashMap<u32, u64>, after: &HashMap<u32, u64>) -> Duration {
    let nanos = after
        .iter()
        .map(|(pid, now)| now.saturating_sub(before.get(pid).copied().unwrap_or(0)))
        .sum();
    Duration::from_nanos(nanos)
}

/// Server CPU per turn of `turns` sequential runs of `one`.
async fn server_cpu_per_turn<F, Fut>(pool: &PgPool, turns: usize, mut one: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    pool.execute("CHECKPOINT").await.expect("checkpoint");
    let server = postmaster(pool).await;
    let before = postgres_cpu(server);
    for _ in 0..turns {
        one().await;
    }
    cpu_between(&before, &postgres_cpu(server)) / turns as u32
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// A database of its own, migrated (or left empty), as a pool on `options`.
async fn database(admin: &PgPool, options: &PgConnectOptions, migrate: bool) -> (PgPool, String) {
    let name = format!("tc_test_bench_pg_{}", Uuid::now_v7().simple());
    // The name is made from a uuid, never from input.
    admin
        .execute(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
        .await
        .expect("create bench database");
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.clone().database(&name))
        .await
        .expect("connect bench database");
    if migrate {
        tower_conversations::migrate(&pool).await.expect("migrate");
    }
    (pool, name)
}

/// No autovacuum on the tables measured: a worker that starts, works and exits between
/// two readings would take its CPU with it, and one still running would not.
async fn without_autovacuum(pool: &PgPool) {
    for table in [
        "ALTER TABLE conversations SET (autovacuum_enabled = false)",
        "ALTER TABLE messages SET (autovacuum_enabled = false)",
    ] {
        pool.execute(table).await.expect("autovacuum off");
    }
}

/// The first migration alone: the schema before the text was stored once.
async fn first_schema(pool: &PgPool) {
    let migrator = sqlx::migrate!("migrations/postgres");
    migrator.run_to(1, pool).await.expect("the first schema");
}

/// One new conversation's first turn through the store.
async fn store_turn(store: &PgPool, messages: &[NewMessage]) {
    store
        .append_turn("", Uuid::now_v7(), TurnTarget::NewConversation, messages)
        .await
        .expect("append");
}

/// The same turn by the first schema's statement, from the columns of [`columns`].
async fn first_schema_turn(pool: &PgPool, (roles, messages, texts): &Columns) {
    sqlx::query(FIRST_SCHEMA_CREATE)
        .bind(Uuid::now_v7())
        .bind(roles)
        .bind(messages)
        .bind(texts)
        .execute(pool)
        .await
        .expect("first schema insert");
}

/// A turn's roles, message texts and plain texts, one array each.
type Columns = (Vec<String>, Vec<String>, Vec<String>);

fn columns(turn: &[Value]) -> Columns {
    let roles = turn
        .iter()
        .map(|m| m["role"].as_str().unwrap_or("").to_owned())
        .collect();
    let messages = turn.iter().map(Value::to_string).collect();
    let texts = turn
        .iter()
        .map(|m| m["content"].as_str().unwrap_or("").to_owned())
        .collect();
    (roles, messages, texts)
}

async fn server_cpu_table(admin: &PgPool, options: &PgConnectOptions) {
    let (store, store_db) = database(admin, options, true).await;
    let (keyed, keyed_db) = database(admin, options, true).await;
    for statement in CONSTRAINTS_BACK {
        keyed.execute(statement).await.expect("constraints back");
    }
    let (first, first_db) = database(admin, options, false).await;
    first_schema(&first).await;
    let (floor, floor_db) = database(admin, options, false).await;
    for statement in FLOOR_SCHEMA {
        floor.execute(statement).await.expect("floor schema");
    }
    for pool in [&store, &keyed, &first, &floor] {
        without_autovacuum(pool).await;
    }

    println!(
        "| turn | store now | before 0005 (key and checks) | first schema | floor: same rows, bare tables | now / floor |"
    );
    println!("|---|--:|--:|--:|--:|--:|");
    for (label, size) in [
        ("demo model (2 short messages)", None),
        ("reply of 2,700 characters", Some(2_700)),
    ] {
        let turn = turn(size);
        let columns = columns(&turn);
        let new_messages = messages(&turn);
        let (mut now, mut checked, mut before, mut bare) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..ROUNDS {
            now.push(
                server_cpu_per_turn(&store, TURNS, || store_turn(&store, &new_messages)).await,
            );
            checked.push(
                server_cpu_per_turn(&keyed, TURNS, || store_turn(&keyed, &new_messages)).await,
            );
            before.push(
                server_cpu_per_turn(&first, TURNS, || first_schema_turn(&first, &columns)).await,
            );
            let (roles, texts_json, _) = &columns;
            bare.push(
                server_cpu_per_turn(&floor, TURNS, || async {
                    sqlx::query(FLOOR_CREATE)
                        .bind(Uuid::now_v7())
                        .bind(roles)
                        .bind(texts_json)
                        .execute(&floor)
                        .await
                        .expect("floor insert");
                })
                .await,
            );
        }
        let (now, checked, before, bare) =
            (median(now), median(checked), median(before), median(bare));
        println!(
            "| {label} | {} µs | {} µs | {} µs | {} µs | {:.2} |",
            now.as_micros(),
            checked.as_micros(),
            before.as_micros(),
            bare.as_micros(),
            now.as_secs_f64() / bare.as_secs_f64()
        );
    }
    println!();
    for (pool, name) in [
        (store, store_db),
        (keyed, keyed_db),
        (first, first_db),
        (floor, floor_db),
    ] {
        drop_database(admin, pool, &name).await;
    }
}

async fn tls_table(admin: &PgPool, options: &PgConnectOptions) {
    let plain_options = options.clone().ssl_mode(PgSslMode::Disable);
    let (plain, name) = database(admin, &plain_options, true).await;
    let (first_plain, first_name) = database(admin, &plain_options, false).await;
    first_schema(&first_plain).await;
    let tls_to = |database: &str| {
        PgPoolOptions::new().max_connections(1).connect_with(
            options
                .clone()
                .ssl_mode(PgSslMode::Require)
                .database(database),
        )
    };
    let (tls, first_tls) = match (tls_to(&name).await, tls_to(&first_name).await) {
        (Ok(tls), Ok(first_tls)) => (tls, first_tls),
        (Err(error), _) | (_, Err(error)) => {
            println!("(no TLS table: the server refused TLS: {error})\n");
            drop_database(admin, plain, &name).await;
            drop_database(admin, first_plain, &first_name).await;
            return;
        }
    };

    println!(
        "| reply | now, TLS | now, plain TCP | now, TLS − plain | first schema, TLS − plain |"
    );
    println!("|--:|--:|--:|--:|--:|");
    for chars in REPLY_CHARS {
        let turn = turn(Some(chars));
        let new_messages = messages(&turn);
        let columns = columns(&turn);
        let mut times: [Vec<Duration>; 4] = Default::default();
        for _ in 0..TIMES {
            for (store, slot) in [(&tls, 0), (&plain, 1)] {
                let start = Instant::now();
                store_turn(store, &new_messages).await;
                times[slot].push(start.elapsed());
            }
            for (pool, slot) in [(&first_tls, 2), (&first_plain, 3)] {
                let start = Instant::now();
                first_schema_turn(pool, &columns).await;
                times[slot].push(start.elapsed());
            }
        }
        let [now_tls, now_plain, first_tls_time, first_plain_time] =
            times.map(|t| median(t).as_secs_f64() * 1e3);
        println!(
            "| {chars} chars | {now_tls:.2} ms | {now_plain:.2} ms | {:+.2} ms | {:+.2} ms |",
            now_tls - now_plain,
            first_tls_time - first_plain_time
        );
    }
    println!();
    tls.close().await;
    first_tls.close().await;
    drop_database(admin, plain, &name).await;
    drop_database(admin, first_plain, &first_name).await;
}

async fn drop_database(admin: &PgPool, pool: PgPool, name: &str) {
    pool.close().await;
    let drop = format!("DROP DATABASE IF EXISTS {name}");
    if let Err(error) = admin.execute(sqlx::AssertSqlSafe(drop)).await {
        eprintln!("could not drop {name}: {error}");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; a filter is not supported: both tables always run.
    let url = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let runtime = Runtime::new().expect("runtime");
    runtime.block_on(async {
        let options: PgConnectOptions = match url.parse() {
            Ok(options) => options,
            Err(error) => return eprintln!("DATABASE_URL: {error}"),
        };
        let admin = match PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
        {
            Ok(admin) => admin,
            Err(error) => return eprintln!("postgres_turn skipped: {error}"),
        };
        println!("Server CPU per new turn ({TURNS} sequential turns, median of {ROUNDS}):\n");
        server_cpu_table(&admin, &options).await;
        println!("A long turn appended over TLS and over plain TCP (median of {TIMES}):\n");
        tls_table(&admin, &options).await;
    });
}
