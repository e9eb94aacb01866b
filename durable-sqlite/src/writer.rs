//! The connection thread: one SQLite connection, owned by one OS thread,
//! runs every operation of a backend handle off the async threads.
//!
//! Writes are group-committed: the thread takes every write job queued at
//! that moment, runs each inside its own savepoint of one `BEGIN IMMEDIATE`
//! transaction and commits once. A job that fails rolls back to its
//! savepoint only; a failed commit fails every job of the batch. Callers
//! hear about their result only after the commit, so an `Ok` is durable.

use crate::error::db_err;
use durable_runtime::BackendError;
use rusqlite::Connection;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

/// Most jobs applied in one transaction.
const MAX_BATCH: usize = 256;

/// A job that has run and waits for its transaction's fate.
trait Ran: Send {
    fn failed(&self) -> bool;
    fn finish(self: Box<Self>, commit: Result<(), &rusqlite::Error>);
}

/// A queued job.
trait Job: Send {
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Ran>;
    fn fail(self: Box<Self>, error: &rusqlite::Error);
}

/// Runs on the connection thread once a job's writes are committed, whether
/// or not its caller still waits for the result.
pub(crate) type AfterCommit<T> = Box<dyn FnOnce(&T) + Send>;

struct Typed<T, F> {
    f: F,
    tx: oneshot::Sender<Result<T, BackendError>>,
    after: Option<AfterCommit<T>>,
}

struct Result_<T> {
    result: Result<T, BackendError>,
    tx: oneshot::Sender<Result<T, BackendError>>,
    after: Option<AfterCommit<T>>,
}

impl<T: Send> Ran for Result_<T> {
    fn failed(&self) -> bool {
        self.result.is_err()
    }

    fn finish(self: Box<Self>, commit: Result<(), &rusqlite::Error>) {
        let out = match commit {
            Ok(()) => self.result,
            Err(e) => Err(db_err(e)),
        };
        if let (Ok(value), Some(after)) = (&out, self.after) {
            after(value);
        }
        // The caller may have given up waiting; nothing to do then.
        let _ = self.tx.send(out);
    }
}

impl<T, F> Job for Typed<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Result<T, BackendError> + Send + 'static,
{
    fn run(self: Box<Self>, conn: &Connection) -> Box<dyn Ran> {
        let f = self.f;
        let result = std::panic::catch_unwind(AssertUnwindSafe(|| f(conn))).unwrap_or_else(|_| {
            Err(BackendError::Other(
                "internal error: a storage operation panicked; it was rolled back".into(),
            ))
        });
        Box::new(Result_ {
            result,
            tx: self.tx,
            after: self.after,
        })
    }

    fn fail(self: Box<Self>, error: &rusqlite::Error) {
        let _ = self.tx.send(Err(db_err(error)));
    }
}

struct Msg {
    write: bool,
    job: Box<dyn Job>,
}

/// The handle to a connection thread. Dropping it runs what is queued,
/// closes the connection and waits for that, so the file is complete and
/// free once the backend is gone.
pub(crate) struct Writer {
    tx: mpsc::Sender<Msg>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Jobs the thread has run (for tests).
    #[cfg_attr(not(test), allow(dead_code))]
    jobs: Arc<AtomicU64>,
}

/// Work the connection thread does by itself, between jobs, at most once
/// per `every` (and at least that often while it is otherwise idle).
pub(crate) struct Periodic {
    pub(crate) every: Duration,
    pub(crate) run: Box<dyn FnMut(&Connection) + Send>,
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the channel ends the thread's loop.
        let (closed, _) = mpsc::channel();
        drop(std::mem::replace(&mut self.tx, closed));
        if let Some(thread) = self.thread.take() {
            if thread.thread().id() != std::thread::current().id() {
                let _ = thread.join();
            }
        }
    }
}

impl Writer {
    /// Moves `conn` onto a new thread named `name`. `on_rollback` runs on
    /// that thread whenever a transaction is rolled back as a whole, so
    /// in-memory state derived from its writes can be discarded. `jobs`
    /// counts the jobs run (the checkpointer watches it).
    pub(crate) fn spawn(
        conn: Connection,
        name: String,
        on_rollback: impl Fn() + Send + 'static,
        periodic: Periodic,
        jobs: Arc<AtomicU64>,
    ) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Msg>();
        let counted = jobs.clone();
        let thread = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(conn, rx, &on_rollback, periodic, &counted))?;
        Ok(Writer {
            tx,
            thread: Some(thread),
            jobs,
        })
    }

    /// Jobs run so far.
    #[cfg(test)]
    pub(crate) fn jobs(&self) -> u64 {
        self.jobs.load(Ordering::Relaxed)
    }

    /// Runs `f` in a write transaction (batched with other writes).
    /// Runs `f` in a transaction, then `after` on the connection thread once
    /// the writes are committed, even if the caller stopped waiting.
    pub(crate) async fn write_then<T, F>(
        &self,
        f: F,
        after: AfterCommit<T>,
    ) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, BackendError> + Send + 'static,
    {
        self.submit(true, f, Some(after)).await
    }

    /// Runs `f` outside any explicit transaction (a consistent snapshot per
    /// statement; use [`write`](Self::write) when several reads must agree).
    pub(crate) async fn read<T, F>(&self, f: F) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, BackendError> + Send + 'static,
    {
        self.submit(false, f, None).await
    }

    /// Queues a write nobody waits for.
    pub(crate) fn detach<F>(&self, f: F)
    where
        F: FnOnce(&Connection) -> Result<(), BackendError> + Send + 'static,
    {
        let (tx, _rx) = oneshot::channel();
        let _ = self.tx.send(Msg {
            write: true,
            job: Box::new(Typed { f, tx, after: None }),
        });
    }

    async fn submit<T, F>(
        &self,
        write: bool,
        f: F,
        after: Option<AfterCommit<T>>,
    ) -> Result<T, BackendError>
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Result<T, BackendError> + Send + 'static,
    {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(Msg {
                write,
                job: Box::new(Typed { f, tx, after }),
            })
            .map_err(|_| BackendError::Shutdown)?;
        rx.await.map_err(|_| BackendError::Shutdown)?
    }
}

fn run(
    conn: Connection,
    rx: mpsc::Receiver<Msg>,
    on_rollback: &dyn Fn(),
    mut periodic: Periodic,
    jobs: &AtomicU64,
) {
    let every = periodic.every.max(Duration::from_millis(1));
    let mut due = Instant::now() + every;
    loop {
        match rx.recv_timeout(due.saturating_duration_since(Instant::now())) {
            Ok(first) if !first.write => {
                jobs.fetch_add(1, Ordering::Relaxed);
                first.job.run(&conn).finish(Ok(()));
            }
            Ok(first) => {
                let mut batch = vec![first.job];
                while batch.len() < MAX_BATCH {
                    match rx.try_recv() {
                        Ok(m) => batch.push(m.job),
                        Err(_) => break,
                    }
                }
                jobs.fetch_add(batch.len() as u64, Ordering::Relaxed);
                if !run_batch(&conn, batch) {
                    on_rollback();
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
        }
        if Instant::now() >= due {
            (periodic.run)(&conn);
            due = Instant::now() + every;
        }
    }
}

/// Runs transaction-control statements (`sql`, `;`-separated, no
/// parameters) through the statement cache: they run several times per
/// batch, and `execute_batch` would parse them every time.
fn exec(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    for statement in sql.split(';').map(str::trim).filter(|s| !s.is_empty()) {
        conn.prepare_cached(statement)?.execute([])?;
    }
    Ok(())
}

/// Runs a batch in one transaction; false if it was rolled back as a whole.
fn run_batch(conn: &Connection, batch: Vec<Box<dyn Job>>) -> bool {
    if let Err(e) = exec(conn, "BEGIN IMMEDIATE") {
        for job in batch {
            job.fail(&e);
        }
        return true;
    }
    // A job alone in its transaction needs no savepoint: if it fails, the
    // whole transaction (only its own writes) is rolled back. Savepoints are
    // not free: every page a job changes is copied to the statement journal.
    let alone = batch.len() == 1;
    let mut done: Vec<Box<dyn Ran>> = Vec::with_capacity(batch.len());
    let mut jobs = batch.into_iter();
    while let Some(job) = jobs.next() {
        if !alone {
            if let Err(e) = exec(conn, "SAVEPOINT job") {
                abort(conn, done, jobs, Some(job), &e);
                return false;
            }
        }
        let ran = job.run(conn);
        if conn.is_autocommit() {
            // SQLite rolled the whole transaction back (disk full, I/O
            // error): nothing of this batch was applied.
            // The job that failed reports its own error; the others say why
            // they were not applied.
            let e = rusqlite::Error::SqliteFailure(
                rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                Some(
                    "the transaction was rolled back because another operation in it failed \
                     (disk full or I/O error); nothing was applied, retry"
                        .into(),
                ),
            );
            if ran.failed() {
                ran.finish(Ok(()));
            } else {
                done.push(ran);
            }
            abort(conn, done, jobs, None, &e);
            return false;
        }
        if alone && ran.failed() {
            // Rolled back like a failed job's savepoint: nothing else was
            // in the transaction.
            let _ = exec(conn, "ROLLBACK");
            ran.finish(Ok(()));
            return true;
        }
        let end = match (alone, ran.failed()) {
            (true, _) => "",
            (false, true) => "ROLLBACK TO job; RELEASE job",
            (false, false) => "RELEASE job",
        };
        if let Err(e) = exec(conn, end) {
            done.push(ran);
            abort(conn, done, jobs, None, &e);
            return false;
        }
        done.push(ran);
    }
    match exec(conn, "COMMIT") {
        Ok(()) => {
            for r in done {
                r.finish(Ok(()));
            }
            true
        }
        Err(e) => {
            let _ = exec(conn, "ROLLBACK");
            for r in done {
                r.finish(Err(&e));
            }
            false
        }
    }
}

fn abort(
    conn: &Connection,
    done: Vec<Box<dyn Ran>>,
    rest: impl Iterator<Item = Box<dyn Job>>,
    current: Option<Box<dyn Job>>,
    e: &rusqlite::Error,
) {
    if !conn.is_autocommit() {
        let _ = exec(conn, "ROLLBACK");
    }
    for r in done {
        r.finish(Err(e));
    }
    for j in current.into_iter().chain(rest) {
        j.fail(e);
    }
}
