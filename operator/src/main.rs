//! `moviebook-operator`: runs the operator (default), prints the CRD (`crdgen`) or every object
//! it would create for a MovieBookingSystem file (`render FILE`, no cluster needed).
//!
//! Configuration (environment):
//! - `PORT` (8080): HTTP port of `/health`, `/ready` and `/metrics`.
//! - `WATCH_NAMESPACE`: only this namespace; all namespaces when unset or empty.
//! - `LEADER_ELECTION` (`true`): set `false` to run without a Lease (one replica only).
//! - `LEASE_NAMESPACE` (else `POD_NAMESPACE`, else `default`), `LEASE_NAME`
//!   (`moviebook-operator`), `POD_NAME` (the candidate identity; hostname + random otherwise).
//! - `RUST_LOG` (`info`), `LOG_FORMAT=json` for JSON logs.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use moviebook_operator::{controller, crd, leader, metrics};
use tokio::sync::watch;
use tracing::{error, info, warn};

const USAGE: &str = "usage: moviebook-operator [run|crdgen|render FILE [NAMESPACE]|help]
  run      run the operator (default)
  crdgen   print the MovieBookingSystem CRD as YAML (kubectl apply -f -)
  render   print every object the operator would create for the MovieBookingSystems in FILE
           (- for stdin), in NAMESPACE (default: `default`) where they name none; no cluster";

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter);
    if env("LOG_FORMAT").as_deref() == Some("json") {
        builder.json().init();
    } else {
        builder.init();
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match std::env::args().nth(1).as_deref() {
        None | Some("run") => run().await,
        Some("crdgen") => {
            print!("{}", crd::crd_yaml().context("rendering the CRD")?);
            Ok(())
        }
        Some("render") => {
            let file = std::env::args()
                .nth(2)
                .ok_or_else(|| anyhow::anyhow!("render needs a FILE\n{USAGE}"))?;
            let namespace = std::env::args().nth(3).unwrap_or_else(|| "default".into());
            let text = if file == "-" {
                std::io::read_to_string(std::io::stdin()).context("reading stdin")?
            } else {
                std::fs::read_to_string(&file).with_context(|| format!("reading {file}"))?
            };
            print!(
                "{}",
                moviebook_operator::render::render(&text, &namespace)
                    .with_context(|| format!("rendering {file}"))?
            );
            Ok(())
        }
        Some("help" | "--help" | "-h") => {
            println!("{USAGE}");
            Ok(())
        }
        Some(other) => {
            eprintln!("unknown command {other:?}\n{USAGE}");
            std::process::exit(2);
        }
    }
}

async fn run() -> anyhow::Result<()> {
    init_tracing();
    let port: u16 = env("PORT")
        .map(|p| p.parse())
        .transpose()
        .context("PORT")?
        .unwrap_or(8080);
    let namespace = env("WATCH_NAMESPACE");
    let pod_name = env("POD_NAME");
    let leader_election = env("LEADER_ELECTION").map(|v| v != "false").unwrap_or(true);

    let handle = metrics::install().map_err(anyhow::Error::msg)?;
    let leading = Arc::new(AtomicBool::new(false));
    let http = metrics::Http {
        metrics: handle,
        leader: leading.clone(),
    };
    let addr = SocketAddr::from(([0, 0, 0, 0], port));
    tokio::spawn(async move {
        if let Err(e) = metrics::serve(addr, http).await {
            error!(error = %e, "HTTP server failed");
            std::process::exit(1);
        }
    });
    info!(%addr, "serving /health, /ready and /metrics");

    moviebook_operator::install_crypto_provider();
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let (stop_tx, stop_rx) = watch::channel(false);
    {
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            shutdown_signal().await;
            info!("shutdown requested");
            let _ = stop_tx.send(true);
        });
    }

    let elector = if leader_election {
        let identity = pod_name.clone().unwrap_or_else(|| {
            let host = env("HOSTNAME").unwrap_or_else(|| "operator".into());
            format!("{host}-{}", std::process::id())
        });
        let cfg = leader::LeaseConfig {
            namespace: env("LEASE_NAMESPACE")
                .or_else(|| env("POD_NAMESPACE"))
                .unwrap_or_else(|| "default".into()),
            name: env("LEASE_NAME").unwrap_or_else(|| "moviebook-operator".into()),
            identity,
            lease_duration: Duration::from_secs(15),
        };
        let elector = Arc::new(leader::LeaderElector::new(client.clone(), cfg));
        info!(identity = elector.identity(), "waiting for leadership");
        let mut stop = stop_rx.clone();
        loop {
            match elector.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => warn!(error = %e, "leader election"),
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = stop.changed() => return Ok(()),
            }
        }
        info!("became leader");
        // Renew every 5 s; if renewal fails for a whole lease duration another replica may
        // take over, so stop reconciling at once.
        let renewer = elector.clone();
        let stop_tx = stop_tx.clone();
        tokio::spawn(async move {
            let mut last_ok = tokio::time::Instant::now();
            loop {
                tokio::time::sleep(Duration::from_secs(5)).await;
                match renewer.try_acquire_or_renew().await {
                    Ok(true) => last_ok = tokio::time::Instant::now(),
                    Ok(false) => {
                        error!("lost leadership");
                        let _ = stop_tx.send(true);
                        std::process::exit(1);
                    }
                    Err(e) => {
                        warn!(error = %e, "renewing the Lease");
                        if last_ok.elapsed() > Duration::from_secs(10) {
                            error!("could not renew the Lease in time; stepping down");
                            let _ = stop_tx.send(true);
                            std::process::exit(1);
                        }
                    }
                }
            }
        });
        Some(elector)
    } else {
        None
    };
    leading.store(true, Ordering::Relaxed);

    let mut stop = stop_rx.clone();
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    controller::run(client, namespace, pod_name, shutdown).await?;
    leading.store(false, Ordering::Relaxed);
    if let Some(elector) = elector
        && let Err(e) = elector.release().await
    {
        warn!(error = %e, "releasing the Lease");
    }

    info!("stopped");
    Ok(())
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
