//! A hold that lapses before payment never sells its seats: the booking ends EXPIRED (the
//! sweeper) or, if the payment raced past the lapse, REFUNDED — never CONFIRMED without seats.

mod common;

use std::time::Duration;

use bson::doc;
use common::{Booked, Options, PAY, Stack, code};
use serde_json::json;

const APPROVE: &str = r#"{"card_number":"4242424242424242"}"#;

async fn transactions(stack: &Stack, token: &str, booking_id: &str) -> Vec<serde_json::Value> {
    let v: serde_json::Value = stack
        .http
        .get(format!(
            "{}/payments/booking/{booking_id}",
            stack.payment_url
        ))
        .bearer_auth(token)
        .send()
        .await
        .expect("payments")
        .json()
        .await
        .expect("json");
    v.as_array()
        .cloned()
        .or_else(|| v["transactions"].as_array().cloned())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_unpaid_hold_expires_and_its_seats_return_to_sale() {
    let stack = Stack::start(Options {
        hold_seconds: 2,
        notification: false,
        ..Options::default()
    })
    .await;
    let (user_id, token) = stack.user().await;
    let Booked {
        showtime,
        seats,
        id: booking_id,
        ..
    } = stack.book(&user_id, &token, 2).await;

    let mut status = String::new();
    for _ in 0..50 {
        status = stack.booking_status(&token, &booking_id).await;
        if status == "EXPIRED" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(status, "EXPIRED", "the sweeper expires the unpaid booking");
    let statuses = stack.seat_statuses(&showtime).await;
    for s in &seats {
        assert_eq!(statuses[s], "AVAILABLE", "{s} is back on sale");
    }
    // Paying now is refused, and nothing was charged.
    let (_, body) = stack
        .gql(
            Some(&token),
            PAY,
            json!({"b": booking_id, "m": "credit_card", "d": APPROVE}),
        )
        .await;
    assert_eq!(code(&body), "INVALID_STATE", "{body}");
    assert!(transactions(&stack, &token, &booking_id).await.is_empty());
    // booking.expired went through the outbox.
    let outbox = stack.booking_db.collection::<bson::Document>("outbox");
    let expired = outbox
        .count_documents(doc! { "event_type": "booking.expired" })
        .await
        .expect("count");
    assert_eq!(expired, 1);
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paid_after_the_cinema_hold_lapsed_is_refunded_never_confirmed() {
    // No sweeper, and the booking's own clock is made to lag the cinema's: the payment goes
    // through, the cinema refuses to confirm the lapsed hold, the booking must end REFUNDED.
    let stack = Stack::start(Options {
        hold_seconds: 1,
        notification: false,
        sweeper: false,
    })
    .await;
    let (user_id, token) = stack.user().await;
    let Booked {
        showtime,
        seats,
        id: booking_id,
        ..
    } = stack.book(&user_id, &token, 1).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let later = bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() + 60_000);
    stack
        .booking_db
        .collection::<bson::Document>("bookings")
        .update_one(
            doc! { "_id": &booking_id },
            doc! { "$set": { "hold_expires_at": later } },
        )
        .await
        .expect("skew the clock");

    let (_, body) = stack
        .gql(
            Some(&token),
            PAY,
            json!({"b": booking_id, "m": "credit_card", "d": APPROVE}),
        )
        .await;
    assert_eq!(code(&body), "HOLD_EXPIRED", "{body}");
    assert_eq!(stack.booking_status(&token, &booking_id).await, "REFUNDED");
    let txs = transactions(&stack, &token, &booking_id).await;
    assert_eq!(txs.len(), 1, "{txs:?}");
    assert_eq!(txs[0]["status"], "SUCCESS");
    let tx_id = txs[0]["transaction_id"].as_str().expect("tx id");
    let tx: serde_json::Value = stack
        .http
        .get(format!("{}/payments/{tx_id}", stack.payment_url))
        .bearer_auth(&token)
        .send()
        .await
        .expect("payment")
        .json()
        .await
        .expect("json");
    assert_eq!(
        tx["refunded_amount"].as_f64(),
        tx["amount"].as_f64(),
        "fully refunded: {tx}"
    );
    assert_ne!(
        stack.seat_statuses(&showtime).await[&seats[0]],
        "BOOKED",
        "the seat was not sold"
    );
    stack.stop().await;
}
