//! `user-service` (serve), `user-service migrate`, `user-service grant-admin <email>`.

use std::process::ExitCode;

use user_service::Config;

#[tokio::main]
async fn main() -> ExitCode {
    moviebook_common::telemetry::run_service("user-service", real_main()).await
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
            let addr =
                std::net::SocketAddr::new(moviebook_common::config::bind_addr()?, config.port);
            let listener = tokio::net::TcpListener::bind(addr).await?;
            user_service::run(config, listener, moviebook_common::shutdown::signal()).await
        }
        ["migrate"] => user_service::migrate(&config).await,
        ["grant-admin", email] => user_service::grant_admin(&config, email).await,
        other => anyhow::bail!(
            "unknown arguments {other:?}; usage: user-service [serve | migrate | grant-admin <email>]"
        ),
    }
}
