//! `cinema-service seed`: realistic sample data for `make dev` — cinemas with screens of real
//! layouts, a dozen movies, and showtimes over the next seven days with their seat inventory.
//!
//! Idempotent: every row is keyed by a natural unique key (cinema name, screen name within its
//! cinema, movie title, screen and start time), so running it twice adds nothing; running it
//! on a later day only adds the new days' showtimes.

use chrono::{Datelike, Duration, NaiveTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::{domain::Layout, error::Error, store};

struct CinemaSeed {
    name: &'static str,
    location: &'static str,
    /// (screen name, rows, seats per row, premium rows, vip rows)
    screens: &'static [(&'static str, usize, u32, usize, usize)],
}

const CINEMAS: &[CinemaSeed] = &[
    CinemaSeed {
        name: "MovieBook Central",
        location: "12 Market Street, Springfield",
        screens: &[
            ("Screen 1", 10, 14, 2, 1),
            ("Screen 2", 8, 12, 2, 0),
            ("IMAX", 14, 20, 3, 2),
        ],
    },
    CinemaSeed {
        name: "MovieBook Riverside",
        location: "3 Quay Road, Riverside Mall, Springfield",
        screens: &[("Hall A", 9, 12, 2, 1), ("Hall B", 6, 10, 1, 1)],
    },
    CinemaSeed {
        name: "MovieBook Old Town Arthouse",
        location: "48 Linden Avenue, Shelbyville",
        screens: &[("Studio", 6, 8, 0, 1), ("Grand", 12, 16, 2, 2)],
    },
];

/// (title, genre, minutes, rating, release date, description)
const MOVIES: &[(&str, &str, i32, &str, &str, &str)] = &[
    (
        "The Last Lighthouse",
        "Drama",
        118,
        "PG-13",
        "2025-09-12",
        "A keeper refuses to leave the last manned lighthouse on the coast.",
    ),
    (
        "Orbit of Ashes",
        "Science Fiction",
        142,
        "PG-13",
        "2025-10-03",
        "A salvage crew finds a derelict station that should not exist.",
    ),
    (
        "Midnight in Lisbon",
        "Romance",
        104,
        "PG",
        "2025-08-22",
        "Two strangers miss the last tram and find the city awake.",
    ),
    (
        "Iron Valley",
        "Action",
        127,
        "R",
        "2025-11-07",
        "A retired marshal returns for one last convoy through the pass.",
    ),
    (
        "The Paper Kingdom",
        "Animation",
        96,
        "G",
        "2025-07-18",
        "Origami creatures defend their library from a paper shredder.",
    ),
    (
        "Silent Frequency",
        "Thriller",
        111,
        "R",
        "2025-10-24",
        "A radio operator hears her own voice from the future.",
    ),
    (
        "Laugh Track",
        "Comedy",
        99,
        "PG-13",
        "2025-09-26",
        "A sitcom family discovers they are in a sitcom.",
    ),
    (
        "Beneath the Glacier",
        "Documentary",
        88,
        "PG",
        "2025-06-13",
        "Scientists spend a winter inside a melting glacier.",
    ),
    (
        "Crown of Thorns",
        "Historical",
        165,
        "R",
        "2025-11-14",
        "The rise and fall of a medieval queen in a divided kingdom.",
    ),
    (
        "The Haunting of Elm Hollow",
        "Horror",
        108,
        "R",
        "2025-10-31",
        "A family restores an old house that restores itself.",
    ),
    (
        "Speed of Light",
        "Adventure",
        131,
        "PG-13",
        "2025-08-01",
        "Rival couriers race across three continents with one parcel.",
    ),
    (
        "Small Wonders",
        "Family",
        92,
        "G",
        "2025-07-04",
        "A girl and her grandfather build a robot for the county fair.",
    ),
];

/// Daily slots (UTC): spaced so the longest seeded movie fits between two of them.
const SLOTS: &[(u32, u32)] = &[(11, 0), (14, 30), (18, 0), (21, 15)];
const DAYS: i64 = 7;

/// Layout of a seeded screen: rows A.. with standard seats in front, premium then vip at the back.
fn layout(rows: usize, per_row: u32, premium: usize, vip: usize) -> Layout {
    let mut l = Layout::simple(rows, per_row, premium, vip);
    // Front rows are often narrower in real auditoriums.
    if let Some(first) = l.rows.first_mut() {
        first.seats = per_row.saturating_sub(2).max(1);
    }
    l
}

/// Summary of what a seed run added.
#[derive(Debug, Default)]
pub struct SeedReport {
    pub cinemas: usize,
    pub screens: usize,
    pub movies: usize,
    pub showtimes_created: usize,
}

pub async fn run(pool: &PgPool) -> anyhow::Result<SeedReport> {
    let mut report = SeedReport::default();
    let mut screens: Vec<Uuid> = Vec::new();
    for c in CINEMAS {
        let cinema_id: Uuid = sqlx::query_scalar(
            "INSERT INTO cinemas (id, name, location) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET location = EXCLUDED.location RETURNING id",
        )
        .bind(Uuid::now_v7())
        .bind(c.name)
        .bind(c.location)
        .fetch_one(pool)
        .await?;
        report.cinemas += 1;
        for &(name, rows, per_row, premium, vip) in c.screens {
            let l = layout(rows, per_row, premium, vip);
            l.validate()?;
            // An existing screen keeps its layout: showtimes were built from it.
            let screen_id: Uuid = sqlx::query_scalar(
                "INSERT INTO screens (id, cinema_id, name, layout, total_seats) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (cinema_id, name) DO UPDATE SET name = EXCLUDED.name RETURNING id",
            )
            .bind(Uuid::now_v7())
            .bind(cinema_id)
            .bind(name)
            .bind(sqlx::types::Json(&l))
            .bind(l.total_seats())
            .fetch_one(pool)
            .await?;
            screens.push(screen_id);
            report.screens += 1;
        }
    }
    let mut movies: Vec<Uuid> = Vec::new();
    for &(title, genre, minutes, rating, release, description) in MOVIES {
        let slug: String = title
            .to_lowercase()
            .chars()
            .map(|ch| if ch.is_ascii_alphanumeric() { ch } else { '-' })
            .collect();
        let release = chrono::NaiveDate::parse_from_str(release, "%Y-%m-%d")?;
        let id: Uuid = sqlx::query_scalar(
            "INSERT INTO movies (id, title, description, genre, duration_minutes, rating, \
             poster_url, release_date) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) \
             ON CONFLICT (title) DO UPDATE SET title = EXCLUDED.title RETURNING id",
        )
        .bind(Uuid::now_v7())
        .bind(title)
        .bind(description)
        .bind(genre)
        .bind(minutes)
        .bind(rating)
        .bind(format!("https://posters.moviebook.example/{slug}.jpg"))
        .bind(release)
        .fetch_one(pool)
        .await?;
        movies.push(id);
        report.movies += 1;
    }
    let today = Utc::now().date_naive();
    let now = Utc::now();
    for day in 0..DAYS {
        let date = today + Duration::days(day);
        for (si, screen_id) in screens.iter().enumerate() {
            for (slot_i, &(h, m)) in SLOTS.iter().enumerate() {
                let Some(time) = NaiveTime::from_hms_opt(h, m, 0) else {
                    continue;
                };
                let start = date.and_time(time).and_utc();
                if start <= now {
                    continue;
                }
                // A deterministic programme: the same run on the same day picks the same movie.
                let pick = (si * 5 + slot_i * 3 + date.ordinal0() as usize) % movies.len();
                let base_cents = if h >= 18 { 1450 } else { 1150 };
                let input = store::ShowtimeInput {
                    start_time: start,
                    end_time: None,
                    base_price_cents: base_cents,
                };
                match store::create_showtime(pool, movies[pick], *screen_id, &input).await {
                    Ok(_) => report.showtimes_created += 1,
                    // Already seeded (same screen and start), or the slot is taken.
                    Err(Error::Conflict(_)) => {}
                    Err(e) => return Err(anyhow::anyhow!("seeding a showtime failed: {e}")),
                }
            }
        }
    }
    // A bulk load: give the planner real statistics now rather than at autovacuum's next pass.
    store::analyze(pool)
        .await
        .map_err(|e| anyhow::anyhow!("analysing the seeded tables failed: {e}"))?;
    Ok(report)
}
