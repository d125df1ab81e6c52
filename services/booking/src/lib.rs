//! MovieBook booking service: the GraphQL API over the catalogue (cinema gRPC) and the booking
//! orchestration (hold → pay → confirm, with compensation), its state machine, the sweeper of
//! lapsed holds, and the transactional outbox of booking.* events.
//!
//! `main.rs` only wires configuration, telemetry and [`run`]; integration tests call [`run`] on
//! an ephemeral port.
#![forbid(unsafe_code)]

pub mod audit;
pub mod clients;
pub mod config;
pub mod crash;
pub mod domain;
pub mod error;
pub mod graphql;
pub mod idempotency;
pub mod limits;
pub mod live;
pub mod service;
pub mod store;
pub mod sweeper;
pub mod ticket;
pub mod web;

use std::{sync::Arc, time::Duration};

use axum::{
    Router,
    routing::{get, get_service},
};
use moviebook_common::{
    auth::JwtKeys,
    mongo,
    ops::{self, Readiness},
    outbox::RelayConfig,
    shutdown::Shutdown,
};

use crate::{
    clients::{CinemaClient, RestClients},
    config::Config,
    graphql::GraphqlState,
    service::Booker,
    store::Store,
};

/// The `source` of this service's events and the name of its connections.
/// Also the identity of its service tokens, the only one the payment service accepts writes from.
pub const SERVICE_NAME: &str = moviebook_common::auth::BOOKING_SERVICE;

/// Connects to MongoDB and builds the store.
pub async fn connect_store(config: &Config) -> anyhow::Result<Store> {
    let db = mongo::connect(&config.mongodb_url, SERVICE_NAME, config::DEFAULT_DB).await?;
    Ok(Store::new(&db))
}

/// `booking-service migrate`: the indexes of the bookings and the outbox.
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let store = connect_store(config).await?;
    store.ensure_indexes().await
}

/// Builds the service's core from its configuration (no background tasks started).
pub async fn build(config: Config) -> anyhow::Result<Arc<Booker>> {
    let config = Arc::new(config);
    let store = connect_store(&config).await?;
    let keys = Arc::new(JwtKeys::from_env(
        &config.jwt_secret,
        &config.jwt_issuer,
        Duration::from_secs(86_400),
    )?);
    // Every call to payment and cinema carries booking's own token: without the key to sign
    // it nothing could be charged or held, so say so at start rather than on the first call.
    if !keys.signs_service_tokens() {
        anyhow::bail!(
            "{} is required once any token key is set: booking signs its calls to payment \
             and cinema with it",
            moviebook_common::auth::SERVICE_SIGNING_KEY_VAR
        );
    }
    let cinema = CinemaClient::new(
        &config.cinema_grpc_url,
        config.upstream_timeout,
        config.cinema_resolve_interval,
        moviebook_common::grpc_auth::ServiceBearer::new(keys.clone(), SERVICE_NAME),
    )?;
    let rest = RestClients::new(
        &config.user_service_url,
        &config.payment_service_url,
        config.upstream_timeout,
    )?;
    Ok(Arc::new(Booker::new(config, store, cinema, rest, keys)))
}

/// The HTTP application: `/graphql` (POST: API, GET: the GraphQL IDE from local assets), the
/// live seat map's WebSocket (`/graphql/ws`), the storefront's files (`/`, `/assets/*`) and the
/// ops endpoints.
pub fn app(booker: Arc<Booker>, feed: Arc<live::SeatFeed>) -> Router {
    let schema = graphql::schema(
        booker.clone(),
        feed.clone(),
        booker.config.max_depth,
        booker.config.max_complexity,
    );
    let ws = graphql::subscription::WsState {
        schema: schema.clone(),
        feed,
        cinema: booker.cinema.clone(),
    };
    let state = GraphqlState {
        schema,
        booker: booker.clone(),
        max_body_bytes: booker.config.max_body_bytes,
    };
    let store = booker.store.clone();
    let cinema = booker.cinema.clone();
    let readiness = Readiness::new()
        .with("mongodb", move || {
            let store = store.clone();
            async move { store.ping().await }
        })
        .with("cinema", move || {
            let cinema = cinema.clone();
            async move { cinema.reached().await }
        });
    let assets = web::WebAssets::load(&booker.config.web_dir);
    let pages = Router::new()
        .route("/graphql/ide/{*file}", get(web::ide_asset))
        .route("/", get(web::storefront))
        .route("/assets/{*file}", get(web::storefront))
        .route("/favicon.svg", get(web::storefront))
        .with_state(assets.clone());
    let api = Router::new()
        .route(
            "/graphql",
            get_service(get(web::ide).with_state::<()>(assets)).post(graphql::graphql),
        )
        .with_state(state)
        .route("/graphql/ws", get(graphql::subscription::ws).with_state(ws))
        .merge(pages);
    ops::with_ops(api, readiness)
}

/// Runs the service on `listener` until `shutdown` fires: HTTP server, outbox relay and
/// (unless disabled) the sweeper.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let store = connect_store(&config).await?;
    store.ensure_indexes().await?;
    let rabbitmq_url = config.rabbitmq_url.clone();
    let relay_config = RelayConfig {
        topology: config.rabbitmq_topology,
        ..RelayConfig::default()
    };
    let booker = build(config).await?;
    let relay = booker
        .store
        .outbox()
        .relay(&rabbitmq_url, SERVICE_NAME, relay_config.clone());
    let relay_task = tokio::spawn(relay.run(shutdown.clone()));
    // Events an earlier version left in the outbox collection; idle once those are out.
    let legacy = booker.store.legacy_outbox().relay(
        &rabbitmq_url,
        SERVICE_NAME,
        RelayConfig {
            idle_poll: std::time::Duration::from_secs(5),
            ..relay_config
        },
    );
    let legacy_task = tokio::spawn(legacy.run(shutdown.clone()));
    let sweeper_task = booker.config.sweeper_enabled.then(|| {
        tokio::spawn(sweeper::run(
            booker.clone(),
            booker.config.sweep_interval,
            shutdown.clone(),
        ))
    });
    let feed = live::SeatFeed::new(booker.cinema.clone(), booker.config.live);
    let feed_task = tokio::spawn(live::run_consumer(
        feed.clone(),
        rabbitmq_url.clone(),
        relay_config.topology,
        shutdown.clone(),
    ));
    let app = app(booker, feed);
    ops::serve_listener(
        listener,
        app,
        moviebook_common::shutdown::wait(shutdown.clone()),
    )
    .await?;
    let _ = relay_task.await;
    let _ = legacy_task.await;
    let _ = feed_task.await;
    if let Some(t) = sweeper_task {
        let _ = t.await;
    }
    Ok(())
}
