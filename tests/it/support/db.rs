//! A fresh, migrated database per test, on SQLite and on PostgreSQL.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use sqlx::postgres::PgPoolOptions;
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{PgPool, SqlitePool};
use tower_conversations::ConversationStore;

/// Which backend a test runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

/// A database of its own for one test, already migrated.
/// How many messages of a SQLite database wait for the full-text index: those past its
/// mark, and rewritten ones on its list (see `migrations/sqlite/0008_*.sql`).
pub const SQLITE_PENDING_SEARCH: &str = "SELECT (SELECT count(*) FROM search_pending)
    + (SELECT count(*) FROM messages WHERE id > (SELECT through FROM search_indexed))";

#[derive(Clone)]
pub struct TestDb {
    pub backend: Backend,
    pub pool: TestPool,
    /// The SQLite file or the Postgres database name.
    pub name: String,
    /// The URL to connect to it again (for example from another process).
    pub url: String,
}

#[derive(Clone)]
pub enum TestPool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

static NEXT: AtomicU32 = AtomicU32::new(0);

fn unique_name() -> String {
    format!(
        "tc_test_{}_{}_{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed),
        uuid::Uuid::now_v7().simple()
    )
}

/// The server URL tests use: `DATABASE_URL`, or the local default.
pub fn postgres_server_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, format!("?{query}")),
        None => (url, String::new()),
    };
    let server = match base.rfind('/') {
        Some(slash) if slash > "postgres://".len() => &base[..slash],
        _ => base,
    };
    format!("{server}/{database}{query}")
}

impl TestDb {
    /// A new SQLite database in a temporary file (a file, not `:memory:`, so that every
    /// connection of the pool sees the same data).
    pub async fn sqlite() -> TestDb {
        let db = Self::sqlite_unmigrated().await;
        db.migrate().await;
        db
    }

    /// A new Postgres database, migrated: see [`TestDb::postgres_unmigrated`].
    pub async fn postgres() -> Option<TestDb> {
        let db = Self::postgres_unmigrated().await?;
        db.migrate().await;
        Some(db)
    }

    /// Runs every migration of the store.
    async fn migrate(&self) {
        match &self.pool {
            TestPool::Sqlite(pool) => tower_conversations::migrate(pool).await,
            TestPool::Postgres(pool) => tower_conversations::migrate(pool).await,
        }
        .expect("migrate the test database");
    }

    /// A new, empty SQLite database, as [`TestDb::sqlite`] without the migrations.
    pub async fn sqlite_unmigrated() -> TestDb {
        let name = unique_name();
        let path = std::env::temp_dir().join(format!("{name}.db"));
        let url = format!("sqlite://{}?mode=rwc", path.display());
        // As the example proxy opens it: with the migrations' WAL, `synchronous = NORMAL`,
        // under which a turn is written on the caller's thread (the inline connection).
        let options = url
            .parse::<SqliteConnectOptions>()
            .expect("sqlite url")
            .synchronous(SqliteSynchronous::Normal);
        let pool = SqlitePoolOptions::new()
            .max_connections(8)
            .connect_with(options)
            .await
            .expect("open sqlite test database");
        TestDb {
            backend: Backend::Sqlite,
            pool: TestPool::Sqlite(pool),
            name,
            url,
        }
    }

    /// A new, empty Postgres database on the server at `DATABASE_URL`. `None` (with one
    /// line saying so) when no server answers, unless `REQUIRE_POSTGRES=1`: then it panics.
    pub async fn postgres_unmigrated() -> Option<TestDb> {
        let server = postgres_server_url();
        let admin = match PgPoolOptions::new()
            .max_connections(1)
            .connect(&server)
            .await
        {
            Ok(pool) => pool,
            Err(error) => {
                if std::env::var("REQUIRE_POSTGRES").is_ok_and(|v| v == "1") {
                    panic!("REQUIRE_POSTGRES=1 but PostgreSQL at {server} is unreachable: {error}");
                }
                eprintln!("skipped: PostgreSQL at {server} is unreachable ({error})");
                return None;
            }
        };
        let name = unique_name();
        // The name is made above from digits and a uuid, never from input.
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&admin)
            .await
            .expect("create test database");
        admin.close().await;
        let url = with_database(&server, &name);
        let pool = PgPoolOptions::new()
            .max_connections(8)
            .connect(&url)
            .await
            .expect("connect to test database");
        Some(TestDb {
            backend: Backend::Postgres,
            pool: TestPool::Postgres(pool),
            name,
            url,
        })
    }

    /// The database as a store.
    pub fn store(&self) -> Arc<dyn ConversationStore> {
        match &self.pool {
            TestPool::Sqlite(pool) => Arc::new(pool.clone()),
            TestPool::Postgres(pool) => Arc::new(pool.clone()),
        }
    }

    /// The same database through a pool of its own with room for `connections`
    /// connections at once, for tests that need that much real concurrency.
    pub async fn store_with_connections(&self, connections: u32) -> Arc<dyn ConversationStore> {
        match self.backend {
            Backend::Sqlite => Arc::new(
                SqlitePoolOptions::new()
                    .max_connections(connections)
                    .connect(&self.url)
                    .await
                    .expect("open sqlite test database"),
            ),
            Backend::Postgres => Arc::new(
                PgPoolOptions::new()
                    .max_connections(connections)
                    .connect(&self.url)
                    .await
                    .expect("connect to test database"),
            ),
        }
    }

    /// Runs one statement (fault injection, inspection).
    pub async fn execute(&self, sql: &'static str) {
        match &self.pool {
            TestPool::Sqlite(pool) => sqlx::query(sql).execute(pool).await.map(drop),
            TestPool::Postgres(pool) => sqlx::query(sql).execute(pool).await.map(drop),
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    }

    /// Changes messages by hand, as an operator would: runs `sql`, then moves every
    /// conversation's revision on, which is what a history held in process is checked by.
    pub async fn change_messages(&self, sql: &'static str) {
        self.execute(sql).await;
        self.execute("UPDATE conversations SET revision = revision + 1")
            .await;
    }

    /// SQLite: checks that the full-text index agrees with the messages, once the
    /// messages written since its last indexing are in it (a search indexes them first).
    pub async fn check_search_index(&self) {
        let any = tower_conversations::store::CursorQuery {
            search: Some("indexing".to_owned()),
            ..Default::default()
        };
        self.store().list_by_id("", &any).await.expect("a search");
        assert_eq!(self.scalar(SQLITE_PENDING_SEARCH).await, 0);
        self.execute(
            "INSERT INTO messages_search (messages_search, rank) VALUES ('integrity-check', 1)",
        )
        .await;
    }

    /// Runs a query that returns one integer.
    pub async fn scalar(&self, sql: &'static str) -> i64 {
        match &self.pool {
            TestPool::Sqlite(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await,
            TestPool::Postgres(pool) => sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await,
        }
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
    }
}

/// Writes each test once per backend, with the same body:
///
/// ```ignore
/// backend_tests! {
///     async fn delete_removes_messages_too(db: TestDb) { ... }
/// }
/// ```
/// gives the tests `delete_removes_messages_too::sqlite` and `..::postgres`.
macro_rules! backend_tests {
    ($(
        $(#[$meta:meta])*
        async fn $name:ident($db:ident : TestDb) $body:block
    )*) => {$(
        $(#[$meta])*
        mod $name {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                let $db = $crate::support::db::TestDb::sqlite().await;
                $body
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                let Some($db) = $crate::support::db::TestDb::postgres().await else { return };
                $body
            }
        }
    )*};
}
