//! The booking service's clients of the other services. Each holds ONE connection pool for the
//! life of the process (a tonic `Channel` multiplexing HTTP/2 streams, a pooled `reqwest::Client`),
//! so no request pays for a new connection.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use moviebook_common::proto::{
    self, BatchGetShowtimesRequest, ConfirmSeatBookingRequest, ConfirmSeatBookingResponse,
    GetSeatMapRequest, GetSeatMapResponse, GetShowtimeDetailsRequest, GetShowtimeDetailsResponse,
    ListCinemasRequest, ListMoviesRequest, ListMoviesResponse, LockSeatsRequest, LockSeatsResponse,
    ReleaseBookedSeatsRequest, ReleaseSeatLockRequest, cinema_service_client::CinemaServiceClient,
};
use reqwest::StatusCode;
use serde::Deserialize;
use tonic::{Code, transport::Channel};

use crate::error::{BookingError, Result};

/// A small time-bounded cache for lookups that rarely change (a verified user, a showtime's
/// movie and cinema). Bounded: it is simply cleared when full.
pub struct TtlCache<V> {
    ttl: Duration,
    capacity: usize,
    map: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> TtlCache<V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &str) -> Option<V> {
        if self.ttl.is_zero() {
            return None;
        }
        let map = self.map.lock().ok()?;
        map.get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    pub fn put(&self, key: &str, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= self.capacity {
                map.clear();
            }
            map.insert(key.to_owned(), (Instant::now(), value));
        }
    }
}

/// Whether a gRPC failure leaves the outcome unknown (the call may have taken effect).
pub fn outcome_unknown(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
    )
}

/// Maps a gRPC status from the cinema service to our error.
pub fn cinema_error(status: &tonic::Status) -> BookingError {
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange => BookingError::BadInput(status.message().into()),
        Code::NotFound => BookingError::NotFound(status.message().into()),
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => {
            BookingError::SeatsUnavailable {
                seats: vec![],
                message: status.message().into(),
            }
        }
        _ => {
            tracing::warn!(code = ?status.code(), message = status.message(), "cinema call failed");
            BookingError::Unavailable {
                service: "cinema",
                message: "the cinema service is unavailable".into(),
            }
        }
    }
}

/// The cinema gRPC client (one lazily connected channel).
#[derive(Clone)]
pub struct CinemaClient {
    inner: CinemaServiceClient<Channel>,
}

impl CinemaClient {
    pub fn new(url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let channel = tonic::transport::Endpoint::from_shared(url.to_owned())?
            .connect_timeout(Duration::from_secs(3))
            .timeout(timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .connect_lazy();
        Ok(Self {
            inner: CinemaServiceClient::new(channel),
        })
    }

    fn client(&self) -> CinemaServiceClient<Channel> {
        self.inner.clone()
    }

    pub async fn list_movies(
        &self,
        genre: Option<String>,
        limit: i32,
        offset: i32,
    ) -> Result<ListMoviesResponse> {
        self.client()
            .list_movies(ListMoviesRequest {
                genre: genre.unwrap_or_default(),
                limit,
                offset,
                ..ListMoviesRequest::default()
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| cinema_error(&s))
    }

    pub async fn list_cinemas(&self) -> Result<Vec<proto::CinemaInfo>> {
        self.client()
            .list_cinemas(ListCinemasRequest {})
            .await
            .map(|r| r.into_inner().cinemas)
            .map_err(|s| cinema_error(&s))
    }

    pub async fn batch_get_showtimes(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<GetShowtimeDetailsResponse>> {
        self.client()
            .batch_get_showtimes(BatchGetShowtimesRequest { showtime_ids: ids })
            .await
            .map(|r| r.into_inner().showtimes)
            .map_err(|s| cinema_error(&s))
    }

    pub async fn showtime(&self, id: &str) -> Result<GetShowtimeDetailsResponse> {
        self.client()
            .get_showtime_details(GetShowtimeDetailsRequest {
                showtime_id: id.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| cinema_error(&s))
    }

    pub async fn seat_map(&self, id: &str) -> Result<GetSeatMapResponse> {
        self.client()
            .get_seat_map(GetSeatMapRequest {
                showtime_id: id.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
            .map_err(|s| cinema_error(&s))
    }

    pub async fn lock_seats(
        &self,
        showtime_id: &str,
        seats: &[String],
        booking_id: &str,
        hold: Duration,
    ) -> std::result::Result<LockSeatsResponse, tonic::Status> {
        self.client()
            .lock_seats(LockSeatsRequest {
                showtime_id: showtime_id.to_owned(),
                seat_numbers: seats.to_vec(),
                booking_id: booking_id.to_owned(),
                lock_duration_seconds: i32::try_from(hold.as_secs()).unwrap_or(300),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Releases a hold. Idempotent on the cinema side; failures are logged, not returned: a
    /// hold that cannot be released now lapses by itself.
    pub async fn release_lock(&self, lock_id: &str, booking_id: &str) {
        let r = self
            .client()
            .release_seat_lock(ReleaseSeatLockRequest {
                lock_id: lock_id.to_owned(),
                booking_id: booking_id.to_owned(),
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(booking_id, lock_id, error = %e, "could not release the seat hold (it will lapse)");
        }
    }

    pub async fn confirm(
        &self,
        lock_id: &str,
        booking_id: &str,
        user_id: &str,
    ) -> std::result::Result<ConfirmSeatBookingResponse, tonic::Status> {
        self.client()
            .confirm_seat_booking(ConfirmSeatBookingRequest {
                lock_id: lock_id.to_owned(),
                booking_id: booking_id.to_owned(),
                user_id: user_id.to_owned(),
            })
            .await
            .map(tonic::Response::into_inner)
    }

    /// Returns sold seats to sale (cancel after payment). Idempotent.
    pub async fn release_booked(&self, booking_id: &str, showtime_id: &str) -> Result<()> {
        self.client()
            .release_booked_seats(ReleaseBookedSeatsRequest {
                booking_id: booking_id.to_owned(),
                showtime_id: showtime_id.to_owned(),
            })
            .await
            .map(|_| ())
            .map_err(|s| cinema_error(&s))
    }
}

/// What the user service tells about a user.
#[derive(Debug, Clone, Deserialize)]
pub struct UserInfo {
    pub id: String,
    #[serde(default)]
    pub email: Option<String>,
}

/// The shared error body of the other services.
#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: String,
    #[serde(default)]
    message: String,
}

async fn error_detail(resp: reqwest::Response) -> (String, String) {
    match resp.json::<ErrorEnvelope>().await {
        Ok(e) => (e.error.code, e.error.message),
        Err(_) => ("UNKNOWN".into(), String::new()),
    }
}

/// A successful transaction, a decline, or a refund as the payment service answers them.
#[derive(Debug, Clone, Deserialize)]
pub struct Transaction {
    pub transaction_id: String,
    pub status: String,
    #[serde(default)]
    pub failure_code: Option<String>,
    #[serde(default)]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub amount: f64,
    #[serde(default)]
    pub refunded_amount: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Refund {
    pub refund_id: String,
}

/// The outcome of a payment request.
#[derive(Debug)]
pub enum PayOutcome {
    /// The gateway answered (SUCCESS or FAILED).
    Answered(Transaction),
    /// The request was refused before any charge (bad input, auth).
    Refused(BookingError),
    /// No definite answer: the charge may or may not have happened.
    Unknown(String),
}

/// REST clients of the user and payment services, sharing one pooled HTTP client.
#[derive(Clone)]
pub struct RestClients {
    http: reqwest::Client,
    user_url: String,
    payment_url: String,
}

impl RestClients {
    pub fn new(user_url: &str, payment_url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            user_url: user_url.trim_end_matches('/').to_owned(),
            payment_url: payment_url.trim_end_matches('/').to_owned(),
        })
    }

    /// Checks the user exists, with the caller's token (the user service enforces that the
    /// token may read that user).
    pub async fn user(&self, token: &str, user_id: &str) -> Result<UserInfo> {
        let resp = self
            .http
            .get(format!("{}/api/v1/users/{user_id}", self.user_url))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| unavailable("user", &e))?;
        match resp.status() {
            s if s.is_success() => {
                let v: serde_json::Value =
                    resp.json().await.map_err(|e| unavailable("user", &e))?;
                // Either the user object itself or {"user": {...}}.
                let user = v.get("user").cloned().unwrap_or(v);
                serde_json::from_value(user).map_err(|e| BookingError::Unavailable {
                    service: "user",
                    message: format!("unexpected answer from the user service: {e}"),
                })
            }
            StatusCode::NOT_FOUND => {
                Err(BookingError::NotFound(format!("user {user_id} not found")))
            }
            StatusCode::FORBIDDEN => Err(BookingError::Forbidden(
                "the token may not act for this user".into(),
            )),
            StatusCode::UNAUTHORIZED => Err(BookingError::Unauthenticated(
                moviebook_common::auth::AuthError::BadSignature,
            )),
            s => {
                let (code, message) = error_detail(resp).await;
                tracing::warn!(status = %s, code, message, "user service error");
                Err(BookingError::Unavailable {
                    service: "user",
                    message: "the user service is unavailable".into(),
                })
            }
        }
    }

    /// Charges a booking. The Idempotency-Key makes a retry replay the same charge.
    #[allow(clippy::too_many_arguments)]
    pub async fn pay(
        &self,
        token: &str,
        idempotency_key: &str,
        booking_id: &str,
        user_id: &str,
        amount: f64,
        currency: &str,
        method: &str,
        details: Option<serde_json::Value>,
    ) -> PayOutcome {
        let mut body = serde_json::json!({
            "booking_id": booking_id,
            "user_id": user_id,
            "amount": amount,
            "currency": currency,
            "payment_method": method,
        });
        if let (Some(d), Some(obj)) = (details, body.as_object_mut()) {
            obj.insert("payment_details".into(), d);
        }
        let resp = match self
            .http
            .post(format!("{}/payments", self.payment_url))
            .bearer_auth(token)
            .header("Idempotency-Key", idempotency_key)
            .json(&body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return PayOutcome::Unknown(e.to_string()),
        };
        let status = resp.status();
        if status.is_success() {
            return match resp.json::<Transaction>().await {
                Ok(t) => PayOutcome::Answered(t),
                Err(e) => PayOutcome::Unknown(format!("unreadable payment answer: {e}")),
            };
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return PayOutcome::Unknown(format!("payment service answered {status}"));
        }
        let (code, message) = error_detail(resp).await;
        let err = match status {
            StatusCode::UNAUTHORIZED => {
                BookingError::Unauthenticated(moviebook_common::auth::AuthError::BadSignature)
            }
            StatusCode::FORBIDDEN => BookingError::Forbidden(message),
            StatusCode::CONFLICT => BookingError::InvalidState {
                status: crate::domain::BookingStatus::Paying,
                message: format!("payment refused: {code} {message}"),
            },
            _ if code == "INVALID_CARD" => BookingError::PaymentDeclined {
                code,
                reason: message,
                transaction_id: None,
            },
            _ => BookingError::BadInput(format!("payment refused: {code}: {message}")),
        };
        PayOutcome::Refused(err)
    }

    /// Refunds a transaction in full; idempotent per key.
    pub async fn refund(
        &self,
        token: &str,
        idempotency_key: &str,
        transaction_id: &str,
        reason: &str,
    ) -> Result<Refund> {
        let resp = self
            .http
            .post(format!("{}/refunds", self.payment_url))
            .bearer_auth(token)
            .header("Idempotency-Key", idempotency_key)
            .json(&serde_json::json!({ "transaction_id": transaction_id, "reason": reason }))
            .send()
            .await
            .map_err(|e| unavailable("payment", &e))?;
        if resp.status().is_success() {
            return resp
                .json::<Refund>()
                .await
                .map_err(|e| unavailable("payment", &e));
        }
        let status = resp.status();
        let (code, message) = error_detail(resp).await;
        tracing::warn!(%status, code, message, transaction_id, "refund refused");
        Err(BookingError::Unavailable {
            service: "payment",
            message: format!("refund failed: {code}"),
        })
    }

    /// Every transaction of a booking, newest first.
    pub async fn transactions(&self, token: &str, booking_id: &str) -> Result<Vec<Transaction>> {
        let resp = self
            .http
            .get(format!(
                "{}/payments/booking/{booking_id}",
                self.payment_url
            ))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| unavailable("payment", &e))?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(vec![]);
        }
        if !resp.status().is_success() {
            return Err(BookingError::Unavailable {
                service: "payment",
                message: format!("listing payments answered {}", resp.status()),
            });
        }
        let v: serde_json::Value = resp.json().await.map_err(|e| unavailable("payment", &e))?;
        // A bare list or {"transactions": [...]}.
        let list = v.get("transactions").cloned().unwrap_or(v);
        serde_json::from_value(list).map_err(|e| BookingError::Unavailable {
            service: "payment",
            message: format!("unexpected answer listing payments: {e}"),
        })
    }
}

fn unavailable(service: &'static str, e: &reqwest::Error) -> BookingError {
    tracing::warn!(service, error = %e, "upstream call failed");
    BookingError::Unavailable {
        service,
        message: format!("the {service} service is unavailable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_expires_and_is_bounded() {
        let c = TtlCache::new(Duration::from_millis(50), 2);
        c.put("a", 1);
        assert_eq!(c.get("a"), Some(1));
        c.put("b", 2);
        c.put("c", 3); // full: cleared first
        assert_eq!(c.get("a"), None);
        assert_eq!(c.get("c"), Some(3));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get("c"), None);
        let off = TtlCache::new(Duration::ZERO, 2);
        off.put("a", 1);
        assert_eq!(off.get("a"), None);
    }

    #[test]
    fn grpc_codes_map_to_client_codes() {
        assert_eq!(
            cinema_error(&tonic::Status::invalid_argument("x")).code(),
            "BAD_USER_INPUT"
        );
        assert_eq!(
            cinema_error(&tonic::Status::not_found("x")).code(),
            "NOT_FOUND"
        );
        assert_eq!(
            cinema_error(&tonic::Status::unavailable("x")).code(),
            "SERVICE_UNAVAILABLE"
        );
        assert!(outcome_unknown(Code::DeadlineExceeded));
        assert!(!outcome_unknown(Code::FailedPrecondition));
    }
}
