//! The worker's configuration, parsed once from the environment at start-up.
//!
//! Every variable has a default that matches the local stack; a malformed value fails start-up
//! with an error naming the variable.

use std::time::Duration;

use moviebook_common::config::{
    ConfigError, defaults, jwt_secret, secs_or, string_or, url_or, var_opt, var_or,
};

/// The queue the worker consumes by default (contracts: bound to `booking.*` and `payment.*`).
pub const DEFAULT_QUEUE: &str = "notification.events";
/// The database used when the MongoDB URL names none.
pub const DEFAULT_DB: &str = "moviebook_notification";

/// The event families the worker consumes.
pub const DEFAULT_BINDINGS: [&str; 2] = ["booking.*", "payment.*"];

/// `"a, b,,c"` → `["a", "b", "c"]`. Pure.
pub fn parse_bindings(raw: &str) -> Vec<String> {
    raw.split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
        .collect()
}

/// Everything the worker needs to know about its environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP port for /health, /ready, /metrics and the read API (`PORT`, default 8004).
    pub port: u16,
    pub mongodb_url: String,
    pub redis_url: String,
    pub rabbitmq_url: String,
    /// Whether the service declares RabbitMQ's shared topology or finds it on the broker
    /// (`RABBITMQ_TOPOLOGY`: `declare`, the default, or `existing`, which the operator sets for
    /// its managed broker, whose users may not change it).
    pub rabbitmq_topology: moviebook_common::amqp::Topology,
    /// The durable queue consumed (`NOTIFICATION_QUEUE`); its dead-letter queue is `<queue>.dlq`.
    pub queue: String,
    /// Routing-key patterns the queue is bound to on `movie_app_events`
    /// (`NOTIFICATION_BINDINGS`, comma-separated, default `booking.*,payment.*`). Tests bind to
    /// nothing shared and publish straight into their own queue.
    pub bindings: Vec<String>,
    /// Unacknowledged deliveries the broker may push ahead (`NOTIFICATION_PREFETCH`, default 32).
    pub prefetch: u16,
    /// Deliveries processed at the same time (`NOTIFICATION_CONCURRENCY`, default 8).
    pub concurrency: usize,
    /// Prefix of every Redis key (`NOTIFICATION_REDIS_PREFIX`, default `notification`), so
    /// several installations (or tests) can share one Redis.
    pub redis_prefix: String,
    /// How long an in-progress claim on an event protects it (`NOTIFICATION_CLAIM_TTL_SECONDS`,
    /// default 60). Must exceed the send timeout: a claim that expires mid-send lets a
    /// redelivery send again.
    pub claim_ttl: Duration,
    /// How long a processed event is remembered in Redis (`NOTIFICATION_DONE_TTL_SECONDS`,
    /// default 7 days). After that, the unique index in MongoDB still stops a resend.
    pub done_ttl: Duration,
    /// Attempts (first delivery included) before a failing notification is dead-lettered
    /// (`NOTIFICATION_MAX_ATTEMPTS`, default 5).
    pub max_attempts: u32,
    /// First retry delay; doubled per attempt (`NOTIFICATION_RETRY_BASE_MS`, default 500).
    pub retry_base: Duration,
    /// Cap of the retry delay (`NOTIFICATION_RETRY_MAX_MS`, default 30000).
    pub retry_max: Duration,
    /// A send that takes longer counts as a transient failure (`NOTIFICATION_SEND_TIMEOUT_SECONDS`,
    /// default 15).
    pub send_timeout: Duration,
    /// SMTP relay URL (`SMTP_URL`, e.g. `smtp://127.0.0.1:1025`); unset → the log channel.
    pub smtp_url: Option<String>,
    /// Sender address (`SMTP_FROM`, default `MovieBook <no-reply@moviebook.local>`).
    pub smtp_from: String,
    pub jwt_secret: String,
    pub jwt_issuer: String,
}

impl Config {
    /// Reads the environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        let config = Self {
            port: var_or("PORT", 8004)?,
            mongodb_url: url_or(
                "MONGODB_URL",
                defaults::MONGODB_URL,
                &["mongodb", "mongodb+srv"],
            )?,
            redis_url: url_or("REDIS_URL", defaults::REDIS_URL, &["redis", "rediss"])?,
            rabbitmq_url: url_or("RABBITMQ_URL", defaults::RABBITMQ_URL, &["amqp", "amqps"])?,
            rabbitmq_topology: var_or(
                "RABBITMQ_TOPOLOGY",
                moviebook_common::amqp::Topology::Declare,
            )?,
            queue: string_or("NOTIFICATION_QUEUE", DEFAULT_QUEUE),
            bindings: parse_bindings(&string_or(
                "NOTIFICATION_BINDINGS",
                &DEFAULT_BINDINGS.join(","),
            )),
            prefetch: var_or("NOTIFICATION_PREFETCH", 32)?,
            concurrency: var_or("NOTIFICATION_CONCURRENCY", 8)?,
            redis_prefix: string_or("NOTIFICATION_REDIS_PREFIX", "notification"),
            claim_ttl: secs_or("NOTIFICATION_CLAIM_TTL_SECONDS", Duration::from_secs(60))?,
            done_ttl: secs_or(
                "NOTIFICATION_DONE_TTL_SECONDS",
                Duration::from_secs(7 * 24 * 3600),
            )?,
            max_attempts: var_or("NOTIFICATION_MAX_ATTEMPTS", 5)?,
            retry_base: Duration::from_millis(var_or("NOTIFICATION_RETRY_BASE_MS", 500)?),
            retry_max: Duration::from_millis(var_or("NOTIFICATION_RETRY_MAX_MS", 30_000)?),
            send_timeout: secs_or("NOTIFICATION_SEND_TIMEOUT_SECONDS", Duration::from_secs(15))?,
            smtp_url: var_opt::<String>("SMTP_URL")?,
            smtp_from: string_or("SMTP_FROM", "MovieBook <no-reply@moviebook.local>"),
            jwt_secret: jwt_secret()?,
            jwt_issuer: string_or("JWT_ISSUER", defaults::JWT_ISSUER),
        };
        config.validate()?;
        Ok(config)
    }

    /// Cross-field checks. Pure, so it is unit tested.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |var: &str, value: String, reason: &str| ConfigError::Invalid {
            var: var.to_owned(),
            value,
            reason: reason.to_owned(),
        };
        if self.prefetch == 0 {
            return Err(invalid(
                "NOTIFICATION_PREFETCH",
                "0".into(),
                "must be at least 1",
            ));
        }
        if self.concurrency == 0 {
            return Err(invalid(
                "NOTIFICATION_CONCURRENCY",
                "0".into(),
                "must be at least 1",
            ));
        }
        if self.max_attempts == 0 {
            return Err(invalid(
                "NOTIFICATION_MAX_ATTEMPTS",
                "0".into(),
                "must be at least 1",
            ));
        }
        if self.bindings.is_empty() {
            return Err(invalid(
                "NOTIFICATION_BINDINGS",
                String::new(),
                "needs at least one routing-key pattern",
            ));
        }
        if self.queue.trim().is_empty() || self.queue.len() > 200 {
            return Err(invalid(
                "NOTIFICATION_QUEUE",
                self.queue.clone(),
                "must be 1..=200 characters",
            ));
        }
        if self.claim_ttl <= self.send_timeout {
            return Err(invalid(
                "NOTIFICATION_CLAIM_TTL_SECONDS",
                self.claim_ttl.as_secs().to_string(),
                "must exceed NOTIFICATION_SEND_TIMEOUT_SECONDS, or a slow send could be repeated",
            ));
        }
        if self.done_ttl < self.claim_ttl {
            return Err(invalid(
                "NOTIFICATION_DONE_TTL_SECONDS",
                self.done_ttl.as_secs().to_string(),
                "must be at least NOTIFICATION_CLAIM_TTL_SECONDS",
            ));
        }
        if let Some(url) = &self.smtp_url {
            crate::channel::parse_smtp_url(url).map_err(|reason| ConfigError::Invalid {
                var: "SMTP_URL".into(),
                value: url.clone(),
                reason,
            })?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Config {
        Config {
            port: 8004,
            mongodb_url: defaults::MONGODB_URL.into(),
            redis_url: defaults::REDIS_URL.into(),
            rabbitmq_url: defaults::RABBITMQ_URL.into(),
            rabbitmq_topology: moviebook_common::amqp::Topology::Declare,
            queue: DEFAULT_QUEUE.into(),
            bindings: parse_bindings("booking.*, payment.*"),
            prefetch: 32,
            concurrency: 8,
            redis_prefix: "notification".into(),
            claim_ttl: Duration::from_secs(60),
            done_ttl: Duration::from_secs(3600),
            max_attempts: 5,
            retry_base: Duration::from_millis(500),
            retry_max: Duration::from_secs(30),
            send_timeout: Duration::from_secs(15),
            smtp_url: None,
            smtp_from: "a@b.c".into(),
            jwt_secret: defaults::JWT_SECRET.into(),
            jwt_issuer: "moviebook".into(),
        }
    }

    #[test]
    fn defaults_are_valid() {
        assert!(base().validate().is_ok());
    }

    #[test]
    fn bindings_are_a_trimmed_list() {
        assert_eq!(base().bindings, vec!["booking.*", "payment.*"]);
        assert_eq!(parse_bindings(" a ,,b "), vec!["a", "b"]);
        let mut c = base();
        c.bindings = parse_bindings(" , ");
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("NOTIFICATION_BINDINGS")
        );
    }

    #[test]
    fn claim_must_outlive_a_send() {
        let mut c = base();
        c.claim_ttl = Duration::from_secs(10);
        let err = c.validate().unwrap_err();
        assert!(
            err.to_string().contains("NOTIFICATION_CLAIM_TTL_SECONDS"),
            "{err}"
        );
    }

    #[test]
    fn zero_concurrency_and_prefetch_are_refused() {
        let mut c = base();
        c.concurrency = 0;
        assert!(c.validate().is_err());
        let mut c = base();
        c.prefetch = 0;
        assert!(c.validate().is_err());
    }

    #[test]
    fn smtp_url_scheme_is_checked() {
        let mut c = base();
        c.smtp_url = Some("smtps://mail.example.com:465".into());
        assert!(c.validate().unwrap_err().to_string().contains("SMTP_URL"));
        c.smtp_url = Some("smtp://127.0.0.1:1025".into());
        assert!(c.validate().is_ok());
    }
}
