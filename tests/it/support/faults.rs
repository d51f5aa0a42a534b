//! Database faults for PostgreSQL tests: pools of the layer's own, killed backends, a
//! server that is not there, and a table held locked.

use std::time::Duration;

use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Postgres, Transaction};

use super::db::{TestDb, postgres_server_url};

/// A pool of the layer's own on the test database, so that its connections can be
/// counted and killed apart from the ones the test inspects with.
pub async fn layer_pool(db: &TestDb, connections: u32) -> PgPool {
    PgPoolOptions::new()
        .max_connections(connections)
        .connect(&db.url)
        .await
        .expect("connect to the test database")
}

/// A connection to the server's default database, which outlives every backend the
/// test kills on the test database.
pub async fn admin_pool() -> PgPool {
    PgPoolOptions::new()
        .max_connections(1)
        .connect(&postgres_server_url())
        .await
        .expect("connect to the PostgreSQL server")
}

/// Kills every client backend connected to `database` (found in `pg_stat_activity` by
/// the database's name) and answers how many it killed.
pub async fn terminate_backends(admin: &PgPool, database: &str) -> i64 {
    // Materialised first: in one WHERE clause the planner may call
    // pg_terminate_backend before the filters, on every backend of the server.
    sqlx::query_scalar(
        "WITH victims AS MATERIALIZED (
             SELECT pid FROM pg_stat_activity
             WHERE datname = $1 AND backend_type = 'client backend'
               AND pid <> pg_backend_pid())
         SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM victims",
    )
    .bind(database)
    .fetch_one(admin)
    .await
    .expect("terminate backends")
}

/// How many client backends are connected to `database`.
pub async fn backends(admin: &PgPool, database: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM pg_stat_activity
         WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()",
    )
    .bind(database)
    .fetch_one(admin)
    .await
    .expect("count backends")
}

/// A PostgreSQL URL on a loopback port where nothing listens.
pub async fn unreachable_postgres_url() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let port = listener.local_addr().expect("local address").port();
    drop(listener);
    format!("postgres://postgres@127.0.0.1:{port}/nowhere")
}

/// A pool that would connect to `url` only when first used, with sqlx's default acquire
/// timeout (30 s): what an application gets when its database is down at start-up.
pub fn lazy_pool(url: &str) -> PgPool {
    PgPoolOptions::new()
        .max_connections(4)
        .connect_lazy(url)
        .expect("a valid URL")
}

/// Another connection holding `messages` in `ACCESS EXCLUSIVE` mode, in an open
/// transaction, until released: every read and write of the table waits.
pub struct LockedMessages(Transaction<'static, Postgres>);

impl LockedMessages {
    pub async fn take(db: &TestDb) -> Self {
        let pool = layer_pool(db, 1).await;
        let mut tx = pool.begin().await.expect("begin");
        sqlx::query("LOCK TABLE messages IN ACCESS EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .expect("lock messages");
        LockedMessages(tx)
    }

    pub async fn release(self) {
        self.0.rollback().await.expect("release the lock");
    }
}

/// Waits until every connection of `pool` is back and idle, for at most `limit`, and
/// answers the pool's size then. Panics when connections stay busy (a leak).
pub async fn settled_size(pool: &PgPool, limit: Duration) -> u32 {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let (size, idle) = (pool.size(), pool.num_idle());
        if idle as u32 == size {
            return size;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{} of {size} connections still busy after {limit:?}",
            size - idle as u32
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
