//! The sweeper: expires unpaid bookings whose hold lapsed (releasing the hold and publishing
//! booking.expired), reconciles bookings a dead replica left in PAYING, and carries every
//! unfinished compensation (seats to return, a cancellation to complete) to its end, with
//! backoff, counting what is still pending in `booking_compensation_pending`.
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
    pub repaired: usize,
    pub failed: usize,
}

/// A cancellation that has not finished this long after it was asked is the sweeper's to
/// finish (the request itself may still be running before that).
const CANCEL_GRACE_MS: i64 = 30_000;

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
    let cancel_cutoff = DateTime::from_millis(now.timestamp_millis() - CANCEL_GRACE_MS);
    match booker.store.needing_repair(now, cancel_cutoff, BATCH).await {
        Ok(list) => {
            let mut pending = 0_u32;
            for b in list {
                match booker.repair(&b).await {
                    Ok(()) => report.repaired += 1,
                    Err(e) => {
                        report.failed += 1;
                        pending += 1;
                        tracing::warn!(booking_id = %b.id, error = %e, "compensation failed; will retry");
                    }
                }
            }
            metrics::gauge!("booking_compensation_pending").set(f64::from(pending));
        }
        Err(e) => {
            report.failed += 1;
            tracing::warn!(error = %e, "sweeper cannot list pending compensations");
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
