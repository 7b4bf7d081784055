//! Throw-away databases for tests: a SQLite file in a temporary folder, or, when
//! `PORTCULLIS_TEST_POSTGRES_URL` names a server, a fresh PostgreSQL database that is dropped
//! when the value is dropped (as crates.io's `crates_io_test_db` does).

use diesel::Connection;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;

use crate::db::DatabaseUrl;

pub const POSTGRES_ENV: &str = "PORTCULLIS_TEST_POSTGRES_URL";

pub struct TestDatabase {
    url: DatabaseUrl,
    raw_url: String,
    cleanup: Cleanup,
}

enum Cleanup {
    Folder(
        #[expect(dead_code, reason = "held so that the folder is removed on drop")]
        tempfile::TempDir,
    ),
    Postgres {
        admin_url: String,
        name: String,
    },
}

impl TestDatabase {
    pub fn sqlite() -> std::io::Result<Self> {
        let dir = tempfile::tempdir()?;
        let raw_url = format!("sqlite://{}", dir.path().join("portcullis.db").display());
        let url = DatabaseUrl::parse(&raw_url).map_err(std::io::Error::other)?;
        Ok(Self {
            url,
            raw_url,
            cleanup: Cleanup::Folder(dir),
        })
    }

    /// The server's URL from the environment, if set.
    pub fn postgres_admin_url() -> Option<String> {
        std::env::var(POSTGRES_ENV)
            .ok()
            .filter(|s| !s.trim().is_empty())
    }

    /// A new, empty database on the server at `admin_url`.
    pub fn postgres(admin_url: &str) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let name = format!("portcullis_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::establish(admin_url)?;
        admin.batch_execute(&format!("CREATE DATABASE {name}"))?;
        let raw_url = with_database(admin_url, &name);
        let url = DatabaseUrl::parse(&raw_url)?;
        Ok(Self {
            url,
            raw_url,
            cleanup: Cleanup::Postgres {
                admin_url: admin_url.to_owned(),
                name,
            },
        })
    }

    /// PostgreSQL when the environment names a server, else SQLite.
    pub fn from_env() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        match Self::postgres_admin_url() {
            Some(admin) => Self::postgres(&admin),
            None => Ok(Self::sqlite()?),
        }
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    /// The URL as text, for configuration.
    pub fn raw_url(&self) -> &str {
        &self.raw_url
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Cleanup::Postgres { admin_url, name } = &self.cleanup {
            let dropped = PgConnection::establish(admin_url)
                .map_err(|e| e.to_string())
                .and_then(|mut c| {
                    c.batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .map_err(|e| e.to_string())
                });
            if let Err(e) = dropped {
                eprintln!("could not drop test database {name}: {e}");
            }
        }
    }
}

/// `postgres://u@h:5432/postgres?x=y` with its database replaced by `name`.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |i| i + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |i| authority_start + i);
    let mut out = format!("{}/{name}", &base[..path_start]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_name() {
        assert_eq!(
            with_database("postgres://u@h:5432/postgres", "t1"),
            "postgres://u@h:5432/t1"
        );
        assert_eq!(with_database("postgres://u@h", "t1"), "postgres://u@h/t1");
        assert_eq!(
            with_database("postgres://u@h/db?sslmode=disable", "t1"),
            "postgres://u@h/t1?sslmode=disable"
        );
    }
}
