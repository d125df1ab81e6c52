//! The decisions of the worker, as plain functions with no I/O: which events are valid, what
//! each notification says, and what to do after a failure.

use std::time::Duration;

use chrono::{DateTime, Utc};
use moviebook_common::events::EventType;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// A message that can never be processed, however often it is retried: it goes straight to the
/// dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("poison message: {0}")]
pub struct Poison(pub String);

/// The data of every `booking.*` event (contracts: published by the booking service).
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct BookingData {
    pub booking_id: String,
    pub user_id: String,
    #[serde(default)]
    pub user_email: Option<String>,
    #[serde(default)]
    pub showtime_id: Option<String>,
    pub movie_title: String,
    pub cinema_name: String,
    /// RFC 3339.
    pub start_time: String,
    pub seats: Vec<String>,
    pub total_amount: f64,
    #[serde(default = "usd")]
    pub currency: String,
    #[serde(default)]
    pub status: Option<String>,
    #[serde(default)]
    pub expires_at: Option<String>,
    #[serde(default)]
    pub transaction_id: Option<String>,
}

/// The data of `payment.success` and `payment.failed`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct PaymentData {
    pub transaction_id: String,
    pub booking_id: String,
    pub user_id: String,
    pub amount: f64,
    #[serde(default = "usd")]
    pub currency: String,
    #[serde(default)]
    pub payment_method: Option<String>,
    #[serde(default)]
    pub failure_code: Option<String>,
    #[serde(default)]
    pub failure_reason: Option<String>,
}

/// The data of `payment.refund`.
#[derive(Debug, Clone, PartialEq, Deserialize, Serialize)]
pub struct RefundData {
    pub refund_id: String,
    pub transaction_id: String,
    pub booking_id: String,
    pub user_id: String,
    pub amount: f64,
    #[serde(default = "usd")]
    pub currency: String,
    #[serde(default)]
    pub reason: Option<String>,
}

fn usd() -> String {
    "USD".to_owned()
}

/// The typed payload of an event.
#[derive(Debug, Clone, PartialEq)]
pub enum Payload {
    Booking(BookingData),
    Payment(PaymentData),
    Refund(RefundData),
}

/// A validated event, ready to be turned into a notification.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub event_id: Uuid,
    pub kind: EventType,
    pub occurred_at: DateTime<Utc>,
    pub payload: Payload,
}

impl Event {
    pub fn booking_id(&self) -> &str {
        match &self.payload {
            Payload::Booking(b) => &b.booking_id,
            Payload::Payment(p) => &p.booking_id,
            Payload::Refund(r) => &r.booking_id,
        }
    }

    pub fn user_id(&self) -> &str {
        match &self.payload {
            Payload::Booking(b) => &b.user_id,
            Payload::Payment(p) => &p.user_id,
            Payload::Refund(r) => &r.user_id,
        }
    }
}

/// The envelope as read from the wire; `event_type` stays a string so an unknown type is a
/// clear poison reason rather than a generic parse error.
#[derive(Deserialize)]
struct RawEnvelope {
    event_id: String,
    event_type: String,
    occurred_at: DateTime<Utc>,
    data: serde_json::Value,
}

/// Parses and validates a delivery body. Every error is a [`Poison`]: retrying cannot fix it.
pub fn parse_event(body: &[u8]) -> Result<Event, Poison> {
    let raw: RawEnvelope =
        serde_json::from_slice(body).map_err(|e| Poison(format!("invalid envelope: {e}")))?;
    let event_id = Uuid::parse_str(&raw.event_id)
        .map_err(|_| Poison(format!("event_id {:?} is not a UUID", raw.event_id)))?;
    let kind = EventType::parse(&raw.event_type)
        .ok_or_else(|| Poison(format!("unknown event type {:?}", raw.event_type)))?;
    let data_err = |e: serde_json::Error| Poison(format!("invalid {} data: {e}", raw.event_type));
    let payload = match kind {
        EventType::BookingPendingPayment
        | EventType::BookingConfirmed
        | EventType::BookingCancelled
        | EventType::BookingExpired
        | EventType::BookingRefunded => {
            let b: BookingData = serde_json::from_value(raw.data).map_err(data_err)?;
            require("booking_id", &b.booking_id)?;
            require("user_id", &b.user_id)?;
            require("movie_title", &b.movie_title)?;
            Payload::Booking(b)
        }
        EventType::PaymentSuccess | EventType::PaymentFailed => {
            let p: PaymentData = serde_json::from_value(raw.data).map_err(data_err)?;
            require("booking_id", &p.booking_id)?;
            require("user_id", &p.user_id)?;
            Payload::Payment(p)
        }
        EventType::PaymentRefund => {
            let r: RefundData = serde_json::from_value(raw.data).map_err(data_err)?;
            require("booking_id", &r.booking_id)?;
            require("user_id", &r.user_id)?;
            Payload::Refund(r)
        }
    };
    Ok(Event {
        event_id,
        kind,
        occurred_at: raw.occurred_at,
        payload,
    })
}

fn require(field: &str, value: &str) -> Result<(), Poison> {
    if value.trim().is_empty() {
        Err(Poison(format!("field {field} is empty")))
    } else {
        Ok(())
    }
}

/// What the worker remembers about a booking (from booking events) so that payment events,
/// which carry only ids and amounts, can still say which film the payment was for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BookingSummary {
    pub movie_title: String,
    pub cinema_name: String,
    pub start_time: String,
    pub seats: Vec<String>,
}

impl From<&BookingData> for BookingSummary {
    fn from(b: &BookingData) -> Self {
        Self {
            movie_title: b.movie_title.clone(),
            cinema_name: b.cinema_name.clone(),
            start_time: b.start_time.clone(),
            seats: b.seats.clone(),
        }
    }
}

/// A rendered notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub subject: String,
    pub body: String,
}

/// `12.5, "USD"` → `12.50 USD`.
pub fn money(amount: f64, currency: &str) -> String {
    format!("{amount:.2} {currency}")
}

/// An RFC 3339 time as people read it (`Fri 14 Mar 2025, 19:30 UTC`); the raw text when it does
/// not parse, so a formatting quirk never loses a notification.
pub fn human_time(rfc3339: &str) -> String {
    match DateTime::parse_from_rfc3339(rfc3339) {
        Ok(t) => {
            let utc = t.with_timezone(&Utc);
            utc.format("%a %d %b %Y, %H:%M UTC").to_string()
        }
        Err(_) => rfc3339.to_owned(),
    }
}

fn seats(seats: &[String]) -> String {
    if seats.is_empty() {
        "-".to_owned()
    } else {
        seats.join(", ")
    }
}

fn booking_lines(movie: &str, cinema: &str, start: &str, seat_list: &[String]) -> String {
    format!(
        "Movie:   {movie}\nCinema:  {cinema}\nTime:    {}\nSeats:   {}\n",
        human_time(start),
        seats(seat_list)
    )
}

const SIGNATURE: &str = "\nThank you for booking with MovieBook.\n";

/// The notification for an event. `summary` is what is known about the booking from earlier
/// booking events (payment events carry no film details).
pub fn render(event: &Event, summary: Option<&BookingSummary>) -> Message {
    match &event.payload {
        Payload::Booking(b) => render_booking(event.kind, b),
        Payload::Payment(p) => render_payment(event.kind, p, summary),
        Payload::Refund(r) => render_refund(r, summary),
    }
}

fn render_booking(kind: EventType, b: &BookingData) -> Message {
    let details = booking_lines(&b.movie_title, &b.cinema_name, &b.start_time, &b.seats);
    let total = money(b.total_amount, &b.currency);
    let id = &b.booking_id;
    let (subject, intro, outro) = match kind {
        EventType::BookingPendingPayment => (
            format!(
                "Seats reserved for {} — complete your payment",
                b.movie_title
            ),
            "Your seats are reserved. Complete the payment to confirm the booking.".to_owned(),
            match &b.expires_at {
                Some(t) => format!("The reservation is held until {}.\n", human_time(t)),
                None => String::new(),
            },
        ),
        EventType::BookingConfirmed => (
            format!("Booking confirmed: {}", b.movie_title),
            "Your booking is confirmed. Enjoy the show!".to_owned(),
            String::new(),
        ),
        EventType::BookingCancelled => (
            format!("Booking cancelled: {}", b.movie_title),
            "Your booking has been cancelled and the seats were released.".to_owned(),
            String::new(),
        ),
        EventType::BookingExpired => (
            format!("Reservation expired: {}", b.movie_title),
            "Your reservation expired before payment, so the seats were released.".to_owned(),
            String::new(),
        ),
        // Only booking kinds reach here; any other is treated as a refund notice.
        _ => (
            format!("Booking refunded: {}", b.movie_title),
            "Your booking could not be completed and the payment has been refunded.".to_owned(),
            String::new(),
        ),
    };
    Message {
        subject,
        body: format!("{intro}\n\n{details}Total:   {total}\nBooking: {id}\n{outro}{SIGNATURE}"),
    }
}

fn summary_lines(summary: Option<&BookingSummary>) -> String {
    summary
        .map(|s| booking_lines(&s.movie_title, &s.cinema_name, &s.start_time, &s.seats))
        .unwrap_or_default()
}

fn render_payment(kind: EventType, p: &PaymentData, summary: Option<&BookingSummary>) -> Message {
    let amount = money(p.amount, &p.currency);
    let details = summary_lines(summary);
    let what = summary
        .map(|s| format!(" for {}", s.movie_title))
        .unwrap_or_default();
    if kind == EventType::PaymentFailed {
        let reason = p
            .failure_reason
            .clone()
            .or_else(|| p.failure_code.clone())
            .unwrap_or_else(|| "the payment was declined".to_owned());
        Message {
            subject: format!("Payment failed{what}"),
            body: format!(
                "Your payment of {amount} could not be processed: {reason}.\n\n{details}Booking: {}\nTransaction: {}\n{SIGNATURE}",
                p.booking_id, p.transaction_id
            ),
        }
    } else {
        Message {
            subject: format!("Payment received{what}"),
            body: format!(
                "We received your payment of {amount}.\n\n{details}Booking: {}\nTransaction: {}\n{SIGNATURE}",
                p.booking_id, p.transaction_id
            ),
        }
    }
}

fn render_refund(r: &RefundData, summary: Option<&BookingSummary>) -> Message {
    let amount = money(r.amount, &r.currency);
    let details = summary_lines(summary);
    let reason = r
        .reason
        .as_deref()
        .map(|x| format!("Reason: {x}\n"))
        .unwrap_or_default();
    Message {
        subject: format!("Refund issued: {amount}"),
        body: format!(
            "A refund of {amount} has been issued to your original payment method.\n\n{details}{reason}Booking: {}\nRefund: {}\n{SIGNATURE}",
            r.booking_id, r.refund_id
        ),
    }
}

/// What to do with a delivery whose notification could not be sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureAction {
    /// Requeue after this delay.
    Retry(Duration),
    /// Give up: record the failure and dead-letter the message.
    DeadLetter,
}

/// The delay before retry number `attempt` (1-based: the delay after the first failure is
/// `base`), doubled each time and capped.
pub fn backoff(attempt: u32, base: Duration, max: Duration) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    base.saturating_mul(1u32 << exp).min(max)
}

/// After `attempts` failed attempts (this one included), retry or give up.
pub fn on_failure(
    attempts: u32,
    max_attempts: u32,
    base: Duration,
    max: Duration,
) -> FailureAction {
    if attempts >= max_attempts {
        FailureAction::DeadLetter
    } else {
        FailureAction::Retry(backoff(attempts, base, max))
    }
}

/// A token for an in-progress claim: unique per attempt, so only its owner can release it.
pub fn claim_token() -> String {
    format!("processing:{}", Uuid::new_v4())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn envelope(event_type: &str, data: serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "event_id": Uuid::new_v4().to_string(),
            "event_type": event_type,
            "occurred_at": "2025-03-14T18:00:00Z",
            "source": "test",
            "data": data,
        }))
        .unwrap()
    }

    fn booking_data() -> serde_json::Value {
        json!({
            "booking_id": "b-1", "user_id": "u-1", "user_email": "ann@example.com",
            "showtime_id": "s-1", "movie_title": "Dune: Part Two", "cinema_name": "Grand Rex",
            "start_time": "2025-03-14T19:30:00Z", "seats": ["A1", "A2"],
            "total_amount": 25.5, "currency": "EUR", "status": "PENDING_PAYMENT",
            "lock_id": "l-1", "expires_at": "2025-03-14T18:05:00Z"
        })
    }

    #[test]
    fn booking_event_parses_and_renders_every_detail() {
        let e = parse_event(&envelope("booking.pending_payment", booking_data())).unwrap();
        assert_eq!(e.kind, EventType::BookingPendingPayment);
        assert_eq!(e.booking_id(), "b-1");
        assert_eq!(e.user_id(), "u-1");
        let m = render(&e, None);
        assert!(m.subject.contains("Dune: Part Two"), "{}", m.subject);
        for needle in [
            "Dune: Part Two",
            "Grand Rex",
            "Fri 14 Mar 2025, 19:30 UTC",
            "A1, A2",
            "25.50 EUR",
            "b-1",
            "18:05",
        ] {
            assert!(m.body.contains(needle), "missing {needle:?} in\n{}", m.body);
        }
    }

    #[test]
    fn each_booking_kind_has_its_own_subject() {
        let mut subjects = std::collections::HashSet::new();
        for t in [
            "booking.pending_payment",
            "booking.confirmed",
            "booking.cancelled",
            "booking.expired",
            "booking.refunded",
        ] {
            let e = parse_event(&envelope(t, booking_data())).unwrap();
            subjects.insert(render(&e, None).subject);
        }
        assert_eq!(subjects.len(), 5);
    }

    #[test]
    fn payment_events_use_the_cached_booking_summary() {
        let data = json!({"transaction_id": "t-1", "booking_id": "b-1", "user_id": "u-1",
            "amount": 25.5, "currency": "USD", "payment_method": "credit_card", "status": "SUCCESS"});
        let e = parse_event(&envelope("payment.success", data)).unwrap();
        let bare = render(&e, None);
        assert!(bare.body.contains("25.50 USD") && bare.body.contains("t-1"));
        let summary = BookingSummary {
            movie_title: "Alien".into(),
            cinema_name: "Odeon".into(),
            start_time: "2025-01-01T20:00:00Z".into(),
            seats: vec!["C3".into()],
        };
        let full = render(&e, Some(&summary));
        assert!(full.subject.contains("Alien"));
        assert!(full.body.contains("Odeon") && full.body.contains("C3"));
    }

    #[test]
    fn failed_payment_says_why_and_refund_says_how_much() {
        let data = json!({"transaction_id": "t-1", "booking_id": "b-1", "user_id": "u-1",
            "amount": 10, "currency": "USD", "status": "FAILED",
            "failure_code": "CARD_DECLINED", "failure_reason": "card declined"});
        let m = render(
            &parse_event(&envelope("payment.failed", data)).unwrap(),
            None,
        );
        assert!(m.subject.starts_with("Payment failed"));
        assert!(m.body.contains("card declined"));
        let data = json!({"refund_id": "r-1", "transaction_id": "t-1", "booking_id": "b-1",
            "user_id": "u-1", "amount": 7.25, "currency": "USD", "reason": "hold expired"});
        let m = render(
            &parse_event(&envelope("payment.refund", data)).unwrap(),
            None,
        );
        assert!(m.subject.contains("7.25 USD"));
        assert!(m.body.contains("hold expired") && m.body.contains("r-1"));
    }

    #[test]
    fn poison_is_detected_and_explained() {
        assert!(parse_event(b"not json").unwrap_err().0.contains("envelope"));
        let unknown = parse_event(&envelope("booking.teleported", booking_data())).unwrap_err();
        assert!(unknown.0.contains("unknown event type"), "{unknown}");
        let mut missing = booking_data();
        missing.as_object_mut().unwrap().remove("movie_title");
        let err = parse_event(&envelope("booking.confirmed", missing)).unwrap_err();
        assert!(err.0.contains("movie_title"), "{err}");
        let mut empty = booking_data();
        empty["booking_id"] = json!("  ");
        assert!(parse_event(&envelope("booking.confirmed", empty)).is_err());
        let bad_id =
            serde_json::to_vec(&json!({"event_id": "42", "event_type": "booking.confirmed",
            "occurred_at": "2025-03-14T18:00:00Z", "source": "x", "data": booking_data()}))
            .unwrap();
        assert!(parse_event(&bad_id).unwrap_err().0.contains("UUID"));
    }

    #[test]
    fn unparseable_time_is_shown_as_is() {
        assert_eq!(human_time("tonight"), "tonight");
    }

    #[test]
    fn backoff_doubles_then_caps() {
        let base = Duration::from_millis(100);
        let max = Duration::from_secs(1);
        assert_eq!(backoff(1, base, max), Duration::from_millis(100));
        assert_eq!(backoff(2, base, max), Duration::from_millis(200));
        assert_eq!(backoff(4, base, max), Duration::from_millis(800));
        assert_eq!(backoff(5, base, max), max);
        assert_eq!(backoff(u32::MAX, base, max), max);
    }

    #[test]
    fn failures_are_bounded() {
        let b = Duration::from_millis(10);
        let m = Duration::from_secs(1);
        assert_eq!(on_failure(1, 3, b, m), FailureAction::Retry(b));
        assert_eq!(on_failure(2, 3, b, m), FailureAction::Retry(b * 2));
        assert_eq!(on_failure(3, 3, b, m), FailureAction::DeadLetter);
        assert_eq!(on_failure(1, 1, b, m), FailureAction::DeadLetter);
    }
}
