//! `cinema-service`: serve (no arguments), `migrate` (apply the schema and exit) or `seed`
//! (load the sample catalogue and exit).

use std::net::SocketAddr;

use cinema_service::{Config, seed, store};
use moviebook_common::{shutdown, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    telemetry::run_service("cinema-service", async {
        match std::env::args().nth(1).as_deref() {
            None | Some("serve") => serve().await,
            Some("migrate") => migrate().await,
            Some("seed") => run_seed().await,
            Some(other) => Err(anyhow::anyhow!(
                "unknown command {other:?}; usage: cinema-service [serve|migrate|seed]"
            )),
        }
    })
    .await
}

async fn serve() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let http =
        tokio::net::TcpListener::bind(SocketAddr::new(config.bind_addr, config.http_port)).await?;
    let grpc =
        tokio::net::TcpListener::bind(SocketAddr::new(config.bind_addr, config.grpc_port)).await?;
    cinema_service::run(config, http, grpc, shutdown::signal()).await
}

async fn migrate() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let pool = cinema_service::pool(&config)?;
    store::migrate(&pool).await?;
    tracing::info!(
        version = store::required_schema_version(),
        "schema is up to date"
    );
    pool.close().await;
    Ok(())
}

async fn run_seed() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let pool = cinema_service::pool(&config)?;
    store::check_schema(&pool).await?;
    let report = seed::run(&pool).await?;
    tracing::info!(?report, "sample data loaded");
    pool.close().await;
    Ok(())
}
