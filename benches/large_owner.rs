//! What listing, searching and paging cost when one owner has a lot: 100,000
//! conversations of 4 messages, and one conversation of 10,000 messages, on both backends.
//!
//! ```text
//! cargo bench --bench large_owner
//! DATABASE_URL=postgres://user@host:5432/postgres cargo bench --bench large_owner
//! LARGE_OWNER_CONVERSATIONS=20000 cargo bench --bench large_owner   # a smaller fill
//! LARGE_OWNER_SQLITE_ONLY=1 cargo bench --bench large_owner          # SQLite's table alone
//! LARGE_OWNER_KEEP=1 cargo bench --bench large_owner   # keep the SQLite file, to look into
//! ```
//!
//! The rows are written by SQL on the server (not through the store, which would take
//! many minutes), then every figure is a store call as the management API makes it,
//! sequential, `TIMES` times after `WARMUP` unmeasured calls; the median is printed, in
//! a markdown table per backend. The words searched for: `common` is in every
//! conversation, `topic5` in 1 of 1,000, `rare` in 1 of 10,000, `absent` in none,
//! `twentieth` in 1 of 20 (on SQLite, where search changes its way; see the SQLite
//! store's search), and `long` in the 10,000 messages of the one long conversation.
//! Rows marked *before* are what a client had to call, or the statement the store ran,
//! before cursor search and the subquery page: kept here only to show the change.
//!
//! PostgreSQL runs in a database of its own (`tc_test_bench_*`), dropped at the end;
//! SQLite on a temporary file, deleted at the end. Without a PostgreSQL server its table
//! is skipped.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions};
use sqlx::{Executor, PgPool, SqlitePool};
use tokio::runtime::Runtime;
use tower_conversations::store::{ConversationStore, CursorQuery, ListQuery, MessageQuery, Order};
use uuid::Uuid;

/// Measured calls per row; the median is printed.
const TIMES: usize = 25;
/// Unmeasured calls before them (also past PostgreSQL's switch to generic plans, which
/// comes at the sixth execution of a prepared statement).
const WARMUP: usize = 8;
/// The owner whose conversations are measured.
const OWNER: &str = "heavy";
/// Messages in the long conversation.
const LONG: i64 = 10_000;

/// The words of each conversation's first message, `$1` its number: `common` always,
/// the others by how often they should be found.
const PG_TEXT: &str = "'common question topic' || (n % 1000) || ' about word' || (n % 97)
    || CASE WHEN n % 10000 = 0 THEN ' rare' ELSE '' END
    || CASE WHEN n % 20 = 0 THEN ' twentieth' ELSE '' END";

/// The fill, on PostgreSQL: ids are UUIDv7-shaped (a millisecond clock one second apart,
/// so id order is creation order), times one second apart too.
const PG_FILL: [&str; 5] = [
    "INSERT INTO fill
     SELECT n, (substr(h, 1, 8) || '-' || substr(h, 9, 4) || '-7' || substr(r, 1, 3) || '-8'
                || substr(r, 4, 3) || '-' || substr(r, 7, 12))::uuid AS id
     FROM (SELECT n, lpad(to_hex(1700000000000 + n * 1000), 12, '0') AS h, md5(n::text) AS r
           FROM generate_series(0, $1 - 1) AS n) AS s",
    "INSERT INTO conversations (id, owner, title, created_at, updated_at, message_count,
                                next_sequence, metadata)
     SELECT id, 'heavy', 'conversation ' || n, now() - interval '1 second' * ($1 - n),
            now() - interval '1 second' * ($1 - n), 4, 4, '{}'
     FROM fill",
    "INSERT INTO messages (conversation_id, sequence_number, role, message, content_search,
                           metadata, created_at)
     SELECT id, s, CASE WHEN s % 2 = 0 THEN 'user' ELSE 'assistant' END,
            json_build_object('role', CASE WHEN s % 2 = 0 THEN 'user' ELSE 'assistant' END,
                              'content', t),
            to_tsvector('simple', t), '{}', now()
     FROM fill, generate_series(0, 3) AS s,
          LATERAL (SELECT CASE WHEN s = 0 THEN TEXT_OF_N
                          ELSE 'reply number ' || s || ' for item' || (n % 5000) END AS t) AS x",
    "INSERT INTO conversations (id, owner, title, created_at, updated_at, message_count,
                                next_sequence, metadata)
     VALUES ('01890000-0000-7000-8000-0000000000ff', 'heavy', 'long', now(), now(), $1, $1, '{}')",
    "INSERT INTO messages (conversation_id, sequence_number, role, message, content_search,
                           metadata, created_at)
     SELECT '01890000-0000-7000-8000-0000000000ff', s, 'user',
            json_build_object('role', 'user', 'content', 'long conversation message ' || s),
            to_tsvector('simple', 'long conversation message ' || s), '{}', now()
     FROM generate_series(0, $1 - 1) AS s",
];

/// The same fill on SQLite (ids as 16-byte blobs, times as fixed-width UTC text).
const SQLITE_FILL: [&str; 4] = [
    "INSERT INTO conversations (id, owner, title, created_at, updated_at, message_count,
                                next_sequence, metadata)
     WITH RECURSIVE counter(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM counter WHERE n + 1 < ?1)
     SELECT unhex(printf('%012x7%03x8%03x%012x', 1700000000000 + n * 1000, n % 4096,
                         n / 4096 % 4096, abs(random()) % 281474976710656)),
            'heavy', 'conversation ' || n,
            strftime('%Y-%m-%dT%H:%M:%S.000000Z', 1700000000 + n, 'unixepoch'),
            strftime('%Y-%m-%dT%H:%M:%S.000000Z', 1700000000 + n, 'unixepoch'), 4, 4, '{}'
     FROM counter",
    "INSERT INTO messages (conversation_id, sequence_number, role, message, content_text,
                           metadata, created_at)
     WITH texts AS (
         SELECT c.id, c.created_at, s.value AS seq,
                CASE WHEN s.value % 2 = 0 THEN 'user' ELSE 'assistant' END AS role,
                CASE WHEN s.value = 0 THEN TEXT_OF_N
                     ELSE 'reply number ' || s.value || ' for item' || (c.n % 5000) END AS text
         FROM (SELECT id, created_at, CAST(substr(title, 14) AS INTEGER) AS n
               FROM conversations WHERE owner = 'heavy' AND ?1 > 0 ORDER BY id) AS c,
              json_each('[0, 1, 2, 3]') AS s)
     SELECT id, seq, role, json_object('role', role, 'content', text), text, '{}', created_at
     FROM texts",
    "INSERT INTO conversations (id, owner, title, created_at, updated_at, message_count,
                                next_sequence, metadata)
     VALUES (unhex('018900000000700080000000000000ff'), 'heavy', 'long',
             '2030-01-01T00:00:00.000000Z', '2030-01-01T00:00:00.000000Z', ?1, ?1, '{}')",
    "INSERT INTO messages (conversation_id, sequence_number, role, message, content_text,
                           metadata, created_at)
     WITH RECURSIVE counter(s) AS (SELECT 0 UNION ALL SELECT s + 1 FROM counter WHERE s + 1 < ?1)
     SELECT unhex('018900000000700080000000000000ff'), s, 'user',
            json_object('role', 'user', 'content', 'long conversation message ' || s),
            'long conversation message ' || s, '{}', '2030-01-01T00:00:00.000000Z'
     FROM counter",
];

/// The words of each conversation's first message on SQLite, `c.n` its number.
const SQLITE_TEXT: &str = "'common question topic' || (c.n % 1000) || ' about word' || (c.n % 97)
    || CASE WHEN c.n % 10000 = 0 THEN ' rare' ELSE '' END
    || CASE WHEN c.n % 20 = 0 THEN ' twentieth' ELSE '' END";

/// The page statement before this change (*before*): the join's rows ordered whole.
const PAGE_BEFORE: &str = "
SELECT m.sequence_number, m.message, m.reasoning, m.reasoning_events,
       m.metadata AS message_metadata, m.created_at AS message_created_at
FROM conversations c
LEFT JOIN messages m ON m.conversation_id = c.id AND m.sequence_number < $3
WHERE c.id = $1 AND c.owner = $2
ORDER BY m.sequence_number DESC
LIMIT $4";

/// The id of the long conversation.
fn long_id() -> Uuid {
    Uuid::parse_str("01890000-0000-7000-8000-0000000000ff").expect("a uuid")
}

/// How many conversations the owner gets.
fn conversations() -> i64 {
    std::env::var("LARGE_OWNER_CONVERSATIONS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(100_000)
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

/// The median of `TIMES` calls of `call`, after `WARMUP`.
async fn measure<F, Fut, T>(mut call: F) -> Duration
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = T>,
{
    for _ in 0..WARMUP {
        std::hint::black_box(call().await);
    }
    let mut times = Vec::with_capacity(TIMES);
    for _ in 0..TIMES {
        let start = Instant::now();
        std::hint::black_box(call().await);
        times.push(start.elapsed());
    }
    median(times)
}

/// One row of a table: what was measured and its median.
struct Figure {
    what: String,
    median: Duration,
}

/// Every figure but the *before* page statement, through the store.
async fn measure_store(store: Arc<dyn ConversationStore>) -> Vec<Figure> {
    let mut figures = Vec::new();
    let mut add = |what: &str, median: Duration| {
        figures.push(Figure {
            what: what.to_owned(),
            median,
        })
    };
    let store = &store;
    // The cursor at half depth: the id of the conversation in the middle, newest first.
    let mut middle = CursorQuery {
        limit: 100,
        ..CursorQuery::default()
    };
    let half = conversations() / 2;
    for _ in 0..half / 100 {
        let page = store.list_by_id(OWNER, &middle).await.expect("walk");
        middle.after = page.conversations.last().map(|c| c.id);
    }
    let cursor = |after: Option<Uuid>, search: Option<&str>| CursorQuery {
        after,
        search: search.map(str::to_owned),
        ..CursorQuery::default()
    };
    let offset = |offset: u64, search: Option<&str>| ListQuery {
        limit: 20,
        offset,
        search: search.map(str::to_owned),
    };
    for (what, query) in [
        ("list, cursor: first page", cursor(None, None)),
        (
            "list, cursor: page at depth half",
            cursor(middle.after, None),
        ),
    ] {
        add(what, measure(|| store.list_by_id(OWNER, &query)).await);
    }
    for (what, query) in [
        (
            "*before* list, offset: first page (with total)",
            offset(0, None),
        ),
        (
            "*before* list, offset: page at offset half (with total)",
            offset(half.unsigned_abs(), None),
        ),
    ] {
        add(what, measure(|| store.list(OWNER, &query)).await);
    }
    // `long`: 10,000 matches, all in the one long conversation.
    for word in ["common", "topic5", "rare", "absent", "twentieth", "long"] {
        let query = cursor(None, Some(word));
        let what = format!("search, cursor: `{word}`, first page");
        add(&what, measure(|| store.list_by_id(OWNER, &query)).await);
    }
    let query = cursor(middle.after, Some("common"));
    add(
        "search, cursor: `common`, page at depth half",
        measure(|| store.list_by_id(OWNER, &query)).await,
    );
    for word in ["common", "rare", "absent"] {
        let query = offset(0, Some(word));
        let what = format!("*before* search, offset: `{word}`, first page (with total)");
        add(&what, measure(|| store.list(OWNER, &query)).await);
    }
    for (what, after) in [
        ("messages page of 22, newest", None),
        ("messages page of 22, from the middle", Some(LONG / 2)),
    ] {
        let query = MessageQuery {
            after,
            limit: 22,
            order: Order::Desc,
        };
        add(
            what,
            measure(|| store.messages(OWNER, long_id(), &query)).await,
        );
    }
    figures
}

fn print(backend: &str, fill: Duration, figures: &[Figure]) {
    println!(
        "\n{backend}: {} conversations of 4 messages and one of {LONG}, filled in {:.1} s; \
         median of {TIMES} sequential calls after {WARMUP}:\n",
        conversations(),
        fill.as_secs_f64()
    );
    println!("| call | median |\n|---|--:|");
    for figure in figures {
        println!(
            "| {} | {:.2} ms |",
            figure.what,
            figure.median.as_secs_f64() * 1e3
        );
    }
}

async fn postgres(server: &str) {
    let admin = match PgPoolOptions::new()
        .max_connections(1)
        .connect(server)
        .await
    {
        Ok(admin) => admin,
        Err(error) => {
            eprintln!("postgres skipped: {server} is unreachable ({error})");
            return;
        }
    };
    let database = format!("tc_test_bench_owner_{}", Uuid::now_v7().simple());
    // The name is made above from a uuid, never from input.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {database}")))
        .execute(&admin)
        .await
        .expect("create bench database");
    let options: PgConnectOptions = server.parse().expect("DATABASE_URL");
    let pool: PgPool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options.database(&database))
        .await
        .expect("connect to bench database");
    tower_conversations::migrate(&pool).await.expect("migrate");
    let start = Instant::now();
    // One connection: the numbered ids live in a temporary table of its own.
    let mut connection = pool.acquire().await.expect("connection");
    connection
        .execute("CREATE TEMP TABLE fill (n bigint, id uuid)")
        .await
        .expect("fill table");
    for (step, statement) in PG_FILL.iter().enumerate() {
        let sql = statement.replace("TEXT_OF_N", PG_TEXT);
        let count = if step >= 3 { LONG } else { conversations() };
        let query = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(count);
        connection.execute(query).await.expect("fill");
    }
    // As autovacuum leaves a table in use: statistics taken, and the GIN index's pending
    // list of new entries merged (a search reads all of it until then).
    connection.execute("VACUUM ANALYZE").await.expect("vacuum");
    drop(connection);
    let fill = start.elapsed();
    let mut figures = measure_store(Arc::new(pool.clone())).await;
    figures.push(Figure {
        what: "*before* messages page of 22, newest (the join ordered whole)".to_owned(),
        median: measure(|| async {
            sqlx::query(PAGE_BEFORE)
                .bind(long_id())
                .bind(OWNER)
                .bind(i64::MAX)
                .bind(22_i64)
                .fetch_all(&pool)
                .await
                .expect("page before")
        })
        .await,
    });
    print("PostgreSQL", fill, &figures);
    pool.close().await;
    let drop = format!("DROP DATABASE IF EXISTS {database}");
    let _ = sqlx::query(sqlx::AssertSqlSafe(drop)).execute(&admin).await;
}

async fn sqlite() {
    let path: PathBuf =
        std::env::temp_dir().join(format!("tc_bench_owner_{}.db", Uuid::now_v7().simple()));
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true);
    let pool: SqlitePool = SqlitePoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .expect("open sqlite");
    tower_conversations::migrate(&pool).await.expect("migrate");
    let start = Instant::now();
    for (step, statement) in SQLITE_FILL.iter().enumerate() {
        let sql = statement.replace("TEXT_OF_N", SQLITE_TEXT);
        let count = if step >= 2 { LONG } else { conversations() };
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(count)
            .execute(&pool)
            .await
            .expect("fill");
    }
    pool.execute("ANALYZE").await.expect("analyze");
    let fill = start.elapsed();
    let mut figures = measure_store(Arc::new(pool.clone())).await;
    let page_before = PAGE_BEFORE.replace('$', "?");
    figures.push(Figure {
        what: "*before* messages page of 22, newest (the join ordered whole)".to_owned(),
        median: measure(|| async {
            sqlx::query(sqlx::AssertSqlSafe(page_before.as_str()))
                .bind(long_id())
                .bind(OWNER)
                .bind(i64::MAX)
                .bind(22_i64)
                .fetch_all(&pool)
                .await
                .expect("page before")
        })
        .await,
    });
    print("SQLite", fill, &figures);
    pool.close().await;
    if std::env::var_os("LARGE_OWNER_KEEP").is_some() {
        eprintln!("kept {}", path.display());
        return;
    }
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{}{suffix}", path.display()));
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this harness takes no options.
    let runtime = Runtime::new().expect("tokio runtime");
    let server = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned());
    runtime.block_on(async {
        sqlite().await;
        if std::env::var_os("LARGE_OWNER_SQLITE_ONLY").is_none() {
            postgres(&server).await;
        }
    });
}
