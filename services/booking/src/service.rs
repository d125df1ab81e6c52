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
    store::{Booking, Store},
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

    fn service_token(&self) -> Result<String> {
        self.keys
            .issue_service_token(SERVICE_NAME)
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
    pub async fn create_booking(
        &self,
        caller: &Caller,
        user_id: &str,
        showtime_id: &str,
        seat_numbers: &[String],
    ) -> Result<Booking> {
        // The token's subject may be a non-UUID service name; users are UUIDs.
        let user_id = parse_id("userId", user_id)?;
        caller.may_act_for(&user_id)?;
        let showtime_id = parse_id("showtimeId", showtime_id)?;
        let seats = domain::validate_seats(seat_numbers, self.config.max_seats)?;

        let (email, details) = tokio::join!(
            self.verified_user(caller, &user_id),
            self.showtime(&showtime_id)
        );
        let email = email?;
        let details = details?;
        let showtime = details
            .showtime
            .as_ref()
            .ok_or_else(|| BookingError::NotFound(format!("showtime {showtime_id} not found")))?;
        let now = chrono::Utc::now().timestamp();
        if showtime.start_time > 0 && showtime.start_time <= now {
            return Err(BookingError::BadInput(
                "this showtime has already started".into(),
            ));
        }

        let booking_id = uuid::Uuid::new_v4().to_string();
        let lock = match self
            .cinema
            .lock_seats(&showtime_id, &seats, &booking_id, self.config.hold)
            .await
        {
            Ok(lock) => lock,
            Err(status) => {
                if outcome_unknown(status.code()) {
                    // The hold may exist: release whatever this booking id holds.
                    self.cinema.release_lock("", &booking_id).await;
                }
                return Err(crate::clients::cinema_error(&status));
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
            });
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
            user_id,
            user_email: email,
            showtime_id,
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
            failure_reason: None,
            refund_id: None,
            created_at: created,
            updated_at: created,
            confirmed_at: None,
            cancelled_at: None,
        };
        if let Err(e) = self.store.insert(&booking).await {
            // Compensation: the booking does not exist, so neither may its hold.
            self.cinema
                .release_lock(&booking.lock_id, &booking.id)
                .await;
            return Err(e);
        }
        metrics::counter!("bookings_created_total").increment(1);
        Ok(booking)
    }

    /// processPayment: claim the booking (PAYING) so concurrent calls charge once, charge,
    /// confirm the seats; refund if the seats are gone.
    pub async fn process_payment(
        &self,
        caller: &Caller,
        booking_id: &str,
        payment_method: &str,
        payment_details: Option<&str>,
    ) -> Result<Booking> {
        let method = domain::validate_payment_method(payment_method)?;
        let details = domain::parse_payment_details(payment_details)?;
        let booking = self.booking_for(caller, booking_id).await?;

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

        if tx.status != "SUCCESS" {
            let code = tx.failure_code.clone().unwrap_or_else(|| "DECLINED".into());
            let reason = tx
                .failure_reason
                .clone()
                .unwrap_or_else(|| "the payment was declined".into());
            let to = transition(BookingStatus::Paying, BookingEvent::PaymentDeclined)?;
            self.store
                .transition(
                    &claimed.id,
                    BookingStatus::Paying,
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

        match self.confirm_seats(&claimed).await {
            SeatOutcome::Confirmed => {
                let to = transition(BookingStatus::Paying, BookingEvent::SeatsConfirmed)?;
                let now = DateTime::now();
                let confirmed = self
                    .store
                    .transition(
                        &claimed.id,
                        BookingStatus::Paying,
                        to,
                        doc! { "transaction_id": &tx.transaction_id, "confirmed_at": now, "failure_reason": bson::Bson::Null },
                    )
                    .await?
                    .ok_or_else(|| {
                        BookingError::internal("booking left PAYING while being confirmed")
                    })?;
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
        self.store
            .transition(&claimed.id, BookingStatus::Paying, to, fields)
            .await?;
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
        let token = self.service_token()?;
        let refund = match self
            .rest
            .refund(&token, &refund_idempotency_key(&b.id), transaction_id, why)
            .await
        {
            Ok(r) => r,
            Err(e) => {
                // Leave the booking PAYING with its transaction: the sweeper retries the refund.
                let _ = self
                    .store
                    .transition(
                        &b.id,
                        BookingStatus::Paying,
                        BookingStatus::Paying,
                        doc! { "transaction_id": transaction_id, "failure_reason": format!("refund pending: {why}") },
                    )
                    .await;
                return Err(e);
            }
        };
        self.cinema.release_lock(&b.lock_id, &b.id).await;
        if let Err(e) = self.cinema.release_booked(&b.id, &b.showtime_id).await {
            tracing::warn!(booking_id = %b.id, error = %e, "could not return booked seats");
        }
        let to = transition(BookingStatus::Paying, BookingEvent::PaymentRefunded)?;
        self.store
            .transition(
                &b.id,
                BookingStatus::Paying,
                to,
                doc! { "transaction_id": transaction_id, "refund_id": refund.refund_id, "failure_reason": why },
            )
            .await?
            .ok_or_else(|| BookingError::internal("booking left PAYING while being refunded"))
    }

    /// cancelBooking: a held booking releases its hold; a confirmed one is refunded and its
    /// seats return to sale. Ends CANCELLED either way.
    pub async fn cancel_booking(&self, caller: &Caller, booking_id: &str) -> Result<Booking> {
        let booking = self.booking_for(caller, booking_id).await?;
        let to = transition(booking.status, BookingEvent::Cancelled)?;
        let now = DateTime::now();
        match booking.status {
            BookingStatus::Confirmed => {
                // Refund first (idempotent per booking), then return the seats, then record.
                // A crash in between leaves it CONFIRMED and a repeated cancel finishes the job.
                let token = self.service_token()?;
                let mut fields = doc! { "cancelled_at": now };
                if let Some(tx) = &booking.transaction_id {
                    let refund = self
                        .rest
                        .refund(
                            &token,
                            &refund_idempotency_key(&booking.id),
                            tx,
                            "cancelled by the user",
                        )
                        .await?;
                    fields.insert("refund_id", refund.refund_id);
                }
                self.cinema
                    .release_booked(&booking.id, &booking.showtime_id)
                    .await?;
                self.store
                    .transition(&booking.id, BookingStatus::Confirmed, to, fields)
                    .await?
                    .ok_or_else(|| self.changed(&booking))
            }
            from => {
                let cancelled = self
                    .store
                    .transition(&booking.id, from, to, doc! { "cancelled_at": now })
                    .await?
                    .ok_or_else(|| self.changed(&booking))?;
                self.cinema
                    .release_lock(&booking.lock_id, &booking.id)
                    .await;
                Ok(cancelled)
            }
        }
    }

    fn changed(&self, b: &Booking) -> BookingError {
        BookingError::invalid_state(b.status, "the booking changed concurrently; reload it")
    }

    /// Expires an unpaid booking whose hold lapsed. The conditional update is the claim: of
    /// several replicas' sweepers exactly one moves it and publishes booking.expired.
    pub async fn expire(&self, b: &Booking) -> Result<Option<Booking>> {
        let to = transition(b.status, BookingEvent::HoldExpired)?;
        let Some(expired) = self.store.transition(&b.id, b.status, to, doc! {}).await? else {
            return Ok(None);
        };
        self.cinema.release_lock(&b.lock_id, &b.id).await;
        if b.payment_started {
            // A payment whose answer was lost may have charged: refund anything that went through.
            self.refund_stray_payments(b).await?;
        }
        metrics::counter!("bookings_expired_total").increment(1);
        Ok(Some(expired))
    }

    async fn refund_stray_payments(&self, b: &Booking) -> Result<Option<(String, String)>> {
        let token = self.service_token()?;
        let txs = self.rest.transactions(&token, &b.id).await?;
        let mut refunded = None;
        for tx in txs
            .iter()
            .filter(|t| t.status == "SUCCESS" && t.refunded_amount < t.amount)
        {
            let r = self
                .rest
                .refund(
                    &token,
                    &format!("refund:{}:{}", b.id, tx.transaction_id),
                    &tx.transaction_id,
                    "booking expired before the seats were confirmed",
                )
                .await?;
            refunded = Some((tx.transaction_id.clone(), r.refund_id));
        }
        Ok(refunded)
    }

    /// Reconciles a booking left in PAYING by a dead replica, after its hold lapsed: any charge
    /// is refunded (REFUNDED), otherwise it expires (EXPIRED). Seats are returned either way.
    pub async fn reconcile_stuck(&self, b: &Booking) -> Result<Option<Booking>> {
        let Some(leased) = self.store.lease_stuck(b).await? else {
            return Ok(None);
        };
        let refunded = self.refund_stray_payments(&leased).await?;
        self.cinema.release_lock(&leased.lock_id, &leased.id).await;
        if let Err(e) = self
            .cinema
            .release_booked(&leased.id, &leased.showtime_id)
            .await
        {
            tracing::warn!(booking_id = %leased.id, error = %e, "could not return booked seats");
        }
        let (event, fields) = match refunded {
            Some((tx, refund)) => (
                BookingEvent::PaymentRefunded,
                doc! { "transaction_id": tx, "refund_id": refund },
            ),
            None => (BookingEvent::HoldExpired, doc! {}),
        };
        let to = transition(BookingStatus::Paying, event)?;
        self.store
            .transition(&leased.id, BookingStatus::Paying, to, fields)
            .await
    }
}

enum SeatOutcome {
    Confirmed,
    Lost(String),
}
