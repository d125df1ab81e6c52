//! The REST catalogue over the wire: admin-only writes, validation, pagination and filters,
//! showtime inventory, ops endpoints, and the idempotent seed.

mod common;

use std::time::Duration;

use common::Service;
use moviebook_common::{
    auth::{ADMIN_ROLE, JwtKeys},
    config::defaults,
    proto,
};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

fn keys() -> JwtKeys {
    JwtKeys::new(
        defaults::JWT_SECRET,
        defaults::JWT_ISSUER,
        Duration::from_secs(600),
    )
}

fn admin_token() -> String {
    keys()
        .issue("admin-1", None, &[ADMIN_ROLE.to_owned()])
        .unwrap()
}

fn user_token() -> String {
    keys().issue("user-1", None, &[]).unwrap()
}

struct Api {
    base: String,
    http: Client,
}

impl Api {
    fn new(svc: &Service) -> Self {
        Self {
            base: svc.http.clone(),
            http: Client::new(),
        }
    }

    async fn send(
        &self,
        method: reqwest::Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(reqwest::Method::GET, path, None, None).await
    }

    async fn post(&self, path: &str, body: Value) -> (StatusCode, Value) {
        self.send(
            reqwest::Method::POST,
            path,
            Some(&admin_token()),
            Some(body),
        )
        .await
    }
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("<no code>")
}

fn layout(rows: &[(&str, u32, &str)]) -> Value {
    json!({ "rows": rows.iter().map(|(l, n, t)| json!({"label": l, "seats": n, "seat_type": t})).collect::<Vec<_>>() })
}

#[tokio::test]
async fn catalogue_crud_with_admin_writes_and_validation() {
    let svc = Service::start().await;
    let api = Api::new(&svc);

    // Writes need a token, and an admin one.
    let cinema = json!({"name": "Roxy", "location": "1 Main St"});
    let (s, b) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/cinemas",
            None,
            Some(cinema.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");
    assert_eq!(code(&b), "UNAUTHENTICATED");
    let (s, b) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/cinemas",
            Some(&user_token()),
            Some(cinema.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{b}");
    let (s, b) = api
        .send(
            reqwest::Method::POST,
            "/api/v1/cinemas",
            Some("garbage"),
            Some(cinema.clone()),
        )
        .await;
    assert_eq!(s, StatusCode::UNAUTHORIZED, "{b}");

    let (s, roxy) = api.post("/api/v1/cinemas", cinema.clone()).await;
    assert_eq!(s, StatusCode::CREATED, "{roxy}");
    let roxy_id = roxy["id"].as_str().unwrap().to_owned();
    let (s, b) = api.post("/api/v1/cinemas", cinema.clone()).await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let (s, b) = api
        .post("/api/v1/cinemas", json!({"name": "  ", "location": "x"}))
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"),
        "{b}"
    );
    let (s, b) = api.post("/api/v1/cinemas", json!({"name": "X"})).await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let resp = api
        .http
        .post(format!("{}/api/v1/cinemas", api.base))
        .bearer_auth(admin_token())
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);

    let (s, b) = api
        .post(
            "/api/v1/cinemas",
            json!({"name": "Odeon", "location": "2 High St"}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let odeon_id = b["id"].as_str().unwrap().to_owned();

    // Reads are public; ids are validated.
    let (s, b) = api.get(&format!("/api/v1/cinemas/{roxy_id}")).await;
    assert_eq!((s, b["name"].as_str()), (StatusCode::OK, Some("Roxy")));
    let (s, b) = api.get("/api/v1/cinemas/not-a-uuid").await;
    assert_eq!((s, code(&b)), (StatusCode::BAD_REQUEST, "INVALID_ARGUMENT"));
    let (s, b) = api
        .get(&format!("/api/v1/cinemas/{}", uuid::Uuid::new_v4()))
        .await;
    assert_eq!((s, code(&b)), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    let (s, b) = api.get("/api/v1/cinemas?limit=1").await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(b["total"], 2);
    assert_eq!(b["items"].as_array().unwrap().len(), 1);
    assert_eq!(b["items"][0]["name"], "Odeon");
    let (_, b) = api.get("/api/v1/cinemas?limit=1&offset=1").await;
    assert_eq!(b["items"][0]["name"], "Roxy");
    let (s, _) = api.get("/api/v1/cinemas?limit=1000").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = api.get("/api/v1/cinemas?limit=abc").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Update.
    let (s, b) = api
        .send(
            reqwest::Method::PUT,
            &format!("/api/v1/cinemas/{roxy_id}"),
            Some(&admin_token()),
            Some(json!({"name": "Roxy", "location": "9 New Rd"})),
        )
        .await;
    assert_eq!(
        (s, b["location"].as_str()),
        (StatusCode::OK, Some("9 New Rd")),
        "{b}"
    );

    // Screens: layout validated; total seats derived.
    let (s, b) = api
        .post("/api/v1/screens", json!({"cinema_id": roxy_id, "name": "One", "layout": layout(&[("A", 4, "standard"), ("A", 4, "vip")])}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = api
        .post("/api/v1/screens", json!({"cinema_id": roxy_id, "name": "One", "layout": layout(&[("A", 4, "standard"), ("B", 4, "gold")])}))
        .await;
    assert_eq!(s, StatusCode::UNPROCESSABLE_ENTITY, "{b}");
    let (s, b) = api
        .post("/api/v1/screens", json!({"cinema_id": uuid::Uuid::new_v4(), "name": "One", "layout": layout(&[("A", 4, "standard")])}))
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND, "{b}");
    let (s, screen) = api
        .post("/api/v1/screens", json!({"cinema_id": roxy_id, "name": "One", "layout": layout(&[("A", 4, "standard"), ("B", 5, "premium"), ("C", 3, "vip")])}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{screen}");
    assert_eq!(screen["total_seats"], 12);
    let screen_id = screen["id"].as_str().unwrap().to_owned();
    let (s, b) = api
        .post("/api/v1/screens", json!({"cinema_id": odeon_id, "name": "Big", "layout": layout(&[("A", 10, "standard")])}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let odeon_screen = b["id"].as_str().unwrap().to_owned();
    let (_, b) = api
        .get(&format!("/api/v1/screens?cinema_id={roxy_id}"))
        .await;
    assert_eq!(b["total"], 1);

    // Movies.
    let (s, b) = api
        .post(
            "/api/v1/movies",
            json!({"title": "Dune", "genre": "Sci-Fi", "duration_minutes": 0}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, b) = api.post("/api/v1/movies", json!({"title": "Dune", "genre": "Sci-Fi", "duration_minutes": 155, "poster_url": "ftp://x"})).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, dune) = api
        .post("/api/v1/movies", json!({"title": "Dune", "genre": "Sci-Fi", "duration_minutes": 155, "rating": "PG-13", "release_date": "2021-10-22", "poster_url": "https://p/d.jpg"}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{dune}");
    let dune_id = dune["id"].as_str().unwrap().to_owned();
    let (s, heat) = api
        .post(
            "/api/v1/movies",
            json!({"title": "Heat", "genre": "Crime", "duration_minutes": 170}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{heat}");
    let heat_id = heat["id"].as_str().unwrap().to_owned();
    let (_, b) = api.get("/api/v1/movies?genre=sci-fi").await;
    assert_eq!(b["total"], 1);
    assert_eq!(b["items"][0]["title"], "Dune");

    // Showtimes: creation builds the inventory; overlaps refused; filters work.
    let day = (chrono::Utc::now() + chrono::Duration::days(2)).date_naive();
    let at = |h: u32| day.and_hms_opt(h, 0, 0).unwrap().and_utc().to_rfc3339();
    let (s, b) = api
        .post("/api/v1/showtimes", json!({"movie_id": dune_id, "screen_id": screen_id, "start_time": at(10), "base_price": -3}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{b}");
    let (s, st1) = api
        .post("/api/v1/showtimes", json!({"movie_id": dune_id, "screen_id": screen_id, "start_time": at(10), "base_price": 12.5}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{st1}");
    assert_eq!(st1["total_seats"], 12);
    assert_eq!(st1["available_seats"], 12);
    assert_eq!(st1["cinema_id"].as_str(), Some(roxy_id.as_str()));
    let st1_id = st1["id"].as_str().unwrap().to_owned();
    let (s, b) = api
        .post("/api/v1/showtimes", json!({"movie_id": heat_id, "screen_id": screen_id, "start_time": at(12), "base_price": 10}))
        .await;
    assert_eq!(
        (s, code(&b)),
        (StatusCode::CONFLICT, "CONFLICT"),
        "overlap: {b}"
    );
    let (s, b) = api
        .post("/api/v1/showtimes", json!({"movie_id": heat_id, "screen_id": odeon_screen, "start_time": at(12), "base_price": 10}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");
    let (s, b) = api
        .post("/api/v1/showtimes", json!({"movie_id": heat_id, "screen_id": odeon_screen, "start_time": (chrono::Utc::now() + chrono::Duration::days(4)).to_rfc3339(), "base_price": 10}))
        .await;
    assert_eq!(s, StatusCode::CREATED, "{b}");

    let (_, b) = api
        .get(&format!("/api/v1/showtimes?movie_id={heat_id}"))
        .await;
    assert_eq!(b["total"], 2);
    let (_, b) = api
        .get(&format!("/api/v1/showtimes?cinema_id={roxy_id}"))
        .await;
    assert_eq!(b["total"], 1);
    let (_, b) = api.get(&format!("/api/v1/showtimes?date={day}")).await;
    assert_eq!(b["total"], 2, "{b}");
    let (_, b) = api
        .get(&format!("/api/v1/showtimes?date={day}&limit=1&offset=1"))
        .await;
    assert_eq!(b["items"].as_array().unwrap().len(), 1);
    assert_eq!(b["items"][0]["movie_id"].as_str(), Some(heat_id.as_str()));
    let (s, _) = api.get("/api/v1/showtimes?date=tomorrow").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    let (s, _) = api.get("/api/v1/showtimes?movie_id=123").await;
    assert_eq!(s, StatusCode::BAD_REQUEST);

    // Seat map with prices per type.
    let (s, map) = api.get(&format!("/api/v1/showtimes/{st1_id}/seats")).await;
    assert_eq!(s, StatusCode::OK);
    let seats = map["seats"].as_array().unwrap();
    assert_eq!(seats.len(), 12);
    let price = |n: &str| {
        seats.iter().find(|s| s["seat_number"] == n).unwrap()["price"]
            .as_f64()
            .unwrap()
    };
    assert_eq!((price("A1"), price("B5"), price("C3")), (12.5, 18.75, 25.0));

    // Deletes: refused while referenced or while seats are held.
    let (s, b) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/movies/{dune_id}"),
            Some(&admin_token()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    let mut grpc = svc.client().await;
    let lock = grpc
        .lock_seats(proto::LockSeatsRequest {
            showtime_id: st1_id.clone(),
            seat_numbers: vec!["A1".into()],
            booking_id: "held".into(),
            lock_duration_seconds: 60,
        })
        .await
        .unwrap()
        .into_inner();
    assert!(lock.success);
    assert_eq!(lock.total_price, 12.5);
    let (_, b) = api.get(&format!("/api/v1/showtimes/{st1_id}")).await;
    assert_eq!(b["available_seats"], 11);
    let (s, b) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/showtimes/{st1_id}"),
            Some(&admin_token()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::CONFLICT, "{b}");
    grpc.release_seat_lock(proto::ReleaseSeatLockRequest {
        lock_id: lock.lock_id,
        booking_id: "held".into(),
    })
    .await
    .unwrap();
    let (s, _) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/showtimes/{st1_id}"),
            Some(&user_token()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, b) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/showtimes/{st1_id}"),
            Some(&admin_token()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");
    let (s, _) = api.get(&format!("/api/v1/showtimes/{st1_id}")).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    let (s, b) = api
        .send(
            reqwest::Method::DELETE,
            &format!("/api/v1/movies/{dune_id}"),
            Some(&admin_token()),
            None,
        )
        .await;
    assert_eq!(s, StatusCode::NO_CONTENT, "{b}");

    // Unknown route: shared error shape.
    let (s, b) = api.get("/api/v1/nothing").await;
    assert_eq!((s, code(&b)), (StatusCode::NOT_FOUND, "NOT_FOUND"));
    svc.stop().await;
}

#[tokio::test]
async fn ops_endpoints_and_grpc_metrics() {
    let svc = Service::start().await;
    let api = Api::new(&svc);
    let (s, b) = api.get("/actuator/health").await;
    assert_eq!(
        (s, b["status"].as_str()),
        (StatusCode::OK, Some("UP")),
        "{b}"
    );
    assert_eq!(b["components"]["postgres"]["status"], "UP");
    let (s, _) = api.get("/health").await;
    assert_eq!(s, StatusCode::OK);
    let (s, b) = api.get("/ready").await;
    assert_eq!(s, StatusCode::OK, "{b}");
    let mut grpc = svc.client().await;
    grpc.list_cinemas(proto::ListCinemasRequest {})
        .await
        .unwrap();
    let _ = grpc
        .get_showtime_details(proto::GetShowtimeDetailsRequest {
            showtime_id: "bad".into(),
        })
        .await;
    let (s, text) = api.get("/metrics").await;
    assert_eq!(s, StatusCode::OK);
    let text = text.as_str().unwrap_or_default().to_owned();
    assert!(
        text.lines().any(|l| l.contains("protocol=\"grpc\"")
            && l.contains("/cinema.CinemaService/ListCinemas")
            && l.contains("status=\"0\"")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("/cinema.CinemaService/GetShowtimeDetails")
                && l.contains("status=\"3\"")),
        "{text}"
    );
    svc.stop().await;
}

#[tokio::test]
async fn seed_is_idempotent_and_realistic() {
    let svc = Service::start().await;
    let counts = |pool: sqlx::PgPool| async move {
        let mut out = Vec::new();
        for t in ["cinemas", "screens", "movies", "showtimes", "seats"] {
            let n: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM {t}"))
                .fetch_one(&pool)
                .await
                .unwrap();
            out.push(n);
        }
        out
    };
    cinema_service::seed::run(&svc.pool).await.unwrap();
    let first = counts(svc.pool.clone()).await;
    cinema_service::seed::run(&svc.pool).await.unwrap();
    let second = counts(svc.pool.clone()).await;
    assert_eq!(first, second, "a second seed adds nothing");
    assert!(
        first[0] >= 3 && first[1] >= 6 && first[2] >= 12,
        "{first:?}"
    );
    assert!(first[3] >= 6 * 6 * 4, "a week of showtimes: {first:?}");
    let types: Vec<String> = sqlx::query_scalar("SELECT DISTINCT seat_type FROM seats ORDER BY 1")
        .fetch_all(&svc.pool)
        .await
        .unwrap();
    assert_eq!(types, ["premium", "standard", "vip"]);
    // The catalogue call serves it.
    let mut grpc = svc.client().await;
    let movies = grpc
        .list_movies(proto::ListMoviesRequest::default())
        .await
        .unwrap()
        .into_inner();
    assert_eq!(movies.movies.len(), 12);
    assert!(movies.movies.iter().any(|m| !m.showtimes.is_empty()));
    assert_eq!(movies.cinemas.len(), 3);
    assert_inventory_has_statistics(&svc.pool).await;
    svc.stop().await;
}

/// A bulk load must leave planner statistics behind: every pooled connection caches a generic
/// plan of the seat lookups, and one made without statistics can read every seat of a showtime
/// per call (docs/cinema.md, "Statistics and cached plans").
async fn assert_inventory_has_statistics(pool: &sqlx::PgPool) {
    let mut conn = pool.acquire().await.unwrap();
    let analysed: Vec<String> = sqlx::query_scalar(
        "SELECT relname::text FROM pg_stat_user_tables \
         WHERE relname IN ('seats', 'seat_locks', 'showtimes') AND last_analyze IS NOT NULL \
         ORDER BY 1",
    )
    .fetch_all(&mut *conn)
    .await
    .unwrap();
    assert_eq!(
        analysed,
        ["seat_locks", "seats", "showtimes"],
        "seed ends with ANALYZE"
    );
    // Migration 0002: autovacuum re-analyses the inventory early.
    let options: Vec<String> =
        sqlx::query_scalar("SELECT unnest(reloptions) FROM pg_class WHERE relname = 'seat_locks'")
            .fetch_all(&mut *conn)
            .await
            .unwrap();
    assert!(
        options.contains(&"autovacuum_analyze_scale_factor=0.02".to_owned()),
        "{options:?}"
    );
}

#[tokio::test]
async fn refuses_to_serve_an_outdated_schema() {
    let db = cinema_service::testdb::TestDb::create(
        &cinema_service::testdb::TestDb::base_url_from_env(),
        "moviebook_cinema_test",
    )
    .await
    .unwrap();
    let pool = cinema_service::store::pool(&db.url, 1, Duration::from_secs(5)).unwrap();
    sqlx::query("DELETE FROM _sqlx_migrations")
        .execute(&pool)
        .await
        .unwrap();
    pool.close().await;
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let result = tokio::time::timeout(
        Duration::from_secs(10),
        cinema_service::run(
            cinema_service::Config::for_database(&db.url),
            http,
            grpc,
            std::future::pending(),
        ),
    )
    .await
    .expect("start-up fails fast instead of serving");
    let err = result.expect_err("an outdated schema is refused");
    assert!(err.to_string().contains("cinema-service migrate"), "{err}");
}
