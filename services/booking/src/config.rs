//! The booking service's configuration, parsed once from the environment at start-up.

use std::time::Duration;

use moviebook_common::config::{
    ConfigError, defaults, jwt_secret, secs_or, string_or, url_or, var_or,
};

/// Default HTTP port (docs/architecture.md).
pub const DEFAULT_PORT: u16 = 8010;
/// Default database when `MONGODB_URL` names none.
pub const DEFAULT_DB: &str = "moviebook_booking";
/// Where the web assets are when `WEB_DIR` is unset: the repository's build output, relative
/// to the working directory (`make dev` runs from the repository root; the image sets
/// `WEB_DIR=/srv/web`).
pub const DEFAULT_WEB_DIR: &str = "web/dist";

/// Everything the service reads from its environment.
#[derive(Debug, Clone)]
pub struct Config {
    pub port: u16,
    /// Address to bind (`BIND_ADDR`, default 0.0.0.0 so pods are reachable; 127.0.0.1 keeps
    /// it local).
    pub bind_addr: std::net::IpAddr,
    pub mongodb_url: String,
    pub rabbitmq_url: String,
    /// Whether the service declares RabbitMQ's shared topology or finds it on the broker
    /// (`RABBITMQ_TOPOLOGY`: `declare`, the default, or `existing`, which the operator sets for
    /// its managed broker, whose users may not change it).
    pub rabbitmq_topology: moviebook_common::amqp::Topology,
    pub cinema_grpc_url: String,
    /// How often the host of `CINEMA_GRPC_URL` is resolved again (`CINEMA_GRPC_RESOLVE_SECONDS`,
    /// 5; 0: never). Calls are spread over every address it resolves to, so a Kubernetes
    /// headless Service spreads them over every ready cinema pod.
    pub cinema_resolve_interval: Duration,
    pub user_service_url: String,
    pub payment_service_url: String,
    pub jwt_secret: String,
    pub jwt_issuer: String,
    /// How long seats are held for an unpaid booking (`BOOKING_HOLD_SECONDS`, 300).
    pub hold: Duration,
    /// How often the sweeper looks for expired holds (`SWEEP_INTERVAL_SECONDS`, 5).
    pub sweep_interval: Duration,
    /// A booking stuck in PAYING (a crashed replica) is reconciled by the sweeper after this
    /// long past its hold (`PAYING_TIMEOUT_SECONDS`, 60).
    pub paying_timeout: Duration,
    /// Timeout of each call to another service (`UPSTREAM_TIMEOUT_SECONDS`, 10).
    pub upstream_timeout: Duration,
    /// How long a verified user / a showtime's details are cached (`LOOKUP_CACHE_SECONDS`, 30).
    pub lookup_cache: Duration,
    /// Largest accepted request body in bytes (`MAX_BODY_BYTES`, 65536).
    pub max_body_bytes: usize,
    /// GraphQL limits (`GRAPHQL_MAX_DEPTH` 10, `GRAPHQL_MAX_COMPLEXITY` 500).
    pub max_depth: usize,
    pub max_complexity: usize,
    /// Seat maps one GraphQL request may read (`GRAPHQL_MAX_SEAT_MAPS`, 4): each is a call to
    /// the cinema service, and lists (movies → showtimes → seats) would otherwise fan one
    /// anonymous query out into hundreds of them within the complexity limit.
    pub max_seat_maps: usize,
    /// Booking mutations (createBooking, processPayment, cancelBooking) one user may make per
    /// minute on this process (`USER_MUTATIONS_PER_MINUTE`, 120; 0: no limit). Kong's limit is
    /// per client address and its JWT consumer is shared by every user, so this is the one
    /// that follows a user across addresses. Per process: with N replicas a user gets up to N×.
    pub user_mutations_per_minute: u32,
    /// Most seats in one booking (`MAX_SEATS_PER_BOOKING`, 10).
    pub max_seats: usize,
    /// Currency of every booking (`CURRENCY`, USD).
    pub currency: String,
    /// Whether the sweeper runs in this process (`SWEEPER_ENABLED`, true).
    pub sweeper_enabled: bool,
    /// The armed crash point of the crash tests (`BOOKING_CRASH_POINT`, unset; see
    /// [`crate::crash`]). Never set in a deployment.
    pub crash_point: Option<String>,
    /// Whether the armed point pauses until SIGUSR1 instead of waiting to be killed
    /// (`BOOKING_CRASH_PAUSE`, false): the store-outage tests cut MongoDB while the process is
    /// stopped at the point, then let it go on.
    pub crash_pause: bool,
    /// The built web assets (`WEB_DIR`, default `web/dist`): the storefront and, under `ide/`,
    /// the GraphQL IDE. Served from disk so the page works without internet access.
    pub web_dir: std::path::PathBuf,
    /// Bounds of the live seat map (`LIVE_MAX_CONNECTIONS` 2000 per process,
    /// `LIVE_MAX_SUBSCRIPTIONS_PER_CONNECTION` 8, `LIVE_BUFFER` 64 messages per showtime).
    pub live: crate::live::LiveLimits,
    /// The Ed25519 seed tickets are signed with (`TICKET_SIGNING_KEY`, base64 of 32 bytes;
    /// absent: derived from the JWT secret, see ticket.rs).
    pub ticket_seed: Option<[u8; 32]>,
}

fn live_limits() -> Result<crate::live::LiveLimits, ConfigError> {
    let d = crate::live::LiveLimits::default();
    let positive = |var: &str, default: usize| -> Result<usize, ConfigError> {
        let v: usize = var_or(var, default)?;
        if v == 0 || v > 1_000_000 {
            return Err(ConfigError::Invalid {
                var: var.into(),
                value: v.to_string(),
                reason: "must be between 1 and 1000000".into(),
            });
        }
        Ok(v)
    };
    Ok(crate::live::LiveLimits {
        max_connections: positive("LIVE_MAX_CONNECTIONS", d.max_connections)?,
        max_subscriptions_per_connection: positive(
            "LIVE_MAX_SUBSCRIPTIONS_PER_CONNECTION",
            d.max_subscriptions_per_connection,
        )?,
        max_starts_per_minute: positive(
            "LIVE_MAX_SUBSCRIPTION_STARTS_PER_MINUTE",
            d.max_starts_per_minute,
        )?,
        buffer: positive("LIVE_BUFFER", d.buffer)?,
        recheck_after: d.recheck_after,
    })
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let hold = secs_or("BOOKING_HOLD_SECONDS", Duration::from_secs(300))?;
        if hold.is_zero() || hold > Duration::from_secs(3600) {
            return Err(ConfigError::Invalid {
                var: "BOOKING_HOLD_SECONDS".into(),
                value: hold.as_secs().to_string(),
                reason: "must be between 1 and 3600".into(),
            });
        }
        Ok(Self {
            port: var_or("PORT", DEFAULT_PORT)?,
            bind_addr: var_or("BIND_ADDR", std::net::IpAddr::from([0, 0, 0, 0]))?,
            mongodb_url: url_or(
                "MONGODB_URL",
                defaults::MONGODB_URL,
                &["mongodb", "mongodb+srv"],
            )?,
            rabbitmq_url: url_or("RABBITMQ_URL", defaults::RABBITMQ_URL, &["amqp", "amqps"])?,
            rabbitmq_topology: var_or(
                "RABBITMQ_TOPOLOGY",
                moviebook_common::amqp::Topology::Declare,
            )?,
            cinema_grpc_url: url_or(
                "CINEMA_GRPC_URL",
                defaults::CINEMA_GRPC_URL,
                &["http", "https"],
            )?,
            cinema_resolve_interval: secs_or(
                "CINEMA_GRPC_RESOLVE_SECONDS",
                Duration::from_secs(5),
            )?,
            user_service_url: url_or(
                "USER_SERVICE_URL",
                defaults::USER_SERVICE_URL,
                &["http", "https"],
            )?,
            payment_service_url: url_or(
                "PAYMENT_SERVICE_URL",
                defaults::PAYMENT_SERVICE_URL,
                &["http", "https"],
            )?,
            jwt_secret: jwt_secret()?,
            jwt_issuer: string_or("JWT_ISSUER", defaults::JWT_ISSUER),
            hold,
            sweep_interval: secs_or("SWEEP_INTERVAL_SECONDS", Duration::from_secs(5))?
                .max(Duration::from_secs(1)),
            paying_timeout: secs_or("PAYING_TIMEOUT_SECONDS", Duration::from_secs(60))?,
            upstream_timeout: secs_or("UPSTREAM_TIMEOUT_SECONDS", Duration::from_secs(10))?,
            lookup_cache: secs_or("LOOKUP_CACHE_SECONDS", Duration::from_secs(30))?,
            max_body_bytes: var_or("MAX_BODY_BYTES", 64 * 1024)?,
            max_depth: var_or("GRAPHQL_MAX_DEPTH", 10)?,
            max_complexity: var_or("GRAPHQL_MAX_COMPLEXITY", 500)?,
            max_seat_maps: var_or("GRAPHQL_MAX_SEAT_MAPS", 4)?,
            user_mutations_per_minute: var_or("USER_MUTATIONS_PER_MINUTE", 120)?,
            max_seats: var_or("MAX_SEATS_PER_BOOKING", 10)?,
            currency: string_or("CURRENCY", "USD"),
            sweeper_enabled: var_or("SWEEPER_ENABLED", true)?,
            crash_point: crash_point(std::env::var("BOOKING_CRASH_POINT").ok())?,
            crash_pause: var_or("BOOKING_CRASH_PAUSE", false)?,
            web_dir: string_or("WEB_DIR", DEFAULT_WEB_DIR).into(),
            live: live_limits()?,
            ticket_seed: match std::env::var("TICKET_SIGNING_KEY") {
                Ok(v) if !v.trim().is_empty() => Some(crate::ticket::parse_seed(&v).map_err(
                    |reason| ConfigError::Invalid {
                        var: "TICKET_SIGNING_KEY".into(),
                        value: "(hidden)".into(),
                        reason,
                    },
                )?),
                _ => None,
            },
        })
    }

    /// A configuration for tests: everything explicit, nothing read from the environment
    /// except what the caller passes.
    pub fn for_urls(
        mongodb_url: &str,
        rabbitmq_url: &str,
        cinema_grpc_url: &str,
        user_service_url: &str,
        payment_service_url: &str,
    ) -> Self {
        Self {
            port: 0,
            bind_addr: std::net::IpAddr::from([127, 0, 0, 1]),
            mongodb_url: mongodb_url.to_owned(),
            rabbitmq_url: rabbitmq_url.to_owned(),
            rabbitmq_topology: moviebook_common::amqp::Topology::Declare,
            cinema_grpc_url: cinema_grpc_url.to_owned(),
            cinema_resolve_interval: Duration::from_secs(5),
            user_service_url: user_service_url.to_owned(),
            payment_service_url: payment_service_url.to_owned(),
            jwt_secret: defaults::JWT_SECRET.to_owned(),
            jwt_issuer: defaults::JWT_ISSUER.to_owned(),
            hold: Duration::from_secs(300),
            sweep_interval: Duration::from_secs(1),
            paying_timeout: Duration::from_secs(60),
            upstream_timeout: Duration::from_secs(10),
            lookup_cache: Duration::from_secs(30),
            max_body_bytes: 64 * 1024,
            max_depth: 10,
            max_complexity: 500,
            max_seat_maps: 4,
            user_mutations_per_minute: 120,
            max_seats: 10,
            currency: "USD".to_owned(),
            sweeper_enabled: true,
            crash_point: None,
            crash_pause: false,
            web_dir: DEFAULT_WEB_DIR.into(),
            live: crate::live::LiveLimits::default(),
            ticket_seed: None,
        }
    }
}

/// `BOOKING_CRASH_POINT`: empty or unset is none; anything else must name a crash point.
fn crash_point(value: Option<String>) -> Result<Option<String>, ConfigError> {
    match value.as_deref().map(str::trim) {
        None | Some("") => Ok(None),
        Some(name) if crate::crash::is_point(name) => Ok(Some(name.to_owned())),
        Some(name) => Err(ConfigError::Invalid {
            var: "BOOKING_CRASH_POINT".into(),
            value: name.to_owned(),
            reason: format!("must be one of {}", crate::crash::POINTS.join(", ")),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_point_is_none_or_a_known_point() {
        assert_eq!(crash_point(None).ok(), Some(None));
        assert_eq!(crash_point(Some(" ".into())).ok(), Some(None));
        assert_eq!(
            crash_point(Some("pay.after_charge".into())).ok(),
            Some(Some("pay.after_charge".to_owned()))
        );
        let err = crash_point(Some("pay.after_lunch".into()))
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(err.contains("BOOKING_CRASH_POINT"), "{err}");
        assert!(err.contains("pay.after_claim"), "{err}");
    }
}
