//! The background sweeper: frees the seats of holds whose time passed and marks them EXPIRED.
//!
//! Correctness never depends on it — an expired hold already counts as free everywhere — it only
//! keeps the tables tidy. Safe with several replicas: each run claims different holds with
//! `FOR UPDATE SKIP LOCKED` (see [`store::sweep_expired`]).

use std::time::Duration;

use moviebook_common::shutdown::Shutdown;
use sqlx::PgPool;

use crate::store;

/// Holds expired per statement; a backlog is worked through in consecutive batches.
const BATCH: i64 = 500;

/// Sweeps every `interval` until shutdown.
pub async fn run(pool: PgPool, interval: Duration, mut shutdown: Shutdown) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.changed() => break,
        }
        if *shutdown.borrow() {
            break;
        }
        loop {
            match store::sweep_expired(&pool, BATCH).await {
                Ok(n) if n > 0 => {
                    tracing::info!(holds = n, "expired holds released");
                    if (n as i64) < BATCH {
                        break;
                    }
                }
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "sweeping expired holds failed; retrying later");
                    break;
                }
            }
        }
    }
    tracing::debug!("sweeper stopped");
}
