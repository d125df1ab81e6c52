//! HTTP handlers: translate the wire into domain decisions and store calls.
//!
//! Nothing here logs a request body: `payment_details` may carry a card number.

use std::time::Duration;

use axum::{
    Json,
    extract::{FromRequestParts, Path, State},
    http::{HeaderMap, StatusCode, request::Parts},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, Utc};
use moviebook_common::{
    auth::{Authenticated, BOOKING_SERVICE, Claims},
    error::ApiJson,
};
use serde::Serialize;

use crate::{
    AppState,
    domain::{self, Outcome, PaymentRequest, RefundRequest, cents_to_amount},
    error::ApiError,
    events,
    store::{LogEntry, RefundDoc, StoreError, TransactionDoc},
};

/// Attempts at an idempotent write before answering 503: each failed attempt means another
/// request holds the key, and the next attempt normally reads its result.
const MAX_ATTEMPTS: u32 = 12;
pub const IDEMPOTENCY_HEADER: &str = "idempotency-key";

#[derive(Debug, Serialize)]
pub struct LogView {
    pub status: String,
    pub at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<f64>,
}

/// The transaction as clients see it.
#[derive(Debug, Serialize)]
pub struct TransactionView {
    pub transaction_id: String,
    pub booking_id: String,
    pub user_id: String,
    pub amount: f64,
    pub currency: String,
    pub payment_method: String,
    pub status: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_code: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card_last4: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub card_brand: Option<String>,
    pub refunded_amount: f64,
    /// `NONE`, `PARTIALLY_REFUNDED` or `REFUNDED`; `status` keeps the gateway's answer.
    pub refund_status: &'static str,
    pub idempotency_key: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub log: Vec<LogView>,
}

impl From<TransactionDoc> for TransactionView {
    fn from(t: TransactionDoc) -> Self {
        let refund_status = match t.refunded_cents {
            0 => "NONE",
            r if r >= t.amount_cents => "REFUNDED",
            _ => "PARTIALLY_REFUNDED",
        };
        Self {
            transaction_id: t.id,
            booking_id: t.booking_id,
            user_id: t.user_id,
            amount: cents_to_amount(t.amount_cents),
            currency: t.currency,
            payment_method: t.payment_method,
            status: t.status,
            failure_code: t.failure_code,
            failure_reason: t.failure_reason,
            card_last4: t.card_last4,
            card_brand: t.card_brand,
            refunded_amount: cents_to_amount(t.refunded_cents),
            refund_status,
            idempotency_key: t.idempotency_key,
            created_at: t.created_at,
            updated_at: t.updated_at,
            log: t
                .log
                .into_iter()
                .map(|e| LogView {
                    status: e.status,
                    at: e.at,
                    note: e.note,
                    refund_id: e.refund_id,
                    amount: e.amount_cents.map(cents_to_amount),
                })
                .collect(),
        }
    }
}

#[derive(Debug, Serialize)]
pub struct RefundView {
    pub refund_id: String,
    pub transaction_id: String,
    pub booking_id: String,
    pub user_id: String,
    pub amount: f64,
    pub currency: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub status: String,
    pub created_at: DateTime<Utc>,
}

impl From<RefundDoc> for RefundView {
    fn from(r: RefundDoc) -> Self {
        Self {
            refund_id: r.id,
            transaction_id: r.transaction_id,
            booking_id: r.booking_id,
            user_id: r.user_id,
            amount: cents_to_amount(r.amount_cents),
            currency: r.currency,
            reason: r.reason,
            status: r.status,
            created_at: r.created_at,
        }
    }
}

/// The `Idempotency-Key` header, if any: 1 to 255 visible ASCII characters.
pub fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get(IDEMPOTENCY_HEADER) else {
        return Ok(None);
    };
    let v = v
        .to_str()
        .map_err(|_| ApiError::InvalidIdempotencyKey)?
        .trim();
    if v.is_empty() || v.len() > 255 || !v.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::InvalidIdempotencyKey);
    }
    Ok(Some(v.to_owned()))
}

/// A caller that is the booking service itself. Payments and refunds are steps of a booking:
/// the amount is the booking's and money goes back only through `cancelBooking`, so no user
/// token (an admin's included) may write here. Checked before the body is read, so a user
/// gets 403 whatever it sends.
#[derive(Debug, Clone)]
pub struct BookingService(pub Claims);

impl FromRequestParts<AppState> for BookingService {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Authenticated(claims) = Authenticated::from_request_parts(parts, state).await?;
        if claims.is_service_named(BOOKING_SERVICE) {
            Ok(Self(claims))
        } else {
            Err(ApiError::InternalOnly)
        }
    }
}

/// Jittered pause before the next attempt of a contended write.
async fn backoff(attempt: u32) {
    let base = 2u64.saturating_pow(attempt.min(6)).saturating_mul(3);
    let jitter = rand::random::<u64>() % (base + 1);
    tokio::time::sleep(Duration::from_millis(base + jitter)).await;
}

fn created<T: Serialize>(body: T) -> Response {
    (StatusCode::CREATED, Json(body)).into_response()
}

fn replayed<T: Serialize>(body: T) -> Response {
    (StatusCode::OK, Json(body)).into_response()
}

/// `POST /payments` (booking service only): 201 when this request charged, 200 when it
/// replays an earlier one.
pub async fn create_payment(
    State(state): State<AppState>,
    _caller: BookingService,
    headers: HeaderMap,
    ApiJson(req): ApiJson<PaymentRequest>,
) -> Result<Response, ApiError> {
    let payment = domain::validate_payment(&req)?;
    let key = idempotency_key(&headers)?.unwrap_or_else(|| payment.booking_id.clone());
    let fingerprint = payment.fingerprint();
    // Chaos is rolled once per request; whoever wins the key decides the stored outcome.
    let outcome = domain::apply_chaos(
        payment.outcome.clone(),
        state.failure_rate,
        rand::random::<f64>(),
    );
    // Insert first, read only when the key is taken: a new payment costs one write, and a
    // replay one failed insert and one read.
    for attempt in 0..MAX_ATTEMPTS {
        let now = Utc::now();
        let (status, failure_code, failure_reason) = match &outcome {
            Outcome::Approved => ("SUCCESS", None, None),
            Outcome::Declined { code, reason } => (
                "FAILED",
                Some((*code).to_owned()),
                Some((*reason).to_owned()),
            ),
        };
        let tx = TransactionDoc {
            id: uuid::Uuid::new_v4().to_string(),
            idempotency_key: key.clone(),
            fingerprint: fingerprint.clone(),
            booking_id: payment.booking_id.clone(),
            user_id: payment.user_id.clone(),
            amount_cents: payment.amount_cents,
            currency: payment.currency.clone(),
            payment_method: payment.payment_method.clone(),
            status: status.to_owned(),
            failure_code: failure_code.clone(),
            failure_reason,
            card_last4: payment.card.as_ref().map(|c| c.last4.clone()),
            card_brand: payment.card.as_ref().map(|c| c.brand.to_owned()),
            refunded_cents: 0,
            refunds: Vec::new(),
            log: vec![
                LogEntry {
                    status: "PROCESSING".into(),
                    at: now,
                    note: Some("submitted to the simulated gateway".into()),
                    refund_id: None,
                    amount_cents: None,
                },
                LogEntry {
                    status: status.to_owned(),
                    at: Utc::now(),
                    note: failure_code,
                    refund_id: None,
                    amount_cents: None,
                },
            ],
            created_at: now,
            updated_at: now,
        };
        match state
            .store
            .insert_payment(&tx, &events::payment_event(&tx))
            .await
        {
            Ok(()) => {
                tracing::info!(
                    transaction_id = %tx.id, booking_id = %tx.booking_id, status = %tx.status,
                    "payment recorded"
                );
                return Ok(created(TransactionView::from(tx)));
            }
            Err(StoreError::Duplicate | StoreError::Conflict) => {
                if let Some(existing) = state.store.by_key(&payment.user_id, &key).await? {
                    if existing.fingerprint != fingerprint {
                        return Err(ApiError::IdempotencyKeyReused);
                    }
                    return Ok(replayed(TransactionView::from(existing)));
                }
                backoff(attempt).await
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Contention)
}

pub async fn get_payment(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<TransactionView>, ApiError> {
    let tx = state
        .store
        .by_id(&id)
        .await?
        .ok_or(ApiError::TransactionNotFound)?;
    // The booking service reads a transaction back when it reconciles a charge.
    if !claims.may_act_for_or_is(&tx.user_id, BOOKING_SERVICE) {
        return Err(ApiError::Forbidden);
    }
    Ok(Json(tx.into()))
}

/// The transactions of a booking, newest first; a user sees only their own.
pub async fn payments_of_booking(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(booking_id): Path<String>,
) -> Result<Json<Vec<TransactionView>>, ApiError> {
    let all = state.store.by_booking(&booking_id).await?;
    Ok(Json(
        all.into_iter()
            .filter(|t| claims.may_act_for_or_is(&t.user_id, BOOKING_SERVICE))
            .map(TransactionView::from)
            .collect(),
    ))
}

/// `POST /refunds` (booking service only): 201 when this request refunded, 200 when it
/// replays an earlier refund.
pub async fn create_refund(
    State(state): State<AppState>,
    _caller: BookingService,
    headers: HeaderMap,
    ApiJson(req): ApiJson<RefundRequest>,
) -> Result<Response, ApiError> {
    let requested = req.amount.map(domain::amount_to_cents).transpose()?;
    let reason = domain::validate_reason(req.reason.as_deref())?;
    let key = idempotency_key(&headers)?.unwrap_or_else(|| domain::default_refund_key(requested));
    let fingerprint = domain::default_refund_key(requested);
    for attempt in 0..MAX_ATTEMPTS {
        let tx = state
            .store
            .by_id(req.transaction_id.trim())
            .await?
            .ok_or(ApiError::TransactionNotFound)?;
        if let Some(existing) = state.store.refund_by_key(&tx, &key).await? {
            if existing.fingerprint != fingerprint {
                return Err(ApiError::IdempotencyKeyReused);
            }
            return Ok(replayed(RefundView::from(existing)));
        }
        let success = tx.status == "SUCCESS";
        let amount =
            match domain::refund_amount(success, tx.amount_cents, tx.refunded_cents, requested) {
                Ok(a) => a,
                Err(not) => {
                    // "Refund everything" on a fully refunded payment is a retry in all but key:
                    // answer the refund that emptied it.
                    if requested.is_none()
                        && success
                        && tx.refunded_cents >= tx.amount_cents
                        && let Some(last) = state.store.latest_refund(&tx).await?
                    {
                        return Ok(replayed(RefundView::from(last)));
                    }
                    return Err(ApiError::NotRefundable(not));
                }
            };
        let refund = RefundDoc {
            id: uuid::Uuid::new_v4().to_string(),
            transaction_id: tx.id.clone(),
            idempotency_key: key.clone(),
            fingerprint: fingerprint.clone(),
            booking_id: tx.booking_id.clone(),
            user_id: tx.user_id.clone(),
            amount_cents: amount,
            currency: tx.currency.clone(),
            reason: reason.clone(),
            status: "REFUNDED".into(),
            created_at: Utc::now(),
        };
        let full_after = tx.refunded_cents + amount >= tx.amount_cents;
        match state
            .store
            .insert_refund(
                &refund,
                tx.refunded_cents,
                full_after,
                &events::refund_event(&refund),
            )
            .await
        {
            Ok(()) => {
                tracing::info!(
                    refund_id = %refund.id, transaction_id = %refund.transaction_id,
                    amount_cents = refund.amount_cents, "refund recorded"
                );
                return Ok(created(RefundView::from(refund)));
            }
            Err(StoreError::Duplicate | StoreError::Conflict) => backoff(attempt).await,
            Err(e) => return Err(e.into()),
        }
    }
    Err(ApiError::Contention)
}
