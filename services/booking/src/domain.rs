//! The booking's decisions as plain functions: the state machine, input validation, idempotency
//! keys. No I/O here, so every rule is unit tested.

use std::{collections::HashSet, fmt};

use moviebook_common::events::EventType;
use serde::{Deserialize, Serialize};

/// Where a booking is in its life.
///
/// ```text
///  PENDING_PAYMENT ──pay──▶ PAYING ──ok + seats──▶ CONFIRMED ──cancel──▶ CANCELLED
///     │  ▲    │               │  │                                (refunded, seats returned)
///     │  │    │               │  └─ok, seats lost──▶ REFUNDED
///     │  │    │               ├─declined──▶ PAYMENT_FAILED ──pay──▶ PAYING (retry)
///     │  └────┼───────────────┘ (outcome unknown / bad input: back to where it was)
///     │       └─cancel──▶ CANCELLED      PAYMENT_FAILED ──cancel/expire──▶ CANCELLED/EXPIRED
///     └─hold expired──▶ EXPIRED
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, async_graphql::Enum)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[graphql(rename_items = "SCREAMING_SNAKE_CASE")]
pub enum BookingStatus {
    PendingPayment,
    Paying,
    PaymentFailed,
    Confirmed,
    Cancelled,
    Expired,
    Refunded,
}

impl BookingStatus {
    pub const ALL: [BookingStatus; 7] = [
        Self::PendingPayment,
        Self::Paying,
        Self::PaymentFailed,
        Self::Confirmed,
        Self::Cancelled,
        Self::Expired,
        Self::Refunded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::PendingPayment => "PENDING_PAYMENT",
            Self::Paying => "PAYING",
            Self::PaymentFailed => "PAYMENT_FAILED",
            Self::Confirmed => "CONFIRMED",
            Self::Cancelled => "CANCELLED",
            Self::Expired => "EXPIRED",
            Self::Refunded => "REFUNDED",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }

    /// No transition leaves a terminal state.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Cancelled | Self::Expired | Self::Refunded)
    }

    /// States in which the seats are only held (not sold) and the hold can lapse.
    pub fn holds_seats(self) -> bool {
        matches!(
            self,
            Self::PendingPayment | Self::Paying | Self::PaymentFailed
        )
    }

    /// The event published when a booking enters this state, if any. PAYING and
    /// PAYMENT_FAILED are internal steps: the payment service publishes payment.* for them.
    pub fn event(self) -> Option<EventType> {
        match self {
            Self::PendingPayment => Some(EventType::BookingPendingPayment),
            Self::Confirmed => Some(EventType::BookingConfirmed),
            Self::Cancelled => Some(EventType::BookingCancelled),
            Self::Expired => Some(EventType::BookingExpired),
            Self::Refunded => Some(EventType::BookingRefunded),
            Self::Paying | Self::PaymentFailed => None,
        }
    }
}

impl fmt::Display for BookingStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happens to a booking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BookingEvent {
    /// A caller starts paying (claims the booking so concurrent calls charge once).
    PaymentStarted,
    /// The gateway declined the card.
    PaymentDeclined,
    /// The payment call ended without a definite outcome, or was refused as invalid before
    /// charging: the claim is given back.
    PaymentAborted { back_to: BookingStatus },
    /// Paid and the seats confirmed by the cinema.
    SeatsConfirmed,
    /// Paid but the seats could not be confirmed; the payment was refunded.
    PaymentRefunded,
    /// The user cancelled.
    Cancelled,
    /// The hold lapsed before payment.
    HoldExpired,
}

/// A transition the state machine forbids.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("a {from} booking cannot go through {event:?}")]
pub struct InvalidTransition {
    pub from: BookingStatus,
    pub event: BookingEvent,
}

/// The state machine: the state a booking in `from` moves to on `event`.
pub fn transition(
    from: BookingStatus,
    event: BookingEvent,
) -> Result<BookingStatus, InvalidTransition> {
    use BookingEvent as E;
    use BookingStatus as S;
    let to = match (from, event) {
        (S::PendingPayment | S::PaymentFailed, E::PaymentStarted) => S::Paying,
        (S::Paying, E::PaymentDeclined) => S::PaymentFailed,
        (S::Paying, E::PaymentAborted { back_to })
            if matches!(back_to, S::PendingPayment | S::PaymentFailed) =>
        {
            back_to
        }
        (S::Paying, E::SeatsConfirmed) => S::Confirmed,
        (S::Paying, E::PaymentRefunded) => S::Refunded,
        (S::PendingPayment | S::PaymentFailed | S::Confirmed, E::Cancelled) => S::Cancelled,
        // PAYING expires only through the sweeper's reconciliation, which first makes sure no
        // payment went through (or refunds it: PaymentRefunded).
        (S::PendingPayment | S::PaymentFailed | S::Paying, E::HoldExpired) => S::Expired,
        _ => return Err(InvalidTransition { from, event }),
    };
    Ok(to)
}

/// Why an input was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InputError(pub String);

/// A UUID-shaped id (user, showtime, booking ids are UUID strings), normalised to lower case.
pub fn parse_id(field: &str, value: &str) -> Result<String, InputError> {
    uuid::Uuid::parse_str(value.trim())
        .map(|u| u.to_string())
        .map_err(|_| InputError(format!("{field} must be a UUID")))
}

/// Seat numbers like "A1" or "B12": a row of one or two letters and a number from 1 to 999.
/// Normalised to upper case; empty lists, duplicates and more than `max` seats are refused.
pub fn validate_seats(seats: &[String], max: usize) -> Result<Vec<String>, InputError> {
    if seats.is_empty() {
        return Err(InputError("seatNumbers must not be empty".into()));
    }
    if seats.len() > max {
        return Err(InputError(format!(
            "at most {max} seats per booking, got {}",
            seats.len()
        )));
    }
    let mut seen = HashSet::with_capacity(seats.len());
    let mut out = Vec::with_capacity(seats.len());
    for raw in seats {
        let seat = raw.trim().to_ascii_uppercase();
        if !is_seat_number(&seat) {
            let shown: String = raw.chars().take(16).collect();
            return Err(InputError(format!("invalid seat number {shown:?}")));
        }
        if !seen.insert(seat.clone()) {
            return Err(InputError(format!("seat {seat} is listed twice")));
        }
        out.push(seat);
    }
    Ok(out)
}

fn is_seat_number(s: &str) -> bool {
    let letters = s.bytes().take_while(u8::is_ascii_uppercase).count();
    let digits = &s[letters..];
    (1..=2).contains(&letters)
        && (1..=3).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

/// Payment methods the gateway knows.
pub const PAYMENT_METHODS: [&str; 5] = [
    "credit_card",
    "debit_card",
    "paypal",
    "apple_pay",
    "google_pay",
];

pub fn validate_payment_method(method: &str) -> Result<String, InputError> {
    let m = method.trim().to_ascii_lowercase();
    if PAYMENT_METHODS.contains(&m.as_str()) {
        Ok(m)
    } else {
        Err(InputError(format!(
            "paymentMethod must be one of {}",
            PAYMENT_METHODS.join(", ")
        )))
    }
}

/// `paymentDetails` is an optional JSON object given as a string.
pub fn parse_payment_details(
    details: Option<&str>,
) -> Result<Option<serde_json::Value>, InputError> {
    let Some(raw) = details.map(str::trim).filter(|s| !s.is_empty()) else {
        return Ok(None);
    };
    match serde_json::from_str::<serde_json::Value>(raw) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(Some(v)),
        Ok(_) => Err(InputError("paymentDetails must be a JSON object".into())),
        Err(_) => Err(InputError("paymentDetails is not valid JSON".into())),
    }
}

/// The payment's Idempotency-Key. The first attempt uses the booking id itself (so a retried
/// request after an unknown outcome replays the same charge); each retry after a definite
/// decline gets its own key, since the payment service refuses a reused key with another card.
pub fn payment_idempotency_key(booking_id: &str, attempt: u32) -> String {
    if attempt == 0 {
        booking_id.to_owned()
    } else {
        format!("{booking_id}:retry-{attempt}")
    }
}

/// The refund's Idempotency-Key: one refund per booking, however often it is retried.
pub fn refund_idempotency_key(booking_id: &str) -> String {
    format!("refund:{booking_id}")
}

/// How long to wait before the next attempt of a compensation that failed `attempts` times:
/// doubling from 2 s, at most 5 minutes (a dependency that is down is not hammered, and one
/// that is back is used within minutes).
pub fn repair_backoff(attempts: i32) -> std::time::Duration {
    let exp = u32::try_from(attempts.clamp(1, 9)).unwrap_or(1);
    std::time::Duration::from_secs((1u64 << exp).min(300))
}

/// What the payment service's answer to a charge means for the booking.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChargeVerdict {
    /// Money taken and still kept: the seats may be confirmed.
    Charged,
    /// No money kept: the booking goes to PAYMENT_FAILED with this code and reason, and the
    /// next attempt uses a new payment key.
    NotCharged { code: String, reason: String },
}

/// Decides on a charge's answer. A SUCCESS that was (partly) refunded is **not** a charge: it is
/// the replay of an earlier attempt whose answer was lost and whose money a cancel or expiry
/// then refunded, while this request claimed the booking. Confirming on it would give the
/// seats away for nothing.
pub fn charge_verdict(
    status: &str,
    refunded_amount: f64,
    failure_code: Option<&str>,
    failure_reason: Option<&str>,
) -> ChargeVerdict {
    match status {
        "SUCCESS" if refunded_amount <= 0.0 => ChargeVerdict::Charged,
        "SUCCESS" => ChargeVerdict::NotCharged {
            code: "CHARGE_REFUNDED".into(),
            reason: "the earlier charge of this booking was refunded; pay again".into(),
        },
        _ => ChargeVerdict::NotCharged {
            code: failure_code.unwrap_or("DECLINED").to_owned(),
            reason: failure_reason
                .unwrap_or("the payment was declined")
                .to_owned(),
        },
    }
}

/// Money rounded to cents.
pub fn round_money(amount: f64) -> f64 {
    (amount * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refunded_success_is_not_a_charge() {
        assert_eq!(
            charge_verdict("SUCCESS", 0.0, None, None),
            ChargeVerdict::Charged
        );
        let ChargeVerdict::NotCharged { code, .. } = charge_verdict("SUCCESS", 12.5, None, None)
        else {
            panic!("a refunded charge confirmed the seats");
        };
        assert_eq!(code, "CHARGE_REFUNDED");
        assert!(matches!(
            charge_verdict("SUCCESS", 0.01, None, None),
            ChargeVerdict::NotCharged { .. }
        ));
        assert_eq!(
            charge_verdict("FAILED", 0.0, Some("CARD_DECLINED"), Some("no funds")),
            ChargeVerdict::NotCharged {
                code: "CARD_DECLINED".into(),
                reason: "no funds".into()
            }
        );
        assert_eq!(
            charge_verdict("FAILED", 0.0, None, None),
            ChargeVerdict::NotCharged {
                code: "DECLINED".into(),
                reason: "the payment was declined".into()
            }
        );
    }
    use BookingEvent as E;
    use BookingStatus as S;

    #[test]
    fn happy_path() {
        let s = transition(S::PendingPayment, E::PaymentStarted).unwrap();
        assert_eq!(s, S::Paying);
        assert_eq!(transition(s, E::SeatsConfirmed), Ok(S::Confirmed));
    }

    #[test]
    fn decline_then_retry() {
        let s = transition(S::Paying, E::PaymentDeclined).unwrap();
        assert_eq!(s, S::PaymentFailed);
        assert_eq!(transition(s, E::PaymentStarted), Ok(S::Paying));
    }

    #[test]
    fn a_paying_booking_cannot_be_claimed_twice() {
        // The conditional update relies on this: a second concurrent processPayment finds PAYING.
        assert!(transition(S::Paying, E::PaymentStarted).is_err());
        assert!(transition(S::Confirmed, E::PaymentStarted).is_err());
    }

    #[test]
    fn paid_but_seats_lost_ends_refunded() {
        assert_eq!(transition(S::Paying, E::PaymentRefunded), Ok(S::Refunded));
        assert!(transition(S::PendingPayment, E::SeatsConfirmed).is_err());
        assert!(transition(S::PaymentFailed, E::SeatsConfirmed).is_err());
    }

    #[test]
    fn abort_returns_to_a_payable_state_only() {
        assert_eq!(
            transition(
                S::Paying,
                E::PaymentAborted {
                    back_to: S::PaymentFailed
                }
            ),
            Ok(S::PaymentFailed)
        );
        assert!(
            transition(
                S::Paying,
                E::PaymentAborted {
                    back_to: S::Confirmed
                }
            )
            .is_err()
        );
        assert!(
            transition(
                S::PendingPayment,
                E::PaymentAborted {
                    back_to: S::PendingPayment
                }
            )
            .is_err()
        );
    }

    #[test]
    fn cancel_rules() {
        assert_eq!(
            transition(S::PendingPayment, E::Cancelled),
            Ok(S::Cancelled)
        );
        assert_eq!(transition(S::PaymentFailed, E::Cancelled), Ok(S::Cancelled));
        assert_eq!(transition(S::Confirmed, E::Cancelled), Ok(S::Cancelled));
        // While a payment is in flight the booking cannot be cancelled under it.
        assert!(transition(S::Paying, E::Cancelled).is_err());
    }

    #[test]
    fn terminal_states_are_final() {
        for from in S::ALL.into_iter().filter(|s| s.is_terminal()) {
            for event in [
                E::PaymentStarted,
                E::PaymentDeclined,
                E::SeatsConfirmed,
                E::PaymentRefunded,
                E::Cancelled,
                E::HoldExpired,
                E::PaymentAborted {
                    back_to: S::PendingPayment,
                },
            ] {
                assert!(transition(from, event).is_err(), "{from} {event:?}");
            }
        }
    }

    #[test]
    fn confirmed_never_expires() {
        assert!(transition(S::Confirmed, E::HoldExpired).is_err());
        assert_eq!(
            transition(S::PendingPayment, E::HoldExpired),
            Ok(S::Expired)
        );
    }

    #[test]
    fn status_names_round_trip_and_events() {
        for s in S::ALL {
            assert_eq!(S::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert_eq!(S::Confirmed.event(), Some(EventType::BookingConfirmed));
        assert_eq!(S::Paying.event(), None);
    }

    #[test]
    fn seats_are_validated() {
        let ok = validate_seats(&["a1".into(), " B12 ".into()], 10).unwrap();
        assert_eq!(ok, vec!["A1", "B12"]);
        assert!(validate_seats(&[], 10).is_err());
        assert!(validate_seats(&["A1".into(), "a1".into()], 10).is_err());
        for bad in ["", "1A", "A", "A0", "ABC1", "A1234", "A-1", "Ä1", "A01"] {
            assert!(validate_seats(&[bad.into()], 10).is_err(), "{bad}");
        }
        let many: Vec<String> = (1..=11).map(|i| format!("A{i}")).collect();
        assert!(validate_seats(&many, 10).is_err());
    }

    #[test]
    fn ids_must_be_uuids() {
        let id = uuid::Uuid::new_v4().to_string();
        assert_eq!(parse_id("x", &id.to_uppercase()).unwrap(), id);
        assert!(
            parse_id("bookingId", "nope")
                .unwrap_err()
                .0
                .contains("bookingId")
        );
    }

    #[test]
    fn payment_inputs() {
        assert_eq!(
            validate_payment_method("Credit_Card").unwrap(),
            "credit_card"
        );
        assert!(validate_payment_method("cash").is_err());
        assert_eq!(parse_payment_details(None).unwrap(), None);
        assert_eq!(parse_payment_details(Some("  ")).unwrap(), None);
        assert!(
            parse_payment_details(Some("{\"card_number\":\"4111\"}"))
                .unwrap()
                .is_some()
        );
        assert!(parse_payment_details(Some("[1]")).is_err());
        assert!(parse_payment_details(Some("{oops")).is_err());
    }

    #[test]
    fn idempotency_keys() {
        assert_eq!(payment_idempotency_key("b", 0), "b");
        assert_ne!(
            payment_idempotency_key("b", 1),
            payment_idempotency_key("b", 2)
        );
        assert_eq!(refund_idempotency_key("b"), refund_idempotency_key("b"));
        assert_eq!(round_money(12.345_000_1), 12.35);
    }

    #[test]
    fn repair_backoff_doubles_up_to_five_minutes() {
        let secs = |n| repair_backoff(n).as_secs();
        assert_eq!((secs(0), secs(1), secs(2), secs(3)), (2, 2, 4, 8));
        assert_eq!(secs(8), 256);
        assert_eq!(secs(9), 300);
        assert_eq!(secs(1000), 300);
    }
}
