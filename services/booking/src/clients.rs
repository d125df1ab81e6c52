//! The booking service's clients of the other services. Each holds its connections for the
//! life of the process (a tonic `Channel` multiplexing HTTP/2 streams per cinema pod, a pooled
//! `reqwest::Client`), so no request pays for a new connection.

use std::{
    collections::HashMap,
    future::Future,
    net::{IpAddr, SocketAddr},
    sync::{
        Arc, Mutex, RwLock, Weak,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use futures::future::BoxFuture;
use tokio::sync::Notify;

use moviebook_common::grpc_auth::{AuthedChannel, ServiceBearer};
use moviebook_common::proto::{
    self, BatchGetShowtimesRequest, ConfirmSeatBookingRequest, ConfirmSeatBookingResponse,
    GetSeatMapRequest, GetSeatMapResponse, GetShowtimeDetailsRequest, GetShowtimeDetailsResponse,
    ListCinemasRequest, ListMoviesRequest, ListMoviesResponse, LockSeatsRequest, LockSeatsResponse,
    ReleaseBookedSeatsRequest, ReleaseSeatLockRequest, cinema_service_client::CinemaServiceClient,
};
use reqwest::StatusCode;
use serde::Deserialize;
use tonic::{Code, transport::Channel};

use crate::error::{BookingError, Result};

/// A small time-bounded cache for lookups that rarely change (a verified user, a showtime's
/// movie and cinema). Bounded: it is simply cleared when full.
pub struct TtlCache<V> {
    ttl: Duration,
    capacity: usize,
    map: Mutex<HashMap<String, (Instant, V)>>,
}

impl<V: Clone> TtlCache<V> {
    pub fn new(ttl: Duration, capacity: usize) -> Self {
        Self {
            ttl,
            capacity,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &str) -> Option<V> {
        if self.ttl.is_zero() {
            return None;
        }
        let map = self.map.lock().ok()?;
        map.get(key)
            .filter(|(at, _)| at.elapsed() < self.ttl)
            .map(|(_, v)| v.clone())
    }

    pub fn put(&self, key: &str, value: V) {
        if self.ttl.is_zero() {
            return;
        }
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= self.capacity {
                map.clear();
            }
            map.insert(key.to_owned(), (Instant::now(), value));
        }
    }
}

/// Whether a gRPC failure leaves the outcome unknown (the call may have taken effect).
pub fn outcome_unknown(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Unknown
            | Code::Internal
    )
}

/// Maps a gRPC status from the cinema service to our error.
pub fn cinema_error(status: &tonic::Status) -> BookingError {
    match status.code() {
        Code::InvalidArgument | Code::OutOfRange => BookingError::BadInput(status.message().into()),
        Code::NotFound => BookingError::NotFound(status.message().into()),
        Code::FailedPrecondition | Code::AlreadyExists | Code::Aborted => {
            BookingError::SeatsUnavailable {
                seats: vec![],
                message: status.message().into(),
            }
        }
        _ => {
            tracing::warn!(code = ?status.code(), message = status.message(), "cinema call failed");
            BookingError::Unavailable {
                service: "cinema",
                message: "the cinema service is unavailable".into(),
            }
        }
    }
}

/// What a call to cinema does after an attempt failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try the next known pod.
    NextPod,
    /// Every pod tried in this pass was unavailable: resolve the pods again, wait `backoff`,
    /// and go through the fresh list.
    Resolve { backoff: Duration },
    /// Answer the failure.
    GiveUp,
}

/// How many passes over the known pods a retried call makes, and the waits between them.
/// A rolling update can leave this process with a list naming only pods that are gone (they
/// left DNS between two refreshes) or a new pod the network has not yet let it reach; a fresh
/// list a moment later has the pods that replaced them. Bounded: at most 3 + 3 + 3 attempts
/// and 1.25 s of waiting, only while cinema answers UNAVAILABLE.
const PASS_BACKOFF: [Duration; 2] = [Duration::from_millis(250), Duration::from_millis(1000)];

/// How a call to cinema is retried: reads (and the idempotent releases) move to the next
/// cinema pod when one answers UNAVAILABLE — a pod that is shutting down, or one this process
/// has not yet learnt is gone — at most once per known pod and three per pass; when a pass
/// ran out, the pods are resolved again for another pass ([`PASS_BACKOFF`]). Any other code
/// is an answer. LockSeats and ConfirmSeatBooking are not retried here: their outcome is the
/// booking service's to reconcile (see `outcome_unknown`).
pub fn retry_step(code: Code, attempt: usize, members: usize, pass: usize) -> Retry {
    if code != Code::Unavailable {
        Retry::GiveUp
    } else if attempt + 1 < members.clamp(1, 3) {
        Retry::NextPod
    } else if let Some(&backoff) = PASS_BACKOFF.get(pass) {
        Retry::Resolve { backoff }
    } else {
        Retry::GiveUp
    }
}

/// Resolves a host name to the addresses of its cinema pods.
pub type Resolver =
    Arc<dyn Fn(String, u16) -> BoxFuture<'static, std::io::Result<Vec<SocketAddr>>> + Send + Sync>;

/// The system resolver (`getaddrinfo`): for a headless Service, one address per ready pod.
pub fn dns_resolver() -> Resolver {
    Arc::new(|host: String, port: u16| {
        Box::pin(async move {
            let mut addrs: Vec<SocketAddr> = tokio::net::lookup_host((host.as_str(), port))
                .await?
                .collect();
            addrs.sort();
            addrs.dedup();
            Ok(addrs)
        })
    })
}

/// One cinema address and the lazily connected HTTP/2 channel to it.
#[derive(Clone)]
struct Member {
    addr: Option<SocketAddr>,
    client: CinemaServiceClient<AuthedChannel>,
}

/// Where the cinema pods are: the URL's host, resolved again every `every` so that booking's
/// traffic spreads over every cinema pod (a Kubernetes headless Service answers with one
/// address per ready pod) and follows them as they come and go. One HTTP/2 connection to a
/// ClusterIP would pin every request of this process to whichever pod it first reached.
struct Pool {
    scheme: String,
    host: String,
    port: u16,
    timeout: Duration,
    resolver: Resolver,
    /// Booking's service token on every call (cinema takes gRPC calls from booking alone).
    bearer: ServiceBearer,
    members: RwLock<Arc<Vec<Member>>>,
    next: AtomicUsize,
    /// Wakes the refresher early (a call met an unavailable pod).
    refresh: Notify,
    /// Whether a call has ever been answered (by any pod): see [`CinemaClient::reached`].
    reached: AtomicBool,
}

impl Pool {
    fn channel(&self, uri: &str) -> anyhow::Result<Channel> {
        Ok(tonic::transport::Endpoint::from_shared(uri.to_owned())?
            .connect_timeout(Duration::from_secs(3))
            .timeout(self.timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true)
            .connect_lazy())
    }

    fn snapshot(&self) -> Arc<Vec<Member>> {
        self.members
            .read()
            .map(|m| m.clone())
            .unwrap_or_else(|e| e.into_inner().clone())
    }

    /// Replaces the members by `addrs`, keeping the channel (and its open connection) of every
    /// address that stays. An empty answer keeps what is known: a pod that really went away
    /// fails over to the next one, while dropping every address would fail every call.
    fn update(&self, addrs: &[SocketAddr]) {
        if addrs.is_empty() {
            return;
        }
        let current = self.snapshot();
        let same = current.len() == addrs.len()
            && current.iter().zip(addrs).all(|(m, a)| m.addr == Some(*a));
        if same {
            return;
        }
        let mut members = Vec::with_capacity(addrs.len());
        for addr in addrs {
            if let Some(m) = current.iter().find(|m| m.addr == Some(*addr)) {
                members.push(m.clone());
                continue;
            }
            match self.channel(&format!("{}://{addr}", self.scheme)) {
                Ok(ch) => members.push(Member {
                    addr: Some(*addr),
                    client: CinemaServiceClient::with_interceptor(ch, self.bearer.clone()),
                }),
                Err(e) => tracing::warn!(%addr, error = %e, "cannot use cinema address"),
            }
        }
        if members.is_empty() {
            return;
        }
        tracing::info!(addresses = ?addrs, "cinema gRPC endpoints");
        if let Ok(mut m) = self.members.write() {
            *m = Arc::new(members);
        }
    }

    async fn resolve(&self) {
        match (self.resolver)(self.host.clone(), self.port).await {
            Ok(addrs) => self.update(&addrs),
            Err(e) => {
                tracing::warn!(host = %self.host, error = %e, "cannot resolve the cinema service; keeping the known addresses")
            }
        }
    }

    /// The members in the order this call should try them (round robin).
    async fn rotation(&self) -> Vec<Member> {
        let mut members = self.snapshot();
        if members.is_empty() {
            self.resolve().await;
            members = self.snapshot();
        }
        if members.is_empty() {
            return Vec::new();
        }
        let start = self.next.fetch_add(1, Ordering::Relaxed) % members.len();
        members[start..]
            .iter()
            .chain(&members[..start])
            .cloned()
            .collect()
    }
}

/// Re-resolves the pool every `every`, or sooner when a call met an unavailable pod, until
/// the last client is dropped.
async fn refresh_loop(pool: Weak<Pool>, every: Duration) {
    loop {
        let Some(p) = pool.upgrade() else { return };
        p.resolve().await;
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            // A burst of failures re-resolves once, not once per failed call.
            () = p.refresh.notified() => tokio::time::sleep(Duration::from_millis(500)).await,
        }
        drop(p);
    }
}

/// The cinema gRPC client: a lazily connected HTTP/2 channel per cinema pod, calls spread
/// round robin over them. Clones share the pool.
#[derive(Clone)]
pub struct CinemaClient {
    pool: Arc<Pool>,
}

impl CinemaClient {
    /// `url`'s host is resolved every `resolve_every` (zero: never; the URL is used as it is,
    /// as it also is for an IP address or https).
    pub fn new(
        url: &str,
        timeout: Duration,
        resolve_every: Duration,
        bearer: ServiceBearer,
    ) -> anyhow::Result<Self> {
        Self::with_resolver(url, timeout, resolve_every, dns_resolver(), bearer)
    }

    /// [`Self::new`] with another resolver (tests give it fixed addresses).
    pub fn with_resolver(
        url: &str,
        timeout: Duration,
        resolve_every: Duration,
        resolver: Resolver,
        bearer: ServiceBearer,
    ) -> anyhow::Result<Self> {
        let uri: http::Uri = url.parse()?;
        let scheme = uri.scheme_str().unwrap_or("http").to_owned();
        let host = uri
            .host()
            .ok_or_else(|| anyhow::anyhow!("cinema URL {url} has no host"))?
            .trim_matches(['[', ']'])
            .to_owned();
        let port = uri
            .port_u16()
            .unwrap_or(if scheme == "https" { 443 } else { 80 });
        let balanced =
            !resolve_every.is_zero() && scheme == "http" && host.parse::<IpAddr>().is_err();
        let pool = Arc::new(Pool {
            scheme,
            host,
            port,
            timeout,
            resolver,
            bearer,
            members: RwLock::new(Arc::new(Vec::new())),
            next: AtomicUsize::new(0),
            refresh: Notify::new(),
            reached: AtomicBool::new(false),
        });
        if balanced {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(refresh_loop(Arc::downgrade(&pool), resolve_every));
            }
        } else {
            let client =
                CinemaServiceClient::with_interceptor(pool.channel(url)?, pool.bearer.clone());
            if let Ok(mut m) = pool.members.write() {
                *m = Arc::new(vec![Member { addr: None, client }]);
            }
        }
        Ok(Self { pool })
    }

    /// The cinema addresses calls are spread over (empty for a URL used as it is).
    pub fn addresses(&self) -> Vec<SocketAddr> {
        self.pool.snapshot().iter().filter_map(|m| m.addr).collect()
    }

    /// Readiness: passes once this process has had an answer from cinema, and from then on.
    /// A new booking pod is kept out of its Service until it can reach cinema (its address may
    /// not yet be allowed by the NetworkPolicy, its first DNS answer may be stale), while a
    /// later cinema outage degrades requests (coded errors) instead of taking every booking
    /// pod out of the Service at once.
    pub async fn reached(&self) -> std::result::Result<(), String> {
        if self.pool.reached.load(Ordering::Relaxed) {
            return Ok(());
        }
        self.list_cinemas()
            .await
            .map(|_| ())
            .map_err(|e| format!("cinema not reached yet: {e}"))
    }

    /// Runs `call` on the next member; when `retry` and the member is unavailable, on the
    /// following ones and then on a freshly resolved list (see [`retry_step`]).
    async fn call<T, F, Fut>(&self, retry: bool, call: F) -> std::result::Result<T, tonic::Status>
    where
        F: Fn(CinemaServiceClient<AuthedChannel>) -> Fut,
        Fut: Future<Output = std::result::Result<tonic::Response<T>, tonic::Status>>,
    {
        let mut pass = 0;
        loop {
            let members = self.pool.rotation().await;
            if members.is_empty() {
                return Err(tonic::Status::unavailable(format!(
                    "no address of the cinema service {} is known",
                    self.pool.host
                )));
            }
            let mut attempt = 0;
            let backoff = loop {
                let member = &members[attempt % members.len()];
                let status = match call(member.client.clone()).await {
                    Ok(r) => {
                        self.pool.reached.store(true, Ordering::Relaxed);
                        return Ok(r.into_inner());
                    }
                    Err(status) => status,
                };
                if status.code() == Code::Unavailable {
                    self.pool.refresh.notify_one();
                }
                let step = if retry {
                    retry_step(status.code(), attempt, members.len(), pass)
                } else {
                    Retry::GiveUp
                };
                match step {
                    Retry::NextPod => attempt += 1,
                    Retry::Resolve { backoff } => break backoff,
                    Retry::GiveUp => return Err(status),
                }
                tracing::debug!(addr = ?member.addr, message = status.message(), "cinema pod unavailable; trying the next one");
            };
            tracing::info!(
                pass,
                ?backoff,
                "every known cinema pod was unavailable; resolving them again"
            );
            tokio::time::sleep(backoff).await;
            self.pool.resolve().await;
            pass += 1;
        }
    }

    pub async fn list_movies(
        &self,
        genre: Option<String>,
        limit: i32,
        offset: i32,
    ) -> Result<ListMoviesResponse> {
        let req = ListMoviesRequest {
            genre: genre.unwrap_or_default(),
            limit,
            offset,
            ..ListMoviesRequest::default()
        };
        self.call(true, |mut c| {
            let req = req.clone();
            async move { c.list_movies(req).await }
        })
        .await
        .map_err(|s| cinema_error(&s))
    }

    pub async fn list_cinemas(&self) -> Result<Vec<proto::CinemaInfo>> {
        self.call(true, |mut c| async move {
            c.list_cinemas(ListCinemasRequest {}).await
        })
        .await
        .map(|r| r.cinemas)
        .map_err(|s| cinema_error(&s))
    }

    pub async fn batch_get_showtimes(
        &self,
        ids: Vec<String>,
    ) -> Result<Vec<GetShowtimeDetailsResponse>> {
        let req = BatchGetShowtimesRequest { showtime_ids: ids };
        self.call(true, |mut c| {
            let req = req.clone();
            async move { c.batch_get_showtimes(req).await }
        })
        .await
        .map(|r| r.showtimes)
        .map_err(|s| cinema_error(&s))
    }

    pub async fn showtime(&self, id: &str) -> Result<GetShowtimeDetailsResponse> {
        let req = GetShowtimeDetailsRequest {
            showtime_id: id.to_owned(),
        };
        self.call(true, |mut c| {
            let req = req.clone();
            async move { c.get_showtime_details(req).await }
        })
        .await
        .map_err(|s| cinema_error(&s))
    }

    pub async fn seat_map(&self, id: &str) -> Result<GetSeatMapResponse> {
        let req = GetSeatMapRequest {
            showtime_id: id.to_owned(),
        };
        self.call(true, |mut c| {
            let req = req.clone();
            async move { c.get_seat_map(req).await }
        })
        .await
        .map_err(|s| cinema_error(&s))
    }

    pub async fn lock_seats(
        &self,
        showtime_id: &str,
        seats: &[String],
        booking_id: &str,
        hold: Duration,
    ) -> std::result::Result<LockSeatsResponse, tonic::Status> {
        let req = LockSeatsRequest {
            showtime_id: showtime_id.to_owned(),
            seat_numbers: seats.to_vec(),
            booking_id: booking_id.to_owned(),
            lock_duration_seconds: i32::try_from(hold.as_secs()).unwrap_or(300),
        };
        self.call(false, |mut c| {
            let req = req.clone();
            async move { c.lock_seats(req).await }
        })
        .await
    }

    /// Releases a hold. Idempotent on the cinema side; failures are logged, not returned: a
    /// hold that cannot be released now lapses by itself.
    pub async fn release_lock(&self, lock_id: &str, booking_id: &str) {
        let req = ReleaseSeatLockRequest {
            lock_id: lock_id.to_owned(),
            booking_id: booking_id.to_owned(),
        };
        let r = self
            .call(true, |mut c| {
                let req = req.clone();
                async move { c.release_seat_lock(req).await }
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(booking_id, lock_id, error = %e, "could not release the seat hold (it will lapse)");
        }
    }

    pub async fn confirm(
        &self,
        lock_id: &str,
        booking_id: &str,
        user_id: &str,
    ) -> std::result::Result<ConfirmSeatBookingResponse, tonic::Status> {
        let req = ConfirmSeatBookingRequest {
            lock_id: lock_id.to_owned(),
            booking_id: booking_id.to_owned(),
            user_id: user_id.to_owned(),
        };
        self.call(false, |mut c| {
            let req = req.clone();
            async move { c.confirm_seat_booking(req).await }
        })
        .await
    }

    /// Returns sold seats to sale (cancel after payment). Idempotent, so retried on the next
    /// pod like a read.
    pub async fn release_booked(&self, booking_id: &str, showtime_id: &str) -> Result<()> {
        let req = ReleaseBookedSeatsRequest {
            booking_id: booking_id.to_owned(),
            showtime_id: showtime_id.to_owned(),
        };
        self.call(true, |mut c| {
            let req = req.clone();
            async move { c.release_booked_seats(req).await }
        })
        .await
        .map(|_| ())
        .map_err(|s| cinema_error(&s))
    }
}

/// What the user service tells about a user.
#[derive(Debug, Clone, Deserialize)]
pub struct UserInfo {
    pub id: String,
    #[serde(default)]
    pub email: Option<String>,
}

/// The shared error body of the other services.
#[derive(Debug, Deserialize)]
struct ErrorEnvelope {
    error: ErrorDetail,
}

#[derive(Debug, Deserialize)]
struct ErrorDetail {
    code: String,
    #[serde(default)]
    message: String,
}

async fn error_detail(resp: reqwest::Response) -> (String, String) {
    match resp.json::<ErrorEnvelope>().await {
        Ok(e) => (e.error.code, e.error.message),
        Err(_) => ("UNKNOWN".into(), String::new()),
    }
}

/// A successful transaction, a decline, or a refund as the payment service answers them.
#[derive(Debug, Clone, Deserialize)]
pub struct Transaction {
    pub transaction_id: String,
    pub status: String,
    #[serde(default)]
    pub failure_code: Option<String>,
    #[serde(default)]
    pub failure_reason: Option<String>,
    #[serde(default)]
    pub amount: f64,
    #[serde(default)]
    pub refunded_amount: f64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Refund {
    pub refund_id: String,
}

/// The outcome of a payment request.
#[derive(Debug)]
pub enum PayOutcome {
    /// The gateway answered (SUCCESS or FAILED).
    Answered(Transaction),
    /// The request was refused before any charge (bad input, auth).
    Refused(BookingError),
    /// No definite answer: the charge may or may not have happened.
    Unknown(String),
}

/// REST clients of the user and payment services, sharing one pooled HTTP client.
#[derive(Clone)]
pub struct RestClients {
    http: reqwest::Client,
    user_url: String,
    payment_url: String,
}

impl RestClients {
    pub fn new(user_url: &str, payment_url: &str, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(3))
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .build()?;
        Ok(Self {
            http,
            user_url: user_url.trim_end_matches('/').to_owned(),
            payment_url: payment_url.trim_end_matches('/').to_owned(),
        })
    }

    /// Checks the user exists, with the caller's token (the user service enforces that the
    /// token may read that user).
    pub async fn user(&self, token: &str, user_id: &str) -> Result<UserInfo> {
        let resp = self
            .http
            .get(format!("{}/api/v1/users/{user_id}", self.user_url))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| unavailable("user", &e))?;
        match resp.status() {
            s if s.is_success() => {
                let v: serde_json::Value =
                    resp.json().await.map_err(|e| unavailable("user", &e))?;
                // Either the user object itself or {"user": {...}}.
                let user = v.get("user").cloned().unwrap_or(v);
                serde_json::from_value(user).map_err(|e| BookingError::Unavailable {
                    service: "user",
                    message: format!("unexpected answer from the user service: {e}"),
                })
            }
            StatusCode::NOT_FOUND => {
                Err(BookingError::NotFound(format!("user {user_id} not found")))
            }
            StatusCode::FORBIDDEN => Err(BookingError::Forbidden(
                "the token may not act for this user".into(),
            )),
            StatusCode::UNAUTHORIZED => Err(BookingError::Unauthenticated(
                moviebook_common::auth::AuthError::BadSignature,
            )),
            s => {
                let (code, message) = error_detail(resp).await;
                tracing::warn!(status = %s, code, message, "user service error");
                Err(BookingError::Unavailable {
                    service: "user",
                    message: "the user service is unavailable".into(),
                })
            }
        }
    }

    /// Charges a booking. The Idempotency-Key makes a retry replay the same charge.
    #[allow(clippy::too_many_arguments)]
    pub async fn pay(
        &self,
        token: &str,
        idempotency_key: &str,
        booking_id: &str,
        user_id: &str,
        amount: f64,
        currency: &str,
        method: &str,
        details: Option<serde_json::Value>,
    ) -> PayOutcome {
        let mut body = serde_json::json!({
            "booking_id": booking_id,
            "user_id": user_id,
            "amount": amount,
            "currency": currency,
            "payment_method": method,
        });
        if let (Some(d), Some(obj)) = (details, body.as_object_mut()) {
            obj.insert("payment_details".into(), d);
        }
        let resp = match self
            .http
            .post(format!("{}/payments", self.payment_url))
            .bearer_auth(token)
            .header("Idempotency-Key", idempotency_key)
            .json(&body)
            .send()
            .await
        {
            Ok(r) => r,
            Err(e) => return PayOutcome::Unknown(e.to_string()),
        };
        let status = resp.status();
        if status.is_success() {
            return match resp.json::<Transaction>().await {
                Ok(t) => PayOutcome::Answered(t),
                Err(e) => PayOutcome::Unknown(format!("unreadable payment answer: {e}")),
            };
        }
        if status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS {
            return PayOutcome::Unknown(format!("payment service answered {status}"));
        }
        let (code, message) = error_detail(resp).await;
        let err = match status {
            StatusCode::UNAUTHORIZED => {
                BookingError::Unauthenticated(moviebook_common::auth::AuthError::BadSignature)
            }
            StatusCode::FORBIDDEN => BookingError::Forbidden(message),
            StatusCode::CONFLICT => BookingError::InvalidState {
                status: crate::domain::BookingStatus::Paying,
                message: format!("payment refused: {code} {message}"),
            },
            _ if code == "INVALID_CARD" => BookingError::PaymentDeclined {
                code,
                reason: message,
                transaction_id: None,
            },
            _ => BookingError::BadInput(format!("payment refused: {code}: {message}")),
        };
        PayOutcome::Refused(err)
    }

    /// Refunds a transaction in full; idempotent per key.
    pub async fn refund(
        &self,
        token: &str,
        idempotency_key: &str,
        transaction_id: &str,
        reason: &str,
    ) -> Result<Refund> {
        let resp = self
            .http
            .post(format!("{}/refunds", self.payment_url))
            .bearer_auth(token)
            .header("Idempotency-Key", idempotency_key)
            .json(&serde_json::json!({ "transaction_id": transaction_id, "reason": reason }))
            .send()
            .await
            .map_err(|e| unavailable("payment", &e))?;
        if resp.status().is_success() {
            return resp
                .json::<Refund>()
                .await
                .map_err(|e| unavailable("payment", &e));
        }
        let status = resp.status();
        let (code, message) = error_detail(resp).await;
        tracing::warn!(%status, code, message, transaction_id, "refund refused");
        Err(BookingError::Unavailable {
            service: "payment",
            message: format!("refund failed: {code}"),
        })
    }

    /// Every transaction of a booking, newest first.
    pub async fn transactions(&self, token: &str, booking_id: &str) -> Result<Vec<Transaction>> {
        let resp = self
            .http
            .get(format!(
                "{}/payments/booking/{booking_id}",
                self.payment_url
            ))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| unavailable("payment", &e))?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(vec![]);
        }
        if !resp.status().is_success() {
            return Err(BookingError::Unavailable {
                service: "payment",
                message: format!("listing payments answered {}", resp.status()),
            });
        }
        let v: serde_json::Value = resp.json().await.map_err(|e| unavailable("payment", &e))?;
        // A bare list or {"transactions": [...]}.
        let list = v.get("transactions").cloned().unwrap_or(v);
        serde_json::from_value(list).map_err(|e| BookingError::Unavailable {
            service: "payment",
            message: format!("unexpected answer listing payments: {e}"),
        })
    }
}

fn unavailable(service: &'static str, e: &reqwest::Error) -> BookingError {
    tracing::warn!(service, error = %e, "upstream call failed");
    BookingError::Unavailable {
        service,
        message: format!("the {service} service is unavailable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_expires_and_is_bounded() {
        let c = TtlCache::new(Duration::from_millis(50), 2);
        c.put("a", 1);
        assert_eq!(c.get("a"), Some(1));
        c.put("b", 2);
        c.put("c", 3); // full: cleared first
        assert_eq!(c.get("a"), None);
        assert_eq!(c.get("c"), Some(3));
        std::thread::sleep(Duration::from_millis(60));
        assert_eq!(c.get("c"), None);
        let off = TtlCache::new(Duration::ZERO, 2);
        off.put("a", 1);
        assert_eq!(off.get("a"), None);
    }

    #[test]
    fn grpc_codes_map_to_client_codes() {
        assert_eq!(
            cinema_error(&tonic::Status::invalid_argument("x")).code(),
            "BAD_USER_INPUT"
        );
        assert_eq!(
            cinema_error(&tonic::Status::not_found("x")).code(),
            "NOT_FOUND"
        );
        assert_eq!(
            cinema_error(&tonic::Status::unavailable("x")).code(),
            "SERVICE_UNAVAILABLE"
        );
        assert!(outcome_unknown(Code::DeadlineExceeded));
        assert!(!outcome_unknown(Code::FailedPrecondition));
    }

    #[test]
    fn only_unavailable_moves_to_the_next_pod_then_to_a_fresh_list() {
        use Retry::*;
        assert_eq!(retry_step(Code::Unavailable, 0, 2, 0), NextPod);
        assert_eq!(
            retry_step(Code::Unavailable, 1, 2, 0),
            Resolve {
                backoff: PASS_BACKOFF[0]
            },
            "both pods tried: resolve again"
        );
        assert_eq!(
            retry_step(Code::Unavailable, 0, 1, 0),
            Resolve {
                backoff: PASS_BACKOFF[0]
            },
            "one pod: nothing else to try in this pass"
        );
        assert_eq!(retry_step(Code::Unavailable, 1, 5, 0), NextPod);
        assert!(
            matches!(retry_step(Code::Unavailable, 2, 5, 0), Resolve { .. }),
            "at most three attempts per pass"
        );
        assert_eq!(
            retry_step(Code::Unavailable, 1, 2, 1),
            Resolve {
                backoff: PASS_BACKOFF[1]
            }
        );
        assert_eq!(
            retry_step(Code::Unavailable, 1, 2, PASS_BACKOFF.len()),
            GiveUp,
            "the passes are bounded"
        );
        assert_eq!(retry_step(Code::NotFound, 0, 3, 0), GiveUp);
        assert_eq!(retry_step(Code::DeadlineExceeded, 0, 3, 0), GiveUp);
    }

    #[tokio::test]
    async fn readiness_waits_for_the_first_answer() {
        let gone = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            l.local_addr().expect("addr")
        };
        let client = CinemaClient::new(
            &format!("http://{gone}"),
            Duration::from_secs(1),
            Duration::ZERO,
            bearer(),
        )
        .expect("client");
        let err = client.reached().await.expect_err("nothing listens");
        assert!(err.contains("cinema not reached yet"), "{err}");
        client.pool.reached.store(true, Ordering::Relaxed);
        assert!(client.reached().await.is_ok(), "sticky once reached");
    }

    fn bearer() -> ServiceBearer {
        ServiceBearer::new(
            Arc::new(moviebook_common::auth::JwtKeys::new(
                moviebook_common::config::defaults::JWT_SECRET,
                "moviebook",
                Duration::from_secs(60),
            )),
            crate::SERVICE_NAME,
        )
    }

    fn fixed(addrs: Vec<SocketAddr>) -> Resolver {
        Arc::new(move |_, _| {
            let addrs = addrs.clone();
            Box::pin(async move { Ok(addrs) })
        })
    }

    #[tokio::test]
    async fn a_name_is_resolved_into_one_member_per_address_and_rotated() {
        let a: SocketAddr = "10.0.0.1:9090".parse().expect("addr");
        let b: SocketAddr = "10.0.0.2:9090".parse().expect("addr");
        let client = CinemaClient::with_resolver(
            "http://cinema-grpc.shop.svc:9090",
            Duration::from_secs(1),
            Duration::from_secs(3600),
            fixed(vec![a, b]),
            bearer(),
        )
        .expect("client");
        let first = client.pool.rotation().await;
        assert_eq!(client.addresses(), [a, b]);
        let second = client.pool.rotation().await;
        assert_ne!(first[0].addr, second[0].addr, "round robin");
        // an empty answer keeps the known pods; a new answer replaces them
        client.pool.update(&[]);
        assert_eq!(client.addresses(), [a, b]);
        client.pool.update(&[b]);
        assert_eq!(client.addresses(), [b]);
    }

    #[tokio::test]
    async fn an_ip_address_or_a_zero_interval_is_used_as_it_is() {
        let never: Resolver =
            Arc::new(|_, _| Box::pin(async { Err(std::io::Error::other("must not resolve")) }));
        for (url, every) in [
            ("http://127.0.0.1:9090", Duration::from_secs(5)),
            ("http://cinema:9090", Duration::ZERO),
        ] {
            let c = CinemaClient::with_resolver(
                url,
                Duration::from_secs(1),
                every,
                never.clone(),
                bearer(),
            )
            .expect("client");
            assert_eq!(c.pool.rotation().await.len(), 1, "{url}");
            assert!(c.addresses().is_empty(), "{url}");
        }
    }
}
