//! Named crash points: the boundaries between two durable steps of a payment or a
//! cancellation, where a real process can die (OOM kill, node loss, `kill -9`).
//!
//! `BOOKING_CRASH_POINT=<name>` arms one of them, for the crash tests only (no deployment sets
//! it). A request that reaches the armed point prints `CRASH_POINT <name>` on stderr and waits
//! there for ever, so that the test kills the real process exactly between those two steps
//! with SIGKILL. A timed kill would land wherever it lands and prove little. Unarmed, a point
//! costs one comparison.
//!
//! With `BOOKING_CRASH_PAUSE=true` the armed point pauses instead: it prints the same line and
//! goes on when the process receives SIGUSR1 (printing `CRASH_RESUMED <name>`). The
//! store-outage tests cut MongoDB off while the request is stopped there, so that the next
//! write is the one that fails.

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

/// Stops here when `point` is the armed one: for ever, or until SIGUSR1 when `pause`.
pub async fn reached(armed: Option<&str>, pause: bool, point: &'static str) {
    debug_assert!(is_point(point), "unlisted crash point {point}");
    if armed != Some(point) {
        return;
    }
    // The handler is installed before the line is printed: a SIGUSR1 that the test sends as
    // soon as it reads the line must not find the default action (which ends the process).
    let resume = if pause {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1()) {
            Ok(signal) => Some(signal),
            Err(e) => {
                tracing::error!(error = %e, "cannot install the SIGUSR1 handler: not pausing");
                None
            }
        }
    } else {
        None
    };
    eprintln!("CRASH_POINT {point}");
    match resume {
        Some(mut signal) => {
            tracing::warn!(point, "crash point reached: paused until SIGUSR1");
            signal.recv().await;
            eprintln!("CRASH_RESUMED {point}");
        }
        None => {
            tracing::error!(point, "crash point reached: waiting to be killed");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unarmed_or_other_point_passes_through() {
        reached(None, false, "pay.after_charge").await;
        reached(Some("pay.after_claim"), true, "pay.after_charge").await;
    }

    #[tokio::test]
    async fn the_armed_point_never_returns() {
        let stopped = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            reached(Some("pay.after_charge"), false, "pay.after_charge"),
        )
        .await;
        assert!(stopped.is_err(), "the armed point returned");
    }

    #[tokio::test]
    async fn a_paused_point_goes_on_at_sigusr1() {
        use tokio::signal::unix::{SignalKind, signal};
        // Installed first, so no SIGUSR1 below can meet the default action (end the process).
        let _installed = signal(SignalKind::user_defined1()).expect("handler");
        let paused = tokio::spawn(reached(
            Some("cancel.after_mark"),
            true,
            "cancel.after_mark",
        ));
        let pid = std::process::id().to_string();
        let resumed = tokio::time::timeout(std::time::Duration::from_secs(10), async {
            while !paused.is_finished() {
                let sent = std::process::Command::new("kill")
                    .args(["-USR1", &pid])
                    .status()
                    .expect("kill -USR1");
                assert!(sent.success());
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        })
        .await;
        assert!(resumed.is_ok(), "the paused point never went on");
    }

    #[test]
    fn names_are_known() {
        assert!(is_point("cancel.after_refund"));
        assert!(!is_point("pay.after_everything"));
        assert!(!is_point(""));
    }
}
