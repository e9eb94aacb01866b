//! Errors: what connecting reports, and how database errors become
//! [`BackendError`]s.

use durable_runtime::backend::BackendError;
use tokio_postgres::error::SqlState;

/// Why [`PostgresBackend::connect`](crate::PostgresBackend::connect) failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnectError {
    /// The URL could not be parsed.
    #[error("the PostgreSQL URL is not valid ({0}); expected postgres://user:password@host:port/database")]
    InvalidUrl(String),
    /// An option is not allowed.
    #[error("invalid option: {0}")]
    InvalidOption(String),
    /// No connection could be made to the server.
    #[error(
        "cannot reach PostgreSQL at {host}:{port}: {detail}; is the server running and \
         accepting connections there (check the host, the port and the firewall)?"
    )]
    Unreachable {
        /// The host (or socket directory) connected to.
        host: String,
        /// The port.
        port: u16,
        /// What the connection attempt reported.
        detail: String,
    },
    /// The server answered but refused the connection or a statement
    /// (authentication, a missing database, missing privileges).
    #[error("PostgreSQL at {host}:{port} refused: {detail}")]
    Refused {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// What the server said.
        detail: String,
    },
    /// TLS was asked for (`sslmode=require`) and could not be set up: the
    /// server does not offer it, or its certificate is not trusted or
    /// does not name the host.
    #[error(
        "TLS with PostgreSQL at {host}:{port} failed: {detail}; the server must have TLS on \
         (ssl=on), and if its certificate is \
         self-signed or from a private CA, name it with tls_root_certificates (or \
         sslrootcert=<file> in the URL), and connect with the host name it names"
    )]
    Tls {
        /// The host.
        host: String,
        /// The port.
        port: u16,
        /// What failed.
        detail: String,
    },
    /// The schema was written by a newer version of durable.
    #[error(
        "the schema \"{schema}\" has version {found}, newer than the {supported} this build of \
         durable knows; upgrade durable, or use another schema"
    )]
    NewerSchema {
        /// The schema name.
        schema: String,
        /// The version found.
        found: i32,
        /// The newest version this build knows.
        supported: i32,
    },
}

/// An error inside a storage operation: one the backend decided on, or one
/// the database reported (kept as is so conflicts can be retried).
#[derive(Debug)]
pub(crate) enum Fail {
    Backend(BackendError),
    Db(tokio_postgres::Error),
}

impl From<BackendError> for Fail {
    fn from(e: BackendError) -> Self {
        Fail::Backend(e)
    }
}

impl From<tokio_postgres::Error> for Fail {
    fn from(e: tokio_postgres::Error) -> Self {
        Fail::Db(e)
    }
}

impl From<deadpool_postgres::PoolError> for Fail {
    fn from(e: deadpool_postgres::PoolError) -> Self {
        Fail::Backend(pool_error(e))
    }
}

/// Whether running the transaction again may succeed: a deadlock or a
/// serialization failure (another transaction touched the same rows), or
/// a unique key taken by a concurrent insert (the retry sees it).
pub(crate) fn retryable(e: &Fail) -> bool {
    match e {
        Fail::Db(e) => e.code().is_some_and(|c| {
            *c == SqlState::T_R_DEADLOCK_DETECTED
                || *c == SqlState::T_R_SERIALIZATION_FAILURE
                || *c == SqlState::UNIQUE_VIOLATION
        }),
        Fail::Backend(_) => false,
    }
}

pub(crate) fn pool_error(e: deadpool_postgres::PoolError) -> BackendError {
    BackendError::Unavailable(format!(
        "no connection to PostgreSQL could be had from the pool: {e}"
    ))
}

/// What the server said: its message and SQLSTATE.
fn detail(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// What a full disk or a read-only database is told, with what to do;
/// `None` for other errors.
fn explained(code: &SqlState, detail: &str) -> Option<String> {
    if *code == SqlState::DISK_FULL || *code == SqlState::OUT_OF_MEMORY {
        Some(format!(
            "PostgreSQL is out of space: {detail}; free disk space on the database server"
        ))
    } else if *code == SqlState::READ_ONLY_SQL_TRANSACTION {
        Some(format!(
            "PostgreSQL refused a write: {detail}; is this a read-only replica or a \
             read-only database (default_transaction_read_only)? Point durable at the primary"
        ))
    } else {
        None
    }
}

/// The detail of a [`ConnectError::Refused`]: what the server said, and
/// what to do if the database is full or read-only.
pub(crate) fn refusal(e: &tokio_postgres::Error) -> String {
    let detail = detail(e);
    e.code()
        .and_then(|c| explained(c, &detail))
        .unwrap_or(detail)
}

/// A database error as a backend error that says what happened.
pub(crate) fn db_error(e: tokio_postgres::Error) -> BackendError {
    if e.is_closed() || e.code().is_none() {
        return BackendError::Unavailable(format!("the connection to PostgreSQL failed: {e}"));
    }
    let detail = detail(&e);
    if let Some(message) = e.code().and_then(|c| explained(c, &detail)) {
        return BackendError::Unavailable(message);
    }
    let code = e.code().cloned();
    match code {
        Some(c) if c == SqlState::ADMIN_SHUTDOWN || c == SqlState::CANNOT_CONNECT_NOW => {
            BackendError::Unavailable(format!("PostgreSQL is shutting down or starting: {detail}"))
        }
        _ => BackendError::Other(format!("PostgreSQL error: {detail}")),
    }
}

impl From<Fail> for BackendError {
    fn from(e: Fail) -> Self {
        match e {
            Fail::Backend(e) => e,
            Fail::Db(e) => db_error(e),
        }
    }
}

pub(crate) type Res<T> = Result<T, Fail>;
