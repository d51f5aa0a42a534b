//! Retention: conversations idle for longer than `--retention-days` are deleted, once at
//! start and then every hour, in the store's bounded batches.

use std::time::Duration;

use chrono::Utc;

use crate::database::Pool;

/// How often the purge runs after the first.
const EVERY: Duration = Duration::from_secs(60 * 60);

/// Purges conversations idle for `days` days now and every [`EVERY`], for as long as the
/// proxy runs. A failed purge is logged and tried again at the next tick.
pub fn purge_on_a_timer(pool: Pool, days: u32) {
    tracing::info!("conversations idle for {days} days are deleted, at start and every hour");
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval(EVERY);
        loop {
            ticks.tick().await;
            let cutoff = Utc::now() - chrono::Duration::days(i64::from(days));
            match pool.purge_idle(cutoff).await {
                Ok(0) => {}
                Ok(purged) => tracing::info!("retention: {purged} idle conversations deleted"),
                Err(error) => tracing::warn!("retention: the purge failed: {error}"),
            }
        }
    });
}
