//! Every query against PostgreSQL: the schema (embedded migrations), the catalogue and the seat
//! inventory.
//!
//! Seat state changes are conditional UPDATEs of seat rows whose row locks are always taken in
//! one order — `(showtime_id, seat_number)` — by a `SELECT ... ORDER BY ... FOR UPDATE` in the
//! same statement, so concurrent holds, releases, confirmations and the sweeper can wait on each
//! other but never deadlock. Times are PostgreSQL's `now()`, never the service's clock, so
//! replicas with skewed clocks agree on what has expired.

use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};
use serde::Serialize;
use sqlx::{
    FromRow, PgPool, Postgres, Transaction,
    migrate::Migrator,
    postgres::{PgConnectOptions, PgPoolOptions},
};
use uuid::Uuid;

use crate::{
    domain::{self, Layout},
    error::{Error, Result},
};

/// The migrations in `migrations/`, embedded in the binary.
pub static MIGRATOR: Migrator = sqlx::migrate!();

/// Opens the pool. Connecting is lazy-tolerant: the pool is created even if the database is
/// momentarily down, and `/ready` reports it.
pub fn pool(
    database_url: &str,
    max_connections: u32,
    acquire_timeout: Duration,
) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = database_url.parse()?;
    let options = options.application_name("cinema-service").options([
        // Every statement is driven by primary keys or indexed columns, so the generic plan of
        // a prepared statement is as good as a custom one. Without this PostgreSQL re-plans
        // each execution whenever it estimates the generic plan a bit costlier, which costs
        // more than running these queries (measured: planning dominated the seat queries).
        ("plan_cache_mode", "force_generic_plan"),
        // A runaway statement must not hold seat rows locked for long.
        ("statement_timeout", "30s"),
    ]);
    Ok(PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(acquire_timeout)
        // sqlx pings every connection it hands out by default: a second round trip per query.
        // A connection that died is noticed by the query itself (answered UNAVAILABLE, and the
        // pool drops the connection), so the ping only costs latency.
        .test_before_acquire(false)
        .idle_timeout(Some(Duration::from_secs(300)))
        .connect_lazy_with(options))
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), sqlx::migrate::MigrateError> {
    MIGRATOR.run(pool).await
}

/// The newest migration this binary knows.
pub fn required_schema_version() -> i64 {
    MIGRATOR.iter().map(|m| m.version).max().unwrap_or(0)
}

/// Refuses to serve on a schema older than this binary needs (or a half-applied one): the
/// operator runs `cinema-service migrate` as a Job before rolling the service out.
pub async fn check_schema(pool: &PgPool) -> anyhow::Result<()> {
    let required = required_schema_version();
    let row: Option<(Option<i64>, bool)> = sqlx::query_as(
        "SELECT max(version) FILTER (WHERE success), coalesce(bool_or(NOT success), false) \
         FROM _sqlx_migrations",
    )
    .fetch_optional(pool)
    .await
    .or_else(|e| match &e {
        sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => Ok(None),
        _ => Err(e),
    })?;
    let (applied, dirty) = match row {
        Some((v, dirty)) => (v.unwrap_or(0), dirty),
        None => (0, false),
    };
    check_schema_versions(applied, dirty, required)
}

/// Pure decision behind [`check_schema`].
pub fn check_schema_versions(applied: i64, dirty: bool, required: i64) -> anyhow::Result<()> {
    if dirty {
        anyhow::bail!(
            "a migration failed half-way; fix the database and run `cinema-service migrate`"
        );
    }
    if applied < required {
        anyhow::bail!(
            "database schema is at version {applied} but this binary needs {required}; run `cinema-service migrate` first"
        );
    }
    Ok(())
}

/// `SELECT 1`, for `/ready`.
pub async fn ping(pool: &PgPool) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT 1").execute(pool).await.map(|_| ())
}

// ---- rows ------------------------------------------------------------------------------------

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Cinema {
    pub id: Uuid,
    pub name: String,
    pub location: String,
    pub total_screens: i64,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromRow, Serialize)]
pub struct Movie {
    pub id: Uuid,
    pub title: String,
    pub description: String,
    pub genre: String,
    pub duration_minutes: i32,
    pub rating: String,
    pub poster_url: String,
    pub release_date: Option<NaiveDate>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromRow)]
pub struct Screen {
    pub id: Uuid,
    pub cinema_id: Uuid,
    pub name: String,
    pub layout: sqlx::types::Json<Layout>,
    pub total_seats: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[derive(Debug, Clone, FromRow)]
pub struct Showtime {
    pub id: Uuid,
    pub movie_id: Uuid,
    pub cinema_id: Uuid,
    pub screen_id: Uuid,
    pub screen_name: String,
    pub start_time: DateTime<Utc>,
    pub end_time: DateTime<Utc>,
    pub base_price_cents: i64,
    pub total_seats: i32,
    /// Derived from the seat rows (an expired hold counts as free), never stored.
    pub available_seats: i64,
}

/// One seat with its live status (an expired hold reads as AVAILABLE).
#[derive(Debug, Clone, FromRow)]
pub struct Seat {
    pub seat_number: String,
    pub row_label: String,
    pub seat_col: i32,
    pub seat_type: String,
    pub price_cents: i64,
    pub status: String,
    pub booking_id: Option<String>,
    pub locked_until: Option<DateTime<Utc>>,
}

/// A page of results and the total number matching.
#[derive(Debug, Clone)]
pub struct Page<T> {
    pub items: Vec<T>,
    pub total: i64,
}

/// Showtime columns with the derived available count; alias `st` for showtimes, `sc` screens.
const SHOWTIME_SELECT: &str = "SELECT st.id, st.movie_id, st.cinema_id, st.screen_id, \
     sc.name AS screen_name, st.start_time, st.end_time, st.base_price_cents, st.total_seats, \
     (SELECT count(*) FROM seats s WHERE s.showtime_id = st.id AND (s.status = 'AVAILABLE' \
       OR (s.status = 'LOCKED' AND s.locked_until <= now()))) AS available_seats \
     FROM showtimes st JOIN screens sc ON sc.id = st.screen_id";

const CINEMA_SELECT: &str = "SELECT c.id, c.name, c.location, c.created_at, c.updated_at, \
     (SELECT count(*) FROM screens sc WHERE sc.cinema_id = c.id) AS total_screens FROM cinemas c";

const MOVIE_SELECT: &str = "SELECT id, title, description, genre, duration_minutes, rating, \
     poster_url, release_date, created_at, updated_at FROM movies";

const SCREEN_SELECT: &str =
    "SELECT id, cinema_id, name, layout, total_seats, created_at, updated_at FROM screens";

// ---- cinemas ---------------------------------------------------------------------------------

pub async fn list_cinemas(pool: &PgPool, limit: i64, offset: i64) -> Result<Page<Cinema>> {
    let items = sqlx::query_as::<_, Cinema>(&format!(
        "{CINEMA_SELECT} ORDER BY c.name, c.id LIMIT $1 OFFSET $2"
    ))
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar("SELECT count(*) FROM cinemas")
        .fetch_one(pool)
        .await?;
    Ok(Page { items, total })
}

pub async fn get_cinema(pool: &PgPool, id: Uuid) -> Result<Cinema> {
    sqlx::query_as::<_, Cinema>(&format!("{CINEMA_SELECT} WHERE c.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::not_found(format!("cinema {id} not found")))
}

pub async fn cinemas_by_ids(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<Cinema>> {
    Ok(sqlx::query_as::<_, Cinema>(&format!(
        "{CINEMA_SELECT} WHERE c.id = ANY($1) ORDER BY c.name"
    ))
    .bind(ids)
    .fetch_all(pool)
    .await?)
}

pub async fn upsert_cinema(
    pool: &PgPool,
    id: Option<Uuid>,
    name: &str,
    location: &str,
) -> Result<Cinema> {
    let id = match id {
        None => {
            let id = Uuid::now_v7();
            sqlx::query("INSERT INTO cinemas (id, name, location) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(name)
                .bind(location)
                .execute(pool)
                .await?;
            id
        }
        Some(id) => {
            let n = sqlx::query(
                "UPDATE cinemas SET name = $2, location = $3, updated_at = now() WHERE id = $1",
            )
            .bind(id)
            .bind(name)
            .bind(location)
            .execute(pool)
            .await?
            .rows_affected();
            if n == 0 {
                return Err(Error::not_found(format!("cinema {id} not found")));
            }
            id
        }
    };
    get_cinema(pool, id).await
}

pub async fn delete_cinema(pool: &PgPool, id: Uuid) -> Result<()> {
    delete_by_id(pool, "cinemas", "cinema", id).await
}

async fn delete_by_id(pool: &PgPool, table: &str, what: &str, id: Uuid) -> Result<()> {
    let n = sqlx::query(&format!("DELETE FROM {table} WHERE id = $1"))
        .bind(id)
        .execute(pool)
        .await
        .map_err(|e| match Error::from(e) {
            Error::Conflict(_) => Error::Conflict(format!(
                "{what} {id} is still used (delete its screens or showtimes first)"
            )),
            other => other,
        })?
        .rows_affected();
    if n == 0 {
        return Err(Error::not_found(format!("{what} {id} not found")));
    }
    Ok(())
}

// ---- movies ----------------------------------------------------------------------------------

/// The fields of a movie a client sets.
#[derive(Debug, Clone)]
pub struct MovieInput {
    pub title: String,
    pub description: String,
    pub genre: String,
    pub duration_minutes: i32,
    pub rating: String,
    pub poster_url: String,
    pub release_date: Option<NaiveDate>,
}

pub async fn list_movies(
    pool: &PgPool,
    genre: Option<&str>,
    limit: i64,
    offset: i64,
) -> Result<Page<Movie>> {
    let filter = "WHERE ($1::text IS NULL OR lower(genre) = lower($1))";
    let items = sqlx::query_as::<_, Movie>(&format!(
        "{MOVIE_SELECT} {filter} ORDER BY title, id LIMIT $2 OFFSET $3"
    ))
    .bind(genre)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM movies {filter}"))
        .bind(genre)
        .fetch_one(pool)
        .await?;
    Ok(Page { items, total })
}

pub async fn get_movie(pool: &PgPool, id: Uuid) -> Result<Movie> {
    sqlx::query_as::<_, Movie>(&format!("{MOVIE_SELECT} WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::not_found(format!("movie {id} not found")))
}

pub async fn movies_by_ids(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<Movie>> {
    Ok(
        sqlx::query_as::<_, Movie>(&format!("{MOVIE_SELECT} WHERE id = ANY($1)"))
            .bind(ids)
            .fetch_all(pool)
            .await?,
    )
}

pub async fn upsert_movie(pool: &PgPool, id: Option<Uuid>, m: &MovieInput) -> Result<Movie> {
    let (sql, id) = match id {
        None => (
            "INSERT INTO movies (id, title, description, genre, duration_minutes, rating, \
             poster_url, release_date) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
            Uuid::now_v7(),
        ),
        Some(id) => (
            "UPDATE movies SET title = $2, description = $3, genre = $4, duration_minutes = $5, \
             rating = $6, poster_url = $7, release_date = $8, updated_at = now() WHERE id = $1",
            id,
        ),
    };
    let n = sqlx::query(sql)
        .bind(id)
        .bind(&m.title)
        .bind(&m.description)
        .bind(&m.genre)
        .bind(m.duration_minutes)
        .bind(&m.rating)
        .bind(&m.poster_url)
        .bind(m.release_date)
        .execute(pool)
        .await?
        .rows_affected();
    if n == 0 {
        return Err(Error::not_found(format!("movie {id} not found")));
    }
    get_movie(pool, id).await
}

pub async fn delete_movie(pool: &PgPool, id: Uuid) -> Result<()> {
    delete_by_id(pool, "movies", "movie", id).await
}

// ---- screens ---------------------------------------------------------------------------------

pub async fn list_screens(
    pool: &PgPool,
    cinema_id: Option<Uuid>,
    limit: i64,
    offset: i64,
) -> Result<Page<Screen>> {
    let filter = "WHERE ($1::uuid IS NULL OR cinema_id = $1)";
    let items = sqlx::query_as::<_, Screen>(&format!(
        "{SCREEN_SELECT} {filter} ORDER BY cinema_id, name LIMIT $2 OFFSET $3"
    ))
    .bind(cinema_id)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM screens {filter}"))
        .bind(cinema_id)
        .fetch_one(pool)
        .await?;
    Ok(Page { items, total })
}

pub async fn get_screen(pool: &PgPool, id: Uuid) -> Result<Screen> {
    sqlx::query_as::<_, Screen>(&format!("{SCREEN_SELECT} WHERE id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::not_found(format!("screen {id} not found")))
}

pub async fn create_screen(
    pool: &PgPool,
    cinema_id: Uuid,
    name: &str,
    layout: &Layout,
) -> Result<Screen> {
    let id = Uuid::now_v7();
    let exists: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM cinemas WHERE id = $1)")
        .bind(cinema_id)
        .fetch_one(pool)
        .await?;
    if !exists {
        return Err(Error::not_found(format!("cinema {cinema_id} not found")));
    }
    sqlx::query(
        "INSERT INTO screens (id, cinema_id, name, layout, total_seats) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(id)
    .bind(cinema_id)
    .bind(name)
    .bind(sqlx::types::Json(layout))
    .bind(layout.total_seats())
    .execute(pool)
    .await?;
    get_screen(pool, id).await
}

/// Renames a screen; its layout may change only while no showtime uses it (each showtime's
/// inventory was built from the layout it had).
pub async fn update_screen(pool: &PgPool, id: Uuid, name: &str, layout: &Layout) -> Result<Screen> {
    let mut tx = pool.begin().await?;
    let current: Option<sqlx::types::Json<Layout>> =
        sqlx::query_scalar("SELECT layout FROM screens WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    let current = current.ok_or_else(|| Error::not_found(format!("screen {id} not found")))?;
    if current.0 != *layout {
        let used: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM showtimes WHERE screen_id = $1)")
                .bind(id)
                .fetch_one(&mut *tx)
                .await?;
        if used {
            return Err(Error::Conflict(
                "the layout of a screen with showtimes cannot change".into(),
            ));
        }
    }
    sqlx::query(
        "UPDATE screens SET name = $2, layout = $3, total_seats = $4, updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(name)
    .bind(sqlx::types::Json(layout))
    .bind(layout.total_seats())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    get_screen(pool, id).await
}

pub async fn delete_screen(pool: &PgPool, id: Uuid) -> Result<()> {
    delete_by_id(pool, "screens", "screen", id).await
}

// ---- showtimes -------------------------------------------------------------------------------

/// Filters of the showtime list.
#[derive(Debug, Clone, Default)]
pub struct ShowtimeFilter {
    pub movie_id: Option<Uuid>,
    pub cinema_id: Option<Uuid>,
    pub screen_id: Option<Uuid>,
    pub from: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
}

const SHOWTIME_FILTER: &str = "WHERE ($1::uuid IS NULL OR st.movie_id = $1) \
     AND ($2::uuid IS NULL OR st.cinema_id = $2) AND ($3::uuid IS NULL OR st.screen_id = $3) \
     AND ($4::timestamptz IS NULL OR st.start_time >= $4) \
     AND ($5::timestamptz IS NULL OR st.start_time < $5)";

pub async fn list_showtimes(
    pool: &PgPool,
    f: &ShowtimeFilter,
    limit: i64,
    offset: i64,
) -> Result<Page<Showtime>> {
    let items = sqlx::query_as::<_, Showtime>(&format!(
        "{SHOWTIME_SELECT} {SHOWTIME_FILTER} ORDER BY st.start_time, st.id LIMIT $6 OFFSET $7"
    ))
    .bind(f.movie_id)
    .bind(f.cinema_id)
    .bind(f.screen_id)
    .bind(f.from)
    .bind(f.until)
    .bind(limit)
    .bind(offset)
    .fetch_all(pool)
    .await?;
    let total: i64 = sqlx::query_scalar(&format!(
        "SELECT count(*) FROM showtimes st {SHOWTIME_FILTER}"
    ))
    .bind(f.movie_id)
    .bind(f.cinema_id)
    .bind(f.screen_id)
    .bind(f.from)
    .bind(f.until)
    .fetch_one(pool)
    .await?;
    Ok(Page { items, total })
}

pub async fn get_showtime(pool: &PgPool, id: Uuid) -> Result<Showtime> {
    sqlx::query_as::<_, Showtime>(&format!("{SHOWTIME_SELECT} WHERE st.id = $1"))
        .bind(id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| Error::not_found(format!("showtime {id} not found")))
}

pub async fn showtimes_by_ids(pool: &PgPool, ids: &[Uuid]) -> Result<Vec<Showtime>> {
    Ok(sqlx::query_as::<_, Showtime>(&format!(
        "{SHOWTIME_SELECT} WHERE st.id = ANY($1) ORDER BY st.start_time"
    ))
    .bind(ids)
    .fetch_all(pool)
    .await?)
}

/// Showtimes of these movies starting in `[from, until)`, for the catalogue in one query.
pub async fn showtimes_of_movies(
    pool: &PgPool,
    movie_ids: &[Uuid],
    from: DateTime<Utc>,
    until: Option<DateTime<Utc>>,
) -> Result<Vec<Showtime>> {
    Ok(sqlx::query_as::<_, Showtime>(&format!(
        "{SHOWTIME_SELECT} WHERE st.movie_id = ANY($1) AND st.start_time >= $2 \
         AND ($3::timestamptz IS NULL OR st.start_time < $3) ORDER BY st.start_time, st.id"
    ))
    .bind(movie_ids)
    .bind(from)
    .bind(until)
    .fetch_all(pool)
    .await?)
}

/// What a client sets when it schedules a showtime.
#[derive(Debug, Clone)]
pub struct ShowtimeInput {
    pub start_time: DateTime<Utc>,
    /// Defaults to the start plus the movie's duration.
    pub end_time: Option<DateTime<Utc>>,
    pub base_price_cents: i64,
}

/// Schedules a showtime and creates its seat inventory from the screen's layout, in one
/// transaction. Showtimes on one screen may not overlap (creations on a screen are serialised
/// by locking the screen row).
pub async fn create_showtime(
    pool: &PgPool,
    movie_id: Uuid,
    screen_id: Uuid,
    input: &ShowtimeInput,
) -> Result<Showtime> {
    let mut tx = pool.begin().await?;
    let screen: Option<(Uuid, sqlx::types::Json<Layout>)> =
        sqlx::query_as("SELECT cinema_id, layout FROM screens WHERE id = $1 FOR UPDATE")
            .bind(screen_id)
            .fetch_optional(&mut *tx)
            .await?;
    let (cinema_id, layout) =
        screen.ok_or_else(|| Error::not_found(format!("screen {screen_id} not found")))?;
    let duration: Option<i32> =
        sqlx::query_scalar("SELECT duration_minutes FROM movies WHERE id = $1")
            .bind(movie_id)
            .fetch_optional(&mut *tx)
            .await?;
    let duration =
        duration.ok_or_else(|| Error::not_found(format!("movie {movie_id} not found")))?;
    let end_time = input
        .end_time
        .unwrap_or(input.start_time + chrono::Duration::minutes(i64::from(duration)));
    if end_time <= input.start_time {
        return Err(Error::invalid("end_time must be after start_time"));
    }
    check_no_overlap(&mut tx, screen_id, None, input.start_time, end_time).await?;
    let id = Uuid::now_v7();
    sqlx::query(
        "INSERT INTO showtimes (id, movie_id, screen_id, cinema_id, start_time, end_time, \
         base_price_cents, total_seats) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(id)
    .bind(movie_id)
    .bind(screen_id)
    .bind(cinema_id)
    .bind(input.start_time)
    .bind(end_time)
    .bind(input.base_price_cents)
    .bind(layout.0.total_seats())
    .execute(&mut *tx)
    .await?;
    insert_inventory(&mut tx, id, &layout.0, input.base_price_cents).await?;
    tx.commit().await?;
    get_showtime(pool, id).await
}

async fn check_no_overlap(
    tx: &mut Transaction<'_, Postgres>,
    screen_id: Uuid,
    except: Option<Uuid>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
) -> Result<()> {
    let clash: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM showtimes WHERE screen_id = $1 AND ($2::uuid IS NULL OR id <> $2) \
         AND start_time < $4 AND end_time > $3 LIMIT 1",
    )
    .bind(screen_id)
    .bind(except)
    .bind(start)
    .bind(end)
    .fetch_optional(&mut **tx)
    .await?;
    match clash {
        Some(other) => Err(Error::Conflict(format!(
            "the screen is busy then: showtime {other} overlaps"
        ))),
        None => Ok(()),
    }
}

/// Inserts one seat row per seat of the layout with one statement.
async fn insert_inventory(
    tx: &mut Transaction<'_, Postgres>,
    showtime_id: Uuid,
    layout: &Layout,
    base_price_cents: i64,
) -> Result<()> {
    let seats = layout.seats(base_price_cents);
    let numbers: Vec<&str> = seats.iter().map(|s| s.seat_number.as_str()).collect();
    let rows: Vec<&str> = seats.iter().map(|s| s.row.as_str()).collect();
    let cols: Vec<i32> = seats.iter().map(|s| s.number).collect();
    let types: Vec<&str> = seats.iter().map(|s| s.seat_type.as_str()).collect();
    let prices: Vec<i64> = seats.iter().map(|s| s.price_cents).collect();
    sqlx::query(
        "INSERT INTO seats (showtime_id, seat_number, row_label, seat_col, seat_type, price_cents) \
         SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::int4[], $5::text[], $6::int8[])",
    )
    .bind(showtime_id)
    .bind(numbers)
    .bind(rows)
    .bind(cols)
    .bind(types)
    .bind(prices)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Moves or re-prices a showtime. A new base price re-prices the seats still on sale; seats
/// held or sold keep the price their buyer saw.
pub async fn update_showtime(pool: &PgPool, id: Uuid, input: &ShowtimeInput) -> Result<Showtime> {
    let mut tx = pool.begin().await?;
    let current: Option<(Uuid, DateTime<Utc>, DateTime<Utc>)> = sqlx::query_as(
        "SELECT screen_id, start_time, end_time FROM showtimes WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let (screen_id, start, end) =
        current.ok_or_else(|| Error::not_found(format!("showtime {id} not found")))?;
    let end_time = input.end_time.unwrap_or(input.start_time + (end - start));
    if end_time <= input.start_time {
        return Err(Error::invalid("end_time must be after start_time"));
    }
    sqlx::query("SELECT 1 FROM screens WHERE id = $1 FOR UPDATE")
        .bind(screen_id)
        .execute(&mut *tx)
        .await?;
    check_no_overlap(&mut tx, screen_id, Some(id), input.start_time, end_time).await?;
    sqlx::query(
        "UPDATE showtimes SET start_time = $2, end_time = $3, base_price_cents = $4, \
         updated_at = now() WHERE id = $1",
    )
    .bind(id)
    .bind(input.start_time)
    .bind(end_time)
    .bind(input.base_price_cents)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "UPDATE seats SET price_cents = ($2 * CASE seat_type WHEN 'premium' THEN $3 \
         WHEN 'vip' THEN $4 ELSE $5 END + 50) / 100, updated_at = now() \
         WHERE showtime_id = $1 AND status = 'AVAILABLE'",
    )
    .bind(id)
    .bind(input.base_price_cents)
    .bind(domain::SeatType::Premium.multiplier_percent())
    .bind(domain::SeatType::Vip.multiplier_percent())
    .bind(domain::SeatType::Standard.multiplier_percent())
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    get_showtime(pool, id).await
}

/// Deletes a showtime unless a seat of it is held (live) or sold.
pub async fn delete_showtime(pool: &PgPool, id: Uuid) -> Result<()> {
    let mut tx = pool.begin().await?;
    let found: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM showtimes WHERE id = $1 FOR UPDATE")
            .bind(id)
            .fetch_optional(&mut *tx)
            .await?;
    if found.is_none() {
        return Err(Error::not_found(format!("showtime {id} not found")));
    }
    let busy: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM seats WHERE showtime_id = $1 AND (status = 'BOOKED' \
         OR (status = 'LOCKED' AND locked_until > now()))",
    )
    .bind(id)
    .fetch_one(&mut *tx)
    .await?;
    if busy > 0 {
        return Err(Error::Conflict(format!(
            "showtime {id} has {busy} held or sold seats; cancel those bookings first"
        )));
    }
    sqlx::query("DELETE FROM seat_locks WHERE showtime_id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("DELETE FROM showtimes WHERE id = $1")
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

// ---- seat inventory --------------------------------------------------------------------------

/// Refreshes the planner's statistics of the inventory tables.
///
/// Run after bulk loads (`seed`, benchmarks). Until a table has statistics the planner guesses
/// a showtime has a handful of seats, and the generic plan every pooled connection caches for
/// the seat lookups then reads all seats of the showtime per call instead of probing the
/// primary key: measured 0.65 ms instead of 0.05 ms per CheckSeatAvailability on a
/// 3,200-seat showtime. ANALYZE also invalidates those cached plans.
pub async fn analyze(pool: &PgPool) -> Result<()> {
    sqlx::raw_sql("ANALYZE seats, seat_locks, showtimes")
        .execute(pool)
        .await?;
    Ok(())
}

/// The live view of a showtime's seats (an expired hold reads as AVAILABLE); a macro so the
/// two statements below are compile-time constants, not strings built on every call.
macro_rules! seat_select {
    () => {
        "SELECT s.seat_number, s.row_label, s.seat_col, s.seat_type, \
         s.price_cents, \
         CASE WHEN s.status = 'LOCKED' AND s.locked_until <= now() THEN 'AVAILABLE' \
           ELSE s.status END AS status, \
         CASE WHEN s.status = 'LOCKED' AND s.locked_until > now() THEN s.booking_id END AS booking_id, \
         CASE WHEN s.status = 'LOCKED' AND s.locked_until > now() THEN s.locked_until END AS locked_until \
         FROM seats s WHERE s.showtime_id = $1"
    };
}

/// Seats of a showtime with their live status; `numbers` = None means every seat.
pub async fn seats(
    pool: &PgPool,
    showtime_id: Uuid,
    numbers: Option<&[String]>,
) -> Result<Vec<Seat>> {
    // Two statements rather than `$2 IS NULL OR ...`: a prepared statement's generic plan
    // could not use the primary key for the seat numbers and would scan the whole showtime.
    let rows = match numbers {
        Some(numbers) => {
            sqlx::query_as::<_, Seat>(concat!(seat_select!(), " AND s.seat_number = ANY($2)"))
                .bind(showtime_id)
                .bind(numbers)
                .fetch_all(pool)
                .await?
        }
        None => {
            sqlx::query_as::<_, Seat>(concat!(
                seat_select!(),
                " ORDER BY length(s.row_label), s.row_label, s.seat_col"
            ))
            .bind(showtime_id)
            .fetch_all(pool)
            .await?
        }
    };
    Ok(rows)
}

#[derive(FromRow)]
struct BoardRow {
    seat_number: String,
    status: String,
    booking_id: Option<String>,
    locked_until: Option<DateTime<Utc>>,
}

/// Every seat of a showtime as stored (holds not yet checked against the clock), for the
/// copy CheckSeatAvailability answers from (see [`crate::availability`]).
pub async fn seat_board(
    pool: &PgPool,
    showtime_id: Uuid,
) -> Result<Vec<(String, crate::availability::StoredSeat)>> {
    let rows: Vec<BoardRow> = sqlx::query_as(
        "SELECT seat_number, status, booking_id, locked_until FROM seats WHERE showtime_id = $1",
    )
    .bind(showtime_id)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| {
            (
                r.seat_number,
                crate::availability::StoredSeat {
                    status: r.status,
                    booking_id: r.booking_id,
                    locked_until: r.locked_until,
                },
            )
        })
        .collect())
}

/// Why some requested seats matched no row: the showtime is unknown, or the seats are.
pub async fn explain_missing(pool: &PgPool, showtime_id: Uuid, missing: &[&str]) -> Error {
    match showtime_exists(pool, showtime_id).await {
        Ok(false) => Error::not_found(format!("showtime {showtime_id} not found")),
        Ok(true) => Error::invalid(format!(
            "no such seats in showtime {showtime_id}: {}",
            missing.join(", ")
        )),
        Err(e) => e,
    }
}

async fn showtime_exists(pool: &PgPool, id: Uuid) -> Result<bool> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM showtimes WHERE id = $1)")
            .bind(id)
            .fetch_one(pool)
            .await?,
    )
}

/// A hold as the gRPC layer reports it.
#[derive(Debug, Clone)]
pub struct Hold {
    pub lock_id: Uuid,
    pub expires_at: DateTime<Utc>,
    /// `(seat_number, seat_type, price_cents)`, sorted by seat number.
    pub seats: Vec<(String, String, i64)>,
    /// Whether this answers a retry (the hold existed already).
    pub replayed: bool,
    pub confirmed: bool,
}

/// The outcome of a lock attempt that was not a bad request.
#[derive(Debug, Clone)]
pub enum LockOutcome {
    Locked(Hold),
    /// Some seats are held or sold by someone else; nothing was locked.
    Unavailable {
        failed: Vec<String>,
    },
}

#[derive(Debug, Clone, FromRow)]
struct LockRow {
    id: Uuid,
    booking_id: String,
    showtime_id: Uuid,
    seat_numbers: Vec<String>,
    status: String,
    expires_at: DateTime<Utc>,
    live: bool,
}

const LOCK_SELECT: &str = "SELECT id, booking_id, showtime_id, seat_numbers, status, expires_at, \
     expires_at > now() AS live FROM seat_locks";

/// One requested seat as a lock attempt saw it: whether it was free and, if the hold was
/// taken, its type, price and the hold's expiry.
#[derive(Debug, FromRow)]
struct LockAttemptRow {
    seat_number: String,
    free: bool,
    seat_type: Option<String>,
    price_cents: Option<i64>,
    expires_at: Option<DateTime<Utc>>,
}

/// Holds `seats` (normalised, sorted, distinct) of a showtime for `booking_id`, all or
/// nothing, in ONE statement (so one round trip, atomic on its own):
///
/// 1. `target` locks the requested seat rows in seat order (`FOR UPDATE`): concurrent lockers
///    of overlapping seats queue behind each other and can never deadlock; once a row is
///    locked its values are final until this statement commits;
/// 2. `verdict` is true only if every requested seat exists, every one is free (available, or
///    held with a time that passed) and the showtime has not started;
/// 3. only then is the hold row inserted (its unique booking id makes a concurrent retry
///    wait, then find the hold and replay it) and
/// 4. are exactly those seats flipped to LOCKED — re-checked free as a second guard.
///
/// The result has one row per existing requested seat with whether it was free and, if the
/// hold was taken, its type and price; anything else is diagnosed after the fact.
pub async fn lock_seats(
    pool: &PgPool,
    showtime_id: Uuid,
    seats: &[String],
    booking_id: &str,
    lock_seconds: i32,
) -> Result<LockOutcome> {
    let lock_id = Uuid::now_v7();
    let rows: Vec<LockAttemptRow> =
        sqlx::query_as(
            "WITH target AS ( \
               SELECT seat_number, (status = 'AVAILABLE' \
                 OR (status = 'LOCKED' AND locked_until <= now())) AS free \
               FROM seats WHERE showtime_id = $1 AND seat_number = ANY($2) \
               ORDER BY seat_number FOR UPDATE), \
             verdict AS ( \
               SELECT count(*) = cardinality($2::text[]) AND coalesce(bool_and(free), false) \
                 AND EXISTS (SELECT 1 FROM showtimes WHERE id = $1 AND start_time > now()) AS ok \
               FROM target), \
             ins AS ( \
               INSERT INTO seat_locks (id, booking_id, showtime_id, seat_numbers, status, expires_at) \
               SELECT $3, $4, $1, $2, 'HELD', now() + make_interval(secs => $5) \
               FROM verdict WHERE ok \
               ON CONFLICT (booking_id) DO NOTHING \
               RETURNING expires_at), \
             upd AS ( \
               UPDATE seats s SET status = 'LOCKED', lock_id = $3, booking_id = $4, \
                 locked_until = ins.expires_at, booked_by = NULL, updated_at = now() \
               FROM target t, ins \
               WHERE s.showtime_id = $1 AND s.seat_number = t.seat_number \
                 AND (s.status = 'AVAILABLE' OR (s.status = 'LOCKED' AND s.locked_until <= now())) \
               RETURNING s.seat_number, s.seat_type, s.price_cents, ins.expires_at) \
             SELECT t.seat_number, t.free, u.seat_type, u.price_cents, u.expires_at \
             FROM target t LEFT JOIN upd u ON u.seat_number = t.seat_number \
             ORDER BY t.seat_number",
        )
        .bind(showtime_id)
        .bind(seats)
        .bind(lock_id)
        .bind(booking_id)
        .bind(f64::from(lock_seconds))
        .fetch_all(pool)
        .await?;
    let held: Vec<(String, String, i64)> = rows
        .iter()
        .filter_map(|r| Some((r.seat_number.clone(), r.seat_type.clone()?, r.price_cents?)))
        .collect();
    let expires_at = rows.iter().find_map(|r| r.expires_at);
    if let Some(expires_at) = expires_at {
        if held.len() == seats.len() {
            return Ok(LockOutcome::Locked(Hold {
                lock_id,
                expires_at,
                seats: held,
                replayed: false,
                confirmed: false,
            }));
        }
        // Cannot happen (the rows were locked and verified free), but if it ever did, never
        // leave a partial hold behind.
        tracing::error!(%lock_id, "partial hold detected; releasing it");
        release_lock(pool, lock_id, booking_id).await?;
        return Err(Error::Unavailable(
            "seats changed concurrently; retry".into(),
        ));
    }
    // Nothing was locked; say why.
    let started: Option<bool> =
        sqlx::query_scalar("SELECT start_time <= now() FROM showtimes WHERE id = $1")
            .bind(showtime_id)
            .fetch_optional(pool)
            .await?;
    let Some(started) = started else {
        return Err(Error::not_found(format!(
            "showtime {showtime_id} not found"
        )));
    };
    let existing: Vec<String> = rows.iter().map(|r| r.seat_number.clone()).collect();
    let unknown = domain::missing(seats, &existing);
    if !unknown.is_empty() {
        return Err(Error::invalid(format!(
            "no such seats in showtime {showtime_id}: {}",
            unknown.join(", ")
        )));
    }
    let has_hold: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM seat_locks WHERE booking_id = $1)")
            .bind(booking_id)
            .fetch_one(pool)
            .await?;
    if has_hold {
        return replay_lock(pool, showtime_id, seats, booking_id).await;
    }
    if started {
        return Err(Error::FailedPrecondition(format!(
            "showtime {showtime_id} has already started"
        )));
    }
    let failed: Vec<String> = rows
        .into_iter()
        .filter(|r| !r.free)
        .map(|r| r.seat_number)
        .collect();
    if failed.is_empty() {
        // The seats changed between the attempt and this diagnosis; the caller may retry.
        return Err(Error::Unavailable(
            "seats changed concurrently; retry".into(),
        ));
    }
    Ok(LockOutcome::Unavailable { failed })
}

/// A LockSeats whose booking id already has a hold: the same request gets the same hold back;
/// anything else is refused without changing anything.
async fn replay_lock(
    pool: &PgPool,
    showtime_id: Uuid,
    seats: &[String],
    booking_id: &str,
) -> Result<LockOutcome> {
    let row = sqlx::query_as::<_, LockRow>(&format!("{LOCK_SELECT} WHERE booking_id = $1"))
        .bind(booking_id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| {
            Error::Unavailable(format!(
                "the hold of booking {booking_id} changed concurrently; retry"
            ))
        })?;
    let mut held = row.seat_numbers.clone();
    held.sort();
    if row.showtime_id != showtime_id || held != seats {
        return Err(Error::FailedPrecondition(format!(
            "booking {booking_id} already has lock {} on other seats ({} of showtime {}); \
             use a new booking id",
            row.id,
            held.join(", "),
            row.showtime_id
        )));
    }
    let confirmed = row.status == "CONFIRMED";
    if !(confirmed || row.status == "HELD" && row.live) {
        let why = if row.status == "HELD" || row.status == "EXPIRED" {
            "expired"
        } else {
            "was released"
        };
        return Err(Error::FailedPrecondition(format!(
            "the hold {} of booking {booking_id} {why}; use a new booking id",
            row.id
        )));
    }
    let seats: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT seat_number, seat_type, price_cents FROM seats WHERE showtime_id = $1 \
         AND lock_id = $2 ORDER BY seat_number",
    )
    .bind(row.showtime_id)
    .bind(row.id)
    .fetch_all(pool)
    .await?;
    Ok(LockOutcome::Locked(Hold {
        lock_id: row.id,
        expires_at: row.expires_at,
        seats,
        replayed: true,
        confirmed,
    }))
}

/// The result of releasing or confirming a hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HoldChange {
    /// Done now; the seats concerned.
    Done(Vec<String>),
    /// Had already been done by an earlier call (idempotent retry).
    AlreadyDone(Vec<String>),
    /// Refused; nothing changed.
    Refused(String),
}

async fn lock_for_update(tx: &mut Transaction<'_, Postgres>, lock_id: Uuid) -> Result<LockRow> {
    sqlx::query_as::<_, LockRow>(&format!("{LOCK_SELECT} WHERE id = $1 FOR UPDATE"))
        .bind(lock_id)
        .fetch_optional(&mut **tx)
        .await?
        .ok_or_else(|| Error::not_found(format!("lock {lock_id} not found")))
}

/// Sets the seats of `lock_id` that are in `from_status` to `AVAILABLE` (rows locked in seat
/// order), returning their numbers.
async fn free_seats_of(
    tx: &mut Transaction<'_, Postgres>,
    showtime_id: Uuid,
    lock_id: Uuid,
    from_status: &str,
) -> Result<Vec<String>> {
    let mut freed: Vec<String> = sqlx::query_scalar(
        "WITH target AS ( \
           SELECT seat_number FROM seats WHERE showtime_id = $1 AND lock_id = $2 \
           ORDER BY seat_number FOR UPDATE) \
         UPDATE seats s SET status = 'AVAILABLE', lock_id = NULL, booking_id = NULL, \
           locked_until = NULL, booked_by = NULL, updated_at = now() \
         FROM target t WHERE s.showtime_id = $1 AND s.seat_number = t.seat_number \
           AND s.lock_id = $2 AND s.status = $3 \
         RETURNING s.seat_number",
    )
    .bind(showtime_id)
    .bind(lock_id)
    .bind(from_status)
    .fetch_all(&mut **tx)
    .await?;
    freed.sort();
    Ok(freed)
}

async fn set_lock_status(
    tx: &mut Transaction<'_, Postgres>,
    lock_id: Uuid,
    status: &str,
    user_id: Option<&str>,
) -> Result<()> {
    sqlx::query(
        "UPDATE seat_locks SET status = $2, user_id = coalesce($3, user_id), updated_at = now() \
         WHERE id = $1",
    )
    .bind(lock_id)
    .bind(status)
    .bind(user_id)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// Releases a hold (its seats go back on sale) in one statement: the hold row is locked, then
/// its seat rows in seat order, both updated only if the hold is still HELD by this booking.
/// Idempotent; a sold hold is refused.
pub async fn release_lock(pool: &PgPool, lock_id: Uuid, booking_id: &str) -> Result<HoldChange> {
    let row: Option<(String, String, Vec<String>, Vec<String>)> = sqlx::query_as(
        "WITH l AS ( \
           SELECT id, showtime_id, booking_id, status, seat_numbers FROM seat_locks \
           WHERE id = $1 FOR UPDATE), \
         target AS ( \
           SELECT s.seat_number FROM seats s JOIN l \
             ON s.showtime_id = l.showtime_id AND s.lock_id = l.id \
           WHERE l.booking_id = $2 AND l.status = 'HELD' \
           ORDER BY s.seat_number FOR UPDATE OF s), \
         freed AS ( \
           UPDATE seats s SET status = 'AVAILABLE', lock_id = NULL, booking_id = NULL, \
             locked_until = NULL, booked_by = NULL, updated_at = now() \
           FROM target t, l \
           WHERE s.showtime_id = l.showtime_id AND s.seat_number = t.seat_number \
             AND s.lock_id = l.id AND s.status = 'LOCKED' \
           RETURNING s.seat_number), \
         done AS ( \
           UPDATE seat_locks x SET status = 'RELEASED', updated_at = now() FROM l \
           WHERE x.id = l.id AND l.booking_id = $2 AND l.status = 'HELD' RETURNING x.id) \
         SELECT l.booking_id, l.status, l.seat_numbers, \
           (SELECT coalesce(array_agg(seat_number ORDER BY seat_number), '{}') FROM freed) \
         FROM l",
    )
    .bind(lock_id)
    .bind(booking_id)
    .fetch_optional(pool)
    .await?;
    let (owner, status, seats, freed) =
        row.ok_or_else(|| Error::not_found(format!("lock {lock_id} not found")))?;
    Ok(if owner != booking_id {
        HoldChange::Refused(format!("lock {lock_id} belongs to another booking"))
    } else {
        match status.as_str() {
            "HELD" => HoldChange::Done(freed),
            "RELEASED" | "EXPIRED" => HoldChange::AlreadyDone(seats),
            other => HoldChange::Refused(format!(
                "lock {lock_id} is {}: its seats are sold (use ReleaseBookedSeats to return them)",
                other.to_lowercase()
            )),
        }
    })
}

/// Sells the seats of a live hold to `user_id`: all of them or none.
pub async fn confirm_lock(
    pool: &PgPool,
    lock_id: Uuid,
    booking_id: &str,
    user_id: &str,
) -> Result<HoldChange> {
    let mut tx = pool.begin().await?;
    let row = lock_for_update(&mut tx, lock_id).await?;
    if row.booking_id != booking_id {
        return Ok(HoldChange::Refused(format!(
            "lock {lock_id} belongs to another booking"
        )));
    }
    match row.status.as_str() {
        "CONFIRMED" => {
            let mut seats = row.seat_numbers;
            seats.sort();
            return Ok(HoldChange::AlreadyDone(seats));
        }
        "RELEASED" | "CANCELLED" => {
            return Ok(HoldChange::Refused(format!(
                "lock {lock_id} was released; its seats are no longer held"
            )));
        }
        "EXPIRED" => {
            return Ok(HoldChange::Refused(format!(
                "lock {lock_id} expired at {}",
                row.expires_at.to_rfc3339()
            )));
        }
        _ if !row.live => {
            return Ok(HoldChange::Refused(format!(
                "lock {lock_id} expired at {}",
                row.expires_at.to_rfc3339()
            )));
        }
        _ => {}
    }
    let mut sold: Vec<String> = sqlx::query_scalar(
        "WITH target AS ( \
           SELECT seat_number FROM seats WHERE showtime_id = $1 AND lock_id = $2 \
           ORDER BY seat_number FOR UPDATE) \
         UPDATE seats s SET status = 'BOOKED', booked_by = $3, locked_until = NULL, \
           updated_at = now() \
         FROM target t WHERE s.showtime_id = $1 AND s.seat_number = t.seat_number \
           AND s.lock_id = $2 AND s.status = 'LOCKED' AND s.locked_until > now() \
         RETURNING s.seat_number",
    )
    .bind(row.showtime_id)
    .bind(lock_id)
    .bind(user_id)
    .fetch_all(&mut *tx)
    .await?;
    sold.sort();
    let mut expected = row.seat_numbers.clone();
    expected.sort();
    if sold != expected {
        tx.rollback().await?;
        return Ok(HoldChange::Refused(format!(
            "lock {lock_id} no longer holds all of its seats"
        )));
    }
    set_lock_status(&mut tx, lock_id, "CONFIRMED", Some(user_id)).await?;
    tx.commit().await?;
    Ok(HoldChange::Done(sold))
}

/// Returns the seats of a booking to sale: a sold booking that was cancelled (or a hold still
/// pending). Idempotent.
pub async fn release_booked(
    pool: &PgPool,
    booking_id: &str,
    showtime_id: Option<Uuid>,
) -> Result<HoldChange> {
    let mut tx = pool.begin().await?;
    let row =
        sqlx::query_as::<_, LockRow>(&format!("{LOCK_SELECT} WHERE booking_id = $1 FOR UPDATE"))
            .bind(booking_id)
            .fetch_optional(&mut *tx)
            .await?
            .ok_or_else(|| Error::not_found(format!("booking {booking_id} holds no seats")))?;
    if showtime_id.is_some_and(|s| s != row.showtime_id) {
        return Err(Error::not_found(format!(
            "booking {booking_id} holds no seats in that showtime"
        )));
    }
    let outcome = match row.status.as_str() {
        "CONFIRMED" => {
            let freed = free_seats_of(&mut tx, row.showtime_id, row.id, "BOOKED").await?;
            set_lock_status(&mut tx, row.id, "CANCELLED", None).await?;
            HoldChange::Done(freed)
        }
        "HELD" => {
            let freed = free_seats_of(&mut tx, row.showtime_id, row.id, "LOCKED").await?;
            set_lock_status(&mut tx, row.id, "RELEASED", None).await?;
            HoldChange::Done(freed)
        }
        _ => {
            let mut seats = row.seat_numbers;
            seats.sort();
            HoldChange::AlreadyDone(seats)
        }
    };
    tx.commit().await?;
    Ok(outcome)
}

/// Frees the seats of up to `batch` expired holds and marks them EXPIRED. Safe with several
/// replicas: each claims different holds (`SKIP LOCKED`), and seat rows are locked in the
/// global seat order. Returns how many holds it expired.
pub async fn sweep_expired(pool: &PgPool, batch: i64) -> Result<u64> {
    let n = sqlx::query(
        "WITH expired AS ( \
           SELECT id FROM seat_locks WHERE status = 'HELD' AND expires_at <= now() \
           ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED), \
         target AS ( \
           SELECT s.showtime_id, s.seat_number FROM seats s JOIN expired e ON s.lock_id = e.id \
           ORDER BY s.showtime_id, s.seat_number FOR UPDATE OF s), \
         freed AS ( \
           UPDATE seats s SET status = 'AVAILABLE', lock_id = NULL, booking_id = NULL, \
             locked_until = NULL, updated_at = now() \
           FROM target t, expired e \
           WHERE s.showtime_id = t.showtime_id AND s.seat_number = t.seat_number \
             AND s.lock_id = e.id AND s.status = 'LOCKED' AND s.locked_until <= now() \
           RETURNING 1) \
         UPDATE seat_locks l SET status = 'EXPIRED', updated_at = now() \
         FROM expired e WHERE l.id = e.id",
    )
    .bind(batch)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_must_be_complete_and_new_enough() {
        let need = required_schema_version();
        assert!(need >= 1);
        assert!(check_schema_versions(need, false, need).is_ok());
        assert!(check_schema_versions(need + 1, false, need).is_ok());
        let old = check_schema_versions(need - 1, false, need).unwrap_err();
        assert!(old.to_string().contains("cinema-service migrate"), "{old}");
        assert!(check_schema_versions(need, true, need).is_err());
        assert!(check_schema_versions(0, false, need).is_err());
    }
}
