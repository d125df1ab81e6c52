//! JSON Web Tokens of two kinds, told apart by algorithm and audience:
//!
//! - **User tokens** (`aud = "moviebook"`, ES256): issued at login by the user service alone,
//!   which holds the P-256 private key (`USER_TOKEN_SIGNING_KEY`). Every other service, and
//!   Kong at the edge, holds only the public keys (`USER_TOKEN_PUBLIC_KEYS`), so a compromised
//!   booking or notification pod cannot mint a session for anybody. The header's `kid` picks
//!   the verification key, which is what lets two keys be valid at once during a rotation.
//! - **Service tokens** (`aud = "moviebook-internal"`, HS256 with `JWT_SECRET`, role
//!   `service`): short-lived tokens a service mints for its own calls to another service. A
//!   user token can never carry the `service` role and a service token can never pass as a
//!   user token: each kind is checked for its own audience and shape.
//!
//! With neither key variable set (`make dev`, tests) a development P-256 key is derived from
//! `JWT_SECRET`, so processes sharing the secret agree without any set-up (and say so in a
//! warning).
//!
//! Verification answers a distinct [`AuthError`] for each way a token can be wrong, so clients
//! and logs can tell an expired session from a forged token.
//!
//! Checking an ES256 signature costs a few hundred microseconds, more than the rest of a
//! booking request in the booking service, and a client sends the same token with every
//! request of its session. So [`JwtKeys::verify`] remembers the tokens it has verified (see
//! [`VerifiedTokens`]): a repeated token costs one SHA-256 and a map lookup.

use std::{sync::Arc, time::Duration};

use axum::{
    extract::{FromRef, FromRequestParts},
    http::{HeaderMap, StatusCode, header::AUTHORIZATION, request::Parts},
    response::{IntoResponse, Response},
};
use base64::Engine;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use p256::{
    PublicKey, SecretKey,
    elliptic_curve::sec1::ToEncodedPoint,
    pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePrivateKey},
};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::ConfigError;

/// `aud` of user tokens (Kong and every service accept these from clients).
pub const USER_AUDIENCE: &str = "moviebook";
/// `aud` of service tokens: only services mint and accept them.
pub const SERVICE_AUDIENCE: &str = "moviebook-internal";
/// The user service's private key: a PKCS#8 PEM P-256 key.
pub const SIGNING_KEY_VAR: &str = "USER_TOKEN_SIGNING_KEY";
/// The keys user tokens are verified with: one or more SPKI PEM P-256 public keys, one after
/// the other (two during a rotation).
pub const PUBLIC_KEYS_VAR: &str = "USER_TOKEN_PUBLIC_KEYS";

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

    /// Whether these claims may act on behalf of `user_id`: the user themself or an admin.
    /// Services are not included: the few calls where one must act for a user name the
    /// service they accept (e.g. the user service lets `booking-service` read a user's email),
    /// so a token minted by any other service gets nobody's data.
    pub fn may_act_for(&self, user_id: &str) -> bool {
        self.sub == user_id || self.is_admin()
    }

    /// [`Claims::may_act_for`], or the named service's own token.
    pub fn may_act_for_or_is(&self, user_id: &str, service: &str) -> bool {
        self.may_act_for(user_id) || self.is_service_named(service)
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
    #[error("token algorithm is not accepted (ES256 user tokens, HS256 service tokens)")]
    UnsupportedAlgorithm,
    #[error(
        "token audience is not accepted here (a service token used as a user's or the reverse)"
    )]
    WrongAudience,
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
            Self::WrongAudience => "TOKEN_WRONG_AUDIENCE",
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

/// A user-token verification key and its id.
#[derive(Clone)]
struct UserKey {
    kid: String,
    decoding: DecodingKey,
}

/// How long a verified token is remembered at most. Its own `exp` bounds it too; this bound
/// only keeps the memory of tokens nobody sends any more short.
const VERIFIED_TTL: Duration = Duration::from_secs(60);
/// How many verified tokens are remembered: ~200 bytes each, so at most a few MB.
const VERIFIED_CAPACITY: u64 = 20_000;
/// Seconds of clock skew accepted on `exp`, as by [`validation`].
const LEEWAY_SECS: i64 = 5;

/// Tokens this process has verified, by the SHA-256 of the token, with their claims.
///
/// Whether a token verifies depends only on the token, the keys and the clock (there is no
/// revocation list), so remembering a success changes no answer as long as its expiry is
/// checked again on every hit, which [`VerifiedTokens::get`] does. Only successes are stored:
/// a forged, expired or foreign token always takes the full check, and cannot push anything
/// in. The key is a digest, so the map holds no bearer token an attacker could read from a
/// memory dump, and comparing keys reveals nothing about the tokens by its timing. The cache
/// belongs to one set of keys (clones of a [`JwtKeys`] share it; keys are never changed after
/// they are built), so a rotation, which builds new keys, starts empty.
#[derive(Clone)]
struct VerifiedTokens(moka::sync::Cache<[u8; 32], Arc<Claims>>);

impl VerifiedTokens {
    fn new() -> Self {
        Self(
            moka::sync::Cache::builder()
                .max_capacity(VERIFIED_CAPACITY)
                .time_to_live(VERIFIED_TTL)
                .build(),
        )
    }

    fn digest(token: &str) -> [u8; 32] {
        Sha256::digest(token.as_bytes()).into()
    }

    /// The claims of a token verified before, if it has not expired since.
    fn get(&self, digest: &[u8; 32], now: i64) -> Option<Claims> {
        let claims = self.0.get(digest)?;
        if still_valid(claims.exp, now) {
            return Some(Claims::clone(&claims));
        }
        self.0.invalidate(digest);
        None
    }

    fn insert(&self, digest: [u8; 32], claims: &Claims) {
        self.0.insert(digest, Arc::new(claims.clone()));
    }
}

/// Whether a token expiring at `exp` is still accepted at `now` (jsonwebtoken's rule: expired
/// once `exp` is more than the leeway in the past).
fn still_valid(exp: i64, now: i64) -> bool {
    exp >= now.saturating_sub(LEEWAY_SECS)
}

/// Signing and verification keys with the issuer and token lifetime.
#[derive(Clone)]
pub struct JwtKeys {
    /// HS256 key of service tokens (`JWT_SECRET`).
    service_encoding: EncodingKey,
    service_decoding: DecodingKey,
    /// The user-token signing key and its `kid`; only the user service has one.
    user_signing: Option<(String, EncodingKey)>,
    user_verifying: Vec<UserKey>,
    issuer: String,
    ttl: Duration,
    verified: VerifiedTokens,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("issuer", &self.issuer)
            .field("ttl", &self.ttl)
            .field("signs_user_tokens", &self.user_signing.is_some())
            .field(
                "user_key_ids",
                &self
                    .user_verifying
                    .iter()
                    .map(|k| &k.kid)
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

/// The claims as signed: [`Claims`] plus the audience, which callers never choose.
#[derive(Serialize)]
struct Signed<'a> {
    #[serde(flatten)]
    claims: &'a Claims,
    aud: &'a str,
}

/// The id of a P-256 public key: the first 16 hex digits of SHA-256 of its uncompressed SEC1
/// point. The operator computes the same value for Kong's credentials.
pub fn key_id(public: &PublicKey) -> String {
    let digest = Sha256::digest(public.to_encoded_point(false).as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// The development user-token key every process derives from the same `JWT_SECRET`.
pub fn dev_user_key(secret: &str) -> SecretKey {
    let mut seed = Sha256::new()
        .chain_update(b"moviebook dev user-token key\0")
        .chain_update(secret.as_bytes())
        .finalize();
    loop {
        // Fails only for 0 or a value >= the group order (odds ~2^-128): hash again.
        if let Ok(key) = SecretKey::from_slice(&seed) {
            return key;
        }
        seed = Sha256::digest(seed);
    }
}

fn parse_signing_key(pem: &str) -> Result<SecretKey, String> {
    SecretKey::from_pkcs8_pem(pem.trim())
        .map_err(|e| format!("not a PKCS#8 PEM P-256 private key ({e})"))
}

/// Splits concatenated PEM blocks (the value of `USER_TOKEN_PUBLIC_KEYS`) and parses each.
pub fn parse_public_keys(text: &str) -> Result<Vec<PublicKey>, String> {
    const END: &str = "-----END PUBLIC KEY-----";
    let mut keys = Vec::new();
    let mut rest = text.trim();
    while !rest.is_empty() {
        let cut = rest
            .find(END)
            .map(|i| i + END.len())
            .ok_or_else(|| format!("expected PEM blocks ending in {END}"))?;
        let block = &rest[..cut];
        let key = PublicKey::from_public_key_pem(block.trim()).map_err(|e| {
            format!(
                "public key {} is not a SPKI PEM P-256 key ({e})",
                keys.len() + 1
            )
        })?;
        keys.push(key);
        rest = rest[cut..].trim_start();
    }
    if keys.is_empty() {
        return Err("no public key".into());
    }
    Ok(keys)
}

fn user_key(public: &PublicKey) -> UserKey {
    UserKey {
        kid: key_id(public),
        decoding: DecodingKey::from_ec_der(public.to_encoded_point(false).as_bytes()),
    }
}

fn signing(key: &SecretKey) -> Result<(String, EncodingKey), String> {
    let der = key.to_pkcs8_der().map_err(|e| e.to_string())?;
    Ok((
        key_id(&key.public_key()),
        EncodingKey::from_ec_der(der.as_bytes()),
    ))
}

fn validation(alg: Algorithm, issuer: &str, audience: &str) -> Validation {
    let mut validation = Validation::new(alg);
    validation.set_issuer(&[issuer]);
    validation.set_audience(&[audience]);
    validation.set_required_spec_claims(&["exp", "iss", "sub", "aud"]);
    validation.leeway = LEEWAY_SECS.unsigned_abs();
    validation
}

fn decode(token: &str, key: &DecodingKey, validation: &Validation) -> Result<Claims, AuthError> {
    jsonwebtoken::decode::<Claims>(token, key, validation)
        .map(|data| data.claims)
        .map_err(|e| match e.kind() {
            ErrorKind::InvalidSignature => AuthError::BadSignature,
            ErrorKind::ExpiredSignature => AuthError::Expired,
            ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
            ErrorKind::InvalidAudience => AuthError::WrongAudience,
            ErrorKind::MissingRequiredClaim(c) if c == "aud" => AuthError::WrongAudience,
            ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                AuthError::UnsupportedAlgorithm
            }
            _ => AuthError::Malformed,
        })
}

impl JwtKeys {
    /// Keys for `make dev` and tests: service tokens with `secret`, user tokens with the
    /// development key derived from it (so this value both signs and verifies them).
    pub fn new(secret: &str, issuer: &str, ttl: Duration) -> Self {
        let key = dev_user_key(secret);
        let mut keys = Self::service_only(secret, issuer, ttl);
        keys.user_verifying = vec![user_key(&key.public_key())];
        // The DER of a valid key always encodes; without it the keys only verify.
        keys.user_signing = signing(&key).ok();
        keys
    }

    fn service_only(secret: &str, issuer: &str, ttl: Duration) -> Self {
        Self {
            service_encoding: EncodingKey::from_secret(secret.as_bytes()),
            service_decoding: DecodingKey::from_secret(secret.as_bytes()),
            user_signing: None,
            user_verifying: Vec::new(),
            issuer: issuer.to_owned(),
            ttl,
            verified: VerifiedTokens::new(),
        }
    }

    /// Keys from explicit user-token key material: the signing key (user service only) and
    /// the verification keys. With neither, the development keys of [`JwtKeys::new`].
    pub fn with_user_keys(
        secret: &str,
        signing_pem: Option<&str>,
        public_pems: Option<&str>,
        issuer: &str,
        ttl: Duration,
    ) -> Result<Self, ConfigError> {
        let invalid = |var: &str, reason: String| ConfigError::Invalid {
            var: var.to_owned(),
            value: "<redacted>".into(),
            reason,
        };
        if signing_pem.is_none() && public_pems.is_none() {
            return Ok(Self::new(secret, issuer, ttl));
        }
        let mut keys = Self::service_only(secret, issuer, ttl);
        if let Some(pem) = signing_pem {
            let key = parse_signing_key(pem).map_err(|r| invalid(SIGNING_KEY_VAR, r))?;
            keys.user_signing = Some(signing(&key).map_err(|r| invalid(SIGNING_KEY_VAR, r))?);
            keys.user_verifying.push(user_key(&key.public_key()));
        }
        if let Some(text) = public_pems {
            for public in parse_public_keys(text).map_err(|r| invalid(PUBLIC_KEYS_VAR, r))? {
                let key = user_key(&public);
                if !keys.user_verifying.iter().any(|k| k.kid == key.kid) {
                    keys.user_verifying.push(key);
                }
            }
        }
        Ok(keys)
    }

    /// [`JwtKeys::with_user_keys`] from `USER_TOKEN_SIGNING_KEY` and `USER_TOKEN_PUBLIC_KEYS`;
    /// warns when it falls back to the development key.
    pub fn from_env(secret: &str, issuer: &str, ttl: Duration) -> Result<Self, ConfigError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let (signing_pem, public_pems) = (var(SIGNING_KEY_VAR), var(PUBLIC_KEYS_VAR));
        if signing_pem.is_none() && public_pems.is_none() {
            tracing::warn!(
                "{SIGNING_KEY_VAR} and {PUBLIC_KEYS_VAR} are unset: user tokens use a development \
                 key derived from JWT_SECRET, so every holder of that secret can mint them"
            );
        }
        Self::with_user_keys(
            secret,
            signing_pem.as_deref(),
            public_pems.as_deref(),
            issuer,
            ttl,
        )
    }

    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Whether these keys can issue user tokens (only the user service's can, in a cluster).
    pub fn signs_user_tokens(&self) -> bool {
        self.user_signing.is_some()
    }

    /// The ids of the keys user tokens are accepted with.
    pub fn user_key_ids(&self) -> Vec<&str> {
        self.user_verifying.iter().map(|k| k.kid.as_str()).collect()
    }

    /// Issues a user token for `sub` valid for the configured lifetime. Never with the
    /// `service` role: that is what service tokens are for.
    pub fn issue(
        &self,
        sub: &str,
        email: Option<&str>,
        roles: &[String],
    ) -> Result<String, AuthError> {
        if roles.iter().any(|r| r == SERVICE_ROLE) {
            return Err(AuthError::Issue(
                "user tokens cannot carry the service role".into(),
            ));
        }
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

    /// Signs claims as MovieBook would: claims with the `service` role as a service token,
    /// any others as a user token (tests use it to make expired or foreign tokens).
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        if claims.is_service() {
            let signed = Signed {
                claims,
                aud: SERVICE_AUDIENCE,
            };
            return jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &signed,
                &self.service_encoding,
            )
            .map_err(|e| AuthError::Issue(e.to_string()));
        }
        let (kid, key) = self
            .user_signing
            .as_ref()
            .ok_or_else(|| AuthError::Issue(format!("this service holds no {SIGNING_KEY_VAR}")))?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.clone());
        let signed = Signed {
            claims,
            aud: USER_AUDIENCE,
        };
        jsonwebtoken::encode(&header, &signed, key).map_err(|e| AuthError::Issue(e.to_string()))
    }

    /// Verifies algorithm, signature, issuer, audience, expiry and the token's kind: an ES256
    /// user token (never with the `service` role) or an HS256 service token (always with it).
    ///
    /// A token this process verified before answers from memory, its expiry checked again
    /// (see [`VerifiedTokens`]); the answer is the same as [`JwtKeys::verify_uncached`]'s.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        let digest = VerifiedTokens::digest(token);
        if let Some(claims) = self.verified.get(&digest, chrono::Utc::now().timestamp()) {
            return Ok(claims);
        }
        let claims = self.verify_uncached(token)?;
        self.verified.insert(digest, &claims);
        Ok(claims)
    }

    /// [`JwtKeys::verify`] without the memory of verified tokens: every call checks the
    /// signature (benchmarks measure it with this).
    pub fn verify_uncached(&self, token: &str) -> Result<Claims, AuthError> {
        // Check the algorithm ourselves first: `alg: none` and RS tokens must say so instead
        // of surfacing as a generic decoding error.
        let header = raw_header(token)?;
        match header.alg.as_str() {
            "ES256" => {
                // An unknown or missing kid: no key of ours signed it.
                let key = header
                    .kid
                    .and_then(|kid| self.user_verifying.iter().find(|k| k.kid == kid))
                    .ok_or(AuthError::BadSignature)?;
                let claims = decode(
                    token,
                    &key.decoding,
                    &validation(Algorithm::ES256, &self.issuer, USER_AUDIENCE),
                )?;
                if claims.is_service() {
                    return Err(AuthError::WrongAudience);
                }
                Ok(claims)
            }
            "HS256" => {
                let claims = decode(
                    token,
                    &self.service_decoding,
                    &validation(Algorithm::HS256, &self.issuer, SERVICE_AUDIENCE),
                )?;
                if !claims.is_service() {
                    return Err(AuthError::WrongAudience);
                }
                Ok(claims)
            }
            _ => Err(AuthError::UnsupportedAlgorithm),
        }
    }
}

/// The fields of a compact JWT's header we look at before verifying anything.
#[derive(Deserialize)]
struct RawHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// The header of a compact JWT, without trusting anything in it.
fn raw_header(token: &str) -> Result<RawHeader, AuthError> {
    let mut parts = token.split('.');
    let header = parts.next().ok_or(AuthError::Malformed)?;
    if parts.count() != 2 {
        return Err(AuthError::Malformed);
    }
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(header.trim_end_matches('='))
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
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
    use p256::pkcs8::{EncodePublicKey, LineEnding};

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
    fn a_remembered_token_still_expires() {
        let k = keys();
        let token = k.issue("user-1", None, &[]).unwrap();
        let first = k.verify(&token).unwrap();
        let digest = VerifiedTokens::digest(&token);
        let now = chrono::Utc::now().timestamp();
        assert_eq!(k.verified.get(&digest, now), Some(first.clone()));
        assert_eq!(k.verify(&token), Ok(first.clone()));
        // Within the leeway it is still accepted, past it no longer, and the entry is gone.
        assert!(k.verified.get(&digest, first.exp + LEEWAY_SECS).is_some());
        assert_eq!(k.verified.get(&digest, first.exp + LEEWAY_SECS + 1), None);
        assert_eq!(k.verified.get(&digest, now), None);
    }

    #[test]
    fn still_valid_agrees_with_the_full_check_at_the_leeway() {
        let k = keys();
        let now = chrono::Utc::now().timestamp();
        for offset in [
            -(LEEWAY_SECS + 60),
            -(LEEWAY_SECS + 2),
            -(LEEWAY_SECS - 2),
            60,
        ] {
            let mut c = claims(0, "moviebook");
            c.exp = now + offset;
            let token = k.sign(&c).unwrap();
            assert_eq!(
                k.verify_uncached(&token).is_ok(),
                still_valid(c.exp, now),
                "exp = now {offset:+}"
            );
        }
    }

    #[test]
    fn refused_tokens_are_never_remembered() {
        let k = keys();
        let now = chrono::Utc::now().timestamp();
        let other = JwtKeys::new(
            "another-secret-another-secret-xx",
            "moviebook",
            Duration::from_secs(60),
        );
        let forged = other.issue("user-1", None, &["admin".into()]).unwrap();
        let expired = k.sign(&claims(-120, "moviebook")).unwrap();
        for (token, error) in [
            (forged, AuthError::BadSignature),
            (expired, AuthError::Expired),
        ] {
            for _ in 0..2 {
                assert_eq!(k.verify(&token), Err(error.clone()));
            }
            assert_eq!(k.verified.get(&VerifiedTokens::digest(&token), now), None);
        }
    }

    #[test]
    fn remembered_tokens_belong_to_their_keys() {
        let ours = keys();
        let token = ours.issue("user-1", None, &[]).unwrap();
        assert!(ours.verify(&token).is_ok());
        // Keys built after a rotation that dropped our key refuse the token at once.
        let rotated = JwtKeys::new(
            "another-secret-another-secret-xx",
            "moviebook",
            Duration::from_secs(60),
        );
        assert_eq!(rotated.verify(&token), Err(AuthError::BadSignature));
        // A clone shares the memory.
        let clone = ours.clone();
        let digest = VerifiedTokens::digest(&token);
        assert!(
            clone
                .verified
                .get(&digest, chrono::Utc::now().timestamp())
                .is_some()
        );
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
    fn services_act_for_users_only_where_named() {
        let k = keys();
        let booking = k
            .verify(&k.issue_service_token(BOOKING_SERVICE).unwrap())
            .unwrap();
        assert!(!booking.may_act_for("user-1"));
        assert!(booking.may_act_for_or_is("user-1", BOOKING_SERVICE));
        let other = k
            .verify(&k.issue_service_token("notification-service").unwrap())
            .unwrap();
        assert!(!other.may_act_for_or_is("user-1", BOOKING_SERVICE));
    }

    fn pem(key: &SecretKey) -> String {
        key.to_pkcs8_pem(LineEnding::LF).unwrap().to_string()
    }

    fn public_pem(key: &SecretKey) -> String {
        key.public_key().to_public_key_pem(LineEnding::LF).unwrap()
    }

    /// An HS256 token over `claims` with the shared secret: what any service could make.
    /// `aud: None` leaves the audience out (the tokens of the release before audiences).
    fn hs256(claims: &Claims, aud: Option<&str>) -> String {
        let key = EncodingKey::from_secret(SECRET.as_bytes());
        let header = Header::new(Algorithm::HS256);
        match aud {
            Some(aud) => jsonwebtoken::encode(&header, &Signed { claims, aud }, &key),
            None => jsonwebtoken::encode(&header, claims, &key),
        }
        .unwrap()
    }

    /// An ES256 token signed with `key`, with or without its `kid` header.
    fn es256(key: &SecretKey, with_kid: bool, claims: &Claims, aud: &str) -> String {
        let (kid, enc) = signing(key).unwrap();
        let mut header = Header::new(Algorithm::ES256);
        header.kid = with_kid.then_some(kid);
        jsonwebtoken::encode(&header, &Signed { claims, aud }, &enc).unwrap()
    }

    /// The cluster's shape: the user service signs, the others hold the public key and the
    /// shared service secret.
    fn cluster() -> (JwtKeys, JwtKeys, SecretKey) {
        let key = dev_user_key("a key only the user service has");
        let user = JwtKeys::with_user_keys(
            SECRET,
            Some(&pem(&key)),
            None,
            "moviebook",
            Duration::from_secs(600),
        )
        .unwrap();
        let booking = JwtKeys::with_user_keys(
            SECRET,
            None,
            Some(&public_pem(&key)),
            "moviebook",
            Duration::from_secs(600),
        )
        .unwrap();
        (user, booking, key)
    }

    #[test]
    fn user_tokens_are_es256_with_kid_and_audience() {
        let (user, booking, key) = cluster();
        let token = user.issue("user-1", None, &[]).unwrap();
        let header = raw_header(&token).unwrap();
        assert_eq!(header.alg, "ES256");
        assert_eq!(
            header.kid.as_deref(),
            Some(key_id(&key.public_key()).as_str())
        );
        let payload: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(payload["aud"], USER_AUDIENCE);
        assert_eq!(booking.verify(&token).unwrap().sub, "user-1");
        assert_eq!(user.verify(&token).unwrap().sub, "user-1");
    }

    #[test]
    fn a_verifier_cannot_mint_user_tokens() {
        let (_, booking, _) = cluster();
        assert!(!booking.signs_user_tokens());
        assert!(matches!(
            booking.issue("user-1", None, &[]),
            Err(AuthError::Issue(_))
        ));
        // What a service holding the shared secret could forge: an HS256 token with a user's
        // claims, with either audience.
        let forged = |aud| hs256(&claims(600, "moviebook"), Some(aud));
        assert_eq!(
            booking.verify(&forged(SERVICE_AUDIENCE)),
            Err(AuthError::WrongAudience)
        );
        assert_eq!(
            booking.verify(&forged(USER_AUDIENCE)),
            Err(AuthError::WrongAudience)
        );
    }

    #[test]
    fn a_user_token_cannot_claim_the_service_role() {
        let (user, booking, key) = cluster();
        assert!(user.issue("x", None, &[SERVICE_ROLE.into()]).is_err());
        // Even signed with the real key (a bug or a leak), the role makes it a wrong audience.
        let mut c = claims(600, "moviebook");
        c.sub = BOOKING_SERVICE.into();
        c.roles = vec![SERVICE_ROLE.into()];
        let token = es256(&key, true, &c, USER_AUDIENCE);
        assert_eq!(booking.verify(&token), Err(AuthError::WrongAudience));
    }

    #[test]
    fn a_service_token_is_not_a_user_token_and_back() {
        let (user, booking, key) = cluster();
        // A service token relabelled with the user audience.
        let c = Claims {
            roles: vec![SERVICE_ROLE.into()],
            ..claims(600, "moviebook")
        };
        let relabelled = hs256(&c, Some(USER_AUDIENCE));
        assert_eq!(booking.verify(&relabelled), Err(AuthError::WrongAudience));
        // A user-key token with the internal audience.
        let c = claims(600, "moviebook");
        let internal = es256(&key, true, &c, SERVICE_AUDIENCE);
        assert_eq!(booking.verify(&internal), Err(AuthError::WrongAudience));
        // A token with no audience at all (what the previous release issued).
        let legacy = hs256(&c, None);
        assert_eq!(booking.verify(&legacy), Err(AuthError::WrongAudience));
        // The genuine service token still passes everywhere.
        let service = user.issue_service_token(BOOKING_SERVICE).unwrap();
        assert!(
            booking
                .verify(&service)
                .unwrap()
                .is_service_named(BOOKING_SERVICE)
        );
    }

    #[test]
    fn unknown_or_missing_kid_is_a_bad_signature() {
        let (_, booking, _) = cluster();
        // Signed by a key the verifier does not hold (the dev key of the same secret).
        let stranger = keys().issue("user-1", None, &[]).unwrap();
        assert_eq!(booking.verify(&stranger), Err(AuthError::BadSignature));
        // The right key's signature but the kid removed.
        let key = dev_user_key("a key only the user service has");
        let no_kid = es256(&key, false, &claims(600, "moviebook"), USER_AUDIENCE);
        assert_eq!(booking.verify(&no_kid), Err(AuthError::BadSignature));
    }

    #[test]
    fn rotation_accepts_both_keys_while_both_are_listed() {
        let old = dev_user_key("old");
        let new = dev_user_key("new");
        let ttl = Duration::from_secs(600);
        let both = format!("{}\n{}", public_pem(&old), public_pem(&new));
        let signer_old =
            JwtKeys::with_user_keys(SECRET, Some(&pem(&old)), None, "moviebook", ttl).unwrap();
        let signer_new =
            JwtKeys::with_user_keys(SECRET, Some(&pem(&new)), Some(&both), "moviebook", ttl)
                .unwrap();
        let verifier =
            JwtKeys::with_user_keys(SECRET, None, Some(&both), "moviebook", ttl).unwrap();
        assert_eq!(verifier.user_key_ids().len(), 2);
        // The new signer lists its own key once.
        assert_eq!(signer_new.user_key_ids().len(), 2);
        let before = signer_old.issue("user-1", None, &[]).unwrap();
        let after = signer_new.issue("user-1", None, &[]).unwrap();
        assert!(verifier.verify(&before).is_ok());
        assert!(verifier.verify(&after).is_ok());
        assert!(signer_new.verify(&before).is_ok());
        // Once the old key is dropped from the list, its tokens stop working.
        let only_new =
            JwtKeys::with_user_keys(SECRET, None, Some(&public_pem(&new)), "moviebook", ttl)
                .unwrap();
        assert_eq!(only_new.verify(&before), Err(AuthError::BadSignature));
        assert!(only_new.verify(&after).is_ok());
    }

    #[test]
    fn bad_key_material_names_the_variable_without_echoing_it() {
        let ttl = Duration::from_secs(60);
        let err = JwtKeys::with_user_keys(SECRET, Some("not a key"), None, "m", ttl).unwrap_err();
        assert!(err.to_string().contains(SIGNING_KEY_VAR), "{err}");
        assert!(!err.to_string().contains("not a key"), "{err}");
        let pub_pem = public_pem(&dev_user_key("x"));
        let truncated = &pub_pem[..pub_pem.len() - 10];
        let err = JwtKeys::with_user_keys(SECRET, None, Some(truncated), "m", ttl).unwrap_err();
        assert!(err.to_string().contains(PUBLIC_KEYS_VAR), "{err}");
        let garbled = pub_pem.replace("MFkw", "MFkx");
        assert!(JwtKeys::with_user_keys(SECRET, None, Some(&garbled), "m", ttl).is_err());
    }

    #[test]
    fn key_id_is_stable() {
        // The operator computes the same id for Kong's credential (operator/src/build/tokens.rs has
        // the same vector).
        let key = SecretKey::from_slice(&[7u8; 32]).unwrap();
        assert_eq!(key_id(&key.public_key()), KEY_ID_OF_SEVENS);
    }

    /// `key_id` of the P-256 key whose scalar is 32 bytes of 7.
    const KEY_ID_OF_SEVENS: &str = "c8f193e678e762f9";

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
