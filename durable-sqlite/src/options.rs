//! Settings of the SQLite backend.

use durable_runtime::backend::transition::Limits;
use std::time::Duration;

/// How hard SQLite works to make a commit survive a crash (`PRAGMA
/// synchronous`). The database runs in WAL mode; in both levels a process
/// crash (panic, `kill -9`, out-of-memory kill) loses nothing that was
/// committed, and no level ever corrupts the file.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Synchronous {
    /// `NORMAL`: the write-ahead log is synced to disk at checkpoints, not
    /// at every commit. Survives process crashes; on power loss or an
    /// operating-system crash the last transactions before the failure may
    /// be lost (the file stays consistent: those episodes simply run again
    /// and their activities are delivered again). The default: commits cost
    /// microseconds instead of a disk flush.
    #[default]
    Normal,
    /// `FULL`: the log is synced at every commit. A commit that returned
    /// survives power loss too. Costs one disk flush per transaction (the
    /// backend batches concurrent operations into one transaction, which
    /// softens this under load).
    Full,
}

impl Synchronous {
    pub(crate) fn pragma(self) -> &'static str {
        match self {
            Synchronous::Normal => "NORMAL",
            Synchronous::Full => "FULL",
        }
    }
}

/// Settings for [`SqliteBackend::open_with`](crate::SqliteBackend::open_with).
///
/// ```
/// use durable_sqlite::{SqliteOptions, Synchronous};
/// use std::time::Duration;
/// let options = SqliteOptions {
///     synchronous: Synchronous::Full,
///     lease_duration: Duration::from_secs(300),
///     ..SqliteOptions::default()
/// };
/// # let _ = options;
/// ```
#[derive(Clone, Debug)]
pub struct SqliteOptions {
    /// How long an operation waits for another process's write lock before
    /// failing (default 5 s).
    pub busy_timeout: Duration,
    /// How long a lease lasts unless it is renewed (default 5 s). Workers
    /// renew the leases of the episodes and activities they run (and of
    /// completions being written) every third of this duration, so
    /// nothing live loses its lease however long it takes. Work held by a
    /// process that ended (crash, `kill -9`) is delivered again at once when
    /// another process using the file notices (at its open, or within one
    /// [heartbeat](Self::heartbeat_interval)); work held by a process that
    /// is alive but stuck is delivered again this long after its last
    /// renewal. See [Crash recovery](crate#crash-recovery).
    pub lease_duration: Duration,
    /// Durability of commits (default [`Synchronous::Normal`]).
    pub synchronous: Synchronous,
    /// How often an idle worker looks for work written by *other*
    /// processes (default 100 ms). Work written through the same
    /// [`SqliteBackend`](crate::SqliteBackend) value (or its clones) wakes
    /// workers at once, and timers wake them when due, so this only bounds
    /// the delay of cross-process hand-offs. Waiting clients share one
    /// check per interval and backend (see the [crate docs](crate)), not
    /// one each.
    pub poll_interval: Duration,
    /// Payload and history size limits.
    pub limits: Limits,
    /// Refuse to grow the file past this size (default: no limit). A write
    /// that would exceed it fails as if the disk were full and is rolled
    /// back; nothing else is affected.
    pub max_database_bytes: Option<u64>,
    /// Histories kept in memory between episodes so a long orchestration
    /// is not re-read from the file at every step (default 1,024 instances).
    pub history_cache_capacity: usize,
}

impl SqliteOptions {
    /// How often the backend refreshes its heartbeat in the file and looks
    /// for processes that ended while holding work: a third of
    /// [`lease_duration`](Self::lease_duration), at most 1 s.
    ///
    /// ```
    /// use durable_sqlite::SqliteOptions;
    /// use std::time::Duration;
    /// assert_eq!(SqliteOptions::default().heartbeat_interval(), Duration::from_secs(1));
    /// ```
    pub fn heartbeat_interval(&self) -> Duration {
        (self.lease_duration / 3)
            .min(Duration::from_secs(1))
            .max(Duration::from_millis(1))
    }
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            busy_timeout: Duration::from_secs(5),
            lease_duration: Duration::from_secs(5),
            synchronous: Synchronous::Normal,
            poll_interval: Duration::from_millis(100),
            limits: Limits::default(),
            max_database_bytes: None,
            history_cache_capacity: 1024,
        }
    }
}
