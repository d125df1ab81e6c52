//! Test harness: the real worker in-process against the real test-stack servers, with its own
//! queue, database and Redis prefix per test, and a channel that records (or fails) sends.
#![allow(dead_code)]

use std::{
    collections::HashMap,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use lapin::{
    BasicProperties, Channel as AmqpChannel, Connection,
    options::{
        BasicAckOptions, BasicGetOptions, BasicPublishOptions, ConfirmSelectOptions,
        QueueDeleteOptions,
    },
};
use moviebook_common::events::EXCHANGE;
use notification_service::{
    channel::{Channel, Outgoing, SendError},
    config::Config,
    idempotency::Idempotency,
    store::Store,
};
use serde_json::{Value, json};
use uuid::Uuid;

/// A required test-stack variable; a missing one fails the test loudly.
pub fn env(var: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| {
        panic!(
            "{var} is not set: run the tests through `make test` or after \
             `eval \"$(scripts/stack.sh test env)\"`"
        )
    })
}

/// `base` with its database path replaced by `db`.
pub fn with_db(base: &str, db: &str) -> String {
    let (without_query, query) = match base.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (base, String::new()),
    };
    let (scheme, rest) = without_query
        .split_once("://")
        .expect("MONGODB_URL has a scheme");
    let hosts = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{hosts}/{db}{query}")
}

/// A per-test configuration: unique queue, database and Redis prefix; fast retries.
pub fn test_config(name: &str) -> Config {
    let unique = format!("{name}_{}", Uuid::new_v4().simple());
    Config {
        port: 0,
        mongodb_url: with_db(&env("MONGODB_URL"), &format!("moviebook_test_{unique}")),
        redis_url: env("REDIS_URL"),
        rabbitmq_url: env("RABBITMQ_URL"),
        rabbitmq_topology: moviebook_common::amqp::Topology::Declare,
        queue: format!("notification.test.{unique}"),
        // Bound to a key nobody publishes: other tests' events on the shared exchange stay out;
        // tests publish straight into the queue (the exchange test rebinds to the real keys).
        bindings: vec![format!("notification-test.{unique}")],
        prefetch: 32,
        concurrency: 8,
        redis_prefix: format!("notification-test:{unique}"),
        claim_ttl: Duration::from_secs(20),
        done_ttl: Duration::from_secs(600),
        max_attempts: 3,
        retry_base: Duration::from_millis(50),
        retry_max: Duration::from_millis(200),
        send_timeout: Duration::from_secs(5),
        smtp_url: None,
        smtp_from: "MovieBook <no-reply@moviebook.local>".into(),
        jwt_secret: moviebook_common::config::defaults::JWT_SECRET.into(),
        jwt_issuer: "moviebook".into(),
    }
}

/// What the recording channel should do.
#[derive(Default)]
pub struct Behaviour {
    /// Fail this many sends of each event (transiently) before succeeding.
    pub fail_first: u32,
    /// Fail every send.
    pub always_fail: bool,
    /// Time each send takes.
    pub delay: Duration,
}

/// Records every successful send; fails as told.
#[derive(Default)]
pub struct RecordingChannel {
    pub behaviour: Behaviour,
    sent: Mutex<Vec<Outgoing>>,
    failures: Mutex<HashMap<String, u32>>,
}

impl RecordingChannel {
    pub fn new(behaviour: Behaviour) -> Arc<Self> {
        Arc::new(Self {
            behaviour,
            ..Self::default()
        })
    }

    pub fn sent(&self) -> Vec<Outgoing> {
        self.sent.lock().unwrap().clone()
    }

    /// Successful sends of one event.
    pub fn sends_of(&self, event_id: &str) -> usize {
        self.sent
            .lock()
            .unwrap()
            .iter()
            .filter(|o| o.event_id == event_id)
            .count()
    }

    pub fn failures_of(&self, event_id: &str) -> u32 {
        self.failures
            .lock()
            .unwrap()
            .get(event_id)
            .copied()
            .unwrap_or(0)
    }
}

#[async_trait]
impl Channel for RecordingChannel {
    fn name(&self) -> &'static str {
        "test"
    }

    async fn send(&self, o: &Outgoing) -> Result<(), SendError> {
        if !self.behaviour.delay.is_zero() {
            tokio::time::sleep(self.behaviour.delay).await;
        }
        {
            let mut failures = self.failures.lock().unwrap();
            let n = failures.entry(o.event_id.clone()).or_default();
            if self.behaviour.always_fail || *n < self.behaviour.fail_first {
                *n += 1;
                return Err(SendError::Transient(format!("simulated failure {n}")));
            }
        }
        self.sent.lock().unwrap().push(o.clone());
        Ok(())
    }
}

/// A worker running in-process.
pub struct Running {
    pub addr: SocketAddr,
    stop: tokio::sync::watch::Sender<bool>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

impl Running {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Graceful stop: waits for in-flight deliveries and the connection to close.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        tokio::time::timeout(Duration::from_secs(30), self.handle)
            .await
            .expect("worker stops within 30 s")
            .expect("worker task did not panic")
            .expect("worker ran without error");
    }
}

pub async fn start(config: &Config, channel: Arc<dyn Channel>) -> Running {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, rx) = moviebook_common::shutdown::channel();
    let handle = tokio::spawn(notification_service::run_with_channel(
        config.clone(),
        listener,
        rx,
        channel,
    ));
    Running { addr, stop, handle }
}

/// Waits until GET /ready answers 200 (the worker consumes from its queue).
pub async fn wait_ready(running: &Running) {
    let client = reqwest::Client::new();
    let url = running.url("/ready");
    eventually(Duration::from_secs(20), "the worker becomes ready", || {
        let client = client.clone();
        let url = url.clone();
        async move { matches!(client.get(&url).send().await, Ok(r) if r.status() == 200) }
    })
    .await;
}

/// Polls `check` until it holds or `within` passes (then panics naming `what`).
pub async fn eventually<F, Fut>(within: Duration, what: &str, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check().await {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out after {within:?} waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A broker connection with publisher confirms, for publishing test events.
pub struct Publisher {
    conn: Connection,
    pub channel: AmqpChannel,
}

impl Publisher {
    pub async fn connect() -> Self {
        let conn = moviebook_common::amqp::connect(&env("RABBITMQ_URL"), "notification-tests")
            .await
            .expect("RabbitMQ reachable");
        let channel = conn.create_channel().await.unwrap();
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .unwrap();
        moviebook_common::amqp::declare_topology(&channel)
            .await
            .unwrap();
        Self { conn, channel }
    }

    /// Declares the worker's queue ahead of it, so nothing published before it starts is lost.
    pub async fn declare_queue(&self, config: &Config) {
        let bindings: Vec<&str> = config.bindings.iter().map(String::as_str).collect();
        moviebook_common::amqp::declare_consumer_queue(
            &self.channel,
            moviebook_common::amqp::Topology::Declare,
            &config.queue,
            &bindings,
        )
        .await
        .unwrap();
    }

    async fn publish_raw(&self, exchange: &str, routing_key: &str, body: &[u8]) {
        let confirm = self
            .channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions::default(),
                body,
                BasicProperties::default()
                    .with_content_type("application/json".into())
                    .with_delivery_mode(2),
            )
            .await
            .unwrap()
            .await
            .unwrap();
        assert!(confirm.is_ack(), "broker confirmed the publish");
    }

    /// Publishes to the events exchange with the routing key = event type.
    pub async fn publish_to_exchange(&self, event: &Value) {
        let key = event["event_type"].as_str().unwrap().to_owned();
        self.publish_raw(EXCHANGE, &key, &serde_json::to_vec(event).unwrap())
            .await;
    }

    /// Publishes straight into one queue (default exchange), so parallel tests stay apart.
    pub async fn publish_to_queue(&self, queue: &str, body: &[u8]) {
        self.publish_raw("", queue, body).await;
    }

    /// Takes every message currently in `queue` (acknowledged), returning the bodies.
    pub async fn drain(&self, queue: &str) -> Vec<Vec<u8>> {
        let mut bodies = Vec::new();
        while let Some(m) = self
            .channel
            .basic_get(queue.into(), BasicGetOptions::default())
            .await
            .unwrap()
        {
            m.delivery
                .acker
                .ack(BasicAckOptions::default())
                .await
                .unwrap();
            bodies.push(m.delivery.data);
        }
        bodies
    }

    /// Deletes the test's queue and its dead-letter queue.
    pub async fn cleanup(&self, queue: &str) {
        for q in [queue.to_owned(), format!("{queue}.dlq")] {
            let _ = self
                .channel
                .queue_delete(q.into(), QueueDeleteOptions::default())
                .await;
        }
        let _ = self.conn.close(200, "done".into()).await;
    }
}

/// A booking event envelope.
pub fn booking_event(event_type: &str, booking_id: &str, user_id: &str) -> Value {
    json!({
        "event_id": Uuid::new_v4().to_string(),
        "event_type": event_type,
        "occurred_at": chrono::Utc::now().to_rfc3339(),
        "source": "booking-service",
        "data": {
            "booking_id": booking_id, "user_id": user_id,
            "user_email": format!("{user_id}@example.com"),
            "showtime_id": "st-1", "movie_title": "Dune: Part Two", "cinema_name": "Grand Rex",
            "start_time": "2030-03-14T19:30:00Z", "seats": ["A1", "A2"],
            "total_amount": 25.0, "currency": "USD", "status": "CONFIRMED"
        }
    })
}

/// A payment.success envelope.
pub fn payment_event(booking_id: &str, user_id: &str) -> Value {
    json!({
        "event_id": Uuid::new_v4().to_string(),
        "event_type": "payment.success",
        "occurred_at": chrono::Utc::now().to_rfc3339(),
        "source": "payment-service",
        "data": {
            "transaction_id": Uuid::new_v4().to_string(), "booking_id": booking_id,
            "user_id": user_id, "amount": 25.0, "currency": "USD",
            "payment_method": "credit_card", "status": "SUCCESS"
        }
    })
}

pub fn event_id(event: &Value) -> String {
    event["event_id"].as_str().unwrap().to_owned()
}

/// Direct handles on the worker's stores, for assertions.
pub async fn stores(config: &Config) -> (Store, Idempotency) {
    let db = moviebook_common::mongo::connect(&config.mongodb_url, "notification-tests", "x")
        .await
        .unwrap();
    (
        Store::new(&db),
        Idempotency::new(&config.redis_url, &config.redis_prefix).unwrap(),
    )
}

/// Drops the test database.
pub async fn drop_db(store: &Store) {
    let _ = store.database().drop().await;
}

/// A TCP proxy in front of RabbitMQ that a test can take down (dropping every connection and
/// refusing new ones) and bring back, to simulate a broker outage without stopping the shared
/// broker other tests use.
pub struct FlakyProxy {
    pub addr: SocketAddr,
    up: tokio::sync::watch::Sender<bool>,
}

impl FlakyProxy {
    pub async fn start(target: SocketAddr) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, up_rx) = tokio::sync::watch::channel(true);
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !*up_rx.borrow() {
                    drop(inbound);
                    continue;
                }
                let mut down = up_rx.clone();
                tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await else {
                        return;
                    };
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                        _ = down.wait_for(|up| !*up) => {}
                    }
                });
            }
        });
        Self { addr, up }
    }

    pub fn set_up(&self, up: bool) {
        let _ = self.up.send(up);
    }

    /// `amqp_url` with its host and port replaced by the proxy's.
    pub fn amqp_url(&self, amqp_url: &str) -> String {
        let (scheme, rest) = amqp_url.split_once("://").unwrap();
        let (userinfo, hostpath) = match rest.rsplit_once('@') {
            Some((u, h)) => (format!("{u}@"), h),
            None => (String::new(), rest),
        };
        let path = hostpath.find('/').map_or("", |i| &hostpath[i..]);
        format!("{scheme}://{userinfo}{}{path}", self.addr)
    }
}

/// The host:port of an AMQP URL.
pub fn amqp_target(amqp_url: &str) -> SocketAddr {
    let rest = amqp_url.split_once("://").unwrap().1;
    let hostpath = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    let hostport = hostpath.split('/').next().unwrap();
    let hostport = hostport.replace("localhost", "127.0.0.1");
    hostport.parse().expect("RABBITMQ_URL host is an IP:port")
}
