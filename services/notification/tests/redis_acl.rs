//! Notification's Redis rights (`moviebook_grants::redis`), loaded into the real test Redis
//! as `ACL SETUSER` (the words of the managed Redis's ACL file), against the worker's own
//! calls: every call of [`Idempotency`] works as that user, and what the worker never needs
//! (other keys, reading the key space, flushing, configuring, Pub/Sub) is refused.
//!
//! Needs REDIS_URL (set by `make test`).

use std::time::Duration;

use moviebook_grants::redis as grants;
use notification_service::{
    domain::BookingSummary,
    idempotency::{Claim, Idempotency},
};

fn env(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!(
            "{name} is not set: run the tests through `make test`, which starts the test servers"
        )
    })
}

/// REDIS_URL with a user and password.
fn url_as(user: &str, password: &str) -> String {
    let base = env("REDIS_URL");
    let (scheme, rest) = base.split_once("://").expect("scheme");
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{user}:{password}@{host}")
}

async fn admin() -> redis::aio::MultiplexedConnection {
    redis::Client::open(env("REDIS_URL"))
        .expect("REDIS_URL")
        .get_multiplexed_async_connection()
        .await
        .expect("connect as the test server's default user")
}

/// A user with notification's rules on a prefix of its own, deleted on drop with its keys.
struct AclUser {
    name: String,
    password: String,
    prefix: String,
}

impl AclUser {
    async fn create() -> Self {
        let id = uuid::Uuid::new_v4().simple().to_string();
        let user = Self {
            name: format!("notification-test-{id}"),
            password: format!("pw-{id}"),
            prefix: format!("acltest{id}"),
        };
        let mut cmd = redis::cmd("ACL");
        cmd.arg("SETUSER")
            .arg(&user.name)
            .arg("reset")
            .arg("on")
            .arg(format!(">{}", user.password));
        for rule in grants::notification_rules(&user.prefix) {
            cmd.arg(rule);
        }
        let _: () = cmd
            .query_async(&mut admin().await)
            .await
            .expect("ACL SETUSER");
        user
    }
}

impl Drop for AclUser {
    fn drop(&mut self) {
        // Plain blocking client: Drop cannot await.
        if let Ok(mut conn) = redis::Client::open(env("REDIS_URL")).and_then(|c| c.get_connection())
        {
            let _: redis::RedisResult<i64> = redis::cmd("ACL")
                .arg("DELUSER")
                .arg(&self.name)
                .query(&mut conn);
            let keys: Vec<String> = redis::cmd("KEYS")
                .arg(format!("{}:*", self.prefix))
                .query(&mut conn)
                .unwrap_or_default();
            if !keys.is_empty() {
                let _: redis::RedisResult<i64> = redis::cmd("DEL").arg(keys).query(&mut conn);
            }
        }
    }
}

fn assert_noperm<T: std::fmt::Debug>(what: &str, result: redis::RedisResult<T>) {
    match result {
        Err(e) if e.code() == Some("NOPERM") => {}
        other => panic!("{what}: expected NOPERM, got {other:?}"),
    }
}

#[tokio::test]
async fn the_worker_runs_every_call_as_its_user_and_nothing_else() {
    let user = AclUser::create().await;
    let idem = Idempotency::new(&url_as(&user.name, &user.password), &user.prefix).expect("client");

    idem.ping().await.expect("PING");
    // The epoch script reads `INFO server` and `INFO memory` and sets the epoch key: the test
    // Redis has no memory limit, so it vouches.
    let since = idem.vouch().await.expect("epoch script");
    assert!(since.is_some(), "the test Redis vouches for its data");
    let (lease, keep) = (Duration::from_secs(30), Duration::from_secs(60));
    let token = match idem.claim("e1", lease, keep).await.expect("claim") {
        Claim::Acquired(a) => {
            assert!(a.unmarked, "no earlier key");
            assert_eq!(a.intact_since_ms, since, "the same epoch");
            a.token
        }
        other => panic!("a fresh event is claimed, got {other:?}"),
    };
    assert_eq!(
        idem.claim("e1", lease, keep).await.expect("claim"),
        Claim::InProgress
    );
    idem.release("e1", &token)
        .await
        .expect("release (EVALSHA, else EVAL: GET + SET KEEPTTL)");
    assert_eq!(
        idem.state("e1").await.expect("GET"),
        Some(format!("{token}:0")),
        "a released claim is kept, expired"
    );
    match idem.claim("e1", lease, keep).await.expect("claim") {
        Claim::Acquired(a) => assert!(!a.unmarked, "a released claim is taken over, not fresh"),
        other => panic!("a released claim is taken over, got {other:?}"),
    }
    idem.mark_done("e1", Duration::from_secs(60))
        .await
        .expect("SETEX");
    assert_eq!(
        idem.claim("e1", lease, keep).await.expect("claim"),
        Claim::Done
    );
    idem.forget("e1").await.expect("DEL");
    idem.remember_email("u1", "a@example.com")
        .await
        .expect("cache e-mail");
    assert_eq!(
        idem.email_for("u1").await.expect("GET").as_deref(),
        Some("a@example.com")
    );
    let summary = BookingSummary {
        movie_title: "M".into(),
        cinema_name: "C".into(),
        start_time: "2026-12-05T20:00:00Z".into(),
        seats: vec!["A1".into()],
    };
    idem.remember_booking("b1", &summary)
        .await
        .expect("cache booking");
    assert_eq!(
        idem.booking_summary("b1").await.expect("GET"),
        Some(summary)
    );

    // The same credentials on a plain connection: what the worker never does is refused.
    let mut conn = redis::Client::open(url_as(&user.name, &user.password))
        .expect("url")
        .get_multiplexed_async_connection()
        .await
        .expect("connect as the user");
    let _: () = redis::cmd("SET")
        .arg("moviebook-acl-test-foreign-key")
        .arg("x")
        .query_async(&mut admin().await)
        .await
        .expect("admin SET");
    assert_noperm(
        "GET outside the prefix",
        redis::cmd("GET")
            .arg("moviebook-acl-test-foreign-key")
            .query_async::<Option<String>>(&mut conn)
            .await,
    );
    assert_noperm(
        "SET under a prefix that only starts like ours",
        redis::cmd("SET")
            .arg(format!("{}x:event:1", user.prefix))
            .arg("x")
            .query_async::<()>(&mut conn)
            .await,
    );
    assert_noperm(
        "a script touching a key outside the prefix",
        redis::cmd("EVAL")
            .arg("return redis.call('GET', KEYS[1])")
            .arg(1)
            .arg("moviebook-acl-test-foreign-key")
            .query_async::<Option<String>>(&mut conn)
            .await,
    );
    for (what, cmd) in [
        ("KEYS", redis::cmd("KEYS").arg("*").clone()),
        ("SCAN", redis::cmd("SCAN").arg(0).clone()),
        ("FLUSHALL", redis::cmd("FLUSHALL").clone()),
        (
            "CONFIG GET",
            redis::cmd("CONFIG").arg("GET").arg("*").clone(),
        ),
        (
            "CLIENT KILL",
            redis::cmd("CLIENT").arg("KILL").arg("ID").arg(1).clone(),
        ),
        ("ACL LIST", redis::cmd("ACL").arg("LIST").clone()),
        (
            "SCRIPT LOAD",
            redis::cmd("SCRIPT").arg("LOAD").arg("return 1").clone(),
        ),
        ("INFO", redis::cmd("INFO").clone()),
        ("INFO clients", redis::cmd("INFO").arg("clients").clone()),
        ("INFO keyspace", redis::cmd("INFO").arg("keyspace").clone()),
        ("PUBLISH", redis::cmd("PUBLISH").arg("ch").arg("x").clone()),
        (
            "EXPIRE",
            redis::cmd("EXPIRE")
                .arg(format!("{}:event:e1", user.prefix))
                .arg(1)
                .clone(),
        ),
    ] {
        assert_noperm(what, cmd.query_async::<redis::Value>(&mut conn).await);
    }
    let _: () = redis::cmd("DEL")
        .arg("moviebook-acl-test-foreign-key")
        .query_async(&mut admin().await)
        .await
        .expect("admin DEL");
}
