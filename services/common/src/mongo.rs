//! MongoDB connection helpers shared by the MongoDB-backed services.

use std::time::Duration;

use mongodb::{Client, Database, bson::doc, options::ClientOptions};

/// Connects lazily (the driver connects on first use) with short timeouts, so a missing server
/// shows up in `/ready` within seconds instead of hanging requests for the driver's default 30 s.
///
/// The database is the one named in the URL's path, else `default_db` — tests give each run its
/// own database that way.
pub async fn connect(
    url: &str,
    app_name: &str,
    default_db: &str,
) -> mongodb::error::Result<Database> {
    let mut options = ClientOptions::parse(url).await?;
    options.app_name = Some(app_name.to_owned());
    options.server_selection_timeout = options
        .server_selection_timeout
        .or(Some(Duration::from_secs(5)));
    options.connect_timeout = options.connect_timeout.or(Some(Duration::from_secs(5)));
    options.max_pool_size = options.max_pool_size.or(Some(64));
    let name = options
        .default_database
        .clone()
        .unwrap_or_else(|| default_db.to_owned());
    let client = Client::with_options(options)?;
    Ok(client.database(&name))
}

/// The readiness check: the server answers `ping`.
pub async fn ping(db: &Database) -> mongodb::error::Result<()> {
    db.run_command(doc! { "ping": 1 }).await.map(|_| ())
}

/// Whether a failed write certainly did not happen: the server answered with an error. Any other
/// failure (the connection dropped, a timeout) may have come after the server applied it, so the
/// caller must read to find out.
pub fn write_refused(err: &mongodb::error::Error) -> bool {
    use mongodb::error::ErrorKind;
    matches!(
        err.kind.as_ref(),
        ErrorKind::Write(_)
            | ErrorKind::InsertMany(_)
            | ErrorKind::Command(_)
            | ErrorKind::InvalidArgument { .. }
            | ErrorKind::BsonSerialization(_)
    )
}

/// Whether a write failed on a unique index (E11000), the signal for "already exists".
pub fn is_duplicate_key(err: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match err.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(e)) => e.code == 11000,
        ErrorKind::InsertMany(e) => e
            .write_errors
            .as_ref()
            .is_some_and(|errs| errs.iter().any(|e| e.code == 11000)),
        ErrorKind::Command(e) => e.code == 11000,
        _ => err.to_string().contains("E11000"),
    }
}
