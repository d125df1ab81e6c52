//! The payment service's configuration, parsed once from the environment.

use moviebook_common::config::{self, ConfigError, defaults};

/// Default MongoDB database when the URL names none.
pub const DEFAULT_DATABASE: &str = "moviebook_payment";

#[derive(Debug, Clone)]
pub struct Config {
    /// HTTP port (`PORT`, default 8003).
    pub port: u16,
    /// `MONGODB_URL`; a database in its path wins over [`Config::database`].
    pub mongodb_url: String,
    /// `MONGODB_DATABASE`, default `moviebook_payment`.
    pub database: String,
    /// `RABBITMQ_URL`, where the outbox relay publishes.
    pub rabbitmq_url: String,
    /// Whether the service declares RabbitMQ's shared topology or finds it on the broker
    /// (`RABBITMQ_TOPOLOGY`: `declare`, the default, or `existing`, which the operator sets for
    /// its managed broker, whose users may not change it).
    pub rabbitmq_topology: moviebook_common::amqp::Topology,
    /// `JWT_SECRET`: only the seed of the development keys (see
    /// [`moviebook_common::config::jwt_secret`]).
    pub jwt_secret: String,
    /// `JWT_ISSUER`, default `moviebook`.
    pub jwt_issuer: String,
    /// `PAYMENT_FAILURE_RATE` in [0, 1]: the share of otherwise approved payments the simulated
    /// gateway fails with `PROCESSING_ERROR`, for chaos testing. Default 0 (off).
    pub failure_rate: f64,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        let failure_rate: f64 = config::var_or("PAYMENT_FAILURE_RATE", 0.0)?;
        check_rate(failure_rate)?;
        Ok(Self {
            port: config::var_or("PORT", 8003)?,
            mongodb_url: config::url_or(
                "MONGODB_URL",
                defaults::MONGODB_URL,
                &["mongodb", "mongodb+srv"],
            )?,
            database: config::string_or("MONGODB_DATABASE", DEFAULT_DATABASE),
            rabbitmq_url: config::url_or(
                "RABBITMQ_URL",
                defaults::RABBITMQ_URL,
                &["amqp", "amqps"],
            )?,
            rabbitmq_topology: config::var_or(
                "RABBITMQ_TOPOLOGY",
                moviebook_common::amqp::Topology::Declare,
            )?,
            jwt_secret: config::jwt_secret()?,
            jwt_issuer: config::string_or("JWT_ISSUER", defaults::JWT_ISSUER),
            failure_rate,
        })
    }
}

/// The failure rate must be a probability.
pub fn check_rate(rate: f64) -> Result<(), ConfigError> {
    if (0.0..=1.0).contains(&rate) {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            var: "PAYMENT_FAILURE_RATE".into(),
            value: rate.to_string(),
            reason: "must be between 0 and 1".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn rate_bounds() {
        assert!(super::check_rate(0.0).is_ok());
        assert!(super::check_rate(1.0).is_ok());
        assert!(super::check_rate(1.5).is_err());
        assert!(super::check_rate(f64::NAN).is_err());
    }
}
