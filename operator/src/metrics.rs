//! Prometheus metrics and the operator's HTTP endpoints (`/health`, `/ready`, `/metrics`).
//!
//! Metrics go through the `metrics` facade so the reconciler only records; the exporter is
//! installed once by `main`. `/ready` answers 200 only while this replica leads, so a
//! Service in front of several replicas (and `kubectl get pods`) shows which one is active.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::error::Error;

pub const RECONCILES: &str = "moviebook_operator_reconciliations_total";
pub const RECONCILE_ERRORS: &str = "moviebook_operator_reconcile_errors_total";
pub const RECONCILE_SECONDS: &str = "moviebook_operator_reconcile_duration_seconds";
pub const LEADER: &str = "moviebook_operator_leader";

/// Records one reconcile: count, duration and, on failure, the error class.
pub fn observe_reconcile(elapsed: Duration, error: Option<&Error>) {
    let result = if error.is_some() { "error" } else { "ok" };
    metrics::counter!(RECONCILES, "result" => result).increment(1);
    metrics::histogram!(RECONCILE_SECONDS).record(elapsed.as_secs_f64());
    if let Some(e) = error {
        metrics::counter!(RECONCILE_ERRORS, "error" => e.metric_label()).increment(1);
    }
}

/// Installs the global Prometheus recorder.
pub fn install() -> Result<PrometheusHandle, String> {
    PrometheusBuilder::new()
        .set_buckets(&[0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        .map_err(|e| e.to_string())?
        .install_recorder()
        .map_err(|e| e.to_string())
}

/// State behind the HTTP endpoints.
#[derive(Clone, Debug)]
pub struct Http {
    pub metrics: PrometheusHandle,
    pub leader: Arc<AtomicBool>,
}

/// The router: `/health` (process alive), `/ready` (leading), `/metrics`.
pub fn router(state: Http) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route(
            "/ready",
            get(|State(s): State<Http>| async move {
                if s.leader.load(Ordering::Relaxed) {
                    (StatusCode::OK, "leading")
                } else {
                    (StatusCode::SERVICE_UNAVAILABLE, "standby")
                }
            }),
        )
        .route(
            "/metrics",
            get(|State(s): State<Http>| async move {
                let leader = if s.leader.load(Ordering::Relaxed) {
                    1.0
                } else {
                    0.0
                };
                metrics::gauge!(LEADER).set(leader);
                s.metrics.render()
            }),
        )
        .with_state(state)
}

/// Serves the router until the process ends.
pub async fn serve(addr: SocketAddr, state: Http) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    axum::serve(listener, router(state)).await
}
