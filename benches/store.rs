//! The store's hot paths on both backends: appending a turn, and loading a history.
//!
//! SQLite runs on a temporary file. PostgreSQL runs on `DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/postgres`) in a database of its own, dropped at
//! the end; when no server answers, the PostgreSQL benchmarks say so and are skipped.
//!
//! ```text
//! cargo bench --bench store
//! ```

use std::path::PathBuf;
use std::sync::Arc;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Database, Executor, IntoArguments, Pool};
use tokio::runtime::Runtime;
use tower_conversations::store::{ConversationStore, NewMessage, TurnTarget};
use uuid::Uuid;

/// Messages in the history the load benchmark reads.
const HISTORY_LEN: usize = 100;

/// A turn of realistic size: a question, and an answer with the metadata the layer keeps.
fn turn(n: usize) -> Vec<NewMessage> {
    let question = NewMessage::new(json!({
        "role": "user",
        "content": format!("Question {n}: how do I keep a conversation's history on the server \
                            side while streaming answers from an OpenAI-compatible API?"),
    }));
    let mut answer = NewMessage::new(json!({
        "role": "assistant",
        "content": "Put a middleware in front of the chat-completions endpoint that stores each \
                    turn and splices the stored history into the next request. ".repeat(8),
    }));
    answer.set_metadata(
        json!({
            "model": "demo-1",
            "id": format!("chatcmpl-{n}"),
            "finish_reason": "stop",
            "usage": {"prompt_tokens": 812, "completion_tokens": 240, "total_tokens": 1052},
        })
        .as_object()
        .cloned()
        .unwrap_or_default(),
    );
    vec![question, answer]
}

/// Runs both benchmarks against one store, under `backend` in their names.
fn bench_store(
    c: &mut Criterion,
    runtime: &Runtime,
    backend: &str,
    store: Arc<dyn ConversationStore>,
) {
    let appended = Uuid::now_v7();
    let history = Uuid::now_v7();
    runtime.block_on(async {
        store
            .append_turn("", appended, TurnTarget::NewConversation, &turn(0))
            .await
            .expect("seed append");
        store
            .append_turn("", history, TurnTarget::NewConversation, &turn(0))
            .await
            .expect("seed history");
        for n in 1..HISTORY_LEN / 2 {
            store
                .append_turn("", history, TurnTarget::Existing, &turn(n))
                .await
                .expect("seed history");
        }
        let loaded = store.load_history("", history, None).await.expect("load");
        assert_eq!(loaded.len(), HISTORY_LEN);
    });

    let messages = turn(1);
    c.bench_function(&format!("{backend}: append one two-message turn"), |b| {
        b.to_async(runtime).iter(|| async {
            store
                .append_turn("", appended, TurnTarget::Existing, &messages)
                .await
                .expect("append")
        })
    });
    c.bench_function(
        &format!("{backend}: load a {HISTORY_LEN}-message history"),
        |b| {
            b.to_async(runtime)
                .iter(|| async { store.load_history("", history, None).await.expect("load") })
        },
    );
}

/// The cheapest statement there is: what one round trip to the database costs.
const SELECT_ONE: &str = "SELECT 1";

/// The cheapest durable write there is: what one commit (its log flush) costs.
const TOUCH_ONE_ROW: &str = "UPDATE conversations SET updated_at = updated_at
     WHERE id = (SELECT id FROM conversations ORDER BY id LIMIT 1)";

/// The floors to read the store's figures against, on the store's own pool: what the
/// machine, the disk and the driver cost before the store does anything.
fn bench_floors<DB>(c: &mut Criterion, runtime: &Runtime, backend: &str, pool: &Pool<DB>)
where
    DB: Database,
    for<'c> &'c Pool<DB>: Executor<'c, Database = DB>,
    <DB as Database>::Arguments: IntoArguments<DB>,
{
    for (what, statement) in [
        ("round trip of SELECT 1", SELECT_ONE),
        ("commit of a one-row UPDATE", TOUCH_ONE_ROW),
    ] {
        c.bench_function(&format!("{backend}: floor, {what}"), |b| {
            b.to_async(runtime).iter(|| async {
                sqlx::query::<DB>(statement)
                    .execute(pool)
                    .await
                    .expect("floor statement")
            })
        });
    }
}

/// SQLite twice: with its default `synchronous = FULL` (an fsync at every commit), and
/// with `synchronous = NORMAL`, the usual setting in WAL mode (commits are durable
/// against a crash of the process, and may be lost only on a power cut or OS crash).
fn sqlite(c: &mut Criterion) {
    for (name, synchronous) in [
        ("sqlite, synchronous=FULL", SqliteSynchronous::Full),
        ("sqlite, synchronous=NORMAL", SqliteSynchronous::Normal),
    ] {
        let runtime = Runtime::new().expect("tokio runtime");
        let path: PathBuf =
            std::env::temp_dir().join(format!("tc_bench_{}.db", Uuid::now_v7().simple()));
        let pool = runtime.block_on(async {
            let options = SqliteConnectOptions::new()
                .filename(&path)
                .create_if_missing(true)
                .synchronous(synchronous);
            let pool = SqlitePoolOptions::new()
                .max_connections(4)
                .connect_with(options)
                .await
                .expect("open sqlite");
            tower_conversations::migrate(&pool)
                .await
                .expect("migrate sqlite");
            pool
        });
        bench_store(c, &runtime, name, Arc::new(pool.clone()));
        bench_floors(c, &runtime, name, &pool);
        runtime.block_on(pool.close());
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
        }
    }
}

/// PostgreSQL twice, like SQLite: with `synchronous_commit = on` (the default: a commit
/// waits for its log flush to disk) and `off` (a crash may lose the last moments of
/// commits, never consistency), which shows what the store costs apart from the disk.
fn postgres(c: &mut Criterion) {
    let runtime = Runtime::new().expect("tokio runtime");
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    let admin = match runtime.block_on(PgPoolOptions::new().max_connections(1).connect(&server)) {
        Ok(admin) => admin,
        Err(error) => {
            eprintln!("postgres benchmarks skipped: {server} is unreachable ({error})");
            return;
        }
    };
    // The tc_test_ prefix lets the test tooling clean up after an interrupted run.
    let database = format!("tc_test_bench_{}", Uuid::now_v7().simple());
    let create = format!("CREATE DATABASE {database}");
    let drop = format!("DROP DATABASE IF EXISTS {database}");
    let base: PgConnectOptions = runtime.block_on(async {
        // The name is made above from a uuid, never from input.
        sqlx::query(sqlx::AssertSqlSafe(create))
            .execute(&admin)
            .await
            .expect("create bench database");
        let options: PgConnectOptions = server.parse().expect("DATABASE_URL");
        let options = options.database(&database);
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await
            .expect("connect to bench database");
        tower_conversations::migrate(&pool)
            .await
            .expect("migrate postgres");
        pool.close().await;
        options
    });
    for (name, synchronous_commit) in [
        ("postgres, synchronous_commit=on", "on"),
        ("postgres, synchronous_commit=off", "off"),
    ] {
        let options = base
            .clone()
            .options([("synchronous_commit", synchronous_commit)]);
        let pool = runtime
            .block_on(
                PgPoolOptions::new()
                    .max_connections(4)
                    .connect_with(options),
            )
            .expect("connect to bench database");
        bench_store(c, &runtime, name, Arc::new(pool.clone()));
        bench_floors(c, &runtime, name, &pool);
        runtime.block_on(pool.close());
    }
    runtime.block_on(async {
        let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await;
    });
}

criterion_group!(benches, sqlite, postgres);
criterion_main!(benches);
