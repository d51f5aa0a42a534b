//! [`Session`]: how the statements of one store call reach PostgreSQL, directly or
//! through a transaction-mode pooler such as PgBouncer.
//!
//! On a direct connection (or a session-mode pooler) every statement is prepared once
//! per connection under a name and cached, so a call costs one round trip. A
//! transaction-mode pooler hands each transaction to whichever server connection is
//! free, so a name prepared on one may not exist on the next, and even an unnamed
//! statement's parse and its execution (two round trips with a `Sync` between them) may
//! land on different servers. Behind such a pooler the store therefore sends unnamed
//! statements inside a transaction, which keeps one server connection from `BEGIN` to
//! `COMMIT`: four round trips for a one-statement call instead of one.
//!
//! The switch is sqlx's own: a pool whose statement cache is off
//! (`statement-cache-capacity=0` in the URL, or
//! [`PgConnectOptions::statement_cache_capacity(0)`](sqlx::postgres::PgConnectOptions::statement_cache_capacity))
//! is taken to sit behind a transaction pooler. That is the setting every guide to sqlx
//! behind PgBouncer already names; on its own it does not help, since sqlx then still
//! names its statements (and never closes them).
//!
//! On a direct connection, and a pool that does not test each connection it hands out,
//! a one-statement call that ended in good order leaves its connection for the next call
//! rather than to the pool, for up to a second (see [`Kept`]): sqlx's pool tests every
//! connection given back with a round trip.

use std::sync::Arc;

use sqlx::postgres::{PgArguments, PgConnectOptions};
use sqlx::query::Query;
use sqlx::{Arguments, ConnectOptions, PgConnection, PgPool, Postgres, Transaction};

use crate::store::StoreError;
use crate::store::kept::{Kept, Taken};
use crate::store::per_pool::PerPool;

/// The connection of one store call, and whether its statements may be named.
pub(super) struct Session<'p> {
    connection: Connection,
    named: bool,
    pool: &'p PgPool,
}

enum Connection {
    /// A connection of its own, to keep for the next call if this one ends in good
    /// order.
    Pooled(Taken<Postgres>, Arc<Kept<Postgres>>),
    Transaction(Transaction<'static, Postgres>),
}

impl<'p> Session<'p> {
    /// For a call of one statement: on a direct connection, a connection kept from an
    /// earlier call or one from the pool; a transaction behind a transaction pooler.
    pub(super) async fn statement(pool: &'p PgPool) -> Result<Self, StoreError> {
        let known = known(pool);
        if known.pooled {
            return Self::begin(pool, false).await;
        }
        let taken = known.kept.take_or_acquire(pool).await?;
        Ok(Self {
            connection: Connection::Pooled(taken, known.kept),
            named: true,
            pool,
        })
    }

    /// For a call of several statements that commit together: a transaction.
    pub(super) async fn transaction(pool: &'p PgPool) -> Result<Self, StoreError> {
        Self::begin(pool, !known(pool).pooled).await
    }

    /// A transaction whose statements are prepared under a name when `named`.
    async fn begin(pool: &'p PgPool, named: bool) -> Result<Self, StoreError> {
        Ok(Self {
            connection: Connection::Transaction(pool.begin().await?),
            named,
            pool,
        })
    }

    /// Whether statements are prepared under a name and cached.
    pub(super) fn named(&self) -> bool {
        self.named
    }

    /// A statement to run on [`connection`](Self::connection).
    pub(super) fn query(&self, sql: &'static str) -> Query<'static, Postgres, PgArguments> {
        sqlx::query(sql).persistent(self.named)
    }

    /// [`query`](Self::query) with room made for `binds` parameters of about `size`
    /// bytes in all: sqlx grows its parameter buffer by doubling from empty, which copied
    /// a turn's bytes some seven times on their way in.
    pub(super) fn query_sized(
        &self,
        sql: &'static str,
        binds: usize,
        size: usize,
    ) -> Query<'static, Postgres, PgArguments> {
        let mut arguments = PgArguments::default();
        arguments.reserve(binds, size);
        sqlx::query_with(sql, arguments).persistent(self.named)
    }

    pub(super) fn connection(&mut self) -> &mut PgConnection {
        match &mut self.connection {
            Connection::Pooled(taken, _) => &mut taken.connection,
            Connection::Transaction(transaction) => transaction,
        }
    }

    /// Ends the call in good order: commits its transaction, if it has one, or keeps its
    /// connection for the next call. Dropping a session instead rolls the transaction
    /// back, or gives the connection back to the pool, which tests it.
    pub(super) async fn commit(self) -> Result<(), StoreError> {
        match self.connection {
            Connection::Transaction(transaction) => transaction.commit().await?,
            Connection::Pooled(taken, kept) => kept.give_back(self.pool, taken),
        }
        Ok(())
    }
}

/// What the store remembers of one pool.
#[derive(Clone)]
struct Known {
    /// Whether the pool has sqlx's statement cache off (it sits behind a transaction
    /// pooler).
    pooled: bool,
    kept: Arc<Kept<Postgres>>,
}

/// What the store remembers of `pool`.
fn known(pool: &PgPool) -> Known {
    static KNOWN: PerPool<PgConnectOptions, Known> = PerPool::new();
    KNOWN.get(&pool.connect_options(), || Known {
        pooled: pool
            .connect_options()
            .to_url_lossy()
            .query_pairs()
            .any(|(key, value)| key == "statement-cache-capacity" && value == "0"),
        kept: Arc::new(Kept::new(pool)),
    })
}
