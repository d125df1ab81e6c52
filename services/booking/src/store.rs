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
use moviebook_common::{events::EventEnvelope, outbox::Outbox};
use serde::{Deserialize, Serialize};

use crate::{
    domain::BookingStatus,
    error::{BookingError, Result},
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

/// The booking store.
#[derive(Clone)]
pub struct Store {
    client: Client,
    db: Database,
    bookings: Collection<Booking>,
    outbox: Outbox,
}

impl Store {
    pub fn new(client: Client, db: &Database) -> Self {
        Self {
            client,
            db: db.clone(),
            bookings: db.collection(COLLECTION),
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
        self.outbox.ensure_indexes().await?;
        Ok(())
    }

    /// Stores a new booking and its event atomically.
    pub async fn insert(&self, booking: &Booking) -> Result<()> {
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
        .await?;
        self.outbox.wake();
        Ok(())
    }

    pub async fn get(&self, id: &str) -> Result<Option<Booking>> {
        Ok(self.bookings.find_one(doc! { "_id": id }).await?)
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
        let mut update = doc! {
            "$set": {
                "status": BookingStatus::Paying.as_str(),
                "paying_since": now,
                "payment_started": true,
                "updated_at": now,
            }
        };
        if from == BookingStatus::PaymentFailed {
            update.insert("$inc", doc! { "payment_attempt": 1 });
        }
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
        let mut filter = doc! { "_id": id, "status": from.as_str() };
        if from == BookingStatus::Paying {
            filter.insert("paying_since", doc! { "$ne": Bson::Null });
        }
        self.transition_where(filter, to, fields).await
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
            .await?;
        if result.is_some() {
            self.outbox.wake();
        }
        Ok(result)
    }

    /// Takes over a booking stuck in PAYING for reconciliation: only the replica whose update
    /// matches the `paying_since` it saw wins.
    pub async fn lease_stuck(&self, booking: &Booking) -> Result<Option<Booking>> {
        let Some(since) = booking.paying_since else {
            return Ok(None);
        };
        Ok(self
            .bookings
            .find_one_and_update(
                doc! { "_id": &booking.id, "status": BookingStatus::Paying.as_str(), "paying_since": since },
                doc! { "$set": { "paying_since": DateTime::now() } },
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

    /// Runs `body` in a transaction, retrying a few times on transient transaction errors
    /// (write conflicts). The body returns `None` to abort without error.
    async fn in_transaction<T, F>(&self, body: F) -> Result<Option<T>>
    where
        F: for<'a> Fn(
            &'a mut ClientSession,
            &'a Store,
        ) -> futures::future::BoxFuture<'a, Result<Option<T>, TxError>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let mut session = self.client.start_session().await?;
            session.start_transaction().await?;
            match body(&mut session, self).await {
                Ok(Some(v)) => match session.commit_transaction().await {
                    Ok(()) => return Ok(Some(v)),
                    Err(e) if attempt < 4 && is_transient(&e) => continue,
                    Err(e) => return Err(e.into()),
                },
                Ok(None) => {
                    let _ = session.abort_transaction().await;
                    return Ok(None);
                }
                Err(TxError::Mongo(e)) if attempt < 4 && is_transient(&e) => {
                    let _ = session.abort_transaction().await;
                    continue;
                }
                Err(e) => {
                    let _ = session.abort_transaction().await;
                    return Err(e.into());
                }
            }
        }
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

fn is_transient(e: &mongodb::error::Error) -> bool {
    e.contains_label(mongodb::error::TRANSIENT_TRANSACTION_ERROR)
        || e.contains_label(mongodb::error::UNKNOWN_TRANSACTION_COMMIT_RESULT)
}
