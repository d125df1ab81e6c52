//! Booking orchestration: create, pay, cancel, expire — each a sequence of calls to the cinema
//! and payment services with the compensation that keeps them consistent:
//!
//! - seats held but the booking not stored → the hold is released;
//! - paid but the seats cannot be confirmed → the payment is refunded, the booking ends
//!   REFUNDED (never CONFIRMED without seats);
//! - a replica dies mid-payment → the sweeper reconciles the booking from the payment service.
//!
//! Every state change is a conditional update guarded by [`crate::domain::transition`].

use std::{sync::Arc, time::Duration};

use bson::{DateTime, doc};
use moviebook_common::{
    auth::{Claims, JwtKeys},
    proto::GetShowtimeDetailsResponse,
    txn::TxnFailure,
};

use crate::{
    SERVICE_NAME,
    clients::{CinemaClient, PayOutcome, RestClients, TtlCache, outcome_unknown},
    config::Config,
    domain::{
        self, BookingEvent, BookingStatus, parse_id, payment_idempotency_key,
        refund_idempotency_key, round_money, transition,
    },
    error::{BookingError, Result},
    idempotency::{self, Replay, StoredError},
    store::{Booking, KeyRecord, Store},
};

/// A verified caller: the token's claims and the raw token, forwarded to the user and payment
/// services so they apply their own authorisation.
#[derive(Debug, Clone)]
pub struct Caller {
    pub claims: Claims,
    pub token: String,
}

impl Caller {
    fn may_act_for(&self, user_id: &str) -> Result<()> {
        if self.claims.may_act_for(user_id) {
            Ok(())
        } else {
            Err(BookingError::Forbidden(
                "you can only act on your own bookings".into(),
            ))
        }
    }
}

/// Most bookings returned by one list query.
pub const MAX_LIST: i64 = 200;

/// The booking service's core, shared by the GraphQL resolvers and the sweeper.
pub struct Booker {
    pub config: Arc<Config>,
    pub store: Store,
    pub cinema: CinemaClient,
    pub rest: RestClients,
    pub keys: Arc<JwtKeys>,
    users: TtlCache<Option<String>>,
    showtimes: TtlCache<Arc<GetShowtimeDetailsResponse>>,
}

impl Booker {
    /// A step boundary of the crash tests ([`crate::crash`]).
    async fn crash_point(&self, point: &'static str) {
        crate::crash::reached(
            self.config.crash_point.as_deref(),
            self.config.crash_pause,
            point,
        )
        .await;
    }

    pub fn new(
        config: Arc<Config>,
        store: Store,
        cinema: CinemaClient,
        rest: RestClients,
        keys: Arc<JwtKeys>,
    ) -> Self {
        Self {
            users: TtlCache::new(config.lookup_cache, 100_000),
            showtimes: TtlCache::new(config.lookup_cache, 10_000),
            config,
            store,
            cinema,
            rest,
            keys,
        }
    }

    /// Booking's own token for a call to payment (reused for two minutes, shared with the
    /// gRPC calls to cinema: see `JwtKeys::service_token`).
    fn service_token(&self) -> Result<String> {
        self.keys
            .service_token(SERVICE_NAME)
            .map_err(BookingError::internal)
    }

    /// The user's email after checking the user exists (cached briefly: the user service is
    /// asked once per user per `LOOKUP_CACHE_SECONDS`, not once per booking).
    async fn verified_user(&self, caller: &Caller, user_id: &str) -> Result<Option<String>> {
        if let Some(email) = self.users.get(user_id) {
            return Ok(email);
        }
        let user = self.rest.user(&caller.token, user_id).await?;
        let email = user.email.or_else(|| caller.claims.email.clone());
        self.users.put(user_id, email.clone());
        Ok(email)
    }

    async fn showtime(&self, id: &str) -> Result<Arc<GetShowtimeDetailsResponse>> {
        if let Some(s) = self.showtimes.get(id) {
            return Ok(s);
        }
        let s = Arc::new(self.cinema.showtime(id).await?);
        self.showtimes.put(id, s.clone());
        Ok(s)
    }

    /// Loads a booking the caller may see.
    pub async fn booking_for(&self, caller: &Caller, booking_id: &str) -> Result<Booking> {
        let id = parse_id("bookingId", booking_id)?;
        let booking = self
            .store
            .get(&id)
            .await?
            .ok_or_else(|| BookingError::NotFound(format!("booking {id} not found")))?;
        caller.may_act_for(&booking.user_id)?;
        Ok(booking)
    }

    pub async fn user_bookings(&self, caller: &Caller, user_id: &str) -> Result<Vec<Booking>> {
        // A malformed id cannot belong to anyone: answer it as input error, not as forbidden.
        let user_id = parse_id("userId", user_id).or_else(|e| {
            if caller.claims.sub == user_id {
                Ok(user_id.to_owned())
            } else {
                Err(e)
            }
        })?;
        caller.may_act_for(&user_id)?;
        self.store.by_user(&user_id, MAX_LIST).await
    }

    /// createBooking: verify, hold the seats, store the booking with its event; release the
    /// hold if anything after it fails.
    ///
    /// With an idempotency `key` (scoped to the caller) the booking id is the key's: a retry
    /// runs the same steps for the same id (LockSeats replays the same hold, the insert finds
    /// the booking) and so answers the booking the first request made, or its definite error.
    pub async fn create_booking(
        &self,
        caller: &Caller,
        user_id: &str,
        showtime_id: &str,
        seat_numbers: &[String],
        key: Option<String>,
    ) -> Result<Booking> {
        // The token's subject may be a non-UUID service name; users are UUIDs.
        let user_id = parse_id("userId", user_id)?;
        caller.may_act_for(&user_id)?;
        let showtime_id = parse_id("showtimeId", showtime_id)?;
        let seats = domain::validate_seats(seat_numbers, self.config.max_seats)?;
        let fresh_id = uuid::Uuid::new_v4().to_string();
        let Some(key) = key else {
            return self
                .create_with_id(caller, &user_id, &showtime_id, seats, fresh_id)
                .await
                .map_err(|f| f.error);
        };
        let fingerprint = idempotency::create_fingerprint(&showtime_id, &seats);
        let (record, owner) = self.keyed(caller, &key, fingerprint, fresh_id).await?;
        if record.done
            && let Some(done) = self.store.get(&record.booking_id).await?
        {
            return Ok(done);
        }
        match self
            .create_with_id(
                caller,
                &user_id,
                &showtime_id,
                seats,
                record.booking_id.clone(),
            )
            .await
        {
            Ok(b) => {
                self.finish_key(&record, None).await;
                Ok(b)
            }
            Err(f) => {
                match StoredError::of(&f.error) {
                    Some(answer) if owner => self.finish_key(&record, Some(&answer)).await,
                    Some(_) => {}
                    // Nothing left behind: a retry starts afresh with a new booking id (the
                    // cinema refuses to hold again for a released booking id).
                    None if !f.may_exist => {
                        if let Err(e) = self.store.drop_key(&record.id).await {
                            tracing::warn!(error = %e, "could not give an idempotency key back");
                        }
                    }
                    None => {}
                }
                Err(f.error)
            }
        }
    }

    /// The record of `key` for this request: `(record, true)` when this request took the key,
    /// `(record, false)` for a retry of the same request; refused for another request or when
    /// the first one ended with a definite error (answered again).
    async fn keyed(
        &self,
        caller: &Caller,
        key: &str,
        fingerprint: String,
        booking_id: String,
    ) -> Result<(KeyRecord, bool)> {
        let fresh = KeyRecord::new(&caller.claims.sub, key, fingerprint, booking_id);
        let Some(existing) = self.store.claim_key(&fresh).await? else {
            return Ok((fresh, true));
        };
        match idempotency::replay(
            &existing.fingerprint,
            &fresh.fingerprint,
            existing.outcome.as_ref(),
        ) {
            Replay::Conflict => Err(BookingError::IdempotencyKeyReused(
                "this idempotency key was already used for a different request".into(),
            )),
            Replay::Error(answer) => Err(answer.into_error()),
            Replay::Rerun => Ok((existing, false)),
        }
    }

    async fn finish_key(&self, record: &KeyRecord, outcome: Option<&StoredError>) {
        if let Err(e) = self.store.finish_key(&record.id, outcome).await {
            // A retry then runs again, which every step allows.
            tracing::warn!(error = %e, "could not record the answer of an idempotency key");
        }
    }

    /// createBooking's steps for a given booking id.
    async fn create_with_id(
        &self,
        caller: &Caller,
        user_id: &str,
        showtime_id: &str,
        seats: Vec<String>,
        booking_id: String,
    ) -> Result<Booking, CreateFailure> {
        let (email, details) = tokio::join!(
            self.verified_user(caller, user_id),
            self.showtime(showtime_id)
        );
        let email = email?;
        let details = details?;
        let showtime = details
            .showtime
            .as_ref()
            .ok_or_else(|| BookingError::NotFound(format!("showtime {showtime_id} not found")))?;
        let now = chrono::Utc::now().timestamp();
        if showtime.start_time > 0 && showtime.start_time <= now {
            return Err(BookingError::BadInput("this showtime has already started".into()).into());
        }

        let lock = match self
            .cinema
            .lock_seats(showtime_id, &seats, &booking_id, self.config.hold)
            .await
        {
            Ok(lock) => lock,
            Err(status) => {
                if outcome_unknown(status.code()) {
                    // The hold may exist: release whatever this booking id holds.
                    self.cinema.release_lock("", &booking_id).await;
                }
                return Err(crate::clients::cinema_error(&status).into());
            }
        };
        if !lock.success {
            let message = if lock.message.is_empty() {
                "some seats are not available".to_owned()
            } else {
                lock.message
            };
            return Err(BookingError::SeatsUnavailable {
                seats: lock.failed_seats,
                message,
            }
            .into());
        }

        let total = if lock.total_price > 0.0 {
            lock.total_price
        } else {
            showtime.base_price * seats.len() as f64
        };
        let hold_until = if lock.expires_at > now {
            lock.expires_at
        } else {
            now + i64::try_from(self.config.hold.as_secs()).unwrap_or(300)
        };
        let created = DateTime::now();
        let booking = Booking {
            id: booking_id,
            user_id: user_id.to_owned(),
            user_email: email,
            showtime_id: showtime_id.to_owned(),
            movie_title: details
                .movie
                .as_ref()
                .map(|m| m.title.clone())
                .unwrap_or_default(),
            cinema_name: details
                .cinema
                .as_ref()
                .map(|c| c.name.clone())
                .unwrap_or_default(),
            start_time: showtime.start_time,
            seats,
            total_amount: round_money(total),
            currency: self.config.currency.clone(),
            status: BookingStatus::PendingPayment,
            lock_id: lock.lock_id,
            hold_expires_at: DateTime::from_millis(hold_until.saturating_mul(1000)),
            transaction_id: None,
            payment_attempt: 0,
            payment_started: false,
            paying_since: None,
            fence: 0,
            refund_intent: false,
            release_pending: false,
            cancel_requested_at: None,
            repair_attempts: 0,
            repair_after: None,
            failure_reason: None,
            refund_id: None,
            created_at: created,
            updated_at: created,
            confirmed_at: None,
            cancelled_at: None,
        };
        if let Err(failure) = self.store.insert(&booking).await {
            let commit_sent = matches!(failure, TxnFailure::CommitUnknown(_));
            return match self.after_failed_insert(&booking, commit_sent).await {
                InsertCheck::Exists(stored) => {
                    metrics::counter!("bookings_created_total").increment(1);
                    Ok(*stored)
                }
                InsertCheck::Absent => {
                    // Compensation: the booking does not exist, so neither may its hold.
                    self.cinema
                        .release_lock(&booking.lock_id, &booking.id)
                        .await;
                    Err(failure.into_inner().into())
                }
                InsertCheck::Unknown => {
                    // It may exist: keep the hold. If it does, it is a normal PENDING_PAYMENT
                    // booking (the sweeper expires it); if not, the hold lapses by itself.
                    tracing::warn!(booking_id = %booking.id, "booking insert outcome unknown; hold kept");
                    Err(CreateFailure {
                        error: failure.into_inner(),
                        may_exist: true,
                    })
                }
            };
        }
        metrics::counter!("bookings_created_total").increment(1);
        Ok(booking)
    }

    /// After a failed insert: does the booking exist after all (a commit whose answer was lost,
    /// or a concurrent retry with the same id)? Only "certainly absent" may release its hold:
    /// not found after a commit of unknown outcome is still unknown.
    async fn after_failed_insert(&self, booking: &Booking, commit_sent: bool) -> InsertCheck {
        match self.store.get(&booking.id).await {
            Ok(Some(stored)) => InsertCheck::Exists(Box::new(stored)),
            Ok(None) if !commit_sent => InsertCheck::Absent,
            _ => InsertCheck::Unknown,
        }
    }

    /// processPayment: claim the booking (PAYING) so concurrent calls charge once, charge,
    /// confirm the seats; refund if the seats are gone.
    ///
    /// With an idempotency `key`, a retry answers what the first request answered: the paid
    /// booking, or the same decline / expired hold.
    pub async fn process_payment(
        &self,
        caller: &Caller,
        booking_id: &str,
        payment_method: &str,
        payment_details: Option<&str>,
        key: Option<String>,
    ) -> Result<Booking> {
        let method = domain::validate_payment_method(payment_method)?;
        let details = domain::parse_payment_details(payment_details)?;
        let Some(key) = key else {
            return self
                .pay_own_or_read(caller, booking_id, method, details)
                .await;
        };
        let booking = self.booking_for(caller, booking_id).await?;
        let fingerprint = idempotency::payment_fingerprint(&booking.id, &method, details.as_ref());
        let (record, owner) = self
            .keyed(caller, &key, fingerprint, booking.id.clone())
            .await?;
        let result = self.pay(booking, method, details).await;
        match &result {
            Ok(_) => self.finish_key(&record, None).await,
            Err(e) => {
                if let Some(answer) = StoredError::of(e)
                    && owner
                {
                    self.finish_key(&record, Some(&answer)).await;
                }
            }
        }
        result
    }

    /// A payment without an idempotency key. The usual case, the caller paying their own
    /// pending booking, is claimed at once with the ownership check inside the claim (no read
    /// first); anything else (an admin, a failed payment retried, a booking that is not
    /// payable or not theirs) reads the booking and takes [`Booker::pay`]'s path, which
    /// answers why.
    async fn pay_own_or_read(
        &self,
        caller: &Caller,
        booking_id: &str,
        method: String,
        details: Option<serde_json::Value>,
    ) -> Result<Booking> {
        let id = parse_id("bookingId", booking_id)?;
        if !caller.claims.is_admin() {
            let from = BookingStatus::PendingPayment;
            let token = self.service_token()?;
            if let Some(claimed) = self
                .store
                .claim_payment_of(&id, from, &caller.claims.sub)
                .await?
            {
                return self.charge(claimed, from, token, method, details).await;
            }
        }
        let booking = self.booking_for(caller, &id).await?;
        self.pay(booking, method, details).await
    }

    async fn pay(
        &self,
        booking: Booking,
        method: String,
        details: Option<serde_json::Value>,
    ) -> Result<Booking> {
        let from = booking.status;
        if from == BookingStatus::Confirmed {
            // Already paid: answer the same result again instead of charging.
            return Ok(booking);
        }
        transition(from, BookingEvent::PaymentStarted)?;
        // The charge is made with the booking service's own identity (the payment service takes
        // writes from nobody else) and the booking's amount, never anything the client sent.
        // Issued before the claim, so that failing here leaves nothing claimed.
        let token = self.service_token()?;
        let Some(claimed) = self.store.claim_payment(&booking.id, from).await? else {
            return Err(self.claim_failed(&booking.id).await);
        };
        self.charge(claimed, from, token, method, details).await
    }

    /// A claimed booking's payment: charge, then confirm the seats (or refund when they are
    /// gone), each step leaving a state the sweeper can finish after a crash.
    async fn charge(
        &self,
        claimed: Booking,
        from: BookingStatus,
        token: String,
        method: String,
        details: Option<serde_json::Value>,
    ) -> Result<Booking> {
        self.crash_point("pay.after_claim").await;
        let key = payment_idempotency_key(
            &claimed.id,
            u32::try_from(claimed.payment_attempt).unwrap_or(0),
        );
        let outcome = self
            .rest
            .pay(
                &token,
                &key,
                &claimed.id,
                &claimed.user_id,
                claimed.total_amount,
                &claimed.currency,
                &method,
                details,
            )
            .await;
        let tx = match outcome {
            PayOutcome::Answered(tx) => tx,
            PayOutcome::Refused(err) => {
                self.abort_payment(&claimed, from).await?;
                return Err(err);
            }
            PayOutcome::Unknown(reason) => {
                tracing::warn!(booking_id = %claimed.id, reason, "payment outcome unknown");
                // Same attempt number: a retry replays this charge under the same key.
                self.abort_payment(&claimed, from).await?;
                return Err(BookingError::Unavailable {
                    service: "payment",
                    message: "the payment service did not answer; retry the payment".into(),
                });
            }
        };

        if let domain::ChargeVerdict::NotCharged { code, reason } = domain::charge_verdict(
            &tx.status,
            tx.refunded_amount,
            tx.failure_code.as_deref(),
            tx.failure_reason.as_deref(),
        ) {
            let to = transition(BookingStatus::Paying, BookingEvent::PaymentDeclined)?;
            self.store
                .transition_claimed(
                    &claimed,
                    to,
                    doc! { "failure_reason": format!("{code}: {reason}"), "transaction_id": &tx.transaction_id },
                )
                .await?;
            metrics::counter!("payments_total", "outcome" => "declined").increment(1);
            return Err(BookingError::PaymentDeclined {
                code,
                reason,
                transaction_id: Some(tx.transaction_id),
            });
        }

        self.crash_point("pay.after_charge").await;
        match self.confirm_seats(&claimed).await {
            SeatOutcome::Confirmed => {
                self.crash_point("pay.after_seats_confirmed").await;
                let to = transition(BookingStatus::Paying, BookingEvent::SeatsConfirmed)?;
                let now = DateTime::now();
                let confirmed = self
                    .store
                    .transition_claimed(
                        &claimed,
                        to,
                        doc! { "transaction_id": &tx.transaction_id, "confirmed_at": now, "failure_reason": bson::Bson::Null },
                    )
                    .await?;
                let confirmed = match confirmed {
                    Some(b) => b,
                    None => self.settled(&claimed.id, to).await?,
                };
                metrics::counter!("payments_total", "outcome" => "confirmed").increment(1);
                Ok(confirmed)
            }
            SeatOutcome::Lost(why) => {
                tracing::warn!(booking_id = %claimed.id, why, "paid but the seats are gone: refunding");
                self.refund_and_close(&claimed, &tx.transaction_id, &why)
                    .await?;
                metrics::counter!("payments_total", "outcome" => "refunded").increment(1);
                Err(BookingError::HoldExpired(
                    "the seats could not be confirmed (the hold had expired); the payment was refunded"
                        .into(),
                ))
            }
        }
    }

    /// Why a claim did not match: expired hold (expire it now), someone else paying, or a
    /// state that cannot pay.
    async fn claim_failed(&self, id: &str) -> BookingError {
        let current = match self.store.get(id).await {
            Ok(Some(b)) => b,
            Ok(None) => return BookingError::NotFound(format!("booking {id} not found")),
            Err(e) => return e,
        };
        match current.status {
            BookingStatus::PendingPayment | BookingStatus::PaymentFailed
                if current.hold_expires_at <= DateTime::now() =>
            {
                if let Err(e) = self.expire(&current).await {
                    return e;
                }
                BookingError::HoldExpired("the seat hold expired before payment".into())
            }
            BookingStatus::Paying => BookingError::invalid_state(
                BookingStatus::Paying,
                "a payment for this booking is already in progress",
            ),
            s => BookingError::invalid_state(s, "this booking cannot be paid"),
        }
    }

    /// Gives a claim back after a payment that certainly or possibly did not charge.
    async fn abort_payment(&self, claimed: &Booking, back_to: BookingStatus) -> Result<()> {
        let to = transition(
            BookingStatus::Paying,
            BookingEvent::PaymentAborted { back_to },
        )?;
        // Undo the attempt increment of a retry claim: the key of this attempt was not used up.
        let mut fields = doc! {};
        if back_to == BookingStatus::PaymentFailed {
            fields.insert("payment_attempt", (claimed.payment_attempt - 1).max(0));
        }
        self.store.transition_claimed(claimed, to, fields).await?;
        Ok(())
    }

    /// ConfirmSeatBooking, retried a few times when the outcome is unknown.
    async fn confirm_seats(&self, b: &Booking) -> SeatOutcome {
        let mut last = String::new();
        for attempt in 0..3u32 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(100 * u64::from(attempt))).await;
            }
            match self.cinema.confirm(&b.lock_id, &b.id, &b.user_id).await {
                Ok(r) if r.success => return SeatOutcome::Confirmed,
                Ok(r) => return SeatOutcome::Lost(r.message),
                Err(s) if outcome_unknown(s.code()) => last = s.message().to_owned(),
                Err(s) => return SeatOutcome::Lost(s.message().to_owned()),
            }
        }
        // Unknown after retries: treat as lost; refund_and_close also returns any seats the
        // cinema may have sold to us, so nothing stays sold without a confirmed booking.
        SeatOutcome::Lost(format!("cinema did not answer: {last}"))
    }

    /// Compensation for "paid but no seats": refund, return anything held or sold, end REFUNDED.
    async fn refund_and_close(
        &self,
        b: &Booking,
        transaction_id: &str,
        why: &str,
    ) -> Result<Booking> {
        let to = transition(BookingStatus::Paying, BookingEvent::PaymentRefunded)?;
        let token = self.service_token()?;
        // Recorded before it runs, under this claim's fence: if the claim was lost (the
        // reconciler took over) this writes nothing and we refund nothing; once recorded, the
        // reconciler never rolls this booking forward to CONFIRMED. If the refund then fails,
        // the booking stays PAYING with its transaction and the reconciler retries it.
        let intent = self
            .store
            .transition_claimed(
                b,
                BookingStatus::Paying,
                doc! { "transaction_id": transaction_id, "refund_intent": true, "failure_reason": format!("refund pending: {why}") },
            )
            .await?;
        let Some(b) = intent else {
            return self.settled(&b.id, to).await;
        };
        self.crash_point("pay.after_refund_intent").await;
        let refund = self
            .rest
            .refund(&token, &refund_idempotency_key(&b.id), transaction_id, why)
            .await?;
        metrics::counter!("booking_compensations_total", "step" => "refund").increment(1);
        self.crash_point("pay.after_refund").await;
        let mut fields = doc! { "transaction_id": transaction_id, "refund_id": refund.refund_id, "failure_reason": why };
        if !self.return_seats(&b).await {
            fields.insert("release_pending", true);
        }
        let refunded = self.store.transition_claimed(&b, to, fields).await?;
        match refunded {
            Some(done) => Ok(done),
            None => self.settled(&b.id, to).await,
        }
    }

    /// cancelBooking: a held booking releases its hold; a confirmed one is refunded and its
    /// seats return to sale. Ends CANCELLED either way.
    pub async fn cancel_booking(&self, caller: &Caller, booking_id: &str) -> Result<Booking> {
        let booking = self.booking_for(caller, booking_id).await?;
        let to = transition(booking.status, BookingEvent::Cancelled)?;
        let now = DateTime::now();
        match booking.status {
            BookingStatus::Confirmed => {
                // Recorded first: from here on the sweeper carries the cancellation to its end
                // (refund, seats back, CANCELLED) if this request does not.
                if booking.cancel_requested_at.is_none()
                    && !self
                        .store
                        .mark(
                            &booking.id,
                            BookingStatus::Confirmed,
                            doc! { "cancel_requested_at": now },
                        )
                        .await?
                {
                    return self.settled(&booking.id, to).await;
                }
                self.crash_point("cancel.after_mark").await;
                self.finish_cancel(&booking).await
            }
            from => {
                if booking.payment_started {
                    // A payment whose answer was lost may have charged: money back before the
                    // seats go (a failed refund leaves the booking as it was; cancel again).
                    self.refund_stray_payments(
                        &booking,
                        None,
                        "booking cancelled before payment completed",
                    )
                    .await?;
                }
                let cancelled = self
                    .store
                    .transition(&booking, from, to, doc! { "cancelled_at": now })
                    .await?
                    .ok_or_else(|| self.changed(&booking))?;
                self.cinema
                    .release_lock(&booking.lock_id, &booking.id)
                    .await;
                Ok(cancelled)
            }
        }
    }

    /// The steps of cancelling a CONFIRMED booking, each idempotent: refund (one per booking),
    /// seats back to sale, CANCELLED. Run by cancelBooking and, until it succeeds, by the
    /// sweeper.
    async fn finish_cancel(&self, booking: &Booking) -> Result<Booking> {
        let to = transition(BookingStatus::Confirmed, BookingEvent::Cancelled)?;
        let mut fields = doc! { "cancelled_at": DateTime::now() };
        if let Some(tx) = &booking.transaction_id {
            let token = self.service_token()?;
            let refund = self
                .rest
                .refund(
                    &token,
                    &refund_idempotency_key(&booking.id),
                    tx,
                    "cancelled by the user",
                )
                .await?;
            metrics::counter!("booking_compensations_total", "step" => "refund").increment(1);
            fields.insert("refund_id", refund.refund_id);
            self.crash_point("cancel.after_refund").await;
        }
        match self
            .cinema
            .release_booked(&booking.id, &booking.showtime_id)
            .await
        {
            Ok(()) | Err(BookingError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        match self
            .store
            .transition(booking, BookingStatus::Confirmed, to, fields)
            .await?
        {
            Some(cancelled) => Ok(cancelled),
            None => self.settled(&booking.id, to).await,
        }
    }

    /// Returns a booking's seats to sale, held or sold; `false` when the sold seats could not
    /// be returned (the booking is then marked `release_pending` and the sweeper retries).
    async fn return_seats(&self, b: &Booking) -> bool {
        self.cinema.release_lock(&b.lock_id, &b.id).await;
        match self.cinema.release_booked(&b.id, &b.showtime_id).await {
            // NOT_FOUND: the cinema holds nothing for this booking, which is what we want.
            Ok(()) | Err(BookingError::NotFound(_)) => true,
            Err(e) => {
                tracing::warn!(booking_id = %b.id, error = %e, "could not return booked seats; will retry");
                false
            }
        }
    }

    /// One compensation the sweeper found due: seats a terminal booking must return, or a
    /// cancellation that did not finish. A failure backs off (`repair_after`) and counts in
    /// `booking_compensation_failures_total`.
    pub async fn repair(&self, b: &Booking) -> Result<()> {
        let done = if b.release_pending {
            match self.cinema.release_booked(&b.id, &b.showtime_id).await {
                Ok(()) | Err(BookingError::NotFound(_)) => {
                    self.store
                        .mark(
                            &b.id,
                            b.status,
                            doc! { "release_pending": false, "repair_after": bson::Bson::Null },
                        )
                        .await?;
                    Ok(())
                }
                Err(e) => Err(e),
            }
        } else if b.status == BookingStatus::Confirmed && b.cancel_requested_at.is_some() {
            self.finish_cancel(b).await.map(|_| ())
        } else {
            Ok(())
        };
        let step = if b.release_pending {
            "release_seats"
        } else {
            "cancel"
        };
        match done {
            Ok(()) => {
                metrics::counter!("booking_compensations_total", "step" => step).increment(1);
                Ok(())
            }
            Err(e) => {
                metrics::counter!("booking_compensation_failures_total", "step" => step)
                    .increment(1);
                self.store.repair_failed(b).await?;
                Err(e)
            }
        }
    }

    /// A conditional transition to `to` matched nothing: the booking moved on. If it is at `to`
    /// (a concurrent identical request, or a commit whose answer was lost) that is the answer;
    /// otherwise say where it is. Never INTERNAL: nothing went wrong inside.
    async fn settled(&self, id: &str, to: BookingStatus) -> Result<Booking> {
        match self.store.get(id).await? {
            Some(b) if b.status == to => Ok(b),
            Some(b) => Err(BookingError::invalid_state(
                b.status,
                "the booking changed concurrently; reload it",
            )),
            None => Err(BookingError::NotFound(format!("booking {id} not found"))),
        }
    }

    fn changed(&self, b: &Booking) -> BookingError {
        BookingError::invalid_state(b.status, "the booking changed concurrently; reload it")
    }

    /// Expires an unpaid booking whose hold lapsed. The conditional update is the claim: of
    /// several replicas' sweepers exactly one moves it and publishes booking.expired.
    ///
    /// A payment whose answer was lost may have charged: that is refunded FIRST, while the
    /// booking still shows it (a hold-lapsed booking cannot be claimed for payment any more),
    /// so a failed refund leaves it here for the next sweep instead of EXPIRED with the money.
    pub async fn expire(&self, b: &Booking) -> Result<Option<Booking>> {
        let to = transition(b.status, BookingEvent::HoldExpired)?;
        let mut fields = doc! {};
        if b.payment_started
            && let Some((tx, refund)) = self
                .refund_stray_payments(b, None, "booking expired before the seats were confirmed")
                .await?
        {
            fields = doc! { "transaction_id": tx, "refund_id": refund };
        }
        let Some(expired) = self.store.transition(b, b.status, to, fields).await? else {
            return Ok(None);
        };
        self.cinema.release_lock(&b.lock_id, &b.id).await;
        metrics::counter!("bookings_expired_total").increment(1);
        Ok(Some(expired))
    }

    /// Refunds every successful charge of `b` with money left, except `keep`; answers the last
    /// (transaction, refund). Each refund is idempotent per transaction.
    async fn refund_stray_payments(
        &self,
        b: &Booking,
        keep: Option<&str>,
        why: &str,
    ) -> Result<Option<(String, String)>> {
        let token = self.service_token()?;
        let txs = self.rest.transactions(&token, &b.id).await?;
        let mut refunded = None;
        for tx in txs.iter().filter(|t| {
            t.status == "SUCCESS"
                && t.refunded_amount < t.amount
                && Some(t.transaction_id.as_str()) != keep
        }) {
            let r = self
                .rest
                .refund(
                    &token,
                    &format!("refund:{}:{}", b.id, tx.transaction_id),
                    &tx.transaction_id,
                    why,
                )
                .await?;
            metrics::counter!("booking_compensations_total", "step" => "refund").increment(1);
            refunded = Some((tx.transaction_id.clone(), r.refund_id));
        }
        Ok(refunded)
    }

    /// Reconciles a booking left in PAYING (a dead or stalled replica), after its hold lapsed.
    /// The lease takes a new fencing token, so the stalled claimant can write nothing more.
    /// Then: charged, no refund begun, and the seats are (still) sold to it → roll forward to
    /// CONFIRMED (a crash after ConfirmSeatBooking keeps what the user bought); otherwise every
    /// charge is refunded and the seats returned (REFUNDED, or EXPIRED when nothing was
    /// charged).
    pub async fn reconcile_stuck(&self, b: &Booking) -> Result<Option<Booking>> {
        let Some(leased) = self.store.lease_stuck(b).await? else {
            return Ok(None);
        };
        let token = self.service_token()?;
        let txs = self.rest.transactions(&token, &leased.id).await?;
        let charge = txs
            .iter()
            .find(|t| t.status == "SUCCESS" && t.refunded_amount <= 0.0)
            .map(|t| t.transaction_id.clone());
        if let Some(tx) = &charge
            && !leased.refund_intent
            && let SeatOutcome::Confirmed = self.confirm_seats(&leased).await
        {
            let to = transition(BookingStatus::Paying, BookingEvent::SeatsConfirmed)?;
            let confirmed = self
                .store
                .transition_claimed(
                    &leased,
                    to,
                    doc! { "transaction_id": tx, "confirmed_at": DateTime::now(), "failure_reason": bson::Bson::Null },
                )
                .await?;
            if confirmed.is_some() {
                // Any other charge of this booking is a stray.
                self.refund_stray_payments(&leased, Some(tx.as_str()), "duplicate charge")
                    .await?;
                metrics::counter!("booking_reconciled_total", "outcome" => "confirmed")
                    .increment(1);
            }
            return Ok(confirmed);
        }
        // Recorded under the lease before any refund: nobody rolls it forward after this.
        let Some(leased) = self
            .store
            .transition_claimed(
                &leased,
                BookingStatus::Paying,
                doc! { "refund_intent": true },
            )
            .await?
        else {
            return Ok(None);
        };
        let refunded = self
            .refund_stray_payments(
                &leased,
                None,
                "booking expired before the seats were confirmed",
            )
            .await?;
        let (event, mut fields) = match refunded {
            Some((tx, refund)) => (
                BookingEvent::PaymentRefunded,
                doc! { "transaction_id": tx, "refund_id": refund },
            ),
            None => (BookingEvent::HoldExpired, doc! {}),
        };
        if !self.return_seats(&leased).await {
            fields.insert("release_pending", true);
        }
        let to = transition(BookingStatus::Paying, event)?;
        let done = self.store.transition_claimed(&leased, to, fields).await?;
        if done.is_some() {
            metrics::counter!("booking_reconciled_total", "outcome" => to.as_str()).increment(1);
        }
        Ok(done)
    }
}

/// Why createBooking failed, and whether the booking may exist all the same (then its
/// idempotency key must keep the booking id).
struct CreateFailure {
    error: BookingError,
    may_exist: bool,
}

impl From<BookingError> for CreateFailure {
    fn from(error: BookingError) -> Self {
        Self {
            error,
            may_exist: false,
        }
    }
}

enum InsertCheck {
    Exists(Box<Booking>),
    Absent,
    Unknown,
}

enum SeatOutcome {
    Confirmed,
    Lost(String),
}
