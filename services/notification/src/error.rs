//! The crate's one error enum for the HTTP read API, mapped to status and code in one place.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use moviebook_common::error::error_response;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    BadRequest(String),
    #[error("you may only read your own notifications")]
    Forbidden,
    #[error("the notification store is unavailable")]
    Store(#[from] mongodb::error::Error),
}

impl ApiError {
    /// The status and the machine-readable code. Pure.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, "INVALID_QUERY"),
            Self::Forbidden => (StatusCode::FORBIDDEN, "FORBIDDEN"),
            Self::Store(_) => (StatusCode::SERVICE_UNAVAILABLE, "STORE_UNAVAILABLE"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let Self::Store(e) = &self {
            tracing::warn!(error = %e, "notification store unavailable");
        }
        error_response(status, code, self.to_string())
    }
}
