//! MovieBook payment service: a simulated card gateway, deterministic by test card, with
//! idempotent payments and refunds whose events leave through the transactional outbox.
//!
//! `main.rs` only wires configuration, telemetry and [`run`]; integration tests call [`run`]
//! with a listener on port 0 and talk to the real service over HTTP.
#![forbid(unsafe_code)]

pub mod config;
pub mod domain;
pub mod error;
pub mod events;
pub mod routes;
pub mod store;

use std::{future::Future, sync::Arc};

use axum::{
    Router,
    extract::{DefaultBodyLimit, FromRef},
    routing::{get, post},
};
use mongodb::Database;
use moviebook_common::{
    auth::JwtKeys,
    ops::{self, Readiness},
    outbox::RelayConfig,
};

pub use config::Config;
use store::Store;

/// Request bodies are small JSON objects; anything bigger is refused before parsing.
const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub keys: Arc<JwtKeys>,
    pub failure_rate: f64,
}

impl FromRef<AppState> for Arc<JwtKeys> {
    fn from_ref(state: &AppState) -> Self {
        state.keys.clone()
    }
}

/// The routes of the service plus `/health`, `/ready` and `/metrics`.
pub fn app(state: AppState, readiness: Readiness) -> Router {
    let api = Router::new()
        .route("/payments", post(routes::create_payment))
        .route("/payments/{transaction_id}", get(routes::get_payment))
        .route(
            "/payments/booking/{booking_id}",
            get(routes::payments_of_booking),
        )
        .route("/refunds", post(routes::create_refund))
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    ops::with_ops(api, readiness)
}

pub async fn connect(config: &Config) -> anyhow::Result<Database> {
    Ok(
        moviebook_common::mongo::connect(&config.mongodb_url, "payment-service", &config.database)
            .await?,
    )
}

/// `payment-service migrate`: creates the indexes, the outbox's included (idempotent).
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let db = connect(config).await?;
    Store::new(&db).ensure_indexes().await?;
    tracing::info!(database = db.name(), "payment-service indexes ready");
    Ok(())
}

/// Serves on `listener` until `shutdown` resolves, with the outbox relay running beside it.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let db = connect(&config).await?;
    let store = Store::new(&db);
    // Idempotent; a service started without `migrate` must not run without its unique indexes.
    if let Err(e) = store.ensure_indexes().await {
        tracing::warn!(error = %e, "cannot ensure indexes at start-up; run `payment-service migrate`");
    }
    let (stop_tx, stop_rx) = moviebook_common::shutdown::channel();
    let relay_config = RelayConfig {
        topology: config.rabbitmq_topology,
        ..RelayConfig::default()
    };
    let relay = store.outbox().relay(
        &config.rabbitmq_url,
        "payment-service",
        relay_config.clone(),
    );
    let relay_task = tokio::spawn(relay.run(stop_rx.clone()));
    // Events an earlier version left in the outbox collection; idle once those are out.
    let legacy = store.legacy_outbox().relay(
        &config.rabbitmq_url,
        "payment-service",
        RelayConfig {
            idle_poll: std::time::Duration::from_secs(5),
            ..relay_config
        },
    );
    let legacy_task = tokio::spawn(legacy.run(stop_rx));

    // Ready = MongoDB answers. Not the broker: payments write their events to the outbox, which
    // exists precisely so that a RabbitMQ outage does not take payments out of service; the
    // relay's state is the `outbox_relay_connected` gauge and the outbox's backlog.
    let ping_db = db.clone();
    let readiness = Readiness::new().with("mongodb", move || {
        let db = ping_db.clone();
        async move { moviebook_common::mongo::ping(&db).await }
    });
    let state = AppState {
        store,
        keys: Arc::new(JwtKeys::from_env(
            &config.jwt_secret,
            &config.jwt_issuer,
            std::time::Duration::from_secs(86_400),
        )?),
        failure_rate: config.failure_rate,
    };
    let served = ops::serve_listener(listener, app(state, readiness), shutdown).await;
    let _ = stop_tx.send(true);
    for task in [relay_task, legacy_task] {
        if let Err(e) = task.await {
            tracing::warn!(error = %e, "outbox relay task ended abnormally");
        }
    }
    served?;
    Ok(())
}
