//! Every MongoDB query of the booking service. State changes are conditional updates
//! (`{_id, status: <expected>}`), so two replicas or two concurrent requests can never both
//! move a booking out of the same state.
//!
//! A change that publishes an event carries it inside the booking document (the outbox inside
//! the aggregate, [`moviebook_common::outbox::embedded`]): creating a booking is one insert, and
//! each transition one conditional single-document update that sets the new state and appends
//! its event. No multi-document transaction, so nothing can commit halfway. Events written by
//! earlier versions to the `outbox` collection are still relayed from there
//! ([`Store::legacy_outbox`]).

use bson::{Bson, DateTime, Document, doc};
use futures::TryStreamExt;
use mongodb::{
    Collection, Database, IndexModel,
    options::{IndexOptions, ReturnDocument},
};
use moviebook_common::{events::EventEnvelope, outbox::Outbox, txn::TxnFailure};
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
    db: Database,
    bookings: Collection<Booking>,
    /// The same collection untyped: writes that carry the outbox fields.
    documents: Collection<Document>,
    keys: Collection<KeyRecord>,
    outbox: Outbox,
    legacy_outbox: Outbox,
}

/// Which claim a transition must still hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Pin {
    /// The booking is in the expected state.
    Status,
    /// ... and under the same PAYING claim (fencing token).
    Fence,
}

impl Store {
    pub fn new(db: &Database) -> Self {
        Self {
            db: db.clone(),
            bookings: db.collection(COLLECTION),
            documents: db.collection(COLLECTION),
            keys: db.collection(IDEMPOTENCY_KEYS),
            outbox: Outbox::embedded(db.collection(COLLECTION)),
            legacy_outbox: Outbox::new(db),
        }
    }

    /// Readiness: the database answers.
    pub async fn ping(&self) -> mongodb::error::Result<()> {
        moviebook_common::mongo::ping(&self.db).await
    }

    /// The booking.* events waiting inside the bookings.
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The `outbox` collection of versions before the events moved into the bookings: still
    /// relayed, so events written before an upgrade are published after it.
    pub fn legacy_outbox(&self) -> &Outbox {
        &self.legacy_outbox
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
        self.legacy_outbox.ensure_indexes().await?;
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

    /// Stores a new booking with its event: one insert, atomic. [`TxnFailure::CommitUnknown`]
    /// means the insert may have happened (no answer from the server): the caller reads before
    /// compensating anything.
    pub async fn insert(&self, booking: &Booking) -> Result<(), TxnFailure<BookingError>> {
        let mut document = bson::to_document(booking)
            .map_err(|e| TxnFailure::Failed(BookingError::internal(e)))?;
        if let Some(e) = booking.event() {
            Outbox::add_to_new(&mut document, &e)
                .map_err(|e| TxnFailure::Failed(BookingError::internal(e)))?;
        }
        match self.documents.insert_one(document).await {
            Ok(_) => {
                self.outbox.wake();
                Ok(())
            }
            Err(e) if moviebook_common::mongo::write_refused(&e) => {
                Err(TxnFailure::Failed(e.into()))
            }
            Err(e) => Err(TxnFailure::CommitUnknown(e.into())),
        }
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
        self.claim(id, from, None).await
    }

    /// [`Store::claim_payment`] of a booking that belongs to `user_id`: the ownership check of
    /// a payment in the same write, so paying needs no read first. `None` also when the
    /// booking is someone else's.
    pub async fn claim_payment_of(
        &self,
        id: &str,
        from: BookingStatus,
        user_id: &str,
    ) -> Result<Option<Booking>> {
        self.claim(id, from, Some(user_id)).await
    }

    async fn claim(
        &self,
        id: &str,
        from: BookingStatus,
        user_id: Option<&str>,
    ) -> Result<Option<Booking>> {
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
            .find_one_and_update(claim_filter(id, from, user_id, now), update)
            .return_document(ReturnDocument::After)
            .await?)
    }

    /// Moves `booking` from `from` to `to`, setting `fields` too, with the event of the new
    /// state in the same single-document write. `None` when the booking was not in `from`.
    pub async fn transition(
        &self,
        booking: &Booking,
        from: BookingStatus,
        to: BookingStatus,
        fields: Document,
    ) -> Result<Option<Booking>> {
        if from == BookingStatus::Paying {
            // Leaving PAYING needs the claim's fencing token: transition_claimed.
            return Err(BookingError::internal("unfenced transition out of PAYING"));
        }
        let mut current = booking.clone();
        if current.status != from {
            // A copy read in another state: whether the booking is in `from` now, it tells.
            match self.get(&booking.id).await? {
                Some(fresh) if fresh.status == from => current = fresh,
                _ => return Ok(None),
            }
        }
        self.apply(current, Pin::Status, to, fields).await
    }

    /// Moves a PAYING booking on for the claimant that holds `claimed`'s fencing token. `None`
    /// when the booking left PAYING or another claim took it over.
    pub async fn transition_claimed(
        &self,
        claimed: &Booking,
        to: BookingStatus,
        fields: Document,
    ) -> Result<Option<Booking>> {
        if claimed.status != BookingStatus::Paying {
            return Ok(None);
        }
        self.apply(claimed.clone(), Pin::Fence, to, fields).await
    }

    /// One transition as one conditional update. The event is built from `current` with the
    /// change applied locally, so the update also pins every field of the event's data that can
    /// change ([`event_pins`]): a copy that is stale in one of them matches nothing, and is read
    /// again (at most a few times) while the booking is still where the caller expects it.
    async fn apply(
        &self,
        mut current: Booking,
        pin: Pin,
        to: BookingStatus,
        fields: Document,
    ) -> Result<Option<Booking>> {
        for _ in 0..3 {
            let now = DateTime::now();
            let set = transition_set(fields.clone(), to, now);
            let after = applied(&current, &set)?;
            let mut filter = event_pins(&current);
            if pin == Pin::Fence {
                filter.insert("fence", fence_is(current.fence));
            }
            let mut update = doc! { "$set": set };
            if let Some(e) = after.event() {
                Outbox::add_to_update(&mut update, &e).map_err(BookingError::internal)?;
            }
            match self.documents.update_one(filter, update).await {
                Ok(r) if r.matched_count == 1 => {
                    self.outbox.wake();
                    return Ok(Some(after));
                }
                Ok(_) => match self.get(&current.id).await? {
                    Some(fresh)
                        if fresh.status == current.status
                            && (pin == Pin::Status || fresh.fence == current.fence) =>
                    {
                        current = fresh;
                    }
                    _ => return Ok(None),
                },
                Err(e) if moviebook_common::mongo::write_refused(&e) => return Err(e.into()),
                Err(e) => {
                    // No answer: the update may have landed. The booking tells, by our exact
                    // `updated_at`; a transition that happened is answered as such.
                    return match self.get(&current.id).await {
                        Ok(Some(b)) if b.status == to && b.updated_at == now => Ok(Some(b)),
                        _ => Err(e.into()),
                    };
                }
            }
        }
        Err(BookingError::Unavailable {
            service: "database",
            message: "the booking is changing concurrently; retry".into(),
        })
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
}

/// The `$set` of a transition to `to` at `now`: the caller's `fields`, the state, the time, and
/// the end of a PAYING claim's clock when leaving PAYING. Pure.
fn transition_set(mut fields: Document, to: BookingStatus, now: DateTime) -> Document {
    fields.insert("status", to.as_str());
    fields.insert("updated_at", now);
    if to != BookingStatus::Paying {
        fields.insert("paying_since", Bson::Null);
    }
    fields
}

/// `current` with `set` applied: what the update makes of it. Pure.
fn applied(current: &Booking, set: &Document) -> Result<Booking> {
    let mut d = bson::to_document(current).map_err(BookingError::internal)?;
    for (k, v) in set {
        d.insert(k.clone(), v.clone());
    }
    bson::from_document(d).map_err(BookingError::internal)
}

/// The filter of a transition of `current`: its id and state, and the values of the event
/// data's fields that a write can change after creation (the rest never changes). Pure.
fn event_pins(current: &Booking) -> Document {
    let opt = |v: &Option<String>| v.clone().map_or(Bson::Null, Bson::String);
    doc! {
        "_id": &current.id,
        "status": current.status.as_str(),
        "transaction_id": opt(&current.transaction_id),
        "refund_id": opt(&current.refund_id),
        "hold_expires_at": current.hold_expires_at,
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

/// Which booking a payment claim may take: the one named, in `from`, with a live hold, and,
/// for a caller paying their own booking, theirs.
fn claim_filter(id: &str, from: BookingStatus, user_id: Option<&str>, now: DateTime) -> Document {
    let mut filter = doc! { "_id": id, "status": from.as_str(), "hold_expires_at": { "$gt": now } };
    if let Some(user_id) = user_id {
        filter.insert("user_id", user_id);
    }
    filter
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_for_an_owner_matches_only_their_booking() {
        let now = DateTime::now();
        let anyone = claim_filter("b1", BookingStatus::PendingPayment, None, now);
        assert_eq!(
            anyone,
            doc! { "_id": "b1", "status": "PENDING_PAYMENT", "hold_expires_at": { "$gt": now } }
        );
        let owner = claim_filter("b1", BookingStatus::PaymentFailed, Some("u"), now);
        assert_eq!(owner.get_str("user_id"), Ok("u"));
        assert_eq!(owner.get_str("status"), Ok("PAYMENT_FAILED"));
        assert_eq!(owner.get_str("_id"), Ok("b1"));
    }

    fn paying() -> Booking {
        let now = DateTime::now();
        Booking {
            id: "b1".into(),
            user_id: "u".into(),
            user_email: Some("u@example.com".into()),
            showtime_id: "s".into(),
            movie_title: "M".into(),
            cinema_name: "C".into(),
            start_time: 1_800_000_000,
            seats: vec!["A1".into()],
            total_amount: 12.5,
            currency: "USD".into(),
            status: BookingStatus::Paying,
            lock_id: "l".into(),
            hold_expires_at: now,
            transaction_id: None,
            payment_attempt: 0,
            payment_started: true,
            paying_since: Some(now),
            fence: 3,
            release_pending: false,
            refund_intent: false,
            cancel_requested_at: None,
            repair_attempts: 0,
            repair_after: None,
            failure_reason: None,
            refund_id: None,
            created_at: now,
            updated_at: now,
            confirmed_at: None,
            cancelled_at: None,
        }
    }

    #[test]
    fn the_event_is_built_from_the_state_the_update_writes() {
        let before = paying();
        let now = DateTime::from_millis(before.updated_at.timestamp_millis() + 5);
        let set = transition_set(
            doc! { "transaction_id": "tx-9", "confirmed_at": now },
            BookingStatus::Confirmed,
            now,
        );
        assert_eq!(set.get_str("status").unwrap(), "CONFIRMED");
        assert_eq!(
            set.get("paying_since"),
            Some(&Bson::Null),
            "the claim's clock ends"
        );
        let after = applied(&before, &set).unwrap();
        assert_eq!(after.status, BookingStatus::Confirmed);
        assert_eq!(after.transaction_id.as_deref(), Some("tx-9"));
        assert_eq!((after.updated_at, after.paying_since), (now, None));
        assert_eq!(
            (after.fence, after.seats.clone()),
            (3, before.seats.clone())
        );
        let event = after
            .event()
            .expect("CONFIRMED publishes booking.confirmed");
        assert_eq!(event.event_type, "booking.confirmed");
        assert_eq!(event.data["transaction_id"], "tx-9");
        assert_eq!(event.data["status"], "CONFIRMED");
    }

    #[test]
    fn staying_in_paying_keeps_the_claims_clock() {
        let set = transition_set(doc! {}, BookingStatus::Paying, DateTime::now());
        assert!(set.get("paying_since").is_none());
    }

    #[test]
    fn the_filter_pins_what_the_event_carries_and_can_change() {
        let mut b = paying();
        b.refund_id = Some("r1".into());
        let pins = event_pins(&b);
        assert_eq!(pins.get_str("_id").unwrap(), "b1");
        assert_eq!(pins.get_str("status").unwrap(), "PAYING");
        // Unset: only a booking that still has none matches (null matches a missing field).
        assert_eq!(pins.get("transaction_id"), Some(&Bson::Null));
        assert_eq!(pins.get_str("refund_id").unwrap(), "r1");
        assert_eq!(
            pins.get_datetime("hold_expires_at").unwrap(),
            &b.hold_expires_at
        );
    }
}
