//! Every query against the `transactions` and `refunds` collections, and the MongoDB
//! transactions that write a state change together with its outbox event.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use mongodb::{
    Client, Collection, Database, IndexModel,
    bson::doc,
    error::{Error as MongoError, TRANSIENT_TRANSACTION_ERROR, UNKNOWN_TRANSACTION_COMMIT_RESULT},
    options::IndexOptions,
};
use moviebook_common::{
    events::EventEnvelope,
    outbox::{Outbox, OutboxError},
    txn::{self, Labelled, TxnFailure},
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
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
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
    #[error("outbox: {0}")]
    Outbox(String),
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
            OutboxError::Serialize(s) => StoreError::Outbox(s.to_string()),
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
    client: Client,
    transactions: Collection<TransactionDoc>,
    refunds: Collection<RefundDoc>,
    outbox: Outbox,
}

impl Store {
    pub fn new(db: &Database, outbox: Outbox) -> Self {
        Self {
            client: db.client().clone(),
            transactions: db.collection(TRANSACTIONS),
            refunds: db.collection(REFUNDS),
            outbox,
        }
    }

    pub fn outbox(&self) -> &Outbox {
        &self.outbox
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
        self.refunds
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "transaction_id": 1, "idempotency_key": 1 })
                    .options(unique("refunds_idempotency_unique"))
                    .build(),
            )
            .await?;
        self.outbox.ensure_indexes().await?;
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

    /// Inserts the transaction and its event in one MongoDB transaction: the event exists if
    /// and only if the payment does.
    pub async fn insert_payment(
        &self,
        tx: &TransactionDoc,
        event: &EventEnvelope,
    ) -> Result<(), StoreError> {
        settle(
            // The context carries the borrowed inputs (the body's future may borrow only it).
            txn::transaction(
                &self.client,
                &(self, tx, event),
                |session, &(store, tx, event)| {
                    Box::pin(async move {
                        store
                            .transactions
                            .insert_one(tx)
                            .session(&mut *session)
                            .await?;
                        store.outbox.enqueue(session, event).await?;
                        Ok(())
                    })
                },
            )
            .await,
        )?;
        self.outbox.wake();
        Ok(())
    }

    pub async fn refund_by_key(
        &self,
        transaction_id: &str,
        key: &str,
    ) -> Result<Option<RefundDoc>, StoreError> {
        Ok(self
            .refunds
            .find_one(doc! { "transaction_id": transaction_id, "idempotency_key": key })
            .await?)
    }

    pub async fn latest_refund(
        &self,
        transaction_id: &str,
    ) -> Result<Option<RefundDoc>, StoreError> {
        Ok(self
            .refunds
            .find_one(doc! { "transaction_id": transaction_id })
            .sort(doc! { "created_at": -1 })
            .await?)
    }

    /// Records a refund: the transaction's refunded amount moves only if nobody else moved it
    /// since `seen_refunded_cents` was read (else [`StoreError::Conflict`]), the refund document
    /// takes its unique key, and the event goes to the outbox — all in one MongoDB transaction.
    pub async fn insert_refund(
        &self,
        refund: &RefundDoc,
        seen_refunded_cents: i64,
        full_after: bool,
        event: &EventEnvelope,
    ) -> Result<(), StoreError> {
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
        let entry = bson::to_bson(&entry).map_err(|e| StoreError::Outbox(e.to_string()))?;
        settle(
            txn::transaction(
                &self.client,
                &(self, refund, event, &entry),
                |session, &(store, refund, event, entry)| {
                let entry = entry.clone();
                Box::pin(async move {
                    let updated = store
                        .transactions
                        .update_one(
                            doc! {
                                "_id": &refund.transaction_id,
                                "status": "SUCCESS",
                                "refunded_cents": seen_refunded_cents,
                            },
                            doc! {
                                "$inc": { "refunded_cents": refund.amount_cents },
                                "$push": { "log": entry },
                                "$set": { "updated_at": bson::DateTime::from_chrono(refund.created_at) },
                            },
                        )
                        .session(&mut *session)
                        .await?;
                    if updated.modified_count != 1 {
                        return Err(BodyError::Store(StoreError::Conflict));
                    }
                    store.refunds.insert_one(refund).session(&mut *session).await?;
                    store.outbox.enqueue(session, event).await?;
                    Ok(())
                })
            },
            )
            .await,
        )?;
        self.outbox.wake();
        Ok(())
    }
}

/// An error inside a transaction body: the driver's (whose labels decide the retries) or ours.
enum BodyError {
    Mongo(MongoError),
    Store(StoreError),
}

impl From<MongoError> for BodyError {
    fn from(e: MongoError) -> Self {
        Self::Mongo(e)
    }
}

impl From<OutboxError> for BodyError {
    fn from(e: OutboxError) -> Self {
        match e {
            OutboxError::Mongo(m) => Self::Mongo(m),
            OutboxError::Serialize(s) => Self::Store(StoreError::Outbox(s.to_string())),
        }
    }
}

impl Labelled for BodyError {
    fn transient(&self) -> bool {
        matches!(self, Self::Mongo(e) if e.transient())
    }

    fn unknown_commit(&self) -> bool {
        matches!(self, Self::Mongo(e) if e.unknown_commit())
    }
}

/// A transaction's failure as the routes act on it. A commit of unknown outcome is a
/// [`StoreError::Conflict`]: the route's next attempt looks the idempotency key up and so
/// finds the document if the commit did land (nothing is written twice: the key is unique).
fn settle(r: Result<(), TxnFailure<BodyError>>) -> Result<(), StoreError> {
    match r {
        Ok(()) => Ok(()),
        Err(TxnFailure::Failed(BodyError::Mongo(e))) => Err(classify(e)),
        Err(TxnFailure::Failed(BodyError::Store(e))) => Err(e),
        Err(TxnFailure::CommitUnknown(_)) => Err(StoreError::Conflict),
    }
}
