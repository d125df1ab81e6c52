//! Operational endpoints every service serves: `GET /health` (liveness: the process answers),
//! `GET /ready` (readiness: every dependency check passes) and `GET /metrics` (Prometheus
//! text), plus a middleware that counts requests and records latency per route and status.

use std::{
    collections::BTreeMap,
    future::Future,
    pin::Pin,
    sync::{Arc, OnceLock},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{MatchedPath, Request, State},
    http::{StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
    routing::get,
};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// Latency buckets (seconds): fine-grained below 50 ms, where the targets are.
const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// How long one readiness check may take before it counts as failed.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

static PROMETHEUS: OnceLock<PrometheusHandle> = OnceLock::new();

/// The process-wide Prometheus recorder, installed on first use. Installing it once lets several
/// services share a process (integration tests) without fighting over the global recorder.
pub fn prometheus() -> &'static PrometheusHandle {
    PROMETHEUS.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), LATENCY_BUCKETS)
            .map(PrometheusBuilder::build_recorder);
        match recorder {
            Ok(recorder) => {
                let handle = recorder.handle();
                // Fails only if another recorder was installed; then ours simply stays unused.
                let _ = metrics::set_global_recorder(recorder);
                handle
            }
            Err(e) => {
                tracing::error!(error = %e, "invalid metrics buckets; using defaults");
                let recorder = PrometheusBuilder::new().build_recorder();
                let handle = recorder.handle();
                let _ = metrics::set_global_recorder(recorder);
                handle
            }
        }
    })
}

type CheckFuture = Pin<Box<dyn Future<Output = Result<(), String>> + Send>>;
type CheckFn = Arc<dyn Fn() -> CheckFuture + Send + Sync>;

/// The dependency checks behind `/ready`, each with a name (`postgres`, `rabbitmq`, ...).
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(&'static str, CheckFn)>,
}

impl Readiness {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a check; it passes when the future resolves to `Ok` within two seconds.
    pub fn with<F, Fut, E>(mut self, name: &'static str, check: F) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: std::fmt::Display,
    {
        let f: CheckFn = Arc::new(move || {
            let fut = check();
            Box::pin(async move { fut.await.map_err(|e| e.to_string()) })
        });
        self.checks.push((name, f));
        self
    }

    /// Runs every check concurrently; the map holds `"ok"` or the error of each.
    pub async fn run(&self) -> (bool, BTreeMap<&'static str, String>) {
        let results = futures::future::join_all(self.checks.iter().map(|(name, check)| {
            let fut = check();
            async move {
                let outcome = match tokio::time::timeout(CHECK_TIMEOUT, fut).await {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(e)) => Err(e),
                    Err(_) => Err(format!("timed out after {}s", CHECK_TIMEOUT.as_secs())),
                };
                (*name, outcome)
            }
        }))
        .await;
        let ready = results.iter().all(|(_, r)| r.is_ok());
        let report = results
            .into_iter()
            .map(|(name, r)| (name, r.err().unwrap_or_else(|| "ok".into())))
            .collect();
        (ready, report)
    }
}

/// `/health`, `/ready` and `/metrics`. Merge it into the service's router and wrap the whole
/// router with [`track_metrics`].
/// A service's whole HTTP surface: its own routes, the ops endpoints above, the JSON 404 for
/// anything else, and request metrics around all of it. One place, so every service answers
/// `/health`, `/ready`, `/metrics` and unknown paths alike.
pub fn with_ops(api: Router, readiness: Readiness) -> Router {
    api.merge(router(readiness))
        .fallback(crate::error::not_found)
        .layer(axum::middleware::from_fn(track_metrics))
}

pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/health", get(health))
        .route("/ready", get(ready))
        .route("/metrics", get(metrics_text))
        .with_state(Arc::new(readiness))
}

async fn health() -> impl IntoResponse {
    Json(serde_json::json!({ "status": "ok" }))
}

async fn ready(State(readiness): State<Arc<Readiness>>) -> Response {
    let (ok, checks) = readiness.run().await;
    let status = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = serde_json::json!({
        "status": if ok { "ready" } else { "not_ready" },
        "checks": checks,
    });
    (status, Json(body)).into_response()
}

async fn metrics_text() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        prometheus().render(),
    )
        .into_response()
}

/// Records one request in `http_requests_total` and `http_request_duration_seconds`.
/// Public so non-axum servers (the gRPC server) record the same series.
pub fn record_request(
    protocol: &'static str,
    method: &str,
    route: &str,
    status: &str,
    elapsed: Duration,
) {
    let labels = [
        ("protocol", protocol.to_owned()),
        ("method", method.to_owned()),
        ("route", route.to_owned()),
        ("status", status.to_owned()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels).record(elapsed.as_secs_f64());
}

/// Middleware: counts every request by method, matched route template (never the raw path, so
/// ids do not explode the label set) and status, and records its latency.
pub async fn track_metrics(req: Request, next: Next) -> Response {
    let _ = prometheus();
    let start = Instant::now();
    let method = req.method().as_str().to_owned();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let response = next.run(req).await;
    record_request(
        "http",
        &method,
        &route,
        response.status().as_str(),
        start.elapsed(),
    );
    response
}

/// Serves `app` on `addr` until SIGTERM/SIGINT, with graceful shutdown.
pub async fn serve(addr: std::net::SocketAddr, app: Router) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    serve_listener(listener, app, crate::shutdown::signal()).await
}

/// Serves `app` on an already bound listener until `shutdown` resolves (tests bind port 0).
pub async fn serve_listener(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    tracing::info!(addr = %listener.local_addr()?, "listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
