//! The SQLite backend of durable: the embedded, durable default for one
//! machine.
//!
//! [`SqliteBackend`] keeps everything in one SQLite file (bundled SQLite, no
//! system library needed): instances and their status, each execution's
//! history (one row per event, JSON as on the wire), the inbox of messages
//! waiting for each instance (including timers and delayed starts, with the
//! time they become visible), queued activities, and the leases workers
//! hold. It only persists and queues: what an episode means is decided by
//! the same pure transition core as the in-memory backend
//! ([`durable_runtime::backend::transition`]).
//!
//! # Guarantees
//!
//! - **One transaction per episode.** An episode's new history, status,
//!   activities, timers, messages to other instances and sub-orchestrations
//!   are committed together or not at all, and so is the deletion of the
//!   timers it cancelled (the loser of a deadline or `when_any`).
//! - **Episodes are applied exactly once.** Work is leased (peek-lock) with a
//!   random token; completing with a token that is no longer current (the
//!   lease expired and someone else took the item, or it was already
//!   completed) is rejected with [`BackendError::LeaseLost`] and changes
//!   nothing.
//! - **Activities run at least once.** Work a crashed process held is
//!   delivered again, to any process sharing the file: at once (see
//!   [Crash recovery](#crash-recovery)), or after
//!   [`SqliteOptions::lease_duration`] if its holder is alive but stuck.
//! - **Crash-safe.** The database runs in WAL mode. A process crash loses
//!   nothing that was committed; power loss loses nothing either with
//!   [`Synchronous::Full`], and at most the last commits with the default
//!   [`Synchronous::Normal`]. Neither ever corrupts the file.
//! - **Several processes may share one file.** Writers take the database
//!   lock with `BEGIN IMMEDIATE`; a lease is claimed inside that
//!   transaction, so two processes never hold the same item.
//!
//! # Crash recovery
//!
//! Every backend that opens a file registers itself (a row in the
//! `processes` table and an OS lock on a lock file in the directory
//! `<database>.processes` beside it) and every lease records its holder.
//! The operating system releases the lock when the process ends, however it
//! ends, so a backend that can take another's lock knows that process is
//! gone and releases its leases on the spot: a restarted process takes back
//! what its previous incarnation held at open, and a live one takes over a
//! dead one's work within a heartbeat (every third of
//! [`SqliteOptions::lease_duration`], at most 1 s). Live workers renew
//! their leases, so work is never taken from a live process. A completion
//! that fails on I/O is given back at once. docs/sqlite.md has the details
//! and the measured takeover times.
//!
//! # Delivery
//!
//! Within a process, every write wakes waiting workers and clients at once
//! (`tokio::sync::Notify`). Writes by other processes are noticed within
//! [`SqliteOptions::poll_interval`] (100 ms by default): idle workers look
//! for work that often, and for waiting clients one check per backend
//! (`PRAGMA data_version`, then the watched instances' statuses only if
//! another connection committed) wakes those whose instance changed, so
//! idle waiters cost no reads. Timers and expiring leases wake workers when
//! they are due. SQLite work runs on a dedicated
//! thread per backend, never on the async runtime's threads; concurrent
//! writes are committed in one transaction (group commit). For a file, a
//! second thread with its own connection copies the write-ahead log into
//! the database (checkpoints), so commits never wait for that.
//!
//! ```
//! use durable_runtime::{Client, Registry, Worker};
//! use durable_sqlite::SqliteBackend;
//! use std::sync::Arc;
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("durable.db");
//! let backend = Arc::new(SqliteBackend::open(&path)?);
//! let registry = Registry::new()
//!     .orchestrator_fn("hello", |_ctx, name: String| async move { Ok(format!("Hello, {name}!")) });
//! let worker = Worker::new(backend.clone(), registry).start()?;
//! let client = Client::new(backend);
//! let id = client.schedule_by_name("hello", &"world", Default::default()).await?;
//! let state = client.wait_for_completion(&id, std::time::Duration::from_secs(5)).await?;
//! assert_eq!(state.output::<String>()?, "Hello, world!");
//! worker.shutdown().await;
//! # Ok(())
//! # }
//! ```

mod checkpoint;
mod error;
mod options;
mod process;
mod schema;
mod store;
mod watch;
mod writer;

pub use error::OpenError;
pub use options::{SqliteOptions, Synchronous};
pub use process::backends_using;

use async_trait::async_trait;
use durable_runtime::actions::OrchestratorResult;
use durable_runtime::backend::transition::ControlRequest;
use durable_runtime::backend::{
    ActivityWorkItem, Backend, BackendError, CreateInstanceRequest, InstanceMetadata,
    InstanceQuery, OrchestrationWorkItem, PurgeTarget, QueryPage, RecordedEpisode, WaitFor,
};
use durable_runtime::failure::TaskOutcome;
use durable_runtime::history::{HistoryEvent, OrchestrationStatus};
use rusqlite::{Connection, OpenFlags};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::{Ctx, Effects, HistoryCache, Leased};
use tokio::sync::Notify;
use watch::{Watch, Watchers};
use writer::{Periodic, Writer};

/// The schema version this build of durable writes (`PRAGMA user_version`).
pub const SCHEMA_VERSION: i64 = schema::SCHEMA_VERSION;

struct Shared {
    /// Declared before `writer`: it stops (closing its connection) before
    /// the backend's own connection closes and checkpoints the log.
    _checkpointer: Option<checkpoint::Checkpointer>,
    writer: Writer,
    ctx: Arc<Ctx>,
    options: SqliteOptions,
    path: Option<PathBuf>,
    orchestration_work: Arc<Notify>,
    activity_work: Arc<Notify>,
    /// This backend's id in the file's `processes` table.
    process_id: i64,
    watchers: Arc<Watchers>,
    /// Items leased ahead in the same transaction as the one handed out,
    /// so a busy worker does not pay a round trip to the database per item.
    orchestration_prefetch: Mutex<VecDeque<(OrchestrationWorkItem, Instant)>>,
    activity_prefetch: Mutex<VecDeque<(ActivityWorkItem, Instant)>>,
}

impl Shared {
    /// Wakes whoever a committed write's effects concern.
    fn wake(&self, fx: &Effects) {
        if fx.orchestrations {
            self.orchestration_work.notify_waiters();
            self.orchestration_work.notify_one();
        }
        if fx.activities {
            self.activity_work.notify_waiters();
            self.activity_work.notify_one();
        }
        for id in &fx.touched {
            self.watchers.wake(id);
        }
    }
}

fn give_back_orchestration(
    conn: &Connection,
    item: OrchestrationWorkItem,
) -> Result<(), BackendError> {
    // A lease another worker took over is not ours to give back.
    match store::abandon_orchestration(conn, &item, &mut Effects::default()) {
        Err(BackendError::LeaseLost(_)) | Ok(()) => Ok(()),
        Err(e) => Err(e),
    }
}

fn give_back_activity(conn: &Connection, item: ActivityWorkItem) -> Result<(), BackendError> {
    match store::abandon_activity(conn, &item, &mut Effects::default()) {
        Err(BackendError::LeaseLost(_)) | Ok(()) => Ok(()),
        Err(e) => Err(e),
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        // Closing: no longer a process using the file (its lock file goes
        // when the connection thread ends).
        let id = self.process_id;
        self.writer
            .detach(move |conn| process::unregister(conn, id).map_err(|e| error::db_err(&e)));
        // Give prefetched work back at once rather than after its lease
        // expires; the connection thread drains these before it stops.
        for (item, _) in lock(&self.orchestration_prefetch).drain(..) {
            self.writer
                .detach(move |conn| give_back_orchestration(conn, item));
        }
        for (item, _) in lock(&self.activity_prefetch).drain(..) {
            self.writer
                .detach(move |conn| give_back_activity(conn, item));
        }
    }
}

/// Items leased per database round trip when work is plentiful.
const PREFETCH: usize = 16;

/// The SQLite backend. Cloning gives another handle to the same database
/// and connection. See the [crate docs](crate).
#[derive(Clone)]
pub struct SqliteBackend {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for SqliteBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteBackend")
            .field("path", &self.shared.path)
            .field("options", &self.shared.options)
            .finish()
    }
}

impl SqliteBackend {
    /// Opens (or creates) the database at `path` with default options.
    ///
    /// Fails, leaving the file untouched, if it is not an SQLite database,
    /// is damaged, belongs to another application, was written by a newer
    /// version of durable, or cannot be written.
    pub fn open(path: impl AsRef<Path>) -> Result<Self, OpenError> {
        Self::open_with(path, SqliteOptions::default())
    }

    /// Opens (or creates) the database at `path`.
    pub fn open_with(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, OpenError> {
        let path = path.as_ref();
        schema::check_header(path)?;
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| match e.sqlite_error_code() {
            Some(rusqlite::ErrorCode::ReadOnly) => OpenError::ReadOnly {
                path: path.to_path_buf(),
            },
            _ => OpenError::Sqlite {
                path: path.to_path_buf(),
                source: e,
            },
        })?;
        if conn.is_readonly(rusqlite::MAIN_DB).unwrap_or(false) {
            return Err(OpenError::ReadOnly {
                path: path.to_path_buf(),
            });
        }
        // Before the first read: another process may hold the file while
        // it creates or migrates the schema.
        conn.busy_timeout(options.busy_timeout)
            .map_err(|e| OpenError::Sqlite {
                path: path.to_path_buf(),
                source: e,
            })?;
        // SQLite answers "busy" without waiting where waiting could
        // deadlock (two connections upgrading their locks at once, as when
        // several processes open a new file together): the open is then
        // tried again from the start, within the busy timeout.
        let started = std::time::Instant::now();
        let mut pause = Duration::from_millis(2);
        loop {
            match schema::check_identity(&conn, path)
                .and_then(|()| schema::prepare(&conn, path, &options, true))
            {
                Err(OpenError::Busy { .. }) if started.elapsed() < options.busy_timeout => {
                    if !conn.is_autocommit() {
                        let _ = conn.execute_batch("ROLLBACK");
                    }
                    std::thread::sleep(pause);
                    pause = (pause * 2).min(Duration::from_millis(100));
                }
                result => break result?,
            }
        }
        Self::start(conn, options, Some(path.to_path_buf()))
    }

    /// A database in memory: nothing is persisted. For tests; the
    /// in-memory backend of durable-runtime is faster for that.
    pub fn in_memory() -> Result<Self, OpenError> {
        Self::in_memory_with(SqliteOptions::default())
    }

    /// A database in memory, with options.
    pub fn in_memory_with(options: SqliteOptions) -> Result<Self, OpenError> {
        let path = Path::new(":memory:");
        let conn = Connection::open_in_memory().map_err(|e| OpenError::Sqlite {
            path: path.to_path_buf(),
            source: e,
        })?;
        schema::prepare(&conn, path, &options, false)?;
        Self::start(conn, options, None)
    }

    fn start(
        conn: Connection,
        options: SqliteOptions,
        path: Option<PathBuf>,
    ) -> Result<Self, OpenError> {
        let lease_micros = i64::try_from(options.lease_duration.as_micros()).unwrap_or(i64::MAX);
        let shown = || path.clone().unwrap_or_else(|| PathBuf::from(":memory:"));
        let sqlite = |source| OpenError::Sqlite {
            path: shown(),
            source,
        };
        // Register this process, then take back at once what processes that
        // died (a previous incarnation of this one, say) held.
        let registration = process::register(&conn, path.as_deref()).map_err(sqlite)?;
        process::tick(&conn, &registration, lease_micros).map_err(sqlite)?;
        let process_id = registration.id;
        let ctx = Arc::new(Ctx {
            limits: options.limits.clone(),
            lease_micros,
            cache: Mutex::new(HistoryCache::new(options.history_cache_capacity)),
            process_id,
            waiting_for: Mutex::new(None),
            backlog_sampled: Default::default(),
        });
        let on_rollback = {
            let ctx = ctx.clone();
            move || lock(&ctx.cache).clear()
        };
        let watchers = Arc::new(Watchers::default());
        let orchestration_work = Arc::new(Notify::new());
        let activity_work = Arc::new(Notify::new());
        let periodic = {
            let backlog_ctx = ctx.clone();
            let (watchers, orchestrations, activities) = (
                watchers.clone(),
                orchestration_work.clone(),
                activity_work.clone(),
            );
            let poll = options.poll_interval;
            let beat = options.heartbeat_interval();
            let (mut next_check, mut next_beat) = (Instant::now(), Instant::now() + beat);
            Periodic {
                every: poll.min(beat),
                run: Box::new(move |conn| {
                    let now = Instant::now();
                    if now >= next_check {
                        watchers.check(conn);
                        next_check = now + poll;
                    }
                    if now >= next_beat {
                        // The backlog is sampled here too, not only when
                        // work is taken: with no worker taking work it is
                        // what an alert needs to see grow.
                        let at = store::micros(chrono::Utc::now());
                        for kind in [
                            durable_runtime::metrics::KIND_ORCHESTRATION,
                            durable_runtime::metrics::KIND_ACTIVITY,
                        ] {
                            if let Err(e) = store::sample_backlog(conn, &backlog_ctx, at, kind) {
                                tracing::debug!(error = %e, "counting the backlog failed");
                            }
                        }
                        match process::tick(conn, &registration, lease_micros) {
                            Ok(reaped) => {
                                if reaped.orchestrations > 0 {
                                    orchestrations.notify_waiters();
                                }
                                if reaped.activities > 0 {
                                    activities.notify_waiters();
                                }
                            }
                            Err(e) => {
                                tracing::warn!(error = %e, "refreshing this process's heartbeat failed; retrying")
                            }
                        }
                        next_beat = Instant::now() + beat;
                    }
                }),
            }
        };
        let jobs = Arc::new(std::sync::atomic::AtomicU64::new(0));
        // A file's log is checkpointed by a thread of its own; the
        // connection's automatic checkpoint stays as a backstop.
        let checkpointer = path
            .as_deref()
            .and_then(|p| checkpoint::Checkpointer::spawn(p, &options, jobs.clone()));
        if checkpointer.is_some() {
            conn.execute_batch(&format!(
                "PRAGMA wal_autocheckpoint = {};",
                checkpoint::BACKSTOP_PAGES
            ))
            .map_err(sqlite)?;
        }
        let writer = Writer::spawn(conn, "durable-sqlite".into(), on_rollback, periodic, jobs)
            .map_err(|source| OpenError::Io {
                path: shown(),
                source,
            })?;
        Ok(SqliteBackend {
            shared: Arc::new(Shared {
                _checkpointer: checkpointer,
                writer,
                ctx,
                options,
                path,
                orchestration_work,
                activity_work,
                process_id,
                watchers,
                orchestration_prefetch: Mutex::new(VecDeque::new()),
                activity_prefetch: Mutex::new(VecDeque::new()),
            }),
        })
    }

    /// The database file, or `None` for an in-memory database.
    pub fn path(&self) -> Option<&Path> {
        self.shared.path.as_deref()
    }

    /// The options the backend was opened with.
    pub fn options(&self) -> &SqliteOptions {
        &self.shared.options
    }

    /// Runs `PRAGMA integrity_check` and returns what SQLite reports
    /// (`["ok"]` for a sound file).
    pub async fn integrity_check(&self) -> Result<Vec<String>, BackendError> {
        self.shared
            .writer
            .read(|conn| {
                use error::SqlResult;
                let mut stmt = conn.prepare("PRAGMA integrity_check").db()?;
                let rows = stmt.query_map([], |r| r.get::<_, String>(0)).db()?;
                rows.map(|r| r.db()).collect()
            })
            .await
    }

    /// Runs a write operation and wakes whoever its effects concern.
    async fn write<T, F>(&self, f: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection, &Ctx, &mut Effects) -> Result<T, BackendError> + Send + 'static,
    {
        let ctx = self.shared.ctx.clone();
        // Woken from the connection thread once the writes are committed,
        // so waiters learn of them even if this call is dropped meanwhile
        // (a timeout, a select!, a worker aborting at shutdown).
        let shared = Arc::downgrade(&self.shared);
        let (value, _) = self
            .shared
            .writer
            .write_then(
                move |conn| {
                    let mut fx = Effects::default();
                    let v = f(conn, &ctx, &mut fx)?;
                    Ok((v, fx))
                },
                Box::new(move |(_, fx): &(T, Effects)| {
                    if let Some(shared) = shared.upgrade() {
                        shared.wake(fx);
                    }
                }),
            )
            .await?;
        Ok(value)
    }

    /// How long an idle worker waits before looking again: until the next
    /// due item, at most the poll interval.
    fn idle_wait(&self, next: Option<i64>) -> Duration {
        let poll = self.shared.options.poll_interval;
        match next {
            Some(t) => {
                let now = store::micros(chrono::Utc::now());
                let until = Duration::from_micros(t.saturating_sub(now).max(0) as u64);
                until.min(poll)
            }
            None => poll,
        }
    }

    /// A prefetched item whose lease is still comfortably valid. Older ones
    /// are given back (if another worker took them meanwhile, the stale
    /// token makes that a no-op).
    fn take_prefetched<T: Send + 'static>(
        &self,
        queue: &Mutex<VecDeque<(T, Instant)>>,
        give_back: fn(&Connection, T) -> Result<(), BackendError>,
    ) -> Option<T> {
        let fresh = self.shared.options.lease_duration / 2;
        let mut q = lock(queue);
        while let Some((item, at)) = q.pop_front() {
            if at.elapsed() < fresh {
                return Some(item);
            }
            self.shared.writer.detach(move |conn| give_back(conn, item));
        }
        None
    }

    /// Gives every prefetched item back at once, so other processes need not
    /// wait for the leases to expire.
    fn return_prefetched(&self) {
        for (item, _) in lock(&self.shared.orchestration_prefetch).drain(..) {
            self.shared
                .writer
                .detach(move |conn| give_back_orchestration(conn, item));
        }
        for (item, _) in lock(&self.shared.activity_prefetch).drain(..) {
            self.shared
                .writer
                .detach(move |conn| give_back_activity(conn, item));
        }
    }

    async fn control(
        &self,
        instance_id: &str,
        request: ControlRequest,
    ) -> Result<(), BackendError> {
        request.check(&self.shared.ctx.limits)?;
        let id = instance_id.to_string();
        self.write(move |conn, _, fx| store::control(conn, &id, request, fx))
            .await
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // No user code runs under these locks; a poisoned lock still holds
    // consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[async_trait]
impl Backend for SqliteBackend {
    async fn create_instance(&self, request: CreateInstanceRequest) -> Result<(), BackendError> {
        self.write(move |conn, ctx, fx| {
            store::create(conn, ctx, &request, None, chrono::Utc::now(), fx)
        })
        .await
    }

    async fn get_instance(
        &self,
        instance_id: &str,
        with_payloads: bool,
    ) -> Result<Option<InstanceMetadata>, BackendError> {
        let id = instance_id.to_string();
        self.shared
            .writer
            .read(move |conn| store::get_instance(conn, &id, with_payloads))
            .await
    }

    async fn wait_for_instance(
        &self,
        instance_id: &str,
        wait_for: WaitFor,
        timeout: Duration,
    ) -> Result<InstanceMetadata, BackendError> {
        // Commits through this backend wake the watch directly; the
        // connection thread's periodic check wakes it when another process
        // changed the instance. No reads on a timer of its own.
        let watch = Watch::new(&self.shared.watchers, instance_id);
        let watcher = watch.notify();
        let deadline = durable_runtime::backend::deadline_after(timeout);
        let result = loop {
            let notified = watcher.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let read = {
                let (watchers, id, waiter) = (
                    self.shared.watchers.clone(),
                    instance_id.to_string(),
                    watch.waiter(),
                );
                self.shared.writer.read(move |conn| {
                    let meta = store::get_instance(conn, &id, true)?;
                    if let Some(m) = &meta {
                        watchers.saw(&id, waiter, m.status.to_string());
                    }
                    Ok(meta)
                })
            };
            let meta = match read.await {
                Ok(Some(m)) => m,
                Ok(None) => break Err(BackendError::NotFound(instance_id.to_string())),
                Err(e) => break Err(e),
            };
            let done = match wait_for {
                WaitFor::Start => meta.status != OrchestrationStatus::Pending,
                WaitFor::Completion => meta.status.is_terminal(),
            };
            if done {
                break Ok(meta);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                break Err(BackendError::Timeout(timeout, instance_id.to_string()));
            }
            let _ = tokio::time::timeout(deadline - now, notified).await;
        };
        result
    }

    async fn raise_event(
        &self,
        instance_id: &str,
        name: &str,
        input: Option<String>,
    ) -> Result<(), BackendError> {
        let name = name.to_string();
        self.control(instance_id, ControlRequest::RaiseEvent { name, input })
            .await
    }

    async fn terminate(
        &self,
        instance_id: &str,
        output: Option<String>,
        recursive: bool,
    ) -> Result<(), BackendError> {
        self.control(instance_id, ControlRequest::Terminate { output, recursive })
            .await
    }

    async fn suspend(&self, instance_id: &str, reason: Option<String>) -> Result<(), BackendError> {
        self.control(instance_id, ControlRequest::Suspend { reason })
            .await
    }

    async fn resume(&self, instance_id: &str, reason: Option<String>) -> Result<(), BackendError> {
        self.control(instance_id, ControlRequest::Resume { reason })
            .await
    }

    async fn rewind(&self, instance_id: &str, reason: Option<String>) -> Result<(), BackendError> {
        ControlRequest::Rewind {
            reason: reason.clone(),
        }
        .check(&self.shared.ctx.limits)?;
        let id = instance_id.to_string();
        self.write(move |conn, _, fx| store::rewind(conn, &id, reason.clone(), fx))
            .await
    }

    async fn purge(&self, target: PurgeTarget, recursive: bool) -> Result<usize, BackendError> {
        self.write(move |conn, _, fx| store::purge(conn, &target, recursive, fx))
            .await
    }

    async fn remove_idle_entity(
        &self,
        instance_id: &str,
        execution_id: &str,
    ) -> Result<bool, BackendError> {
        let (id, execution) = (instance_id.to_string(), execution_id.to_string());
        self.write(move |conn, _, fx| store::remove_idle_entity(conn, &id, &execution, fx))
            .await
    }

    async fn query_instances(&self, query: InstanceQuery) -> Result<QueryPage, BackendError> {
        self.shared
            .writer
            .read(move |conn| store::query(conn, &query))
            .await
    }

    async fn get_history(&self, instance_id: &str) -> Result<Vec<HistoryEvent>, BackendError> {
        let id = instance_id.to_string();
        self.shared
            .writer
            .read(move |conn| store::get_history(conn, &id))
            .await
    }

    async fn next_orchestration_item(&self) -> Result<OrchestrationWorkItem, BackendError> {
        loop {
            if let Some(item) =
                self.take_prefetched(&self.shared.orchestration_prefetch, give_back_orchestration)
            {
                return Ok(item);
            }
            let notified = self.shared.orchestration_work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = match self
                .write(|conn, ctx, fx| {
                    store::lease_many(PREFETCH, || store::lease_orchestration(conn, ctx, fx))
                })
                .await?
            {
                Leased::Item(items) => {
                    let now = Instant::now();
                    let mut items = items.into_iter();
                    let first = items.next();
                    lock(&self.shared.orchestration_prefetch).extend(items.map(|i| (i, now)));
                    match first {
                        Some(item) => return Ok(item),
                        None => continue,
                    }
                }
                Leased::Idle(next) => next,
            };
            let _ = tokio::time::timeout(self.idle_wait(next), notified).await;
        }
    }

    async fn complete_orchestration_episode(
        &self,
        item: OrchestrationWorkItem,
        result: OrchestratorResult,
    ) -> Result<Option<RecordedEpisode>, BackendError> {
        self.write(move |conn, ctx, fx| store::complete_orchestration(conn, ctx, item, &result, fx))
            .await
            .map(Some)
    }

    async fn abandon_orchestration_item(
        &self,
        item: OrchestrationWorkItem,
    ) -> Result<(), BackendError> {
        self.write(move |conn, _, fx| store::abandon_orchestration(conn, &item, fx))
            .await
    }

    async fn next_activity_item(&self) -> Result<ActivityWorkItem, BackendError> {
        loop {
            if let Some(item) =
                self.take_prefetched(&self.shared.activity_prefetch, give_back_activity)
            {
                return Ok(item);
            }
            let notified = self.shared.activity_work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let next = match self
                .write(|conn, ctx, _| {
                    store::lease_many(PREFETCH, || store::lease_activity(conn, ctx))
                })
                .await?
            {
                Leased::Item(items) => {
                    let now = Instant::now();
                    let mut items = items.into_iter();
                    let first = items.next();
                    lock(&self.shared.activity_prefetch).extend(items.map(|i| (i, now)));
                    match first {
                        Some(item) => return Ok(item),
                        None => continue,
                    }
                }
                Leased::Idle(next) => next,
            };
            let _ = tokio::time::timeout(self.idle_wait(next), notified).await;
        }
    }

    async fn complete_activity_item(
        &self,
        item: &ActivityWorkItem,
        outcome: TaskOutcome,
    ) -> Result<(), BackendError> {
        let item = item.clone();
        self.write(move |conn, ctx, fx| store::complete_activity(conn, ctx, &item, outcome, fx))
            .await
    }

    async fn abandon_activity_item(&self, item: &ActivityWorkItem) -> Result<(), BackendError> {
        let item = item.clone();
        self.write(move |conn, _, fx| store::abandon_activity(conn, &item, fx))
            .await
    }

    async fn worker_stopped(&self) {
        self.return_prefetched();
    }

    fn activity_lease_renewal(&self) -> Option<std::time::Duration> {
        Some(self.shared.options.lease_duration / 3)
    }

    fn orchestration_lease_renewal(&self) -> Option<std::time::Duration> {
        Some(self.shared.options.lease_duration / 3)
    }

    async fn renew_orchestration_item(
        &self,
        item: &OrchestrationWorkItem,
    ) -> Result<(), BackendError> {
        let item = OrchestrationWorkItem {
            instance_id: item.instance_id.clone(),
            execution_id: item.execution_id.clone(),
            past_events: Arc::default(),
            new_events: Vec::new(),
            completion_token: item.completion_token.clone(),
            orchestration_span: None,
        };
        self.write(move |conn, ctx, _| store::renew_orchestration(conn, ctx, &item))
            .await
    }

    async fn renew_activity_item(&self, item: &ActivityWorkItem) -> Result<(), BackendError> {
        let item = item.clone();
        self.write(move |conn, ctx, _| store::renew_activity(conn, ctx, &item))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use durable_runtime::backend::IdReusePolicy;

    fn watched(b: &SqliteBackend) -> usize {
        b.shared.watchers.watched()
    }

    /// Polls a wait once (so it registers its watcher) and drops it.
    async fn start_and_drop_wait(b: &SqliteBackend, id: &str) {
        tokio::select! {
            biased;
            r = b.wait_for_instance(id, WaitFor::Completion, Duration::from_secs(3600)) => {
                panic!("the wait for {id} ended: {r:?}")
            }
            () = std::future::ready(()) => {}
        }
    }

    #[tokio::test]
    async fn dropped_waits_leave_no_watchers_behind() {
        let b = SqliteBackend::in_memory().unwrap();
        for i in 0..50 {
            let id = format!("w{i}");
            b.create_instance(CreateInstanceRequest {
                instance_id: id.clone(),
                name: "orch".into(),
                version: None,
                input: None,
                scheduled_start: None,
                reuse_policy: IdReusePolicy::default(),
                trace: None,
                tags: Default::default(),
            })
            .await
            .unwrap();
            start_and_drop_wait(&b, &id).await;
            start_and_drop_wait(&b, &id).await;
        }
        assert_eq!(watched(&b), 0, "dropped waits left watcher entries");

        // A waiter that stays keeps the entry while others come and go.
        let mut staying =
            Box::pin(b.wait_for_instance("w0", WaitFor::Completion, Duration::from_secs(3600)));
        tokio::select! {
            biased;
            r = &mut staying => panic!("the wait ended: {r:?}"),
            () = std::future::ready(()) => {}
        }
        start_and_drop_wait(&b, "w0").await;
        assert_eq!(watched(&b), 1, "the remaining waiter lost its entry");
        drop(staying);
        assert_eq!(watched(&b), 0, "the last waiter left its entry behind");
    }

    /// The log is copied into the database file while the backend runs,
    /// by the checkpointer (a few commits, far below SQLite's automatic
    /// checkpoint, which alone would leave the file empty until it closes).
    #[tokio::test]
    async fn the_checkpointer_copies_the_log_into_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.db");
        let b = SqliteBackend::open(&path).unwrap();
        for i in 0..20 {
            b.create_instance(request(&format!("c{i}"))).await.unwrap();
        }
        // Pages the database holds, read through the log.
        let pages: u64 = Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA page_count", [], |r| r.get(0))
            .unwrap();
        let page_size: u64 = Connection::open(&path)
            .unwrap()
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .unwrap();
        let file_len = || std::fs::metadata(&path).map_or(0, |m| m.len());
        until("the log to be checkpointed into the file", || {
            file_len() >= pages * page_size
        })
        .await;
        assert_eq!(b.integrity_check().await.unwrap(), ["ok"]);
    }

    /// A write whose caller gives up before it finishes (a timeout, a
    /// `select!`) still wakes the waiters of what it committed.
    #[tokio::test]
    async fn a_dropped_write_still_wakes_waiters() {
        let b = SqliteBackend::in_memory().unwrap();
        b.create_instance(request("p")).await.unwrap();
        let waiter = b.wait_for_instance("p", WaitFor::Start, Duration::from_secs(3600));
        let mut waiter = Box::pin(waiter);
        tokio::select! {
            biased;
            r = &mut waiter => panic!("the wait ended early: {r:?}"),
            () = std::future::ready(()) => {}
        }
        // Let the check for other connections' commits settle first, so only
        // this backend's own wake can end the wait.
        let (checks, _) = b.shared.watchers.counts();
        until("two checks for changes by other connections", || {
            b.shared.watchers.counts().0 >= checks + 2
        })
        .await;
        let (_, reads) = b.shared.watchers.counts();
        // Hold the connection thread so the suspend below is still queued
        // when its caller gives up.
        let (release, held) = std::sync::mpsc::channel::<()>();
        let mut blocker = Box::pin(b.shared.writer.read(move |_| {
            let _ = held.recv();
            Ok(())
        }));
        tokio::select! {
            biased;
            r = &mut blocker => panic!("the blocking job ended early: {r:?}"),
            () = std::future::ready(()) => {}
        }
        // Submitted on the first poll, then dropped before it finishes.
        // (Suspending a pending instance sets its status at once.)
        tokio::select! {
            biased;
            r = b.suspend("p", None) => panic!("the suspend finished while the thread was held: {r:?}"),
            () = std::future::ready(()) => {}
        }
        release.send(()).unwrap();
        blocker.await.unwrap();
        let state = tokio::time::timeout(Duration::from_secs(30), waiter)
            .await
            .expect("the waiter was not woken by the dropped suspend's commit")
            .unwrap();
        assert_eq!(state.status, OrchestrationStatus::Suspended);
        assert_eq!(
            b.shared.watchers.counts().1,
            reads,
            "the wake came from the check for other connections, not from the commit"
        );
    }

    fn request(id: &str) -> CreateInstanceRequest {
        CreateInstanceRequest {
            instance_id: id.to_string(),
            name: "orch".into(),
            version: None,
            input: None,
            scheduled_start: None,
            reuse_policy: IdReusePolicy::default(),
            trace: None,
            tags: Default::default(),
        }
    }

    /// Waits, at most 30 s, until `done` holds.
    async fn until(what: &str, mut done: impl FnMut() -> bool) {
        let give_up = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(
                Instant::now() < give_up,
                "gave up after 30 s waiting for {what}"
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    /// Starts a task per id waiting for it with `wait_for`, and returns once
    /// every one of them has read its instance.
    async fn idle_waits(
        b: &SqliteBackend,
        ids: &[String],
        wait_for: WaitFor,
    ) -> Vec<tokio::task::JoinHandle<Result<InstanceMetadata, BackendError>>> {
        let before = b.shared.watchers.settled();
        let waits = ids
            .iter()
            .map(|id| {
                let (b, id) = (b.clone(), id.clone());
                tokio::spawn(async move {
                    b.wait_for_instance(&id, wait_for, Duration::from_secs(3600))
                        .await
                })
            })
            .collect();
        until("every waiter's first read", || {
            b.shared.watchers.settled() == before + ids.len()
        })
        .await;
        waits
    }

    #[tokio::test]
    async fn idle_waiters_cost_one_check_per_interval_not_a_read_each() {
        let poll = Duration::from_millis(20);
        let b = SqliteBackend::in_memory_with(SqliteOptions {
            poll_interval: poll,
            ..SqliteOptions::default()
        })
        .unwrap();
        let ids: Vec<String> = (0..1000).map(|i| format!("idle{i}")).collect();
        for id in &ids {
            b.create_instance(request(id)).await.unwrap();
        }
        let waits = idle_waits(&b, &ids, WaitFor::Completion).await;
        assert_eq!(watched(&b), 1000);
        // The first check with waiters reads their statuses (it has no
        // version to compare with): start counting once one has finished
        // (two have started, and checks run one after another).
        let first = b.shared.watchers.counts().0;
        until("a first check of the waiters", || {
            b.shared.watchers.counts().0 >= first + 2
        })
        .await;

        let jobs = b.shared.writer.jobs();
        let (checks, reads) = b.shared.watchers.counts();
        let t0 = Instant::now();
        until("five more checks for changes by other connections", || {
            b.shared.watchers.counts().0 >= checks + 5
        })
        .await;
        let (checks_now, reads_now) = b.shared.watchers.counts();
        let intervals = (t0.elapsed().as_secs_f64() / poll.as_secs_f64()).ceil() as u64;
        let jobs = b.shared.writer.jobs() - jobs;
        assert_eq!(
            jobs, 0,
            "1,000 idle waiters ran {jobs} database jobs over {intervals} poll intervals"
        );
        assert!(
            checks_now - checks <= intervals + 1,
            "{} checks over {intervals} poll intervals: more than one per interval",
            checks_now - checks
        );
        assert_eq!(
            reads_now, reads,
            "statuses were read although no other connection committed"
        );

        // A wait still ends by its timeout.
        let short = b
            .wait_for_instance("idle0", WaitFor::Completion, 3 * poll)
            .await;
        assert!(
            matches!(short, Err(BackendError::Timeout(..))),
            "a wait past its timeout returned {short:?}"
        );
        for w in &waits {
            assert!(!w.is_finished(), "an idle wait ended");
            w.abort();
        }
    }

    #[tokio::test]
    async fn a_commit_by_another_connection_wakes_only_the_waiters_it_concerns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("durable.db");
        let options = SqliteOptions {
            poll_interval: Duration::from_millis(20),
            ..SqliteOptions::default()
        };
        let a = SqliteBackend::open_with(&path, options.clone()).unwrap();
        let other = SqliteBackend::open_with(&path, options).unwrap();
        let ids: Vec<String> = (0..100).map(|i| format!("i{i}")).collect();
        for id in &ids {
            a.create_instance(request(id)).await.unwrap();
        }
        let mut waits = idle_waits(&a, &ids, WaitFor::Start).await;
        let jobs = a.shared.writer.jobs();

        // Suspending a pending instance sets its status at once.
        other.suspend("i7", None).await.unwrap();
        let woken = waits.swap_remove(7);
        let meta = tokio::time::timeout(Duration::from_secs(30), woken)
            .await
            .expect("the other connection's commit did not wake the waiter within 30 s")
            .unwrap()
            .unwrap();
        assert_eq!(meta.status, OrchestrationStatus::Suspended);
        let jobs = a.shared.writer.jobs() - jobs;
        assert!(
            jobs <= 3,
            "one instance changed elsewhere, yet {jobs} reads followed (the other waiters were woken)"
        );
        for w in &waits {
            assert!(!w.is_finished(), "a wait on an unchanged instance ended");
            w.abort();
        }
    }
}
