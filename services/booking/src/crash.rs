//! Named crash points: the boundaries between two durable steps of a payment or a
//! cancellation, where a real process can die (OOM kill, node loss, `kill -9`).
//!
//! `BOOKING_CRASH_POINT=<name>` arms one of them, for the crash tests only (no deployment sets
//! it). A request that reaches the armed point prints `CRASH_POINT <name>` on stderr and waits
//! there for ever, so that the test kills the real process exactly between those two steps
//! with SIGKILL. A timed kill would land wherever it lands and prove little. Unarmed, a point
//! costs one comparison.

/// Every crash point, in the order the steps run.
pub const POINTS: &[&str] = &[
    // processPayment
    "pay.after_claim",
    "pay.after_charge",
    "pay.after_seats_confirmed",
    "pay.after_refund_intent",
    "pay.after_refund",
    // cancelBooking of a CONFIRMED booking
    "cancel.after_mark",
    "cancel.after_refund",
];

/// Whether `name` is a crash point (the configuration refuses any other).
pub fn is_point(name: &str) -> bool {
    POINTS.contains(&name)
}

/// Stops here for ever when `point` is the armed one.
pub async fn reached(armed: Option<&str>, point: &'static str) {
    debug_assert!(is_point(point), "unlisted crash point {point}");
    if armed == Some(point) {
        eprintln!("CRASH_POINT {point}");
        tracing::error!(point, "crash point reached: waiting to be killed");
        std::future::pending::<()>().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unarmed_or_other_point_passes_through() {
        reached(None, "pay.after_charge").await;
        reached(Some("pay.after_claim"), "pay.after_charge").await;
    }

    #[tokio::test]
    async fn the_armed_point_never_returns() {
        let stopped = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            reached(Some("pay.after_charge"), "pay.after_charge"),
        )
        .await;
        assert!(stopped.is_err(), "the armed point returned");
    }

    #[test]
    fn names_are_known() {
        assert!(is_point("cancel.after_refund"));
        assert!(!is_point("pay.after_everything"));
        assert!(!is_point(""));
    }
}
