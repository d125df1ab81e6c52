//! The sweeper: expires unpaid bookings whose hold lapsed (releasing the hold and publishing
//! booking.expired) and reconciles bookings a dead replica left in PAYING.
//!
//! Safe with several replicas: each booking is claimed by a conditional update, so only one
//! sweeper acts on it; the others' updates match nothing.

use std::{sync::Arc, time::Duration};

use bson::DateTime;
use moviebook_common::shutdown::Shutdown;

use crate::service::Booker;

/// Bookings handled per round.
const BATCH: i64 = 200;

/// What one round did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SweepReport {
    pub expired: usize,
    pub reconciled: usize,
    pub failed: usize,
}

/// One pass over the expired holds and the stuck payments.
pub async fn sweep_once(booker: &Booker) -> SweepReport {
    let mut report = SweepReport::default();
    let now = DateTime::now();
    match booker.store.expired_holds(now, BATCH).await {
        Ok(list) => {
            for b in list {
                match booker.expire(&b).await {
                    Ok(Some(_)) => report.expired += 1,
                    Ok(None) => {}
                    Err(e) => {
                        report.failed += 1;
                        tracing::warn!(booking_id = %b.id, error = %e, "could not expire booking");
                    }
                }
            }
        }
        Err(e) => {
            report.failed += 1;
            tracing::warn!(error = %e, "sweeper cannot list expired holds");
        }
    }
    let timeout_ms = i64::try_from(booker.config.paying_timeout.as_millis()).unwrap_or(60_000);
    let cutoff = DateTime::from_millis(now.timestamp_millis() - timeout_ms);
    match booker.store.stuck_paying(now, cutoff, BATCH).await {
        Ok(list) => {
            for b in list {
                match booker.reconcile_stuck(&b).await {
                    Ok(Some(_)) => report.reconciled += 1,
                    Ok(None) => {}
                    Err(e) => {
                        report.failed += 1;
                        tracing::warn!(booking_id = %b.id, error = %e, "could not reconcile booking");
                    }
                }
            }
        }
        Err(e) => {
            report.failed += 1;
            tracing::warn!(error = %e, "sweeper cannot list stuck payments");
        }
    }
    report
}

/// Runs [`sweep_once`] every `interval` until shutdown.
pub async fn run(booker: Arc<Booker>, interval: Duration, mut shutdown: Shutdown) {
    tracing::info!(interval = ?interval, "sweeper started");
    loop {
        if *shutdown.borrow() {
            break;
        }
        let report = sweep_once(&booker).await;
        if report != SweepReport::default() {
            tracing::info!(?report, "sweep");
        }
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => {}
        }
    }
    tracing::info!("sweeper stopped");
}
