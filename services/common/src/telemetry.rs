//! Structured logging with `tracing`.
//!
//! Human-readable by default; JSON (one object per line, for log shippers) when
//! `LOG_FORMAT=json`. The filter comes from `RUST_LOG` (default `info`).

use std::{future::Future, process::ExitCode};

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

/// Output format of the logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    Pretty,
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "json" => Ok(Self::Json),
            "pretty" | "text" | "plain" => Ok(Self::Pretty),
            other => Err(format!(
                "unknown log format {other:?} (expected json or text)"
            )),
        }
    }
}

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(service: &str) -> Result<(), crate::config::ConfigError> {
    let format = crate::config::var_or("LOG_FORMAT", LogFormat::Pretty)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false),
            )
            .try_init(),
        LogFormat::Pretty => registry.with(fmt::layer().with_target(false)).try_init(),
    };
    // A second init (e.g. several services in one test process) keeps the first subscriber.
    if result.is_ok() {
        tracing::info!(service, ?format, "telemetry initialised");
    }
    Ok(())
}

/// The body of every service's `main`: sets up telemetry, runs `command`, and turns its error
/// into a logged message, a line on stderr (what `kubectl logs` of a failed migration Job
/// shows first) and a failing exit code.
pub async fn run_service<F>(service: &str, command: F) -> ExitCode
where
    F: Future<Output = anyhow::Result<()>>,
{
    if let Err(e) = init(service) {
        eprintln!("{service}: {e}");
        return ExitCode::FAILURE;
    }
    match command.await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "{service} failed");
            eprintln!("{service}: {e:#}");
            ExitCode::FAILURE
        }
    }
}
