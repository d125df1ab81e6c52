//! Per-user limits on the booking mutations.
//!
//! Kong limits requests per client address, and its JWT plugin knows every user as the one
//! shared consumer of the issuer, so neither follows a user: one account behind many
//! addresses (or many accounts behind one NAT) is not what its limit sees. This limiter keys
//! on the verified token's subject. It is a GCRA (the `governor` crate): a burst of the whole
//! minute's allowance, then one more every `60 s / per_minute`. Service tokens (the sweeper, the
//! payment reconciler) are not limited: they act for the system, not for a user.
//!
//! Per process: the state is in memory, so with N booking replicas a user may reach N times
//! the limit (the gateway spreads a user's requests over them). Memory is bounded by the users
//! seen recently: keys whose allowance is full again are dropped every [`SWEEP_EVERY`] checks.

use std::{
    num::NonZeroU32,
    sync::atomic::{AtomicU64, Ordering},
};

use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};
use moviebook_common::auth::Claims;

use crate::error::{BookingError, Result};

/// How many checks pass between two sweeps of idle keys.
const SWEEP_EVERY: u64 = 4096;

pub struct UserLimiter {
    limiter: Option<DefaultKeyedRateLimiter<String>>,
    checks: AtomicU64,
}

impl UserLimiter {
    /// `per_minute` mutations per user and minute; 0 turns the limit off.
    pub fn new(per_minute: u32) -> Self {
        Self {
            limiter: NonZeroU32::new(per_minute).map(|n| RateLimiter::keyed(Quota::per_minute(n))),
            checks: AtomicU64::new(0),
        }
    }

    /// Spends one of the caller's mutations, or says when it may try again.
    pub fn check(&self, claims: &Claims) -> Result<()> {
        let Some(limiter) = &self.limiter else {
            return Ok(());
        };
        if claims.is_service() {
            return Ok(());
        }
        if self.checks.fetch_add(1, Ordering::Relaxed) % SWEEP_EVERY == SWEEP_EVERY - 1 {
            limiter.retain_recent();
        }
        limiter.check_key(&claims.sub).map_err(|not_until| {
            let wait = not_until.wait_time_from(limiter.clock().now());
            BookingError::RateLimited {
                // whole seconds, never 0: "retry in 0 s" would invite a busy loop
                retry_after_secs: wait.as_secs() + 1,
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use moviebook_common::auth::SERVICE_ROLE;

    fn claims(sub: &str, roles: &[&str]) -> Claims {
        Claims {
            sub: sub.into(),
            iss: "moviebook".into(),
            exp: i64::MAX,
            iat: 0,
            email: None,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    #[test]
    fn a_user_gets_the_allowance_then_a_coded_wait_and_others_are_untouched() {
        let l = UserLimiter::new(3);
        let ada = claims("ada", &[]);
        for i in 0..3 {
            assert!(l.check(&ada).is_ok(), "mutation {i} within the allowance");
        }
        match l.check(&ada) {
            Err(e @ BookingError::RateLimited { retry_after_secs }) => {
                assert_eq!(e.code(), "RATE_LIMITED");
                // one more every 20 s at 3 per minute
                assert!((1..=21).contains(&retry_after_secs), "{retry_after_secs}");
            }
            other => panic!("the 4th must be limited: {other:?}"),
        }
        assert!(l.check(&claims("bob", &[])).is_ok(), "per user");
        let admin = claims("ada", &["admin"]);
        assert!(l.check(&admin).is_err(), "an admin is a user too");
    }

    #[test]
    fn service_tokens_and_a_zero_limit_pass() {
        let l = UserLimiter::new(1);
        let svc = claims("booking-service", &[SERVICE_ROLE]);
        for _ in 0..10 {
            assert!(l.check(&svc).is_ok());
        }
        let off = UserLimiter::new(0);
        let ada = claims("ada", &[]);
        for _ in 0..1000 {
            assert!(off.check(&ada).is_ok());
        }
    }
}
