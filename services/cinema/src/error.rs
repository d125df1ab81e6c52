//! The one error type of the cinema service, and the one place that maps it to an HTTP status
//! with a code (REST) and to a gRPC status (gRPC).

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use moviebook_common::{auth::AuthError, error::error_response};

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request itself is wrong (malformed id, empty or duplicate seat list, bad value).
    #[error("{0}")]
    InvalidArgument(String),
    /// An id that names nothing.
    #[error("{0}")]
    NotFound(String),
    /// The request is valid but clashes with existing data (duplicate name, dependents exist).
    #[error("{0}")]
    Conflict(String),
    /// The request is valid but the resource's state forbids it (showtime already started).
    #[error("{0}")]
    FailedPrecondition(String),
    #[error(transparent)]
    Unauthenticated(#[from] AuthError),
    #[error("{0}")]
    Forbidden(String),
    /// The database is unreachable or saturated: the caller may retry.
    #[error("{0}")]
    Unavailable(String),
    /// A bug or an unexpected database answer; details go to the log, not the client.
    #[error("internal error")]
    Internal(String),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub fn invalid(msg: impl Into<String>) -> Self {
        Self::InvalidArgument(msg.into())
    }

    pub fn not_found(msg: impl Into<String>) -> Self {
        Self::NotFound(msg.into())
    }

    /// HTTP status and machine-readable code.
    pub fn http(&self) -> (StatusCode, &'static str) {
        match self {
            Self::InvalidArgument(_) => (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, "NOT_FOUND"),
            Self::Conflict(_) => (StatusCode::CONFLICT, "CONFLICT"),
            Self::FailedPrecondition(_) => (StatusCode::CONFLICT, "FAILED_PRECONDITION"),
            Self::Unauthenticated(e) => match e {
                AuthError::Issue(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
                _ => (StatusCode::UNAUTHORIZED, e.code()),
            },
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "UNAVAILABLE"),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "INTERNAL"),
        }
    }

    fn log_if_internal(&self) {
        match self {
            Self::Internal(detail) => tracing::error!(error = %detail, "internal error"),
            Self::Unavailable(detail) => tracing::warn!(error = %detail, "database unavailable"),
            _ => {}
        }
    }
}

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.log_if_internal();
        let (status, code) = self.http();
        error_response(status, code, self.to_string())
    }
}

impl From<Error> for tonic::Status {
    fn from(e: Error) -> Self {
        e.log_if_internal();
        let message = e.to_string();
        match e {
            Error::InvalidArgument(_) => Self::invalid_argument(message),
            Error::NotFound(_) => Self::not_found(message),
            Error::Conflict(_) => Self::already_exists(message),
            Error::FailedPrecondition(_) => Self::failed_precondition(message),
            Error::Unauthenticated(_) => Self::unauthenticated(message),
            Error::Forbidden(_) => Self::permission_denied(message),
            Error::Unavailable(_) => Self::unavailable(message),
            Error::Internal(_) => Self::internal(message),
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        match &e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                Self::Unavailable(format!("database unavailable: {e}"))
            }
            sqlx::Error::Database(db) => match db.code().as_deref() {
                // unique_violation
                Some("23505") => Self::Conflict(match db.constraint() {
                    Some("cinemas_name_unique") => "a cinema with this name already exists".into(),
                    Some("movies_title_unique") => "a movie with this title already exists".into(),
                    Some("screens_cinema_name_unique") => {
                        "this cinema already has a screen with this name".into()
                    }
                    Some("showtimes_screen_start_unique") => {
                        "this screen already has a showtime starting at that time".into()
                    }
                    _ => "already exists".into(),
                }),
                // foreign_key_violation: a delete of something still referenced
                Some("23503") => {
                    Self::Conflict("still referenced by other records (delete those first)".into())
                }
                // check_violation, invalid_text_representation, numeric out of range
                Some("23514") | Some("22P02") | Some("22003") | Some("22008") => {
                    Self::InvalidArgument(format!("invalid value: {}", db.message()))
                }
                _ => Self::Internal(e.to_string()),
            },
            _ => Self::Internal(e.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_codes() {
        let s: tonic::Status = Error::invalid("bad").into();
        assert_eq!(s.code(), tonic::Code::InvalidArgument);
        assert_eq!(s.message(), "bad");
        let s: tonic::Status = Error::not_found("nope").into();
        assert_eq!(s.code(), tonic::Code::NotFound);
        let s: tonic::Status = Error::Unavailable("x".into()).into();
        assert_eq!(s.code(), tonic::Code::Unavailable);
    }

    #[test]
    fn internal_details_stay_out_of_the_message() {
        let e = Error::Internal("password=hunter2".into());
        assert_eq!(e.to_string(), "internal error");
        assert_eq!(e.http().0, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn pool_timeout_is_unavailable() {
        let e: Error = sqlx::Error::PoolTimedOut.into();
        assert_eq!(e.http().1, "UNAVAILABLE");
    }
}
