//! Opening the conversation database named by a URL, SQLite or PostgreSQL.

use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::BoxError;
use sqlx::Connection;
use sqlx::PgPool;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteSynchronous};
use tower_conversations::ConversationStore;

/// How long a Postgres connection may sit idle in the pool before it is pinged on its
/// way out.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);

/// An open, migrated database, and a description of it that is safe to log.
pub struct Database {
    /// The store the layer and the management API share.
    pub store: Arc<dyn ConversationStore>,
    /// Which kind of database and where, never with its password.
    pub description: String,
}

/// Connects to `url` (`sqlite://FILE`, created if missing, or `postgres://...`) and runs
/// the migrations (on `migrations` when given), so the proxy is ready to store turns when
/// it starts listening.
///
/// Behind a transaction-mode pooler such as PgBouncer, `url` carries
/// `statement-cache-capacity=0` (the store then keeps each call on one server connection)
/// and `migrations` names the server directly: sqlx's migrator holds a session-level
/// advisory lock and prepares named statements, which such a pooler does not keep.
pub async fn open(url: &str, migrations: Option<&str>) -> Result<Database, BoxError> {
    let (store, description): (Arc<dyn ConversationStore>, String) = if url.starts_with("sqlite:") {
        // The migrations put the file in WAL mode, where NORMAL still survives a crash of
        // the process and skips the disk flush on every commit that FULL (SQLite's default)
        // waits for: a turn costs about half as much. Only a power cut or an OS crash can
        // lose the last turns.
        let options = SqliteConnectOptions::from_str(url)?
            .create_if_missing(true)
            .synchronous(SqliteSynchronous::Normal);
        let description = format!("SQLite at {}", options.get_filename().display());
        // The connections live in this process and cannot go stale the way a network
        // connection can: checking each one out with a ping would only add a round trip
        // to its worker thread to every history load and every turn.
        let pool = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        tower_conversations::migrate(&pool).await?;
        (Arc::new(pool), description)
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        let options = PgConnectOptions::from_str(url)?;
        let description = format!(
            "PostgreSQL at {}:{}/{} as {}",
            options.get_host(),
            options.get_port(),
            options.get_database().unwrap_or(options.get_username()),
            options.get_username(),
        );
        // sqlx pings every connection it hands out by default: a round trip before every
        // history load and every turn. A connection in use within the last second is
        // taken as alive, and only one idle for longer is pinged (and replaced if the
        // server closed it). A server that drops connections that were busy a moment
        // ago fails at most one request on each of them.
        let pool = PgPoolOptions::new()
            .test_before_acquire(false)
            .before_acquire(|connection, metadata| {
                Box::pin(async move {
                    if metadata.idle_for > PING_WHEN_IDLE_FOR {
                        connection.ping().await?;
                    }
                    Ok(true)
                })
            })
            .connect_with(options)
            .await?;
        match migrations {
            None => prepare_postgres(&pool).await?,
            Some(direct) => {
                let direct = PgPoolOptions::new()
                    .max_connections(1)
                    .connect(direct)
                    .await?;
                prepare_postgres(&direct).await?;
                direct.close().await;
            }
        }
        (Arc::new(pool), description)
    } else {
        return Err(
            "the database URL must start with sqlite:// or postgres:// (see --help)".into(),
        );
    };
    Ok(Database { store, description })
}

/// Runs the migrations and, on a Citus coordinator, distributes the tables by
/// conversation id (nothing to do on plain PostgreSQL).
async fn prepare_postgres(pool: &PgPool) -> Result<(), BoxError> {
    tower_conversations::migrate(pool).await?;
    if tower_conversations::distribute(pool).await? {
        tracing::info!("Citus: conversations and messages are distributed by conversation id");
    }
    Ok(())
}
