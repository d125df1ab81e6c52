//! The event envelope of docs/architecture.md.
//!
//! `{event_id, event_type, occurred_at, source, data}`, published to the durable topic exchange
//! [`EXCHANGE`] with the routing key equal to `event_type`.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The topic exchange every event goes to (the name the broker grants allow).
pub const EXCHANGE: &str = moviebook_grants::rabbitmq::EXCHANGE;

/// Every event type MovieBook publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum EventType {
    #[serde(rename = "booking.pending_payment")]
    BookingPendingPayment,
    #[serde(rename = "booking.confirmed")]
    BookingConfirmed,
    #[serde(rename = "booking.cancelled")]
    BookingCancelled,
    #[serde(rename = "booking.expired")]
    BookingExpired,
    #[serde(rename = "booking.refunded")]
    BookingRefunded,
    #[serde(rename = "payment.success")]
    PaymentSuccess,
    #[serde(rename = "payment.failed")]
    PaymentFailed,
    #[serde(rename = "payment.refund")]
    PaymentRefund,
}

impl EventType {
    pub const ALL: [EventType; 8] = [
        Self::BookingPendingPayment,
        Self::BookingConfirmed,
        Self::BookingCancelled,
        Self::BookingExpired,
        Self::BookingRefunded,
        Self::PaymentSuccess,
        Self::PaymentFailed,
        Self::PaymentRefund,
    ];

    /// The wire name, which is also the routing key.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BookingPendingPayment => "booking.pending_payment",
            Self::BookingConfirmed => "booking.confirmed",
            Self::BookingCancelled => "booking.cancelled",
            Self::BookingExpired => "booking.expired",
            Self::BookingRefunded => "booking.refunded",
            Self::PaymentSuccess => "payment.success",
            Self::PaymentFailed => "payment.failed",
            Self::PaymentRefund => "payment.refund",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == s)
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One event as it travels on the wire. `event_type` stays a string so a consumer can receive
/// types newer than itself (and dead-letter them) instead of failing to parse the envelope.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct EventEnvelope {
    pub event_id: Uuid,
    pub event_type: String,
    pub occurred_at: DateTime<Utc>,
    pub source: String,
    pub data: serde_json::Value,
}

impl EventEnvelope {
    /// A new event with a fresh id, stamped now.
    pub fn new(event_type: EventType, source: &str, data: serde_json::Value) -> Self {
        Self {
            event_id: Uuid::new_v4(),
            event_type: event_type.as_str().to_owned(),
            occurred_at: Utc::now(),
            source: source.to_owned(),
            data,
        }
    }

    /// The routing key: equal to the event type.
    pub fn routing_key(&self) -> &str {
        &self.event_type
    }

    pub fn kind(&self) -> Option<EventType> {
        EventType::parse(&self.event_type)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn envelope_has_the_design_fields() {
        let e = EventEnvelope::new(
            EventType::BookingConfirmed,
            "booking-service",
            serde_json::json!({"booking_id": "b1"}),
        );
        let v = serde_json::to_value(&e).unwrap();
        for field in ["event_id", "event_type", "occurred_at", "source", "data"] {
            assert!(v.get(field).is_some(), "missing {field}");
        }
        assert_eq!(v["event_type"], "booking.confirmed");
        assert_eq!(e.routing_key(), "booking.confirmed");
        // RFC 3339
        let ts = v["occurred_at"].as_str().unwrap();
        assert!(chrono::DateTime::parse_from_rfc3339(ts).is_ok(), "{ts}");
        assert!(Uuid::parse_str(v["event_id"].as_str().unwrap()).is_ok());
    }

    #[test]
    fn every_type_round_trips() {
        for t in EventType::ALL {
            assert_eq!(EventType::parse(t.as_str()), Some(t));
            let json = serde_json::to_string(&t).unwrap();
            assert_eq!(json, format!("\"{}\"", t.as_str()));
        }
        assert_eq!(EventType::parse("booking.unknown"), None);
    }
}
