//! The gRPC contract (proto/cinema.proto): translates messages into store calls and back.
//!
//! Bad input answers INVALID_ARGUMENT, unknown ids NOT_FOUND, each with a message. A request
//! that is valid but cannot be granted (seats taken, hold expired, another booking's lock)
//! answers OK with `success: false` and a message, as the contract's response fields intend.

use std::{
    collections::{BTreeMap, HashMap},
    task::{Context, Poll},
    time::Instant,
};

use chrono::{DateTime, TimeZone, Utc};
use moviebook_common::{ops, proto};
use proto::cinema_service_server::CinemaService;
use sqlx::PgPool;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use crate::{
    availability::{LiveSeat, Lookup, SeatBoards, live},
    domain::{self, cents_to_price},
    error::Error,
    store::{self, HoldChange, LockOutcome},
};

/// The gRPC service over the pool.
#[derive(Clone)]
pub struct Grpc {
    pool: PgPool,
    /// What CheckSeatAvailability answers from when it can (see [`crate::availability`]).
    boards: SeatBoards,
}

impl Grpc {
    pub fn new(pool: PgPool, boards: SeatBoards) -> Self {
        Self { pool, boards }
    }

    /// CheckSeatAvailability's seats from a fresh board, or `None` (then PostgreSQL is asked,
    /// and a miss starts loading the board for the next calls).
    fn seats_from_board(&self, showtime_id: Uuid, seats: &[String]) -> Option<Vec<SeatView>> {
        match self.boards.lookup(showtime_id) {
            Lookup::Hit(board) => {
                let now = Utc::now();
                let found = board.get(seats)?;
                Some(
                    found
                        .into_iter()
                        .map(|(number, seat)| SeatView::of_live(number, &live(seat, now)))
                        .collect(),
                )
            }
            Lookup::Miss { load } => {
                if let Some(ticket) = load {
                    tokio::spawn(
                        self.boards
                            .clone()
                            .load(self.pool.clone(), showtime_id, ticket),
                    );
                }
                None
            }
        }
    }
}

/// A seat as CheckSeatAvailability reports it, from a board or from PostgreSQL.
struct SeatView {
    seat_number: String,
    status: String,
    locked_by: Option<String>,
    locked_until: Option<DateTime<Utc>>,
}

impl SeatView {
    fn of_live(number: &str, seat: &LiveSeat<'_>) -> Self {
        Self {
            seat_number: number.to_owned(),
            status: seat.status.to_owned(),
            locked_by: seat.locked_by.map(str::to_owned),
            locked_until: seat.locked_until,
        }
    }

    fn of_row(row: store::Seat) -> Self {
        Self {
            seat_number: row.seat_number,
            status: row.status,
            locked_by: row.booking_id,
            locked_until: row.locked_until,
        }
    }
}

/// How many showtimes BatchGetShowtimes accepts at once.
const MAX_BATCH: usize = 500;

fn seat_status(s: &str) -> proto::SeatStatus {
    match s {
        "LOCKED" => proto::SeatStatus::Locked,
        "BOOKED" => proto::SeatStatus::Booked,
        "MAINTENANCE" => proto::SeatStatus::Maintenance,
        _ => proto::SeatStatus::Available,
    }
}

fn showtime_info(s: &store::Showtime) -> proto::ShowtimeInfo {
    proto::ShowtimeInfo {
        id: s.id.to_string(),
        movie_id: s.movie_id.to_string(),
        cinema_id: s.cinema_id.to_string(),
        start_time: s.start_time.timestamp(),
        end_time: s.end_time.timestamp(),
        base_price: cents_to_price(s.base_price_cents),
        total_seats: s.total_seats,
        available_seats: i32::try_from(s.available_seats).unwrap_or(i32::MAX),
        screen_id: s.screen_id.to_string(),
        screen_name: s.screen_name.clone(),
    }
}

fn movie_info(m: &store::Movie) -> proto::MovieInfo {
    proto::MovieInfo {
        id: m.id.to_string(),
        title: m.title.clone(),
        genre: m.genre.clone(),
        duration_minutes: m.duration_minutes,
        rating: m.rating.clone(),
        poster_url: m.poster_url.clone(),
        description: m.description.clone(),
        release_date: m.release_date.map(|d| d.to_string()).unwrap_or_default(),
    }
}

fn cinema_info(c: &store::Cinema) -> proto::CinemaInfo {
    proto::CinemaInfo {
        id: c.id.to_string(),
        name: c.name.clone(),
        location: c.location.clone(),
        total_screens: i32::try_from(c.total_screens).unwrap_or(i32::MAX),
    }
}

fn unix(t: i64, field: &str) -> Result<DateTime<Utc>, Error> {
    Utc.timestamp_opt(t, 0)
        .single()
        .ok_or_else(|| Error::invalid(format!("{field} is out of range")))
}

/// Showtimes with their movies and cinemas, loaded with one query each.
async fn details(
    pool: &PgPool,
    showtimes: Vec<store::Showtime>,
) -> Result<Vec<proto::GetShowtimeDetailsResponse>, Error> {
    let movie_ids: Vec<Uuid> = showtimes.iter().map(|s| s.movie_id).collect();
    let cinema_ids: Vec<Uuid> = showtimes.iter().map(|s| s.cinema_id).collect();
    let movies: HashMap<Uuid, store::Movie> = store::movies_by_ids(pool, &movie_ids)
        .await?
        .into_iter()
        .map(|m| (m.id, m))
        .collect();
    let cinemas: HashMap<Uuid, store::Cinema> = store::cinemas_by_ids(pool, &cinema_ids)
        .await?
        .into_iter()
        .map(|c| (c.id, c))
        .collect();
    Ok(showtimes
        .iter()
        .map(|s| proto::GetShowtimeDetailsResponse {
            showtime: Some(showtime_info(s)),
            movie: movies.get(&s.movie_id).map(movie_info),
            cinema: cinemas.get(&s.cinema_id).map(cinema_info),
        })
        .collect())
}

#[tonic::async_trait]
impl CinemaService for Grpc {
    async fn check_seat_availability(
        &self,
        request: Request<proto::CheckSeatAvailabilityRequest>,
    ) -> Result<Response<proto::CheckSeatAvailabilityResponse>, Status> {
        let req = request.into_inner();
        let showtime_id = domain::parse_id("showtime_id", &req.showtime_id)?;
        let seats = domain::seat_list(&req.seat_numbers)?;
        let views = match self.seats_from_board(showtime_id, &seats) {
            Some(views) => views,
            None => {
                let rows = store::seats(&self.pool, showtime_id, Some(&seats)).await?;
                if rows.len() != seats.len() {
                    let found: Vec<String> = rows.iter().map(|r| r.seat_number.clone()).collect();
                    let missing = domain::missing(&seats, &found);
                    return Err(store::explain_missing(&self.pool, showtime_id, &missing)
                        .await
                        .into());
                }
                rows.into_iter().map(SeatView::of_row).collect()
            }
        };
        let unavailable: Vec<proto::SeatInfo> = views
            .into_iter()
            .filter(|r| r.status != "AVAILABLE")
            .map(|r| proto::SeatInfo {
                status: seat_status(&r.status) as i32,
                seat_number: r.seat_number,
                locked_by: r.locked_by.unwrap_or_default(),
                locked_until: r.locked_until.map(|t| t.timestamp()).unwrap_or_default(),
            })
            .collect();
        let available = unavailable.is_empty();
        let message = if available {
            format!("all {} seats are available", seats.len())
        } else {
            format!(
                "{} of {} seats are not available",
                unavailable.len(),
                seats.len()
            )
        };
        Ok(Response::new(proto::CheckSeatAvailabilityResponse {
            available,
            unavailable_seats: unavailable,
            message,
        }))
    }

    async fn lock_seats(
        &self,
        request: Request<proto::LockSeatsRequest>,
    ) -> Result<Response<proto::LockSeatsResponse>, Status> {
        let req = request.into_inner();
        let showtime_id = domain::parse_id("showtime_id", &req.showtime_id)?;
        let seats = domain::seat_list(&req.seat_numbers)?;
        let booking_id = domain::booking_id(&req.booking_id)?;
        let secs = domain::lock_seconds(req.lock_duration_seconds)?;
        let outcome = store::lock_seats(&self.pool, showtime_id, &seats, &booking_id, secs).await;
        // After the write (whatever its outcome): a board read before it is now old.
        self.boards.forget_showtime(showtime_id);
        let outcome = outcome?;
        Ok(Response::new(match outcome {
            LockOutcome::Locked(hold) => {
                let total: i64 = hold.seats.iter().map(|(_, _, p)| p).sum();
                let message = if hold.confirmed {
                    "these seats are already confirmed for this booking".to_owned()
                } else if hold.replayed {
                    format!("{} seats already held for this booking", hold.seats.len())
                } else {
                    format!("{} seats held", hold.seats.len())
                };
                proto::LockSeatsResponse {
                    success: true,
                    lock_id: hold.lock_id.to_string(),
                    expires_at: hold.expires_at.timestamp(),
                    failed_seats: vec![],
                    message,
                    seat_prices: hold
                        .seats
                        .iter()
                        .map(|(n, t, p)| proto::SeatPrice {
                            seat_number: n.clone(),
                            seat_type: t.clone(),
                            price: cents_to_price(*p),
                        })
                        .collect(),
                    total_price: cents_to_price(total),
                }
            }
            LockOutcome::Unavailable { failed } => proto::LockSeatsResponse {
                success: false,
                message: format!("seats not available: {}", failed.join(", ")),
                failed_seats: failed,
                ..Default::default()
            },
        }))
    }

    async fn release_seat_lock(
        &self,
        request: Request<proto::ReleaseSeatLockRequest>,
    ) -> Result<Response<proto::ReleaseSeatLockResponse>, Status> {
        let req = request.into_inner();
        let lock_id = domain::parse_id("lock_id", &req.lock_id)?;
        let booking_id = domain::booking_id(&req.booking_id)?;
        let released = store::release_lock(&self.pool, lock_id, &booking_id).await;
        self.boards.forget_booking(&booking_id);
        let (success, message) = match released? {
            HoldChange::Done(seats) => (true, format!("released {} seats", seats.len())),
            HoldChange::AlreadyDone(_) => (true, "the hold was already released".to_owned()),
            HoldChange::Refused(why) => (false, why),
        };
        Ok(Response::new(proto::ReleaseSeatLockResponse {
            success,
            message,
        }))
    }

    async fn confirm_seat_booking(
        &self,
        request: Request<proto::ConfirmSeatBookingRequest>,
    ) -> Result<Response<proto::ConfirmSeatBookingResponse>, Status> {
        let req = request.into_inner();
        let lock_id = domain::parse_id("lock_id", &req.lock_id)?;
        let booking_id = domain::booking_id(&req.booking_id)?;
        let user_id = domain::required_text("user_id", &req.user_id, domain::MAX_BOOKING_ID_LEN)?;
        let confirmed = store::confirm_lock(&self.pool, lock_id, &booking_id, &user_id).await;
        self.boards.forget_booking(&booking_id);
        let resp = match confirmed? {
            HoldChange::Done(seats) => proto::ConfirmSeatBookingResponse {
                success: true,
                message: format!("{} seats confirmed", seats.len()),
                confirmed_seats: seats,
            },
            HoldChange::AlreadyDone(seats) => proto::ConfirmSeatBookingResponse {
                success: true,
                message: "already confirmed".to_owned(),
                confirmed_seats: seats,
            },
            HoldChange::Refused(why) => proto::ConfirmSeatBookingResponse {
                success: false,
                message: why,
                confirmed_seats: vec![],
            },
        };
        Ok(Response::new(resp))
    }

    async fn get_showtime_details(
        &self,
        request: Request<proto::GetShowtimeDetailsRequest>,
    ) -> Result<Response<proto::GetShowtimeDetailsResponse>, Status> {
        let id = domain::parse_id("showtime_id", &request.get_ref().showtime_id)?;
        let showtime = store::get_showtime(&self.pool, id).await?;
        let mut out = details(&self.pool, vec![showtime]).await?;
        let first = out
            .pop()
            .ok_or_else(|| Error::not_found(format!("showtime {id} not found")))?;
        Ok(Response::new(first))
    }

    async fn list_movies(
        &self,
        request: Request<proto::ListMoviesRequest>,
    ) -> Result<Response<proto::ListMoviesResponse>, Status> {
        let req = request.into_inner();
        let limit = if req.limit == 0 {
            50
        } else {
            i64::from(req.limit)
        };
        let (limit, offset) = domain::page(Some(limit), Some(i64::from(req.offset)))?;
        let from = if req.showtimes_from == 0 {
            Utc::now()
        } else {
            unix(req.showtimes_from, "showtimes_from")?
        };
        let until = match req.showtimes_until {
            0 => None,
            t => Some(unix(t, "showtimes_until")?),
        };
        let genre = Some(req.genre.trim()).filter(|g| !g.is_empty());
        let movies = store::list_movies(&self.pool, genre, limit, offset)
            .await?
            .items;
        let ids: Vec<Uuid> = movies.iter().map(|m| m.id).collect();
        let showtimes = store::showtimes_of_movies(&self.pool, &ids, from, until).await?;
        let cinema_ids: Vec<Uuid> = showtimes.iter().map(|s| s.cinema_id).collect();
        let cinemas = store::cinemas_by_ids(&self.pool, &cinema_ids).await?;
        let mut by_movie: BTreeMap<Uuid, Vec<proto::ShowtimeInfo>> = BTreeMap::new();
        for s in &showtimes {
            by_movie
                .entry(s.movie_id)
                .or_default()
                .push(showtime_info(s));
        }
        Ok(Response::new(proto::ListMoviesResponse {
            movies: movies
                .iter()
                .map(|m| proto::MovieWithShowtimes {
                    movie: Some(movie_info(m)),
                    showtimes: by_movie.remove(&m.id).unwrap_or_default(),
                })
                .collect(),
            cinemas: cinemas.iter().map(cinema_info).collect(),
        }))
    }

    async fn list_cinemas(
        &self,
        _request: Request<proto::ListCinemasRequest>,
    ) -> Result<Response<proto::ListCinemasResponse>, Status> {
        let mut cinemas = Vec::new();
        let mut offset = 0;
        loop {
            let page = store::list_cinemas(&self.pool, 100, offset).await?;
            let n = page.items.len() as i64;
            cinemas.extend(page.items.iter().map(cinema_info));
            offset += n;
            if n < 100 {
                break;
            }
        }
        Ok(Response::new(proto::ListCinemasResponse { cinemas }))
    }

    async fn batch_get_showtimes(
        &self,
        request: Request<proto::BatchGetShowtimesRequest>,
    ) -> Result<Response<proto::BatchGetShowtimesResponse>, Status> {
        let req = request.into_inner();
        if req.showtime_ids.len() > MAX_BATCH {
            return Err(
                Error::invalid(format!("at most {MAX_BATCH} showtime ids per call")).into(),
            );
        }
        let ids = req
            .showtime_ids
            .iter()
            .map(|id| domain::parse_id("showtime_ids", id))
            .collect::<Result<Vec<_>, _>>()?;
        let showtimes = store::showtimes_by_ids(&self.pool, &ids).await?;
        Ok(Response::new(proto::BatchGetShowtimesResponse {
            showtimes: details(&self.pool, showtimes).await?,
        }))
    }

    async fn get_seat_map(
        &self,
        request: Request<proto::GetSeatMapRequest>,
    ) -> Result<Response<proto::GetSeatMapResponse>, Status> {
        let id = domain::parse_id("showtime_id", &request.get_ref().showtime_id)?;
        let showtime = store::get_showtime(&self.pool, id).await?;
        let seats = store::seats(&self.pool, id, None).await?;
        Ok(Response::new(proto::GetSeatMapResponse {
            showtime: Some(showtime_info(&showtime)),
            seats: seats
                .iter()
                .map(|s| proto::SeatMapSeat {
                    seat_number: s.seat_number.clone(),
                    row: s.row_label.clone(),
                    number: s.seat_col,
                    seat_type: s.seat_type.clone(),
                    price: cents_to_price(s.price_cents),
                    status: seat_status(&s.status) as i32,
                })
                .collect(),
        }))
    }

    async fn release_booked_seats(
        &self,
        request: Request<proto::ReleaseBookedSeatsRequest>,
    ) -> Result<Response<proto::ReleaseBookedSeatsResponse>, Status> {
        let req = request.into_inner();
        let booking_id = domain::booking_id(&req.booking_id)?;
        let showtime_id = match req.showtime_id.trim() {
            "" => None,
            s => Some(domain::parse_id("showtime_id", s)?),
        };
        let released = store::release_booked(&self.pool, &booking_id, showtime_id).await;
        self.boards.forget_booking(&booking_id);
        if let Some(showtime_id) = showtime_id {
            self.boards.forget_showtime(showtime_id);
        }
        let resp = match released? {
            HoldChange::Done(seats) => proto::ReleaseBookedSeatsResponse {
                success: true,
                message: format!("{} seats returned to sale", seats.len()),
                released_seats: seats,
            },
            HoldChange::AlreadyDone(seats) => proto::ReleaseBookedSeatsResponse {
                success: true,
                message: "the seats were already released".to_owned(),
                released_seats: seats,
            },
            HoldChange::Refused(why) => proto::ReleaseBookedSeatsResponse {
                success: false,
                message: why,
                released_seats: vec![],
            },
        };
        Ok(Response::new(resp))
    }
}

/// The route label of a gRPC path: our methods by name, anything else as one label so a
/// scanner cannot blow up the metric's label set.
fn metric_route(path: &str) -> String {
    match path.strip_prefix("/cinema.CinemaService/") {
        Some(m) if !m.is_empty() && m.len() <= 40 && m.bytes().all(|b| b.is_ascii_alphabetic()) => {
            path.to_owned()
        }
        _ => "unmatched".to_owned(),
    }
}

/// A tower layer recording every gRPC call in the shared request metrics
/// (`http_requests_total{protocol="grpc", route="/cinema.CinemaService/LockSeats", status="0"}`).
#[derive(Debug, Clone, Copy, Default)]
pub struct MetricsLayer;

impl<S> tower::Layer<S> for MetricsLayer {
    type Service = MetricsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        MetricsService { inner }
    }
}

#[derive(Debug, Clone)]
pub struct MetricsService<S> {
    inner: S,
}

impl<S, B, RB> tower::Service<http::Request<B>> for MetricsService<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<RB>> + Send,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = futures::future::BoxFuture<'static, Result<Self::Response, Self::Error>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let route = metric_route(req.uri().path());
        let start = Instant::now();
        let fut = self.inner.call(req);
        Box::pin(async move {
            let result = fut.await;
            // Errors answer "trailers-only" with grpc-status in the headers; a success carries
            // it in the trailers, so its absence here means OK.
            let status = match &result {
                Ok(resp) => resp
                    .headers()
                    .get("grpc-status")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("0")
                    .to_owned(),
                Err(_) => "transport_error".to_owned(),
            };
            ops::record_request("grpc", "POST", &route, &status, start.elapsed());
            result
        })
    }
}
