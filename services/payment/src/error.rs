//! The one error type of the payment service, and its HTTP mapping.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use moviebook_common::{auth::AuthError, error::service_error_response};

use crate::{
    domain::{Invalid, NotRefundable},
    store::StoreError,
};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{}", .0.message)]
    Invalid(Invalid),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("you may only read your own payments")]
    Forbidden,
    #[error(
        "payments and refunds are made by the booking service only; cancel the booking to get your money back"
    )]
    InternalOnly,
    #[error("transaction not found")]
    TransactionNotFound,
    #[error("this Idempotency-Key was already used for a different request")]
    IdempotencyKeyReused,
    #[error("not refundable: {}", .0.0)]
    NotRefundable(NotRefundable),
    #[error("Idempotency-Key header must be 1 to 255 visible ASCII characters")]
    InvalidIdempotencyKey,
    #[error("too much contention on this request; retry")]
    Contention,
    #[error("storage failure: {0}")]
    Store(#[from] StoreError),
}

impl ApiError {
    /// Status and code of each variant: the single place the contract is decided.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Invalid(i) => (StatusCode::UNPROCESSABLE_ENTITY, i.code),
            Self::Auth(AuthError::Issue(_)) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
            Self::Auth(e) => (StatusCode::UNAUTHORIZED, e.code()),
            Self::Forbidden | Self::InternalOnly => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            Self::TransactionNotFound => (StatusCode::NOT_FOUND, "TRANSACTION_NOT_FOUND"),
            Self::IdempotencyKeyReused => (StatusCode::CONFLICT, "IDEMPOTENCY_KEY_REUSED"),
            Self::NotRefundable(_) => (StatusCode::CONFLICT, "NOT_REFUNDABLE"),
            Self::InvalidIdempotencyKey => (StatusCode::BAD_REQUEST, "INVALID_IDEMPOTENCY_KEY"),
            Self::Contention => (StatusCode::SERVICE_UNAVAILABLE, "CONTENTION"),
            Self::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "STORE_UNAVAILABLE"),
        }
    }
}

impl From<Invalid> for ApiError {
    fn from(i: Invalid) -> Self {
        Self::Invalid(i)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        service_error_response(status, code, &self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mapping() {
        assert_eq!(
            ApiError::IdempotencyKeyReused.status_and_code(),
            (StatusCode::CONFLICT, "IDEMPOTENCY_KEY_REUSED")
        );
        assert_eq!(
            ApiError::NotRefundable(NotRefundable("x".into())).status_and_code(),
            (StatusCode::CONFLICT, "NOT_REFUNDABLE")
        );
        assert_eq!(
            ApiError::Auth(AuthError::Missing).status_and_code().0,
            StatusCode::UNAUTHORIZED
        );
    }
}
