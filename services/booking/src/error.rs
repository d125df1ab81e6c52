//! The one error type of the booking service, and its mapping to GraphQL error codes
//! (`extensions.code`) and HTTP statuses, in one place.

use async_graphql::ErrorExtensions;
use moviebook_common::auth::AuthError;

use crate::domain::{BookingStatus, InputError, InvalidTransition};

#[derive(Debug, Clone, thiserror::Error)]
pub enum BookingError {
    #[error("authentication required: {0}")]
    Unauthenticated(AuthError),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    BadInput(String),
    #[error("{0}")]
    NotFound(String),
    #[error("seats not available: {}", seats.join(", "))]
    SeatsUnavailable { seats: Vec<String>, message: String },
    #[error("payment declined: {reason}")]
    PaymentDeclined {
        code: String,
        reason: String,
        transaction_id: Option<String>,
    },
    #[error("the booking is {status}: {message}")]
    InvalidState {
        status: BookingStatus,
        message: String,
    },
    #[error("the seat hold expired: {0}")]
    HoldExpired(String),
    /// The client's idempotency key already belongs to a different request.
    #[error("{0}")]
    IdempotencyKeyReused(String),
    #[error("{service} is unavailable: {message}")]
    Unavailable {
        service: &'static str,
        message: String,
    },
    /// The caller made too many booking mutations; it may again after `retry_after_secs`.
    #[error("too many booking changes from this user; retry in {retry_after_secs} s")]
    RateLimited { retry_after_secs: u64 },
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T, E = BookingError> = std::result::Result<T, E>;

impl BookingError {
    /// The machine-readable code clients see in `extensions.code`.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Unauthenticated(_) => "UNAUTHENTICATED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::BadInput(_) => "BAD_USER_INPUT",
            Self::NotFound(_) => "NOT_FOUND",
            Self::SeatsUnavailable { .. } => "SEATS_UNAVAILABLE",
            Self::PaymentDeclined { .. } => "PAYMENT_DECLINED",
            Self::InvalidState { .. } => "INVALID_STATE",
            Self::HoldExpired(_) => "HOLD_EXPIRED",
            Self::IdempotencyKeyReused(_) => "IDEMPOTENCY_KEY_REUSED",
            Self::Unavailable { .. } => "SERVICE_UNAVAILABLE",
            Self::RateLimited { .. } => "RATE_LIMITED",
            Self::Internal(_) => "INTERNAL",
        }
    }

    pub fn internal(e: impl std::fmt::Display) -> Self {
        Self::Internal(e.to_string())
    }

    pub fn invalid_state(status: BookingStatus, message: impl Into<String>) -> Self {
        Self::InvalidState {
            status,
            message: message.into(),
        }
    }
}

impl From<InputError> for BookingError {
    fn from(e: InputError) -> Self {
        Self::BadInput(e.0)
    }
}

impl From<InvalidTransition> for BookingError {
    fn from(e: InvalidTransition) -> Self {
        Self::InvalidState {
            status: e.from,
            message: e.to_string(),
        }
    }
}

impl From<mongodb::error::Error> for BookingError {
    fn from(e: mongodb::error::Error) -> Self {
        tracing::error!(error = %e, "mongodb");
        Self::Unavailable {
            service: "database",
            message: "the booking store is unavailable".into(),
        }
    }
}

impl From<AuthError> for BookingError {
    fn from(e: AuthError) -> Self {
        Self::Unauthenticated(e)
    }
}

impl ErrorExtensions for BookingError {
    fn extend(&self) -> async_graphql::Error {
        // Internal details go to the log, not to the client.
        let message = match self {
            Self::Internal(detail) => {
                tracing::error!(error = %detail, "internal error");
                "internal error".to_owned()
            }
            other => other.to_string(),
        };
        async_graphql::Error::new(message).extend_with(|_, ext| {
            ext.set("code", self.code());
            match self {
                Self::Unauthenticated(reason) => ext.set("reason", reason.code()),
                Self::SeatsUnavailable { seats, .. } => ext.set("unavailableSeats", seats.clone()),
                Self::PaymentDeclined {
                    code,
                    transaction_id,
                    ..
                } => {
                    ext.set("reason", code.as_str());
                    if let Some(t) = transaction_id {
                        ext.set("transactionId", t.as_str());
                    }
                }
                Self::InvalidState { status, .. } => ext.set("status", status.as_str()),
                Self::Unavailable { service, .. } => ext.set("service", *service),
                Self::RateLimited { retry_after_secs } => ext.set("retryAfter", *retry_after_secs),
                _ => {}
            }
        })
    }
}

/// Renders a service error as a GraphQL error with its code (the blanket `From<Display>` of
/// async-graphql would drop the code, so resolvers go through this).
pub fn gql(e: BookingError) -> async_graphql::Error {
    e.extend()
}
