//! MovieBook's notification worker.
//!
//! Consumes `booking.*` and `payment.*` events from the durable queue `notification.events`,
//! sends each notification exactly once per event id (Redis claim + a unique MongoDB record),
//! records every notification in MongoDB, retries transient failures with backoff and
//! dead-letters what can never succeed. HTTP serves `/health`, `/ready`, `/metrics` and a small
//! read API. See `docs/notification.md`.
#![forbid(unsafe_code)]

pub mod channel;
pub mod config;
pub mod domain;
pub mod error;
pub mod idempotency;
pub mod routes;
pub mod store;
pub mod worker;

use std::{sync::Arc, time::Duration};

use axum::Router;
use moviebook_common::{
    auth::JwtKeys,
    ops::{self, Readiness},
    shutdown::{self, Shutdown},
};
use tokio::net::TcpListener;

use crate::{
    channel::{Channel, LogChannel, SmtpChannel},
    config::{Config, DEFAULT_DB},
    idempotency::Idempotency,
    routes::AppState,
    store::Store,
    worker::Worker,
};

/// The HTTP application: read API plus the ops endpoints.
pub fn app(state: AppState, readiness: Readiness) -> Router {
    ops::with_ops(routes::router(state), readiness)
}

/// The channel the configuration asks for: SMTP when `SMTP_URL` is set, else the log.
pub fn configured_channel(config: &Config) -> anyhow::Result<Arc<dyn Channel>> {
    Ok(match &config.smtp_url {
        Some(url) => Arc::new(SmtpChannel::new(url, &config.smtp_from)?),
        None => Arc::new(LogChannel),
    })
}

/// Creates the MongoDB indexes (the `migrate` subcommand).
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let db =
        moviebook_common::mongo::connect(&config.mongodb_url, "notification-service", DEFAULT_DB)
            .await?;
    Store::new(&db).ensure_indexes().await?;
    Ok(())
}

/// Runs the worker and the HTTP server on `listener` with the configured channel until
/// `shutdown` fires.
pub async fn run(config: Config, listener: TcpListener, shutdown: Shutdown) -> anyhow::Result<()> {
    let channel = configured_channel(&config)?;
    run_with_channel(config, listener, shutdown, channel).await
}

/// [`run`] with an explicit channel (tests record or fail sends with their own).
pub async fn run_with_channel(
    config: Config,
    listener: TcpListener,
    shutdown: Shutdown,
    channel: Arc<dyn Channel>,
) -> anyhow::Result<()> {
    // Install the metrics recorder first, so the worker's gauges are not lost before the first
    // HTTP request would install it.
    let _ = ops::prometheus();
    let db =
        moviebook_common::mongo::connect(&config.mongodb_url, "notification-service", DEFAULT_DB)
            .await?;
    let store = Store::new(&db);
    // `migrate` is the authoritative step; creating the indexes here as well (idempotent) keeps
    // a fresh database protected by the unique index from the first event.
    if let Err(e) = store.ensure_indexes().await {
        tracing::warn!(error = %e, "cannot ensure MongoDB indexes at start-up");
    }
    let idem = Idempotency::new(&config.redis_url, &config.redis_prefix)?;
    let keys = Arc::new(JwtKeys::from_env(
        &config.jwt_secret,
        &config.jwt_issuer,
        Duration::from_secs(3600),
    )?);
    let config = Arc::new(config);
    let worker = Arc::new(Worker::new(
        config.clone(),
        idem.clone(),
        store.clone(),
        channel,
    ));
    let connected = worker.connected_flag();
    let readiness = Readiness::new()
        .with("mongodb", {
            let db = db.clone();
            move || {
                let db = db.clone();
                async move { moviebook_common::mongo::ping(&db).await }
            }
        })
        .with("redis", {
            let idem = idem.clone();
            move || {
                let idem = idem.clone();
                async move { idem.ping().await }
            }
        })
        .with("rabbitmq", move || {
            let up = connected.load(std::sync::atomic::Ordering::Relaxed);
            async move {
                if up {
                    Ok(())
                } else {
                    Err("not connected to the broker")
                }
            }
        });
    let worker_task = tokio::spawn(worker.run(shutdown.clone()));
    let state = AppState { store, keys };
    let served =
        ops::serve_listener(listener, app(state, readiness), shutdown::wait(shutdown)).await;
    if let Err(e) = worker_task.await {
        tracing::error!(error = %e, "worker task failed");
    }
    served?;
    Ok(())
}
