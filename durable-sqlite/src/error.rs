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

/// A stored row this build cannot read: written by a newer durable, or
/// changed outside durable. It concerns one instance, which is set aside
/// (see `store::SET_ASIDE`); the rest of the database keeps working.
#[derive(Debug)]
pub(crate) struct Unreadable {
    /// The instance the row belongs to (lossily decoded if the id itself is
    /// not UTF-8).
    pub(crate) instance_id: String,
    /// Which row: `history row 3`, `inbox row 17`, `instance row`.
    pub(crate) row: String,
    /// What is wrong with it.
    pub(crate) problem: Problem,
}

/// What is wrong with an [`Unreadable`] row.
#[derive(Debug)]
pub(crate) enum Problem {
    /// A column that must hold UTF-8 text holds something else.
    NotText {
        /// The column.
        column: &'static str,
        /// What it holds instead.
        found: &'static str,
    },
    /// An event of a kind this build does not know.
    NewerEvent(String),
    /// Text that does not parse.
    Malformed(String),
}

impl std::fmt::Display for Unreadable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let Unreadable {
            instance_id: id,
            row,
            problem,
        } = self;
        match problem {
            Problem::NewerEvent(kind) => write!(
                f,
                "instance \"{id}\" cannot run: its {row} holds a \"{kind}\" event, which was \
                 written by a newer version of durable than this one; upgrade durable in every \
                 process that uses this database, then reopen it"
            )?,
            Problem::NotText { column, found } => write!(
                f,
                "instance \"{id}\" cannot be read: the {column} of its {row} is {found}, which \
                 durable never writes, so the file was changed outside durable or is damaged; \
                 restore the database from a backup (or delete the instance), then reopen it"
            )?,
            Problem::Malformed(detail) => write!(
                f,
                "instance \"{id}\" cannot be read: its {row} does not parse ({detail}); it was \
                 written by a newer version of durable or changed outside durable. Upgrade \
                 durable, or restore the database from a backup, then reopen it"
            )?,
        }
        f.write_str(". Durable does not run this instance; other instances are not affected")
    }
}

impl From<Unreadable> for BackendError {
    fn from(e: Unreadable) -> Self {
        BackendError::Other(e.to_string())
    }
}

/// Why reading an instance's rows failed: the database, or one of its rows.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The database failed; nothing is known about the rows.
    Db(BackendError),
    /// A row of the instance cannot be read.
    Row(Unreadable),
}

impl From<BackendError> for ReadError {
    fn from(e: BackendError) -> Self {
        ReadError::Db(e)
    }
}

impl From<Unreadable> for ReadError {
    fn from(e: Unreadable) -> Self {
        ReadError::Row(e)
    }
}

impl From<ReadError> for BackendError {
    fn from(e: ReadError) -> Self {
        match e {
            ReadError::Db(e) => e,
            ReadError::Row(e) => e.into(),
        }
    }
}

/// A text column read without assuming it holds UTF-8 text, so that one
/// damaged row is reported as such instead of failing the whole query.
#[derive(Debug)]
pub(crate) struct Text(Result<String, NotText>);

/// What a [`Text`] column holds instead of UTF-8 text.
#[derive(Debug)]
pub(crate) struct NotText {
    /// What it holds, e.g. "not UTF-8 text".
    pub(crate) found: &'static str,
    /// Its bytes as text, invalid sequences replaced, for log messages.
    pub(crate) lossy: String,
}

impl rusqlite::types::FromSql for Text {
    fn column_result(v: rusqlite::types::ValueRef<'_>) -> rusqlite::types::FromSqlResult<Self> {
        use rusqlite::types::ValueRef;
        let not = |found, lossy: &[u8]| NotText {
            found,
            lossy: String::from_utf8_lossy(lossy).into_owned(),
        };
        Ok(Text(match v {
            ValueRef::Text(b) => {
                String::from_utf8(b.to_vec()).map_err(|_| not("not UTF-8 text", b))
            }
            ValueRef::Null => Err(not("NULL", b"")),
            ValueRef::Blob(b) => Err(not("a blob, not text", b)),
            ValueRef::Integer(_) | ValueRef::Real(_) => Err(not("a number, not text", b"")),
        }))
    }
}

impl Text {
    /// The text, or what the column holds instead.
    pub(crate) fn text(self) -> Result<String, NotText> {
        self.0
    }

    /// The text, or why `column` of `row` of instance `id` is unreadable.
    pub(crate) fn of(
        self,
        id: &str,
        row: impl std::fmt::Display,
        column: &'static str,
    ) -> Result<String, Unreadable> {
        self.0.map_err(|e| Unreadable {
            instance_id: id.to_string(),
            row: row.to_string(),
            problem: Problem::NotText {
                column,
                found: e.found,
            },
        })
    }
}

/// The name of a numbered row (`history row 3`), formatted only when an
/// error needs it: reads of healthy rows pay nothing for it.
#[derive(Clone, Copy)]
pub(crate) struct RowName<'a>(pub(crate) &'a str, pub(crate) i64);

impl std::fmt::Display for RowName<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} row {}", self.0, self.1)
    }
}
