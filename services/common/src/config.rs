//! Typed configuration from the environment (12-factor).
//!
//! Every service parses its environment once, at start-up, into its own typed struct built with
//! these helpers. A malformed value fails start-up with an error that names the variable, so a
//! typo in a Kubernetes manifest is caught by the first pod instead of by the first request.

use std::{fmt::Display, str::FromStr, time::Duration};

/// The default local-stack URLs (docs/architecture.md: standard ports on 127.0.0.1).
pub mod defaults {
    pub const DATABASE_URL: &str = "postgres://moviebook:moviebook@127.0.0.1:5432/moviebook_cinema";
    pub const MONGODB_URL: &str = "mongodb://127.0.0.1:27017";
    pub const RABBITMQ_URL: &str = "amqp://guest:guest@127.0.0.1:5672/%2f";
    pub const REDIS_URL: &str = "redis://127.0.0.1:6379";
    pub const USER_SERVICE_URL: &str = "http://127.0.0.1:8001";
    pub const CINEMA_GRPC_URL: &str = "http://127.0.0.1:9090";
    pub const PAYMENT_SERVICE_URL: &str = "http://127.0.0.1:8003";
    /// Development-only secret; Kubernetes installs get a generated one from the operator.
    pub const JWT_SECRET: &str = "moviebook-dev-secret-change-me-0123456789";
    /// The `iss` claim; Kong's jwt plugin matches it against the consumer key.
    pub const JWT_ISSUER: &str = "moviebook";
}

/// A configuration variable that is missing or cannot be parsed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("configuration variable {var} is required but not set")]
    Missing { var: String },
    #[error("configuration variable {var}={value:?} is invalid: {reason}")]
    Invalid {
        var: String,
        value: String,
        reason: String,
    },
}

/// Reads the raw value of `var`, treating an empty value as unset.
fn raw(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

/// Parses `value` as `T`, naming `var` in the error. Pure, so it is tested without the
/// process environment.
pub fn parse_value<T>(var: &str, value: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    value.trim().parse::<T>().map_err(|e| ConfigError::Invalid {
        var: var.to_owned(),
        value: value.to_owned(),
        reason: e.to_string(),
    })
}

/// `var` parsed as `T`, or `default` when unset.
pub fn var_or<T>(var: &str, default: T) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    match raw(var) {
        Some(v) => parse_value(var, &v),
        None => Ok(default),
    }
}

/// `var` as a string, or `default` when unset.
pub fn string_or(var: &str, default: &str) -> String {
    raw(var).unwrap_or_else(|| default.to_owned())
}

/// `var` parsed as `T`, or `None` when unset.
pub fn var_opt<T>(var: &str) -> Result<Option<T>, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    raw(var).map(|v| parse_value(var, &v)).transpose()
}

/// `var` parsed as `T`; fails when unset.
pub fn var_required<T>(var: &str) -> Result<T, ConfigError>
where
    T: FromStr,
    T::Err: Display,
{
    let v = raw(var).ok_or_else(|| ConfigError::Missing {
        var: var.to_owned(),
    })?;
    parse_value(var, &v)
}

/// A duration given in whole seconds, or `default` when unset.
pub fn secs_or(var: &str, default: Duration) -> Result<Duration, ConfigError> {
    var_or(var, default.as_secs()).map(Duration::from_secs)
}

/// A URL-like value must at least carry one of the expected schemes.
pub fn url_or(var: &str, default: &str, schemes: &[&str]) -> Result<String, ConfigError> {
    let value = string_or(var, default);
    check_scheme(var, &value, schemes)?;
    Ok(value)
}

/// Pure check behind [`url_or`].
pub fn check_scheme(var: &str, value: &str, schemes: &[&str]) -> Result<(), ConfigError> {
    if schemes
        .iter()
        .any(|s| value.starts_with(&format!("{s}://")))
    {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            var: var.to_owned(),
            value: value.to_owned(),
            reason: format!("expected a URL starting with {}://", schemes.join("://, ")),
        })
    }
}

/// The address servers bind to (`BIND_ADDR`): 0.0.0.0 by default so pods are reachable;
/// `make dev` sets 127.0.0.1 so a laptop's services stay on loopback.
pub fn bind_addr() -> Result<std::net::IpAddr, ConfigError> {
    var_or("BIND_ADDR", std::net::IpAddr::from([0, 0, 0, 0]))
}

/// `JWT_SECRET`: only the seed of the development keys. Every token is ES256 (HS256 is
/// refused): the keys come from `USER_TOKEN_*` / `SERVICE_TOKEN_*` at start (see
/// [`crate::auth`]); when none of those is set, development keys of both kinds are derived
/// from this secret (`make dev`; no pod of the operator gets it). It must be at least 32 bytes,
/// so derived keys are not guessable from a short word.
pub fn jwt_secret() -> Result<String, ConfigError> {
    let secret = string_or("JWT_SECRET", defaults::JWT_SECRET);
    check_jwt_secret(&secret)?;
    Ok(secret)
}

/// Pure check behind [`jwt_secret`].
pub fn check_jwt_secret(secret: &str) -> Result<(), ConfigError> {
    if secret.len() < 32 {
        return Err(ConfigError::Invalid {
            var: "JWT_SECRET".into(),
            value: "<redacted>".into(),
            reason: format!("must be at least 32 bytes, got {}", secret.len()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_value_names_the_variable() {
        let err = parse_value::<u16>("PORT", "80x").unwrap_err();
        assert!(err.to_string().contains("PORT"), "{err}");
        assert!(err.to_string().contains("80x"), "{err}");
        assert!(matches!(err, ConfigError::Invalid { ref var, .. } if var == "PORT"));
    }

    #[test]
    fn out_of_range_port_is_rejected() {
        assert!(parse_value::<u16>("GRPC_PORT", "70000").is_err());
        assert_eq!(parse_value::<u16>("GRPC_PORT", " 9090 "), Ok(9090));
    }

    #[test]
    fn url_scheme_is_checked_and_named() {
        let err = check_scheme("RABBITMQ_URL", "localhost:5672", &["amqp", "amqps"]).unwrap_err();
        assert!(err.to_string().contains("RABBITMQ_URL"));
        assert!(check_scheme("RABBITMQ_URL", "amqp://x", &["amqp", "amqps"]).is_ok());
    }

    #[test]
    fn short_jwt_secret_is_rejected_without_echoing_it() {
        let err = check_jwt_secret("short").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("JWT_SECRET"));
        assert!(!text.contains("short\""));
        assert!(check_jwt_secret(defaults::JWT_SECRET).is_ok());
    }

    #[test]
    fn missing_required_names_the_variable() {
        let err = var_required::<String>("MOVIEBOOK_SURELY_UNSET_VARIABLE").unwrap_err();
        assert_eq!(
            err,
            ConfigError::Missing {
                var: "MOVIEBOOK_SURELY_UNSET_VARIABLE".into()
            }
        );
    }
}
