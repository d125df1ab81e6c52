//! The user service's configuration, parsed once from the environment.

use std::time::Duration;

use moviebook_common::config::{self, ConfigError, defaults};

use crate::password::HashParams;

/// Default MongoDB database when the URL names none.
pub const DEFAULT_DATABASE: &str = "moviebook_user";

#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP port (`PORT`, default 8001).
    pub port: u16,
    /// `MONGODB_URL`; a database in its path wins over [`Config::database`].
    pub mongodb_url: String,
    /// `MONGODB_DATABASE`, default `moviebook_user`.
    pub database: String,
    /// `JWT_SECRET`: only the seed of the development keys (see
    /// [`moviebook_common::config::jwt_secret`]).
    pub jwt_secret: String,
    /// `JWT_ISSUER`, default `moviebook`.
    pub jwt_issuer: String,
    /// `JWT_TTL_SECONDS`, default 86400.
    pub jwt_ttl: Duration,
    /// `ARGON2_MEMORY_KIB`, `ARGON2_ITERATIONS`, `ARGON2_PARALLELISM`.
    pub hash: HashParams,
    /// `HASH_CONCURRENCY`: password hashes computed at once (each holds `ARGON2_MEMORY_KIB` of
    /// RAM), default the number of CPUs. Further logins queue instead of exhausting memory.
    pub hash_concurrency: usize,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let cpus = std::thread::available_parallelism().map_or(2, |n| n.get());
        let hash = HashParams {
            memory_kib: config::var_or("ARGON2_MEMORY_KIB", HashParams::OWASP.memory_kib)?,
            iterations: config::var_or("ARGON2_ITERATIONS", HashParams::OWASP.iterations)?,
            parallelism: config::var_or("ARGON2_PARALLELISM", HashParams::OWASP.parallelism)?,
        };
        hash.validate().map_err(|reason| ConfigError::Invalid {
            var: "ARGON2_MEMORY_KIB/ARGON2_ITERATIONS/ARGON2_PARALLELISM".into(),
            value: format!(
                "m={},t={},p={}",
                hash.memory_kib, hash.iterations, hash.parallelism
            ),
            reason,
        })?;
        let hash_concurrency: usize = config::var_or("HASH_CONCURRENCY", cpus)?;
        if hash_concurrency == 0 {
            return Err(ConfigError::Invalid {
                var: "HASH_CONCURRENCY".into(),
                value: "0".into(),
                reason: "must be at least 1".into(),
            });
        }
        let ttl = config::secs_or("JWT_TTL_SECONDS", Duration::from_secs(86_400))?;
        if ttl.is_zero() {
            return Err(ConfigError::Invalid {
                var: "JWT_TTL_SECONDS".into(),
                value: "0".into(),
                reason: "must be at least 1 second".into(),
            });
        }
        Ok(Self {
            port: config::var_or("PORT", 8001)?,
            mongodb_url: config::url_or(
                "MONGODB_URL",
                defaults::MONGODB_URL,
                &["mongodb", "mongodb+srv"],
            )?,
            database: config::string_or("MONGODB_DATABASE", DEFAULT_DATABASE),
            jwt_secret: config::jwt_secret()?,
            jwt_issuer: config::string_or("JWT_ISSUER", defaults::JWT_ISSUER),
            jwt_ttl: ttl,
            hash,
            hash_concurrency,
        })
    }
}
