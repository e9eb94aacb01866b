//! Errors: what opening a database can fail with, and how SQLite errors
//! become [`BackendError`]s that say what to do next.

use durable_runtime::BackendError;
use rusqlite::ErrorCode;
use std::path::PathBuf;

/// Why [`SqliteBackend::open`](crate::SqliteBackend::open) failed. Every
/// variant names the file; none of them leaves the file changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OpenError {
    /// The file exists and is not an SQLite database.
    #[error(
        "{path} is not an SQLite database (its header is not \"SQLite format 3\"); \
         durable left it untouched. Point durable at a new path or at a database it created"
    )]
    NotADatabase {
        /// The file.
        path: PathBuf,
    },
    /// The file looks like SQLite but cannot be read.
    #[error(
        "{path} is damaged and cannot be read as an SQLite database ({detail}); \
         durable left it untouched. Restore it from a backup, or move it away to start afresh"
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// What SQLite reported.
        detail: String,
    },
    /// The database belongs to another application.
    #[error(
        "{path} is an SQLite database of another application ({detail}); \
         durable left it untouched. Give durable its own file"
    )]
    NotDurable {
        /// The file.
        path: PathBuf,
        /// What gave it away.
        detail: String,
    },
    /// A newer version of durable wrote the database.
    #[error(
        "{path} was written by a newer version of durable (schema version {found}; this version \
         understands up to {supported}); upgrade durable to open it"
    )]
    NewerSchema {
        /// The file.
        path: PathBuf,
        /// The schema version in the file.
        found: i64,
        /// The newest schema version this build knows.
        supported: i64,
    },
    /// The file (or its directory, which holds the write-ahead log) cannot be written.
    #[error(
        "{path} is read-only (or its directory is, and SQLite needs to create the -wal and -shm \
         files next to it); durable must write to its database, so it left the file untouched. \
         Fix the permissions or pick another path"
    )]
    ReadOnly {
        /// The file.
        path: PathBuf,
    },
    /// Another process holds the database locked for longer than the busy timeout.
    #[error(
        "{path} stayed locked by another process for longer than the busy timeout; \
         retry, or raise SqliteOptions::busy_timeout"
    )]
    Busy {
        /// The file.
        path: PathBuf,
    },
    /// The file system refused.
    #[error("cannot open {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Anything else SQLite reported.
    #[error("cannot open {path}: {source}")]
    Sqlite {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: rusqlite::Error,
    },
}

impl From<OpenError> for BackendError {
    fn from(e: OpenError) -> Self {
        BackendError::Unavailable(e.to_string())
    }
}

/// Maps an SQLite error to a [`BackendError`] that says what to do.
pub(crate) fn db_err(e: &rusqlite::Error) -> BackendError {
    match e.sqlite_error_code() {
        Some(ErrorCode::DiskFull) => BackendError::Unavailable(format!(
            "the database is full (the disk is full, or the file reached \
             SqliteOptions::max_database_bytes); nothing of this operation was applied. \
             Free space or raise the limit, then retry ({e})"
        )),
        Some(ErrorCode::ReadOnly) => BackendError::Unavailable(format!(
            "the database became read-only; nothing of this operation was applied. \
             Fix the file's permissions ({e})"
        )),
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => {
            BackendError::Unavailable(format!(
                "the database stayed locked by another process for longer than the busy \
                 timeout; retry, or raise SqliteOptions::busy_timeout ({e})"
            ))
        }
        Some(ErrorCode::DatabaseCorrupt) | Some(ErrorCode::NotADatabase) => {
            BackendError::Other(format!(
                "the database file is damaged ({e}); stop the workers and restore it from a backup"
            ))
        }
        Some(ErrorCode::SystemIoFailure) => BackendError::Unavailable(format!(
            "an I/O error reached the database ({e}); nothing of this operation was applied"
        )),
        _ => BackendError::Other(format!("sqlite: {e}")),
    }
}

/// `?`-friendly conversion for SQL calls inside jobs.
pub(crate) trait SqlResult<T> {
    /// Maps the error with [`db_err`].
    fn db(self) -> Result<T, BackendError>;
}

impl<T> SqlResult<T> for Result<T, rusqlite::Error> {
    fn db(self) -> Result<T, BackendError> {
        self.map_err(|e| db_err(&e))
    }
}

/// A stored value that does not parse: the file was altered outside durable.
pub(crate) fn bad_row(what: &str, detail: impl std::fmt::Display) -> BackendError {
    BackendError::Other(format!(
        "the database holds an unreadable {what} ({detail}); was the file changed outside durable?"
    ))
}
