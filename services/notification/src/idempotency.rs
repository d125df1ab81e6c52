//! Redis: per-event claims that make delivery idempotent, and a small cache of what booking
//! events told us (the user's e-mail, the booking's film details) for the payment events.
//!
//! An event id moves through three states in Redis:
//!
//! ```text
//!   (none) --SET NX PX claim_ttl--> processing:<token> --sent and recorded--> done (done_ttl)
//!      ^                                  |
//!      +------ failure: owner DELs it ----+  (or the claim_ttl runs out after a crash)
//! ```
//!
//! Only the worker holding the claim sends. A redelivery that finds `done` is acknowledged
//! without sending; one that finds another worker's claim is put back for later. A crash while
//! holding a claim leaves it to expire, after which a redelivery retries; the MongoDB record
//! (unique on `event_id`, status `sent` once recorded) is the second line of defence when the
//! `done` marker is gone (expired or Redis lost its data).

use std::time::Duration;

use redis::{AsyncCommands, aio::ConnectionManager, aio::ConnectionManagerConfig};

use crate::domain::BookingSummary;

/// The value of a processed event's key.
const DONE: &str = "done";

/// Deletes the key only if it still holds our token (never someone else's claim).
const RELEASE_SCRIPT: &str = r"if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) else return 0 end";

/// How long the e-mail and booking caches are kept.
const CACHE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The outcome of trying to claim an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// We hold it; send, record, then [`Idempotency::mark_done`].
    Acquired(String),
    /// Already sent and recorded: acknowledge without sending.
    Done,
    /// Another worker is processing it right now: put it back for later.
    InProgress,
}

/// What a key's current value means. Pure.
pub fn classify(value: Option<&str>) -> Option<Claim> {
    match value {
        None => None,
        Some(DONE) => Some(Claim::Done),
        Some(_) => Some(Claim::InProgress),
    }
}

/// Redis handle with the worker's key layout. Cheap to clone.
#[derive(Clone)]
pub struct Idempotency {
    conn: ConnectionManager,
    prefix: String,
}

impl Idempotency {
    /// Connects lazily: the service starts (and reports not ready) while Redis is down, and the
    /// connection manager reconnects by itself when Redis comes back.
    pub fn new(url: &str, prefix: &str) -> redis::RedisResult<Self> {
        let client = redis::Client::open(url)?;
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_secs(2)))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let conn = ConnectionManager::new_lazy_with_config(client, config)?;
        Ok(Self {
            conn,
            prefix: prefix.to_owned(),
        })
    }

    fn event_key(&self, event_id: &str) -> String {
        format!("{}:event:{event_id}", self.prefix)
    }

    fn email_key(&self, user_id: &str) -> String {
        format!("{}:email:{user_id}", self.prefix)
    }

    fn booking_key(&self, booking_id: &str) -> String {
        format!("{}:booking:{booking_id}", self.prefix)
    }

    /// The readiness check.
    pub async fn ping(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: String = redis::cmd("PING").query_async(&mut conn).await?;
        Ok(())
    }

    /// Tries to claim `event_id` for `ttl` (SET NX PX).
    pub async fn claim(&self, event_id: &str, ttl: Duration) -> redis::RedisResult<Claim> {
        let mut conn = self.conn.clone();
        let key = self.event_key(event_id);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        // Two rounds: the key may expire between the failed SET and the GET.
        for _ in 0..2 {
            let token = crate::domain::claim_token();
            let set: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(ttl_ms)
                .query_async(&mut conn)
                .await?;
            if set.is_some() {
                return Ok(Claim::Acquired(token));
            }
            let current: Option<String> = conn.get(&key).await?;
            if let Some(state) = classify(current.as_deref()) {
                return Ok(state);
            }
        }
        Ok(Claim::InProgress)
    }

    /// Gives a claim back after a failure so a redelivery can retry at once.
    pub async fn release(&self, event_id: &str, token: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("EVAL")
            .arg(RELEASE_SCRIPT)
            .arg(1)
            .arg(self.event_key(event_id))
            .arg(token)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Marks the event processed. Unconditional: once sent and recorded it is done, whoever
    /// holds the claim.
    pub async fn mark_done(&self, event_id: &str, ttl: Duration) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let secs = ttl.as_secs().max(1);
        let _: () = conn.set_ex(self.event_key(event_id), DONE, secs).await?;
        Ok(())
    }

    /// The current state of an event's key (tests and diagnostics).
    pub async fn state(&self, event_id: &str) -> redis::RedisResult<Option<String>> {
        let mut conn = self.conn.clone();
        conn.get(self.event_key(event_id)).await
    }

    /// Forgets an event (tests use it to exercise the MongoDB second line of defence).
    pub async fn forget(&self, event_id: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = conn.del(self.event_key(event_id)).await?;
        Ok(())
    }

    pub async fn remember_email(&self, user_id: &str, email: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: () = conn
            .set_ex(self.email_key(user_id), email, CACHE_TTL.as_secs())
            .await?;
        Ok(())
    }

    pub async fn email_for(&self, user_id: &str) -> redis::RedisResult<Option<String>> {
        let mut conn = self.conn.clone();
        conn.get(self.email_key(user_id)).await
    }

    pub async fn remember_booking(
        &self,
        booking_id: &str,
        summary: &BookingSummary,
    ) -> redis::RedisResult<()> {
        let Ok(json) = serde_json::to_string(summary) else {
            return Ok(());
        };
        let mut conn = self.conn.clone();
        let _: () = conn
            .set_ex(self.booking_key(booking_id), json, CACHE_TTL.as_secs())
            .await?;
        Ok(())
    }

    pub async fn booking_summary(
        &self,
        booking_id: &str,
    ) -> redis::RedisResult<Option<BookingSummary>> {
        let mut conn = self.conn.clone();
        let raw: Option<String> = conn.get(self.booking_key(booking_id)).await?;
        Ok(raw.and_then(|s| serde_json::from_str(&s).ok()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_values_map_to_states() {
        assert_eq!(classify(None), None);
        assert_eq!(classify(Some("done")), Some(Claim::Done));
        assert_eq!(
            classify(Some(&crate::domain::claim_token())),
            Some(Claim::InProgress)
        );
    }
}
