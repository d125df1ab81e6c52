//! Contention on one booking: processPayment and cancelBooking sent at the same moment, for
//! many bookings at once, with a reconciler sweeping beside them. Whatever wins, each booking
//! ends CONFIRMED with its seats and one net charge, or CANCELLED with its seats free and a
//! net charge of 0. The reconciliation audit is the oracle.

mod common;

use std::time::Duration;

use common::{Booked, CANCEL, Options, PAY, Stack};
use serde_json::json;

const PAIRS: usize = 12;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_pay_and_cancel_pairs_never_lose_money_or_seats() {
    let stack = Stack::start(Options {
        notification: false,
        sweeper: false,
        ..Options::default()
    })
    .await;
    let replica = stack.replica().await;
    let (user_id, token) = stack.user().await;
    let mut booked = Vec::new();
    for _ in 0..PAIRS {
        booked.push(stack.book(&user_id, &token, 2).await);
    }

    let stack = std::sync::Arc::new(stack);
    let mut tasks = Vec::new();
    for Booked { id, .. } in &booked {
        for query in [PAY, CANCEL] {
            let (stack, token, id) = (stack.clone(), token.clone(), id.clone());
            tasks.push(tokio::spawn(async move {
                let vars = if query == PAY {
                    json!({"b": id, "m": "credit_card"})
                } else {
                    json!({"b": id})
                };
                stack.gql(Some(&token), query, vars).await
            }));
        }
    }
    // A reconciler sweeping through it all (nothing is due yet: it must change nothing).
    let sweeping = {
        let replica = replica.clone();
        tokio::spawn(async move {
            for _ in 0..10 {
                booking_service::sweeper::sweep_once(&replica).await;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
    };
    for t in tasks {
        let (status, body) = t.await.expect("request task");
        assert!(status < 500, "a 5xx under contention: {status} {body}");
        if let Some(code) = body["errors"][0]["extensions"]["code"].as_str() {
            assert!(
                ["INVALID_STATE", "CONFLICT"].contains(&code),
                "only a lost race may be refused: {body}"
            );
        }
    }
    sweeping.await.expect("sweeper task");

    // A cancel that lost to the payment leaves a CONFIRMED booking: the user cancels again,
    // as they would, so every booking ends CANCELLED.
    let mut confirmed_then_cancelled = 0;
    for Booked { id, .. } in &booked {
        if stack.booking_status(&token, id).await == "CONFIRMED" {
            confirmed_then_cancelled += 1;
            let (_, body) = stack.gql(Some(&token), CANCEL, json!({"b": id})).await;
            assert_eq!(
                body["data"]["cancelBooking"]["booking"]["status"], "CANCELLED",
                "{body}"
            );
        }
    }
    for Booked {
        id,
        showtime,
        seats,
        ..
    } in &booked
    {
        assert_eq!(stack.booking_status(&token, id).await, "CANCELLED", "{id}");
        let statuses = stack.seat_statuses(showtime).await;
        for s in seats {
            assert_eq!(statuses[s], "AVAILABLE", "booking {id} seat {s}");
        }
    }
    let report = common::audit_clean(&replica, "").await;
    assert!(
        report.net().abs() < 0.005,
        "every charge was refunded: {:?}",
        report.lines()
    );
    eprintln!(
        "{PAIRS} pay/cancel pairs: {confirmed_then_cancelled} paid first, {} cancelled first",
        PAIRS - confirmed_then_cancelled
    );
    match std::sync::Arc::try_unwrap(stack) {
        Ok(stack) => stack.stop().await,
        Err(_) => panic!("a request task still holds the stack"),
    }
}
