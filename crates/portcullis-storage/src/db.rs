//! Connections, the pool, migrations and transactions, for SQLite and PostgreSQL alike.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use diesel::connection::{AnsiTransactionManager, SimpleConnection, TransactionManager};
use diesel::pg::PgConnection;
use diesel::r2d2::{self, ManageConnection, R2D2Connection};
use diesel::sqlite::SqliteConnection;
use diesel::{Connection, RunQueryDsl};
use diesel_migrations::{EmbeddedMigrations, MigrationHarness, embed_migrations};

/// One connection to whichever backend the URL chose. Queries are written once against this
/// type; diesel renders them for the backend underneath.
#[derive(diesel::MultiConnection)]
pub enum DbConnection {
    Sqlite(SqliteConnection),
    Pg(PgConnection),
}

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/sqlite");
const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("../../migrations/postgres");

/// Which database, parsed from its URL: `sqlite://PATH` (or `sqlite:PATH`), or
/// `postgres://…` / `postgresql://…`.
#[derive(Clone, PartialEq, Eq)]
pub enum DatabaseUrl {
    Sqlite(PathBuf),
    Postgres(String),
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidDatabaseUrl(String);

impl DatabaseUrl {
    pub fn parse(raw: &str) -> Result<Self, InvalidDatabaseUrl> {
        let raw = raw.trim();
        if raw.starts_with("postgres://") || raw.starts_with("postgresql://") {
            return Ok(Self::Postgres(raw.to_owned()));
        }
        if let Some(rest) = raw
            .strip_prefix("sqlite://")
            .or_else(|| raw.strip_prefix("sqlite:"))
        {
            if rest.is_empty() {
                return Err(InvalidDatabaseUrl("the SQLite URL names no file".into()));
            }
            if rest.contains(":memory:") || rest.contains('?') {
                return Err(InvalidDatabaseUrl(
                    "use a file path for SQLite (in-memory databases and URL options are not supported)".into(),
                ));
            }
            return Ok(Self::Sqlite(PathBuf::from(rest)));
        }
        Err(InvalidDatabaseUrl(format!(
            "{:?} is not a database URL; use sqlite://PATH or postgres://USER@HOST/DB",
            redact_url(raw)
        )))
    }

    pub fn backend(&self) -> &'static str {
        match self {
            Self::Sqlite(_) => "sqlite",
            Self::Postgres(_) => "postgres",
        }
    }
}

/// The URL with any password replaced, for messages and logs.
pub fn redact_url(raw: &str) -> String {
    match (raw.find("://"), raw.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            let userinfo = &raw[scheme_end + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &raw[..scheme_end + 3], &raw[at..]),
                None => raw.to_owned(),
            }
        }
        _ => raw.to_owned(),
    }
}

impl fmt::Debug for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Sqlite(p) => write!(f, "sqlite://{}", p.display()),
            Self::Postgres(u) => f.write_str(&redact_url(u)),
        }
    }
}

impl fmt::Display for DatabaseUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

#[derive(Clone, Debug)]
pub struct PoolOptions {
    pub max_connections: u32,
    /// How long to wait for a connection (and for a new PostgreSQL connection to open).
    pub connect_timeout: Duration,
    /// How long SQLite waits for a lock held by another writer before giving up.
    pub sqlite_busy_timeout: Duration,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            connect_timeout: Duration::from_secs(5),
            sqlite_busy_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    // The sources are not repeated in the messages: callers print the whole chain.
    #[error("cannot create the data folder {path}")]
    CreateFolder {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot open the SQLite database {path} (is its folder writable?)")]
    Sqlite { path: PathBuf, source: r2d2::Error },
    #[error("cannot connect to PostgreSQL at {url}")]
    Postgres { url: String, source: r2d2::Error },
    #[error("cannot start the connection pool")]
    Pool(#[source] r2d2::PoolError),
    #[error("the database migrations failed: {0}")]
    Migrate(String),
}

/// Opens connections for the pool.
#[derive(Debug)]
pub struct Manager {
    url: DatabaseUrl,
    connect_timeout: Duration,
    busy_timeout: Duration,
}

impl ManageConnection for Manager {
    type Connection = DbConnection;
    type Error = r2d2::Error;

    fn connect(&self) -> Result<DbConnection, r2d2::Error> {
        match &self.url {
            DatabaseUrl::Sqlite(path) => {
                let path = path.to_string_lossy();
                let mut conn =
                    SqliteConnection::establish(&path).map_err(r2d2::Error::ConnectionError)?;
                conn.batch_execute(&format!(
                    "PRAGMA busy_timeout = {}; PRAGMA foreign_keys = ON; \
                     PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL;",
                    self.busy_timeout.as_millis()
                ))
                .map_err(r2d2::Error::QueryError)?;
                Ok(DbConnection::Sqlite(conn))
            }
            DatabaseUrl::Postgres(url) => {
                let url = with_connect_timeout(url, self.connect_timeout);
                let conn = PgConnection::establish(&url).map_err(r2d2::Error::ConnectionError)?;
                Ok(DbConnection::Pg(conn))
            }
        }
    }

    fn is_valid(&self, conn: &mut DbConnection) -> Result<(), r2d2::Error> {
        conn.ping().map(|_| ()).map_err(r2d2::Error::QueryError)
    }

    fn has_broken(&self, conn: &mut DbConnection) -> bool {
        conn.is_broken()
    }
}

/// libpq waits forever for an unreachable host unless told otherwise.
fn with_connect_timeout(url: &str, timeout: Duration) -> String {
    if url.contains("connect_timeout=") {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}connect_timeout={}", timeout.as_secs().max(1))
}

pub type Pool = r2d2::Pool<Manager>;
pub type PooledConnection = r2d2::PooledConnection<Manager>;

/// The pool, and which backend it talks to.
#[derive(Clone)]
pub struct Database {
    pool: Pool,
    url: DatabaseUrl,
}

impl fmt::Debug for Database {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Database")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Opens the database (creating a SQLite file and its folder if needed) and checks that a
    /// first connection works, so that a wrong URL fails now with the driver's reason.
    pub fn open(url: &DatabaseUrl, options: &PoolOptions) -> Result<Self, OpenError> {
        if let DatabaseUrl::Sqlite(path) = url {
            create_parent(path)?;
        }
        let manager = Manager {
            url: url.clone(),
            connect_timeout: options.connect_timeout,
            busy_timeout: options.sqlite_busy_timeout,
        };
        // One connection first: its error is the real reason, not a pool time-out.
        let first = manager.connect().map_err(|source| match url {
            DatabaseUrl::Sqlite(path) => OpenError::Sqlite {
                path: path.clone(),
                source,
            },
            DatabaseUrl::Postgres(u) => OpenError::Postgres {
                url: redact_url(u),
                source,
            },
        })?;
        drop(first);
        // No minimum of idle connections: r2d2 would open them on a background thread at any
        // time, and a process that exits while such a thread is inside libpq's TLS handshake
        // crashes in OpenSSL's exit-time clean-up. Connections are opened on demand and kept.
        // A PostgreSQL connection is checked with a query before each use, so that one the
        // server dropped (a restart, a fail-over) is replaced rather than failing a request. A
        // SQLite connection is a file handle that cannot go stale: checking it would only add
        // a query to every database call.
        let pool = r2d2::Pool::builder()
            .max_size(options.max_connections.max(1))
            .min_idle(Some(0))
            .test_on_check_out(matches!(url, DatabaseUrl::Postgres(_)))
            .connection_timeout(options.connect_timeout)
            .build(manager)
            .map_err(OpenError::Pool)?;
        Ok(Self {
            pool,
            url: url.clone(),
        })
    }

    pub fn url(&self) -> &DatabaseUrl {
        &self.url
    }

    pub fn conn(&self) -> Result<PooledConnection, r2d2::PoolError> {
        self.pool.get()
    }

    /// The pool's connections: open, idle, and the most it may open.
    pub fn pool_use(&self) -> portcullis_core::store::PoolUse {
        let state = self.pool.state();
        portcullis_core::store::PoolUse {
            open: state.connections,
            idle: state.idle_connections,
            max: self.pool.max_size(),
        }
    }

    /// Applies pending migrations and returns their versions. On PostgreSQL an advisory lock
    /// keeps nodes that start together from running them twice.
    pub fn migrate(&self) -> Result<Vec<String>, OpenError> {
        let mut conn = self.conn().map_err(OpenError::Pool)?;
        let applied = match &mut *conn {
            DbConnection::Sqlite(c) => c
                .run_pending_migrations(SQLITE_MIGRATIONS)
                .map(|v| v.iter().map(ToString::to_string).collect()),
            DbConnection::Pg(c) => {
                const LOCK: &str = "SELECT pg_advisory_lock(7543021)";
                c.batch_execute(LOCK)
                    .map_err(|e| OpenError::Migrate(e.to_string()))?;
                let result = c
                    .run_pending_migrations(PG_MIGRATIONS)
                    .map(|v| v.iter().map(ToString::to_string).collect());
                let _ = c.batch_execute("SELECT pg_advisory_unlock(7543021)");
                result
            }
        };
        applied.map_err(|e| OpenError::Migrate(e.to_string()))
    }

    /// Whether migrations are pending, without applying them.
    pub fn pending_migrations(&self) -> Result<Vec<String>, OpenError> {
        let mut conn = self.conn().map_err(OpenError::Pool)?;
        let pending = match &mut *conn {
            DbConnection::Sqlite(c) => c
                .pending_migrations(SQLITE_MIGRATIONS)
                .map(|v| v.iter().map(|m| m.name().to_string()).collect()),
            DbConnection::Pg(c) => c
                .pending_migrations(PG_MIGRATIONS)
                .map(|v| v.iter().map(|m| m.name().to_string()).collect()),
        };
        pending.map_err(|e| OpenError::Migrate(e.to_string()))
    }
}

/// Creates the database's folder, readable by the server's user only: the database holds
/// password hashes and encrypted keys. An existing folder is left as it is.
fn create_parent(path: &Path) -> Result<(), OpenError> {
    use std::os::unix::fs::DirBuilderExt;
    match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() && !parent.is_dir() => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|source| OpenError::CreateFolder {
                    path: parent.to_owned(),
                    source,
                })
        }
        _ => Ok(()),
    }
}

/// Runs `f` in one transaction that writes: `BEGIN IMMEDIATE` on SQLite, so the write lock is
/// taken (waiting up to the busy timeout) before anything is read, and a plain transaction on
/// PostgreSQL. Rolls back when `f` fails.
pub fn write_tx<T, E>(
    conn: &mut DbConnection,
    f: impl FnOnce(&mut DbConnection) -> Result<T, E>,
) -> Result<T, E>
where
    E: From<diesel::result::Error>,
{
    type Manager = <DbConnection as Connection>::TransactionManager;
    match conn {
        DbConnection::Pg(_) => return conn.transaction(f),
        DbConnection::Sqlite(c) => {
            AnsiTransactionManager::begin_transaction_sql(c, "BEGIN IMMEDIATE")?
        }
    }
    match f(conn) {
        Ok(value) => {
            Manager::commit_transaction(conn)?;
            Ok(value)
        }
        Err(e) => {
            if let Err(rollback) = Manager::rollback_transaction(conn) {
                tracing::warn!(error = %rollback, "rollback failed");
            }
            Err(e)
        }
    }
}

/// Advisory locks that order writers across PostgreSQL nodes (SQLite's `BEGIN IMMEDIATE`
/// already serialises them). 7543021 guards migrations.
#[derive(Clone, Copy)]
pub(crate) enum XactLock {
    /// Creating the first administrator on an empty table.
    InitialAdmin = 7_543_022,
    /// Changing the signing keys.
    SigningKeys = 7_543_023,
    /// Appending to the audit chain.
    AuditChain = 7_543_024,
}

/// Takes `lock` until the end of the current transaction on PostgreSQL; nothing on SQLite.
pub(crate) fn xact_lock(conn: &mut DbConnection, lock: XactLock) -> diesel::QueryResult<()> {
    if let DbConnection::Pg(_) = conn {
        diesel::sql_query(format!("SELECT pg_advisory_xact_lock({})", lock as i64))
            .execute(conn)?;
    }
    Ok(())
}

/// `SELECT 1`, for readiness.
pub fn ping(conn: &mut DbConnection) -> diesel::QueryResult<()> {
    diesel::sql_query("SELECT 1").execute(conn).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_choose_the_backend() {
        assert_eq!(
            DatabaseUrl::parse("sqlite://./data/portcullis.db").unwrap(),
            DatabaseUrl::Sqlite("./data/portcullis.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:///var/lib/p.db").unwrap(),
            DatabaseUrl::Sqlite("/var/lib/p.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("sqlite:p.db").unwrap(),
            DatabaseUrl::Sqlite("p.db".into())
        );
        assert_eq!(
            DatabaseUrl::parse("postgres://u@h/db").unwrap().backend(),
            "postgres"
        );
        assert_eq!(
            DatabaseUrl::parse("postgresql://u@h/db").unwrap().backend(),
            "postgres"
        );
        assert!(DatabaseUrl::parse("sqlite://").is_err());
        assert!(DatabaseUrl::parse("sqlite://:memory:").is_err());
        assert!(DatabaseUrl::parse("mysql://u@h/db").is_err());
        assert!(DatabaseUrl::parse("./data.db").is_err());
    }

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h/db"),
            "postgres://u:***@h/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        let err = DatabaseUrl::parse("mysql://u:secret@h/db").unwrap_err();
        assert!(!err.to_string().contains("secret"));
        let url = DatabaseUrl::parse("postgres://u:secret@h/db").unwrap();
        assert!(!format!("{url:?} {url}").contains("secret"));
    }

    #[test]
    fn connect_timeout_is_added_once() {
        let t = Duration::from_secs(5);
        assert_eq!(
            with_connect_timeout("postgres://h/db", t),
            "postgres://h/db?connect_timeout=5"
        );
        assert_eq!(
            with_connect_timeout("postgres://h/db?sslmode=disable", t),
            "postgres://h/db?sslmode=disable&connect_timeout=5"
        );
        assert_eq!(
            with_connect_timeout("postgres://h/db?connect_timeout=2", t),
            "postgres://h/db?connect_timeout=2"
        );
    }
}
