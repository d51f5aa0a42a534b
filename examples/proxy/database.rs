//! Opening the conversation database named by a URL, SQLite or PostgreSQL.
//!
//! Every failure at start names what failed and where (a path, or host:port, never a
//! password), with the database's own message as the error's source, and comes within
//! [`START_TIMEOUT`] rather than after sqlx's 30 s acquire timeout.

use std::error::Error;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use axum::BoxError;
use chrono::{DateTime, Utc};
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Connection, PgPool, SqlitePool};
use tower_conversations::{ConversationLayer, ConversationStore, StoreError};

/// How long a Postgres connection may sit idle in the pool before it is pinged on its
/// way out.
const PING_WHEN_IDLE_FOR: Duration = Duration::from_secs(1);
/// How long the proxy waits for its database at start (a server still starting refuses
/// connections for a moment), and how long a request waits for a pooled connection: as
/// long as the layer waits for a turn to be stored.
pub const START_TIMEOUT: Duration = Duration::from_secs(5);
/// Pause between two connection attempts at start.
const RETRY_PAUSE: Duration = Duration::from_millis(200);

/// An open, migrated database, and a description of it that is safe to log.
pub struct Database {
    /// The store the layer and the management API share, which `/readyz` asks too.
    pub pool: Pool,
    /// Which kind of database and where, never with its password.
    pub description: String,
}

/// The pool of the database, whichever kind it is.
#[derive(Clone)]
pub enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

impl Pool {
    /// A conversation layer storing in this pool. The layer is given the pool itself,
    /// not a trait object, so that it can tell which kind of database it stores in.
    pub fn layer(&self) -> ConversationLayer {
        match self {
            Self::Sqlite(pool) => ConversationLayer::new(pool.clone()),
            Self::Postgres(pool) => ConversationLayer::new(pool.clone()),
        }
    }

    /// Deletes the conversations not updated since `cutoff`; how many went.
    pub async fn purge_idle(&self, cutoff: DateTime<Utc>) -> Result<u64, StoreError> {
        match self {
            Self::Sqlite(pool) => pool.purge_idle(cutoff).await,
            Self::Postgres(pool) => pool.purge_idle(cutoff).await,
        }
    }

    /// Runs a trivial query: whether the database answers now.
    pub async fn answer(&self) -> Result<(), sqlx::Error> {
        match self {
            Self::Sqlite(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
            Self::Postgres(pool) => sqlx::query("SELECT 1").execute(pool).await.map(drop),
        }
    }
}

/// A start-up step that failed: what and where, with the database's error as its source.
#[derive(Debug)]
struct Failed {
    what: String,
    source: BoxError,
}

impl fmt::Display for Failed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.what)
    }
}

impl Error for Failed {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        Some(&*self.source)
    }
}

/// `source`, saying what was being done, so that the log says both.
fn failed(what: impl Into<String>, source: impl Into<BoxError>) -> BoxError {
    Box::new(Failed {
        what: what.into(),
        source: source.into(),
    })
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
    if url.starts_with("sqlite:") {
        open_sqlite(url).await
    } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
        open_postgres(url, migrations).await
    } else {
        Err("the database URL must start with sqlite:// or postgres:// (see --help)".into())
    }
}

async fn open_sqlite(url: &str) -> Result<Database, BoxError> {
    // The migrations put the file in WAL mode, where NORMAL still survives a crash of
    // the process and skips the disk flush on every commit that FULL (SQLite's default)
    // waits for: a turn costs about half as much. Only a power cut or an OS crash can
    // lose the last turns.
    let options = SqliteConnectOptions::from_str(url)
        .map_err(|error| failed("the SQLite database URL cannot be read", error))?
        .create_if_missing(true)
        .synchronous(SqliteSynchronous::Normal);
    let description = format!("SQLite at {}", options.get_filename().display());
    // The connections live in this process and cannot go stale the way a network
    // connection can: checking each one out with a ping would only add a round trip
    // to its worker thread to every history load and every turn.
    let pool = SqlitePoolOptions::new()
        .test_before_acquire(false)
        .acquire_timeout(START_TIMEOUT)
        .connect_with(options)
        .await
        .map_err(|error| failed(format!("cannot open {description}"), error))?;
    tower_conversations::migrate(&pool).await.map_err(|error| {
        failed(
            format!("running the migrations on {description} failed"),
            error,
        )
    })?;
    Ok(Database {
        pool: Pool::Sqlite(pool),
        description,
    })
}

async fn open_postgres(url: &str, migrations: Option<&str>) -> Result<Database, BoxError> {
    // The URL's own text is never part of an error: it may hold the password.
    let options = PgConnectOptions::from_str(url)
        .map_err(|error| failed("the PostgreSQL database URL cannot be read", error))?;
    let description = describe_postgres(&options);
    connect_once(&options, &description).await?;
    // sqlx pings every connection it hands out by default: a round trip before every
    // history load and every turn. A connection in use within the last second is
    // taken as alive, and only one idle for longer is pinged (and replaced if the
    // server closed it). A server that drops connections that were busy a moment
    // ago fails at most one request on each of them.
    let pool = PgPoolOptions::new()
        .test_before_acquire(false)
        .acquire_timeout(START_TIMEOUT)
        .before_acquire(|connection, metadata| {
            Box::pin(async move {
                if metadata.idle_for > PING_WHEN_IDLE_FOR {
                    connection.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_with(options)
        .await
        .map_err(|error| failed(format!("cannot connect to {description}"), error))?;
    match migrations {
        None => prepare_postgres(&pool, &description).await?,
        Some(direct) => {
            let options = PgConnectOptions::from_str(direct)
                .map_err(|error| failed("the migration database URL cannot be read", error))?;
            let direct_description = describe_postgres(&options);
            connect_once(&options, &direct_description).await?;
            let direct = PgPoolOptions::new()
                .max_connections(1)
                .acquire_timeout(START_TIMEOUT)
                .connect_with(options)
                .await
                .map_err(|error| {
                    failed(format!("cannot connect to {direct_description}"), error)
                })?;
            prepare_postgres(&direct, &direct_description).await?;
            direct.close().await;
        }
    }
    Ok(Database {
        pool: Pool::Postgres(pool),
        description,
    })
}

/// `PostgreSQL at HOST:PORT/DATABASE as USER`: where, never with the password.
fn describe_postgres(options: &PgConnectOptions) -> String {
    format!(
        "PostgreSQL at {}:{}/{} as {}",
        options.get_host(),
        options.get_port(),
        options.get_database().unwrap_or(options.get_username()),
        options.get_username(),
    )
}

/// Opens one connection and closes it again, to hear the server's own answer: a pool
/// that cannot connect keeps retrying a refused connection until its acquire timeout
/// and then says only that it timed out. A refused connection (a server still
/// starting) is retried until [`START_TIMEOUT`]; any other error ends the start at once.
async fn connect_once(options: &PgConnectOptions, description: &str) -> Result<(), BoxError> {
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    let why: BoxError = loop {
        let error =
            match tokio::time::timeout_at(deadline, PgConnection::connect_with(options)).await {
                Ok(Ok(connection)) => {
                    let _ = connection.close().await;
                    return Ok(());
                }
                Ok(Err(error)) => error,
                Err(_) => break format!("no answer within {START_TIMEOUT:?}").into(),
            };
        let refused = matches!(
            &error,
            sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused
        );
        if !refused || tokio::time::Instant::now() + RETRY_PAUSE >= deadline {
            break error.into();
        }
        tokio::time::sleep(RETRY_PAUSE).await;
    };
    Err(failed(format!("cannot connect to {description}"), why))
}

/// Runs the migrations and, on a Citus coordinator, distributes the tables by
/// conversation id (nothing to do on plain PostgreSQL).
async fn prepare_postgres(pool: &PgPool, description: &str) -> Result<(), BoxError> {
    tower_conversations::migrate(pool).await.map_err(|error| {
        failed(
            format!("running the migrations on {description} failed"),
            error,
        )
    })?;
    let distributed = tower_conversations::distribute(pool)
        .await
        .map_err(|error| {
            failed(
                format!("distributing the tables on {description} failed"),
                error,
            )
        })?;
    if distributed {
        tracing::info!("Citus: conversations and messages are distributed by conversation id");
    }
    Ok(())
}
