//! HTTP handlers: translate the wire into store and hashing calls.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
};
use chrono::{DateTime, Utc};
use moviebook_common::{
    auth::{Authenticated, Claims},
    error::ApiJson,
};
use serde::Serialize;
use serde_json::json;

use crate::{
    AppState,
    domain::{self, LoginRequest, RegisterRequest, UpdateRequest},
    error::ApiError,
    store::UserDoc,
};

/// What clients see of an account: never the password hash.
#[derive(Debug, Serialize)]
pub struct PublicUser {
    pub id: String,
    pub email: String,
    pub first_name: String,
    pub last_name: String,
    pub phone: Option<String>,
    pub roles: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<UserDoc> for PublicUser {
    fn from(u: UserDoc) -> Self {
        Self {
            id: u.id,
            email: u.email,
            first_name: u.first_name,
            last_name: u.last_name,
            phone: u.phone,
            roles: u.roles,
            created_at: u.created_at,
            updated_at: u.updated_at,
        }
    }
}

pub async fn register(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<RegisterRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let new = domain::validate_registration(req)?;
    // Cheap pre-check so a known duplicate costs no hash; the unique index decides races.
    if state.store.by_email(&new.email).await?.is_some() {
        return Err(ApiError::EmailTaken);
    }
    let password_hash = state.hashing.hash(new.password).await?;
    let now = Utc::now();
    let user = UserDoc {
        id: uuid::Uuid::new_v4().to_string(),
        email: new.email,
        password_hash,
        first_name: new.first_name,
        last_name: new.last_name,
        phone: new.phone,
        roles: Vec::new(),
        created_at: now,
        updated_at: now,
    };
    state.store.insert(&user).await?;
    tracing::info!(user_id = %user.id, "user registered");
    Ok((
        StatusCode::CREATED,
        Json(json!({
            "message": "User created successfully",
            "user": PublicUser::from(user),
        })),
    ))
}

pub async fn login(
    State(state): State<AppState>,
    ApiJson(req): ApiJson<LoginRequest>,
) -> Result<impl IntoResponse, ApiError> {
    let email = domain::normalize_email(&req.email);
    let user = state.store.by_email(&email).await?;
    // Verify even when the account does not exist (against a dummy hash), so the answer takes
    // the same time and says the same thing either way.
    let stored = user.as_ref().map(|u| u.password_hash.clone());
    let ok = state.hashing.verify(req.password.clone(), stored).await?;
    let Some(user) = user.filter(|_| ok) else {
        return Err(ApiError::InvalidCredentials);
    };
    if state.hashing.needs_rehash(&user.password_hash) {
        match state.hashing.hash(req.password).await {
            Ok(h) => {
                if let Err(e) = state.store.set_password_hash(&user.id, &h).await {
                    tracing::warn!(user_id = %user.id, error = %e, "cannot upgrade password hash");
                }
            }
            Err(e) => tracing::warn!(user_id = %user.id, error = %e, "cannot re-hash password"),
        }
    }
    let token = state.keys.issue(&user.id, Some(&user.email), &user.roles)?;
    Ok(Json(json!({
        "token": token,
        "token_type": "Bearer",
        "expires_in": state.keys.ttl().as_secs(),
        "user": PublicUser::from(user),
    })))
}

fn parse_user_id(id: &str) -> Result<String, ApiError> {
    uuid::Uuid::parse_str(id)
        .map(|u| u.to_string())
        .map_err(|_| ApiError::InvalidUserId)
}

/// Reading: the user themself or an admin. No service identity reads users (booking forwards
/// its customer's own token), so a service token (booking's) reads nobody.
pub async fn get_user(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
) -> Result<Json<PublicUser>, ApiError> {
    let id = parse_user_id(&id)?;
    if !claims.may_act_for(&id) {
        return Err(ApiError::Forbidden);
    }
    load(&state, &id).await
}

pub async fn get_profile(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
) -> Result<Json<PublicUser>, ApiError> {
    load(&state, &claims.sub).await
}

async fn load(state: &AppState, id: &str) -> Result<Json<PublicUser>, ApiError> {
    state
        .store
        .by_id(id)
        .await?
        .map(|u| Json(PublicUser::from(u)))
        .ok_or(ApiError::UserNotFound)
}

/// Writing: the user themself or an admin (a service token reads, it does not edit people).
pub async fn update_user(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    Path(id): Path<String>,
    ApiJson(req): ApiJson<UpdateRequest>,
) -> Result<Json<PublicUser>, ApiError> {
    let id = parse_user_id(&id)?;
    if claims.sub != id && !claims.is_admin() {
        return Err(ApiError::Forbidden);
    }
    update(&state, &claims, &id, req).await
}

pub async fn update_profile(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    ApiJson(req): ApiJson<UpdateRequest>,
) -> Result<Json<PublicUser>, ApiError> {
    let id = claims.sub.clone();
    update(&state, &claims, &id, req).await
}

async fn update(
    state: &AppState,
    claims: &Claims,
    id: &str,
    req: UpdateRequest,
) -> Result<Json<PublicUser>, ApiError> {
    let current = state.store.by_id(id).await?.ok_or(ApiError::UserNotFound)?;
    let changes = domain::validate_update(&req, &current.email)?;
    let mut new_hash = None;
    if let Some(password) = &changes.password {
        // Someone holding a stolen token must not be able to lock the owner out.
        let acting_for_self = claims.sub == id;
        if acting_for_self {
            let given = req.current_password.clone().unwrap_or_default();
            let ok = state
                .hashing
                .verify(given, Some(current.password_hash.clone()))
                .await?;
            if !ok {
                return Err(ApiError::WrongCurrentPassword);
            }
        }
        new_hash = Some(state.hashing.hash(password.clone()).await?);
    }
    state
        .store
        .update(id, &changes, new_hash)
        .await?
        .map(|u| Json(PublicUser::from(u)))
        .ok_or(ApiError::UserNotFound)
}
