//! The GraphQL API: schema (queries and mutations) and the HTTP handlers that serve it.

pub mod loaders;
pub mod subscription;
pub mod types;

use std::{collections::HashMap, sync::Arc};

use async_graphql::{
    Context, ErrorExtensionValues, ID, Object, Result, Schema, dataloader::DataLoader,
};
use axum::{
    Json,
    body::Body,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
};
use moviebook_common::auth::{AuthError, JwtKeys, bearer_token};

use crate::{
    error::{BookingError, gql},
    service::{Booker, Caller},
};
use loaders::ShowtimeLoader;
use types::{BookingResult, BookingView, Cinema, Movie, PaymentResult, Showtime};

pub type BookingSchema = Schema<Query, Mutation, subscription::Subscription>;

/// What every resolver can reach.
#[derive(Clone)]
pub struct AppCtx {
    pub booker: Arc<Booker>,
}

/// How many more seat maps this request may read (`GRAPHQL_MAX_SEAT_MAPS`). Complexity
/// weights cannot bound the calls a list fans out into (a list's length is unknown before it
/// is fetched), so each seat map takes one unit and the request gets `SEAT_MAPS_EXCEEDED`
/// once they are spent, before the call is made.
#[derive(Debug)]
pub struct SeatMapBudget(std::sync::atomic::AtomicUsize);

impl SeatMapBudget {
    pub fn new(max: usize) -> Self {
        Self(std::sync::atomic::AtomicUsize::new(max))
    }

    /// Takes one unit; `false` when none is left.
    pub fn take(&self) -> bool {
        use std::sync::atomic::Ordering;
        self.0
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                left.checked_sub(1)
            })
            .is_ok()
    }
}

/// The caller as seen by this request: anonymous (browsing is public), verified, or holding a
/// token that failed verification (refused as soon as a resolver needs a caller).
#[derive(Debug, Clone)]
pub enum Auth {
    Anonymous,
    Caller(Caller),
    Invalid(AuthError),
}

impl Auth {
    pub fn from_headers(headers: &HeaderMap, keys: &JwtKeys) -> Self {
        match bearer_token(headers) {
            Err(AuthError::Missing) => Self::Anonymous,
            Err(e) => Self::Invalid(e),
            Ok(token) => match keys.verify(token) {
                Ok(claims) => Self::Caller(Caller {
                    claims,
                    token: token.to_owned(),
                }),
                Err(e) => Self::Invalid(e),
            },
        }
    }
}

fn caller<'a>(ctx: &'a Context<'_>) -> Result<&'a Caller> {
    match ctx.data::<Auth>()? {
        Auth::Caller(c) => Ok(c),
        Auth::Anonymous => Err(gql(BookingError::Unauthenticated(AuthError::Missing))),
        Auth::Invalid(e) => Err(gql(BookingError::Unauthenticated(e.clone()))),
    }
}

/// The request's `Idempotency-Key` header, if any (for clients that set it on every POST).
#[derive(Debug, Clone, Default)]
pub struct IdempotencyHeader(pub Option<String>);

fn idempotency_key_of(ctx: &Context<'_>, argument: Option<String>) -> Result<Option<String>> {
    let header = ctx
        .data_opt::<IdempotencyHeader>()
        .and_then(|h| h.0.as_deref());
    crate::idempotency::choose_key(argument.as_deref(), header).map_err(|e| gql(e.into()))
}

/// Spends one of the caller's booking mutations ([`crate::limits`]): `RATE_LIMITED` past them.
fn spend_mutation(ctx: &Context<'_>, c: &Caller) -> Result<()> {
    ctx.data::<crate::limits::UserLimiter>()?
        .check(&c.claims)
        .map_err(gql)
}

fn booker<'a>(ctx: &'a Context<'_>) -> Result<&'a Booker> {
    Ok(&ctx.data::<AppCtx>()?.booker)
}

pub struct Query;

#[Object]
impl Query {
    /// Movies with their upcoming showtimes (and each showtime's cinema) in one gRPC call.
    #[graphql(complexity = "limit.unwrap_or(20).clamp(1, 100) as usize * child_complexity")]
    async fn movies(
        &self,
        ctx: &Context<'_>,
        genre: Option<String>,
        limit: Option<i32>,
        offset: Option<i32>,
    ) -> Result<Vec<Movie>> {
        let limit = limit.unwrap_or(20);
        let offset = offset.unwrap_or(0);
        if !(1..=100).contains(&limit) || offset < 0 {
            return Err(gql(BookingError::BadInput(
                "limit must be 1..=100 and offset >= 0".into(),
            )));
        }
        let resp = booker(ctx)?
            .cinema
            .list_movies(genre, limit, offset)
            .await
            .map_err(gql)?;
        let cinemas: HashMap<String, Arc<_>> = resp
            .cinemas
            .into_iter()
            .map(|c| (c.id.clone(), Arc::new(c)))
            .collect();
        Ok(resp
            .movies
            .into_iter()
            .filter_map(|m| {
                let info = Arc::new(m.movie?);
                let showtimes = m
                    .showtimes
                    .into_iter()
                    .map(|s| Showtime {
                        cinema: cinemas.get(&s.cinema_id).cloned(),
                        movie: Some(info.clone()),
                        info: Arc::new(s),
                    })
                    .collect();
                Some(Movie { info, showtimes })
            })
            .collect())
    }

    async fn cinemas(&self, ctx: &Context<'_>) -> Result<Vec<Cinema>> {
        let list = booker(ctx)?.cinema.list_cinemas().await.map_err(gql)?;
        Ok(list.into_iter().map(|c| Cinema(Arc::new(c))).collect())
    }

    /// One showtime with its movie, cinema and (on request) seat map.
    async fn showtime(&self, ctx: &Context<'_>, id: ID) -> Result<Option<Showtime>> {
        let id = crate::domain::parse_id("id", &id).map_err(|e| gql(e.into()))?;
        ctx.data::<DataLoader<ShowtimeLoader>>()?.load_one(id).await
    }

    /// The Ed25519 public key (base64url, RFC 8037) that verifies `Booking.ticket`.
    async fn ticket_verification_key(&self, ctx: &Context<'_>) -> Result<String> {
        Ok(ctx.data::<crate::ticket::TicketSigner>()?.public_key())
    }

    async fn get_booking(&self, ctx: &Context<'_>, booking_id: ID) -> Result<BookingView> {
        let c = caller(ctx)?;
        booker(ctx)?
            .booking_for(c, &booking_id)
            .await
            .map(BookingView)
            .map_err(gql)
    }

    /// The caller's bookings, newest first.
    async fn my_bookings(&self, ctx: &Context<'_>) -> Result<Vec<BookingView>> {
        let c = caller(ctx)?;
        let list = booker(ctx)?
            .user_bookings(c, &c.claims.sub)
            .await
            .map_err(gql)?;
        Ok(list.into_iter().map(BookingView).collect())
    }

    /// A user's bookings (the user themself, or an admin). Kept for existing clients.
    async fn get_user_bookings(&self, ctx: &Context<'_>, user_id: ID) -> Result<Vec<BookingView>> {
        let c = caller(ctx)?;
        let list = booker(ctx)?.user_bookings(c, &user_id).await.map_err(gql)?;
        Ok(list.into_iter().map(BookingView).collect())
    }
}

pub struct Mutation;

#[Object]
impl Mutation {
    /// Holds the seats and creates a PENDING_PAYMENT booking. `idempotencyKey` (or the
    /// `Idempotency-Key` header): a retry with the same key answers the same booking.
    async fn create_booking(
        &self,
        ctx: &Context<'_>,
        user_id: ID,
        showtime_id: ID,
        seat_numbers: Vec<String>,
        idempotency_key: Option<String>,
    ) -> Result<BookingResult> {
        let c = caller(ctx)?;
        spend_mutation(ctx, c)?;
        let key = idempotency_key_of(ctx, idempotency_key)?;
        let booking = booker(ctx)?
            .create_booking(c, &user_id, &showtime_id, &seat_numbers, key)
            .await
            .map_err(gql)?;
        Ok(BookingResult {
            success: true,
            message: format!(
                "{} seat(s) held until {}; pay to confirm",
                booking.seats.len(),
                booking.hold_expires_at.to_chrono().to_rfc3339()
            ),
            lock_id: Some(booking.lock_id.clone()),
            booking: Some(booking),
        })
    }

    /// Charges the booking (its own amount) and confirms its seats. `idempotencyKey` (or the
    /// `Idempotency-Key` header): a retry with the same key answers what the first one did.
    async fn process_payment(
        &self,
        ctx: &Context<'_>,
        booking_id: ID,
        payment_method: String,
        payment_details: Option<String>,
        idempotency_key: Option<String>,
    ) -> Result<PaymentResult> {
        let c = caller(ctx)?;
        spend_mutation(ctx, c)?;
        let key = idempotency_key_of(ctx, idempotency_key)?;
        let booking = booker(ctx)?
            .process_payment(
                c,
                &booking_id,
                &payment_method,
                payment_details.as_deref(),
                key,
            )
            .await
            .map_err(gql)?;
        Ok(PaymentResult {
            success: true,
            message: "payment accepted; booking confirmed".into(),
            transaction_id: booking.transaction_id.clone(),
            booking: Some(booking),
        })
    }

    /// Cancels a booking: releases a hold, or refunds a confirmed booking and returns its seats.
    async fn cancel_booking(&self, ctx: &Context<'_>, booking_id: ID) -> Result<BookingResult> {
        let c = caller(ctx)?;
        spend_mutation(ctx, c)?;
        let booking = booker(ctx)?
            .cancel_booking(c, &booking_id)
            .await
            .map_err(gql)?;
        Ok(BookingResult {
            success: true,
            message: if booking.refund_id.is_some() {
                "booking cancelled; the payment was refunded".into()
            } else {
                "booking cancelled; the seats were released".into()
            },
            lock_id: Some(booking.lock_id.clone()),
            booking: Some(booking),
        })
    }
}

pub fn schema(
    booker: Arc<Booker>,
    feed: Arc<crate::live::SeatFeed>,
    max_depth: usize,
    max_complexity: usize,
) -> BookingSchema {
    Schema::build(Query, Mutation, subscription::Subscription)
        .data(crate::ticket::TicketSigner::new(
            booker.config.ticket_seed,
            &booker.config.jwt_secret,
        ))
        .data(crate::limits::UserLimiter::new(
            booker.config.user_mutations_per_minute,
        ))
        .data(AppCtx { booker })
        .data(feed)
        .extension(subscription::SocketRules)
        .limit_depth(max_depth)
        .limit_complexity(max_complexity)
        .limit_recursive_depth(32)
        .limit_directives(16)
        .finish()
}

/// State of the GraphQL handlers.
#[derive(Clone)]
pub struct GraphqlState {
    pub schema: BookingSchema,
    pub booker: Arc<Booker>,
    pub max_body_bytes: usize,
}

/// A request-level error in GraphQL's response shape, with a code.
fn request_error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = serde_json::json!({
        "data": null,
        "errors": [{ "message": message.into(), "extensions": { "code": code } }],
    });
    (status, Json(body)).into_response()
}

/// POST /graphql. The body is read with a size limit and parsed here, so that a malformed or
/// oversized request is a 4xx with a code rather than the library's plain-text rejection.
pub async fn graphql(
    State(state): State<GraphqlState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match axum::body::to_bytes(body, state.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            let mut r = request_error(
                StatusCode::PAYLOAD_TOO_LARGE,
                "PAYLOAD_TOO_LARGE",
                format!("request body exceeds {} bytes", state.max_body_bytes),
            );
            // The rest of the body is never read, so the connection is dropped: say so, or a
            // client's pool reuses a closed socket (see `moviebook_common::error::payload_too_large`).
            r.headers_mut().insert(
                axum::http::header::CONNECTION,
                axum::http::HeaderValue::from_static("close"),
            );
            return r;
        }
    };
    let request: async_graphql::Request = match serde_json::from_slice(&bytes) {
        Ok(r) => r,
        Err(e) => {
            return request_error(
                StatusCode::BAD_REQUEST,
                "BAD_REQUEST",
                format!(
                    "the body must be a JSON GraphQL request {{query, variables?, operationName?}}: {e}"
                ),
            );
        }
    };
    let auth = Auth::from_headers(&headers, state.booker.keys.as_ref());
    let loader = DataLoader::new(
        ShowtimeLoader {
            cinema: state.booker.cinema.clone(),
        },
        tokio::spawn,
    );
    // A header that is not text is passed on as such, so the resolver refuses it as input.
    let key = headers
        .get(crate::idempotency::HEADER)
        .map(|v| v.to_str().unwrap_or("\u{0}").to_owned());
    let mut response = state
        .schema
        .execute(
            request
                .data(auth)
                .data(loader)
                .data(IdempotencyHeader(key))
                .data(SeatMapBudget::new(state.booker.config.max_seat_maps)),
        )
        .await;
    let executed = !matches!(response.data, async_graphql::Value::Null)
        || response.errors.iter().any(|e| !e.path.is_empty());
    for error in &mut response.errors {
        let ext = error
            .extensions
            .get_or_insert_with(ErrorExtensionValues::default);
        if ext.get("code").is_none() {
            let code = if error.message.starts_with("Query is too complex")
                || error.message.starts_with("Query is nested too deep")
            {
                "QUERY_TOO_COMPLEX"
            } else if executed {
                "INTERNAL"
            } else {
                "GRAPHQL_VALIDATION_FAILED"
            };
            ext.set("code", code);
        }
    }
    Json(response).into_response()
}

#[cfg(test)]
mod tests {
    use super::SeatMapBudget;

    #[test]
    fn the_seat_map_budget_runs_out_and_stays_out() {
        let b = SeatMapBudget::new(2);
        assert!(b.take());
        assert!(b.take());
        assert!(!b.take());
        assert!(!b.take());
        assert!(!SeatMapBudget::new(0).take());
    }
}
