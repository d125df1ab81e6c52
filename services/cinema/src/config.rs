//! The cinema service's configuration, parsed once from the environment at start-up.

use std::time::Duration;

use moviebook_common::config::{self, ConfigError, defaults};

/// Everything the service reads from the environment.
#[derive(Debug, Clone)]
pub struct Config {
    /// REST catalogue and ops endpoints (`PORT`, default 8002).
    pub http_port: u16,
    /// gRPC contract (`GRPC_PORT`, default 9090).
    pub grpc_port: u16,
    /// Address both servers bind to (`BIND_ADDR`, default 0.0.0.0 so pods are reachable).
    pub bind_addr: std::net::IpAddr,
    /// PostgreSQL (`DATABASE_URL`).
    pub database_url: String,
    /// Connections in the pool (`DB_MAX_CONNECTIONS`, default 32). PostgreSQL does its work on
    /// the CPU cores it has; more connections than a few per core only add contention, and
    /// several replicas share `max_connections`. Hundreds of gRPC clients queue for a
    /// connection instead.
    pub db_max_connections: u32,
    /// How long a request waits for a pooled connection before answering UNAVAILABLE
    /// (`DB_ACQUIRE_TIMEOUT_SECONDS`, default 10).
    pub db_acquire_timeout: Duration,
    /// `JWT_SECRET`: only the seed of the development keys (see
    /// [`moviebook_common::config::jwt_secret`]).
    pub jwt_secret: String,
    /// Issuer the tokens must carry (`JWT_ISSUER`, default `moviebook`).
    pub jwt_issuer: String,
    /// How often the sweeper frees expired holds (`SWEEP_INTERVAL_SECONDS`, default 5).
    pub sweep_interval: Duration,
    /// How old CheckSeatAvailability's copy of a seat board may be (`SEAT_CACHE_MS`, default
    /// 200; 0 reads PostgreSQL on every call). See [`crate::availability`].
    pub seat_cache_ttl: Duration,
}

/// [`Config::seat_cache_ttl`] by default, in milliseconds.
pub const SEAT_CACHE_MS: u64 = 200;

impl Config {
    /// Reads the environment; a malformed value names its variable.
    pub fn from_env() -> Result<Self, ConfigError> {
        let db_max_connections = config::var_or("DB_MAX_CONNECTIONS", 32u32)?;
        if db_max_connections == 0 {
            return Err(ConfigError::Invalid {
                var: "DB_MAX_CONNECTIONS".into(),
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        let sweep_interval = config::secs_or("SWEEP_INTERVAL_SECONDS", Duration::from_secs(5))?;
        if sweep_interval.is_zero() {
            return Err(ConfigError::Invalid {
                var: "SWEEP_INTERVAL_SECONDS".into(),
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        Ok(Self {
            http_port: config::var_or("PORT", 8002)?,
            grpc_port: config::var_or("GRPC_PORT", 9090)?,
            bind_addr: config::var_or("BIND_ADDR", std::net::IpAddr::from([0, 0, 0, 0]))?,
            database_url: config::url_or(
                "DATABASE_URL",
                defaults::DATABASE_URL,
                &["postgres", "postgresql"],
            )?,
            db_max_connections,
            db_acquire_timeout: config::secs_or(
                "DB_ACQUIRE_TIMEOUT_SECONDS",
                Duration::from_secs(10),
            )?,
            jwt_secret: config::jwt_secret()?,
            jwt_issuer: config::string_or("JWT_ISSUER", defaults::JWT_ISSUER),
            sweep_interval,
            seat_cache_ttl: Duration::from_millis(config::var_or("SEAT_CACHE_MS", SEAT_CACHE_MS)?),
        })
    }

    /// A configuration for tests and the benchmark: ephemeral ports are bound by the caller.
    pub fn for_database(database_url: &str) -> Self {
        Self {
            http_port: 0,
            grpc_port: 0,
            bind_addr: std::net::IpAddr::from([127, 0, 0, 1]),
            database_url: database_url.to_owned(),
            db_max_connections: 32,
            db_acquire_timeout: Duration::from_secs(10),
            jwt_secret: defaults::JWT_SECRET.to_owned(),
            jwt_issuer: defaults::JWT_ISSUER.to_owned(),
            sweep_interval: Duration::from_secs(1),
            seat_cache_ttl: Duration::from_millis(SEAT_CACHE_MS),
        }
    }
}
