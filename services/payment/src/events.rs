//! The events the payment service publishes (through the outbox), built from stored documents
//! so an event always says exactly what was committed.

use moviebook_common::events::{EventEnvelope, EventType};
use serde_json::{Map, Value, json};

use crate::{
    domain::cents_to_amount,
    store::{RefundDoc, TransactionDoc},
};

pub const SOURCE: &str = "payment-service";

/// `payment.success` or `payment.failed`.
pub fn payment_event(tx: &TransactionDoc) -> EventEnvelope {
    let kind = if tx.status == "SUCCESS" {
        EventType::PaymentSuccess
    } else {
        EventType::PaymentFailed
    };
    let mut data = Map::new();
    data.insert("transaction_id".into(), json!(tx.id));
    data.insert("booking_id".into(), json!(tx.booking_id));
    data.insert("user_id".into(), json!(tx.user_id));
    data.insert("amount".into(), json!(cents_to_amount(tx.amount_cents)));
    data.insert("currency".into(), json!(tx.currency));
    data.insert("payment_method".into(), json!(tx.payment_method));
    data.insert("status".into(), json!(tx.status));
    if let Some(c) = &tx.failure_code {
        data.insert("failure_code".into(), json!(c));
    }
    if let Some(r) = &tx.failure_reason {
        data.insert("failure_reason".into(), json!(r));
    }
    EventEnvelope::new(kind, SOURCE, Value::Object(data))
}

/// `payment.refund`.
pub fn refund_event(refund: &RefundDoc) -> EventEnvelope {
    let mut data = Map::new();
    data.insert("refund_id".into(), json!(refund.id));
    data.insert("transaction_id".into(), json!(refund.transaction_id));
    data.insert("booking_id".into(), json!(refund.booking_id));
    data.insert("user_id".into(), json!(refund.user_id));
    data.insert("amount".into(), json!(cents_to_amount(refund.amount_cents)));
    data.insert("currency".into(), json!(refund.currency));
    if let Some(r) = &refund.reason {
        data.insert("reason".into(), json!(r));
    }
    EventEnvelope::new(EventType::PaymentRefund, SOURCE, Value::Object(data))
}
