//! A hold that lapses before payment never sells its seats: the booking ends EXPIRED (the
//! sweeper) or, if the payment raced past the lapse, REFUNDED — never CONFIRMED without seats.

mod common;

use std::time::Duration;

use bson::doc;
use common::{Booked, CANCEL, Options, PAY, Stack, code, event_tap};
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
    let mut tap = event_tap("booking.*").await;
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
    // Both events were published, once each and in order; none waits in the booking any more.
    let mut types = tap
        .types_where("booking_id", &booking_id, Duration::from_secs(2))
        .await;
    for _ in 0..10 {
        if types.len() >= 2 {
            break;
        }
        types.extend(
            tap.types_where("booking_id", &booking_id, Duration::from_secs(1))
                .await,
        );
    }
    assert_eq!(types, ["booking.pending_payment", "booking.expired"]);
    tap.close().await;
    let pending = stack
        .booking_db
        .collection::<bson::Document>("bookings")
        .count_documents(doc! { "_id": &booking_id, "outbox_since": { "$exists": true } })
        .await
        .expect("count");
    assert_eq!(pending, 0, "published events leave the booking");
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

/// The seat statuses of `seats` of a showtime.
async fn seats_are(stack: &Stack, showtime: &str, seats: &[String], want: &str) {
    let statuses = stack.seat_statuses(showtime).await;
    for s in seats {
        assert_eq!(statuses[s], want, "seat {s}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stalled_payment_and_the_reconciler_never_both_finish() {
    use booking_service::domain::BookingStatus as S;
    let stack = Stack::start(Options {
        notification: false,
        sweeper: false,
        ..Options::default()
    })
    .await;
    let replica = stack.replica().await;
    let (user_id, token) = stack.user().await;

    // 1. A replica claimed the booking, charged it and confirmed the seats, then died before
    //    writing CONFIRMED. The reconciler rolls forward: the user keeps what they bought.
    let Booked {
        showtime,
        seats,
        id,
        ..
    } = stack.book(&user_id, &token, 1).await;
    let stalled = replica
        .store
        .claim_payment(&id, S::PendingPayment)
        .await
        .expect("claim")
        .expect("claimed");
    let tx = stack.charge(&id, &user_id, stalled.total_amount).await;
    let confirmed = replica
        .cinema
        .confirm(&stalled.lock_id, &id, &user_id)
        .await
        .expect("confirm");
    assert!(confirmed.success, "{confirmed:?}");
    stack.age(&id).await;
    let report = booking_service::sweeper::sweep_once(&replica).await;
    assert_eq!(report.reconciled, 1, "{report:?}");
    assert_eq!(stack.booking_status(&token, &id).await, "CONFIRMED");
    seats_are(&stack, &showtime, &seats, "BOOKED").await;
    let txs = stack.payments(&token, &id).await;
    assert_eq!(txs.len(), 1);
    assert_eq!(txs[0]["transaction_id"], tx["transaction_id"]);
    assert_eq!(txs[0]["refunded_amount"], 0.0, "not refunded: {txs:?}");
    // The stalled claimant wakes up: its fencing token is stale, it can write nothing.
    let late = replica
        .store
        .transition_claimed(&stalled, S::Refunded, bson::doc! {})
        .await
        .expect("store");
    assert!(late.is_none(), "a fenced-out claimant wrote {late:?}");
    assert_eq!(stack.booking_status(&token, &id).await, "CONFIRMED");

    // 2. Charged but the seats were never confirmed, and the hold lapsed: refunded, seats free,
    //    and the stalled claimant cannot confirm afterwards.
    let Booked {
        showtime,
        seats,
        id,
        ..
    } = stack.book(&user_id, &token, 1).await;
    let stalled = replica
        .store
        .claim_payment(&id, S::PendingPayment)
        .await
        .expect("claim")
        .expect("claimed");
    stack.charge(&id, &user_id, stalled.total_amount).await;
    stack.age(&id).await;
    stack.lapse_cinema_hold(&id).await;
    let report = booking_service::sweeper::sweep_once(&replica).await;
    assert_eq!(report.reconciled, 1, "{report:?}");
    assert_eq!(stack.booking_status(&token, &id).await, "REFUNDED");
    let txs = stack.payments(&token, &id).await;
    assert_eq!(txs[0]["refunded_amount"], txs[0]["amount"], "{txs:?}");
    seats_are(&stack, &showtime, &seats, "AVAILABLE").await;
    let late = replica
        .store
        .transition_claimed(&stalled, S::Confirmed, bson::doc! {})
        .await
        .expect("store");
    assert!(late.is_none(), "a fenced-out claimant confirmed {late:?}");
    assert_eq!(stack.booking_status(&token, &id).await, "REFUNDED");

    // The audit, the oracle: nothing lost. And it does see a loss: a CONFIRMED booking moved
    // to EXPIRED behind the service's back keeps its money and its seat.
    let report = common::audit_clean(&replica, "").await;
    assert_eq!(
        report.by_status.get("CONFIRMED"),
        Some(&1),
        "{:?}",
        report.lines()
    );
    assert!(
        (report.net() - report.confirmed_total).abs() < 0.005,
        "{:?}",
        report.lines()
    );
    let confirmed_id = stack
        .booking_db
        .collection::<bson::Document>("bookings")
        .find_one(bson::doc! { "status": "CONFIRMED" })
        .await
        .expect("find")
        .and_then(|d| d.get_str("_id").ok().map(str::to_owned))
        .expect("the confirmed booking");
    stack
        .booking_db
        .collection::<bson::Document>("bookings")
        .update_one(
            bson::doc! { "_id": &confirmed_id },
            bson::doc! { "$set": { "status": "EXPIRED" } },
        )
        .await
        .expect("corrupt");
    let report = booking_service::audit::run(&replica).await.expect("audit");
    let all = report.inconsistencies.join("\n");
    assert!(
        all.contains(&format!("booking {confirmed_id} EXPIRED: net charge")),
        "{all}"
    );
    assert!(all.contains("is still sold"), "{all}");
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_charge_whose_answer_was_lost_is_refunded_before_the_seats_go() {
    use booking_service::domain::BookingStatus as S;
    let stack = Stack::start(Options {
        notification: false,
        sweeper: false,
        ..Options::default()
    })
    .await;
    let replica = stack.replica().await;
    let (user_id, token) = stack.user().await;

    // processPayment's answer was lost (claim given back to PENDING_PAYMENT) but the charge
    // went through. Cancelling refunds it; expiring refunds it.
    for ending in ["cancel", "expire"] {
        let Booked {
            showtime,
            seats,
            id,
            ..
        } = stack.book(&user_id, &token, 1).await;
        let claimed = replica
            .store
            .claim_payment(&id, S::PendingPayment)
            .await
            .expect("claim")
            .expect("claimed");
        stack.charge(&id, &user_id, claimed.total_amount).await;
        replica
            .store
            .transition_claimed(&claimed, S::PendingPayment, bson::doc! {})
            .await
            .expect("store")
            .expect("claim given back");
        if ending == "cancel" {
            let (_, body) = stack.gql(Some(&token), CANCEL, json!({"b": id})).await;
            assert_eq!(
                body["data"]["cancelBooking"]["booking"]["status"], "CANCELLED",
                "{body}"
            );
        } else {
            stack.age(&id).await;
            let report = booking_service::sweeper::sweep_once(&replica).await;
            assert_eq!(report.expired, 1, "{report:?}");
            assert_eq!(stack.booking_status(&token, &id).await, "EXPIRED");
        }
        let txs = stack.payments(&token, &id).await;
        assert_eq!(txs.len(), 1);
        assert_eq!(
            txs[0]["refunded_amount"], txs[0]["amount"],
            "{ending}: the stray charge is refunded: {txs:?}"
        );
        seats_are(&stack, &showtime, &seats, "AVAILABLE").await;
    }
    let report = common::audit_clean(&replica, "").await;
    assert!(report.net().abs() < 0.005, "{:?}", report.lines());
    stack.stop().await;
}

/// Issue 12's race: a charge whose answer was lost is refunded by a cancel (or expiry) that
/// then loses the booking to a retried processPayment. The retry replays the first charge
/// under the same payment key and gets its SUCCESS back, already refunded: it must not
/// confirm the seats on it. It ends PAYMENT_FAILED; paying again charges anew, once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replayed_charge_that_was_refunded_confirms_nothing() {
    use booking_service::domain::BookingStatus as S;
    let stack = Stack::start(Options {
        notification: false,
        sweeper: false,
        ..Options::default()
    })
    .await;
    let replica = stack.replica().await;
    let (user_id, token) = stack.user().await;
    let Booked {
        showtime,
        seats,
        id,
        ..
    } = stack.book(&user_id, &token, 1).await;
    let claimed = replica
        .store
        .claim_payment(&id, S::PendingPayment)
        .await
        .expect("claim")
        .expect("claimed");
    let first = stack.charge(&id, &user_id, claimed.total_amount).await;
    replica
        .store
        .transition_claimed(&claimed, S::PendingPayment, bson::doc! {})
        .await
        .expect("store")
        .expect("claim given back");
    // The cancel's stray refund, done just before the retried payment claimed the booking.
    let r = stack
        .http
        .post(format!("{}/refunds", stack.payment_url))
        .bearer_auth(stack.service_token())
        .header("Idempotency-Key", format!("refund:{id}:test"))
        .json(&json!({"transaction_id": first["transaction_id"], "reason": "cancel race"}))
        .send()
        .await
        .expect("refund");
    assert!(r.status().is_success(), "refund: {}", r.status());

    let (_, body) = stack
        .gql(Some(&token), PAY, json!({"b": id, "m": "credit_card"}))
        .await;
    assert_eq!(code(&body), "PAYMENT_DECLINED", "{body}");
    assert!(
        body.to_string().contains("CHARGE_REFUNDED"),
        "the answer says why: {body}"
    );
    assert_eq!(stack.booking_status(&token, &id).await, "PAYMENT_FAILED");
    seats_are(&stack, &showtime, &seats, "LOCKED").await;

    let (_, body) = stack
        .gql(Some(&token), PAY, json!({"b": id, "m": "credit_card"}))
        .await;
    assert_eq!(
        body["data"]["processPayment"]["booking"]["status"], "CONFIRMED",
        "{body}"
    );
    seats_are(&stack, &showtime, &seats, "BOOKED").await;
    let txs = stack.payments(&token, &id).await;
    assert_eq!(txs.len(), 2, "{txs:?}");
    let kept: Vec<_> = txs
        .iter()
        .filter(|t| t["refunded_amount"].as_f64() == Some(0.0))
        .collect();
    assert_eq!(kept.len(), 1, "one charge kept: {txs:?}");
    assert_ne!(kept[0]["transaction_id"], first["transaction_id"]);
    let report = common::audit_clean(&replica, "").await;
    assert!(
        (report.net() - report.confirmed_total).abs() < 0.005,
        "{:?}",
        report.lines()
    );
    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cinema_or_payment_unreachable_at_each_step_loses_nothing() {
    let stack = Stack::start(Options {
        notification: false,
        sweeper: false,
        ..Options::default()
    })
    .await;
    // Nothing listens on port 1: a dependency that is down.
    const DEAD: &str = "http://127.0.0.1:1";
    let good = stack.replica().await;
    let no_payment = stack.replica_reaching(&stack.cinema_grpc, DEAD).await;
    let no_cinema = stack.replica_reaching(DEAD, &stack.payment_url).await;
    let (user_id, token) = stack.user().await;
    let caller = booking_service::service::Caller {
        claims: good.keys.verify(&token).expect("user token"),
        token: token.clone(),
    };
    let audit_clean = |when: &'static str| {
        let good = good.clone();
        async move {
            common::audit_clean(&good, when).await;
        }
    };

    // Payment service down while paying: a coded answer, the claim given back, nothing charged.
    let Booked {
        showtime,
        seats,
        id,
        ..
    } = stack.book(&user_id, &token, 1).await;
    let err = no_payment
        .process_payment(&caller, &id, "credit_card", None, None)
        .await
        .expect_err("payment unreachable");
    assert_eq!(err.code(), "SERVICE_UNAVAILABLE", "{err}");
    assert_eq!(stack.booking_status(&token, &id).await, "PENDING_PAYMENT");
    audit_clean("payment down").await;

    // Cinema down after the charge: refunded, REFUNDED, and the seats it could not return are
    // returned by the sweeper once the cinema answers.
    let err = no_cinema
        .process_payment(&caller, &id, "credit_card", None, None)
        .await
        .expect_err("cinema unreachable");
    assert_eq!(err.code(), "HOLD_EXPIRED", "{err}");
    assert_eq!(stack.booking_status(&token, &id).await, "REFUNDED");
    let txs = stack.payments(&token, &id).await;
    assert_eq!(txs[0]["refunded_amount"], txs[0]["amount"], "{txs:?}");
    audit_clean("cinema down after the charge").await;
    let report = booking_service::sweeper::sweep_once(&good).await;
    assert_eq!(report.repaired, 1, "{report:?}");
    seats_are(&stack, &showtime, &seats, "AVAILABLE").await;

    // Cinema down while cancelling a confirmed booking: refunded, still CONFIRMED with the
    // cancellation recorded; the sweeper finishes it (seats back, CANCELLED).
    let Booked {
        showtime,
        seats,
        id,
        ..
    } = stack.book(&user_id, &token, 1).await;
    let (_, body) = stack
        .gql(
            Some(&token),
            PAY,
            json!({"b": id, "m": "credit_card", "d": APPROVE}),
        )
        .await;
    assert_eq!(
        body["data"]["processPayment"]["booking"]["status"], "CONFIRMED",
        "{body}"
    );
    let err = no_cinema
        .cancel_booking(&caller, &id)
        .await
        .expect_err("cinema unreachable");
    assert_eq!(err.code(), "SERVICE_UNAVAILABLE", "{err}");
    assert_eq!(stack.booking_status(&token, &id).await, "CONFIRMED");
    audit_clean("cancellation under way").await;
    let past = bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 120_000);
    stack
        .booking_db
        .collection::<bson::Document>("bookings")
        .update_one(
            doc! { "_id": &id },
            doc! { "$set": { "cancel_requested_at": past } },
        )
        .await
        .expect("age the cancellation");
    let report = booking_service::sweeper::sweep_once(&good).await;
    assert_eq!(report.repaired, 1, "{report:?}");
    assert_eq!(stack.booking_status(&token, &id).await, "CANCELLED");
    seats_are(&stack, &showtime, &seats, "AVAILABLE").await;
    let txs = stack.payments(&token, &id).await;
    assert_eq!(txs[0]["refunded_amount"], txs[0]["amount"], "{txs:?}");
    audit_clean("after the sweeper").await;
    stack.stop().await;
}
