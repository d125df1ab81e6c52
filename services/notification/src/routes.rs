//! The read API: `GET /api/v1/notifications?booking_id=...` or `?user_id=...` (Bearer JWT).
//!
//! A user sees only their own notifications; admin and service tokens see anyone's. Used by
//! `make demo` and the end-to-end tests to see the notification a booking produced.

use std::sync::Arc;

use axum::{
    Json, Router,
    extract::{FromRef, Query, State, rejection::QueryRejection},
    routing::get,
};
use mongodb::bson::{Document, doc};
use moviebook_common::auth::{Authenticated, Claims, JwtKeys};
use serde::{Deserialize, Serialize};

use crate::{
    error::ApiError,
    store::{NotificationRecord, Status, Store},
};

/// State of the HTTP routes.
#[derive(Clone)]
pub struct AppState {
    pub store: Store,
    pub keys: Arc<JwtKeys>,
}

impl FromRef<AppState> for Arc<JwtKeys> {
    fn from_ref(s: &AppState) -> Self {
        s.keys.clone()
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/api/v1/notifications", get(list))
        .with_state(state)
}

/// Query parameters of the list.
#[derive(Debug, Default, Deserialize)]
pub struct ListQuery {
    pub booking_id: Option<String>,
    pub user_id: Option<String>,
    pub limit: Option<i64>,
}

pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;

/// The MongoDB filter and limit for a query by `claims`. Pure: the access rule lives here.
pub fn plan(query: &ListQuery, claims: &Claims) -> Result<(Document, i64), ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::BadRequest(format!(
            "limit must be between 1 and {MAX_LIMIT}"
        )));
    }
    let booking_id = clean(&query.booking_id);
    let user_id = clean(&query.user_id);
    if booking_id.is_none() && user_id.is_none() {
        return Err(ApiError::BadRequest(
            "give booking_id or user_id".to_owned(),
        ));
    }
    if [booking_id, user_id]
        .iter()
        .flatten()
        .any(|v| v.len() > 200)
    {
        return Err(ApiError::BadRequest("identifier too long".to_owned()));
    }
    let mut filter = Document::new();
    if let Some(b) = booking_id {
        filter.insert("booking_id", b);
    }
    match user_id {
        Some(u) if claims.may_act_for(u) => {
            filter.insert("user_id", u);
        }
        Some(_) => return Err(ApiError::Forbidden),
        // No service reads notifications: a service token sees only its own (none).
        None if claims.is_admin() => {}
        // A user asking by booking sees only their own notifications of it.
        None => {
            filter.insert("user_id", claims.sub.as_str());
        }
    }
    Ok((filter, limit))
}

fn clean(v: &Option<String>) -> Option<&str> {
    v.as_deref().map(str::trim).filter(|s| !s.is_empty())
}

/// A notification as the API shows it.
#[derive(Debug, Serialize, Deserialize, PartialEq)]
pub struct NotificationView {
    pub event_id: String,
    pub event_type: String,
    pub user_id: String,
    pub booking_id: String,
    pub recipient: Option<String>,
    pub channel: String,
    pub subject: String,
    pub body: String,
    pub status: Status,
    pub attempts: u32,
    pub created_at: String,
    pub sent_at: Option<String>,
}

impl From<NotificationRecord> for NotificationView {
    fn from(r: NotificationRecord) -> Self {
        let rfc3339 = |d: mongodb::bson::DateTime| d.to_chrono().to_rfc3339();
        Self {
            event_id: r.event_id,
            event_type: r.event_type,
            user_id: r.user_id,
            booking_id: r.booking_id,
            recipient: r.recipient,
            channel: r.channel,
            subject: r.subject,
            body: r.body,
            status: r.status,
            attempts: r.attempts,
            created_at: rfc3339(r.created_at),
            sent_at: r.sent_at.map(rfc3339),
        }
    }
}

/// The list response.
#[derive(Debug, Serialize, Deserialize)]
pub struct ListResponse {
    pub notifications: Vec<NotificationView>,
}

async fn list(
    State(state): State<AppState>,
    Authenticated(claims): Authenticated,
    query: Result<Query<ListQuery>, QueryRejection>,
) -> Result<Json<ListResponse>, ApiError> {
    let Query(query) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let (filter, limit) = plan(&query, &claims)?;
    let records = state.store.list(filter, limit).await?;
    Ok(Json(ListResponse {
        notifications: records.into_iter().map(NotificationView::from).collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(sub: &str, roles: &[&str]) -> Claims {
        Claims {
            sub: sub.into(),
            iss: "moviebook".into(),
            exp: i64::MAX,
            iat: 0,
            email: None,
            roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        }
    }

    fn q(booking: Option<&str>, user: Option<&str>) -> ListQuery {
        ListQuery {
            booking_id: booking.map(Into::into),
            user_id: user.map(Into::into),
            limit: None,
        }
    }

    #[test]
    fn a_user_reads_only_their_own() {
        let me = claims("u1", &[]);
        let (f, limit) = plan(&q(None, Some("u1")), &me).unwrap();
        assert_eq!(f, doc! { "user_id": "u1" });
        assert_eq!(limit, DEFAULT_LIMIT);
        assert!(matches!(
            plan(&q(None, Some("u2")), &me),
            Err(ApiError::Forbidden)
        ));
        let (f, _) = plan(&q(Some("b1"), None), &me).unwrap();
        assert_eq!(f, doc! { "booking_id": "b1", "user_id": "u1" });
    }

    #[test]
    fn admins_read_anyone_services_nobody() {
        let (f, _) = plan(&q(Some("b1"), None), &claims("a", &["admin"])).unwrap();
        assert_eq!(f, doc! { "booking_id": "b1" });
        let (f, _) = plan(&q(None, Some("u2")), &claims("a", &["admin"])).unwrap();
        assert_eq!(f, doc! { "user_id": "u2" });
        // A service token (any holder of the service secret could mint one) gets its own
        // notifications of a booking, i.e. none, and no user's.
        let svc = claims("booking-service", &["service"]);
        let (f, _) = plan(&q(Some("b1"), None), &svc).unwrap();
        assert_eq!(f, doc! { "booking_id": "b1", "user_id": "booking-service" });
        assert!(matches!(
            plan(&q(None, Some("u2")), &svc),
            Err(ApiError::Forbidden)
        ));
    }

    #[test]
    fn a_filter_is_required_and_the_limit_bounded() {
        let me = claims("u1", &[]);
        assert!(matches!(
            plan(&q(None, None), &me),
            Err(ApiError::BadRequest(_))
        ));
        assert!(matches!(
            plan(&q(Some(" "), None), &me),
            Err(ApiError::BadRequest(_))
        ));
        let mut big = q(None, Some("u1"));
        big.limit = Some(MAX_LIMIT + 1);
        assert!(plan(&big, &me).is_err());
        big.limit = Some(0);
        assert!(plan(&big, &me).is_err());
    }
}
