//! MovieBook user service: registration, argon2id password hashing, HS256 JWT login and
//! profiles, over MongoDB.
//!
//! `main.rs` only wires configuration, telemetry and [`run`]; integration tests call [`run`]
//! with a listener on port 0 and talk to the real service over HTTP.
#![forbid(unsafe_code)]

pub mod config;
pub mod domain;
pub mod error;
pub mod password;
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
    auth::{ADMIN_ROLE, JwtKeys},
    ops::{self, Readiness},
};

pub use config::Config;
use password::PasswordHashing;
use store::Store;

/// Request bodies are small JSON objects; anything bigger is refused before parsing.
const MAX_BODY_BYTES: usize = 64 * 1024;

#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub hashing: PasswordHashing,
    pub keys: Arc<JwtKeys>,
}

impl FromRef<AppState> for Arc<JwtKeys> {
    fn from_ref(state: &AppState) -> Self {
        state.keys.clone()
    }
}

/// The routes of the service plus `/health`, `/ready` and `/metrics`.
pub fn app(state: AppState, readiness: Readiness) -> Router {
    let api = Router::new()
        .route("/api/v1/register", post(routes::register))
        .route("/api/v1/login", post(routes::login))
        .route(
            "/api/v1/users/{id}",
            get(routes::get_user).put(routes::update_user),
        )
        .route(
            "/api/v1/profile",
            get(routes::get_profile).put(routes::update_profile),
        )
        .with_state(state)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES));
    ops::with_ops(api, readiness)
}

pub async fn connect(config: &Config) -> anyhow::Result<Database> {
    Ok(
        moviebook_common::mongo::connect(&config.mongodb_url, "user-service", &config.database)
            .await?,
    )
}

/// `user-service migrate`: creates the indexes (idempotent).
pub async fn migrate(config: &Config) -> anyhow::Result<()> {
    let db = connect(config).await?;
    Store::new(&db).ensure_indexes().await?;
    tracing::info!(database = db.name(), "user-service indexes ready");
    Ok(())
}

/// `user-service grant-admin <email>`: gives an existing account the admin role.
pub async fn grant_admin(config: &Config, email: &str) -> anyhow::Result<()> {
    let db = connect(config).await?;
    let email = domain::normalize_email(email);
    if !Store::new(&db).grant_role(&email, ADMIN_ROLE).await? {
        anyhow::bail!("no account with email {email}");
    }
    tracing::info!(email, "admin role granted");
    Ok(())
}

/// Serves on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let db = connect(&config).await?;
    let store = Store::new(&db);
    // Idempotent; keeps a service started without `migrate` from running without its unique
    // index. A database that is down only delays readiness.
    if let Err(e) = store.ensure_indexes().await {
        tracing::warn!(error = %e, "cannot ensure indexes at start-up; run `user-service migrate`");
    }
    let hashing = PasswordHashing::new(config.hash, config.hash_concurrency).await?;
    tracing::info!(params = %config.hash, concurrency = config.hash_concurrency, "password hashing");
    let keys = Arc::new(JwtKeys::from_env(
        &config.jwt_secret,
        &config.jwt_issuer,
        config.jwt_ttl,
    )?);
    // In a cluster the other services hold only the public keys; the user service must hold
    // the private one or nobody can log in.
    if !keys.signs_user_tokens() {
        anyhow::bail!(
            "{} is set without {}: the user service signs user tokens and needs the private key",
            moviebook_common::auth::PUBLIC_KEYS_VAR,
            moviebook_common::auth::SIGNING_KEY_VAR
        );
    }
    let ping_db = db.clone();
    let readiness = Readiness::new().with("mongodb", move || {
        let db = ping_db.clone();
        async move { moviebook_common::mongo::ping(&db).await }
    });
    let state = AppState {
        store,
        hashing,
        keys,
    };
    ops::serve_listener(listener, app(state, readiness), shutdown).await?;
    Ok(())
}
