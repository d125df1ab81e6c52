//! Every query against the `transactions` collection (and the `refunds` collection that
//! versions before the embedded refunds wrote).
//!
//! A payment is one document that carries everything that changes with it: its log, its
//! refunds and its pending events (the outbox inside the aggregate,
//! [`moviebook_common::outbox::embedded`]). Recording a payment is therefore one insert, and a
//! refund one conditional update of that document: atomic without a multi-document transaction,
//! and nothing for a crash to split. Events earlier versions left in the `outbox` collection are
//! still relayed from there ([`Store::legacy_outbox`]).

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::{
    Collection, Database, IndexModel,
    bson::{Bson, Document, doc},
    error::{Error as MongoError, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT},
    options::IndexOptions,
};
use moviebook_common::{
    events::EventEnvelope,
    mongo::write_refused,
    outbox::{Outbox, OutboxError},
};
use serde::{Deserialize, Serialize};

pub const TRANSACTIONS: &str = "transactions";
pub const REFUNDS: &str = "refunds";

/// One entry of a transaction's log: every state change, timestamped.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct LogEntry {
    pub status: String,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_cents: Option<i64>,
}

/// A stored payment. Card data is only ever the last four digits and the brand.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransactionDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub idempotency_key: String,
    pub fingerprint: String,
    pub booking_id: String,
    pub user_id: String,
    pub amount_cents: i64,
    pub currency: String,
    pub payment_method: String,
    /// `SUCCESS` or `FAILED`: the gateway's answer, never changed afterwards.
    pub status: String,
    #[serde(default)]
    pub failure_code: Option<String>,
    #[serde(default)]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub card_last4: Option<String>,
    #[serde(default)]
    pub card_brand: Option<String>,
    #[serde(default)]
    pub refunded_cents: i64,
    #[serde(default)]
    pub log: Vec<LogEntry>,
    /// The refunds of this payment, oldest first. Refunds made by versions before this field
    /// live in the `refunds` collection instead (see [`TransactionDoc::has_legacy_refunds`]).
    #[serde(default)]
    pub refunds: Vec<RefundDoc>,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub updated_at: DateTime<Utc>,
}

impl TransactionDoc {
    /// Whether some of the refunded amount was refunded by an earlier version, whose refund
    /// documents are in the `refunds` collection: only then is that collection worth a query.
    pub fn has_legacy_refunds(&self) -> bool {
        let embedded: i64 = self.refunds.iter().map(|r| r.amount_cents).sum();
        self.refunded_cents > embedded
    }

    /// The embedded refund recorded under `key`.
    pub fn refund_with_key(&self, key: &str) -> Option<&RefundDoc> {
        self.refunds.iter().find(|r| r.idempotency_key == key)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RefundDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub transaction_id: String,
    pub idempotency_key: String,
    pub fingerprint: String,
    pub booking_id: String,
    pub user_id: String,
    pub amount_cents: i64,
    pub currency: String,
    #[serde(default)]
    pub reason: Option<String>,
    pub status: String,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A unique index refused the write: someone else holds this idempotency key.
    #[error("duplicate idempotency key")]
    Duplicate,
    /// A concurrent transaction touched the same document; retrying is safe.
    #[error("write conflict, retry")]
    Conflict,
    #[error("mongodb: {0}")]
    Mongo(MongoError),
    /// A document or event could not be encoded (a bug, never the caller's input).
    #[error("cannot encode: {0}")]
    Serialize(String),
}

impl From<MongoError> for StoreError {
    fn from(e: MongoError) -> Self {
        classify(e)
    }
}

impl From<OutboxError> for StoreError {
    fn from(e: OutboxError) -> Self {
        match e {
            OutboxError::Mongo(m) => classify(m),
            OutboxError::Serialize(s) => StoreError::Serialize(s.to_string()),
        }
    }
}

/// Sorts a driver error into the cases the callers act on.
fn classify(e: MongoError) -> StoreError {
    if moviebook_common::mongo::is_duplicate_key(&e) {
        StoreError::Duplicate
    } else if e.contains_label(TRANSIENT_TRANSACTION_ERROR)
        || e.contains_label(UNKNOWN_TRANSACTION_COMMIT_RESULT)
        || matches!(e.sometimes_code(), Some(112 | 251))
    {
        StoreError::Conflict
    } else {
        StoreError::Mongo(e)
    }
}

trait SometimesCode {
    fn sometimes_code(&self) -> Option<i32>;
}

impl SometimesCode for MongoError {
    fn sometimes_code(&self) -> Option<i32> {
        match self.kind.as_ref() {
            mongodb::error::ErrorKind::Command(c) => Some(c.code),
            mongodb::error::ErrorKind::Write(mongodb::error::WriteFailure::WriteError(w)) => {
                Some(w.code)
            }
            _ => None,
        }
    }
}

#[derive(Clone)]
pub struct Store {
    transactions: Collection<TransactionDoc>,
    /// The same collection untyped: writes that carry the outbox fields.
    documents: Collection<Document>,
    legacy_refunds: Collection<RefundDoc>,
    outbox: Outbox,
    legacy_outbox: Outbox,
}

impl Store {
    pub fn new(db: &Database) -> Self {
        Self {
            transactions: db.collection(TRANSACTIONS),
            documents: db.collection(TRANSACTIONS),
            legacy_refunds: db.collection(REFUNDS),
            outbox: Outbox::embedded(db.collection(TRANSACTIONS)),
            legacy_outbox: Outbox::new(db),
        }
    }

    /// The events the payments carry (the relay publishes them from there).
    pub fn outbox(&self) -> &Outbox {
        &self.outbox
    }

    /// The `outbox` collection of versions before the events moved into the payments: still
    /// relayed, so that nothing they left behind is lost in an upgrade.
    pub fn legacy_outbox(&self) -> &Outbox {
        &self.legacy_outbox
    }

    /// The unique indexes are the idempotency guarantee: of N concurrent requests with one key,
    /// exactly one insert succeeds; the others read the winner.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let unique = |name: &str| {
            IndexOptions::builder()
                .name(name.to_owned())
                .unique(true)
                .build()
        };
        self.transactions
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "user_id": 1, "idempotency_key": 1 })
                    .options(unique("transactions_idempotency_unique"))
                    .build(),
            )
            .await?;
        self.transactions
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "booking_id": 1, "created_at": -1 })
                    .options(
                        IndexOptions::builder()
                            .name("transactions_by_booking".to_owned())
                            .build(),
                    )
                    .build(),
            )
            .await?;
        // Kept for pods of the previous version during a rolling upgrade, which still insert
        // refund documents there.
        self.legacy_refunds
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "transaction_id": 1, "idempotency_key": 1 })
                    .options(unique("refunds_idempotency_unique"))
                    .build(),
            )
            .await?;
        self.outbox.ensure_indexes().await?;
        self.legacy_outbox.ensure_indexes().await?;
        Ok(())
    }

    pub async fn by_key(
        &self,
        user_id: &str,
        key: &str,
    ) -> Result<Option<TransactionDoc>, StoreError> {
        Ok(self
            .transactions
            .find_one(doc! { "user_id": user_id, "idempotency_key": key })
            .await?)
    }

    pub async fn by_id(&self, id: &str) -> Result<Option<TransactionDoc>, StoreError> {
        Ok(self.transactions.find_one(doc! { "_id": id }).await?)
    }

    /// Newest first.
    pub async fn by_booking(&self, booking_id: &str) -> Result<Vec<TransactionDoc>, StoreError> {
        Ok(self
            .transactions
            .find(doc! { "booking_id": booking_id })
            .sort(doc! { "created_at": -1, "_id": -1 })
            .limit(1000)
            .await?
            .try_collect()
            .await?)
    }

    /// Inserts the transaction carrying its event: one single-document write, so the event
    /// exists if and only if the payment does. [`StoreError::Duplicate`] when the idempotency
    /// key is taken; [`StoreError::Conflict`] when the server gave no answer (the insert may
    /// have landed: the caller looks the key up before anything else).
    pub async fn insert_payment(
        &self,
        tx: &TransactionDoc,
        event: &EventEnvelope,
    ) -> Result<(), StoreError> {
        let mut document =
            bson::to_document(tx).map_err(|e| StoreError::Serialize(e.to_string()))?;
        Outbox::add_to_new(&mut document, event)?;
        match self.documents.insert_one(document).await {
            Ok(_) => {
                self.outbox.wake();
                Ok(())
            }
            Err(e) if write_refused(&e) => Err(classify(e)),
            Err(_) => Err(StoreError::Conflict),
        }
    }

    /// The refund recorded under `key` for `tx`: embedded, or (for refunds made by an earlier
    /// version) in the `refunds` collection.
    pub async fn refund_by_key(
        &self,
        tx: &TransactionDoc,
        key: &str,
    ) -> Result<Option<RefundDoc>, StoreError> {
        if let Some(r) = tx.refund_with_key(key) {
            return Ok(Some(r.clone()));
        }
        if !tx.has_legacy_refunds() {
            return Ok(None);
        }
        Ok(self
            .legacy_refunds
            .find_one(doc! { "transaction_id": &tx.id, "idempotency_key": key })
            .await?)
    }

    /// The most recent refund of `tx`, wherever it was recorded.
    pub async fn latest_refund(
        &self,
        tx: &TransactionDoc,
    ) -> Result<Option<RefundDoc>, StoreError> {
        let embedded = tx.refunds.iter().max_by_key(|r| r.created_at).cloned();
        if !tx.has_legacy_refunds() {
            return Ok(embedded);
        }
        let legacy = self
            .legacy_refunds
            .find_one(doc! { "transaction_id": &tx.id })
            .sort(doc! { "created_at": -1 })
            .await?;
        Ok([embedded, legacy]
            .into_iter()
            .flatten()
            .max_by_key(|r| r.created_at))
    }

    /// Records a refund and its event in one conditional update of the transaction: it applies
    /// only if the payment succeeded, nobody moved its refunded amount since
    /// `seen_refunded_cents` was read, and no refund holds this idempotency key yet; otherwise
    /// (or when the server gave no answer) [`StoreError::Conflict`], and the caller re-reads.
    pub async fn insert_refund(
        &self,
        refund: &RefundDoc,
        seen_refunded_cents: i64,
        full_after: bool,
        event: &EventEnvelope,
    ) -> Result<(), StoreError> {
        let filter = doc! {
            "_id": &refund.transaction_id,
            "status": "SUCCESS",
            "refunded_cents": seen_refunded_cents,
            "refunds.idempotency_key": { "$ne": &refund.idempotency_key },
        };
        let update = refund_update(refund, full_after, event)?;
        match self.documents.update_one(filter, update).await {
            Ok(r) if r.modified_count == 1 => {
                self.outbox.wake();
                Ok(())
            }
            Ok(_) => Err(StoreError::Conflict),
            Err(e) if write_refused(&e) => Err(classify(e)),
            Err(_) => Err(StoreError::Conflict),
        }
    }
}

/// The update that records `refund` in its transaction: the amount, the log entry, the refund
/// itself and its event, all in one document write.
fn refund_update(
    refund: &RefundDoc,
    full_after: bool,
    event: &EventEnvelope,
) -> Result<Document, StoreError> {
    let entry = LogEntry {
        status: if full_after {
            "REFUNDED"
        } else {
            "PARTIALLY_REFUNDED"
        }
        .to_owned(),
        at: refund.created_at,
        note: refund.reason.clone(),
        refund_id: Some(refund.id.clone()),
        amount_cents: Some(refund.amount_cents),
    };
    let to_bson =
        |v: Result<Bson, bson::ser::Error>| v.map_err(|e| StoreError::Serialize(e.to_string()));
    let mut update = doc! {
        "$inc": { "refunded_cents": refund.amount_cents },
        "$push": {
            "log": to_bson(bson::to_bson(&entry))?,
            "refunds": to_bson(bson::to_bson(refund))?,
        },
        "$set": { "updated_at": bson::DateTime::from_chrono(refund.created_at) },
    };
    Outbox::add_to_update(&mut update, event)?;
    Ok(update)
}

#[cfg(test)]
mod tests {
    use super::*;
    use moviebook_common::outbox::embedded;

    fn refund(key: &str, cents: i64) -> RefundDoc {
        RefundDoc {
            id: format!("r-{key}"),
            transaction_id: "t-1".into(),
            idempotency_key: key.into(),
            fingerprint: "full".into(),
            booking_id: "b-1".into(),
            user_id: "u-1".into(),
            amount_cents: cents,
            currency: "USD".into(),
            reason: Some("changed my mind".into()),
            status: "REFUNDED".into(),
            created_at: Utc::now(),
        }
    }

    fn transaction(refunded_cents: i64, refunds: Vec<RefundDoc>) -> TransactionDoc {
        TransactionDoc {
            id: "t-1".into(),
            idempotency_key: "k".into(),
            fingerprint: "f".into(),
            booking_id: "b-1".into(),
            user_id: "u-1".into(),
            amount_cents: 2550,
            currency: "USD".into(),
            payment_method: "credit_card".into(),
            status: "SUCCESS".into(),
            failure_code: None,
            failure_reason: None,
            card_last4: None,
            card_brand: None,
            refunded_cents,
            log: Vec::new(),
            refunds,
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn the_refunds_collection_is_consulted_only_for_amounts_it_explains() {
        assert!(!transaction(0, vec![]).has_legacy_refunds());
        assert!(!transaction(1000, vec![refund("a", 1000)]).has_legacy_refunds());
        assert!(
            transaction(1000, vec![]).has_legacy_refunds(),
            "refunded before the field"
        );
        assert!(transaction(2550, vec![refund("a", 1000)]).has_legacy_refunds());
    }

    #[test]
    fn an_embedded_refund_is_found_by_its_key() {
        let tx = transaction(2550, vec![refund("a", 1000), refund("b", 1550)]);
        assert_eq!(tx.refund_with_key("b").map(|r| r.amount_cents), Some(1550));
        assert!(tx.refund_with_key("c").is_none());
    }

    #[test]
    fn a_refund_is_one_update_carrying_amount_log_refund_and_event() {
        let r = refund("a", 1000);
        let event = crate::events::refund_event(&r);
        let update = refund_update(&r, false, &event).unwrap();
        assert_eq!(
            update
                .get_document("$inc")
                .unwrap()
                .get_i64("refunded_cents")
                .unwrap(),
            1000
        );
        let push = update.get_document("$push").unwrap();
        assert_eq!(
            push.get_document("log").unwrap().get_str("status").unwrap(),
            "PARTIALLY_REFUNDED"
        );
        let stored: RefundDoc =
            bson::from_document(push.get_document("refunds").unwrap().clone()).unwrap();
        assert_eq!(stored.id, r.id);
        assert_eq!(stored.idempotency_key, "a");
        assert_eq!(
            push.get_document(embedded::EVENTS)
                .unwrap()
                .get_str("_id")
                .unwrap(),
            event.event_id.to_string()
        );
        assert!(
            update
                .get_document("$min")
                .unwrap()
                .contains_key(embedded::SINCE)
        );
        let full = refund_update(&r, true, &event).unwrap();
        assert_eq!(
            full.get_document("$push")
                .unwrap()
                .get_document("log")
                .unwrap()
                .get_str("status")
                .unwrap(),
            "REFUNDED"
        );
    }
}
