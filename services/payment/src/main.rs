//! `payment-service` (serve) and `payment-service migrate`.

use std::process::ExitCode;

use payment_service::Config;

#[tokio::main]
async fn main() -> ExitCode {
    moviebook_common::telemetry::run_service("payment-service", real_main()).await
}

async fn real_main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args
        .iter()
        .map(String::as_str)
        .collect::<Vec<_>>()
        .as_slice()
    {
        [] | ["serve"] => {
            if config.failure_rate > 0.0 {
                tracing::warn!(
                    rate = config.failure_rate,
                    "chaos: random payment failures enabled"
                );
            }
            let addr =
                std::net::SocketAddr::new(moviebook_common::config::bind_addr()?, config.port);
            let listener = tokio::net::TcpListener::bind(addr).await?;
            payment_service::run(config, listener, moviebook_common::shutdown::signal()).await
        }
        ["migrate"] => payment_service::migrate(&config).await,
        other => {
            anyhow::bail!("unknown arguments {other:?}; usage: payment-service [serve | migrate]")
        }
    }
}
