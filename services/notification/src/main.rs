//! `notification-service`: serve (no arguments) or `migrate`.

use std::process::ExitCode;

use notification_service::config::Config;

#[tokio::main]
async fn main() -> ExitCode {
    if let Err(e) = moviebook_common::telemetry::init("notification-service") {
        eprintln!("notification-service: {e}");
        return ExitCode::FAILURE;
    }
    let config = match Config::from_env() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("notification-service: {e}");
            return ExitCode::FAILURE;
        }
    };
    let command = std::env::args().nth(1);
    let result = match command.as_deref() {
        None | Some("serve") => serve(config).await,
        Some("migrate") => notification_service::migrate(&config).await.map(|()| {
            tracing::info!("notification indexes are in place");
        }),
        Some(other) => {
            eprintln!("notification-service: unknown command {other:?} (expected: migrate)");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("notification-service: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let addr = std::net::SocketAddr::new(moviebook_common::config::bind_addr()?, config.port);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let (tx, rx) = moviebook_common::shutdown::channel();
    tokio::spawn(async move {
        moviebook_common::shutdown::signal().await;
        let _ = tx.send(true);
    });
    notification_service::run(config, listener, rx).await
}
