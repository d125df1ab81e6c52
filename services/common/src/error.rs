//! The error body every MovieBook HTTP service answers with, and a JSON extractor whose
//! rejections are clear 4xx errors with a code (never a 500).
//!
//! Each service keeps its own error enum (one place that maps each variant to a status and a
//! code) and renders it with [`error_response`], so clients see one shape everywhere:
//! `{"error": {"code": "SEAT_UNAVAILABLE", "message": "..."}}`.

use axum::{
    Json,
    extract::{FromRequest, Request, rejection::JsonRejection},
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};

/// `{"error": {...}}`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorBody {
    pub error: ErrorDetail,
}

/// A machine-readable `code` (SCREAMING_SNAKE_CASE) and a human-readable `message`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct ErrorDetail {
    pub code: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<serde_json::Value>,
}

/// Renders an error response in the shared shape.
pub fn error_response(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        error: ErrorDetail {
            code: code.to_owned(),
            message: message.into(),
            details: None,
        },
    };
    (status, Json(body)).into_response()
}

/// Renders a service's own error: client errors carry their message; server errors are logged
/// with their details and answer a generic message, so internals (driver errors, hostnames)
/// never reach clients.
pub fn service_error_response(
    status: StatusCode,
    code: &str,
    error: &dyn std::fmt::Display,
) -> Response {
    if status.is_server_error() {
        tracing::error!(error = %error, code, "request failed");
        return error_response(status, code, "the service cannot answer right now; retry");
    }
    error_response(status, code, error.to_string())
}

/// A 413 for a body over the limit, marked `Connection: close`.
///
/// The server answers before reading the rest of the body and then drops the connection, so a
/// client that pooled it would send its next request into a closed socket (seen in CI as
/// `IncompleteMessage` on the request after the 413). The header tells clients and proxies not
/// to reuse it.
pub fn payload_too_large(message: impl Into<String>) -> Response {
    let mut r = error_response(StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE", message);
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

/// The status and code for a rejected JSON body. Pure, so the mapping is unit tested.
pub fn json_rejection_status(rejection: &JsonRejection) -> (StatusCode, &'static str) {
    match rejection {
        JsonRejection::JsonDataError(_) => (StatusCode::UNPROCESSABLE_ENTITY, "INVALID_BODY"),
        JsonRejection::JsonSyntaxError(_) => (StatusCode::BAD_REQUEST, "MALFORMED_JSON"),
        JsonRejection::MissingJsonContentType(_) => {
            (StatusCode::UNSUPPORTED_MEDIA_TYPE, "UNSUPPORTED_MEDIA_TYPE")
        }
        JsonRejection::BytesRejection(b) if b.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            (StatusCode::PAYLOAD_TOO_LARGE, "PAYLOAD_TOO_LARGE")
        }
        _ => (StatusCode::BAD_REQUEST, "BAD_REQUEST"),
    }
}

/// Like [`axum::Json`], but a bad body becomes a 4xx in the shared error shape.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Response;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(value)) => Ok(Self(value)),
            Err(rejection) => {
                let (status, code) = json_rejection_status(&rejection);
                if status == StatusCode::PAYLOAD_TOO_LARGE {
                    return Err(payload_too_large(rejection.body_text()));
                }
                Err(error_response(status, code, rejection.body_text()))
            }
        }
    }
}

impl<T: Serialize> IntoResponse for ApiJson<T> {
    fn into_response(self) -> Response {
        Json(self.0).into_response()
    }
}

/// Fallback for unknown routes: a 404 in the shared shape instead of an empty body.
pub async fn not_found() -> Response {
    error_response(StatusCode::NOT_FOUND, "NOT_FOUND", "no such route")
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body(r: Response) -> ErrorBody {
        let bytes = axum::body::to_bytes(r.into_body(), 1 << 16).await.unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    #[tokio::test]
    async fn server_errors_hide_their_details_client_errors_keep_them() {
        let secret = "connection refused to mongo-0.internal:27017";
        let r = service_error_response(
            StatusCode::SERVICE_UNAVAILABLE,
            "STORE_UNAVAILABLE",
            &secret,
        );
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let b = body(r).await;
        assert_eq!(b.error.code, "STORE_UNAVAILABLE");
        assert!(!b.error.message.contains("mongo-0"), "{}", b.error.message);

        let r = service_error_response(
            StatusCode::CONFLICT,
            "EMAIL_TAKEN",
            &"email already registered",
        );
        assert_eq!(r.status(), StatusCode::CONFLICT);
        assert_eq!(body(r).await.error.message, "email already registered");
    }

    #[tokio::test]
    async fn an_oversized_body_closes_the_connection() {
        let r = payload_too_large("request body exceeds 65536 bytes");
        assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
        assert_eq!(r.headers()[header::CONNECTION], "close");
        assert_eq!(body(r).await.error.code, "PAYLOAD_TOO_LARGE");
    }
}
