//! Client idempotency keys of createBooking and processPayment: the decisions, as plain
//! functions (the store keeps the records, [`crate::service`] applies them).
//!
//! A key is scoped to the user and bound to one request (the operation and its normalised
//! arguments, the *fingerprint*). A retry with the same key and request gets the first answer:
//! the booking it created or paid, or the same definite error; the same key with another
//! request is refused with `IDEMPOTENCY_KEY_REUSED`. Transient failures (a dependency down)
//! are not answers: the request runs again on retry.

use serde::{Deserialize, Serialize};

use crate::{domain::InputError, error::BookingError};

/// The HTTP header that may carry the key instead of the GraphQL argument.
pub const HEADER: &str = "idempotency-key";

/// The operations that take a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    CreateBooking,
    ProcessPayment,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::CreateBooking => "createBooking",
            Self::ProcessPayment => "processPayment",
        }
    }
}

/// The key to use: the argument, else the header; 1 to 255 visible ASCII characters. The two
/// may both be given only if they agree.
pub fn choose_key(
    argument: Option<&str>,
    header: Option<&str>,
) -> Result<Option<String>, InputError> {
    let key = match (argument, header) {
        (Some(a), Some(h)) if a.trim() != h.trim() => {
            return Err(InputError(
                "idempotencyKey and the Idempotency-Key header differ".into(),
            ));
        }
        (Some(k), _) | (None, Some(k)) => k.trim(),
        (None, None) => return Ok(None),
    };
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(InputError(
            "idempotencyKey must be 1 to 255 visible ASCII characters".into(),
        ));
    }
    Ok(Some(key.to_owned()))
}

/// createBooking's request, normalised (seats sorted: the same seats in another order are the
/// same request).
pub fn create_fingerprint(showtime_id: &str, seats: &[String]) -> String {
    let mut seats = seats.to_vec();
    seats.sort();
    format!(
        "{}|{showtime_id}|{}",
        Operation::CreateBooking.as_str(),
        seats.join(",")
    )
}

/// processPayment's request: the booking, the method and the card's last four digits (the
/// card number itself is never stored).
pub fn payment_fingerprint(
    booking_id: &str,
    method: &str,
    details: Option<&serde_json::Value>,
) -> String {
    let last4: String = details
        .and_then(|d| d.get("card_number"))
        .and_then(serde_json::Value::as_str)
        .map(|n| {
            let digits: Vec<char> = n.chars().filter(char::is_ascii_digit).collect();
            digits[digits.len().saturating_sub(4)..].iter().collect()
        })
        .unwrap_or_default();
    format!(
        "{}|{booking_id}|{method}|{last4}",
        Operation::ProcessPayment.as_str()
    )
}

/// A definite answer that a retry must get again, in storable form. Transient errors
/// (unavailable dependencies, internal errors, authentication) have none: they are retried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "code", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum StoredError {
    SeatsUnavailable {
        seats: Vec<String>,
        message: String,
    },
    PaymentDeclined {
        reason: String,
        message: String,
        transaction_id: Option<String>,
    },
    HoldExpired {
        message: String,
    },
    NotFound {
        message: String,
    },
    BadUserInput {
        message: String,
    },
    Forbidden {
        message: String,
    },
}

impl StoredError {
    /// The storable form of `e`, if it is a definite answer.
    pub fn of(e: &BookingError) -> Option<Self> {
        Some(match e {
            BookingError::SeatsUnavailable { seats, message } => Self::SeatsUnavailable {
                seats: seats.clone(),
                message: message.clone(),
            },
            BookingError::PaymentDeclined {
                code,
                reason,
                transaction_id,
            } => Self::PaymentDeclined {
                reason: code.clone(),
                message: reason.clone(),
                transaction_id: transaction_id.clone(),
            },
            BookingError::HoldExpired(m) => Self::HoldExpired { message: m.clone() },
            BookingError::NotFound(m) => Self::NotFound { message: m.clone() },
            BookingError::BadInput(m) => Self::BadUserInput { message: m.clone() },
            BookingError::Forbidden(m) => Self::Forbidden { message: m.clone() },
            BookingError::Unauthenticated(_)
            | BookingError::InvalidState { .. }
            | BookingError::IdempotencyKeyReused(_)
            | BookingError::Unavailable { .. }
            // transient: a retry after the wait must be able to succeed
            | BookingError::RateLimited { .. }
            | BookingError::Internal(_) => return None,
        })
    }

    /// The error to answer again.
    pub fn into_error(self) -> BookingError {
        match self {
            Self::SeatsUnavailable { seats, message } => {
                BookingError::SeatsUnavailable { seats, message }
            }
            Self::PaymentDeclined {
                reason,
                message,
                transaction_id,
            } => BookingError::PaymentDeclined {
                code: reason,
                reason: message,
                transaction_id,
            },
            Self::HoldExpired { message } => BookingError::HoldExpired(message),
            Self::NotFound { message } => BookingError::NotFound(message),
            Self::BadUserInput { message } => BookingError::BadInput(message),
            Self::Forbidden { message } => BookingError::Forbidden(message),
        }
    }
}

/// What a stored record says about a new request with its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Another request owns this key.
    Conflict,
    /// The first request ended with this definite error.
    Error(StoredError),
    /// The first request succeeded, or never finished: run it again for this booking (every
    /// step is idempotent per booking id, so a second run finds the first one's work).
    Rerun,
}

/// The decision for a request whose key already has a record.
pub fn replay(
    stored_fingerprint: &str,
    fingerprint: &str,
    outcome: Option<&StoredError>,
) -> Replay {
    if stored_fingerprint != fingerprint {
        return Replay::Conflict;
    }
    match outcome {
        Some(e) => Replay::Error(e.clone()),
        None => Replay::Rerun,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_come_from_the_argument_or_the_header() {
        assert_eq!(choose_key(None, None), Ok(None));
        assert_eq!(choose_key(Some(" k1 "), None), Ok(Some("k1".into())));
        assert_eq!(choose_key(None, Some("k1")), Ok(Some("k1".into())));
        assert_eq!(choose_key(Some("k1"), Some("k1")), Ok(Some("k1".into())));
        assert!(choose_key(Some("k1"), Some("k2")).is_err());
        assert!(choose_key(Some(""), None).is_err());
        assert!(choose_key(Some("a b"), None).is_err());
        assert!(choose_key(Some("é"), None).is_err());
        assert!(choose_key(Some(&"x".repeat(256)), None).is_err());
        assert!(choose_key(Some(&"x".repeat(255)), None).is_ok());
    }

    #[test]
    fn fingerprints_bind_the_request() {
        let a = create_fingerprint("s1", &["B2".into(), "A1".into()]);
        assert_eq!(a, create_fingerprint("s1", &["A1".into(), "B2".into()]));
        assert_ne!(a, create_fingerprint("s1", &["A1".into()]));
        assert_ne!(a, create_fingerprint("s2", &["A1".into(), "B2".into()]));
        let card = |n: &str| serde_json::json!({ "card_number": n, "cvv": "123" });
        let p = payment_fingerprint("b1", "credit_card", Some(&card("4111 1111 1111 1111")));
        assert_eq!(p, "processPayment|b1|credit_card|1111");
        assert!(!p.contains("4111111111111111"), "no card number stored");
        assert_ne!(
            p,
            payment_fingerprint("b1", "credit_card", Some(&card("4000000000000002")))
        );
        assert_ne!(
            p,
            payment_fingerprint("b1", "paypal", Some(&card("4111111111111111")))
        );
        assert_eq!(
            payment_fingerprint("b1", "paypal", None),
            "processPayment|b1|paypal|"
        );
        assert_ne!(a, p);
    }

    #[test]
    fn only_definite_answers_are_stored() {
        let declined = BookingError::PaymentDeclined {
            code: "CARD_DECLINED".into(),
            reason: "declined".into(),
            transaction_id: Some("t1".into()),
        };
        let stored = StoredError::of(&declined).expect("a definite answer");
        let back = stored.clone().into_error();
        assert_eq!(back.code(), "PAYMENT_DECLINED");
        assert_eq!(back.to_string(), declined.to_string());
        // It round-trips through BSON as the store keeps it.
        let doc = bson::to_document(&stored).expect("bson");
        assert_eq!(doc.get_str("code"), Ok("PAYMENT_DECLINED"));
        assert_eq!(bson::from_document::<StoredError>(doc).ok(), Some(stored));
        for transient in [
            BookingError::Unavailable {
                service: "payment",
                message: "down".into(),
            },
            BookingError::Internal("bug".into()),
            BookingError::invalid_state(crate::domain::BookingStatus::Paying, "in progress"),
        ] {
            assert_eq!(StoredError::of(&transient), None, "{transient}");
        }
    }

    #[test]
    fn replays() {
        let e = StoredError::HoldExpired {
            message: "gone".into(),
        };
        assert_eq!(replay("f1", "f2", None), Replay::Conflict);
        assert_eq!(replay("f1", "f2", Some(&e)), Replay::Conflict);
        assert_eq!(replay("f1", "f1", Some(&e)), Replay::Error(e));
        assert_eq!(replay("f1", "f1", None), Replay::Rerun);
    }
}
