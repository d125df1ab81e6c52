//! The transactional outbox and its relay.
//!
//! A service never publishes to RabbitMQ in a request. It writes the event into the `outbox`
//! collection in the same MongoDB transaction as the state change that caused it, so the event
//! exists if and only if the change committed. The [`OutboxRelay`] then publishes pending events
//! to the `movie_app_events` exchange with publisher confirms and marks each one published only
//! after the broker confirmed it. While the broker is down it retries with exponential backoff;
//! nothing is lost, because nothing is deleted or marked before the broker has it.
//!
//! Several replicas may run a relay over the same collection: a relay first *leases* a batch
//! (`lease_owner` = a fresh token, `lease_until` = now + lease) with a conditional update, so two
//! relays never publish the same event at the same time. A relay that dies mid-batch leaves its
//! lease to expire and another picks the events up; that (and a crash between the broker's
//! confirm and the mark) can publish an event twice, which is why consumers are idempotent on
//! `event_id` (at-least-once delivery).
//!
//! Two layouts, one relay:
//! - **the outbox collection** ([`Outbox::new`]): an event is a document of `outbox`, inserted in
//!   the transaction of its state change (insert + insert + commit);
//! - **the outbox inside the aggregate** ([`Outbox::embedded`]): the aggregate's own document
//!   carries its pending events in an `outbox` array ([`Outbox::add_to_new`],
//!   [`Outbox::add_to_update`]), so a state change and its event are *one* single-document
//!   write, atomic without a transaction. The relay leases whole aggregates that have pending
//!   events (`outbox_since` set, a sparse index), publishes their events in array order, then
//!   `$pull`s the confirmed ones while freeing the lease, and clears the markers of an
//!   aggregate whose array is empty (conditionally, so an event pushed meanwhile stays). A relay
//!   that dies between the pull and the clear leaves an empty array under a marker: the next
//!   relay clears it.
//!
//! A round costs four store operations in the usual case, whatever the batch size: read the
//! candidates with their events, lease them, and (after the broker's confirms) two updates to
//! settle; every one of them selects by `_id` or by the pending marker's index.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures::TryStreamExt;
use lapin::{
    BasicProperties, Channel, Connection,
    options::{BasicPublishOptions, ConfirmSelectOptions},
};
use mongodb::{
    ClientSession, Collection, Database, IndexModel,
    bson::{Bson, DateTime, Document, doc},
    options::IndexOptions,
};
use tokio::sync::Notify;

use crate::{events::EventEnvelope, shutdown::Shutdown};

/// The collection holding pending and published events.
pub const COLLECTION: &str = "outbox";

/// Published events are kept this long (for audit and replay), then removed by a TTL index.
const KEEP_PUBLISHED: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    #[error("event cannot be serialised: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Fields an aggregate with embedded events carries (see the module documentation).
pub mod embedded {
    /// The pending events, oldest first: `{_id: event_id, event_type, payload, created_at}`.
    pub const EVENTS: &str = "outbox";
    /// Set while `outbox` may hold events: when the oldest was added (sparse index).
    pub const SINCE: &str = "outbox_since";
    /// The relay lease on the aggregate's events.
    pub const LEASE_OWNER: &str = "outbox_lease_owner";
    pub const LEASE_UNTIL: &str = "outbox_lease_until";
}

/// Where a service's events wait.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Layout {
    Collection,
    Embedded,
}

/// Handle on a service's outbox. Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    coll: Collection<Document>,
    layout: Layout,
    wake: Arc<Notify>,
}

impl Outbox {
    /// The `outbox` collection of `db`.
    pub fn new(db: &Database) -> Self {
        Self {
            coll: db.collection(COLLECTION),
            layout: Layout::Collection,
            wake: Arc::new(Notify::new()),
        }
    }

    /// Events carried by the documents of `aggregates` themselves.
    pub fn embedded(aggregates: Collection<Document>) -> Self {
        Self {
            coll: aggregates,
            layout: Layout::Embedded,
            wake: Arc::new(Notify::new()),
        }
    }

    /// One pending event as an aggregate carries it.
    pub fn entry(envelope: &EventEnvelope) -> Result<Document, serde_json::Error> {
        Ok(doc! {
            "_id": envelope.event_id.to_string(),
            "event_type": envelope.event_type.clone(),
            "payload": serde_json::to_string(envelope)?,
            "created_at": DateTime::now(),
        })
    }

    /// Makes a new aggregate document carry `envelope` as its first pending event.
    pub fn add_to_new(doc: &mut Document, envelope: &EventEnvelope) -> Result<(), OutboxError> {
        doc.insert(
            embedded::EVENTS,
            vec![Bson::Document(Self::entry(envelope)?)],
        );
        doc.insert(embedded::SINCE, DateTime::now());
        Ok(())
    }

    /// Adds "append `envelope` to the pending events" to an update (whose other operators must
    /// not touch the outbox fields; a `$push` or `$min` it has already is extended): the state
    /// change and its event are then one atomic single-document write.
    pub fn add_to_update(
        update: &mut Document,
        envelope: &EventEnvelope,
    ) -> Result<(), OutboxError> {
        let entry = Bson::Document(Self::entry(envelope)?);
        extend_operator(update, "$push", embedded::EVENTS, entry);
        extend_operator(update, "$min", embedded::SINCE, DateTime::now());
        Ok(())
    }

    /// Creates the indexes the relay's queries need. Part of each service's `migrate`.
    pub async fn ensure_indexes(&self) -> Result<(), OutboxError> {
        if self.layout == Layout::Embedded {
            self.coll
                .create_index(
                    IndexModel::builder()
                        .keys(doc! { embedded::SINCE: 1 })
                        .options(
                            IndexOptions::builder()
                                .name("outbox_pending".to_owned())
                                .sparse(true)
                                .build(),
                        )
                        .build(),
                )
                .await?;
            return Ok(());
        }
        self.coll
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "published_at": 1, "lease_until": 1, "created_at": 1 })
                    .options(
                        IndexOptions::builder()
                            .name("outbox_pending".to_owned())
                            .build(),
                    )
                    .build(),
            )
            .await?;
        let ttl = IndexModel::builder()
            .keys(doc! { "published_at": 1 })
            .options(
                IndexOptions::builder()
                    .name("outbox_published_ttl".to_owned())
                    .expire_after(KEEP_PUBLISHED)
                    .build(),
            )
            .build();
        // Housekeeping only: a server without TTL indexes keeps published events, which is safe.
        if let Err(e) = self.coll.create_index(ttl).await {
            tracing::warn!(error = %e, "outbox TTL index not created; published events are kept");
        }
        Ok(())
    }

    /// The stored form of an event: the exact bytes to publish plus relay bookkeeping.
    pub fn document(envelope: &EventEnvelope) -> Result<Document, serde_json::Error> {
        Ok(doc! {
            "_id": envelope.event_id.to_string(),
            "event_type": envelope.event_type.clone(),
            "payload": serde_json::to_string(envelope)?,
            "created_at": DateTime::now(),
            "published_at": Bson::Null,
            "lease_owner": Bson::Null,
            "lease_until": DateTime::from_millis(0),
            "attempts": 0_i32,
        })
    }

    /// Stores an event inside the caller's transaction. Call [`Outbox::wake`] after commit.
    pub async fn enqueue(
        &self,
        session: &mut ClientSession,
        envelope: &EventEnvelope,
    ) -> Result<(), OutboxError> {
        self.coll
            .insert_one(Self::document(envelope)?)
            .session(session)
            .await?;
        Ok(())
    }

    /// Stores an event on its own, for the rare event that is itself the whole state change.
    pub async fn enqueue_standalone(&self, envelope: &EventEnvelope) -> Result<(), OutboxError> {
        self.coll.insert_one(Self::document(envelope)?).await?;
        self.wake();
        Ok(())
    }

    /// Tells a relay in this process that new events are waiting, so it publishes them now
    /// instead of at its next poll.
    pub fn wake(&self) {
        self.wake.notify_one();
    }

    /// Events not yet confirmed by the broker (embedded: aggregates with such events).
    pub async fn pending_count(&self) -> Result<u64, OutboxError> {
        let filter = match self.layout {
            Layout::Collection => doc! { "published_at": Bson::Null },
            Layout::Embedded => doc! { embedded::SINCE: { "$exists": true } },
        };
        Ok(self.coll.count_documents(filter).await?)
    }

    pub fn relay(&self, amqp_url: &str, name: &str, config: RelayConfig) -> OutboxRelay {
        OutboxRelay {
            outbox: self.clone(),
            amqp_url: amqp_url.to_owned(),
            name: name.to_owned(),
            config,
            connected: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Tuning of the relay loop.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// Events leased and published per round.
    pub batch_size: i64,
    /// How long a lease protects a batch from other relays.
    pub lease: Duration,
    /// Poll interval when idle and not woken.
    pub idle_poll: Duration,
    /// How long a woken relay waits before leasing, so that the events written meanwhile go in
    /// the same round: a round costs the same few store operations for one event or a hundred.
    pub gather: Duration,
    /// Backoff bounds while the broker or the database is unavailable.
    pub min_backoff: Duration,
    pub max_backoff: Duration,
    /// Whether the relay declares the shared topology or finds it on the broker.
    pub topology: crate::amqp::Topology,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            batch_size: 200,
            lease: Duration::from_secs(30),
            idle_poll: Duration::from_millis(250),
            gather: Duration::from_millis(5),
            min_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(5),
            topology: crate::amqp::Topology::Declare,
        }
    }
}

/// Next backoff: doubled, capped. Pure.
pub fn next_backoff(current: Duration, config: &RelayConfig) -> Duration {
    (current * 2).clamp(config.min_backoff, config.max_backoff)
}

/// One leased event.
struct Leased {
    id: String,
    event_type: String,
    payload: String,
}

/// Whether [`OutboxRelay::lease`] reads the leased documents back after taking them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reread {
    /// Only when it took fewer than it read: its filter re-checks each document's whole
    /// content (one event per document), so a taken document still holds what was read.
    WhenRaced,
    /// Every time: a taken document may hold other events than were read.
    Always,
}

/// What one lease took: the events to publish, and (embedded) the aggregates that carry them.
struct Batch {
    token: String,
    aggregates: Vec<Bson>,
    events: Vec<Leased>,
}

/// The events of one leased aggregate, in the order they were added.
fn embedded_events(aggregate: &Document) -> Vec<Leased> {
    aggregate
        .get_array(embedded::EVENTS)
        .map(|events| {
            events
                .iter()
                .filter_map(|e| {
                    let e = e.as_document()?;
                    Some(Leased {
                        id: e.get_str("_id").ok()?.to_owned(),
                        event_type: e.get_str("event_type").ok()?.to_owned(),
                        payload: e.get_str("payload").ok()?.to_owned(),
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Publishes the outbox to RabbitMQ. See the module documentation.
pub struct OutboxRelay {
    outbox: Outbox,
    amqp_url: String,
    name: String,
    config: RelayConfig,
    connected: Arc<AtomicBool>,
}

/// What a round of publishing achieved.
#[derive(Debug, Default, PartialEq, Eq)]
struct RoundOutcome {
    published: usize,
    failed: usize,
}

impl OutboxRelay {
    /// True while the relay holds a confirmed channel to the broker (a readiness signal).
    pub fn connected_flag(&self) -> Arc<AtomicBool> {
        self.connected.clone()
    }

    /// Runs until `shutdown` fires.
    pub async fn run(self, shutdown: Shutdown) {
        let mut link: Option<(Connection, Channel)> = None;
        let mut backoff = self.config.min_backoff;
        loop {
            if *shutdown.borrow() {
                break;
            }
            let channel = match &link {
                Some((conn, ch)) if conn.status().connected() && ch.status().connected() => {
                    ch.clone()
                }
                _ => match self.open_channel().await {
                    Ok((conn, ch)) => {
                        tracing::info!(relay = %self.name, "outbox relay connected to the broker");
                        self.set_connected(true);
                        backoff = self.config.min_backoff;
                        link = Some((conn, ch.clone()));
                        ch
                    }
                    Err(e) => {
                        self.set_connected(false);
                        link = None;
                        tracing::warn!(relay = %self.name, error = %e, retry_in = ?backoff, "broker unavailable");
                        if self.pause(backoff, &shutdown).await {
                            break;
                        }
                        backoff = next_backoff(backoff, &self.config);
                        continue;
                    }
                },
            };

            let batch = match self.lease_batch().await {
                Ok(batch) => batch,
                Err(e) => {
                    tracing::warn!(relay = %self.name, error = %e, "cannot lease outbox events");
                    if self.pause(backoff, &shutdown).await {
                        break;
                    }
                    backoff = next_backoff(backoff, &self.config);
                    continue;
                }
            };
            let Some(batch) = batch else {
                // Idle: wait for a wake-up from this process, the poll interval, or shutdown.
                let mut sd = shutdown.clone();
                tokio::select! {
                    () = self.outbox.wake.notified() => {
                        if self.pause(self.config.gather, &shutdown).await {
                            break;
                        }
                    }
                    () = tokio::time::sleep(self.config.idle_poll) => {}
                    _ = sd.changed() => {}
                }
                continue;
            };

            let outcome = self.publish(&channel, batch).await;
            if outcome.failed > 0 {
                // A nack or a dead channel: reconnect and retry the rest after a pause.
                self.set_connected(false);
                link = None;
                if self.pause(backoff, &shutdown).await {
                    break;
                }
                backoff = next_backoff(backoff, &self.config);
            } else {
                backoff = self.config.min_backoff;
            }
        }
        self.set_connected(false);
        if let Some((conn, _)) = link {
            let _ = conn.close(200, "shutdown".into()).await;
        }
        tracing::info!(relay = %self.name, "outbox relay stopped");
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        metrics::gauge!("outbox_relay_connected").set(if up { 1.0 } else { 0.0 });
    }

    /// Sleeps for `d` unless shutdown comes first; returns true on shutdown.
    async fn pause(&self, d: Duration, shutdown: &Shutdown) -> bool {
        let mut sd = shutdown.clone();
        tokio::select! {
            () = tokio::time::sleep(d) => *shutdown.borrow(),
            _ = sd.changed() => true,
        }
    }

    async fn open_channel(&self) -> lapin::Result<(Connection, Channel)> {
        let conn = crate::amqp::connect(&self.amqp_url, &format!("{}-outbox", self.name)).await?;
        let channel = conn.create_channel().await?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await?;
        crate::amqp::ensure_topology(&channel, self.config.topology).await?;
        Ok((conn, channel))
    }

    /// Leases up to `batch_size` pending events (embedded: aggregates) whose lease is free;
    /// `None` when there are none.
    async fn lease_batch(&self) -> Result<Option<Batch>, OutboxError> {
        let now = DateTime::now();
        match self.outbox.layout {
            Layout::Collection => {
                let free = doc! { "published_at": Bson::Null, "lease_until": { "$lte": now } };
                // `free` re-checks `published_at` per event: a candidate another relay
                // published since it was read no longer matches, so what was read may be used.
                let leased = self
                    .lease(
                        free,
                        "created_at",
                        ("lease_owner", "lease_until"),
                        doc! { "event_type": 1, "payload": 1 },
                        Reread::WhenRaced,
                    )
                    .await?;
                Ok(leased.and_then(|(token, docs)| {
                    let events: Vec<Leased> = docs
                        .iter()
                        .filter_map(|d| {
                            Some(Leased {
                                id: d.get_str("_id").ok()?.to_owned(),
                                event_type: d.get_str("event_type").ok()?.to_owned(),
                                payload: d.get_str("payload").ok()?.to_owned(),
                            })
                        })
                        .collect();
                    (!events.is_empty()).then_some(Batch {
                        token,
                        aggregates: vec![],
                        events,
                    })
                }))
            }
            Layout::Embedded => {
                use embedded::*;
                let free = doc! {
                    SINCE: { "$exists": true },
                    "$or": [ { LEASE_UNTIL: { "$exists": false } }, { LEASE_UNTIL: { "$lte": now } } ],
                };
                // `free` cannot tell an aggregate's events apart: another relay may have
                // published and pulled what was read while a writer added more (the marker
                // stays), so the leased aggregates are always read back.
                let leased = self
                    .lease(
                        free,
                        SINCE,
                        (LEASE_OWNER, LEASE_UNTIL),
                        doc! { EVENTS: 1 },
                        Reread::Always,
                    )
                    .await?;
                // Returned even without events: an empty array under a marker (a relay died
                // between its pull and its clear) is cleared by settling.
                Ok(leased.map(|(token, docs)| Batch {
                    token,
                    events: docs.iter().flat_map(embedded_events).collect(),
                    aggregates: docs
                        .into_iter()
                        .filter_map(|d| d.get("_id").cloned())
                        .collect(),
                }))
            }
        }
    }

    /// Takes the lease on up to `batch_size` documents matching `free`, oldest `order` first,
    /// and answers them (`_id` and `fields`) with the lease's token.
    ///
    /// Three round trips at most: the candidates are read with their content; the lease is one
    /// `update_many` whose filter re-checks `free`, so of two racing relays each document goes
    /// to exactly one; then the leased documents are read back by `_id` (an index, never a
    /// scan), unless `reread` says the read content is still what was leased (see [`Reread`]).
    /// An event a writer adds between the read and the lease is not in this batch: its marker
    /// stays, and the next round takes it.
    async fn lease(
        &self,
        free: Document,
        order: &str,
        (owner, until): (&str, &str),
        fields: Document,
        reread: Reread,
    ) -> Result<Option<(String, Vec<Document>)>, OutboxError> {
        let coll = &self.outbox.coll;
        let candidates: Vec<Document> = coll
            .find(free.clone())
            .sort(doc! { order: 1 })
            .limit(self.config.batch_size)
            .projection(fields.clone())
            .await?
            .try_collect()
            .await?;
        if candidates.is_empty() {
            return Ok(None);
        }
        let ids: Vec<Bson> = candidates
            .iter()
            .filter_map(|d| d.get("_id").cloned())
            .collect();
        let token = uuid::Uuid::new_v4().to_string();
        let lease_ms = i64::try_from(self.config.lease.as_millis()).unwrap_or(30_000);
        let lease_until = DateTime::from_millis(DateTime::now().timestamp_millis() + lease_ms);
        let mut filter = free;
        filter.insert("_id", doc! { "$in": ids.clone() });
        let taken = coll
            .update_many(
                filter,
                doc! { "$set": { owner: &token, until: lease_until } },
            )
            .await?;
        if taken.matched_count == 0 {
            return Ok(None);
        }
        if reread == Reread::WhenRaced && taken.matched_count == candidates.len() as u64 {
            return Ok(Some((token, candidates)));
        }
        let leased: Vec<Document> = coll
            .find(doc! { "_id": { "$in": ids }, owner: &token })
            .sort(doc! { order: 1 })
            .projection(fields)
            .await?
            .try_collect()
            .await?;
        Ok((!leased.is_empty()).then_some((token, leased)))
    }

    /// Publishes a leased batch, waits for every confirm, then marks the acked events published
    /// and hands the rest back (lease released) for the next round.
    async fn publish(&self, channel: &Channel, batch: Batch) -> RoundOutcome {
        let Batch {
            token,
            aggregates,
            events,
        } = batch;
        let mut pending = Vec::with_capacity(events.len());
        let mut failed: Vec<String> = Vec::new();
        for event in events {
            if !failed.is_empty() {
                // The channel already failed: do not keep writing into it.
                failed.push(event.id);
                continue;
            }
            let props = BasicProperties::default()
                .with_content_type("application/json".into())
                .with_delivery_mode(2) // persistent
                .with_message_id(event.id.clone().into())
                .with_type(event.event_type.clone().into())
                .with_app_id(self.name.clone().into());
            match channel
                .basic_publish(
                    crate::events::EXCHANGE.into(),
                    event.event_type.clone().into(),
                    BasicPublishOptions::default(),
                    event.payload.as_bytes(),
                    props,
                )
                .await
            {
                Ok(confirm) => pending.push((event.id, confirm)),
                Err(e) => {
                    tracing::warn!(relay = %self.name, error = %e, "publish failed");
                    failed.push(event.id);
                }
            }
        }
        let mut acked: Vec<String> = Vec::with_capacity(pending.len());
        for (id, confirm) in pending {
            match confirm.await {
                Ok(c) if c.is_ack() => acked.push(id),
                Ok(_) => {
                    tracing::warn!(relay = %self.name, event_id = %id, "broker nacked event");
                    failed.push(id);
                }
                Err(e) => {
                    tracing::warn!(relay = %self.name, event_id = %id, error = %e, "no confirm");
                    failed.push(id);
                }
            }
        }
        let outcome = RoundOutcome {
            published: acked.len(),
            failed: failed.len(),
        };
        let settled = match self.outbox.layout {
            Layout::Collection => self.settle(&token, acked, failed).await,
            Layout::Embedded => self.settle_aggregates(&token, aggregates, acked).await,
        };
        if let Err(e) = settled {
            // The lease expires on its own; the events are retried (consumers are idempotent).
            tracing::warn!(relay = %self.name, error = %e, "cannot record publish outcome");
        }
        metrics::counter!("outbox_events_published_total").increment(outcome.published as u64);
        metrics::counter!("outbox_publish_failures_total").increment(outcome.failed as u64);
        outcome
    }

    async fn settle(
        &self,
        token: &str,
        acked: Vec<String>,
        failed: Vec<String>,
    ) -> Result<(), OutboxError> {
        let coll = &self.outbox.coll;
        if !acked.is_empty() {
            coll.update_many(
                doc! { "_id": { "$in": acked }, "lease_owner": token },
                doc! { "$set": { "published_at": DateTime::now(), "lease_owner": Bson::Null } },
            )
            .await?;
        }
        if !failed.is_empty() {
            coll.update_many(
                doc! { "_id": { "$in": failed }, "lease_owner": token },
                doc! {
                    "$set": { "lease_owner": Bson::Null, "lease_until": DateTime::from_millis(0) },
                    "$inc": { "attempts": 1 },
                },
            )
            .await?;
        }
        Ok(())
    }

    /// Embedded: removes the confirmed events from their aggregates, clears the markers of the
    /// aggregates left without events, and frees the lease of the others (an event that failed,
    /// or one added meanwhile, goes out in a later round).
    async fn settle_aggregates(
        &self,
        token: &str,
        aggregates: Vec<Bson>,
        acked: Vec<String>,
    ) -> Result<(), OutboxError> {
        use embedded::*;
        let coll = &self.outbox.coll;
        let mut release = doc! {
            "$unset": { LEASE_OWNER: "" },
            "$set": { LEASE_UNTIL: DateTime::from_millis(0) },
        };
        if !acked.is_empty() {
            release.insert("$pull", doc! { EVENTS: { "_id": { "$in": acked } } });
        }
        coll.update_many(
            doc! { "_id": { "$in": aggregates.clone() }, LEASE_OWNER: token },
            release,
        )
        .await?;
        // Whoever holds these aggregates now, an empty event array means nothing is pending:
        // clearing its markers loses nothing, and an event pushed meanwhile keeps them (the
        // array is then not empty).
        coll.update_many(
            doc! { "_id": { "$in": aggregates }, EVENTS: { "$size": 0 } },
            doc! { "$unset": { EVENTS: "", SINCE: "", LEASE_OWNER: "", LEASE_UNTIL: "" } },
        )
        .await?;
        Ok(())
    }
}

/// Sets `field` inside the `op` section of an update document, keeping what the section holds
/// (an update is built by this crate's callers, never from input).
fn extend_operator(update: &mut Document, op: &str, field: &str, value: impl Into<Bson>) {
    let mut section = match update.remove(op) {
        Some(Bson::Document(d)) => d,
        _ => Document::new(),
    };
    section.insert(field, value);
    update.insert(op, section);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::EventType;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let c = RelayConfig::default();
        assert_eq!(
            next_backoff(Duration::from_millis(100), &c),
            Duration::from_millis(200)
        );
        assert_eq!(
            next_backoff(Duration::from_secs(4), &c),
            Duration::from_secs(5)
        );
        assert_eq!(next_backoff(Duration::ZERO, &c), c.min_backoff);
    }

    #[test]
    fn an_event_joins_the_operators_an_update_has_already() {
        let e = EventEnvelope::new(
            EventType::PaymentRefund,
            "payment-service",
            serde_json::json!({"amount": 1.0}),
        );
        let mut update = doc! { "$push": { "log": "entry" }, "$inc": { "n": 1 } };
        Outbox::add_to_update(&mut update, &e).unwrap();
        let push = update.get_document("$push").unwrap();
        assert_eq!(push.get_str("log").unwrap(), "entry", "kept");
        assert_eq!(
            push.get_document(embedded::EVENTS)
                .unwrap()
                .get_str("_id")
                .unwrap(),
            e.event_id.to_string()
        );
        assert!(
            update
                .get_document("$min")
                .unwrap()
                .contains_key(embedded::SINCE)
        );
        assert_eq!(
            update.get_document("$inc").unwrap().get_i32("n").unwrap(),
            1
        );
    }

    #[test]
    fn stored_document_carries_the_exact_payload() {
        let e = EventEnvelope::new(
            EventType::PaymentSuccess,
            "payment-service",
            serde_json::json!({"amount": 12.5}),
        );
        let d = Outbox::document(&e).unwrap();
        assert_eq!(d.get_str("_id").unwrap(), e.event_id.to_string());
        assert_eq!(d.get_str("event_type").unwrap(), "payment.success");
        let back: EventEnvelope = serde_json::from_str(d.get_str("payload").unwrap()).unwrap();
        assert_eq!(back, e);
        assert_eq!(d.get("published_at"), Some(&Bson::Null));
    }

    #[test]
    fn embedded_events_ride_in_the_aggregates_own_write() {
        let e = EventEnvelope::new(
            EventType::BookingConfirmed,
            "booking-service",
            serde_json::json!({"booking_id": "b1"}),
        );
        let mut fresh = doc! { "_id": "b1" };
        Outbox::add_to_new(&mut fresh, &e).unwrap();
        assert!(fresh.get_datetime(embedded::SINCE).is_ok());
        let events = embedded_events(&fresh);
        assert_eq!(events.len(), 1);
        assert_eq!(events[0].id, e.event_id.to_string());
        assert_eq!(events[0].event_type, "booking.confirmed");
        let back: EventEnvelope = serde_json::from_str(&events[0].payload).unwrap();
        assert_eq!(back, e);

        let mut update = doc! { "$set": { "status": "CONFIRMED" } };
        Outbox::add_to_update(&mut update, &e).unwrap();
        assert!(
            update.get_document("$set").is_ok(),
            "the state change is kept"
        );
        let pushed = update.get_document("$push").unwrap();
        assert_eq!(
            pushed
                .get_document(embedded::EVENTS)
                .unwrap()
                .get_str("_id")
                .unwrap(),
            e.event_id.to_string()
        );
        assert!(
            update
                .get_document("$min")
                .unwrap()
                .get_datetime(embedded::SINCE)
                .is_ok()
        );
        // An aggregate without events has none to publish.
        assert!(embedded_events(&doc! { "_id": "b2" }).is_empty());
    }
}
