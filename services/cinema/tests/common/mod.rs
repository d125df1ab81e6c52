//! Starts the real cinema service in-process on ephemeral ports against a fresh PostgreSQL
//! database (dropped when the test ends), and builds small catalogues to test against.
#![allow(dead_code)]

use std::time::Duration;

use cinema_service::{Config, domain::Layout, store, testdb::TestDb};
use moviebook_common::{
    auth::{BOOKING_SERVICE, JwtKeys},
    grpc_auth::{AuthedChannel, ServiceBearer},
    proto::cinema_service_client::CinemaServiceClient,
};
use sqlx::PgPool;
use tonic::transport::Channel;

/// A gRPC client as the booking service is one: every call carries its service token.
pub type Client = CinemaServiceClient<AuthedChannel>;
use uuid::Uuid;

pub struct Service {
    pub http: String,
    pub grpc_url: String,
    pub pool: PgPool,
    /// The service's own keys (its JWT secret and issuer): tests mint tokens with them.
    pub keys: std::sync::Arc<JwtKeys>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
    // Last: dropped after the service stopped.
    pub db: TestDb,
}

/// A running service: its URLs and the means to stop it.
struct Running {
    http: String,
    grpc_url: String,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

/// Starts the service with `config` on ephemeral ports; returns once it answers `/ready`.
async fn spawn(config: Config) -> Running {
    let http = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let grpc = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http_url = format!("http://{}", http.local_addr().unwrap());
    let grpc_url = format!("http://{}", grpc.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(cinema_service::run(config, http, grpc, async move {
        let _ = rx.await;
    }));
    // Wait until the HTTP side answers.
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client
            .get(format!("{http_url}/ready"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Running {
        http: http_url,
        grpc_url,
        stop: tx,
        task,
    }
}

async fn connect(grpc_url: &str) -> Channel {
    Channel::from_shared(grpc_url.to_owned())
        .expect("gRPC URL")
        .connect()
        .await
        .expect("connect gRPC")
}

async fn stop(
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
) {
    let _ = stop.send(());
    let result = tokio::time::timeout(Duration::from_secs(15), task)
        .await
        .expect("service stops within 15 s")
        .expect("service task did not panic");
    result.expect("service ran without error");
}

/// Another replica of a [`Service`] on the same database (a second pod).
pub struct Replica {
    grpc_url: String,
    keys: std::sync::Arc<JwtKeys>,
    running: Option<(
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<anyhow::Result<()>>,
    )>,
}

impl Replica {
    /// A client that calls as the booking service.
    pub async fn client(&self) -> Client {
        CinemaServiceClient::with_interceptor(
            connect(&self.grpc_url).await,
            ServiceBearer::new(self.keys.clone(), BOOKING_SERVICE),
        )
    }

    pub async fn stop(mut self) {
        if let Some((tx, task)) = self.running.take() {
            stop(tx, task).await;
        }
    }
}

impl Service {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    /// [`Service::start`] with `tweak` applied to the configuration.
    pub async fn start_with(tweak: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::create(&TestDb::base_url_from_env(), "moviebook_cinema_test")
            .await
            .expect("create the test database");
        let mut config = Config::for_database(&db.url);
        config.sweep_interval = Duration::from_secs(1);
        tweak(&mut config);
        let keys = std::sync::Arc::new(JwtKeys::new(
            &config.jwt_secret,
            &config.jwt_issuer,
            Duration::from_secs(3600),
        ));
        let running = spawn(config).await;
        let pool = store::pool(&db.url, 4, Duration::from_secs(10)).unwrap();
        Self {
            http: running.http,
            grpc_url: running.grpc_url,
            pool,
            keys,
            stop: Some(running.stop),
            task: Some(running.task),
            db,
        }
    }

    /// A second replica on this service's database, its configuration tweaked.
    pub async fn replica(&self, tweak: impl FnOnce(&mut Config)) -> Replica {
        let mut config = Config::for_database(&self.db.url);
        tweak(&mut config);
        let running = spawn(config).await;
        Replica {
            grpc_url: running.grpc_url,
            keys: self.keys.clone(),
            running: Some((running.stop, running.task)),
        }
    }

    /// A client that calls as the booking service.
    pub async fn client(&self) -> Client {
        CinemaServiceClient::with_interceptor(
            self.channel().await,
            ServiceBearer::new(self.keys.clone(), BOOKING_SERVICE),
        )
    }

    /// A client that sends no credentials of its own.
    pub async fn anonymous_client(&self) -> CinemaServiceClient<Channel> {
        CinemaServiceClient::new(self.channel().await)
    }

    async fn channel(&self) -> Channel {
        connect(&self.grpc_url).await
    }

    /// Stops the service and checks it shut down cleanly.
    pub async fn stop(mut self) {
        if let (Some(tx), Some(task)) = (self.stop.take(), self.task.take()) {
            stop(tx, task).await;
        }
        self.pool.close().await;
    }

    /// A cinema with one screen of `rows` × `per_row` seats, a movie and a showtime tomorrow
    /// at 10.00 (base price 10.00). Returns the showtime id.
    pub async fn showtime(&self, rows: usize, per_row: u32) -> Uuid {
        let tag = Uuid::new_v4().simple().to_string();
        let cinema = store::upsert_cinema(&self.pool, None, &format!("Cinema {tag}"), "Somewhere")
            .await
            .unwrap();
        let layout = Layout::simple(rows, per_row, 1.min(rows), 0);
        let screen = store::create_screen(&self.pool, cinema.id, "Screen 1", &layout)
            .await
            .unwrap();
        let movie = store::upsert_movie(
            &self.pool,
            None,
            &store::MovieInput {
                title: format!("Movie {tag}"),
                description: String::new(),
                genre: "Drama".into(),
                duration_minutes: 120,
                rating: "PG".into(),
                poster_url: String::new(),
                release_date: None,
            },
        )
        .await
        .unwrap();
        let start = chrono::Utc::now() + chrono::Duration::days(1);
        store::create_showtime(
            &self.pool,
            movie.id,
            screen.id,
            &store::ShowtimeInput {
                start_time: start,
                end_time: None,
                base_price_cents: 1000,
            },
        )
        .await
        .unwrap()
        .id
    }
}

pub fn seats(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}
