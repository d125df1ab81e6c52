//! The outbox relay against the real MongoDB-compatible server and RabbitMQ.
//!
//! Needs MONGODB_URL, RABBITMQ_URL and MOVIEBOOK_STACK_SCRIPT (set by `make test`).

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use futures::StreamExt;
use lapin::{
    Channel,
    options::{BasicAckOptions, BasicConsumeOptions, QueueDeleteOptions},
    types::FieldTable,
};
use mongodb::Database;
use moviebook_common::{
    amqp,
    events::{EventEnvelope, EventType},
    mongo,
    outbox::{Outbox, RelayConfig},
    shutdown,
};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests through `make test`, which starts the test servers"
        )
    })
}

/// The outage test stops the broker for everyone: tests in this binary that use the broker take
/// the read side, the outage test the write side. (Cargo runs test binaries one at a time.)
static BROKER: tokio::sync::RwLock<()> = tokio::sync::RwLock::const_new(());

fn relay_config() -> RelayConfig {
    RelayConfig {
        batch_size: 25,
        lease: Duration::from_secs(10),
        idle_poll: Duration::from_millis(50),
        gather: Duration::from_millis(5),
        min_backoff: Duration::from_millis(50),
        max_backoff: Duration::from_millis(500),
        ..RelayConfig::default()
    }
}

async fn database(tag: &str) -> Database {
    let name = format!("moviebook_test_{tag}_{}", uuid::Uuid::new_v4().simple());
    let db = mongo::connect(&env("MONGODB_URL"), "outbox-test", &name)
        .await
        .unwrap();
    // `connect` honours a database in the URL; force ours so runs never share state.
    let db = db.client().database(&name);
    Outbox::new(&db).ensure_indexes().await.unwrap();
    db
}

/// Writes `n` events, `per_tx` to a MongoDB transaction, each with a business document beside
/// it (the state change), returning their ids.
async fn write_events(
    db: &Database,
    outbox: &Outbox,
    n: usize,
    per_tx: usize,
    data_tag: &str,
) -> Vec<String> {
    let client = db.client();
    let orders = db.collection::<mongodb::bson::Document>("orders");
    let mut ids = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(per_tx) {
        let mut session = client.start_session().await.unwrap();
        session.start_transaction().await.unwrap();
        for i in chunk {
            let e = EventEnvelope::new(
                EventType::BookingExpired,
                "outbox-test",
                serde_json::json!({ "n": i, "tag": data_tag }),
            );
            orders
                .insert_one(mongodb::bson::doc! { "_id": e.event_id.to_string(), "n": *i as i64 })
                .session(&mut session)
                .await
                .unwrap();
            outbox.enqueue(&mut session, &e).await.unwrap();
            ids.push(e.event_id.to_string());
        }
        session.commit_transaction().await.unwrap();
        outbox.wake();
    }
    ids
}

async fn queue(tag: &str) -> (lapin::Connection, Channel, String) {
    let conn = amqp::connect(&env("RABBITMQ_URL"), "outbox-test")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let name = format!("test.outbox.{tag}.{}", uuid::Uuid::new_v4().simple());
    amqp::declare_consumer_queue(
        &ch,
        moviebook_common::amqp::Topology::Declare,
        &name,
        &["booking.expired"],
    )
    .await
    .unwrap();
    (conn, ch, name)
}

/// Consumes `queue` until every id in `expected` arrived and then `quiet` passes with nothing
/// new, or `deadline` passes. Returns how many times each of our ids arrived.
async fn drain(
    queue: &str,
    expected: &HashSet<String>,
    quiet: Duration,
    deadline: Duration,
) -> HashMap<String, usize> {
    let conn = amqp::connect(&env("RABBITMQ_URL"), "outbox-test-consumer")
        .await
        .unwrap();
    let ch = conn.create_channel().await.unwrap();
    let mut consumer = ch
        .basic_consume(
            queue.into(),
            "".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .unwrap();
    let mut seen: HashMap<String, usize> = HashMap::new();
    let end = tokio::time::Instant::now() + deadline;
    loop {
        let all = expected.iter().all(|id| seen.contains_key(id));
        let wait = if all {
            quiet
        } else {
            end.saturating_duration_since(tokio::time::Instant::now())
        };
        match tokio::time::timeout(wait, consumer.next()).await {
            Ok(Some(Ok(delivery))) => {
                let envelope: EventEnvelope =
                    serde_json::from_slice(&delivery.data).expect("envelope JSON");
                assert_eq!(envelope.event_type, "booking.expired");
                assert_eq!(envelope.source, "outbox-test");
                // Other tests of this binary publish to the same exchange meanwhile.
                let id = envelope.event_id.to_string();
                if expected.contains(&id) {
                    *seen.entry(id).or_default() += 1;
                }
                delivery.ack(BasicAckOptions::default()).await.unwrap();
            }
            Ok(Some(Err(e))) => panic!("consumer error: {e}"),
            Ok(None) | Err(_) => break,
        }
        if tokio::time::Instant::now() >= end {
            break;
        }
    }
    let _ = ch
        .queue_delete(queue.into(), QueueDeleteOptions::default())
        .await;
    seen
}

async fn wait_until_published(outbox: &Outbox, timeout: Duration) {
    let end = tokio::time::Instant::now() + timeout;
    loop {
        let pending = outbox.pending_count().await.unwrap();
        if pending == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "{pending} events still pending after {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn stack(cmd: &str) {
    let script = env("MOVIEBOOK_STACK_SCRIPT");
    let mut parts = script.split_whitespace();
    let program = parts.next().expect("MOVIEBOOK_STACK_SCRIPT is empty");
    let status = std::process::Command::new(program)
        .args(parts)
        .arg(cmd)
        .status()
        .expect("run the stack script");
    assert!(status.success(), "stack script {cmd} failed");
}

/// Restarts the broker application even if an assertion fails in between.
struct BrokerGuard;
impl Drop for BrokerGuard {
    fn drop(&mut self) {
        stack("rabbit-start");
    }
}

/// Waits until `cond` holds, failing with `what` after `timeout`. Conditions are observed
/// states (the relay's own connection flag), never the time an external command took.
async fn wait_for(what: &str, timeout: Duration, cond: impl Fn() -> bool) {
    let end = tokio::time::Instant::now() + timeout;
    while !cond() {
        assert!(
            tokio::time::Instant::now() < end,
            "{what}: not observed within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Three phases, each entered only once its precondition is observed: broker up (events are
/// published), broker down *as the relay reports it* (every event written now must wait in the
/// outbox), broker back *as the relay reports it* (everything is delivered, nothing confirmed
/// before the outage is published again).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn relay_delivers_every_event_across_a_broker_outage() {
    let _exclusive = BROKER.write().await;
    let db = database("outbox_outage").await;
    let outbox = Outbox::new(&db);
    let (_conn, _ch, queue_name) = queue("outage").await;

    let (stop_tx, stop_rx) = shutdown::channel();
    let relay = outbox.relay(&env("RABBITMQ_URL"), "outbox-test", relay_config());
    let connected = relay.connected_flag();
    let task = tokio::spawn(relay.run(stop_rx));
    let is_up = {
        let c = connected.clone();
        move || c.load(Ordering::Relaxed)
    };

    // Phase 1, broker up: every event is confirmed and marked published.
    let tag = uuid::Uuid::new_v4().to_string();
    let before = write_events(&db, &outbox, 60, 6, &tag).await;
    wait_until_published(&outbox, Duration::from_secs(30)).await;
    assert!(is_up(), "the relay is connected while the broker is up");

    // Phase 2, broker going down: a writer streams events across the moment the broker stops,
    // so some are in flight when it dies (those only have to arrive in the end). Once the relay
    // itself reports the broker down, every event written from then on must wait in the outbox.
    let guard = BrokerGuard;
    let stop_writer = Arc::new(AtomicBool::new(false));
    let batches = Arc::new(AtomicUsize::new(0));
    let writer = {
        let (db, outbox, tag) = (db.clone(), outbox.clone(), tag.clone());
        let (stop, batches) = (stop_writer.clone(), batches.clone());
        tokio::spawn(async move {
            let mut ids = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                ids.extend(write_events(&db, &outbox, 5, 5, &tag).await);
                batches.fetch_add(1, Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            ids
        })
    };
    // At least one batch goes out before the stop, so the stream really spans it.
    wait_for("the writer started", Duration::from_secs(30), || {
        batches.load(Ordering::Relaxed) > 0
    })
    .await;
    stack("rabbit-stop");
    let is_down = {
        let up = is_up.clone();
        move || !up()
    };
    wait_for(
        "the relay reports the broker down",
        Duration::from_secs(60),
        is_down,
    )
    .await;
    stop_writer.store(true, Ordering::Relaxed);
    let around = writer.await.unwrap();
    let mut during = Vec::new();
    for _ in 0..8 {
        during.extend(write_events(&db, &outbox, 10, 5, &tag).await);
    }
    let waiting = db
        .collection::<mongodb::bson::Document>(moviebook_common::outbox::COLLECTION)
        .count_documents(mongodb::bson::doc! { "_id": { "$in": &during }, "published_at": null })
        .await
        .unwrap();
    assert_eq!(
        waiting,
        during.len() as u64,
        "with the broker down every event written waits in the outbox"
    );

    // Phase 3, broker back: the relay reconnects by itself and drains the backlog, and what
    // is written afterwards flows as before.
    drop(guard); // rabbit-start
    wait_for(
        "the relay reconnects once the broker is back",
        Duration::from_secs(60),
        is_up,
    )
    .await;
    let after = write_events(&db, &outbox, 20, 5, &tag).await;
    wait_until_published(&outbox, Duration::from_secs(60)).await;

    let all: HashSet<String> = before
        .iter()
        .chain(around.iter())
        .chain(during.iter())
        .chain(after.iter())
        .cloned()
        .collect();
    assert_eq!(all.len(), 160 + around.len());
    assert!(!around.is_empty(), "events were written across the stop");
    let seen = drain(
        &queue_name,
        &all,
        Duration::from_secs(2),
        Duration::from_secs(60),
    )
    .await;

    let missing: Vec<&String> = all.iter().filter(|id| !seen.contains_key(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} events lost: {missing:?}",
        missing.len()
    );
    // Events confirmed before the outage were never published again.
    let dup_before: Vec<&String> = before.iter().filter(|id| seen[*id] > 1).collect();
    assert!(
        dup_before.is_empty(),
        "confirmed events published twice: {dup_before:?}"
    );
    let dups = around
        .iter()
        .chain(during.iter())
        .chain(after.iter())
        .filter(|id| seen[*id] > 1)
        .count();
    eprintln!("events delivered twice (allowed, at-least-once): {dups}");

    stop_tx.send(true).unwrap();
    task.await.unwrap();
    db.drop().await.unwrap();
}

/// `n` relays of `outbox` (replicas of one service), named `<name>-<i>`, until `stop`.
fn spawn_relays(
    outbox: &Outbox,
    n: usize,
    name: &str,
    stop: &shutdown::Shutdown,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..n)
        .map(|i| {
            let relay = outbox.relay(&env("RABBITMQ_URL"), &format!("{name}-{i}"), relay_config());
            tokio::spawn(relay.run(stop.clone()))
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_on_one_outbox_publish_each_event_once() {
    let _shared = BROKER.read().await;
    let db = database("outbox_replicas").await;
    let outbox = Outbox::new(&db);
    let (_conn, _ch, queue_name) = queue("replicas").await;

    let (stop_tx, stop_rx) = shutdown::channel();
    let tasks = spawn_relays(&outbox, 2, "outbox-test", &stop_rx);

    let tag = uuid::Uuid::new_v4().to_string();
    let ids: HashSet<String> = write_events(&db, &outbox, 300, 10, &tag)
        .await
        .into_iter()
        .collect();
    wait_until_published(&outbox, Duration::from_secs(60)).await;
    let seen = drain(
        &queue_name,
        &ids,
        Duration::from_secs(2),
        Duration::from_secs(60),
    )
    .await;

    assert_eq!(seen.len(), ids.len(), "every event arrived");
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        dups.is_empty(),
        "published twice by competing relays: {dups:?}"
    );

    stop_tx.send(true).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    db.drop().await.unwrap();
}

/// The outbox inside the aggregate, with two relays racing over the same documents while the
/// writers keep pushing new events into aggregates the relays may hold: every event arrives
/// exactly once, in the end no aggregate keeps a marker, an event or a lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_relays_on_embedded_events_publish_each_once_and_settle_every_aggregate() {
    use mongodb::bson::{Document, doc};
    use moviebook_common::outbox::embedded;

    let _shared = BROKER.read().await;
    let db = database("outbox_embedded").await;
    let orders = db.collection::<Document>("orders");
    let outbox = Outbox::embedded(orders.clone());
    outbox.ensure_indexes().await.unwrap();
    let (_conn, _ch, queue_name) = queue("embedded").await;

    let (stop_tx, stop_rx) = shutdown::channel();
    let tasks = spawn_relays(&outbox, 2, "outbox-embedded", &stop_rx);

    let tag = uuid::Uuid::new_v4().to_string();
    let mut ids = HashSet::new();
    // Round 0 creates 100 aggregates with one event each; rounds 1 and 2 push one more event
    // into each, while the relays are leasing and settling them.
    for round in 0..3_i64 {
        for n in 0..100_i64 {
            let e = EventEnvelope::new(
                EventType::BookingExpired,
                "outbox-test",
                serde_json::json!({ "n": n, "round": round, "tag": tag }),
            );
            ids.insert(e.event_id.to_string());
            if round == 0 {
                let mut fresh = doc! { "_id": n, "state": 0_i64 };
                Outbox::add_to_new(&mut fresh, &e).unwrap();
                orders.insert_one(fresh).await.unwrap();
            } else {
                let mut update = doc! { "$set": { "state": round } };
                Outbox::add_to_update(&mut update, &e).unwrap();
                let r = orders.update_one(doc! { "_id": n }, update).await.unwrap();
                assert_eq!(r.modified_count, 1);
            }
            outbox.wake();
        }
    }
    let seen = drain(
        &queue_name,
        &ids,
        Duration::from_secs(2),
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(seen.len(), ids.len(), "every event arrived");
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(dups.is_empty(), "published twice: {dups:?}");

    wait_until_published(&outbox, Duration::from_secs(30)).await;
    let leftovers = orders
        .count_documents(doc! { "$or": [
            { embedded::SINCE: { "$exists": true } },
            { embedded::EVENTS: { "$exists": true } },
            { embedded::LEASE_OWNER: { "$exists": true } },
        ] })
        .await
        .unwrap();
    assert_eq!(leftovers, 0, "every aggregate settled");
    assert_eq!(
        orders
            .count_documents(doc! { "state": 2_i64 })
            .await
            .unwrap(),
        100,
        "the state changes themselves are intact"
    );

    stop_tx.send(true).unwrap();
    for t in tasks {
        t.await.unwrap();
    }
    db.drop().await.unwrap();
}
