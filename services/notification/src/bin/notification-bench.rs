//! `notification-bench`: end-to-end throughput and latency of the worker against real servers.
//!
//! Starts the real worker in-process (its own queue, database and Redis prefix, so a running
//! `make dev` is untouched), publishes `NOTIFICATION_BENCH_EVENTS` (default 5000) booking events
//! into its queue with publisher confirms as fast as the broker takes them, and measures, per
//! event, the time from publish to the notification being handed to the channel (a no-op
//! channel, so the worker's own cost — Redis claim, MongoDB record, broker ack — is what is
//! measured). Prints events/s, p50/p90/p99 and the machine. Bounded: gives up after 120 s.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_trait::async_trait;
use lapin::{
    BasicProperties,
    options::{BasicPublishOptions, ConfirmSelectOptions, QueueDeleteOptions},
};
use notification_service::{
    channel::{Channel, Outgoing, SendError},
    config::Config,
};
use tokio::sync::Notify;

/// Records when each event reached the channel.
struct TimingChannel {
    published: Mutex<HashMap<String, Instant>>,
    latencies: Mutex<Vec<Duration>>,
    target: usize,
    done: Notify,
}

#[async_trait]
impl Channel for TimingChannel {
    fn name(&self) -> &'static str {
        "bench"
    }

    async fn send(&self, o: &Outgoing) -> Result<(), SendError> {
        let now = Instant::now();
        let start = self
            .published
            .lock()
            .ok()
            .and_then(|m| m.get(&o.event_id).copied());
        if let (Some(start), Ok(mut l)) = (start, self.latencies.lock()) {
            l.push(now.saturating_duration_since(start));
            if l.len() >= self.target {
                self.done.notify_one();
            }
        }
        Ok(())
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".into())
}

fn with_db(base: &str, db: &str) -> String {
    let (without_query, query) = match base.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (base, String::new()),
    };
    let Some((scheme, rest)) = without_query.split_once("://") else {
        return base.to_owned();
    };
    let hosts = rest.split('/').next().unwrap_or(rest);
    format!("{scheme}://{hosts}/{db}{query}")
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let events: usize = moviebook_common::config::var_or("NOTIFICATION_BENCH_EVENTS", 5000)?;
    let mut config = Config::from_env()?;
    let unique = uuid::Uuid::new_v4().simple().to_string();
    config.queue = format!("notification.bench.{unique}");
    config.bindings = vec![format!("notification-bench.{unique}")];
    config.redis_prefix = format!("notification-bench:{unique}");
    config.mongodb_url = with_db(&config.mongodb_url, &format!("moviebook_bench_{unique}"));
    let channel = Arc::new(TimingChannel {
        published: Mutex::new(HashMap::with_capacity(events)),
        latencies: Mutex::new(Vec::with_capacity(events)),
        target: events,
        done: Notify::new(),
    });

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let (stop, rx) = moviebook_common::shutdown::channel();
    let worker = tokio::spawn(notification_service::run_with_channel(
        config.clone(),
        listener,
        rx,
        channel.clone(),
    ));

    let conn = moviebook_common::amqp::connect(&config.rabbitmq_url, "notification-bench").await?;
    let amqp = conn.create_channel().await?;
    amqp.confirm_select(ConfirmSelectOptions::default()).await?;
    let bindings: Vec<&str> = config.bindings.iter().map(String::as_str).collect();
    moviebook_common::amqp::declare_consumer_queue(
        &amqp,
        moviebook_common::amqp::Topology::Declare,
        &config.queue,
        &bindings,
    )
    .await?;

    let started = Instant::now();
    let mut confirms = Vec::with_capacity(events);
    for i in 0..events {
        let id = uuid::Uuid::new_v4().to_string();
        let body = serde_json::json!({
            "event_id": id, "event_type": "booking.confirmed",
            "occurred_at": chrono::Utc::now().to_rfc3339(), "source": "notification-bench",
            "data": {"booking_id": format!("bench-{i}"), "user_id": format!("u-{}", i % 100),
                "user_email": format!("u{}@example.com", i % 100), "movie_title": "Bench",
                "cinema_name": "Bench Cinema", "start_time": "2030-01-01T20:00:00Z",
                "seats": ["A1"], "total_amount": 12.5, "currency": "USD"}
        });
        if let Ok(mut p) = channel.published.lock() {
            p.insert(id, Instant::now());
        }
        confirms.push(
            amqp.basic_publish(
                "".into(),
                config.queue.clone().into(),
                BasicPublishOptions::default(),
                &serde_json::to_vec(&body)?,
                BasicProperties::default().with_delivery_mode(2),
            )
            .await?,
        );
    }
    for c in confirms {
        c.await?;
    }
    let published_in = started.elapsed();
    let finished = tokio::time::timeout(Duration::from_secs(120), channel.done.notified()).await;
    let elapsed = started.elapsed();

    let mut latencies = channel
        .latencies
        .lock()
        .map(|l| l.clone())
        .unwrap_or_default();
    latencies.sort();
    let _ = stop.send(true);
    let _ = worker.await;
    let _ = amqp
        .queue_delete(config.queue.clone().into(), QueueDeleteOptions::default())
        .await;
    let _ = amqp
        .queue_delete(
            format!("{}.dlq", config.queue).into(),
            QueueDeleteOptions::default(),
        )
        .await;
    let _ = conn.close(200, "bench done".into()).await;
    if let Ok(db) =
        moviebook_common::mongo::connect(&config.mongodb_url, "notification-bench", "x").await
    {
        let _ = db.drop().await;
    }

    let nproc = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!("notification-bench: machine: {nproc} cpus, {}", cpu_model());
    println!(
        "notification-bench: dev-profile build (deps opt-level 2, our code opt-level 1); prefetch {}, concurrency {}",
        config.prefetch, config.concurrency
    );
    println!(
        "notification-bench: {} of {events} events notified in {:.2}s (published in {:.2}s): {:.0} events/s",
        latencies.len(),
        elapsed.as_secs_f64(),
        published_in.as_secs_f64(),
        latencies.len() as f64 / elapsed.as_secs_f64()
    );
    println!(
        "notification-bench: publish→notified latency p50 {:.1} ms, p90 {:.1} ms, p99 {:.1} ms (backlog included)",
        percentile(&latencies, 0.50).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.90).as_secs_f64() * 1000.0,
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0
    );
    println!(
        "bench-notification: events={:.0}/s p99={:.1}ms notified={}/{events}",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        percentile(&latencies, 0.99).as_secs_f64() * 1000.0,
        latencies.len(),
    );
    if finished.is_err() {
        anyhow::bail!("not every event was notified within 120 s");
    }
    Ok(())
}
