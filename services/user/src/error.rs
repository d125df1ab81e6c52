//! The one error type of the user service, and its HTTP mapping.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use moviebook_common::{auth::AuthError, error::service_error_response};

use crate::{domain::Invalid, password::HashError, store::StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{}", .0.message)]
    Invalid(Invalid),
    #[error("an account with this email already exists")]
    EmailTaken,
    #[error("invalid email or password")]
    InvalidCredentials,
    #[error("the current password is wrong or missing")]
    WrongCurrentPassword,
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("you may only access your own account")]
    Forbidden,
    #[error("user not found")]
    UserNotFound,
    #[error("user id must be a UUID")]
    InvalidUserId,
    #[error("storage failure: {0}")]
    Store(#[from] StoreError),
    #[error("{0}")]
    Hash(#[from] HashError),
}

impl ApiError {
    /// Status and code of each variant: the single place clients' contract is decided.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::Invalid(i) => (StatusCode::UNPROCESSABLE_ENTITY, i.code),
            Self::EmailTaken => (StatusCode::CONFLICT, "EMAIL_TAKEN"),
            Self::InvalidCredentials => (StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS"),
            Self::WrongCurrentPassword => (StatusCode::FORBIDDEN, "WRONG_CURRENT_PASSWORD"),
            Self::Auth(AuthError::Issue(_)) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
            Self::Auth(e) => (StatusCode::UNAUTHORIZED, e.code()),
            Self::Forbidden => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            Self::UserNotFound => (StatusCode::NOT_FOUND, "USER_NOT_FOUND"),
            Self::InvalidUserId => (StatusCode::BAD_REQUEST, "INVALID_USER_ID"),
            Self::Store(StoreError::DuplicateEmail) => (StatusCode::CONFLICT, "EMAIL_TAKEN"),
            Self::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "STORE_UNAVAILABLE"),
            Self::Hash(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
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
            ApiError::EmailTaken.status_and_code(),
            (StatusCode::CONFLICT, "EMAIL_TAKEN")
        );
        assert_eq!(
            ApiError::Store(StoreError::DuplicateEmail)
                .status_and_code()
                .1,
            "EMAIL_TAKEN"
        );
        assert_eq!(
            ApiError::InvalidCredentials.status_and_code(),
            (StatusCode::UNAUTHORIZED, "INVALID_CREDENTIALS")
        );
        assert_eq!(
            ApiError::Auth(AuthError::Expired).status_and_code(),
            (StatusCode::UNAUTHORIZED, "TOKEN_EXPIRED")
        );
    }
}
