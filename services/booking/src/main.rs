//! `booking-service` (serve), `booking-service migrate` and `booking-service audit` (the
//! reconciliation audit of bookings, payments and seats; exit 1 when it finds an
//! inconsistency).

use booking_service::config::Config;
use moviebook_common::{shutdown, telemetry};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    telemetry::run_service(booking_service::SERVICE_NAME, real_main()).await
}

async fn real_main() -> anyhow::Result<()> {
    let config = Config::from_env()?;
    match std::env::args().nth(1).as_deref() {
        None | Some("serve") => {
            let listener = tokio::net::TcpListener::bind((config.bind_addr, config.port)).await?;
            let (tx, rx) = shutdown::channel();
            tokio::spawn(async move {
                shutdown::signal().await;
                let _ = tx.send(true);
            });
            booking_service::run(config, listener, rx).await
        }
        Some("migrate") => {
            booking_service::migrate(&config).await?;
            tracing::info!("booking-service migrations applied");
            Ok(())
        }
        Some("audit") => {
            let booker = booking_service::build(config).await?;
            let report = booking_service::audit::run(&booker).await?;
            for line in report.lines() {
                println!("{line}");
            }
            if report.inconsistencies.is_empty() {
                Ok(())
            } else {
                anyhow::bail!("{} inconsistencies", report.inconsistencies.len())
            }
        }
        Some(other) => {
            anyhow::bail!("unknown command {other:?} (expected: serve, migrate, audit)")
        }
    }
}
