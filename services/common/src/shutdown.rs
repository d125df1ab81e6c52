//! Graceful shutdown: resolves on SIGTERM (Kubernetes) or SIGINT (Ctrl-C).

/// Waits for SIGTERM or SIGINT. Servers pass this to `with_graceful_shutdown` so in-flight
/// requests finish while new connections are refused.
pub async fn signal() {
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("SIGINT received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// A broadcastable shutdown flag for background workers (relays, sweepers, consumers).
pub type Shutdown = tokio::sync::watch::Receiver<bool>;

/// Creates a shutdown channel; send `true` to stop every worker holding a receiver.
pub fn channel() -> (tokio::sync::watch::Sender<bool>, Shutdown) {
    tokio::sync::watch::channel(false)
}

/// Resolves once the flag is set (or its sender is gone).
pub async fn wait(mut rx: Shutdown) {
    while !*rx.borrow() {
        if rx.changed().await.is_err() {
            return;
        }
    }
}
