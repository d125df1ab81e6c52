//! Every query against MongoDB: the `notifications` collection.
//!
//! One document per event (unique index on `event_id`). A notification that goes out at the
//! first attempt costs one write: the record, `sent`, upserted after the send. A failed attempt
//! upserts it `pending` with its attempt count, and a dead-lettered one ends `failed`. Before
//! sending, the worker reads the record (an indexed point read): a redelivery that finds `sent`
//! does not send again even if Redis forgot the event.
//!
//! A crash between the send and the write leaves no record (or a `pending` one), and the
//! redelivered event is sent again: delivery is at least once, as it was when a `pending`
//! record was written first (the record did not make a crash after the send detectable).

use futures::TryStreamExt;
use mongodb::{
    Collection, Database, IndexModel,
    bson::{DateTime, Document, doc},
    options::{IndexOptions, ReturnDocument},
};
use serde::{Deserialize, Serialize};

/// The collection name.
pub const COLLECTION: &str = "notifications";

/// Where a notification stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Claimed and about to be sent (or a previous attempt crashed mid-way).
    Pending,
    /// Sent through the channel.
    Sent,
    /// Given up after retries or a permanent failure; the message is in the DLQ.
    Failed,
}

/// A stored notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NotificationRecord {
    pub event_id: String,
    pub event_type: String,
    pub user_id: String,
    pub recipient: Option<String>,
    pub channel: String,
    pub subject: String,
    pub body: String,
    pub booking_id: String,
    pub created_at: DateTime,
    pub status: Status,
    /// Failed send attempts so far.
    #[serde(default)]
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sent_at: Option<DateTime>,
}

/// The fields of a record that never change after it is first written.
fn identity(record: &NotificationRecord) -> Document {
    doc! {
        "event_id": &record.event_id,
        "event_type": &record.event_type,
        "user_id": &record.user_id,
        "booking_id": &record.booking_id,
        "created_at": record.created_at,
    }
}

/// Handle on the collection. Cheap to clone.
#[derive(Clone)]
pub struct Store {
    db: Database,
    coll: Collection<NotificationRecord>,
}

impl Store {
    pub fn new(db: &Database) -> Self {
        Self {
            db: db.clone(),
            coll: db.collection(COLLECTION),
        }
    }

    pub fn database(&self) -> &Database {
        &self.db
    }

    /// Creates the indexes (the `migrate` subcommand, and at start-up: idempotent).
    pub async fn ensure_indexes(&self) -> mongodb::error::Result<()> {
        let index = |keys: Document, name: &str, unique: bool| {
            IndexModel::builder()
                .keys(keys)
                .options(
                    IndexOptions::builder()
                        .name(name.to_owned())
                        .unique(unique)
                        .build(),
                )
                .build()
        };
        self.coll
            .create_index(index(doc! { "event_id": 1 }, "event_id_unique", true))
            .await?;
        self.coll
            .create_index(index(
                doc! { "booking_id": 1, "created_at": -1 },
                "by_booking",
                false,
            ))
            .await?;
        self.coll
            .create_index(index(
                doc! { "user_id": 1, "created_at": -1 },
                "by_user",
                false,
            ))
            .await?;
        Ok(())
    }

    /// Where an earlier delivery of the event left its record, if it left one.
    pub async fn status_of(&self, event_id: &str) -> mongodb::error::Result<Option<Status>> {
        /// The one field the projection returns.
        #[derive(Deserialize)]
        struct StatusOnly {
            status: Status,
        }
        let found = self
            .coll
            .clone_with_type::<StatusOnly>()
            .find_one(doc! { "event_id": event_id })
            .projection(doc! { "_id": 0, "status": 1 })
            .await?;
        Ok(found.map(|r| r.status))
    }

    /// Gives a record that had `failed` (its message replayed from the dead-letter queue) a
    /// fresh attempt budget before it is tried again.
    pub async fn restart(&self, event_id: &str) -> mongodb::error::Result<()> {
        self.coll
            .update_one(
                doc! { "event_id": event_id },
                doc! { "$set": { "status": "pending", "attempts": 0 } },
            )
            .await?;
        Ok(())
    }

    /// Records a successful send: one upsert, whether or not an earlier attempt left a record
    /// (its content is refreshed: the recipient may be known by now).
    pub async fn record_sent(&self, record: &NotificationRecord) -> mongodb::error::Result<()> {
        self.coll
            .update_one(
                doc! { "event_id": &record.event_id },
                doc! {
                    "$set": {
                        "status": "sent",
                        "sent_at": DateTime::now(),
                        "recipient": record.recipient.as_deref(),
                        "channel": &record.channel,
                        "subject": &record.subject,
                        "body": &record.body,
                    },
                    "$setOnInsert": identity(record),
                },
            )
            .upsert(true)
            .await?;
        Ok(())
    }

    /// Counts a failed attempt, recording the notification `pending` if this was its first;
    /// answers the number of failures so far.
    pub async fn record_failure(
        &self,
        record: &NotificationRecord,
        error: &str,
    ) -> mongodb::error::Result<u32> {
        let mut insert = identity(record);
        insert.insert("status", "pending");
        insert.insert("recipient", record.recipient.as_deref());
        insert.insert("channel", &record.channel);
        insert.insert("subject", &record.subject);
        insert.insert("body", &record.body);
        let updated = self
            .coll
            .find_one_and_update(
                doc! { "event_id": &record.event_id },
                doc! {
                    "$inc": { "attempts": 1 },
                    "$set": { "last_error": error },
                    "$setOnInsert": insert,
                },
            )
            .upsert(true)
            .return_document(ReturnDocument::After)
            .await?;
        Ok(updated.map_or(1, |r| r.attempts.max(1)))
    }

    /// Records that the message was dead-lettered.
    pub async fn mark_failed(&self, event_id: &str, error: &str) -> mongodb::error::Result<()> {
        self.coll
            .update_one(
                doc! { "event_id": event_id },
                doc! { "$set": { "status": "failed", "last_error": error } },
            )
            .await?;
        Ok(())
    }

    /// The most recent address this user was notified at (when Redis forgot it).
    pub async fn last_recipient(&self, user_id: &str) -> mongodb::error::Result<Option<String>> {
        let found = self
            .coll
            .find_one(doc! { "user_id": user_id, "recipient": { "$type": "string" } })
            .sort(doc! { "created_at": -1 })
            .await?;
        Ok(found.and_then(|r| r.recipient))
    }

    /// Notifications matching `filter`, newest first.
    pub async fn list(
        &self,
        filter: Document,
        limit: i64,
    ) -> mongodb::error::Result<Vec<NotificationRecord>> {
        self.coll
            .find(filter)
            .sort(doc! { "created_at": -1 })
            .limit(limit)
            .await?
            .try_collect()
            .await
    }

    /// Records for one event id (tests assert there is exactly one).
    pub async fn count_for_event(&self, event_id: &str) -> mongodb::error::Result<u64> {
        self.coll
            .count_documents(doc! { "event_id": event_id })
            .await
    }
}
