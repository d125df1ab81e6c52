//! The consumer: connects to RabbitMQ (reconnecting with backoff), consumes the notification
//! queue with a bounded prefetch and concurrency, and settles every delivery exactly once:
//! acknowledged when handled (or a known duplicate), requeued after a delay when it may succeed
//! later, dead-lettered when it never will.
//!
//! Per delivery (see [`crate::idempotency`] for the Redis states):
//!
//! 1. parse and validate; poison → reject without requeue (→ `<queue>.dlq`);
//! 2. claim the event id in Redis; `done` → ack, another live claim → requeue later;
//! 3. unless the claim proves this is the event's first attempt (no key, Redis intact since
//!    before the event: [`crate::idempotency::Acquired::first_attempt`]), read the event's
//!    record in MongoDB (unique `event_id`); a record already `sent` → mark done and ack
//!    without sending (the second line of defence);
//! 4. send through the channel (with a timeout);
//! 5. record `sent` (one upsert: the only write of a notification sent at the first attempt),
//!    mark the event `done` in Redis, ack.
//!
//! A transient send failure counts an attempt on the record (written `pending` by the first
//! failure), releases the claim and requeues
//! after an exponential backoff; after `max_attempts` the record becomes `failed` and the
//! message is dead-lettered. A failure of Redis or MongoDB themselves is not the message's
//! fault: it is requeued after a pause without counting an attempt.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use futures::StreamExt;
use lapin::{
    Channel as AmqpChannel, Connection, Consumer,
    message::Delivery,
    options::{
        BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicNackOptions, BasicQosOptions,
    },
    types::{FieldTable, ShortString},
};
use moviebook_common::shutdown::Shutdown;
use tokio::{sync::Semaphore, task::JoinSet};

use crate::{
    channel::{Channel, Outgoing, SendError},
    config::Config,
    domain::{self, Event, FailureAction, Payload},
    idempotency::{Claim, Idempotency},
    store::{NotificationRecord, Status, Store},
};

/// Pause before requeueing a delivery whose event another worker is processing.
const IN_PROGRESS_DELAY: Duration = Duration::from_millis(500);
/// Pause before requeueing after Redis or MongoDB failed (not counted as an attempt).
const INFRA_DELAY: Duration = Duration::from_secs(1);
/// Reconnect backoff bounds.
const MIN_RECONNECT: Duration = Duration::from_millis(200);
const MAX_RECONNECT: Duration = Duration::from_secs(10);

/// How a delivery is settled with the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settle {
    Ack,
    /// Nack with requeue after the delay.
    Requeue(Duration),
    /// Nack without requeue: the queue's dead-letter exchange routes it to `<queue>.dlq`.
    DeadLetter,
}

/// Why delivering a claimed event failed.
#[derive(Debug)]
enum Failure {
    /// Redis or MongoDB failed: retry without blaming the message.
    Infra(String),
    /// The channel refused or timed out; the record is what a failed attempt stores.
    Send(SendError, Box<NotificationRecord>),
}

impl From<redis::RedisError> for Failure {
    fn from(e: redis::RedisError) -> Self {
        Self::Infra(format!("redis: {e}"))
    }
}

impl From<mongodb::error::Error> for Failure {
    fn from(e: mongodb::error::Error) -> Self {
        Self::Infra(format!("mongodb: {e}"))
    }
}

/// What happened to a claimed event.
enum Delivered {
    Sent,
    AlreadySent,
}

/// The worker. Share it in an `Arc`.
pub struct Worker {
    config: Arc<Config>,
    idem: Idempotency,
    store: Store,
    channel: Arc<dyn Channel>,
    connected: Arc<AtomicBool>,
}

fn count(event_type: &str, outcome: &'static str) {
    metrics::counter!(
        "notification_events_total",
        "event_type" => event_type.to_owned(),
        "outcome" => outcome
    )
    .increment(1);
}

impl Worker {
    pub fn new(
        config: Arc<Config>,
        idem: Idempotency,
        store: Store,
        channel: Arc<dyn Channel>,
    ) -> Self {
        Self {
            config,
            idem,
            store,
            channel,
            connected: Arc::new(AtomicBool::new(false)),
        }
    }

    /// True while the worker consumes from the broker (a readiness signal).
    pub fn connected_flag(&self) -> Arc<AtomicBool> {
        self.connected.clone()
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        metrics::gauge!("notification_broker_connected").set(if up { 1.0 } else { 0.0 });
    }

    /// Consumes until `shutdown` fires, then stops taking deliveries, finishes those in flight
    /// and closes the connection (unacknowledged prefetched messages return to the queue).
    pub async fn run(self: Arc<Self>, shutdown: Shutdown) {
        let mut tasks: JoinSet<()> = JoinSet::new();
        let permits = Arc::new(Semaphore::new(self.config.concurrency));
        let mut backoff = MIN_RECONNECT;
        self.log_vouch().await;
        while !*shutdown.borrow() {
            let (conn, amqp, consumer) = match self.open().await {
                Ok(link) => link,
                Err(e) => {
                    self.set_connected(false);
                    tracing::warn!(error = %e, retry_in = ?backoff, "broker unavailable");
                    if pause(backoff, &shutdown).await {
                        break;
                    }
                    backoff = (backoff * 2).min(MAX_RECONNECT);
                    continue;
                }
            };
            tracing::info!(queue = %self.config.queue, prefetch = self.config.prefetch,
                concurrency = self.config.concurrency, "consuming");
            self.set_connected(true);
            backoff = MIN_RECONNECT;
            let tag = consumer.tag();
            let stopped = self
                .consume(consumer, &permits, &mut tasks, &shutdown)
                .await;
            self.set_connected(false);
            if stopped {
                // Graceful: no new deliveries, finish in-flight ones on this channel, then close.
                if let Err(e) = amqp.basic_cancel(tag, BasicCancelOptions::default()).await {
                    tracing::debug!(error = %e, "cancel consumer");
                }
                while tasks.join_next().await.is_some() {}
                let _ = amqp.close(200, "shutdown".into()).await;
                let _ = conn.close(200, "shutdown".into()).await;
                break;
            }
            tracing::warn!("lost the broker connection; reconnecting");
            if pause(backoff, &shutdown).await {
                break;
            }
        }
        while tasks.join_next().await.is_some() {}
        self.set_connected(false);
        tracing::info!("notification worker stopped");
    }

    /// Starts Redis's epoch now (so events from here on can skip the MongoDB read) and says
    /// whether that read is skipped at all: it is not when Redis cannot vouch for its data.
    async fn log_vouch(&self) {
        match self.idem.vouch().await {
            Ok(Some(since)) => tracing::info!(
                intact_since_ms = since,
                "redis vouches for its claims; first attempts skip the MongoDB read"
            ),
            Ok(None) => tracing::info!(
                "redis cannot vouch for its claims (no INFO right, or keys may be evicted); \
                 every event reads its MongoDB record before sending"
            ),
            Err(e) => {
                tracing::warn!(error = %e, "redis unavailable; its epoch starts at the first claim")
            }
        }
    }

    async fn open(&self) -> lapin::Result<(Connection, AmqpChannel, Consumer)> {
        let conn =
            moviebook_common::amqp::connect(&self.config.rabbitmq_url, "notification-service")
                .await?;
        let amqp = conn.create_channel().await?;
        amqp.basic_qos(self.config.prefetch, BasicQosOptions::default())
            .await?;
        let bindings: Vec<&str> = self.config.bindings.iter().map(String::as_str).collect();
        moviebook_common::amqp::declare_consumer_queue(
            &amqp,
            self.config.rabbitmq_topology,
            &self.config.queue,
            &bindings,
        )
        .await?;
        let tag = format!("notification-service-{}", uuid::Uuid::new_v4());
        let consumer = amqp
            .basic_consume(
                ShortString::from(self.config.queue.clone()),
                ShortString::from(tag),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await?;
        Ok((conn, amqp, consumer))
    }

    /// Pulls deliveries while a permit is free. Returns true on shutdown, false when the
    /// connection was lost.
    async fn consume(
        self: &Arc<Self>,
        mut consumer: Consumer,
        permits: &Arc<Semaphore>,
        tasks: &mut JoinSet<()>,
        shutdown: &Shutdown,
    ) -> bool {
        loop {
            while tasks.try_join_next().is_some() {}
            let permit = tokio::select! {
                p = permits.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => return true,
                },
                () = moviebook_common::shutdown::wait(shutdown.clone()) => return true,
            };
            let next = tokio::select! {
                d = consumer.next() => d,
                () = moviebook_common::shutdown::wait(shutdown.clone()) => return true,
            };
            match next {
                Some(Ok(delivery)) => {
                    let worker = self.clone();
                    let shutdown = shutdown.clone();
                    tasks.spawn(async move {
                        worker.handle(delivery, shutdown).await;
                        drop(permit);
                    });
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "consumer failed");
                    return false;
                }
                None => return false,
            }
        }
    }

    /// Processes one delivery and settles it with the broker.
    async fn handle(&self, delivery: Delivery, shutdown: Shutdown) {
        let settle = self.process(&delivery.data).await;
        let result = match settle {
            Settle::Ack => delivery.acker.ack(BasicAckOptions::default()).await,
            Settle::Requeue(delay) => {
                // Waiting holds the permit, which is deliberate back-pressure while the channel
                // or a store is failing; shutdown cuts the wait short.
                pause(delay, &shutdown).await;
                delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: true,
                        multiple: false,
                    })
                    .await
            }
            Settle::DeadLetter => {
                delivery
                    .acker
                    .nack(BasicNackOptions {
                        requeue: false,
                        multiple: false,
                    })
                    .await
            }
        };
        if let Err(e) = result {
            // The channel is gone; the broker redelivers, and the claim makes that harmless.
            tracing::warn!(error = %e, ?settle, "cannot settle delivery");
        }
    }

    /// Decides how to settle a delivery, doing the work on the way. Public for tests.
    pub async fn process(&self, body: &[u8]) -> Settle {
        let event = match domain::parse_event(body) {
            Ok(e) => e,
            Err(poison) => {
                tracing::warn!(reason = %poison.0, "dead-lettering poison message");
                count("unknown", "poison");
                return Settle::DeadLetter;
            }
        };
        let id = event.event_id.to_string();
        let event_type = event.kind.as_str();
        let claim = match self
            .idem
            .claim(&id, self.config.claim_ttl, self.config.done_ttl)
            .await
        {
            Ok(Claim::Acquired(claim)) => claim,
            Ok(Claim::Done) => {
                tracing::debug!(event_id = %id, "duplicate delivery, already notified");
                count(event_type, "duplicate");
                return Settle::Ack;
            }
            Ok(Claim::InProgress) => {
                count(event_type, "in_progress");
                return Settle::Requeue(IN_PROGRESS_DELAY);
            }
            Err(e) => {
                tracing::warn!(event_id = %id, error = %e, "redis unavailable; requeueing");
                count(event_type, "infra_error");
                return Settle::Requeue(INFRA_DELAY);
            }
        };
        let started = Instant::now();
        let first = claim.first_attempt(event.occurred_at.timestamp_millis(), self.config.done_ttl);
        let outcome = self.deliver(&event, &id, first).await;
        let settle = match outcome {
            Ok(delivered) => {
                if let Err(e) = self.idem.mark_done(&id, self.config.done_ttl).await {
                    // The record says `sent`, so a redelivery still will not send again.
                    tracing::warn!(event_id = %id, error = %e, "cannot mark event done in redis");
                }
                match delivered {
                    Delivered::Sent => {
                        count(event_type, "sent");
                        metrics::histogram!("notification_processing_duration_seconds")
                            .record(started.elapsed().as_secs_f64());
                    }
                    Delivered::AlreadySent => count(event_type, "duplicate"),
                }
                Settle::Ack
            }
            Err(Failure::Infra(e)) => {
                tracing::warn!(event_id = %id, error = %e, "store unavailable; requeueing");
                count(event_type, "infra_error");
                Settle::Requeue(INFRA_DELAY)
            }
            Err(Failure::Send(err, record)) => self.on_send_failure(&record, event_type, err).await,
        };
        if settle != Settle::Ack
            && let Err(e) = self.idem.release(&id, &claim.token).await
        {
            // The claim expires on its own after claim_ttl.
            tracing::warn!(event_id = %id, error = %e, "cannot release claim");
        }
        settle
    }

    async fn on_send_failure(
        &self,
        record: &NotificationRecord,
        event_type: &str,
        err: SendError,
    ) -> Settle {
        let id = record.event_id.as_str();
        let (reason, permanent) = match &err {
            SendError::Transient(m) => (m.clone(), false),
            SendError::Permanent(m) => (m.clone(), true),
        };
        let attempts = match self.store.record_failure(record, &reason).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(event_id = %id, error = %e, "cannot count the failed attempt");
                return Settle::Requeue(INFRA_DELAY);
            }
        };
        let action = if permanent {
            FailureAction::DeadLetter
        } else {
            domain::on_failure(
                attempts,
                self.config.max_attempts,
                self.config.retry_base,
                self.config.retry_max,
            )
        };
        match action {
            FailureAction::Retry(delay) => {
                tracing::warn!(event_id = %id, attempts, error = %reason, retry_in = ?delay,
                    "send failed; will retry");
                count(event_type, "retry");
                Settle::Requeue(delay)
            }
            FailureAction::DeadLetter => {
                tracing::error!(event_id = %id, attempts, error = %reason,
                    "send failed for good; dead-lettering");
                if let Err(e) = self.store.mark_failed(id, &reason).await {
                    tracing::warn!(event_id = %id, error = %e, "cannot record the failure");
                }
                count(event_type, "dead_lettered");
                Settle::DeadLetter
            }
        }
    }

    /// Steps 3 to 5 for a claimed event; `first` (the claim proves no attempt came before)
    /// skips step 3.
    async fn deliver(&self, event: &Event, id: &str, first: bool) -> Result<Delivered, Failure> {
        let (recipient, summary) = match &event.payload {
            Payload::Booking(b) => {
                if let Some(email) = b.user_email.as_deref().filter(|e| !e.trim().is_empty()) {
                    self.idem.remember_email(&b.user_id, email).await?;
                }
                self.idem
                    .remember_booking(&b.booking_id, &domain::BookingSummary::from(b))
                    .await?;
                let recipient = match b.user_email.clone().filter(|e| !e.trim().is_empty()) {
                    Some(e) => Some(e),
                    None => self.known_email(&b.user_id).await?,
                };
                (recipient, None)
            }
            Payload::Payment(_) | Payload::Refund(_) => {
                let recipient = self.known_email(event.user_id()).await?;
                let summary = self.idem.booking_summary(event.booking_id()).await?;
                (recipient, summary)
            }
        };
        let message = domain::render(event, summary.as_ref());
        let record = NotificationRecord {
            event_id: id.to_owned(),
            event_type: event.kind.as_str().to_owned(),
            user_id: event.user_id().to_owned(),
            recipient: recipient.clone(),
            channel: self.channel.name().to_owned(),
            subject: message.subject.clone(),
            body: message.body.clone(),
            booking_id: event.booking_id().to_owned(),
            created_at: mongodb::bson::DateTime::now(),
            status: Status::Pending,
            attempts: 0,
            last_error: None,
            sent_at: None,
        };
        if !first {
            match self.store.status_of(id).await? {
                None | Some(Status::Pending) => {}
                Some(Status::Sent) => {
                    tracing::info!(event_id = %id, "already sent according to MongoDB; not resending");
                    return Ok(Delivered::AlreadySent);
                }
                Some(Status::Failed) => self.store.restart(id).await?,
            }
        }
        let outgoing = Outgoing {
            event_id: id.to_owned(),
            event_type: record.event_type.clone(),
            recipient,
            message,
        };
        let sent = tokio::time::timeout(self.config.send_timeout, self.channel.send(&outgoing))
            .await
            .unwrap_or_else(|_| {
                Err(SendError::Transient(format!(
                    "send timed out after {:?}",
                    self.config.send_timeout
                )))
            });
        if let Err(e) = sent {
            return Err(Failure::Send(e, Box::new(record)));
        }
        self.record_sent(&record).await;
        Ok(Delivered::Sent)
    }

    /// Records the send, retrying briefly. If MongoDB stays down the event is still marked done
    /// (the caller does that next): the notification left, and sending it again would be the
    /// worse failure; the record then stays missing (or `pending`), which the log makes
    /// visible.
    async fn record_sent(&self, record: &NotificationRecord) {
        let id = record.event_id.as_str();
        let mut delay = Duration::from_millis(100);
        for attempt in 1..=4 {
            match self.store.record_sent(record).await {
                Ok(()) => return,
                Err(e) if attempt < 4 => {
                    tracing::warn!(event_id = %id, error = %e, "cannot record send; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                Err(e) => {
                    tracing::error!(event_id = %id, error = %e,
                        "notification sent but its status could not be recorded");
                }
            }
        }
    }

    /// The user's address from the Redis cache, else from an earlier notification.
    async fn known_email(&self, user_id: &str) -> Result<Option<String>, Failure> {
        if let Some(email) = self.idem.email_for(user_id).await? {
            return Ok(Some(email));
        }
        Ok(self.store.last_recipient(user_id).await?)
    }
}

/// Sleeps for `d` unless shutdown comes first; true on shutdown.
async fn pause(d: Duration, shutdown: &Shutdown) -> bool {
    if *shutdown.borrow() {
        return true;
    }
    tokio::select! {
        () = tokio::time::sleep(d) => *shutdown.borrow(),
        () = moviebook_common::shutdown::wait(shutdown.clone()) => true,
    }
}
