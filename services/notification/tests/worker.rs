//! The notification worker against real RabbitMQ, Redis and MongoDB (the test stack).

mod common;

use std::{collections::HashSet, sync::Arc, time::Duration};

use common::*;
use moviebook_common::auth::JwtKeys;
use notification_service::{routes::ListResponse, store::Status};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(30);

fn token(config: &notification_service::config::Config, sub: &str) -> String {
    JwtKeys::new(
        &config.jwt_secret,
        &config.jwt_issuer,
        Duration::from_secs(600),
    )
    .issue(sub, None, &[])
    .unwrap()
}

#[tokio::test]
async fn an_event_published_to_the_exchange_is_recorded_once() {
    let mut config = test_config("exchange");
    config.bindings = notification_service::config::DEFAULT_BINDINGS
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    let channel = RecordingChannel::new(Behaviour::default());
    let worker = start(&config, channel.clone()).await;
    wait_ready(&worker).await;
    let (store, idem) = stores(&config).await;
    let publisher = Publisher::connect().await;

    let user = format!("user-{}", uuid::Uuid::new_v4());
    let booking = format!("booking-{}", uuid::Uuid::new_v4());
    let confirmed = booking_event("booking.confirmed", &booking, &user);
    let id = event_id(&confirmed);
    publisher.publish_to_exchange(&confirmed).await;
    eventually(WAIT, "the booking notification is sent", || async {
        channel.sends_of(&id) == 1
    })
    .await;
    eventually(WAIT, "the event is marked done", || async {
        idem.state(&id).await.unwrap().as_deref() == Some("done")
    })
    .await;
    assert_eq!(store.count_for_event(&id).await.unwrap(), 1);
    let sent = channel
        .sent()
        .into_iter()
        .find(|o| o.event_id == id)
        .unwrap();
    assert_eq!(
        sent.recipient.as_deref(),
        Some(&*format!("{user}@example.com"))
    );
    assert!(sent.message.subject.contains("Dune: Part Two"));
    for needle in ["Grand Rex", "A1, A2", "25.00 USD", &booking, "19:30"] {
        assert!(
            sent.message.body.contains(needle),
            "{needle} in {}",
            sent.message.body
        );
    }

    // A payment event carries no e-mail or film: both come from what the booking event taught.
    let payment = payment_event(&booking, &user);
    let pid = event_id(&payment);
    publisher.publish_to_exchange(&payment).await;
    eventually(WAIT, "the payment notification is sent", || async {
        channel.sends_of(&pid) == 1
    })
    .await;
    // The record is set `sent` (then the event `done`) right after the send returns.
    eventually(WAIT, "the payment event is marked done", || async {
        idem.state(&pid).await.unwrap().as_deref() == Some("done")
    })
    .await;
    let paid = channel
        .sent()
        .into_iter()
        .find(|o| o.event_id == pid)
        .unwrap();
    assert_eq!(
        paid.recipient.as_deref(),
        Some(&*format!("{user}@example.com"))
    );
    assert!(
        paid.message.subject.contains("Dune: Part Two"),
        "{}",
        paid.message.subject
    );

    // The read API shows both to their owner, nothing to another user.
    let http = reqwest::Client::new();
    let url = worker.url(&format!("/api/v1/notifications?booking_id={booking}"));
    let mine: ListResponse = http
        .get(&url)
        .bearer_auth(token(&config, &user))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(mine.notifications.len(), 2);
    assert!(mine.notifications.iter().all(|n| n.status == Status::Sent));
    let types: HashSet<_> = mine
        .notifications
        .iter()
        .map(|n| n.event_type.as_str())
        .collect();
    assert_eq!(
        types,
        HashSet::from(["booking.confirmed", "payment.success"])
    );
    let theirs: ListResponse = http
        .get(&url)
        .bearer_auth(token(&config, "someone-else"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(theirs.notifications.is_empty());
    let forbidden = http
        .get(worker.url(&format!("/api/v1/notifications?user_id={user}")))
        .bearer_auth(token(&config, "someone-else"))
        .send()
        .await
        .unwrap();
    assert_eq!(forbidden.status(), 403);
    let anonymous = http.get(&url).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let body: Value = anonymous.json().await.unwrap();
    assert!(body["error"]["code"].is_string(), "{body}");

    let metrics = http
        .get(worker.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("notification_events_total"), "{metrics}");

    worker.stop().await;
    publisher.cleanup(&config.queue).await;
    drop_db(&store).await;
}

#[tokio::test]
async fn a_duplicate_publish_and_a_redelivery_after_a_nack_notify_once() {
    let config = test_config("dup");
    // The first send of every event fails: the worker nacks, the broker redelivers.
    let channel = RecordingChannel::new(Behaviour {
        fail_first: 1,
        ..Behaviour::default()
    });
    let worker = start(&config, channel.clone()).await;
    wait_ready(&worker).await;
    let (store, idem) = stores(&config).await;
    let publisher = Publisher::connect().await;

    let event = booking_event("booking.pending_payment", "b-dup", "u-dup");
    let id = event_id(&event);
    let body = serde_json::to_vec(&event).unwrap();
    publisher.publish_to_queue(&config.queue, &body).await;
    publisher.publish_to_queue(&config.queue, &body).await;
    eventually(WAIT, "the notification is sent", || async {
        channel.sends_of(&id) == 1
    })
    .await;
    eventually(WAIT, "the event is marked done", || async {
        idem.state(&id).await.unwrap().as_deref() == Some("done")
    })
    .await;
    // Give the second copy every chance to be (wrongly) sent again.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(channel.sends_of(&id), 1, "sent exactly once");
    assert_eq!(
        channel.failures_of(&id),
        1,
        "the first attempt failed and was redelivered"
    );
    assert_eq!(store.count_for_event(&id).await.unwrap(), 1);
    let records = store
        .list(mongodb::bson::doc! { "event_id": &id }, 10)
        .await
        .unwrap();
    assert_eq!(records[0].status, Status::Sent);
    assert_eq!(records[0].attempts, 1);
    assert_eq!(
        publisher
            .drain(&format!("{}.dlq", config.queue))
            .await
            .len(),
        0
    );

    // Second line of defence: Redis loses its data (a flush: the event's key and the epoch
    // go); the MongoDB record still stops a resend.
    idem.forget(&id).await.unwrap();
    idem.forget_epoch().await.unwrap();
    publisher.publish_to_queue(&config.queue, &body).await;
    eventually(WAIT, "the replayed event is marked done again", || async {
        idem.state(&id).await.unwrap().as_deref() == Some("done")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(
        channel.sends_of(&id),
        1,
        "not resent after Redis lost the marker"
    );

    worker.stop().await;
    publisher.cleanup(&config.queue).await;
    drop_db(&store).await;
}

/// The run id of the test Redis (`INFO server`).
async fn redis_run_id() -> String {
    let mut conn = redis_admin().await;
    let info: String = redis::cmd("INFO")
        .arg("server")
        .query_async(&mut conn)
        .await
        .unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("run_id:"))
        .unwrap()
        .trim()
        .to_owned()
}

/// A connection to the test Redis as its default user (every right), for what the worker's
/// restricted calls cannot do: planting keys, reading `INFO`.
async fn redis_admin() -> redis::aio::MultiplexedConnection {
    redis::Client::open(std::env::var("REDIS_URL").unwrap())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn set_epoch(config: &notification_service::config::Config, run: &str, since_ms: i64) {
    let _: () = redis::cmd("SET")
        .arg(format!("{}:epoch", config.redis_prefix))
        .arg(format!("{run}:{since_ms}"))
        .query_async(&mut redis_admin().await)
        .await
        .unwrap();
}

/// A booking event that occurred `ago` before now, with a `sent` record already in MongoDB:
/// the worker sends it only if it skips the MongoDB read.
async fn recorded_event(
    store: &notification_service::store::Store,
    ago: chrono::Duration,
) -> Value {
    let mut event = booking_event("booking.confirmed", "b-vouch", "u-vouch");
    event["occurred_at"] = Value::String((chrono::Utc::now() - ago).to_rfc3339());
    store
        .record_sent(&notification_service::store::NotificationRecord {
            event_id: event_id(&event),
            event_type: "booking.confirmed".into(),
            user_id: "u-vouch".into(),
            recipient: None,
            channel: "test".into(),
            subject: "s".into(),
            body: "b".into(),
            booking_id: "b-vouch".into(),
            created_at: mongodb::bson::DateTime::now(),
            status: Status::Sent,
            attempts: 0,
            last_error: None,
            sent_at: None,
        })
        .await
        .unwrap();
    event
}

/// The MongoDB read before a send is skipped exactly when the Redis claim proves a first
/// attempt. A `sent` record that Redis has no key for stands for the one thing that proof
/// rules out (Redis losing a key without the worker noticing), so a send despite it shows
/// that the read was skipped, and no send shows it was made.
#[tokio::test]
async fn the_mongodb_read_is_skipped_only_when_redis_vouches_for_a_first_attempt() {
    let config = test_config("vouch");
    let channel = RecordingChannel::new(Behaviour::default());
    let worker = start(&config, channel.clone()).await;
    wait_ready(&worker).await;
    let (store, idem) = stores(&config).await;
    let publisher = Publisher::connect().await;
    let run = redis_run_id().await;
    let now = chrono::Utc::now().timestamp_millis();
    let secs = chrono::Duration::seconds;

    let deliver = |event: Value| {
        let (publisher, idem, queue) = (&publisher, &idem, config.queue.clone());
        async move {
            let id = event_id(&event);
            publisher
                .publish_to_queue(&queue, &serde_json::to_vec(&event).unwrap())
                .await;
            eventually(WAIT, "the event is marked done", || async {
                idem.state(&id).await.unwrap().as_deref() == Some("done")
            })
            .await;
            id
        }
    };

    // The same server run for five minutes, no key, a recent event: no read, so it is sent.
    set_epoch(&config, &run, now - 300_000).await;
    let fast = deliver(recorded_event(&store, secs(10)).await).await;
    assert_eq!(
        channel.sends_of(&fast),
        1,
        "a vouched first attempt skips the read"
    );

    // A worker sent and recorded, then crashed before marking `done`: its claim's deadline
    // passed. Taking that claim over reads the record, however recent the event.
    let crashed = recorded_event(&store, secs(10)).await;
    let _: () = redis::cmd("SET")
        .arg(format!(
            "{}:event:{}",
            config.redis_prefix,
            event_id(&crashed)
        ))
        .arg(format!("processing:crashed:{}", now - 1))
        .arg("PX")
        .arg(600_000)
        .query_async(&mut redis_admin().await)
        .await
        .unwrap();
    let crashed = deliver(crashed).await;
    assert_eq!(
        channel.sends_of(&crashed),
        0,
        "a claim taken over is read first"
    );

    // The event occurred within the clock skew after the epoch began: read, not resent.
    let at_start = deliver(recorded_event(&store, secs(298)).await).await;
    assert_eq!(
        channel.sends_of(&at_start),
        0,
        "too close to the epoch's start"
    );

    // Older than the done TTL less the skew (the epoch older still): an earlier key may have
    // expired, so it is read.
    set_epoch(&config, &run, now - 3_600_000).await;
    let age = i64::try_from(config.done_ttl.as_secs()).unwrap() - 2;
    let old = deliver(recorded_event(&store, secs(age)).await).await;
    assert_eq!(channel.sends_of(&old), 0, "an event that old is read first");

    // A restart (the epoch names another run, as after reloading a persisted data set): a new
    // epoch starts now, so a recent event is read first.
    set_epoch(&config, "0123abcd", now - 300_000).await;
    let restarted = deliver(recorded_event(&store, secs(10)).await).await;
    assert_eq!(channel.sends_of(&restarted), 0, "read after a restart");
    let epoch: String = redis::cmd("GET")
        .arg(format!("{}:epoch", config.redis_prefix))
        .query_async(&mut redis_admin().await)
        .await
        .unwrap();
    let (epoch_run, since) = epoch.split_once(':').unwrap();
    assert_eq!(epoch_run, run);
    assert!(since.parse::<i64>().unwrap() >= now, "a new epoch: {epoch}");

    // A flush (the epoch is gone): likewise.
    set_epoch(&config, &run, now - 300_000).await;
    idem.forget_epoch().await.unwrap();
    let flushed = deliver(recorded_event(&store, secs(10)).await).await;
    assert_eq!(channel.sends_of(&flushed), 0, "read after a flush");

    worker.stop().await;
    publisher.cleanup(&config.queue).await;
    drop_db(&store).await;
    let _: i64 = redis::cmd("DEL")
        .arg(format!("{}:epoch", config.redis_prefix))
        .query_async(&mut redis_admin().await)
        .await
        .unwrap();
}

#[tokio::test]
async fn a_worker_restarted_mid_stream_sends_nothing_twice_and_loses_nothing() {
    const EVENTS: usize = 300;
    let mut config = test_config("restart");
    config.concurrency = 8;
    config.prefetch = 16;
    // Sends take a while, so the first worker is stopped with deliveries in flight and more
    // prefetched; both workers share one channel so double sends across them are visible.
    let channel = RecordingChannel::new(Behaviour {
        delay: Duration::from_millis(15),
        ..Behaviour::default()
    });
    let publisher = Arc::new(Publisher::connect().await);
    publisher.declare_queue(&config).await;
    let (store, _idem) = stores(&config).await;

    let events: Vec<Value> = (0..EVENTS)
        .map(|i| {
            booking_event(
                "booking.confirmed",
                &format!("b-{i}"),
                &format!("u-{}", i % 7),
            )
        })
        .collect();
    let ids: Vec<String> = events.iter().map(event_id).collect();

    // At-least-once upstream: every fifth event arrives twice.
    let publish = |batch: Vec<Value>| {
        let publisher = publisher.clone();
        let queue = config.queue.clone();
        tokio::spawn(async move {
            for (i, e) in batch.iter().enumerate() {
                let body = serde_json::to_vec(e).unwrap();
                publisher.publish_to_queue(&queue, &body).await;
                if i % 5 == 0 {
                    publisher.publish_to_queue(&queue, &body).await;
                }
                tokio::time::sleep(Duration::from_millis(3)).await;
            }
        })
    };
    // The first half streams in while the first worker runs; it is stopped mid-stream, with
    // deliveries in flight. The second half is published only once it has stopped, so the
    // hand-over is observed by construction, however fast or slow the machine is.
    let (first_half, second_half) = events.split_at(EVENTS / 2);
    // (Other tests publish to the shared exchange, which this queue is bound to too; count only
    // this test's events.)
    let ours: HashSet<&String> = ids.iter().collect();
    let ours_sent = || {
        channel
            .sent()
            .into_iter()
            .filter(|o| ours.contains(&o.event_id))
            .count()
    };

    let first = start(&config, channel.clone()).await;
    wait_ready(&first).await;
    let stream = publish(first_half.to_vec());
    eventually(WAIT, "the first worker has sent some", || async {
        ours_sent() >= 60
    })
    .await;
    first.stop().await;
    let after_first = ours_sent();
    assert!(
        after_first <= first_half.len(),
        "the first worker sent only what was published to it ({after_first} sends)"
    );

    let second = start(&config, channel.clone()).await;
    wait_ready(&second).await;
    stream.await.unwrap();
    publish(second_half.to_vec()).await.unwrap();
    eventually(Duration::from_secs(60), "every event is sent", || async {
        let sent: HashSet<String> = channel.sent().into_iter().map(|o| o.event_id).collect();
        ids.iter().all(|id| sent.contains(id))
    })
    .await;
    // Let any stray duplicate through before counting.
    tokio::time::sleep(Duration::from_secs(1)).await;
    for id in &ids {
        assert_eq!(channel.sends_of(id), 1, "event {id} sent once");
    }
    assert_eq!(ours_sent(), EVENTS, "nothing was sent twice");
    eventually(WAIT, "every event is recorded once as sent", || async {
        let filter = mongodb::bson::doc! { "status": "sent", "event_id": { "$in": &ids } };
        store.list(filter, 1000).await.unwrap().len() == EVENTS
    })
    .await;
    assert!(ours_sent() > after_first, "the second worker took over");

    second.stop().await;
    publisher.cleanup(&config.queue).await;
    drop_db(&store).await;
}

#[tokio::test]
async fn poison_messages_go_to_the_dead_letter_queue() {
    let config = test_config("poison");
    let channel = RecordingChannel::new(Behaviour::default());
    let worker = start(&config, channel.clone()).await;
    wait_ready(&worker).await;
    let (store, _idem) = stores(&config).await;
    let publisher = Publisher::connect().await;

    let mut unknown_event = booking_event("booking.confirmed", "b-p", "u-p");
    unknown_event["event_type"] = "booking.teleported".into();
    let unknown = serde_json::to_vec(&unknown_event).unwrap();
    let mut missing_event = booking_event("booking.confirmed", "b-p", "u-p");
    missing_event["data"]
        .as_object_mut()
        .unwrap()
        .remove("booking_id");
    let missing = serde_json::to_vec(&missing_event).unwrap();
    let garbage = b"{not json at all".to_vec();
    let good = booking_event("booking.cancelled", "b-ok", "u-ok");
    for body in [&garbage, &unknown, &missing] {
        publisher.publish_to_queue(&config.queue, body).await;
    }
    publisher
        .publish_to_queue(&config.queue, &serde_json::to_vec(&good).unwrap())
        .await;

    let dlq = format!("{}.dlq", config.queue);
    let mut dead: Vec<Vec<u8>> = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while dead.len() < 3 && tokio::time::Instant::now() < deadline {
        dead.extend(publisher.drain(&dlq).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let expected: HashSet<Vec<u8>> = HashSet::from([garbage, unknown, missing]);
    assert_eq!(dead.iter().cloned().collect::<HashSet<_>>(), expected);
    eventually(WAIT, "the good event is still sent", || async {
        channel.sends_of(&event_id(&good)) == 1
    })
    .await;
    for poison in [&unknown_event, &missing_event] {
        assert_eq!(
            channel.sends_of(&event_id(poison)),
            0,
            "no poison message was sent"
        );
        assert_eq!(store.count_for_event(&event_id(poison)).await.unwrap(), 0);
    }

    worker.stop().await;
    publisher.cleanup(&config.queue).await;
    drop_db(&store).await;
}

#[tokio::test]
async fn a_send_that_keeps_failing_is_retried_then_dead_lettered() {
    let config = test_config("exhaust");
    let channel = RecordingChannel::new(Behaviour {
        always_fail: true,
        ..Behaviour::default()
    });
    let worker = start(&config, channel.clone()).await;
    wait_ready(&worker).await;
    let (store, idem) = stores(&config).await;
    let publisher = Publisher::connect().await;

    let event = booking_event("booking.expired", "b-x", "u-x");
    let id = event_id(&event);
    let body = serde_json::to_vec(&event).unwrap();
    publisher.publish_to_queue(&config.queue, &body).await;
    let dlq = format!("{}.dlq", config.queue);
    let mut dead = Vec::new();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !dead.contains(&body) && tokio::time::Instant::now() < deadline {
        dead.extend(publisher.drain(&dlq).await);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        dead,
        vec![body],
        "the event, and only it, is in the dead-letter queue"
    );
    assert_eq!(
        channel.failures_of(&id),
        config.max_attempts,
        "bounded attempts"
    );
    let records = store
        .list(mongodb::bson::doc! { "event_id": &id }, 10)
        .await
        .unwrap();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].status, Status::Failed);
    assert_eq!(records[0].attempts, config.max_attempts);
    // The claim was released (its deadline set to 0), so a replay from the dead-letter queue
    // may try again, and reads the record first.
    let state = idem.state(&id).await.unwrap().unwrap_or_default();
    assert!(
        state.starts_with("processing:") && state.ends_with(":0"),
        "{state}"
    );

    worker.stop().await;
    publisher.cleanup(&config.queue).await;
    drop_db(&store).await;
}

#[tokio::test]
async fn ready_fails_when_redis_is_unreachable() {
    let mut config = test_config("noredis");
    // Nothing listens on port 1.
    config.redis_url = "redis://127.0.0.1:1".into();
    let worker = start(&config, RecordingChannel::new(Behaviour::default())).await;
    let http = reqwest::Client::new();
    eventually(WAIT, "the HTTP server answers", || async {
        http.get(worker.url("/health")).send().await.is_ok()
    })
    .await;
    // The broker and MongoDB are fine; the worker connects to RabbitMQ meanwhile.
    eventually(WAIT, "the broker check passes", || async {
        let r = http.get(worker.url("/ready")).send().await.unwrap();
        let body: Value = r.json().await.unwrap();
        body["checks"]["rabbitmq"] == "ok"
    })
    .await;
    let r = http.get(worker.url("/ready")).send().await.unwrap();
    assert_eq!(r.status(), 503);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["status"], "not_ready");
    assert_ne!(body["checks"]["redis"], "ok", "{body}");
    assert_eq!(body["checks"]["mongodb"], "ok", "{body}");
    assert_eq!(
        http.get(worker.url("/health"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let (store, _) = stores(&config).await;
    worker.stop().await;
    let publisher = Publisher::connect().await;
    publisher.cleanup(&config.queue).await;
    drop_db(&store).await;
}

#[tokio::test]
async fn the_worker_reconnects_after_a_broker_outage_and_loses_nothing() {
    let mut config = test_config("outage");
    let proxy = FlakyProxy::start(amqp_target(&config.rabbitmq_url)).await;
    config.rabbitmq_url = proxy.amqp_url(&config.rabbitmq_url);
    let channel = RecordingChannel::new(Behaviour::default());
    let worker = start(&config, channel.clone()).await;
    wait_ready(&worker).await;
    let (store, _idem) = stores(&config).await;
    let publisher = Publisher::connect().await;
    let http = reqwest::Client::new();

    let before = booking_event("booking.confirmed", "b-o1", "u-o");
    publisher
        .publish_to_queue(&config.queue, &serde_json::to_vec(&before).unwrap())
        .await;
    eventually(WAIT, "the first event is sent", || async {
        channel.sends_of(&event_id(&before)) == 1
    })
    .await;

    // The broker "goes away" for the worker.
    proxy.set_up(false);
    eventually(WAIT, "readiness reports the broker down", || async {
        let r = http.get(worker.url("/ready")).send().await.unwrap();
        r.status() == 503 && r.json::<Value>().await.unwrap()["checks"]["rabbitmq"] != "ok"
    })
    .await;
    let during: Vec<Value> = (0..20)
        .map(|i| booking_event("booking.confirmed", &format!("b-o{i}"), "u-o"))
        .collect();
    for e in &during {
        publisher
            .publish_to_queue(&config.queue, &serde_json::to_vec(e).unwrap())
            .await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(during.iter().all(|e| channel.sends_of(&event_id(e)) == 0));

    // Back: the worker reconnects by itself and delivers what queued up, once each.
    proxy.set_up(true);
    wait_ready(&worker).await;
    eventually(
        WAIT,
        "the events published during the outage are sent",
        || async { during.iter().all(|e| channel.sends_of(&event_id(e)) == 1) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(channel.sends_of(&event_id(&before)), 1);
    assert!(during.iter().all(|e| channel.sends_of(&event_id(e)) == 1));

    worker.stop().await;
    publisher.cleanup(&config.queue).await;
    drop_db(&store).await;
}

#[tokio::test]
async fn a_claim_abandoned_by_a_crashed_worker_expires_and_the_event_is_then_sent_once() {
    let config = test_config("crash");
    let (store, _idem) = stores(&config).await;
    store.ensure_indexes().await.unwrap();
    let event = booking_event("booking.refunded", "b-c", "u-c");
    let id = event_id(&event);
    // What a worker leaves behind that failed an attempt and then crashed while retrying: a
    // `pending` record and its in-progress claim (which expires).
    let record = notification_service::store::NotificationRecord {
        event_id: id.clone(),
        event_type: "booking.refunded".into(),
        user_id: "u-c".into(),
        recipient: None,
        channel: "test".into(),
        subject: "s".into(),
        body: "b".into(),
        booking_id: "b-c".into(),
        created_at: mongodb::bson::DateTime::now(),
        status: Status::Pending,
        attempts: 0,
        last_error: None,
        sent_at: None,
    };
    store
        .database()
        .collection::<notification_service::store::NotificationRecord>(
            notification_service::store::COLLECTION,
        )
        .insert_one(&record)
        .await
        .unwrap();
    let mut conn = redis_admin().await;
    let key = format!("{}:event:{id}", config.redis_prefix);
    // The claim of a worker that crashed: live for 2 more seconds, kept like every claim.
    let deadline = chrono::Utc::now().timestamp_millis() + 2000;
    let _: () = redis::cmd("SET")
        .arg(&key)
        .arg(format!("processing:crashed-worker:{deadline}"))
        .arg("PX")
        .arg(600_000)
        .query_async(&mut conn)
        .await
        .unwrap();

    let channel = RecordingChannel::new(Behaviour::default());
    let worker = start(&config, channel.clone()).await;
    wait_ready(&worker).await;
    let publisher = Publisher::connect().await;
    publisher
        .publish_to_queue(&config.queue, &serde_json::to_vec(&event).unwrap())
        .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    assert_eq!(
        channel.sends_of(&id),
        0,
        "not sent while another worker's claim is live"
    );
    eventually(WAIT, "sent once the abandoned claim expired", || async {
        channel.sends_of(&id) == 1
    })
    .await;
    eventually(WAIT, "recorded as sent", || async {
        let r = store
            .list(mongodb::bson::doc! { "event_id": &id }, 10)
            .await
            .unwrap();
        r.len() == 1 && r[0].status == Status::Sent
    })
    .await;
    let sent = channel
        .sent()
        .into_iter()
        .find(|o| o.event_id == id)
        .unwrap();
    assert_eq!(
        sent.recipient.as_deref(),
        Some("u-c@example.com"),
        "record refreshed"
    );

    worker.stop().await;
    publisher.cleanup(&config.queue).await;
    drop_db(&store).await;
}
