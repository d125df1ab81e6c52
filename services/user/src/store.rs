//! Every query against the `users` collection.

use chrono::{DateTime, Utc};
use mongodb::{
    Collection, Database, IndexModel,
    bson::{Document, doc},
    options::{IndexOptions, ReturnDocument},
};
use serde::{Deserialize, Serialize};

use crate::domain::Changes;

pub const USERS: &str = "users";

/// A stored account. `email` is normalised and carries the unique index.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UserDoc {
    #[serde(rename = "_id")]
    pub id: String,
    pub email: String,
    pub password_hash: String,
    pub first_name: String,
    pub last_name: String,
    #[serde(default)]
    pub phone: Option<String>,
    #[serde(default)]
    pub roles: Vec<String>,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "bson::serde_helpers::chrono_datetime_as_bson_datetime")]
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("email already registered")]
    DuplicateEmail,
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
}

#[derive(Clone)]
pub struct Store {
    users: Collection<UserDoc>,
}

impl Store {
    pub fn new(db: &Database) -> Self {
        Self {
            users: db.collection(USERS),
        }
    }

    /// The unique index on the normalised email is what makes concurrent registrations of one
    /// address end with exactly one account: the second insert fails with E11000.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        self.users
            .create_index(
                IndexModel::builder()
                    .keys(doc! { "email": 1 })
                    .options(
                        IndexOptions::builder()
                            .name("users_email_unique".to_owned())
                            .unique(true)
                            .build(),
                    )
                    .build(),
            )
            .await?;
        Ok(())
    }

    pub async fn insert(&self, user: &UserDoc) -> Result<(), StoreError> {
        match self.users.insert_one(user).await {
            Ok(_) => Ok(()),
            Err(e) if moviebook_common::mongo::is_duplicate_key(&e) => {
                Err(StoreError::DuplicateEmail)
            }
            Err(e) => Err(e.into()),
        }
    }

    pub async fn by_email(&self, email: &str) -> Result<Option<UserDoc>, StoreError> {
        Ok(self.users.find_one(doc! { "email": email }).await?)
    }

    pub async fn by_id(&self, id: &str) -> Result<Option<UserDoc>, StoreError> {
        Ok(self.users.find_one(doc! { "_id": id }).await?)
    }

    /// Applies `changes` (`password_hash` already computed) and answers the updated account.
    pub async fn update(
        &self,
        id: &str,
        changes: &Changes,
        password_hash: Option<String>,
    ) -> Result<Option<UserDoc>, StoreError> {
        let mut set = Document::new();
        let mut unset = Document::new();
        if let Some(v) = &changes.first_name {
            set.insert("first_name", v);
        }
        if let Some(v) = &changes.last_name {
            set.insert("last_name", v);
        }
        match &changes.phone {
            Some(Some(p)) => {
                set.insert("phone", p);
            }
            Some(None) => {
                unset.insert("phone", "");
            }
            None => {}
        }
        if let Some(h) = password_hash {
            set.insert("password_hash", h);
        }
        set.insert("updated_at", bson::DateTime::now());
        let mut update = doc! { "$set": set };
        if !unset.is_empty() {
            update.insert("$unset", unset);
        }
        Ok(self
            .users
            .find_one_and_update(doc! { "_id": id }, update)
            .return_document(ReturnDocument::After)
            .await?)
    }

    /// Replaces a hash made with older parameters (after a successful login).
    pub async fn set_password_hash(&self, id: &str, hash: &str) -> Result<(), StoreError> {
        self.users
            .update_one(
                doc! { "_id": id },
                doc! { "$set": { "password_hash": hash } },
            )
            .await?;
        Ok(())
    }

    /// Adds `role` to the account with this (normalised) email; false when there is none.
    pub async fn grant_role(&self, email: &str, role: &str) -> Result<bool, StoreError> {
        let r = self
            .users
            .update_one(
                doc! { "email": email },
                doc! { "$addToSet": { "roles": role }, "$set": { "updated_at": bson::DateTime::now() } },
            )
            .await?;
        Ok(r.matched_count == 1)
    }
}
