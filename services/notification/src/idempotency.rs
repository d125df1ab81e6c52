//! Redis: per-event claims that make delivery idempotent, and a small cache of what booking
//! events told us (the user's e-mail, the booking's film details) for the payment events.
//!
//! An event id's key moves through these values, each kept for `keep` (the done TTL) from
//! its last write:
//!
//! ```text
//!   (none) --claim--> processing:<token>:<deadline> --sent and recorded--> done
//!                        |          ^
//!                        |          +-- claim after the deadline (a crash) or a release
//!                        +-- failure: the owner releases it (deadline 0)
//! ```
//!
//! Only the worker holding a live claim sends. A redelivery that finds `done` is acknowledged
//! without sending; one that finds another worker's live claim is put back for later. A claim
//! whose deadline passed (its worker crashed) or that was released can be taken over.
//! Deadlines are in Redis's clock (`TIME`), so workers whose clocks differ agree on them.
//!
//! **When MongoDB is read.** The MongoDB record (unique on `event_id`, `sent` once recorded)
//! is the second line of defence, for when Redis no longer has an attempt's key. The worker
//! reads it before sending unless this claim proves that no attempt came before
//! ([`Acquired::first_attempt`]): the key was absent, the event is younger than `keep` (so no
//! earlier key expired), and Redis vouches that it lost no key since before the event
//! occurred. Redis vouches through an epoch key (`<prefix>:epoch`, `<run_id>:<since ms>`):
//! it names the server run (`INFO server`'s `run_id`, new at every restart, also one that
//! reloads a persisted data set that may miss its last writes) and the time that run was
//! first seen; a flush removes it, a restart or fail-over changes the run, and either starts a
//! new epoch at that moment. It vouches only when no key can be evicted (`maxmemory` 0 or the
//! `noeviction` policy). Without those rights or guarantees the claim still works and the
//! worker reads MongoDB first, as it always did. A key deleted by hand under the prefix is the
//! one loss this cannot see.

use std::{
    sync::LazyLock,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use redis::{
    AsyncCommands, ErrorKind, FromRedisValue, Script, ServerErrorKind, aio::ConnectionManager,
    aio::ConnectionManagerConfig,
};

use crate::domain::BookingSummary;

/// The value of a processed event's key.
const DONE: &str = "done";

/// How far apart the clocks of the event's producer and the workers may be. An event counts
/// as after the epoch's start only this much later, and as younger than `keep` only this much
/// earlier, so a skew up to this cannot make a lost key look like a first attempt.
pub const CLOCK_SKEW: Duration = Duration::from_secs(5);

/// Lua functions shared by the scripts: `clock` (Redis's `TIME`) and `intact_since` (the
/// epoch, see the module doc). Each `.lua` file says what it takes and returns.
const EPOCH_LUA: &str = include_str!("lua/epoch.lua");

/// Lua: the claim, one atomic step (after the shared functions).
const CLAIM_LUA: &str = include_str!("lua/claim.lua");

/// The claim script: the shared functions, then the claim.
static CLAIM_SCRIPT: LazyLock<Lua> = LazyLock::new(|| Lua::new(format!("{EPOCH_LUA}{CLAIM_LUA}")));

/// The epoch alone (KEYS: the epoch key; ARGV: the worker's clock in ms).
static VOUCH_SCRIPT: LazyLock<Lua> = LazyLock::new(|| {
    Lua::new(format!(
        "{EPOCH_LUA}return intact_since(KEYS[1], clock(ARGV[1]))"
    ))
});

/// Gives our claim back: its deadline becomes 0, so the next claim takes it over (and reads
/// MongoDB first, since this attempt may have got as far as sending). Never touches someone
/// else's claim.
static RELEASE_SCRIPT: LazyLock<Lua> = LazyLock::new(|| Lua::new(RELEASE_LUA.to_owned()));
const RELEASE_LUA: &str = include_str!("lua/release.lua");

/// A script sent by its hash (`EVALSHA`), so Redis does not parse the body each time, and by
/// its body (`EVAL`, which also caches it) only when the server does not know it yet: the two
/// rights notification has always had, so a Redis whose ACL was written for an earlier version
/// runs it too (`SCRIPT LOAD`, which redis-rs's `Script` would send, is not needed).
struct Lua {
    code: String,
    hash: String,
}

impl Lua {
    fn new(code: String) -> Self {
        let hash = Script::new(&code).get_hash().to_owned();
        Self { code, hash }
    }

    async fn run<T: FromRedisValue>(
        &self,
        conn: &mut ConnectionManager,
        keys: &[String],
        args: &[String],
    ) -> redis::RedisResult<T> {
        let call = |verb: &str, script: &str| {
            let mut cmd = redis::cmd(verb);
            cmd.arg(script).arg(keys.len()).arg(keys).arg(args);
            cmd
        };
        match call("EVALSHA", &self.hash).query_async(conn).await {
            Err(e) if e.kind() == ErrorKind::Server(ServerErrorKind::NoScript) => {
                call("EVAL", &self.code).query_async(conn).await
            }
            other => other,
        }
    }
}

/// How long the e-mail and booking caches are kept.
const CACHE_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

/// The outcome of trying to claim an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// We hold it; send, record, then [`Idempotency::mark_done`].
    Acquired(Acquired),
    /// Already sent and recorded: acknowledge without sending.
    Done,
    /// Another worker is processing it right now: put it back for later.
    InProgress,
}

/// A claim we hold, with what Redis knew about the event's past.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acquired {
    /// Proves the claim is ours when releasing it.
    pub token: String,
    /// When it was claimed (ms since the Unix epoch, Redis's clock).
    pub at_ms: i64,
    /// The key was absent: no attempt that Redis still remembers.
    pub unmarked: bool,
    /// Since when Redis vouches that it lost no key under the prefix (ms); `None` when it
    /// cannot vouch.
    pub intact_since_ms: Option<i64>,
}

impl Acquired {
    /// Whether this claim proves that no earlier attempt on the event exists, so the MongoDB
    /// record need not be read: no key, Redis intact since at least [`CLOCK_SKEW`] before the
    /// event occurred, and the event young enough that a key written after it occurred has
    /// not expired. Pure.
    pub fn first_attempt(&self, occurred_at_ms: i64, keep: Duration) -> bool {
        let skew = millis(CLOCK_SKEW);
        let Some(since) = self.intact_since_ms else {
            return false;
        };
        self.unmarked
            && occurred_at_ms >= since.saturating_add(skew)
            && self.at_ms
                < occurred_at_ms
                    .saturating_add(millis(keep))
                    .saturating_sub(skew)
    }
}

/// A duration in whole milliseconds, saturating.
fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// The worker's clock in ms since the Unix epoch (the scripts' fallback for `TIME`).
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, millis)
}

/// The claim script's answer as a [`Claim`]. Pure.
fn read_claim(state: &str, since: i64, at_ms: i64, token: String) -> redis::RedisResult<Claim> {
    let acquired = |unmarked| {
        Claim::Acquired(Acquired {
            token,
            at_ms,
            unmarked,
            intact_since_ms: (since >= 0).then_some(since),
        })
    };
    match state {
        "done" => Ok(Claim::Done),
        "busy" => Ok(Claim::InProgress),
        "fresh" => Ok(acquired(true)),
        "retaken" => Ok(acquired(false)),
        other => Err(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "unknown claim state",
            other.to_owned(),
        ))),
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

    fn epoch_key(&self) -> String {
        format!("{}:epoch", self.prefix)
    }

    /// Tries to claim `event_id`: a live claim for `lease`, its key kept for `keep` (the done
    /// TTL). One script, so the read of the key and the claim are one atomic step.
    pub async fn claim(
        &self,
        event_id: &str,
        lease: Duration,
        keep: Duration,
    ) -> redis::RedisResult<Claim> {
        let mut conn = self.conn.clone();
        let token = crate::domain::claim_token();
        let keys = [self.event_key(event_id), self.epoch_key()];
        let args = [
            token.clone(),
            now_ms().to_string(),
            millis(lease).max(1).to_string(),
            millis(keep).max(1).to_string(),
        ];
        let (state, since, at_ms): (String, i64, i64) =
            CLAIM_SCRIPT.run(&mut conn, &keys, &args).await?;
        read_claim(&state, since, at_ms, token)
    }

    /// Since when Redis vouches that it lost no key under the prefix (ms), starting the epoch
    /// if there is none; `None` when it cannot vouch (see the module doc). The worker calls it
    /// at start, so that events from then on can skip the MongoDB read.
    pub async fn vouch(&self) -> redis::RedisResult<Option<i64>> {
        let mut conn = self.conn.clone();
        let since: i64 = VOUCH_SCRIPT
            .run(&mut conn, &[self.epoch_key()], &[now_ms().to_string()])
            .await?;
        Ok((since >= 0).then_some(since))
    }

    /// Gives a claim back after a failure so a redelivery can retry at once.
    pub async fn release(&self, event_id: &str, token: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = RELEASE_SCRIPT
            .run(&mut conn, &[self.event_key(event_id)], &[token.to_owned()])
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

    /// Forgets an event's key, as a loss of Redis's data would (tests).
    pub async fn forget(&self, event_id: &str) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = conn.del(self.event_key(event_id)).await?;
        Ok(())
    }

    /// Forgets the epoch, as a flush of Redis would (tests).
    pub async fn forget_epoch(&self) -> redis::RedisResult<()> {
        let mut conn = self.conn.clone();
        let _: i64 = conn.del(self.epoch_key()).await?;
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

    const HOUR: i64 = 3_600_000;
    const KEEP: Duration = Duration::from_secs(7 * 24 * 3600);

    fn claim(unmarked: bool, since: Option<i64>, at_ms: i64) -> Acquired {
        Acquired {
            token: "t".into(),
            at_ms,
            unmarked,
            intact_since_ms: since,
        }
    }

    #[test]
    fn script_states_map_to_claims() {
        assert_eq!(read_claim("done", 5, 9, "t".into()).unwrap(), Claim::Done);
        assert_eq!(
            read_claim("busy", 5, 9, "t".into()).unwrap(),
            Claim::InProgress
        );
        assert_eq!(
            read_claim("fresh", 5, 9, "t".into()).unwrap(),
            Claim::Acquired(claim(true, Some(5), 9))
        );
        assert_eq!(
            read_claim("retaken", -1, 9, "t".into()).unwrap(),
            Claim::Acquired(claim(false, None, 9))
        );
        assert!(read_claim("what", 5, 9, "t".into()).is_err());
    }

    #[test]
    fn a_first_attempt_needs_no_key_an_intact_redis_and_a_young_event() {
        let skew = millis(CLOCK_SKEW);
        let since = 100 * HOUR;
        let occurred = since + HOUR;
        let now = occurred + 1_000;
        assert!(claim(true, Some(since), now).first_attempt(occurred, KEEP));
        // An earlier attempt left a key (expired or released): it may have sent.
        assert!(!claim(false, Some(since), now).first_attempt(occurred, KEEP));
        // Redis cannot vouch (no INFO right, or keys may be evicted).
        assert!(!claim(true, None, now).first_attempt(occurred, KEEP));
        // The event occurred before the epoch began (within the skew): a lost key is possible.
        assert!(!claim(true, Some(since), now).first_attempt(since, KEEP));
        assert!(!claim(true, Some(since), now).first_attempt(since + skew - 1, KEEP));
        assert!(claim(true, Some(since), now).first_attempt(since + skew, KEEP));
        // An earlier key may have expired: the event is older than keep (less the skew).
        let keep = millis(KEEP);
        assert!(!claim(true, Some(since), occurred + keep - skew).first_attempt(occurred, KEEP));
        assert!(claim(true, Some(since), occurred + keep - skew - 1).first_attempt(occurred, KEEP));
    }
}
