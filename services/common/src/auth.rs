//! JSON Web Tokens of two kinds, told apart by algorithm and audience:
//!
//! - **User tokens** (`aud = "moviebook"`, ES256): issued at login by the user service alone,
//!   which holds the P-256 private key (`USER_TOKEN_SIGNING_KEY`). Every other service, and
//!   Kong at the edge, holds only the public keys (`USER_TOKEN_PUBLIC_KEYS`), so a compromised
//!   booking or notification pod cannot mint a session for anybody. The header's `kid` picks
//!   the verification key, which is what lets two keys be valid at once during a rotation.
//! - **Service tokens** (`aud = "moviebook-internal"`, ES256, role `service`): short-lived
//!   tokens a service mints for its own calls to another service. Only the booking service
//!   calls others in its own name, so only it holds a service-token key
//!   (`SERVICE_TOKEN_SIGNING_KEY`); the callees hold its public keys
//!   (`SERVICE_TOKEN_PUBLIC_KEYS`), and a token signed with one of them passes only with
//!   `sub = booking-service`. A compromised payment or notification pod can therefore mint
//!   nothing: neither a session nor booking's identity (which charges and refunds).
//!
//! A user token can never carry the `service` role and a service token can never pass as a
//! user token: each kind is checked for its own key, audience and shape. HS256 is refused.
//!
//! With none of the four key variables set (`make dev`, tests) development P-256 keys of both
//! kinds are derived from `JWT_SECRET`, so processes sharing the secret agree without any
//! set-up (and say so in a warning). Once any of them is set, each kind uses only its own
//! variables: a kind left without keys is refused, never derived from a secret.
//!
//! Verification answers a distinct [`AuthError`] for each way a token can be wrong, so clients
//! and logs can tell an expired session from a forged token.
//!
//! Checking an ES256 signature costs a few hundred microseconds, more than the rest of a
//! booking request in the booking service, and a client sends the same token with every
//! request of its session. So [`JwtKeys::verify`] remembers the tokens it has verified (see
//! the private `VerifiedTokens` cache): a repeated token costs one SHA-256 and a map lookup.

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
/// The calling service's own service-token key (a PKCS#8 PEM P-256 key; booking's alone).
pub const SERVICE_SIGNING_KEY_VAR: &str = "SERVICE_TOKEN_SIGNING_KEY";
/// The keys booking-service tokens are verified with (SPKI PEMs, two during a rotation).
pub const SERVICE_PUBLIC_KEYS_VAR: &str = "SERVICE_TOKEN_PUBLIC_KEYS";
/// How long a minted service token is reused ([`JwtKeys::service_token`]). Tokens live
/// [`SERVICE_TOKEN_SECS`]; renewing well before that leaves room for clock skew and a request
/// in flight, and lets the callee answer a repeated token from memory.
pub const SERVICE_TOKEN_REUSE: Duration = Duration::from_secs(120);
/// Lifetime of a service token.
pub const SERVICE_TOKEN_SECS: i64 = 300;

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
    #[error("token algorithm is not accepted (ES256 only)")]
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

/// A verification key, its id and, for a service-token key, the one service whose tokens it
/// signs (`None`: any service's, the development key only).
#[derive(Clone)]
struct VerifyingKey {
    kid: String,
    decoding: DecodingKey,
    owner: Option<&'static str>,
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
    /// This service's own service-token key and its `kid`; only the booking service has one.
    service_signing: Option<Signer>,
    service_verifying: Vec<VerifyingKey>,
    /// The user-token signing key and its `kid`; only the user service has one.
    user_signing: Option<Signer>,
    user_verifying: Vec<VerifyingKey>,
    issuer: String,
    ttl: Duration,
    verified: VerifiedTokens,
    /// The service token this process last minted for itself ([`JwtKeys::service_token`]).
    minted: Arc<std::sync::Mutex<Option<Minted>>>,
}

/// A service token minted by this process, for whom and when.
struct Minted {
    service: String,
    at: std::time::Instant,
    token: String,
}

impl std::fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtKeys")
            .field("issuer", &self.issuer)
            .field("ttl", &self.ttl)
            .field("signs_user_tokens", &self.user_signing.is_some())
            .field("signs_service_tokens", &self.service_signing.is_some())
            .field("user_key_ids", &self.user_key_ids())
            .field("service_key_ids", &self.service_key_ids())
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
    dev_key(b"moviebook dev user-token key\0", secret)
}

/// The development service-token key every process derives from the same `JWT_SECRET` (a
/// different key from [`dev_user_key`]'s, so the kinds stay apart in development too).
pub fn dev_service_key(secret: &str) -> SecretKey {
    dev_key(b"moviebook dev service-token key\0", secret)
}

fn dev_key(label: &[u8], secret: &str) -> SecretKey {
    let mut seed = Sha256::new()
        .chain_update(label)
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

fn verifying_key(public: &PublicKey, owner: Option<&'static str>) -> VerifyingKey {
    VerifyingKey {
        kid: key_id(public),
        decoding: DecodingKey::from_ec_der(public.to_encoded_point(false).as_bytes()),
        owner,
    }
}

/// Adds `key` to `keys` unless a key with its id is there already.
fn push_new(keys: &mut Vec<VerifyingKey>, key: VerifyingKey) {
    if !keys.iter().any(|k| k.kid == key.kid) {
        keys.push(key);
    }
}

/// Explicit key material, as the four environment variables hold it (PEM text).
#[derive(Debug, Clone, Copy, Default)]
pub struct KeyMaterial<'a> {
    /// `USER_TOKEN_SIGNING_KEY`: the user service's private key.
    pub user_signing: Option<&'a str>,
    /// `USER_TOKEN_PUBLIC_KEYS`: the keys user tokens are accepted with.
    pub user_public: Option<&'a str>,
    /// `SERVICE_TOKEN_SIGNING_KEY`: the booking service's own private key.
    pub service_signing: Option<&'a str>,
    /// `SERVICE_TOKEN_PUBLIC_KEYS`: the keys booking-service tokens are accepted with.
    pub service_public: Option<&'a str>,
}

impl KeyMaterial<'_> {
    /// Whether nothing is set: the development keys are then derived from the secret.
    pub fn is_empty(&self) -> bool {
        self.user_signing.is_none()
            && self.user_public.is_none()
            && self.service_signing.is_none()
            && self.service_public.is_none()
    }
}

/// A signing key and its `kid`.
type Signer = (String, EncodingKey);

/// One kind's keys from its signing PEM and public PEMs: the signing key (if any) and the
/// verification keys (the signing key's own first, duplicates dropped). Errors name the
/// variable and never echo the value.
fn kind_keys(
    signing_pem: Option<&str>,
    public_pems: Option<&str>,
    vars: (&str, &str),
    owner: Option<&'static str>,
) -> Result<(Option<Signer>, Vec<VerifyingKey>), ConfigError> {
    let invalid = |var: &str, reason: String| ConfigError::Invalid {
        var: var.to_owned(),
        value: "<redacted>".into(),
        reason,
    };
    let mut signer = None;
    let mut verifying = Vec::new();
    if let Some(pem) = signing_pem {
        let key = parse_signing_key(pem).map_err(|r| invalid(vars.0, r))?;
        signer = Some(signing(&key).map_err(|r| invalid(vars.0, r))?);
        verifying.push(verifying_key(&key.public_key(), owner));
    }
    if let Some(text) = public_pems {
        for public in parse_public_keys(text).map_err(|r| invalid(vars.1, r))? {
            push_new(&mut verifying, verifying_key(&public, owner));
        }
    }
    Ok((signer, verifying))
}

fn signing(key: &SecretKey) -> Result<Signer, String> {
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
    /// Keys for `make dev` and tests: the development keys of both kinds derived from
    /// `secret`, so this value signs and verifies user tokens and any service's tokens.
    pub fn new(secret: &str, issuer: &str, ttl: Duration) -> Self {
        let user = dev_user_key(secret);
        let service = dev_service_key(secret);
        let mut keys = Self::empty(issuer, ttl);
        keys.user_verifying = vec![verifying_key(&user.public_key(), None)];
        keys.service_verifying = vec![verifying_key(&service.public_key(), None)];
        // The DER of a valid key always encodes; without it the keys only verify.
        keys.user_signing = signing(&user).ok();
        keys.service_signing = signing(&service).ok();
        keys
    }

    fn empty(issuer: &str, ttl: Duration) -> Self {
        Self {
            service_signing: None,
            service_verifying: Vec::new(),
            user_signing: None,
            user_verifying: Vec::new(),
            issuer: issuer.to_owned(),
            ttl,
            verified: VerifiedTokens::new(),
            minted: Arc::default(),
        }
    }

    /// Keys from explicit key material; with none at all, the development keys of
    /// [`JwtKeys::new`]. Each kind uses only its own material: a kind with none is refused
    /// (and cannot be issued), so setting the user keys never leaves service tokens open to
    /// whoever knows `secret`.
    pub fn from_material(
        secret: &str,
        material: &KeyMaterial<'_>,
        issuer: &str,
        ttl: Duration,
    ) -> Result<Self, ConfigError> {
        if material.is_empty() {
            return Ok(Self::new(secret, issuer, ttl));
        }
        let mut keys = Self::empty(issuer, ttl);
        (keys.user_signing, keys.user_verifying) = kind_keys(
            material.user_signing,
            material.user_public,
            (SIGNING_KEY_VAR, PUBLIC_KEYS_VAR),
            None,
        )?;
        (keys.service_signing, keys.service_verifying) = kind_keys(
            material.service_signing,
            material.service_public,
            (SERVICE_SIGNING_KEY_VAR, SERVICE_PUBLIC_KEYS_VAR),
            Some(BOOKING_SERVICE),
        )?;
        Ok(keys)
    }

    /// [`JwtKeys::from_material`] from the four key variables; warns when it falls back to
    /// the development keys, or when one kind has no keys at all.
    pub fn from_env(secret: &str, issuer: &str, ttl: Duration) -> Result<Self, ConfigError> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.trim().is_empty());
        let values = [
            var(SIGNING_KEY_VAR),
            var(PUBLIC_KEYS_VAR),
            var(SERVICE_SIGNING_KEY_VAR),
            var(SERVICE_PUBLIC_KEYS_VAR),
        ];
        let material = KeyMaterial {
            user_signing: values[0].as_deref(),
            user_public: values[1].as_deref(),
            service_signing: values[2].as_deref(),
            service_public: values[3].as_deref(),
        };
        if material.is_empty() {
            tracing::warn!(
                "no token keys are set ({SIGNING_KEY_VAR}, {PUBLIC_KEYS_VAR}, \
                 {SERVICE_SIGNING_KEY_VAR}, {SERVICE_PUBLIC_KEYS_VAR}): user and service tokens \
                 use development keys derived from JWT_SECRET, so every holder of that secret \
                 can mint them"
            );
        }
        let keys = Self::from_material(secret, &material, issuer, ttl)?;
        if !material.is_empty() {
            if keys.user_verifying.is_empty() {
                tracing::warn!("no user-token keys are set: every user token is refused");
            }
            if keys.service_verifying.is_empty() {
                tracing::warn!("no service-token keys are set: every service token is refused");
            }
        }
        Ok(keys)
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

    /// Whether these keys can issue service tokens (only the booking service's can, in a
    /// cluster).
    pub fn signs_service_tokens(&self) -> bool {
        self.service_signing.is_some()
    }

    /// The ids of the keys service tokens are accepted with.
    pub fn service_key_ids(&self) -> Vec<&str> {
        self.service_verifying
            .iter()
            .map(|k| k.kid.as_str())
            .collect()
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

    /// A new short-lived token a service uses to call another service on its own behalf.
    pub fn issue_service_token(&self, service: &str) -> Result<String, AuthError> {
        let now = chrono::Utc::now().timestamp();
        self.sign(&Claims {
            sub: service.to_owned(),
            iss: self.issuer.clone(),
            iat: now,
            exp: now + SERVICE_TOKEN_SECS,
            email: None,
            roles: vec![SERVICE_ROLE.to_owned()],
        })
    }

    /// `service`'s own token for a call: the one minted less than [`SERVICE_TOKEN_REUSE`]
    /// ago, else a new one. One signature per two minutes instead of one per call, and the
    /// callee verifies a token it has seen from memory. Clones of these keys share it.
    pub fn service_token(&self, service: &str) -> Result<String, AuthError> {
        // The slot holds a complete value or none: a panic elsewhere cannot leave it torn.
        let mut minted = self.minted.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(m) = minted.as_ref()
            && m.service == service
            && m.at.elapsed() < SERVICE_TOKEN_REUSE
        {
            return Ok(m.token.clone());
        }
        let token = self.issue_service_token(service)?;
        *minted = Some(Minted {
            service: service.to_owned(),
            at: std::time::Instant::now(),
            token: token.clone(),
        });
        Ok(token)
    }

    /// Signs claims as MovieBook would: claims with the `service` role as a service token,
    /// any others as a user token (tests use it to make expired or foreign tokens).
    pub fn sign(&self, claims: &Claims) -> Result<String, AuthError> {
        let (signer, var, aud) = if claims.is_service() {
            (
                &self.service_signing,
                SERVICE_SIGNING_KEY_VAR,
                SERVICE_AUDIENCE,
            )
        } else {
            (&self.user_signing, SIGNING_KEY_VAR, USER_AUDIENCE)
        };
        let (kid, key) = signer
            .as_ref()
            .ok_or_else(|| AuthError::Issue(format!("this service holds no {var}")))?;
        let mut header = Header::new(Algorithm::ES256);
        header.kid = Some(kid.clone());
        jsonwebtoken::encode(&header, &Signed { claims, aud }, key)
            .map_err(|e| AuthError::Issue(e.to_string()))
    }

    /// Verifies algorithm, signature, issuer, audience, expiry and the token's kind: a user
    /// token (never with the `service` role) or a service token (always with it, and with the
    /// `sub` its key belongs to), both ES256.
    ///
    /// A token this process verified before answers from memory, its expiry checked again
    /// (see the private `VerifiedTokens`); the answer is the same as
    /// [`JwtKeys::verify_uncached`]'s.
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
        if header.alg != "ES256" {
            return Err(AuthError::UnsupportedAlgorithm);
        }
        // The kid picks the key, and the key's kind the audience and shape the token must
        // have. An unknown or missing kid: no key of ours signed it.
        let kid = header.kid.ok_or(AuthError::BadSignature)?;
        fn find<'k>(keys: &'k [VerifyingKey], kid: &str) -> Option<&'k VerifyingKey> {
            keys.iter().find(|k| k.kid == kid)
        }
        let (key, audience, is_service) = match find(&self.service_verifying, &kid) {
            Some(key) => (key, SERVICE_AUDIENCE, true),
            None => (
                find(&self.user_verifying, &kid).ok_or(AuthError::BadSignature)?,
                USER_AUDIENCE,
                false,
            ),
        };
        let claims = decode(
            token,
            &key.decoding,
            &validation(Algorithm::ES256, &self.issuer, audience),
        )?;
        if claims.is_service() != is_service {
            return Err(AuthError::WrongAudience);
        }
        // A service's key speaks for that service alone (user keys have no owner).
        if key.owner.is_some_and(|owner| owner != claims.sub) {
            return Err(AuthError::BadSignature);
        }
        Ok(claims)
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

    /// An HS256 token over `claims` with the development secret: what every service could
    /// make before service tokens were ES256. `aud: None` leaves the audience out (the tokens
    /// of the release before audiences).
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

    fn from(material: KeyMaterial<'_>) -> Result<JwtKeys, ConfigError> {
        JwtKeys::from_material(SECRET, &material, "moviebook", Duration::from_secs(600))
    }

    /// The cluster's keys, as the operator hands them out.
    struct Cluster {
        /// User-token signing key, service-token public key.
        user: JwtKeys,
        /// User-token public key, service-token signing key.
        booking: JwtKeys,
        /// Both public keys only (payment, cinema, notification).
        payment: JwtKeys,
        user_key: SecretKey,
        service_key: SecretKey,
    }

    fn cluster() -> Cluster {
        let user_key = dev_user_key("a key only the user service has");
        let service_key = dev_service_key("a key only the booking service has");
        let (user_pem, user_pub) = (pem(&user_key), public_pem(&user_key));
        let (service_pem, service_pub) = (pem(&service_key), public_pem(&service_key));
        let user = from(KeyMaterial {
            user_signing: Some(&user_pem),
            service_public: Some(&service_pub),
            ..KeyMaterial::default()
        })
        .unwrap();
        let booking = from(KeyMaterial {
            user_public: Some(&user_pub),
            service_signing: Some(&service_pem),
            ..KeyMaterial::default()
        })
        .unwrap();
        let payment = from(KeyMaterial {
            user_public: Some(&user_pub),
            service_public: Some(&service_pub),
            ..KeyMaterial::default()
        })
        .unwrap();
        Cluster {
            user,
            booking,
            payment,
            user_key,
            service_key,
        }
    }

    fn service_claims(sub: &str) -> Claims {
        Claims {
            sub: sub.into(),
            roles: vec![SERVICE_ROLE.into()],
            email: None,
            ..claims(600, "moviebook")
        }
    }

    #[test]
    fn user_tokens_are_es256_with_kid_and_audience() {
        let c = cluster();
        let token = c.user.issue("user-1", None, &[]).unwrap();
        let header = raw_header(&token).unwrap();
        assert_eq!(header.alg, "ES256");
        assert_eq!(
            header.kid.as_deref(),
            Some(key_id(&c.user_key.public_key()).as_str())
        );
        let payload: serde_json::Value = serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(token.split('.').nth(1).unwrap())
                .unwrap(),
        )
        .unwrap();
        assert_eq!(payload["aud"], USER_AUDIENCE);
        assert_eq!(c.booking.verify(&token).unwrap().sub, "user-1");
        assert_eq!(c.payment.verify(&token).unwrap().sub, "user-1");
        assert_eq!(c.user.verify(&token).unwrap().sub, "user-1");
    }

    #[test]
    fn a_verifier_cannot_mint_user_tokens() {
        let c = cluster();
        assert!(!c.booking.signs_user_tokens());
        assert!(matches!(
            c.booking.issue("user-1", None, &[]),
            Err(AuthError::Issue(_))
        ));
        // What a service holding the development secret could forge: an HS256 token with a
        // user's claims, with either audience.
        let forged = |aud| hs256(&claims(600, "moviebook"), Some(aud));
        for aud in [SERVICE_AUDIENCE, USER_AUDIENCE] {
            assert_eq!(
                c.payment.verify(&forged(aud)),
                Err(AuthError::UnsupportedAlgorithm)
            );
        }
    }

    #[test]
    fn only_booking_mints_service_tokens_and_only_as_itself() {
        let c = cluster();
        assert!(c.booking.signs_service_tokens());
        for other in [&c.user, &c.payment] {
            assert!(!other.signs_service_tokens());
            assert!(matches!(
                other.issue_service_token(BOOKING_SERVICE),
                Err(AuthError::Issue(_))
            ));
        }
        let token = c.booking.issue_service_token(BOOKING_SERVICE).unwrap();
        let header = raw_header(&token).unwrap();
        assert_eq!(header.alg, "ES256");
        assert_eq!(
            header.kid.as_deref(),
            Some(key_id(&c.service_key.public_key()).as_str())
        );
        for verifier in [&c.user, &c.payment, &c.booking] {
            assert!(
                verifier
                    .verify(&token)
                    .unwrap()
                    .is_service_named(BOOKING_SERVICE)
            );
        }
        // Booking's key speaks for booking alone: a token it signs in another name is refused.
        let as_payment = c.booking.issue_service_token("payment-service").unwrap();
        assert_eq!(c.payment.verify(&as_payment), Err(AuthError::BadSignature));
        // The shared secret no longer makes a service token (what a compromised pod would try).
        let hs = hs256(&service_claims(BOOKING_SERVICE), Some(SERVICE_AUDIENCE));
        assert_eq!(c.payment.verify(&hs), Err(AuthError::UnsupportedAlgorithm));
        // Nor does the development key of a secret once real keys are set.
        let dev = keys().issue_service_token(BOOKING_SERVICE).unwrap();
        assert_eq!(c.payment.verify(&dev), Err(AuthError::BadSignature));
    }

    #[test]
    fn setting_one_kind_of_keys_leaves_the_other_refused_not_derived() {
        let user_key = dev_user_key("u");
        let user_pem = pem(&user_key);
        let only_user = from(KeyMaterial {
            user_signing: Some(&user_pem),
            ..KeyMaterial::default()
        })
        .unwrap();
        assert!(only_user.service_key_ids().is_empty());
        assert!(!only_user.signs_service_tokens());
        // A service token of the development keys of the very same secret is refused.
        let dev = JwtKeys::new(SECRET, "moviebook", Duration::from_secs(60));
        let token = dev.issue_service_token(BOOKING_SERVICE).unwrap();
        assert_eq!(only_user.verify(&token), Err(AuthError::BadSignature));
        // And the other way round.
        let service_pub = public_pem(&dev_service_key("s"));
        let only_service = from(KeyMaterial {
            service_public: Some(&service_pub),
            ..KeyMaterial::default()
        })
        .unwrap();
        assert!(only_service.user_key_ids().is_empty());
        let session = dev.issue("user-1", None, &[]).unwrap();
        assert_eq!(only_service.verify(&session), Err(AuthError::BadSignature));
    }

    #[test]
    fn development_keys_of_the_two_kinds_differ() {
        let k = keys();
        assert_eq!(k.user_key_ids().len(), 1);
        assert_eq!(k.service_key_ids().len(), 1);
        assert_ne!(k.user_key_ids(), k.service_key_ids());
        // Any service name passes with the development key (tests mint several).
        let token = k.issue_service_token("notification-service").unwrap();
        assert!(k.verify(&token).is_ok());
    }

    #[test]
    fn a_user_token_cannot_claim_the_service_role() {
        let c = cluster();
        assert!(c.user.issue("x", None, &[SERVICE_ROLE.into()]).is_err());
        // Even signed with the real user key (a bug or a leak), the role makes it a wrong
        // audience.
        let token = es256(
            &c.user_key,
            true,
            &service_claims(BOOKING_SERVICE),
            USER_AUDIENCE,
        );
        assert_eq!(c.payment.verify(&token), Err(AuthError::WrongAudience));
        // The user key with the internal audience is no service token either.
        let internal = es256(
            &c.user_key,
            true,
            &service_claims(BOOKING_SERVICE),
            SERVICE_AUDIENCE,
        );
        assert_eq!(c.payment.verify(&internal), Err(AuthError::WrongAudience));
    }

    #[test]
    fn a_service_token_is_not_a_user_token_and_back() {
        let c = cluster();
        // Booking's key on a user's claims, with either audience.
        let user_claims = claims(600, "moviebook");
        for aud in [USER_AUDIENCE, SERVICE_AUDIENCE] {
            let token = es256(&c.service_key, true, &user_claims, aud);
            assert_eq!(
                c.payment.verify(&token),
                Err(AuthError::WrongAudience),
                "{aud}"
            );
        }
        // A token with no audience at all (what the release before audiences issued).
        let legacy = hs256(&user_claims, None);
        assert_eq!(
            c.payment.verify(&legacy),
            Err(AuthError::UnsupportedAlgorithm)
        );
        // The genuine service token passes everywhere.
        let service = c.booking.issue_service_token(BOOKING_SERVICE).unwrap();
        assert!(
            c.payment
                .verify(&service)
                .unwrap()
                .is_service_named(BOOKING_SERVICE)
        );
    }

    #[test]
    fn unknown_or_missing_kid_is_a_bad_signature() {
        let c = cluster();
        // Signed by a key the verifier does not hold (the dev key of the same secret).
        let stranger = keys().issue("user-1", None, &[]).unwrap();
        assert_eq!(c.booking.verify(&stranger), Err(AuthError::BadSignature));
        // The right key's signature but the kid removed.
        let no_kid = es256(&c.user_key, false, &claims(600, "moviebook"), USER_AUDIENCE);
        assert_eq!(c.booking.verify(&no_kid), Err(AuthError::BadSignature));
        let no_kid = es256(
            &c.service_key,
            false,
            &service_claims(BOOKING_SERVICE),
            SERVICE_AUDIENCE,
        );
        assert_eq!(c.payment.verify(&no_kid), Err(AuthError::BadSignature));
    }

    #[test]
    fn rotation_accepts_both_keys_while_both_are_listed() {
        let old = dev_user_key("old");
        let new = dev_user_key("new");
        let both = format!("{}\n{}", public_pem(&old), public_pem(&new));
        let (old_pem, new_pem, new_pub) = (pem(&old), pem(&new), public_pem(&new));
        let user = |signing, public| {
            from(KeyMaterial {
                user_signing: signing,
                user_public: public,
                ..KeyMaterial::default()
            })
            .unwrap()
        };
        let signer_old = user(Some(&old_pem), None);
        let signer_new = user(Some(&new_pem), Some(&both));
        let verifier = user(None, Some(&both));
        assert_eq!(verifier.user_key_ids().len(), 2);
        // The new signer lists its own key once.
        assert_eq!(signer_new.user_key_ids().len(), 2);
        let before = signer_old.issue("user-1", None, &[]).unwrap();
        let after = signer_new.issue("user-1", None, &[]).unwrap();
        assert!(verifier.verify(&before).is_ok());
        assert!(verifier.verify(&after).is_ok());
        assert!(signer_new.verify(&before).is_ok());
        // Once the old key is dropped from the list, its tokens stop working.
        let only_new = user(None, Some(&new_pub));
        assert_eq!(only_new.verify(&before), Err(AuthError::BadSignature));
        assert!(only_new.verify(&after).is_ok());
    }

    #[test]
    fn service_key_rotation_accepts_both_keys_while_both_are_listed() {
        let old = dev_service_key("old");
        let new = dev_service_key("new");
        let both = format!("{}{}", public_pem(&old), public_pem(&new));
        let (old_pem, new_pem) = (pem(&old), pem(&new));
        let booking = |signing: &str| {
            from(KeyMaterial {
                service_signing: Some(signing),
                ..KeyMaterial::default()
            })
            .unwrap()
        };
        let payment = from(KeyMaterial {
            service_public: Some(&both),
            ..KeyMaterial::default()
        })
        .unwrap();
        assert_eq!(payment.service_key_ids().len(), 2);
        for signer in [booking(&old_pem), booking(&new_pem)] {
            let token = signer.issue_service_token(BOOKING_SERVICE).unwrap();
            assert!(payment.verify(&token).is_ok());
        }
    }

    #[test]
    fn bad_key_material_names_the_variable_without_echoing_it() {
        let pub_pem = public_pem(&dev_user_key("x"));
        let truncated = &pub_pem[..pub_pem.len() - 10];
        let garbled = pub_pem.replace("MFkw", "MFkx");
        let cases: [(KeyMaterial<'_>, &str); 5] = [
            (
                KeyMaterial {
                    user_signing: Some("not a key"),
                    ..KeyMaterial::default()
                },
                SIGNING_KEY_VAR,
            ),
            (
                KeyMaterial {
                    user_public: Some(truncated),
                    ..KeyMaterial::default()
                },
                PUBLIC_KEYS_VAR,
            ),
            (
                KeyMaterial {
                    user_public: Some(&garbled),
                    ..KeyMaterial::default()
                },
                PUBLIC_KEYS_VAR,
            ),
            (
                KeyMaterial {
                    service_signing: Some("not a key"),
                    ..KeyMaterial::default()
                },
                SERVICE_SIGNING_KEY_VAR,
            ),
            (
                KeyMaterial {
                    service_public: Some(truncated),
                    ..KeyMaterial::default()
                },
                SERVICE_PUBLIC_KEYS_VAR,
            ),
        ];
        for (material, var) in cases {
            let err = from(material).unwrap_err().to_string();
            assert!(err.contains(var), "{err}");
            assert!(!err.contains("not a key"), "{err}");
        }
    }

    #[test]
    fn an_own_service_token_is_reused_then_renewed() {
        let k = keys();
        let first = k.service_token(BOOKING_SERVICE).unwrap();
        assert_eq!(k.service_token(BOOKING_SERVICE).unwrap(), first, "reused");
        // Clones share it; another name gets its own.
        assert_eq!(k.clone().service_token(BOOKING_SERVICE).unwrap(), first);
        let other = k.service_token("notification-service").unwrap();
        assert!(
            k.verify(&other)
                .unwrap()
                .is_service_named("notification-service")
        );
        // Past the reuse time a new one is minted.
        if let Ok(mut slot) = k.minted.lock()
            && let Some(m) = slot.as_mut()
        {
            m.at = std::time::Instant::now() - SERVICE_TOKEN_REUSE;
        }
        let _ = k.service_token("notification-service").unwrap();
        let at = k.minted.lock().unwrap().as_ref().unwrap().at;
        assert!(
            at.elapsed() < SERVICE_TOKEN_REUSE,
            "renewed after the reuse time"
        );
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
