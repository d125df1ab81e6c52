//! Starts the REAL MovieBook services in-process on ephemeral ports — cinema (fresh PostgreSQL
//! database, seeded), user, payment, notification (each on its own MongoDB database, its own
//! queue and Redis prefix) and booking — against the backing servers of the test profile, and
//! talks to them over the wire.
#![allow(dead_code)]

use std::time::Duration;

use cinema_service::testdb::TestDb;
use moviebook_common::shutdown;
use serde_json::{Value, json};
use tokio::{net::TcpListener, task::JoinHandle};

/// A required variable of the test environment; missing → a clear failure, never a skip.
pub fn env(name: &str) -> String {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v,
        _ => panic!(
            "{name} is not set: run `eval \"$(scripts/stack.sh test env)\"` (or `make test`) so the booking end-to-end tests reach the real backing servers"
        ),
    }
}

/// `base` (a mongodb:// URL) pointing at database `db`.
pub fn mongo_url(base: &str, db: &str) -> String {
    let (head, query) = match base.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (base, None),
    };
    let authority = head.find("://").map_or(0, |i| i + 3);
    let host_end = head[authority..]
        .find('/')
        .map_or(head.len(), |i| authority + i);
    let mut url = format!("{}/{db}", &head[..host_end]);
    if let Some(q) = query {
        url.push('?');
        url.push_str(q);
    }
    url
}

pub struct Options {
    pub hold_seconds: u64,
    pub notification: bool,
    pub sweeper: bool,
    /// Bounds of the live seat map's WebSocket.
    pub live: booking_service::live::LiveLimits,
    /// `USER_MUTATIONS_PER_MINUTE` (the service's default, 120, unless a test needs another).
    pub user_mutations_per_minute: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            hold_seconds: 300,
            notification: true,
            sweeper: true,
            live: booking_service::live::LiveLimits::default(),
            user_mutations_per_minute: 120,
        }
    }
}

pub struct Stack {
    pub graphql: String,
    pub user_url: String,
    pub payment_url: String,
    pub notification_url: Option<String>,
    pub cinema_grpc: String,
    /// The booking service's database URL, for a second replica built by a test.
    pub booking_db_url: String,
    pub booking_db: mongodb::Database,
    pub notification_db: mongodb::Database,
    pub run_id: String,
    pub http: reqwest::Client,
    stop: tokio::sync::watch::Sender<bool>,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
    _pg: TestDb,
}

async fn listener() -> (TcpListener, String) {
    let l = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind 127.0.0.1:0");
    let url = format!("http://{}", l.local_addr().expect("local addr"));
    (l, url)
}

impl Stack {
    pub async fn start(opts: Options) -> Self {
        let mongo = env("MONGODB_URL");
        let rabbit = env("RABBITMQ_URL");
        let redis = env("REDIS_URL");
        let pg = TestDb::create(&env("DATABASE_URL"), "moviebook_cinema_test")
            .await
            .expect("create the cinema test database");
        let run_id = uuid::Uuid::new_v4().simple().to_string();
        let db_name = |svc: &str| format!("moviebook_test_{svc}_{run_id}");
        let (stop, rx) = shutdown::channel();
        let mut tasks = Vec::new();

        // cinema: seeded catalogue
        {
            let pool = cinema_service::store::pool(&pg.url, 2, Duration::from_secs(10))
                .expect("cinema pool");
            cinema_service::seed::run(&pool)
                .await
                .expect("seed the catalogue");
            pool.close().await;
        }
        let mut cinema_cfg = cinema_service::Config::for_database(&pg.url);
        cinema_cfg.sweep_interval = Duration::from_secs(1);
        let (cinema_http, _) = listener().await;
        let (cinema_grpc_l, cinema_grpc) = listener().await;
        tasks.push(tokio::spawn(cinema_service::run(
            cinema_cfg,
            cinema_http,
            cinema_grpc_l,
            shutdown::wait(rx.clone()),
        )));

        // user
        let mut user_cfg = user_service::config::Config::from_env().expect("user config");
        user_cfg.mongodb_url = mongo_url(&mongo, &db_name("user"));
        let (user_l, user_url) = listener().await;
        tasks.push(tokio::spawn(user_service::run(
            user_cfg,
            user_l,
            shutdown::wait(rx.clone()),
        )));

        // payment
        let mut pay_cfg = payment_service::config::Config::from_env().expect("payment config");
        pay_cfg.mongodb_url = mongo_url(&mongo, &db_name("payment"));
        pay_cfg.rabbitmq_url = rabbit.clone();
        pay_cfg.failure_rate = 0.0;
        let (pay_l, payment_url) = listener().await;
        tasks.push(tokio::spawn(payment_service::run(
            pay_cfg,
            pay_l,
            shutdown::wait(rx.clone()),
        )));

        // notification
        let notification_db_url = mongo_url(&mongo, &db_name("notification"));
        let notification_url = if opts.notification {
            let mut cfg =
                notification_service::config::Config::from_env().expect("notification config");
            cfg.mongodb_url = notification_db_url.clone();
            cfg.rabbitmq_url = rabbit.clone();
            cfg.redis_url = redis.clone();
            cfg.queue = format!("notification.events.test_{run_id}");
            cfg.redis_prefix = format!("test_{run_id}");
            let (l, url) = listener().await;
            tasks.push(tokio::spawn(notification_service::run(cfg, l, rx.clone())));
            Some(url)
        } else {
            None
        };

        // booking
        let booking_db_url = mongo_url(&mongo, &db_name("booking"));
        let mut cfg = booking_service::config::Config::for_urls(
            &booking_db_url,
            &rabbit,
            &cinema_grpc,
            &user_url,
            &payment_url,
        );
        cfg.hold = Duration::from_secs(opts.hold_seconds);
        cfg.sweep_interval = Duration::from_secs(1);
        cfg.sweeper_enabled = opts.sweeper;
        cfg.live = opts.live;
        cfg.user_mutations_per_minute = opts.user_mutations_per_minute;
        let (booking_l, booking_url) = listener().await;
        tasks.push(tokio::spawn(booking_service::run(
            cfg,
            booking_l,
            rx.clone(),
        )));

        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .expect("http client");
        let mut urls = vec![booking_url.clone(), user_url.clone(), payment_url.clone()];
        urls.extend(notification_url.clone());
        for url in &urls {
            wait_ready(&http, url).await;
        }
        let booking_db = mongodb::Client::with_uri_str(&booking_db_url)
            .await
            .expect("mongo client")
            .database(&db_name("booking"));
        let notification_db = mongodb::Client::with_uri_str(&notification_db_url)
            .await
            .expect("mongo client")
            .database(&db_name("notification"));
        Self {
            graphql: format!("{booking_url}/graphql"),
            user_url,
            payment_url,
            notification_url,
            cinema_grpc,
            booking_db_url: booking_db_url.clone(),
            booking_db,
            notification_db,
            run_id,
            http,
            stop,
            tasks,
            _pg: pg,
        }
    }

    /// Stops every service and waits for them (so the PostgreSQL database can be dropped).
    pub async fn stop(mut self) {
        let _ = self.stop.send(true);
        for t in self.tasks.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
        }
        for db in [&self.booking_db, &self.notification_db] {
            let _ = db.drop().await;
        }
    }

    /// POST /graphql; returns the HTTP status and the JSON body.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> (u16, Value) {
        let mut req = self
            .http
            .post(&self.graphql)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await.expect("graphql request");
        let status = resp.status().as_u16();
        let body = resp.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }

    /// Registers and logs in a fresh user; returns (user id, token).
    pub async fn user(&self) -> (String, String) {
        let email = format!("e2e-{}@example.com", uuid::Uuid::new_v4().simple());
        let password = "correct horse battery staple";
        let r = self
            .http
            .post(format!("{}/api/v1/register", self.user_url))
            .json(&json!({"email": email, "password": password, "first_name": "Ada", "last_name": "Lovelace"}))
            .send()
            .await
            .expect("register");
        assert_eq!(r.status().as_u16(), 201, "register: {:?}", r.text().await);
        let r = self
            .http
            .post(format!("{}/api/v1/login", self.user_url))
            .json(&json!({"email": email, "password": password}))
            .send()
            .await
            .expect("login");
        assert_eq!(r.status().as_u16(), 200);
        let v: Value = r.json().await.expect("login json");
        (
            v["user"]["id"].as_str().expect("user id").to_owned(),
            v["token"].as_str().expect("token").to_owned(),
        )
    }

    /// Every showtime of the catalogue (id, available seats) as browsed through GraphQL.
    pub async fn showtimes(&self) -> Vec<String> {
        let (status, body) = self
            .gql(
                None,
                "{ movies(limit: 50) { id title showtimes { id availableSeats } } }",
                json!({}),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        assert!(body["errors"].is_null(), "{body}");
        body["data"]["movies"]
            .as_array()
            .expect("movies")
            .iter()
            .flat_map(|m| m["showtimes"].as_array().cloned().unwrap_or_default())
            .filter(|s| s["availableSeats"].as_i64().unwrap_or(0) > 20)
            .filter_map(|s| s["id"].as_str().map(str::to_owned))
            .collect()
    }

    /// The first showtime with seats to spare.
    pub async fn first_showtime(&self) -> String {
        self.showtimes()
            .await
            .into_iter()
            .next()
            .expect("a showtime with free seats")
    }

    /// Books `n` free seats of the first showtime as `user_id`; panics unless it succeeded.
    pub async fn book(&self, user_id: &str, token: &str, n: usize) -> Booked {
        let showtime = self.first_showtime().await;
        let seats = self.free_seats(&showtime, n).await;
        let (_, body) = self
            .gql(
                Some(token),
                CREATE,
                json!({"u": user_id, "s": showtime, "seats": seats}),
            )
            .await;
        let id = body["data"]["createBooking"]["booking"]["id"]
            .as_str()
            .unwrap_or_else(|| panic!("createBooking failed: {body}"))
            .to_owned();
        Booked {
            showtime,
            seats,
            id,
            body,
        }
    }

    /// `n` available seats of a showtime, from its seat map.
    pub async fn free_seats(&self, showtime: &str, n: usize) -> Vec<String> {
        let (_, body) = self
            .gql(
                None,
                "query($id: ID!) { showtime(id: $id) { seats { seatNumber status } } }",
                json!({"id": showtime}),
            )
            .await;
        let seats: Vec<String> = body["data"]["showtime"]["seats"]
            .as_array()
            .unwrap_or_else(|| panic!("seat map: {body}"))
            .iter()
            .filter(|s| s["status"] == "AVAILABLE")
            .filter_map(|s| s["seatNumber"].as_str().map(str::to_owned))
            .take(n)
            .collect();
        assert_eq!(seats.len(), n, "not enough free seats in {showtime}");
        seats
    }

    pub async fn booking_status(&self, token: &str, id: &str) -> String {
        let (_, body) = self
            .gql(
                Some(token),
                "query($id: ID!) { getBooking(bookingId: $id) { status } }",
                json!({"id": id}),
            )
            .await;
        body["data"]["getBooking"]["status"]
            .as_str()
            .unwrap_or_else(|| panic!("getBooking: {body}"))
            .to_owned()
    }

    /// Seat statuses of a showtime, by seat number.
    pub async fn seat_statuses(&self, showtime: &str) -> std::collections::HashMap<String, String> {
        let (_, body) = self
            .gql(
                None,
                "query($id: ID!) { showtime(id: $id) { seats { seatNumber status } } }",
                json!({"id": showtime}),
            )
            .await;
        body["data"]["showtime"]["seats"]
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .filter_map(|s| {
                Some((
                    s["seatNumber"].as_str()?.to_owned(),
                    s["status"].as_str()?.to_owned(),
                ))
            })
            .collect()
    }
}

impl Stack {
    /// A second booking replica on the same stores and services (no server, no sweeper task),
    /// whose stuck-payment timeout is 0: tests drive its store and sweeper by hand, as a
    /// replica that outlived a crashed or stalled one.
    pub async fn replica(&self) -> std::sync::Arc<booking_service::service::Booker> {
        self.replica_reaching(&self.cinema_grpc, &self.payment_url)
            .await
    }

    /// [`Stack::replica`] with other cinema / payment addresses (a dead port: unreachable).
    pub async fn replica_reaching(
        &self,
        cinema_grpc: &str,
        payment_url: &str,
    ) -> std::sync::Arc<booking_service::service::Booker> {
        let mut cfg = booking_service::config::Config::for_urls(
            &self.booking_db_url,
            &env("RABBITMQ_URL"),
            cinema_grpc,
            &self.user_url,
            payment_url,
        );
        cfg.paying_timeout = Duration::ZERO;
        cfg.upstream_timeout = Duration::from_secs(2);
        booking_service::build(cfg).await.expect("a second replica")
    }

    /// The booking service's own token, as it calls the payment service.
    pub fn service_token(&self) -> String {
        use moviebook_common::config::defaults;
        moviebook_common::auth::JwtKeys::new(
            defaults::JWT_SECRET,
            defaults::JWT_ISSUER,
            Duration::from_secs(600),
        )
        .issue_service_token(moviebook_common::auth::BOOKING_SERVICE)
        .expect("service token")
    }

    /// Charges `amount` for a booking as the booking service does (key = the booking id).
    pub async fn charge(&self, booking_id: &str, user_id: &str, amount: f64) -> Value {
        let r = self
            .http
            .post(format!("{}/payments", self.payment_url))
            .bearer_auth(self.service_token())
            .header("Idempotency-Key", booking_id)
            .json(
                &json!({"booking_id": booking_id, "user_id": user_id, "amount": amount,
                          "payment_method": "credit_card"}),
            )
            .send()
            .await
            .expect("charge");
        assert!(r.status().is_success(), "charge: {}", r.status());
        r.json().await.expect("transaction")
    }

    /// The booking's transactions as its user reads them.
    pub async fn payments(&self, token: &str, booking_id: &str) -> Vec<Value> {
        let v: Value = self
            .http
            .get(format!(
                "{}/payments/booking/{booking_id}",
                self.payment_url
            ))
            .bearer_auth(token)
            .send()
            .await
            .expect("payments")
            .json()
            .await
            .expect("json");
        v.as_array().cloned().unwrap_or_default()
    }

    /// Moves a booking's hold (and its PAYING claim) into the past, as if time had passed.
    pub async fn age(&self, booking_id: &str) {
        let past = bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 120_000);
        self.booking_db
            .collection::<bson::Document>("bookings")
            .update_one(
                bson::doc! { "_id": booking_id },
                bson::doc! { "$set": { "hold_expires_at": past, "paying_since": past } },
            )
            .await
            .expect("age the booking");
    }

    /// Moves an unfinished cancellation's request into the past, so that the sweeper takes it
    /// over (it leaves a cancellation to its request for 30 s). Bookings without one are left
    /// alone.
    pub async fn age_cancellation(&self, booking_id: &str) {
        let past = bson::DateTime::from_millis(bson::DateTime::now().timestamp_millis() - 120_000);
        self.booking_db
            .collection::<bson::Document>("bookings")
            .update_one(
                bson::doc! { "_id": booking_id, "cancel_requested_at": { "$ne": bson::Bson::Null } },
                bson::doc! { "$set": { "cancel_requested_at": past } },
            )
            .await
            .expect("age the cancellation");
    }

    /// Moves the cinema's hold of a booking into the past, as time passing does: the cinema's
    /// own database row, so ConfirmSeatBooking answers as it would for a lapsed hold.
    pub async fn lapse_cinema_hold(&self, booking_id: &str) {
        let pool = cinema_service::store::pool(&self._pg.url, 1, Duration::from_secs(10))
            .expect("cinema pool");
        let n = sqlx::query(
            "UPDATE seat_locks SET expires_at = now() - interval '2 minutes' \
             WHERE booking_id = $1 AND status = 'HELD'",
        )
        .bind(booking_id)
        .execute(&pool)
        .await
        .expect("lapse the cinema hold")
        .rows_affected();
        assert_eq!(n, 1, "one held lock for booking {booking_id}");
        sqlx::query(
            "UPDATE seats SET locked_until = now() - interval '2 minutes' \
             WHERE booking_id = $1 AND status = 'LOCKED'",
        )
        .bind(booking_id)
        .execute(&pool)
        .await
        .expect("lapse the seats' hold");
        pool.close().await;
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

async fn wait_ready(http: &reqwest::Client, url: &str) {
    for _ in 0..200 {
        if http
            .get(format!("{url}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{url} did not become ready within 10 s");
}

/// A booking made by [`Stack::book`].
pub struct Booked {
    pub showtime: String,
    pub seats: Vec<String>,
    pub id: String,
    /// createBooking's whole answer.
    pub body: Value,
}

pub const CREATE: &str = "mutation($u: ID!, $s: ID!, $seats: [String!]!) { createBooking(userId: $u, showtimeId: $s, seatNumbers: $seats) { success message lockId booking { id status totalAmount createdAt seats } } }";
pub const PAY: &str = "mutation($b: ID!, $m: String!, $d: String) { processPayment(bookingId: $b, paymentMethod: $m, paymentDetails: $d) { success message transactionId booking { status confirmedAt } } }";
pub const CANCEL: &str =
    "mutation($b: ID!) { cancelBooking(bookingId: $b) { success message booking { status } } }";

/// Runs the reconciliation audit, the oracle of the money tests, and insists that it found
/// nothing wrong; answers the report for the test's own checks of counts and sums.
pub async fn audit_clean(
    booker: &booking_service::service::Booker,
    context: &str,
) -> booking_service::audit::Report {
    let report = booking_service::audit::run(booker).await.expect("audit");
    assert_eq!(
        report.inconsistencies,
        Vec::<String>::new(),
        "{context}: {:?}",
        report.lines()
    );
    report
}

/// The `extensions.code` of the first error.
pub fn code(body: &Value) -> String {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// What the booking service really published (see [`moviebook_common::amqp::EventTap`]).
pub async fn event_tap(routing_key: &str) -> moviebook_common::amqp::EventTap {
    moviebook_common::amqp::EventTap::bind(&env("RABBITMQ_URL"), routing_key)
        .await
        .expect("bind an event tap on RabbitMQ")
}

/// Bookings whose events the relay has not published yet.
pub async fn unpublished(db: &mongodb::Database) -> u64 {
    db.collection::<bson::Document>("bookings")
        .count_documents(
            bson::doc! { moviebook_common::outbox::embedded::SINCE: { "$exists": true } },
        )
        .await
        .expect("count bookings with pending events")
}
