//! MovieBook cinema service: the catalogue (cinemas, screens, movies, showtimes) and the seat
//! inventory in PostgreSQL, served over gRPC (proto/cinema.proto) to the booking service and as
//! a REST catalogue.
//!
//! [`run`] serves both on already-bound listeners, so integration tests and the benchmark start
//! the real service in-process on ephemeral ports.
#![forbid(unsafe_code)]

pub mod availability;
pub mod config;
pub mod domain;
pub mod error;
pub mod grpc;
pub mod routes;
pub mod seed;
pub mod store;
pub mod sweeper;
pub mod testdb;

use std::{future::Future, sync::Arc};

use moviebook_common::{
    auth::JwtKeys, ops::Readiness, proto::cinema_service_server::CinemaServiceServer, shutdown,
};
use sqlx::PgPool;
use tokio::net::TcpListener;

pub use config::Config;

/// Opens the pool described by `config`.
pub fn pool(config: &Config) -> anyhow::Result<PgPool> {
    Ok(store::pool(
        &config.database_url,
        config.db_max_connections,
        config.db_acquire_timeout,
    )?)
}

/// Serves REST on `http` and gRPC on `grpc` until `shutdown` resolves, with the expiry
/// sweeper running alongside. Refuses to start on an outdated schema.
pub async fn run(
    config: Config,
    http: TcpListener,
    grpc: TcpListener,
    shutdown_signal: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let pool = pool(&config)?;
    store::check_schema(&pool).await?;
    let keys = Arc::new(JwtKeys::from_env(
        &config.jwt_secret,
        &config.jwt_issuer,
        std::time::Duration::from_secs(3600),
    )?);
    let readiness = {
        let pool = pool.clone();
        Readiness::new().with("postgres", move || {
            let pool = pool.clone();
            async move { store::ping(&pool).await }
        })
    };
    // Seat locks, confirmations and releases are the booking service's calls alone: every
    // gRPC request must carry its service token (moviebook_common::grpc_auth).
    let grpc_auth = moviebook_common::grpc_auth::RequireService::new(
        keys.clone(),
        &[moviebook_common::auth::BOOKING_SERVICE],
    );
    let app = routes::app(
        routes::AppState {
            pool: pool.clone(),
            keys,
        },
        readiness,
    );

    let (stop_tx, stop_rx) = shutdown::channel();
    let sweeper = tokio::spawn(sweeper::run(
        pool.clone(),
        config.sweep_interval,
        stop_rx.clone(),
    ));

    let grpc_service = tonic::service::interceptor::InterceptedService::new(
        CinemaServiceServer::new(grpc::Grpc::new(
            pool.clone(),
            availability::SeatBoards::new(config.seat_cache_ttl),
        ))
        .max_decoding_message_size(1024 * 1024),
        grpc_auth,
    );
    let grpc_addr = grpc.local_addr()?;
    let incoming = tonic::transport::server::TcpIncoming::from(grpc).with_nodelay(Some(true));
    let grpc_server = tonic::transport::Server::builder()
        .layer(grpc::MetricsLayer)
        .add_service(grpc_service)
        .serve_with_incoming_shutdown(incoming, shutdown::wait(stop_rx.clone()));
    tracing::info!(addr = %grpc_addr, "gRPC listening");
    let http_server = moviebook_common::ops::serve_listener(http, app, shutdown::wait(stop_rx));

    // First signal stops both servers and the sweeper.
    let trigger = tokio::spawn(async move {
        shutdown_signal.await;
        let _ = stop_tx.send(true);
    });
    let (grpc_result, http_result) = tokio::join!(grpc_server, http_server);
    trigger.abort();
    let _ = sweeper.await;
    pool.close().await;
    grpc_result?;
    http_result?;
    tracing::info!("stopped");
    Ok(())
}
