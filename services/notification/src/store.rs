//! Every query against MongoDB: the `notifications` collection.
//!
//! One document per event (unique index on `event_id`), written *before* the send with status
//! `pending`, set to `sent` after it, or to `failed` when the message is dead-lettered. A
//! redelivery that finds `sent` does not send again even if Redis forgot the event.

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

/// What [`Store::begin`] found.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// No record existed; a `pending` one was written.
    New,
    /// A record exists already (a redelivery): its status decides.
    Existing(Status),
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

    /// Writes the `pending` record, or reports the one a previous delivery wrote.
    pub async fn begin(&self, record: &NotificationRecord) -> mongodb::error::Result<Begin> {
        match self.coll.insert_one(record).await {
            Ok(_) => Ok(Begin::New),
            Err(e) if moviebook_common::mongo::is_duplicate_key(&e) => {
                let existing = self
                    .coll
                    .find_one(doc! { "event_id": &record.event_id })
                    .await?;
                // Found by the unique index a moment ago; if it vanished, start afresh.
                Ok(existing.map_or(Begin::New, |r| Begin::Existing(r.status)))
            }
            Err(e) => Err(e),
        }
    }

    /// Refreshes a retried record (the recipient may be known by now) and sets it `pending`.
    /// A record that had `failed` (its message replayed from the dead-letter queue) gets a fresh
    /// attempt budget.
    pub async fn restart(
        &self,
        record: &NotificationRecord,
        previous: Status,
    ) -> mongodb::error::Result<()> {
        let mut set = doc! {
            "status": "pending",
            "recipient": record.recipient.as_deref(),
            "channel": &record.channel,
            "subject": &record.subject,
            "body": &record.body,
        };
        if previous == Status::Failed {
            set.insert("attempts", 0);
        }
        self.coll
            .update_one(doc! { "event_id": &record.event_id }, doc! { "$set": set })
            .await?;
        Ok(())
    }

    /// Records a successful send.
    pub async fn mark_sent(&self, event_id: &str) -> mongodb::error::Result<()> {
        self.coll
            .update_one(
                doc! { "event_id": event_id },
                doc! { "$set": { "status": "sent", "sent_at": DateTime::now() } },
            )
            .await?;
        Ok(())
    }

    /// Counts a failed attempt; answers the number of failures so far.
    pub async fn record_failure(&self, event_id: &str, error: &str) -> mongodb::error::Result<u32> {
        let updated = self
            .coll
            .find_one_and_update(
                doc! { "event_id": event_id },
                doc! { "$inc": { "attempts": 1 }, "$set": { "last_error": error } },
            )
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
