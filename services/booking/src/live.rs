//! The live seat map behind the `seatsChanged` subscription.
//!
//! Fed by the `booking.*` events on RabbitMQ, so a change made by any replica reaches every
//! replica's subscribers: each process consumes them from its own exclusive, auto-deleted queue
//! (nothing accumulates when it is gone), and no client ever makes the service poll a store.
//!
//! Per event the seats' new status follows from its type ([`seat_change`]): held →
//! `LOCKED`, sold → `BOOKED`, released or returned → `AVAILABLE`. A release event is written
//! just before the cinema lets the seats go, and by then another customer may already hold
//! them, so after a release the affected seats are read once from the cinema (one `GetSeatMap`
//! per event and pod, only when someone on this pod watches that showtime) and their true
//! status is sent again.
//!
//! Bounded everywhere: connections per pod (a semaphore, the upgrade answers 503 past it),
//! subscriptions per connection (a semaphore in the connection's data), and a fixed-size
//! broadcast buffer per watched showtime. A subscriber that falls behind (a slow client stops
//! polling its stream) does not make the buffer grow: it skips what it missed and gets the
//! whole current map instead (as after a broker reconnect, when events may have been missed).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::{StreamExt, stream::BoxStream};
use moviebook_common::{
    events::{EventEnvelope, EventType},
    shutdown::Shutdown,
};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, broadcast};

use crate::{clients::CinemaClient, error::BookingError, graphql::types::SeatStatus};

/// One seat's status as the subscription sends it.
#[derive(Debug, Clone, PartialEq, Eq, async_graphql::SimpleObject)]
pub struct SeatState {
    pub seat_number: String,
    pub status: SeatStatus,
}

/// One `seatsChanged` message.
#[derive(Debug, Clone, PartialEq, Eq, async_graphql::SimpleObject)]
pub struct SeatsChanged {
    pub showtime_id: async_graphql::ID,
    pub seats: Vec<SeatState>,
}

/// What the feed tells a showtime's subscribers.
#[derive(Debug, Clone)]
enum Signal {
    Seats(Arc<Vec<SeatState>>),
    /// Events may have been missed (broker reconnect): send the whole map.
    Resync,
}

/// Limits of the live feed (`LIVE_*` variables, see config.rs).
#[derive(Debug, Clone, Copy)]
pub struct LiveLimits {
    pub max_connections: usize,
    pub max_subscriptions_per_connection: usize,
    /// Subscriptions one connection may start per minute (each start reads the seat map).
    pub max_starts_per_minute: usize,
    /// Messages buffered per watched showtime before slow subscribers skip to a full map.
    pub buffer: usize,
    /// How long after a release event the seats are read back from the cinema.
    pub recheck_after: Duration,
}

impl Default for LiveLimits {
    fn default() -> Self {
        Self {
            max_connections: 2000,
            max_subscriptions_per_connection: 8,
            max_starts_per_minute: 60,
            buffer: 64,
            recheck_after: Duration::from_millis(750),
        }
    }
}

/// The status an event gives its seats, or `None` for events that do not move seats.
pub fn seat_change(kind: EventType) -> Option<SeatStatus> {
    match kind {
        EventType::BookingPendingPayment => Some(SeatStatus::Locked),
        EventType::BookingConfirmed => Some(SeatStatus::Booked),
        EventType::BookingCancelled | EventType::BookingExpired | EventType::BookingRefunded => {
            Some(SeatStatus::Available)
        }
        _ => None,
    }
}

/// The showtime and seats a booking event is about (its `data.showtime_id`, `data.seats`).
pub fn event_seats(envelope: &EventEnvelope) -> Option<(String, Vec<String>)> {
    let showtime = envelope.data.get("showtime_id")?.as_str()?.to_owned();
    let seats: Vec<String> = envelope
        .data
        .get("seats")?
        .as_array()?
        .iter()
        .filter_map(|s| s.as_str().map(str::to_owned))
        .collect();
    (!showtime.is_empty() && !seats.is_empty()).then_some((showtime, seats))
}

/// What one WebSocket connection may do (put into its connection data): how many
/// subscriptions it holds at once, and how many it may start per minute. The second bound
/// exists because every start reads the whole seat map from the cinema; without it a client
/// could subscribe and complete in a loop and turn one socket into unlimited `GetSeatMap`
/// calls, which over HTTP the gateway's rate limit would have stopped.
#[derive(Clone)]
pub struct ConnectionLimits {
    slots: Arc<Semaphore>,
    starts: Arc<Mutex<(std::time::Instant, usize)>>,
    starts_per_minute: usize,
}

/// Why a connection may not start another subscription now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartRefused {
    /// It already holds its maximum of concurrent subscriptions.
    TooMany,
    /// It started its maximum per minute; it may again when the minute is over.
    TooFast,
}

impl ConnectionLimits {
    pub fn new(limits: &LiveLimits) -> Self {
        Self {
            slots: Arc::new(Semaphore::new(limits.max_subscriptions_per_connection)),
            starts: Arc::new(Mutex::new((std::time::Instant::now(), 0))),
            starts_per_minute: limits.max_starts_per_minute,
        }
    }

    /// Spends one of this minute's starts (every operation sent over the socket spends one).
    pub fn spend_start(&self) -> Result<(), StartRefused> {
        // a panic elsewhere cannot leave this pair inconsistent: take the value
        let mut window = self.starts.lock().unwrap_or_else(|e| e.into_inner());
        let now = std::time::Instant::now();
        if now.duration_since(window.0) >= Duration::from_secs(60) {
            *window = (now, 0);
        }
        if window.1 >= self.starts_per_minute {
            return Err(StartRefused::TooFast);
        }
        window.1 += 1;
        Ok(())
    }

    pub fn starts_per_minute(&self) -> usize {
        self.starts_per_minute
    }

    /// A subscription slot, held by the subscription's stream until it ends.
    pub fn subscription(&self) -> Result<OwnedSemaphorePermit, StartRefused> {
        self.slots
            .clone()
            .try_acquire_owned()
            .map_err(|_| StartRefused::TooMany)
    }
}

/// This process's fan-out of seat changes to its subscribers.
pub struct SeatFeed {
    channels: Mutex<HashMap<String, broadcast::Sender<Signal>>>,
    pub limits: LiveLimits,
    connections: Arc<Semaphore>,
    cinema: CinemaClient,
}

impl SeatFeed {
    pub fn new(cinema: CinemaClient, limits: LiveLimits) -> Arc<Self> {
        Arc::new(Self {
            channels: Mutex::new(HashMap::new()),
            connections: Arc::new(Semaphore::new(limits.max_connections)),
            limits,
            cinema,
        })
    }

    /// A connection slot, or `None` when the pod is full (the upgrade is refused).
    pub fn connection(&self) -> Option<OwnedSemaphorePermit> {
        self.connections.clone().try_acquire_owned().ok()
    }

    /// Open WebSocket connections on this pod.
    pub fn open_connections(&self) -> usize {
        self.limits.max_connections - self.connections.available_permits()
    }

    fn channels(&self) -> std::sync::MutexGuard<'_, HashMap<String, broadcast::Sender<Signal>>> {
        // A panic while holding this lock leaves the map consistent (single inserts/removes).
        self.channels.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn receiver(&self, showtime: &str) -> broadcast::Receiver<Signal> {
        let mut map = self.channels();
        map.retain(|_, tx| tx.receiver_count() > 0);
        map.entry(showtime.to_owned())
            .or_insert_with(|| broadcast::channel(self.limits.buffer).0)
            .subscribe()
    }

    fn send(&self, showtime: &str, signal: Signal) {
        let mut map = self.channels();
        if let Some(tx) = map.get(showtime)
            && tx.send(signal).is_err()
        {
            map.remove(showtime);
        }
    }

    /// Whether anyone on this pod watches the showtime.
    pub fn watched(&self, showtime: &str) -> bool {
        self.channels()
            .get(showtime)
            .is_some_and(|tx| tx.receiver_count() > 0)
    }

    fn resync_all(&self) {
        let map = self.channels();
        for tx in map.values() {
            let _ = tx.send(Signal::Resync);
        }
    }

    async fn current(&self, showtime: &str) -> Option<Vec<SeatState>> {
        match self.cinema.seat_map(showtime).await {
            Ok(map) => Some(
                map.seats
                    .into_iter()
                    .map(|s| SeatState {
                        seat_number: s.seat_number,
                        status: s.status.into(),
                    })
                    .collect(),
            ),
            Err(e) => {
                tracing::warn!(showtime, error = %e, "seat map for the live feed");
                None
            }
        }
    }

    /// Applies one event: its implied statuses now, and for a release the cinema's word a
    /// moment later.
    pub fn apply(self: &Arc<Self>, envelope: &EventEnvelope) {
        let (Some(status), Some((showtime, seats))) =
            (envelope.kind().and_then(seat_change), event_seats(envelope))
        else {
            return;
        };
        if !self.watched(&showtime) {
            return;
        }
        let states = seats
            .iter()
            .map(|s| SeatState {
                seat_number: s.clone(),
                status,
            })
            .collect();
        self.send(&showtime, Signal::Seats(Arc::new(states)));
        if status == SeatStatus::Available {
            let feed = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(feed.limits.recheck_after).await;
                if !feed.watched(&showtime) {
                    return;
                }
                if let Some(all) = feed.current(&showtime).await {
                    let mine: Vec<SeatState> = all
                        .into_iter()
                        .filter(|s| seats.contains(&s.seat_number))
                        .collect();
                    feed.send(&showtime, Signal::Seats(Arc::new(mine)));
                }
            });
        }
    }

    /// The whole current map of a showtime from the cinema (`NOT_FOUND` for an unknown one).
    pub async fn snapshot(&self, showtime: &str) -> Result<Vec<SeatState>, BookingError> {
        let map = self.cinema.seat_map(showtime).await?;
        Ok(map
            .seats
            .into_iter()
            .map(|s| SeatState {
                seat_number: s.seat_number,
                status: s.status.into(),
            })
            .collect())
    }

    /// A subscription to one showtime: the whole map first, then every change; the whole map
    /// again whenever this subscriber fell behind or events may have been missed. The stream
    /// holds `slot` (its connection's subscription permit) until it is dropped.
    pub async fn watch(
        self: &Arc<Self>,
        showtime: String,
        slot: OwnedSemaphorePermit,
    ) -> Result<BoxStream<'static, SeatsChanged>, BookingError> {
        // Listen before reading the map, so nothing that happens in between is lost.
        let rx = self.receiver(&showtime);
        let first = self.snapshot(&showtime).await?;
        let feed = self.clone();
        let id = async_graphql::ID(showtime.clone());
        let rest = futures::stream::unfold((feed, rx, slot), move |(feed, mut rx, slot)| {
            let showtime = showtime.clone();
            async move {
                // whether this subscriber is owed the whole map (it missed changes)
                let mut full = false;
                loop {
                    if full && let Some(all) = feed.current(&showtime).await {
                        return Some((all, (feed, rx, slot)));
                    }
                    // (the cinema did not answer: the map stays owed, the next signal retries)
                    match rx.recv().await {
                        Ok(Signal::Seats(s)) if !full => {
                            return Some(((*s).clone(), (feed, rx, slot)));
                        }
                        // a change after missed ones alone would leave a wrong map: the whole
                        // map, read after it, comes next instead
                        Ok(Signal::Seats(_)) => {}
                        Ok(Signal::Resync) | Err(broadcast::error::RecvError::Lagged(_)) => {
                            full = true;
                        }
                        Err(broadcast::error::RecvError::Closed) => return None,
                    }
                }
            }
        });
        Ok(futures::stream::once(async move { first })
            .chain(rest)
            .map(move |seats| SeatsChanged {
                showtime_id: id.clone(),
                seats,
            })
            .boxed())
    }
}

/// Consumes `booking.*` into the feed until shutdown, reconnecting with backoff; after each
/// (re)connect every subscriber gets the whole map again, since events may have been missed.
pub async fn run_consumer(
    feed: Arc<SeatFeed>,
    rabbitmq_url: String,
    topology: moviebook_common::amqp::Topology,
    shutdown: Shutdown,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let session = consume(&feed, &rabbitmq_url, topology, &shutdown);
        tokio::select! {
            result = session => {
                if let Err(e) = result {
                    tracing::warn!(error = %e, "live seat feed: broker connection lost");
                }
            }
            () = moviebook_common::shutdown::wait(shutdown.clone()) => return,
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = moviebook_common::shutdown::wait(shutdown.clone()) => return,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

async fn consume(
    feed: &Arc<SeatFeed>,
    url: &str,
    topology: moviebook_common::amqp::Topology,
    shutdown: &Shutdown,
) -> lapin::Result<()> {
    let conn = moviebook_common::amqp::connect(url, "booking-service-live").await?;
    let channel = conn.create_channel().await?;
    let mut consumer = moviebook_common::amqp::private_queue(
        &channel,
        topology,
        "booking.*",
        "booking-service-live",
    )
    .await?;
    tracing::info!("live seat feed: consuming booking.*");
    feed.resync_all();
    loop {
        let next = tokio::select! {
            d = consumer.next() => d,
            () = moviebook_common::shutdown::wait(shutdown.clone()) => {
                let _ = conn.close(200, "shutdown".into()).await;
                return Ok(());
            }
        };
        match next {
            Some(Ok(delivery)) => match serde_json::from_slice::<EventEnvelope>(&delivery.data) {
                Ok(envelope) => feed.apply(&envelope),
                Err(e) => tracing::debug!(error = %e, "live seat feed: not an event envelope"),
            },
            Some(Err(e)) => return Err(e),
            None => return Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_move_seats_like_the_booking_life_cycle() {
        assert_eq!(
            seat_change(EventType::BookingPendingPayment),
            Some(SeatStatus::Locked)
        );
        assert_eq!(
            seat_change(EventType::BookingConfirmed),
            Some(SeatStatus::Booked)
        );
        for k in [
            EventType::BookingCancelled,
            EventType::BookingExpired,
            EventType::BookingRefunded,
        ] {
            assert_eq!(seat_change(k), Some(SeatStatus::Available), "{k:?}");
        }
        for k in [
            EventType::PaymentSuccess,
            EventType::PaymentFailed,
            EventType::PaymentRefund,
        ] {
            assert_eq!(seat_change(k), None, "{k:?}");
        }
    }

    #[test]
    fn reads_showtime_and_seats_from_the_event_data() {
        let e = EventEnvelope::new(
            EventType::BookingConfirmed,
            "test",
            serde_json::json!({"showtime_id": "s1", "seats": ["A1", "A2"]}),
        );
        assert_eq!(
            event_seats(&e),
            Some(("s1".into(), vec!["A1".into(), "A2".into()]))
        );
        let none = EventEnvelope::new(
            EventType::BookingConfirmed,
            "test",
            serde_json::json!({"showtime_id": "s1", "seats": []}),
        );
        assert_eq!(event_seats(&none), None);
        let bad = EventEnvelope::new(
            EventType::BookingConfirmed,
            "test",
            serde_json::json!({"seats": "A1"}),
        );
        assert_eq!(event_seats(&bad), None);
    }
}
