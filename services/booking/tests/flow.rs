//! The documented flow end to end over the wire, against the real cinema, user, payment,
//! notification and booking services: register, login, browse, book, pay, see the seats sold
//! and the notification recorded; plus the payment paths around it (decline and retry,
//! concurrent payments charging once, cancellation with refund).

mod common;

use std::time::Duration;

use bson::doc;
use common::{Booked, CANCEL, CREATE, Options, PAY, Stack, code};
use futures::TryStreamExt;
use serde_json::json;

const APPROVE: &str = r#"{"card_number":"4111111111111111"}"#;
const DECLINE: &str = r#"{"card_number":"4000000000000002"}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn documented_flow_books_pays_and_notifies() {
    let stack = Stack::start(Options::default()).await;
    let (user_id, token) = stack.user().await;

    // Browse (public, no token): the full catalogue query of docs/architecture.md.
    let (status, body) = stack
        .gql(
            None,
            "{ movies { id title genre duration showtimes { id startTime cinema { name location } availableSeats basePrice } } }",
            json!({}),
        )
        .await;
    assert_eq!(status, 200);
    assert!(body["errors"].is_null(), "{body}");
    let movies = body["data"]["movies"].as_array().expect("movies");
    assert!(!movies.is_empty(), "the seeded catalogue is browsable");
    let first = &movies[0]["showtimes"][0];
    assert!(
        first["cinema"]["name"]
            .as_str()
            .is_some_and(|n| !n.is_empty()),
        "{first}"
    );

    let showtime = stack.first_showtime().await;
    let seats = stack.free_seats(&showtime, 2).await;

    // Book.
    let (_, body) = stack
        .gql(
            Some(&token),
            CREATE,
            json!({"u": user_id, "s": showtime, "seats": seats}),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let created = &body["data"]["createBooking"];
    assert_eq!(created["success"], true);
    assert!(created["lockId"].as_str().is_some_and(|l| !l.is_empty()));
    assert_eq!(created["booking"]["status"], "PENDING_PAYMENT");
    assert!(created["booking"]["totalAmount"].as_f64().unwrap_or(0.0) > 0.0);
    let booking_id = created["booking"]["id"].as_str().expect("id").to_owned();
    let statuses = stack.seat_statuses(&showtime).await;
    for s in &seats {
        assert_eq!(statuses[s], "LOCKED", "{s} is held");
    }

    // Pay.
    let (_, body) = stack
        .gql(
            Some(&token),
            PAY,
            json!({"b": booking_id, "m": "credit_card", "d": APPROVE}),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let paid = &body["data"]["processPayment"];
    assert_eq!(paid["success"], true);
    assert_eq!(paid["booking"]["status"], "CONFIRMED");
    assert!(paid["booking"]["confirmedAt"].is_string());
    let statuses = stack.seat_statuses(&showtime).await;
    for s in &seats {
        assert_eq!(statuses[s], "BOOKED", "{s} is sold");
    }

    // Paying again charges nothing more and answers the confirmed booking.
    let (_, body) = stack
        .gql(
            Some(&token),
            PAY,
            json!({"b": booking_id, "m": "credit_card", "d": APPROVE}),
        )
        .await;
    assert_eq!(
        body["data"]["processPayment"]["booking"]["status"], "CONFIRMED",
        "{body}"
    );
    let txs: serde_json::Value = stack
        .http
        .get(format!(
            "{}/payments/booking/{booking_id}",
            stack.payment_url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("payments")
        .json()
        .await
        .expect("payments json");
    let txs = txs
        .as_array()
        .cloned()
        .or_else(|| txs["transactions"].as_array().cloned())
        .expect("list");
    assert_eq!(txs.len(), 1, "charged exactly once: {txs:?}");
    assert_eq!(
        txs[0]["amount"], created["booking"]["totalAmount"],
        "the charge is the booking's amount"
    );

    // Issue 12's exploit: the user's own token at the payment service can neither refund the
    // confirmed booking (and keep the seats) nor create a payment of its choosing.
    let tx_id = txs[0]["transaction_id"].as_str().expect("tx id").to_owned();
    for (path, body) in [
        ("refunds", json!({"transaction_id": tx_id})),
        (
            "payments",
            json!({"booking_id": booking_id, "user_id": user_id, "amount": 0.01,
                   "payment_method": "credit_card", "payment_details": {"card_number": "4111111111111111"}}),
        ),
    ] {
        let r = stack
            .http
            .post(format!("{}/{path}", stack.payment_url))
            .bearer_auth(&token)
            .header("Idempotency-Key", format!("user-{path}"))
            .json(&body)
            .send()
            .await
            .expect("payment service");
        assert_eq!(r.status().as_u16(), 403, "POST /{path} with a user token");
    }
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
    assert_eq!(tx["refunded_amount"], 0.0, "not refunded: {tx}");
    let (_, other) = stack.user().await;
    let r = stack
        .http
        .get(format!("{}/payments/{tx_id}", stack.payment_url))
        .bearer_auth(&other)
        .send()
        .await
        .expect("payment");
    assert_eq!(
        r.status().as_u16(),
        403,
        "another user's payment is not readable"
    );

    // Read it back.
    let (_, body) = stack
        .gql(
            Some(&token),
            "{ myBookings { id status seats showtime { id movie { title } } } }",
            json!({}),
        )
        .await;
    assert!(body["errors"].is_null(), "{body}");
    let mine = body["data"]["myBookings"].as_array().expect("list");
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0]["id"], booking_id.as_str());
    assert_eq!(mine[0]["showtime"]["id"], showtime.as_str());

    // The notification of the confirmation is recorded by the notification worker.
    let coll = stack
        .notification_db
        .collection::<bson::Document>("notifications");
    let mut found = Vec::new();
    for _ in 0..150 {
        found = coll
            .find(doc! { "booking_id": &booking_id })
            .await
            .expect("find")
            .try_collect()
            .await
            .expect("collect");
        if found
            .iter()
            .any(|d| d.get_str("event_type") == Ok("booking.confirmed"))
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let types: Vec<&str> = found
        .iter()
        .filter_map(|d| d.get_str("event_type").ok())
        .collect();
    assert!(
        types.contains(&"booking.confirmed"),
        "notifications: {types:?}"
    );
    assert!(
        types.contains(&"booking.pending_payment"),
        "notifications: {types:?}"
    );

    // Both events left the outbox inside the bookings (removed once the broker confirmed).
    let mut pending = u64::MAX;
    for _ in 0..50 {
        pending = common::unpublished(&stack.booking_db).await;
        if pending == 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(pending, 0, "every booking event was published");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn decline_then_retry_and_concurrent_payments_charge_once() {
    let stack = Stack::start(Options {
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
    } = stack.book(&user_id, &token, 1).await;

    // Declined: PAYMENT_DECLINED, booking PAYMENT_FAILED, seats still held.
    let (_, body) = stack
        .gql(
            Some(&token),
            PAY,
            json!({"b": booking_id, "m": "credit_card", "d": DECLINE}),
        )
        .await;
    assert_eq!(code(&body), "PAYMENT_DECLINED", "{body}");
    assert_eq!(
        stack.booking_status(&token, &booking_id).await,
        "PAYMENT_FAILED"
    );
    assert_eq!(stack.seat_statuses(&showtime).await[&seats[0]], "LOCKED");

    // Ten concurrent retries with a good card: exactly one charge, booking CONFIRMED.
    let mut calls = Vec::new();
    for _ in 0..10 {
        let stack = &stack;
        let (token, booking_id) = (token.clone(), booking_id.clone());
        calls.push(async move {
            stack
                .gql(
                    Some(&token),
                    PAY,
                    json!({"b": booking_id, "m": "credit_card", "d": APPROVE}),
                )
                .await
                .1
        });
    }
    let results = futures::future::join_all(calls).await;
    let ok = results.iter().filter(|b| b["errors"].is_null()).count();
    assert!(ok >= 1, "{results:?}");
    for b in results.iter().filter(|b| !b["errors"].is_null()) {
        assert_eq!(code(b), "INVALID_STATE", "{b}");
    }
    assert_eq!(stack.booking_status(&token, &booking_id).await, "CONFIRMED");
    let txs: serde_json::Value = stack
        .http
        .get(format!(
            "{}/payments/booking/{booking_id}",
            stack.payment_url
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("payments")
        .json()
        .await
        .expect("json");
    let txs = txs
        .as_array()
        .cloned()
        .or_else(|| txs["transactions"].as_array().cloned())
        .expect("list");
    let successes = txs.iter().filter(|t| t["status"] == "SUCCESS").count();
    assert_eq!(successes, 1, "one successful charge: {txs:?}");

    // Cancel after confirmation: refunded, seats back on sale, CANCELLED.
    let (_, body) = stack
        .gql(Some(&token), CANCEL, json!({"b": booking_id}))
        .await;
    assert!(body["errors"].is_null(), "{body}");
    assert_eq!(
        body["data"]["cancelBooking"]["booking"]["status"],
        "CANCELLED"
    );
    assert_eq!(stack.seat_statuses(&showtime).await[&seats[0]], "AVAILABLE");
    let tx_id = txs
        .iter()
        .find(|t| t["status"] == "SUCCESS")
        .and_then(|t| t["transaction_id"].as_str())
        .expect("tx");
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
    assert!(
        tx["refunded_amount"].as_f64().unwrap_or(0.0) > 0.0,
        "refunded: {tx}"
    );

    // A cancelled booking can be neither paid nor cancelled again.
    let (_, body) = stack
        .gql(Some(&token), CANCEL, json!({"b": booking_id}))
        .await;
    assert_eq!(code(&body), "INVALID_STATE", "{body}");
    let (_, body) = stack
        .gql(
            Some(&token),
            PAY,
            json!({"b": booking_id, "m": "credit_card", "d": APPROVE}),
        )
        .await;
    assert_eq!(code(&body), "INVALID_STATE", "{body}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pending_booking_cancelled_releases_its_seats() {
    let stack = Stack::start(Options {
        notification: false,
        ..Options::default()
    })
    .await;
    let (user_id, token) = stack.user().await;
    let Booked {
        showtime,
        seats,
        id: booking_id,
        body,
    } = stack.book(&user_id, &token, 3).await;
    assert_eq!(
        body["data"]["createBooking"]["booking"]["seats"]
            .as_array()
            .map(Vec::len),
        Some(3),
        "{body}"
    );
    // The same seats cannot be booked twice.
    let (other, other_token) = stack.user().await;
    let (_, body) = stack
        .gql(
            Some(&other_token),
            CREATE,
            json!({"u": other, "s": showtime, "seats": [seats[1].clone()]}),
        )
        .await;
    assert_eq!(code(&body), "SEATS_UNAVAILABLE", "{body}");
    // Another user can neither pay nor cancel it (the payment's ownership check is inside its
    // claim: a foreign claim must neither match nor leave the booking PAYING).
    let (_, body) = stack
        .gql(
            Some(&other_token),
            PAY,
            json!({"b": booking_id, "m": "credit_card", "d": APPROVE}),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let (_, body) = stack
        .gql(Some(&other_token), CANCEL, json!({"b": booking_id}))
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");

    let (_, body) = stack
        .gql(Some(&token), CANCEL, json!({"b": booking_id}))
        .await;
    assert_eq!(
        body["data"]["cancelBooking"]["booking"]["status"], "CANCELLED",
        "{body}"
    );
    let statuses = stack.seat_statuses(&showtime).await;
    for s in &seats {
        assert_eq!(statuses[s], "AVAILABLE");
    }
    let (_, body) = stack
        .gql(
            Some(&other_token),
            CREATE,
            json!({"u": other, "s": showtime, "seats": [seats[1].clone()]}),
        )
        .await;
    assert!(
        body["errors"].is_null(),
        "released seats can be booked again: {body}"
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn idempotency_keys_answer_retries_with_the_first_answer() {
    const KEYED_CREATE: &str = "mutation($u: ID!, $s: ID!, $seats: [String!]!, $k: String) { createBooking(userId: $u, showtimeId: $s, seatNumbers: $seats, idempotencyKey: $k) { booking { id status seats } } }";
    const KEYED_PAY: &str = "mutation($b: ID!, $m: String!, $d: String, $k: String) { processPayment(bookingId: $b, paymentMethod: $m, paymentDetails: $d, idempotencyKey: $k) { success booking { id status } } }";
    let stack = Stack::start(Options {
        notification: false,
        ..Options::default()
    })
    .await;
    let (user_id, token) = stack.user().await;
    let showtime = stack.first_showtime().await;
    let seats = stack.free_seats(&showtime, 3).await;
    let two = &seats[..2];

    // Six concurrent retries of one createBooking: one booking, one hold.
    let vars = json!({"u": user_id, "s": showtime, "seats": two, "k": "create-1"});
    let answers = futures::future::join_all(
        (0..6).map(|_| stack.gql(Some(&token), KEYED_CREATE, vars.clone())),
    )
    .await;
    let ids: std::collections::HashSet<String> = answers
        .iter()
        .map(|(_, b)| {
            b["data"]["createBooking"]["booking"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("every retry answers the booking: {b}"))
                .to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "one booking for one key: {ids:?}");
    let booking_id = ids.into_iter().next().expect("id");
    let stored = stack
        .booking_db
        .collection::<bson::Document>("bookings")
        .count_documents(doc! { "user_id": &user_id })
        .await
        .expect("count");
    assert_eq!(stored, 1);
    // The same seats in another order are the same request; through the header as well.
    let reversed: Vec<&String> = two.iter().rev().collect();
    let r = stack
        .http
        .post(&stack.graphql)
        .bearer_auth(&token)
        .header("Idempotency-Key", "create-1")
        .json(&json!({"query": KEYED_CREATE, "variables": {"u": user_id, "s": showtime, "seats": reversed}}))
        .send()
        .await
        .expect("graphql");
    let body: serde_json::Value = r.json().await.expect("json");
    assert_eq!(
        body["data"]["createBooking"]["booking"]["id"],
        booking_id.as_str(),
        "{body}"
    );
    // Another request under the same key is refused, and holds nothing.
    let (_, body) = stack
        .gql(
            Some(&token),
            KEYED_CREATE,
            json!({"u": user_id, "s": showtime, "seats": [seats[2]], "k": "create-1"}),
        )
        .await;
    assert_eq!(code(&body), "IDEMPOTENCY_KEY_REUSED", "{body}");
    assert_eq!(stack.seat_statuses(&showtime).await[&seats[2]], "AVAILABLE");
    // A bad key is bad input.
    let (_, body) = stack
        .gql(
            Some(&token),
            KEYED_CREATE,
            json!({"u": user_id, "s": showtime, "seats": [seats[2]], "k": "no spaces"}),
        )
        .await;
    assert_eq!(code(&body), "BAD_USER_INPUT", "{body}");
    // Keys belong to their user: another user's same key is theirs alone.
    let (other_id, other_token) = stack.user().await;
    let (_, body) = stack
        .gql(
            Some(&other_token),
            KEYED_CREATE,
            json!({"u": other_id, "s": showtime, "seats": [seats[2]], "k": "create-1"}),
        )
        .await;
    let other_booking = body["data"]["createBooking"]["booking"]["id"]
        .as_str()
        .unwrap_or_else(|| panic!("{body}"))
        .to_owned();
    assert_ne!(other_booking, booking_id);

    // processPayment: a decline answered again (not charged again), then a new key pays once.
    let pay = |d: &str, k: &str| json!({"b": booking_id, "m": "credit_card", "d": d, "k": k});
    for _ in 0..2 {
        let (_, body) = stack
            .gql(Some(&token), KEYED_PAY, pay(DECLINE, "pay-1"))
            .await;
        assert_eq!(code(&body), "PAYMENT_DECLINED", "{body}");
    }
    let (_, body) = stack
        .gql(Some(&token), KEYED_PAY, pay(APPROVE, "pay-1"))
        .await;
    assert_eq!(
        code(&body),
        "IDEMPOTENCY_KEY_REUSED",
        "another card under the same key: {body}"
    );
    for _ in 0..2 {
        let (_, body) = stack
            .gql(Some(&token), KEYED_PAY, pay(APPROVE, "pay-2"))
            .await;
        assert_eq!(
            body["data"]["processPayment"]["booking"]["status"], "CONFIRMED",
            "{body}"
        );
    }
    let txs = stack.payments(&token, &booking_id).await;
    assert_eq!(txs.len(), 2, "one decline, one charge: {txs:?}");
    assert_eq!(txs.iter().filter(|t| t["status"] == "SUCCESS").count(), 1);
    stack.stop().await;
}
