//! GraphQL object types: thin views over the gRPC messages and the stored booking.

use std::sync::Arc;

use async_graphql::{
    ComplexObject, Context, Enum, ErrorExtensions, ID, Object, Result, SimpleObject,
};
use chrono::{DateTime, Utc};
use moviebook_common::proto::{self, CinemaInfo, MovieInfo, SeatMapSeat, ShowtimeInfo};

use crate::{
    domain::BookingStatus,
    error::gql,
    graphql::{AppCtx, loaders::ShowtimeLoader},
    store::Booking,
};

fn unix(secs: i64) -> Option<DateTime<Utc>> {
    (secs > 0)
        .then(|| DateTime::from_timestamp(secs, 0))
        .flatten()
}

fn bson_time(t: bson::DateTime) -> DateTime<Utc> {
    t.to_chrono()
}

#[derive(Clone)]
pub struct Movie {
    pub info: Arc<MovieInfo>,
    pub showtimes: Vec<Showtime>,
}

#[Object]
impl Movie {
    async fn id(&self) -> ID {
        ID(self.info.id.clone())
    }
    async fn title(&self) -> &str {
        &self.info.title
    }
    async fn genre(&self) -> &str {
        &self.info.genre
    }
    /// Duration in minutes.
    async fn duration(&self) -> i32 {
        self.info.duration_minutes
    }
    async fn rating(&self) -> &str {
        &self.info.rating
    }
    async fn poster_url(&self) -> &str {
        &self.info.poster_url
    }
    async fn description(&self) -> &str {
        &self.info.description
    }
    async fn release_date(&self) -> &str {
        &self.info.release_date
    }
    /// Upcoming showtimes (filled under `movies`; empty when the movie is reached from a
    /// showtime).
    async fn showtimes(&self) -> &[Showtime] {
        &self.showtimes
    }
}

#[derive(Clone)]
pub struct Cinema(pub Arc<CinemaInfo>);

#[Object]
impl Cinema {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn name(&self) -> &str {
        &self.0.name
    }
    async fn location(&self) -> &str {
        &self.0.location
    }
    async fn total_screens(&self) -> i32 {
        self.0.total_screens
    }
}

#[derive(Clone)]
pub struct Showtime {
    pub info: Arc<ShowtimeInfo>,
    pub cinema: Option<Arc<CinemaInfo>>,
    pub movie: Option<Arc<MovieInfo>>,
}

impl Showtime {
    pub fn from_details(d: proto::GetShowtimeDetailsResponse) -> Option<Self> {
        Some(Self {
            info: Arc::new(d.showtime?),
            cinema: d.cinema.map(Arc::new),
            movie: d.movie.map(Arc::new),
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Enum)]
pub enum SeatStatus {
    Available,
    Locked,
    Booked,
    Maintenance,
}

impl From<i32> for SeatStatus {
    fn from(v: i32) -> Self {
        match proto::SeatStatus::try_from(v) {
            Ok(proto::SeatStatus::Available) => Self::Available,
            Ok(proto::SeatStatus::Locked) => Self::Locked,
            Ok(proto::SeatStatus::Booked) => Self::Booked,
            _ => Self::Maintenance,
        }
    }
}

#[derive(SimpleObject)]
pub struct Seat {
    pub seat_number: String,
    pub row: String,
    pub number: i32,
    pub seat_type: String,
    pub price: f64,
    pub status: SeatStatus,
}

impl From<SeatMapSeat> for Seat {
    fn from(s: SeatMapSeat) -> Self {
        Self {
            status: s.status.into(),
            seat_number: s.seat_number,
            row: s.row,
            number: s.number,
            seat_type: s.seat_type,
            price: s.price,
        }
    }
}

#[Object]
impl Showtime {
    async fn id(&self) -> ID {
        ID(self.info.id.clone())
    }
    async fn movie_id(&self) -> &str {
        &self.info.movie_id
    }
    async fn cinema_id(&self) -> &str {
        &self.info.cinema_id
    }
    async fn start_time(&self) -> Option<DateTime<Utc>> {
        unix(self.info.start_time)
    }
    async fn end_time(&self) -> Option<DateTime<Utc>> {
        unix(self.info.end_time)
    }
    async fn base_price(&self) -> f64 {
        self.info.base_price
    }
    async fn total_seats(&self) -> i32 {
        self.info.total_seats
    }
    async fn available_seats(&self) -> i32 {
        self.info.available_seats
    }
    async fn screen_name(&self) -> &str {
        &self.info.screen_name
    }
    async fn cinema(&self) -> Option<Cinema> {
        self.cinema.clone().map(Cinema)
    }
    async fn movie(&self) -> Option<Movie> {
        self.movie.clone().map(|info| Movie {
            info,
            showtimes: vec![],
        })
    }
    /// The seat map with each seat's live status. One gRPC call per showtime, so it is
    /// expensive in the complexity budget and a request may read only a few
    /// (`SEAT_MAPS_EXCEEDED` after that): ask for it on `showtime(id)`, not across lists.
    #[graphql(complexity = 50)]
    async fn seats(&self, ctx: &Context<'_>) -> Result<Vec<Seat>> {
        let app = ctx.data::<AppCtx>()?;
        if !ctx.data::<super::SeatMapBudget>()?.take() {
            return Err(async_graphql::Error::new(format!(
                "a request may read {} seat maps at most; ask for seats on showtime(id)",
                app.booker.config.max_seat_maps
            ))
            .extend_with(|_, e| e.set("code", "SEAT_MAPS_EXCEEDED")));
        }
        let map = app
            .booker
            .cinema
            .seat_map(&self.info.id)
            .await
            .map_err(gql)?;
        Ok(map.seats.into_iter().map(Seat::from).collect())
    }
}

#[derive(Clone)]
pub struct BookingView(pub Booking);

#[Object(name = "Booking")]
impl BookingView {
    async fn id(&self) -> ID {
        ID(self.0.id.clone())
    }
    async fn user_id(&self) -> &str {
        &self.0.user_id
    }
    async fn showtime_id(&self) -> &str {
        &self.0.showtime_id
    }
    async fn seats(&self) -> &[String] {
        &self.0.seats
    }
    async fn total_amount(&self) -> f64 {
        self.0.total_amount
    }
    async fn currency(&self) -> &str {
        &self.0.currency
    }
    async fn status(&self) -> BookingStatus {
        self.0.status
    }
    async fn lock_id(&self) -> &str {
        &self.0.lock_id
    }
    async fn movie_title(&self) -> &str {
        &self.0.movie_title
    }
    async fn cinema_name(&self) -> &str {
        &self.0.cinema_name
    }
    /// When the seat hold lapses if the booking is not paid.
    async fn hold_expires_at(&self) -> DateTime<Utc> {
        bson_time(self.0.hold_expires_at)
    }
    async fn transaction_id(&self) -> Option<&str> {
        self.0.transaction_id.as_deref()
    }
    async fn failure_reason(&self) -> Option<&str> {
        self.0.failure_reason.as_deref()
    }
    async fn created_at(&self) -> DateTime<Utc> {
        bson_time(self.0.created_at)
    }
    async fn updated_at(&self) -> DateTime<Utc> {
        bson_time(self.0.updated_at)
    }
    async fn confirmed_at(&self) -> Option<DateTime<Utc>> {
        self.0.confirmed_at.map(bson_time)
    }
    /// The signed ticket (a compact EdDSA JWS; see `ticketVerificationKey`) the confirmation
    /// page shows as a QR code; only for a CONFIRMED booking.
    async fn ticket(&self, ctx: &Context<'_>) -> Result<Option<String>> {
        if self.0.status != crate::domain::BookingStatus::Confirmed {
            return Ok(None);
        }
        let b = &self.0;
        Ok(Some(ctx.data::<crate::ticket::TicketSigner>()?.sign(
            &crate::ticket::TicketClaims {
                booking_id: &b.id,
                user_id: &b.user_id,
                showtime_id: &b.showtime_id,
                seats: &b.seats,
                start_time: b.start_time,
            },
        )))
    }

    async fn cancelled_at(&self) -> Option<DateTime<Utc>> {
        self.0.cancelled_at.map(bson_time)
    }
    /// The showtime, batched across bookings through a DataLoader (one BatchGetShowtimes call).
    async fn showtime(&self, ctx: &Context<'_>) -> Result<Option<Showtime>> {
        let loader = ctx.data::<async_graphql::dataloader::DataLoader<ShowtimeLoader>>()?;
        loader.load_one(self.0.showtime_id.clone()).await
    }
}

/// The answer of createBooking and cancelBooking.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct BookingResult {
    pub success: bool,
    pub message: String,
    pub lock_id: Option<String>,
    #[graphql(skip)]
    pub booking: Option<Booking>,
}

#[ComplexObject]
impl BookingResult {
    async fn booking(&self) -> Option<BookingView> {
        self.booking.clone().map(BookingView)
    }
}

/// The answer of processPayment.
#[derive(SimpleObject)]
#[graphql(complex)]
pub struct PaymentResult {
    pub success: bool,
    pub message: String,
    pub transaction_id: Option<String>,
    #[graphql(skip)]
    pub booking: Option<Booking>,
}

#[ComplexObject]
impl PaymentResult {
    async fn booking(&self) -> Option<BookingView> {
        self.booking.clone().map(BookingView)
    }
}
