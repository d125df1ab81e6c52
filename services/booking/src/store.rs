//! Every MongoDB query of the booking service. State changes are conditional updates
//! (`{_id, status: <expected>}`), so two replicas or two concurrent requests can never both
//! move a booking out of the same state; each change that publishes an event writes it to the
//! outbox in the same transaction.

use bson::{Bson, DateTime, Document, doc};
use futures::TryStreamExt;
use mongodb::{
    Client, ClientSession, Collection, Database, IndexModel,
    options::{IndexOptions, ReturnDocument},
};
use moviebook_common::{
    events::EventEnvelope,
    outbox::Outbox,
    txn::{self, TxnFailure},
};
use serde::{Deserialize, Serialize};

use crate::{
    domain::BookingStatus,
    error::{BookingError, Result},
    idempotency::StoredError,
};

pub const COLLECTION: &str = "bookings";

/// A booking as stored. The catalogue facts (movie, cinema, start time) are copied in at
/// creation so events and notifications need no further lookups.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Booking {
    #[serde(rename = "_id")]
    pub id: String,
    pub user_id: String,
    #[serde(default)]
    pub user_email: Option<String>,
    pub showtime_id: String,
    #[serde(default)]
    pub movie_title: String,
    #[serde(default)]
    pub cinema_name: String,
    /// Unix seconds.
    #[serde(default)]
    pub start_time: i64,
    pub seats: Vec<String>,
    pub total_amount: f64,
    pub currency: String,
    pub status: BookingStatus,
    pub lock_id: String,
    pub hold_expires_at: DateTime,
    #[serde(default)]
    pub transaction_id: Option<String>,
    /// Declined attempts so far; the next payment uses a fresh idempotency key.
    #[serde(default)]
    pub payment_attempt: i32,
    /// Whether a payment request was ever sent (the sweeper then checks for a charge to
    /// refund before expiring).
    #[serde(default)]
    pub payment_started: bool,
    #[serde(default)]
    pub paying_since: Option<DateTime>,
    /// The fencing token of the current PAYING claim. Every claim (a payment attempt, the
    /// reconciler's takeover of a stuck payment) increments it, and every later write of that
    /// claimant must match it: a claimant that lost the booking to another writes nothing, so a
    /// live processPayment and the reconciler can never both finish.
    #[serde(default)]
    pub fence: i64,
    /// Seats a terminal booking must still return to sale (ReleaseBookedSeats failed): the
    /// sweeper retries until the cinema confirms.
    #[serde(default)]
    pub release_pending: bool,
    /// Set (under the claim's fence) before a PAYING booking's charge is refunded: the
    /// reconciler then never rolls it forward to CONFIRMED.
    #[serde(default)]
    pub refund_intent: bool,
    /// When the user asked to cancel this CONFIRMED booking: until it is CANCELLED, the sweeper
    /// carries the cancellation (refund, seats back) to its end.
    #[serde(default)]
    pub cancel_requested_at: Option<DateTime>,
    /// Compensation attempts that failed so far, and when to try next (exponential backoff).
    #[serde(default)]
    pub repair_attempts: i32,
    #[serde(default)]
    pub repair_after: Option<DateTime>,
    #[serde(default)]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub refund_id: Option<String>,
    pub created_at: DateTime,
    pub updated_at: DateTime,
    #[serde(default)]
    pub confirmed_at: Option<DateTime>,
    #[serde(default)]
    pub cancelled_at: Option<DateTime>,
}

impl Booking {
    /// The `data` of this booking's events (contracts: booking.* data).
    pub fn event_data(&self) -> serde_json::Value {
        let start_time = chrono::DateTime::from_timestamp(self.start_time, 0)
            .map(|t| t.to_rfc3339())
            .unwrap_or_default();
        let mut data = serde_json::json!({
            "booking_id": self.id,
            "user_id": self.user_id,
            "user_email": self.user_email,
            "showtime_id": self.showtime_id,
            "movie_title": self.movie_title,
            "cinema_name": self.cinema_name,
            "start_time": start_time,
            "seats": self.seats,
            "total_amount": self.total_amount,
            "currency": self.currency,
            "status": self.status.as_str(),
            "lock_id": self.lock_id,
        });
        if self.status.holds_seats()
            && let Some(obj) = data.as_object_mut()
        {
            obj.insert(
                "expires_at".into(),
                self.hold_expires_at.to_chrono().to_rfc3339().into(),
            );
        }
        if let (Some(t), Some(obj)) = (&self.transaction_id, data.as_object_mut()) {
            obj.insert("transaction_id".into(), t.clone().into());
        }
        if let (Some(r), Some(obj)) = (&self.refund_id, data.as_object_mut()) {
            obj.insert("refund_id".into(), r.clone().into());
        }
        data
    }

    /// The event for the state this booking is in, if that state publishes one.
    pub fn event(&self) -> Option<EventEnvelope> {
        self.status
            .event()
            .map(|t| EventEnvelope::new(t, crate::SERVICE_NAME, self.event_data()))
    }
}

pub const IDEMPOTENCY_KEYS: &str = "idempotency_keys";

/// A client idempotency key of createBooking / processPayment (see [`crate::idempotency`]).
/// Unique per `(user_id, key)`: of concurrent first uses exactly one insert wins.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyRecord {
    #[serde(rename = "_id")]
    pub id: String,
    pub user_id: String,
    pub key: String,
    pub fingerprint: String,
    /// The booking this key creates or pays.
    pub booking_id: String,
    /// Whether the first request finished with a definite answer (success or `outcome`).
    #[serde(default)]
    pub done: bool,
    #[serde(default)]
    pub outcome: Option<StoredError>,
    pub created_at: DateTime,
    pub updated_at: DateTime,
}

impl KeyRecord {
    pub fn new(user_id: &str, key: &str, fingerprint: String, booking_id: String) -> Self {
        let now = DateTime::now();
        Self {
            id: uuid::Uuid::new_v4().to_string(),
            user_id: user_id.to_owned(),
            key: key.to_owned(),
            fingerprint,
            booking_id,
            done: false,
            outcome: None,
            created_at: now,
            updated_at: now,
        }
    }
}

/// The booking store.
#[derive(Clone)]
pub struct Store {
    client: Client,
    db: Database,
    bookings: Collection<Booking>,
    keys: Collection<KeyRecord>,
    outbox: Outbox,
}

impl Store {
    pub fn new(client: Client, db: &Database) -> Self {
        Self {
            client,
            db: db.clone(),
            bookings: db.collection(COLLECTION),
            keys: db.collection(IDEMPOTENCY_KEYS),
            outbox: Outbox::new(db),
        }
    }

    /// Readiness: the database answers.
    pub async fn ping(&self) -> mongodb::error::Result<()> {
        moviebook_common::mongo::ping(&self.db).await
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// Indexes for the queries below and the outbox's. Part of `migrate`.
    pub async fn ensure_indexes(&self) -> anyhow::Result<()> {
        self.bookings
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "user_id": 1, "created_at": -1 })
                    .options(IndexOptions::builder().name("by_user".to_owned()).build())
                    .build(),
            )
            .await?;
        self.bookings
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "status": 1, "hold_expires_at": 1 })
                    .options(
                        IndexOptions::builder()
                            .name("by_status_expiry".to_owned())
                            .build(),
                    )
                    .build(),
            )
            .await?;
        for (field, name) in [
            ("release_pending", "by_release_pending"),
            ("cancel_requested_at", "by_cancel_requested"),
        ] {
            self.bookings
                .create_index(
                    IndexModel::builder()
                        .keys(doc! { field: 1 })
                        .options(IndexOptions::builder().name(name.to_owned()).build())
                        .build(),
                )
                .await?;
        }
        self.keys
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "user_id": 1, "key": 1 })
                    .options(
                        IndexOptions::builder()
                            .name("idempotency_key_unique".to_owned())
                            .unique(true)
                            .build(),
                    )
                    .build(),
            )
            .await?;
        self.outbox.ensure_indexes().await?;
        Ok(())
    }

    /// Takes `record`'s key for its request: `None` when this insert won, else the record that
    /// holds the key already.
    pub async fn claim_key(&self, record: &KeyRecord) -> Result<Option<KeyRecord>> {
        for _ in 0..3 {
            match self.keys.insert_one(record).await {
                Ok(_) => return Ok(None),
                Err(e) if moviebook_common::mongo::is_duplicate_key(&e) => {
                    let filter = doc! { "user_id": &record.user_id, "key": &record.key };
                    if let Some(existing) = self.keys.find_one(filter).await? {
                        return Ok(Some(existing));
                    }
                    // Dropped in between (its request failed transiently): take it again.
                }
                Err(e) => return Err(e.into()),
            }
        }
        Err(BookingError::Unavailable {
            service: "database",
            message: "the idempotency key is contended; retry".into(),
        })
    }

    /// Records the first request's definite answer (`None` = it succeeded).
    pub async fn finish_key(&self, id: &str, outcome: Option<&StoredError>) -> Result<()> {
        let outcome = match outcome {
            Some(o) => bson::to_bson(o).map_err(BookingError::internal)?,
            None => Bson::Null,
        };
        self.keys
            .update_one(
                doc! { "_id": id, "done": false },
                doc! { "$set": { "done": true, "outcome": outcome, "updated_at": DateTime::now() } },
            )
            .await?;
        Ok(())
    }

    /// Gives an unfinished key back (its request failed transiently and left nothing behind),
    /// so that a retry starts afresh.
    pub async fn drop_key(&self, id: &str) -> Result<()> {
        self.keys
            .delete_one(doc! { "_id": id, "done": false })
            .await?;
        Ok(())
    }

    /// Stores a new booking and its event atomically. [`TxnFailure::CommitUnknown`] means it
    /// may exist: the caller reads before compensating anything.
    pub async fn insert(&self, booking: &Booking) -> Result<(), TxnFailure<BookingError>> {
        let event = booking.event();
        self.in_transaction(|session, store| {
            let booking = booking.clone();
            let event = event.clone();
            Box::pin(async move {
                store
                    .bookings
                    .insert_one(&booking)
                    .session(&mut *session)
                    .await?;
                if let Some(e) = &event {
                    store.enqueue(session, e).await?;
                }
                Ok(Some(()))
            })
        })
        .await
        .map_err(|f| match f {
            TxnFailure::Failed(e) => TxnFailure::Failed(e.into()),
            TxnFailure::CommitUnknown(e) => TxnFailure::CommitUnknown(e.into()),
        })?;
        self.outbox.wake();
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Option<Booking>> {
        Ok(self.bookings.find_one(doc! { "_id": id }).await?)
    }

    /// Every booking (the audit reads them all; at most a million).
    pub async fn all(&self) -> Result<Vec<Booking>> {
        Ok(self
            .bookings
            .find(doc! {})
            .limit(1_000_000)
            .await?
            .try_collect()
            .await?)
    }

    /// A user's bookings, newest first.
    pub async fn by_user(&self, user_id: &str, limit: i64) -> Result<Vec<Booking>> {
        Ok(self
            .bookings
            .find(doc! { "user_id": user_id })
            .sort(doc! { "created_at": -1 })
            .limit(limit)
            .await?
            .try_collect()
            .await?)
    }

    /// Claims a payable booking for one payment attempt: PENDING_PAYMENT / PAYMENT_FAILED →
    /// PAYING, only while its hold is live. `None` when the booking was not in `from` (someone
    /// else claimed it, or it changed) or the hold has lapsed.
    pub async fn claim_payment(&self, id: &str, from: BookingStatus) -> Result<Option<Booking>> {
        let now = DateTime::now();
        let mut inc = doc! { "fence": 1 };
        if from == BookingStatus::PaymentFailed {
            inc.insert("payment_attempt", 1);
        }
        let update = doc! {
            "$set": {
                "status": BookingStatus::Paying.as_str(),
                "paying_since": now,
                "payment_started": true,
                "updated_at": now,
            },
            "$inc": inc,
        };
        Ok(self
            .bookings
            .find_one_and_update(
                doc! { "_id": id, "status": from.as_str(), "hold_expires_at": { "$gt": now } },
                update,
            )
            .return_document(ReturnDocument::After)
            .await?)
    }

    /// Moves a booking from `from` to `to`, setting `fields` too, and writes the event of the
    /// new state in the same transaction. `None` when the booking was not in `from`.
    pub async fn transition(
        &self,
        id: &str,
        from: BookingStatus,
        to: BookingStatus,
        fields: Document,
    ) -> Result<Option<Booking>> {
        if from == BookingStatus::Paying {
            // Leaving PAYING needs the claim's fencing token: transition_claimed.
            return Err(BookingError::internal("unfenced transition out of PAYING"));
        }
        let filter = doc! { "_id": id, "status": from.as_str() };
        self.transition_where(filter, to, fields).await
    }

    /// Moves a PAYING booking on for the claimant that holds `claimed`'s fencing token. `None`
    /// when the booking left PAYING or another claim took it over.
    pub async fn transition_claimed(
        &self,
        claimed: &Booking,
        to: BookingStatus,
        fields: Document,
    ) -> Result<Option<Booking>> {
        let filter = doc! {
            "_id": &claimed.id,
            "status": BookingStatus::Paying.as_str(),
            "fence": fence_is(claimed.fence),
        };
        self.transition_where(filter, to, fields).await
    }

    /// Sets `fields` on a booking in `status`, without an event (bookkeeping of compensations).
    pub async fn mark(&self, id: &str, status: BookingStatus, fields: Document) -> Result<bool> {
        let r = self
            .bookings
            .update_one(
                doc! { "_id": id, "status": status.as_str() },
                doc! { "$set": fields },
            )
            .await?;
        Ok(r.matched_count == 1)
    }

    /// Records a failed compensation attempt: the next one waits `backoff(attempts)`.
    pub async fn repair_failed(&self, b: &Booking) -> Result<()> {
        let wait = crate::domain::repair_backoff(b.repair_attempts + 1);
        let after = DateTime::from_millis(
            DateTime::now().timestamp_millis()
                + i64::try_from(wait.as_millis()).unwrap_or(i64::MAX / 4),
        );
        self.bookings
            .update_one(
                doc! { "_id": &b.id },
                doc! { "$inc": { "repair_attempts": 1 }, "$set": { "repair_after": after } },
            )
            .await?;
        Ok(())
    }

    /// Bookings whose compensation is due: terminal ones with seats to return, confirmed ones
    /// whose cancellation did not finish (asked before `cancel_cutoff`).
    pub async fn needing_repair(
        &self,
        now: DateTime,
        cancel_cutoff: DateTime,
        limit: i64,
    ) -> Result<Vec<Booking>> {
        let due =
            doc! { "$or": [ { "repair_after": Bson::Null }, { "repair_after": { "$lte": now } } ] };
        Ok(self
            .bookings
            .find(doc! {
                "$and": [
                    { "$or": [
                        { "release_pending": true },
                        { "status": BookingStatus::Confirmed.as_str(), "cancel_requested_at": { "$lte": cancel_cutoff } },
                    ] },
                    due,
                ]
            })
            .limit(limit)
            .await?
            .try_collect()
            .await?)
    }

    /// [`Store::transition`] with an arbitrary filter (it must pin `_id` and `status`).
    pub async fn transition_where(
        &self,
        filter: Document,
        to: BookingStatus,
        fields: Document,
    ) -> Result<Option<Booking>> {
        let now = DateTime::now();
        let mut set = fields;
        set.insert("status", to.as_str());
        set.insert("updated_at", now);
        if to != BookingStatus::Paying {
            set.insert("paying_since", Bson::Null);
        }
        let update = doc! { "$set": set };
        let id = filter.get_str("_id").unwrap_or_default().to_owned();
        let result = self
            .in_transaction(|session, store| {
                let filter = filter.clone();
                let update = update.clone();
                Box::pin(async move {
                    let Some(after) = store
                        .bookings
                        .find_one_and_update(filter, update)
                        .return_document(ReturnDocument::After)
                        .session(&mut *session)
                        .await?
                    else {
                        return Ok(None);
                    };
                    if let Some(e) = after.event() {
                        store.enqueue(session, &e).await?;
                    }
                    Ok(Some(after))
                })
            })
            .await;
        let result = match result {
            Ok(r) => r,
            Err(TxnFailure::Failed(e)) => return Err(e.into()),
            Err(TxnFailure::CommitUnknown(e)) => {
                // The commit may have landed: the booking tells, by our exact `updated_at`. A
                // transition that happened is answered as such, never as an error.
                match self.get(&id).await {
                    Ok(Some(b)) if b.status == to && b.updated_at == now => Some(b),
                    _ => return Err(e.into()),
                }
            }
        };
        if result.is_some() {
            self.outbox.wake();
        }
        Ok(result)
    }

    /// Takes over a booking stuck in PAYING for reconciliation: only the replica whose update
    /// matches the fencing token it saw wins, and the token changes.
    pub async fn lease_stuck(&self, booking: &Booking) -> Result<Option<Booking>> {
        if booking.paying_since.is_none() {
            return Ok(None);
        }
        // A new fencing token: the claimant that stalled can write nothing any more.
        Ok(self
            .bookings
            .find_one_and_update(
                doc! { "_id": &booking.id, "status": BookingStatus::Paying.as_str(), "fence": fence_is(booking.fence) },
                doc! { "$set": { "paying_since": DateTime::now() }, "$inc": { "fence": 1 } },
            )
            .return_document(ReturnDocument::After)
            .await?)
    }

    /// Unpaid bookings whose hold lapsed at or before `now`.
    pub async fn expired_holds(&self, now: DateTime, limit: i64) -> Result<Vec<Booking>> {
        Ok(self
            .bookings
            .find(doc! {
                "status": { "$in": [BookingStatus::PendingPayment.as_str(), BookingStatus::PaymentFailed.as_str()] },
                "hold_expires_at": { "$lte": now },
            })
            .sort(doc! { "hold_expires_at": 1 })
            .limit(limit)
            .await?
            .try_collect()
            .await?)
    }

    /// Bookings left in PAYING since before `cutoff` whose hold lapsed (a replica died mid-payment).
    pub async fn stuck_paying(
        &self,
        now: DateTime,
        cutoff: DateTime,
        limit: i64,
    ) -> Result<Vec<Booking>> {
        Ok(self
            .bookings
            .find(doc! {
                "status": BookingStatus::Paying.as_str(),
                "hold_expires_at": { "$lte": now },
                "paying_since": { "$lte": cutoff },
            })
            .limit(limit)
            .await?
            .try_collect()
            .await?)
    }

    async fn enqueue(&self, session: &mut ClientSession, event: &EventEnvelope) -> Result<()> {
        self.outbox
            .enqueue(session, event)
            .await
            .map_err(|e| match e {
                moviebook_common::outbox::OutboxError::Mongo(m) => BookingError::from(m),
                other => BookingError::internal(other),
            })
    }

    /// Runs `body` in a transaction with the shared helper's rules (commit retried alone when
    /// its outcome is unknown, the body only on transient errors). The body answers `None` when
    /// its conditional update matched nothing (that transaction wrote nothing).
    async fn in_transaction<T, F>(&self, body: F) -> Result<Option<T>, TxnFailure<TxError>>
    where
        F: for<'a> FnMut(
            &'a mut ClientSession,
            &'a Store,
        ) -> futures::future::BoxFuture<'a, Result<Option<T>, TxError>>,
    {
        txn::transaction(&self.client, self, body).await
    }
}

/// Errors inside a transaction body: a raw driver error (inspected for retryability) or ours.
pub enum TxError {
    Mongo(mongodb::error::Error),
    Booking(BookingError),
}

impl From<mongodb::error::Error> for TxError {
    fn from(e: mongodb::error::Error) -> Self {
        Self::Mongo(e)
    }
}

impl From<BookingError> for TxError {
    fn from(e: BookingError) -> Self {
        Self::Booking(e)
    }
}

impl From<TxError> for BookingError {
    fn from(e: TxError) -> Self {
        match e {
            TxError::Mongo(m) => m.into(),
            TxError::Booking(b) => b,
        }
    }
}

/// A filter on the fencing token; bookings written before the token existed have none (= 0).
fn fence_is(fence: i64) -> Bson {
    if fence == 0 {
        Bson::Document(doc! { "$in": [0_i64, Bson::Null] })
    } else {
        Bson::Int64(fence)
    }
}

impl txn::Labelled for TxError {
    fn transient(&self) -> bool {
        matches!(self, Self::Mongo(e) if e.transient())
    }

    fn unknown_commit(&self) -> bool {
        matches!(self, Self::Mongo(e) if e.unknown_commit())
    }
}
