//! [`distribute`]: spreading the tables over a Citus cluster.

use sqlx::PgPool;

use crate::store::StoreError;

const HAS_CITUS: &str = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')";

const IS_DISTRIBUTED: &str =
    "SELECT EXISTS (SELECT 1 FROM pg_dist_partition WHERE logicalrelid = $1::regclass)";

/// First the table `messages` is co-located with.
const DISTRIBUTE_CONVERSATIONS: &str = "SELECT create_distributed_table('conversations', 'id')";

/// Co-located with `conversations`: a conversation's messages live on its shard, so every
/// statement of a turn is routed to one worker and no transaction spans two.
const DISTRIBUTE_MESSAGES: &str = "SELECT create_distributed_table('messages', 'conversation_id', \
     colocate_with => 'conversations')";

/// Co-located too: a stored response is filed under the conversation its id names, and
/// found by that conversation id on its shard.
const DISTRIBUTE_RESPONSES: &str = "SELECT create_distributed_table('responses', \
     'conversation_id', colocate_with => 'conversations')";

/// Distributes `conversations` by `id`, and `messages` and `responses` by
/// `conversation_id`, co-located,
/// when the database is a Citus coordinator (the `citus` extension is installed); does
/// nothing otherwise. Safe to call at every start, after [`migrate`](crate::migrate):
/// a table already distributed is left as it is. Answers whether Citus is there.
///
/// Run it on a direct connection to the coordinator, as the migrations: not through a
/// transaction-mode pooler.
///
/// Every statement the store sends runs on such a cluster (Citus 12.1, a coordinator and
/// two workers: `scripts/citus/run.sh`). The rules the SQL follows there:
/// - Everything a turn does touches one conversation and its messages, which live on one
///   worker (co-located shards), so no turn needs a transaction across workers. Reads by
///   id are single-shard statements; the statements that append (a CTE that moves the
///   conversation's counter, then inserts the messages) are planned by Citus in steps
///   through the coordinator, still on that one worker.
/// - Listings and search filter by owner, not by conversation, so they ask every shard.
/// - `now()` (the database clock, shared by every instance of the layer) is never inside
///   a `CASE` or `COALESCE`, where Citus refuses functions that are not immutable.
/// - `plan_cache_mode = force_generic_plan` breaks Citus's planning of most statements;
///   leave it at its default.
///
/// ```no_run
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let pool = sqlx::PgPool::connect("postgres://postgres@coordinator/app").await?;
/// tower_conversations::migrate(&pool).await?;
/// if tower_conversations::distribute(&pool).await? {
///     println!("conversations are spread over the Citus workers");
/// }
/// # Ok(()) }
/// ```
pub async fn distribute(pool: &PgPool) -> Result<bool, StoreError> {
    let has_citus: bool = sqlx::query_scalar(HAS_CITUS).fetch_one(pool).await?;
    if !has_citus {
        return Ok(false);
    }
    for (table, statement) in [
        ("conversations", DISTRIBUTE_CONVERSATIONS),
        ("messages", DISTRIBUTE_MESSAGES),
        ("responses", DISTRIBUTE_RESPONSES),
    ] {
        let distributed: bool = sqlx::query_scalar(IS_DISTRIBUTED)
            .bind(table)
            .fetch_one(pool)
            .await?;
        if !distributed {
            sqlx::query(statement).execute(pool).await?;
        }
    }
    Ok(true)
}
