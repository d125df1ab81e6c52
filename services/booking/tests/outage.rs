//! RabbitMQ stopped during a burst of bookings loses no event: the bookings succeed (the events
//! wait in the outbox, written with the booking in one write) and every booking.pending_payment is
//! delivered once the broker is back. Payments go on during the outage too: the payment
//! service stays ready (its readiness does not depend on the broker) and its payment.success
//! arrives after the outage.

mod common;

use std::{collections::HashSet, process::Command, time::Duration};

use common::{CREATE, Options, PAY, Stack};
use lapin::options::{BasicGetOptions, QueueDeleteOptions};
use serde_json::json;

/// Runs `$MOVIEBOOK_STACK_SCRIPT <action>` (e.g. "scripts/stack.sh test" + " rabbit-stop").
fn stack_script(action: &str) {
    let script = common::env("MOVIEBOOK_STACK_SCRIPT");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!("{script} {action}"))
        .status()
        .unwrap_or_else(|e| panic!("cannot run {script} {action}: {e}"));
    assert!(status.success(), "{script} {action} failed: {status}");
}

/// Whether the broker accepts an AMQP connection right now.
async fn broker_reachable(url: &str) -> bool {
    match moviebook_common::amqp::connect(url, "booking-outage-probe").await {
        Ok(conn) => {
            let _ = conn.close(200, "probe".into()).await;
            true
        }
        Err(_) => false,
    }
}

/// Waits until the broker is observed `up` (or down), failing after a minute: the test's
/// phases start from observed states, never from how long a stop or start command took.
async fn wait_broker(url: &str, up: bool) {
    let end = tokio::time::Instant::now() + Duration::from_secs(60);
    while broker_reachable(url).await != up {
        assert!(
            tokio::time::Instant::now() < end,
            "the broker was not observed {} within 60 s",
            if up { "up" } else { "down" }
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Restarts the broker when dropped, also when the test fails half-way.
struct BrokerBack;

impl Drop for BrokerBack {
    fn drop(&mut self) {
        stack_script("rabbit-start");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn broker_outage_during_a_burst_loses_no_event() {
    let rabbit = common::env("RABBITMQ_URL");
    common::env("MOVIEBOOK_STACK_SCRIPT");
    let stack = Stack::start(Options {
        notification: false,
        ..Options::default()
    })
    .await;
    let (user_id, token) = stack.user().await;
    let showtime = stack.first_showtime().await;
    let seats = stack.free_seats(&showtime, 12).await;

    // Our own durable queue, declared before the outage, sees every booking event.
    let queue = format!("booking.test.outage_{}", stack.run_id);
    let conn = moviebook_common::amqp::connect(&rabbit, "booking-outage-test")
        .await
        .expect("amqp");
    let ch = conn.create_channel().await.expect("channel");
    moviebook_common::amqp::declare_consumer_queue(
        &ch,
        moviebook_common::amqp::Topology::Declare,
        &queue,
        &["booking.#", "payment.#"],
    )
    .await
    .expect("queue");
    let _ = conn.close(200, "bye".into()).await;

    stack_script("rabbit-stop");
    let guard = BrokerBack;
    wait_broker(&rabbit, false).await;
    let mut burst = Vec::new();
    for seat in &seats {
        let (stack, token, user_id, showtime) =
            (&stack, token.clone(), user_id.clone(), showtime.clone());
        let seat = seat.clone();
        burst.push(async move {
            stack
                .gql(
                    Some(&token),
                    CREATE,
                    json!({"u": user_id, "s": showtime, "seats": [seat]}),
                )
                .await
                .1
        });
    }
    let results = futures::future::join_all(burst).await;
    let created: HashSet<String> = results
        .iter()
        .map(|b| {
            b["data"]["createBooking"]["booking"]["id"]
                .as_str()
                .unwrap_or_else(|| panic!("bookings succeed while the broker is down: {b}"))
                .to_owned()
        })
        .collect();
    assert_eq!(created.len(), seats.len());
    let waiting = common::unpublished(&stack.booking_db).await;
    assert!(
        waiting >= seats.len() as u64,
        "events wait in the outbox: {waiting}"
    );

    // The payment service stays ready and one of the bookings is paid and confirmed.
    let ready = stack
        .http
        .get(format!("{}/ready", stack.payment_url))
        .send()
        .await
        .expect("payment /ready");
    assert_eq!(
        ready.status().as_u16(),
        200,
        "payment is ready with the broker down: {:?}",
        ready.text().await
    );
    let paid_id = created.iter().next().expect("a booking").clone();
    let (_, body) = stack
        .gql(
            Some(&token),
            PAY,
            json!({"b": paid_id, "m": "credit_card", "d": r#"{"card_number":"4111111111111111"}"#}),
        )
        .await;
    assert_eq!(
        body["data"]["processPayment"]["booking"]["status"], "CONFIRMED",
        "payments go on while the broker is down: {body}"
    );
    assert!(
        !broker_reachable(&rabbit).await,
        "the broker stayed down during the payment"
    );
    drop(guard); // rabbit-start
    wait_broker(&rabbit, true).await;

    let mut seen = HashSet::new();
    let mut payment_seen = false;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while (seen.len() < created.len() || !payment_seen) && tokio::time::Instant::now() < deadline {
        let Ok(conn) = moviebook_common::amqp::connect(&rabbit, "booking-outage-test").await else {
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        };
        let ch = conn.create_channel().await.expect("channel");
        loop {
            match ch
                .basic_get(queue.clone().into(), BasicGetOptions { no_ack: true })
                .await
            {
                Ok(Some(msg)) => {
                    let v: serde_json::Value =
                        serde_json::from_slice(&msg.delivery.data).unwrap_or_default();
                    if v["event_type"] == "booking.pending_payment"
                        && let Some(id) = v["data"]["booking_id"].as_str()
                        && created.contains(id)
                    {
                        seen.insert(id.to_owned());
                    }
                    if v["event_type"] == "payment.success"
                        && v["data"]["booking_id"] == paid_id.as_str()
                    {
                        payment_seen = true;
                    }
                }
                Ok(None) => break,
                Err(_) => break,
            }
        }
        if seen.len() < created.len() || !payment_seen {
            tokio::time::sleep(Duration::from_millis(500)).await;
        } else {
            let _ = ch
                .queue_delete(queue.clone().into(), QueueDeleteOptions::default())
                .await;
            let _ = ch
                .queue_delete(format!("{queue}.dlq").into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = conn.close(200, "bye".into()).await;
    }
    assert_eq!(seen, created, "every event arrived after the outage");
    assert!(
        payment_seen,
        "the payment made during the outage published payment.success"
    );
    stack.stop().await;
}
