//! The broker grants of `moviebook-grants`, imported into the real test broker as a definitions
//! file (as the managed broker loads them at boot), against the calls the services make: each
//! service's own calls pass, and what it must not do is refused by the broker. The definitions
//! declare the shared topology, so the services find it (`Topology::Existing`) and may not
//! declare, delete or read it beyond their own use.
//!
//! Needs RABBITMQ_URL and MOVIEBOOK_STACK_SCRIPT (set by `make test`).

use std::time::Duration;

use lapin::{
    BasicProperties, Connection, ErrorKind,
    options::{
        BasicConsumeOptions, BasicPublishOptions, ConfirmSelectOptions, ExchangeDeleteOptions,
        QueueDeleteOptions,
    },
    protocol::{AMQPErrorKind, AMQPSoftError},
    types::FieldTable,
};
use moviebook_common::amqp::{self, Topology};
use moviebook_grants::{
    Service,
    rabbitmq::{self, Access, Account, Grant},
};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests through `make test`, which starts the test servers"
        )
    })
}

fn rabbitmqctl(args: &[&str]) {
    let script = env("MOVIEBOOK_STACK_SCRIPT");
    let mut parts = script.split_whitespace();
    let program = parts.next().expect("MOVIEBOOK_STACK_SCRIPT is empty");
    let out = std::process::Command::new(program)
        .args(parts)
        .arg("rabbitmqctl")
        .args(args)
        .output()
        .expect("run the stack script");
    assert!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Users of one test (names made unique), imported on creation and deleted on drop.
struct Users {
    accounts: Vec<Account>,
    queue: String,
}

impl Users {
    fn import() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let queue = format!("grants-test-{id}");
        let grant = |svc: Service| -> Grant {
            match svc {
                Service::Booking => rabbitmq::booking(),
                Service::Payment => rabbitmq::payment(),
                Service::Notification => rabbitmq::notification(&queue),
            }
        };
        let accounts: Vec<Account> = Service::BROKER_CLIENTS
            .iter()
            .map(|svc| Account {
                user: format!("{}-{id}", svc.name()),
                password: format!("pw-{}-{id}", svc.name()),
                access: Access::Granted(grant(*svc)),
            })
            .collect();
        let file = std::env::temp_dir().join(format!("moviebook-grants-{id}.json"));
        std::fs::write(&file, rabbitmq::definitions(&accounts).to_string()).expect("write");
        rabbitmqctl(&["import_definitions", &file.to_string_lossy()]);
        let _ = std::fs::remove_file(&file);
        Self { accounts, queue }
    }

    async fn connect(&self, svc: Service) -> Connection {
        let account = &self.accounts[Service::BROKER_CLIENTS
            .iter()
            .position(|s| *s == svc)
            .expect("a broker client")];
        amqp::connect(&url_as(&account.user, &account.password), svc.name())
            .await
            .expect("connect with the service's own credentials")
    }
}

impl Drop for Users {
    fn drop(&mut self) {
        for a in &self.accounts {
            rabbitmqctl(&["delete_user", &a.user]);
        }
    }
}

/// RABBITMQ_URL with other credentials.
fn url_as(user: &str, password: &str) -> String {
    let base = env("RABBITMQ_URL");
    let (scheme, rest) = base.split_once("://").expect("scheme");
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}:{password}@{host}")
}

fn assert_refused<T: std::fmt::Debug>(what: &str, result: lapin::Result<T>) {
    match result {
        Err(e) => match e.kind() {
            ErrorKind::ProtocolError(amqp_error)
                if *amqp_error.kind() == AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED) => {}
            other => panic!("{what}: expected ACCESS_REFUSED, got {other:?}"),
        },
        Ok(v) => panic!("{what}: expected ACCESS_REFUSED, the broker allowed it ({v:?})"),
    }
}

/// Publishes one persistent event as the outbox relay does (publisher confirms on) and waits
/// for the broker's answer.
async fn publish(conn: &Connection, routing_key: &str) -> lapin::Result<bool> {
    let channel = conn.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let confirm = channel
        .basic_publish(
            rabbitmq::EXCHANGE.into(),
            routing_key.into(),
            BasicPublishOptions::default(),
            b"{}",
            BasicProperties::default().with_delivery_mode(2),
        )
        .await?;
    let answer = tokio::time::timeout(Duration::from_secs(10), confirm)
        .await
        .map_err(|_| {
            lapin::Error::from(ErrorKind::IOError(std::sync::Arc::new(
                std::io::Error::other("no confirm within 10 s"),
            )))
        })??;
    Ok(answer.is_ack())
}

#[tokio::test]
async fn each_service_may_do_its_own_broker_calls_and_no_others() {
    let users = Users::import();

    // booking: the shared topology, its events, its live seat map's private queues.
    let booking = users.connect(Service::Booking).await;
    let channel = booking.create_channel().await.expect("channel");
    amqp::ensure_topology(&channel, Topology::Existing)
        .await
        .expect("booking finds the broker's topology");
    assert!(
        publish(&booking, "booking.confirmed")
            .await
            .expect("own event")
    );
    amqp::private_queue(
        &channel,
        Topology::Existing,
        "booking.*",
        "grants-test-live",
    )
    .await
    .expect("booking watches its events");
    assert_refused(
        "booking publishing a payment event",
        publish(&booking, "payment.success").await,
    );
    let channel = booking.create_channel().await.expect("channel");
    assert_refused(
        "booking watching payment events",
        amqp::private_queue(&channel, Topology::Existing, "payment.*", "grants-test-spy")
            .await
            .map(|_| ()),
    );
    let channel = booking.create_channel().await.expect("channel");
    assert_refused(
        "booking declaring notification's queue",
        amqp::declare_consumer_queue(&channel, Topology::Existing, &users.queue, &["booking.*"])
            .await,
    );

    // payment: the shared topology and its events; it consumes nothing.
    let payment = users.connect(Service::Payment).await;
    let channel = payment.create_channel().await.expect("channel");
    amqp::ensure_topology(&channel, Topology::Existing)
        .await
        .expect("payment finds the broker's topology");
    assert!(
        publish(&payment, "payment.success")
            .await
            .expect("own event")
    );
    assert_refused(
        "payment publishing a booking event",
        publish(&payment, "booking.confirmed").await,
    );
    assert_refused(
        "payment opening a private queue",
        amqp::private_queue(&channel, Topology::Existing, "payment.*", "grants-test-spy")
            .await
            .map(|_| ()),
    );

    // notification: its durable queue and dead-letter queue, bound to booking's and payment's
    // events, consumed; it publishes nothing and binds nothing wider.
    let notification = users.connect(Service::Notification).await;
    let channel = notification.create_channel().await.expect("channel");
    amqp::declare_consumer_queue(
        &channel,
        Topology::Existing,
        &users.queue,
        &["booking.*", "payment.*"],
    )
    .await
    .expect("notification declares and binds its queue");
    channel
        .basic_consume(
            users.queue.as_str().into(),
            "grants-test-consumer".into(),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("notification consumes its queue");
    assert_refused(
        "notification publishing",
        publish(&notification, "booking.confirmed").await,
    );
    let channel = notification.create_channel().await.expect("channel");
    assert_refused(
        "notification binding every event",
        amqp::declare_consumer_queue(&channel, Topology::Existing, &users.queue, &["#"]).await,
    );
    let channel = notification.create_channel().await.expect("channel");
    assert_refused(
        "notification declaring another queue",
        amqp::declare_consumer_queue(
            &channel,
            Topology::Existing,
            &format!("{}-x", users.queue),
            &["booking.*"],
        )
        .await,
    );

    // Nobody may redefine or delete the shared topology, nor read the unrouted events.
    for (svc, conn) in [
        ("booking", &booking),
        ("payment", &payment),
        ("notification", &notification),
    ] {
        let channel = conn.create_channel().await.expect("channel");
        assert_refused(
            &format!("{svc} declaring the shared topology"),
            amqp::declare_topology(&channel).await,
        );
        let channel = conn.create_channel().await.expect("channel");
        assert_refused(
            &format!("{svc} deleting the events exchange"),
            channel
                .exchange_delete(rabbitmq::EXCHANGE.into(), ExchangeDeleteOptions::default())
                .await,
        );
        let channel = conn.create_channel().await.expect("channel");
        assert_refused(
            &format!("{svc} consuming the unrouted events"),
            channel
                .basic_consume(
                    rabbitmq::UNROUTED.into(),
                    "grants-test-unrouted".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map(|_| ()),
        );
    }

    // booking may not read notification's queue either (the queue exists now).
    let channel = booking.create_channel().await.expect("channel");
    assert_refused(
        "booking consuming notification's queue",
        channel
            .basic_consume(
                users.queue.as_str().into(),
                "grants-test-thief".into(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map(|_| ()),
    );

    // Clean up the test queues as notification (the test broker is shared by every test).
    let channel = notification.create_channel().await.expect("channel");
    for q in [users.queue.clone(), format!("{}.dlq", users.queue)] {
        channel
            .queue_delete(q.as_str().into(), QueueDeleteOptions::default())
            .await
            .expect("notification deletes its own queue");
    }
}
