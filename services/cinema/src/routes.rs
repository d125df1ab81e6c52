//! The REST catalogue on `/api/v1/{cinemas,movies,screens,showtimes}`: reads are public,
//! writes need an admin token. Every error is the shared `{"error": {code, message}}` body.

use std::{collections::HashMap, sync::Arc};

use axum::{
    Json, Router,
    extract::{DefaultBodyLimit, FromRef, FromRequestParts, Path, State},
    http::{StatusCode, request::Parts},
    response::{IntoResponse, Response},
    routing::get,
};
use chrono::{DateTime, NaiveDate, Utc};
use moviebook_common::{
    auth::{Authenticated, JwtKeys},
    error::ApiJson,
    ops::{self, Readiness},
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{
    domain::{self, Layout, cents_to_price},
    error::{Error, Result},
    store,
};

/// Shared state of the HTTP handlers.
#[derive(Clone)]
pub struct AppState {
    pub pool: PgPool,
    pub keys: Arc<JwtKeys>,
}

impl FromRef<AppState> for Arc<JwtKeys> {
    fn from_ref(s: &AppState) -> Self {
        s.keys.clone()
    }
}

/// Request bodies are small JSON documents; a screen layout is the largest.
const BODY_LIMIT: usize = 256 * 1024;

/// The whole HTTP application: catalogue, `/actuator/health`, ops endpoints, metrics.
pub fn app(state: AppState, readiness: Readiness) -> Router {
    let actuator_readiness = readiness.clone();
    let api = Router::new()
        .route("/api/v1/cinemas", get(list_cinemas).post(create_cinema))
        .route(
            "/api/v1/cinemas/{id}",
            get(get_cinema).put(update_cinema).delete(delete_cinema),
        )
        .route("/api/v1/movies", get(list_movies).post(create_movie))
        .route(
            "/api/v1/movies/{id}",
            get(get_movie).put(update_movie).delete(delete_movie),
        )
        .route("/api/v1/screens", get(list_screens).post(create_screen))
        .route(
            "/api/v1/screens/{id}",
            get(get_screen).put(update_screen).delete(delete_screen),
        )
        .route(
            "/api/v1/showtimes",
            get(list_showtimes).post(create_showtime),
        )
        .route(
            "/api/v1/showtimes/{id}",
            get(get_showtime)
                .put(update_showtime)
                .delete(delete_showtime),
        )
        .route("/api/v1/showtimes/{id}/seats", get(seat_map))
        .with_state(state)
        .route(
            "/actuator/health",
            get(move || actuator_health(actuator_readiness.clone())),
        )
        .layer(DefaultBodyLimit::max(BODY_LIMIT));
    ops::with_ops(api, readiness)
}

/// Spring-style health (`{"status":"UP"}`), which existing monitors of this service expect.
async fn actuator_health(readiness: Readiness) -> Response {
    let (ok, checks) = readiness.run().await;
    let status = if ok { "UP" } else { "DOWN" };
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let components: HashMap<&str, serde_json::Value> = checks
        .into_iter()
        .map(|(name, r)| {
            let up = r == "ok";
            let mut v = serde_json::json!({ "status": if up { "UP" } else { "DOWN" } });
            if !up {
                v["details"] = serde_json::json!({ "error": r });
            }
            (name, v)
        })
        .collect();
    (
        code,
        Json(serde_json::json!({ "status": status, "components": components })),
    )
        .into_response()
}

// ---- extractors ------------------------------------------------------------------------------

/// A caller holding the admin role.
struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self> {
        let Authenticated(claims) = Authenticated::from_request_parts(parts, state).await?;
        if claims.is_admin() {
            Ok(Admin)
        } else {
            Err(Error::Forbidden(
                "changing the catalogue needs an admin token".into(),
            ))
        }
    }
}

/// An id from the path, parsed so a malformed one is a 400 in the shared shape.
struct Id(Uuid);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|e| Error::invalid(e.body_text()))?;
        domain::parse_id("id", &raw).map(Id)
    }
}

/// Query parameters as strings; each handler parses what it uses, with messages that name the
/// parameter.
struct Params(HashMap<String, String>);

impl<S: Send + Sync> FromRequestParts<S> for Params {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self> {
        let axum::extract::Query(map) =
            axum::extract::Query::<HashMap<String, String>>::from_request_parts(parts, state)
                .await
                .map_err(|e| Error::invalid(e.body_text()))?;
        Ok(Params(map))
    }
}

impl Params {
    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(|v| v.trim()).filter(|v| !v.is_empty())
    }

    fn int(&self, name: &str) -> Result<Option<i64>> {
        self.get(name)
            .map(|v| {
                v.parse::<i64>()
                    .map_err(|_| Error::invalid(format!("{name} must be an integer")))
            })
            .transpose()
    }

    fn page(&self) -> Result<(i64, i64)> {
        domain::page(self.int("limit")?, self.int("offset")?)
    }

    fn id(&self, name: &str) -> Result<Option<Uuid>> {
        self.get(name)
            .map(|v| domain::parse_id(name, v))
            .transpose()
    }

    fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>> {
        self.get(name)
            .map(|v| {
                DateTime::parse_from_rfc3339(v)
                    .map(|t| t.with_timezone(&Utc))
                    .map_err(|_| Error::invalid(format!("{name} must be an RFC 3339 time")))
            })
            .transpose()
    }

    fn date(&self, name: &str) -> Result<Option<NaiveDate>> {
        self.get(name)
            .map(|v| {
                NaiveDate::parse_from_str(v, "%Y-%m-%d")
                    .map_err(|_| Error::invalid(format!("{name} must be a date like 2025-01-31")))
            })
            .transpose()
    }
}

#[derive(Serialize)]
struct List<T> {
    items: Vec<T>,
    total: i64,
    limit: i64,
    offset: i64,
}

fn created<T: Serialize>(v: T) -> Response {
    (StatusCode::CREATED, Json(v)).into_response()
}

fn deleted() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

// ---- cinemas ---------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CinemaBody {
    name: String,
    location: String,
}

impl CinemaBody {
    fn validate(&self) -> Result<(String, String)> {
        Ok((
            domain::required_text("name", &self.name, 200)?,
            domain::required_text("location", &self.location, 500)?,
        ))
    }
}

async fn list_cinemas(State(s): State<AppState>, p: Params) -> Result<Json<List<store::Cinema>>> {
    let (limit, offset) = p.page()?;
    let page = store::list_cinemas(&s.pool, limit, offset).await?;
    Ok(Json(List {
        items: page.items,
        total: page.total,
        limit,
        offset,
    }))
}

async fn get_cinema(State(s): State<AppState>, Id(id): Id) -> Result<Json<store::Cinema>> {
    Ok(Json(store::get_cinema(&s.pool, id).await?))
}

async fn create_cinema(
    State(s): State<AppState>,
    _: Admin,
    ApiJson(b): ApiJson<CinemaBody>,
) -> Result<Response> {
    let (name, location) = b.validate()?;
    Ok(created(
        store::upsert_cinema(&s.pool, None, &name, &location).await?,
    ))
}

async fn update_cinema(
    State(s): State<AppState>,
    _: Admin,
    Id(id): Id,
    ApiJson(b): ApiJson<CinemaBody>,
) -> Result<Json<store::Cinema>> {
    let (name, location) = b.validate()?;
    Ok(Json(
        store::upsert_cinema(&s.pool, Some(id), &name, &location).await?,
    ))
}

async fn delete_cinema(State(s): State<AppState>, _: Admin, Id(id): Id) -> Result<Response> {
    store::delete_cinema(&s.pool, id).await?;
    Ok(deleted())
}

// ---- movies ----------------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MovieBody {
    title: String,
    #[serde(default)]
    description: String,
    genre: String,
    duration_minutes: i32,
    #[serde(default)]
    rating: String,
    #[serde(default)]
    poster_url: String,
    #[serde(default)]
    release_date: Option<NaiveDate>,
}

impl MovieBody {
    fn validate(self) -> Result<store::MovieInput> {
        if !(1..=1000).contains(&self.duration_minutes) {
            return Err(Error::invalid(
                "duration_minutes must be between 1 and 1000",
            ));
        }
        let poster_url = self.poster_url.trim().to_owned();
        let is_http = poster_url.starts_with("https://") || poster_url.starts_with("http://");
        if !poster_url.is_empty() && !is_http {
            return Err(Error::invalid("poster_url must be an http(s) URL"));
        }
        if poster_url.len() > 2000 {
            return Err(Error::invalid("poster_url is longer than 2000 characters"));
        }
        if self.description.chars().count() > 5000 {
            return Err(Error::invalid("description is longer than 5000 characters"));
        }
        if self.rating.chars().count() > 20 {
            return Err(Error::invalid("rating is longer than 20 characters"));
        }
        Ok(store::MovieInput {
            title: domain::required_text("title", &self.title, 300)?,
            description: self.description.trim().to_owned(),
            genre: domain::required_text("genre", &self.genre, 100)?,
            duration_minutes: self.duration_minutes,
            rating: self.rating.trim().to_owned(),
            poster_url,
            release_date: self.release_date,
        })
    }
}

async fn list_movies(State(s): State<AppState>, p: Params) -> Result<Json<List<store::Movie>>> {
    let (limit, offset) = p.page()?;
    let page = store::list_movies(&s.pool, p.get("genre"), limit, offset).await?;
    Ok(Json(List {
        items: page.items,
        total: page.total,
        limit,
        offset,
    }))
}

async fn get_movie(State(s): State<AppState>, Id(id): Id) -> Result<Json<store::Movie>> {
    Ok(Json(store::get_movie(&s.pool, id).await?))
}

async fn create_movie(
    State(s): State<AppState>,
    _: Admin,
    ApiJson(b): ApiJson<MovieBody>,
) -> Result<Response> {
    let input = b.validate()?;
    Ok(created(store::upsert_movie(&s.pool, None, &input).await?))
}

async fn update_movie(
    State(s): State<AppState>,
    _: Admin,
    Id(id): Id,
    ApiJson(b): ApiJson<MovieBody>,
) -> Result<Json<store::Movie>> {
    let input = b.validate()?;
    Ok(Json(store::upsert_movie(&s.pool, Some(id), &input).await?))
}

async fn delete_movie(State(s): State<AppState>, _: Admin, Id(id): Id) -> Result<Response> {
    store::delete_movie(&s.pool, id).await?;
    Ok(deleted())
}

// ---- screens ---------------------------------------------------------------------------------

#[derive(Serialize)]
struct ScreenView {
    id: Uuid,
    cinema_id: Uuid,
    name: String,
    layout: Layout,
    total_seats: i32,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl From<store::Screen> for ScreenView {
    fn from(s: store::Screen) -> Self {
        Self {
            id: s.id,
            cinema_id: s.cinema_id,
            name: s.name,
            layout: s.layout.0,
            total_seats: s.total_seats,
            created_at: s.created_at,
            updated_at: s.updated_at,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScreenBody {
    #[serde(default)]
    cinema_id: Option<Uuid>,
    name: String,
    layout: Layout,
}

async fn list_screens(State(s): State<AppState>, p: Params) -> Result<Json<List<ScreenView>>> {
    let (limit, offset) = p.page()?;
    let page = store::list_screens(&s.pool, p.id("cinema_id")?, limit, offset).await?;
    Ok(Json(List {
        items: page.items.into_iter().map(Into::into).collect(),
        total: page.total,
        limit,
        offset,
    }))
}

async fn get_screen(State(s): State<AppState>, Id(id): Id) -> Result<Json<ScreenView>> {
    Ok(Json(store::get_screen(&s.pool, id).await?.into()))
}

async fn create_screen(
    State(s): State<AppState>,
    _: Admin,
    ApiJson(b): ApiJson<ScreenBody>,
) -> Result<Response> {
    let cinema_id = b
        .cinema_id
        .ok_or_else(|| Error::invalid("cinema_id is required"))?;
    let name = domain::required_text("name", &b.name, 100)?;
    b.layout.validate()?;
    let screen = store::create_screen(&s.pool, cinema_id, &name, &b.layout).await?;
    Ok(created(ScreenView::from(screen)))
}

async fn update_screen(
    State(s): State<AppState>,
    _: Admin,
    Id(id): Id,
    ApiJson(b): ApiJson<ScreenBody>,
) -> Result<Json<ScreenView>> {
    let name = domain::required_text("name", &b.name, 100)?;
    b.layout.validate()?;
    if let Some(cinema_id) = b.cinema_id {
        let current = store::get_screen(&s.pool, id).await?;
        if current.cinema_id != cinema_id {
            return Err(Error::invalid("a screen cannot move to another cinema"));
        }
    }
    Ok(Json(
        store::update_screen(&s.pool, id, &name, &b.layout)
            .await?
            .into(),
    ))
}

async fn delete_screen(State(s): State<AppState>, _: Admin, Id(id): Id) -> Result<Response> {
    store::delete_screen(&s.pool, id).await?;
    Ok(deleted())
}

// ---- showtimes -------------------------------------------------------------------------------

#[derive(Serialize)]
struct ShowtimeView {
    id: Uuid,
    movie_id: Uuid,
    cinema_id: Uuid,
    screen_id: Uuid,
    screen_name: String,
    start_time: DateTime<Utc>,
    end_time: DateTime<Utc>,
    base_price: f64,
    total_seats: i32,
    available_seats: i64,
}

impl From<store::Showtime> for ShowtimeView {
    fn from(s: store::Showtime) -> Self {
        Self {
            id: s.id,
            movie_id: s.movie_id,
            cinema_id: s.cinema_id,
            screen_id: s.screen_id,
            screen_name: s.screen_name,
            start_time: s.start_time,
            end_time: s.end_time,
            base_price: cents_to_price(s.base_price_cents),
            total_seats: s.total_seats,
            available_seats: s.available_seats,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShowtimeBody {
    #[serde(default)]
    movie_id: Option<Uuid>,
    #[serde(default)]
    screen_id: Option<Uuid>,
    start_time: DateTime<Utc>,
    #[serde(default)]
    end_time: Option<DateTime<Utc>>,
    base_price: f64,
}

impl ShowtimeBody {
    fn input(&self) -> Result<store::ShowtimeInput> {
        Ok(store::ShowtimeInput {
            start_time: self.start_time,
            end_time: self.end_time,
            base_price_cents: domain::price_to_cents("base_price", self.base_price)?,
        })
    }
}

async fn list_showtimes(State(s): State<AppState>, p: Params) -> Result<Json<List<ShowtimeView>>> {
    let (limit, offset) = p.page()?;
    let mut filter = store::ShowtimeFilter {
        movie_id: p.id("movie_id")?,
        cinema_id: p.id("cinema_id")?,
        screen_id: p.id("screen_id")?,
        from: p.time("from")?,
        until: p.time("to")?,
    };
    if let Some(day) = p.date("date")? {
        // A calendar day in UTC, intersected with from/to when given too.
        let start = day.and_time(chrono::NaiveTime::MIN).and_utc();
        let end = start + chrono::Duration::days(1);
        filter.from = Some(filter.from.map_or(start, |f| f.max(start)));
        filter.until = Some(filter.until.map_or(end, |u| u.min(end)));
    }
    let page = store::list_showtimes(&s.pool, &filter, limit, offset).await?;
    Ok(Json(List {
        items: page.items.into_iter().map(Into::into).collect(),
        total: page.total,
        limit,
        offset,
    }))
}

async fn get_showtime(State(s): State<AppState>, Id(id): Id) -> Result<Json<ShowtimeView>> {
    Ok(Json(store::get_showtime(&s.pool, id).await?.into()))
}

async fn create_showtime(
    State(s): State<AppState>,
    _: Admin,
    ApiJson(b): ApiJson<ShowtimeBody>,
) -> Result<Response> {
    let movie_id = b
        .movie_id
        .ok_or_else(|| Error::invalid("movie_id is required"))?;
    let screen_id = b
        .screen_id
        .ok_or_else(|| Error::invalid("screen_id is required"))?;
    let input = b.input()?;
    let showtime = store::create_showtime(&s.pool, movie_id, screen_id, &input).await?;
    Ok(created(ShowtimeView::from(showtime)))
}

async fn update_showtime(
    State(s): State<AppState>,
    _: Admin,
    Id(id): Id,
    ApiJson(b): ApiJson<ShowtimeBody>,
) -> Result<Json<ShowtimeView>> {
    let input = b.input()?;
    let current = store::get_showtime(&s.pool, id).await?;
    if b.movie_id.is_some_and(|m| m != current.movie_id)
        || b.screen_id.is_some_and(|m| m != current.screen_id)
    {
        return Err(Error::invalid(
            "movie_id and screen_id of a showtime cannot change; schedule a new showtime",
        ));
    }
    Ok(Json(
        store::update_showtime(&s.pool, id, &input).await?.into(),
    ))
}

async fn delete_showtime(State(s): State<AppState>, _: Admin, Id(id): Id) -> Result<Response> {
    store::delete_showtime(&s.pool, id).await?;
    Ok(deleted())
}

#[derive(Serialize)]
struct SeatView {
    seat_number: String,
    row: String,
    number: i32,
    seat_type: String,
    price: f64,
    status: String,
}

#[derive(Serialize)]
struct SeatMapView {
    showtime: ShowtimeView,
    seats: Vec<SeatView>,
}

async fn seat_map(State(s): State<AppState>, Id(id): Id) -> Result<Json<SeatMapView>> {
    let showtime = store::get_showtime(&s.pool, id).await?;
    let seats = store::seats(&s.pool, id, None).await?;
    Ok(Json(SeatMapView {
        showtime: showtime.into(),
        seats: seats
            .into_iter()
            .map(|s| SeatView {
                seat_number: s.seat_number,
                row: s.row_label,
                number: s.seat_col,
                seat_type: s.seat_type,
                price: cents_to_price(s.price_cents),
                status: s.status,
            })
            .collect(),
    }))
}
