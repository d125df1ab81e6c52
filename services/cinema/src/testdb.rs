//! A throw-away PostgreSQL database for integration tests and the benchmark: created fresh from
//! `DATABASE_URL` (a unique `moviebook_cinema_test_<random>` on the same server), migrated,
//! and dropped when the guard goes out of scope — also when a test panics.

use sqlx::{Connection, PgConnection};

/// The created database; dropping it drops the database (`WITH (FORCE)`).
#[derive(Debug)]
pub struct TestDb {
    /// URL of the new database.
    pub url: String,
    admin_url: String,
    name: String,
}

/// `url` with its database name replaced by `db`, keeping credentials and parameters.
pub fn with_database(url: &str, db: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base
        .find("://")
        .map(|i| i + 3)
        .ok_or_else(|| anyhow::anyhow!("DATABASE_URL {url:?} is not a URL"))?;
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{db}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

impl TestDb {
    /// Creates and migrates a fresh database on the server of `base_url`.
    pub async fn create(base_url: &str, prefix: &str) -> anyhow::Result<Self> {
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let admin_url = with_database(base_url, "postgres")?;
        let url = with_database(base_url, &name)?;
        let mut admin = PgConnection::connect(&admin_url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot connect to PostgreSQL at {admin_url}: {e}"))?;
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await?;
        admin.close().await?;
        let db = Self {
            url,
            admin_url,
            name,
        };
        let pool = crate::store::pool(&db.url, 2, std::time::Duration::from_secs(10))?;
        crate::store::migrate(&pool).await?;
        pool.close().await;
        Ok(db)
    }

    /// `DATABASE_URL` from the environment, or a clear failure: the tests never skip silently.
    pub fn base_url_from_env() -> String {
        match std::env::var("DATABASE_URL") {
            Ok(v) if !v.trim().is_empty() => v,
            _ => panic!(
                "DATABASE_URL is not set: run `eval \"$(scripts/stack.sh test env)\"` (or `make test`) so the cinema tests reach a real PostgreSQL"
            ),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        // Drop runs inside the test's runtime; do the async work on a thread of its own.
        let joined = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            rt.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
                    .execute(&mut admin)
                    .await?;
                admin.close().await?;
                anyhow::Ok(())
            })
        })
        .join();
        if let Ok(Err(e)) = joined {
            eprintln!("could not drop test database {}: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            with_database("postgres://u:p@h:5432/moviebook_cinema", "x").unwrap(),
            "postgres://u:p@h:5432/x"
        );
        assert_eq!(
            with_database("postgres://u:p@h:5432/db?sslmode=disable", "x").unwrap(),
            "postgres://u:p@h:5432/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h", "x").unwrap(),
            "postgres://h/x"
        );
        assert!(with_database("nonsense", "x").is_err());
    }
}
