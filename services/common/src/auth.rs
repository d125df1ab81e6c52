//! HS256 JSON Web Tokens: issued by the user service, verified by every service (and by Kong at
//! the edge, which matches `iss` against its jwt consumer key).
//!
//! Verification answers a distinct [`AuthError`] for each way a token can be wrong, so clients
//! and logs can tell an expired session from a forged token.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{HeaderMap, StatusCode, header::AUTHORIZATION, request::Parts},
    response::{IntoResponse, Response},
};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

/// The role that lets a token read and change other users' data.
pub const ADMIN_ROLE: &str = "admin";
/// The role of tokens services mint for themselves (e.g. the booking sweeper refunding an
/// expired booking has no user token to forward). `sub` is then the service name.
pub const SERVICE_ROLE: &str = "service";
/// The `sub` of the booking service's own tokens. Charging and refunding are internal steps of
/// a booking, so the payment service accepts its writes from this identity alone (a user
/// token, even an admin's, could otherwise choose the amount or refund a paid booking and keep
/// its seats).
pub const BOOKING_SERVICE: &str = "booking-service";

/// The claims MovieBook puts in a token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The issuer; Kong's jwt plugin looks up its consumer by this value.
    pub iss: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Issued at, Unix seconds.
    #[serde(default)]
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

impl Claims {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|r| r == ADMIN_ROLE)
    }

    pub fn is_service(&self) -> bool {
        self.roles.iter().any(|r| r == SERVICE_ROLE)
    }

    /// Whether these claims are the named MovieBook service's own token (role `service` and
    /// `sub` = the service name; users' subjects are UUIDs and the user service never grants
    /// the `service` role).
    pub fn is_service_named(&self, service: &str) -> bool {
        self.is_service() && self.sub == service
    }

    /// Whether these claims may act on behalf of `user_id`: the user themself, an admin, or
    /// another MovieBook service.
    pub fn may_act_for(&self, user_id: &str) -> bool {
        self.sub == user_id || self.is_admin() || self.is_service()
    }
}

/// Why a token was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token issuer is not accepted")]
    WrongIssuer,
    #[error("token algorithm is not accepted (only HS256)")]
    UnsupportedAlgorithm,
    #[error("token cannot be issued: {0}")]
    Issue(String),
}

impl AuthError {
    /// The machine-readable code clients see.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Missing => "UNAUTHENTICATED",
            Self::Malformed => "TOKEN_MALFORMED",
            Self::BadSignature => "TOKEN_INVALID_SIGNATURE",
            Self::Expired => "TOKEN_EXPIRED",
            Self::WrongIssuer => "TOKEN_WRONG_ISSUER",
            Self::UnsupportedAlgorithm => "TOKEN_UNSUPPORTED_ALGORITHM",
            Self::Issue(_) => "INTERNAL",
        }
    }
}

impl IntoResponse for AuthError {
    fn into_response(self) -> Response {
        let status = match self {
            Self::Issue(_) => StatusCode::INTERNAL_SERVER_ERROR,
            _ => StatusCode::UNAUTHORIZED,
        };
        crate::error::error_response(status, self.code(), self.to_string())
    }
}

/// Signing and verification keys with the issuer and token lifetime.
#[derive(Clone)]
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    issuer: String,
    ttl: Duration,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("issuer", &self.issuer)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl JwtKeys {
    pub fn new(secret: &str, issuer: &str, ttl: Duration) -> Self {
        Self {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            issuer: issuer.to_owned(),
            ttl,
        }
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Issues a token for `sub` valid for the configured lifetime.
    pub fn issue(
        &self,
        sub: &str,
        email: Option<&str>,
        roles: &[String],
    ) -> Result<String, AuthError> {
        let now = chrono::Utc::now().timestamp();
        let ttl = i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX / 2);
        let claims = Claims {
            sub: sub.to_owned(),
            iss: self.issuer.clone(),
            iat: now,
            exp: now.saturating_add(ttl),
            email: email.map(str::to_owned),
            roles: roles.to_vec(),
        };
        self.sign(&claims)
    }

    /// A short-lived token a service uses to call another service on its own behalf.
    pub fn issue_service_token(&self, service: &str) -> Result<String, AuthError> {
        let now = chrono::Utc::now().timestamp();
        self.sign(&Claims {
            sub: service.to_owned(),
            iss: self.issuer.clone(),
            iat: now,
            exp: now + 300,
            email: None,
            roles: vec![SERVICE_ROLE.to_owned()],
        })
    }

    /// Signs arbitrary claims (tests use it to make expired or foreign tokens).
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .map_err(|e| AuthError::Issue(e.to_string()))
    }

    /// Verifies signature, algorithm, issuer and expiry.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        // Check the algorithm ourselves first: `alg: none` and RS/ES tokens must say so instead
        // of surfacing as a generic decoding error.
        match header_algorithm(token)?.as_str() {
            "HS256" => {}
            _ => return Err(AuthError::UnsupportedAlgorithm),
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[&self.issuer]);
        validation.set_required_spec_claims(&["exp", "iss", "sub"]);
        validation.leeway = 5;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .map(|data| data.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthError::UnsupportedAlgorithm
                }
                _ => AuthError::Malformed,
            })
    }
}

/// The `alg` of a compact JWT's header, without trusting anything else in it.
fn header_algorithm(token: &str) -> Result<String, AuthError> {
    #[derive(Deserialize)]
    struct RawHeader {
        alg: String,
    }
    let mut parts = token.split('.');
    let header = parts.next().ok_or(AuthError::Malformed)?;
    if parts.count() != 2 {
        return Err(AuthError::Malformed);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed)?;
    let raw: RawHeader = serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)?;
    Ok(raw.alg)
}

/// The token of an `Authorization: Bearer <token>` header.
pub fn bearer_token(headers: &HeaderMap) -> Result<&str, AuthError> {
    let value = headers.get(AUTHORIZATION).ok_or(AuthError::Missing)?;
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::Malformed)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token.trim())
}

/// An axum extractor for a verified caller. The state must provide `Arc<JwtKeys>`.
#[derive(Debug, Clone)]
pub struct Authenticated(pub Claims);

impl<S> FromRequestParts<S> for Authenticated
where
    S: Send + Sync,
    Arc<JwtKeys>: FromRef<S>,
{
    type Rejection = AuthError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let keys = Arc::<JwtKeys>::from_ref(state);
        let token = bearer_token(&parts.headers)?;
        keys.verify(token).map(Authenticated)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn keys() -> JwtKeys {
        JwtKeys::new(SECRET, "moviebook", Duration::from_secs(3600))
    }

    fn claims(exp_offset: i64, iss: &str) -> Claims {
        let now = chrono::Utc::now().timestamp();
        Claims {
            sub: "user-1".into(),
            iss: iss.into(),
            exp: now + exp_offset,
            iat: now,
            email: Some("a@b.c".into()),
            roles: vec![],
        }
    }

    #[test]
    fn round_trip() {
        let k = keys();
        let token = k.issue("user-1", Some("a@b.c"), &["admin".into()]).unwrap();
        let c = k.verify(&token).unwrap();
        assert_eq!(c.sub, "user-1");
        assert_eq!(c.iss, "moviebook");
        assert!(c.is_admin());
        assert!(c.exp > chrono::Utc::now().timestamp() + 3500);
    }

    #[test]
    fn bad_signature() {
        let other = JwtKeys::new(
            "another-secret-another-secret-xx",
            "moviebook",
            Duration::from_secs(60),
        );
        let token = other.issue("user-1", None, &[]).unwrap();
        assert_eq!(keys().verify(&token), Err(AuthError::BadSignature));
    }

    #[test]
    fn tampered_payload_is_a_bad_signature() {
        let k = keys();
        let token = k.issue("user-1", None, &[]).unwrap();
        let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
        let forged = claims(3600, "moviebook");
        let forged = Claims {
            sub: "user-2".into(),
            roles: vec!["admin".into()],
            ..forged
        };
        parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(serde_json::to_vec(&forged).unwrap());
        assert_eq!(k.verify(&parts.join(".")), Err(AuthError::BadSignature));
    }

    #[test]
    fn expired() {
        let k = keys();
        let token = k.sign(&claims(-120, "moviebook")).unwrap();
        assert_eq!(k.verify(&token), Err(AuthError::Expired));
    }

    #[test]
    fn wrong_issuer() {
        let k = keys();
        let token = k.sign(&claims(600, "someone-else")).unwrap();
        assert_eq!(k.verify(&token), Err(AuthError::WrongIssuer));
    }

    #[test]
    fn malformed() {
        let k = keys();
        for t in [
            "",
            "abc",
            "a.b",
            "a.b.c.d",
            "!!!.???.###",
            "eyJhbGciOiJIUzI1NiJ9.e30",
        ] {
            assert_eq!(k.verify(t), Err(AuthError::Malformed), "token {t:?}");
        }
    }

    #[test]
    fn none_algorithm_is_refused() {
        let b64 = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
        };
        let header = b64(&serde_json::json!({"alg": "none", "typ": "JWT"}));
        let payload = b64(&serde_json::to_value(claims(600, "moviebook")).unwrap());
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            let got = keys().verify(&token);
            assert!(
                matches!(
                    got,
                    Err(AuthError::UnsupportedAlgorithm) | Err(AuthError::Malformed)
                ),
                "{token}: {got:?}"
            );
        }
        assert_eq!(
            keys().verify(&format!("{header}.{payload}.")),
            Err(AuthError::UnsupportedAlgorithm)
        );
    }

    #[test]
    fn bearer_header_parsing() {
        let mut h = HeaderMap::new();
        assert_eq!(bearer_token(&h), Err(AuthError::Missing));
        h.insert(AUTHORIZATION, "Basic abc".parse().unwrap());
        assert_eq!(bearer_token(&h), Err(AuthError::Malformed));
        h.insert(AUTHORIZATION, "Bearer abc.def.ghi".parse().unwrap());
        assert_eq!(bearer_token(&h), Ok("abc.def.ghi"));
    }

    #[test]
    fn acting_for_others_needs_admin() {
        let mut c = claims(60, "moviebook");
        assert!(c.may_act_for("user-1"));
        assert!(!c.may_act_for("user-2"));
        c.roles.push(ADMIN_ROLE.into());
        assert!(c.may_act_for("user-2"));
    }

    #[test]
    fn only_the_named_service_is_that_service() {
        let k = keys();
        let booking = k
            .verify(&k.issue_service_token(BOOKING_SERVICE).unwrap())
            .unwrap();
        assert!(booking.is_service_named(BOOKING_SERVICE));
        let other = k
            .verify(&k.issue_service_token("notification-service").unwrap())
            .unwrap();
        assert!(!other.is_service_named(BOOKING_SERVICE));
        // A user whose subject happens to be the name, or an admin, is not the service.
        let mut c = claims(60, "moviebook");
        c.sub = BOOKING_SERVICE.into();
        assert!(!c.is_service_named(BOOKING_SERVICE));
        c.roles.push(ADMIN_ROLE.into());
        assert!(!c.is_service_named(BOOKING_SERVICE));
    }
}
