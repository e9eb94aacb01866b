//! The checkpointer: copies the write-ahead log back into the database
//! file on a thread and connection of its own, so the connection thread
//! never stalls on it.
//!
//! In WAL mode every commit appends the pages it changed to the log; a
//! checkpoint writes them into the database file and (unless
//! `synchronous = OFF`, which durable never uses) flushes both files to
//! disk. SQLite runs one by itself in the committing connection once the
//! log passes `wal_autocheckpoint` pages, which put a copy of thousands of
//! pages and two disk flushes inside one of the backend's commits every few
//! dozen orchestrations. Here a second connection runs a passive checkpoint
//! (it never blocks writers or readers) shortly after commits, and the
//! backend's own connection keeps SQLite's automatic checkpoint only as a
//! backstop, at [`BACKSTOP_PAGES`], should this thread fall behind.
//!
//! Durability does not change: a checkpoint flushes the log before it
//! copies anything, whichever connection runs it, and with
//! `synchronous = FULL` every commit is flushed anyway.

use rusqlite::{Connection, OpenFlags};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// How long after commits the log is checkpointed (at most this often).
const EVERY: Duration = Duration::from_millis(100);

/// `wal_autocheckpoint` of the backend's own connection: the log size
/// (pages) past which it checkpoints by itself after all.
pub(crate) const BACKSTOP_PAGES: u32 = 16_384;

/// The checkpointer's thread; dropping it stops the thread and closes its
/// connection (before the backend's own connection closes).
pub(crate) struct Checkpointer {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Checkpointer {
    /// Starts checkpointing `path` whenever `activity` (a count the
    /// connection thread raises as it runs jobs) has moved. `None`, with a
    /// debug log, if the second connection cannot be opened: SQLite's own
    /// automatic checkpoint then does the work as before.
    pub(crate) fn spawn(
        path: &Path,
        options: &crate::SqliteOptions,
        activity: Arc<AtomicU64>,
    ) -> Option<Self> {
        let conn = match open(path, options) {
            Ok(conn) => conn,
            Err(e) => {
                tracing::debug!(error = %e, "no checkpointer thread; SQLite checkpoints as it commits");
                return None;
            }
        };
        let (stop, stopped) = mpsc::channel::<()>();
        let thread = std::thread::Builder::new()
            .name("durable-sqlite-checkpoint".into())
            .spawn(move || run(conn, stopped, &activity))
            .ok()?;
        Some(Checkpointer {
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn open(path: &Path, options: &crate::SqliteOptions) -> rusqlite::Result<Connection> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    // The checkpoint flushes as this connection's setting says.
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {};",
        options.synchronous.pragma()
    ))?;
    Ok(conn)
}

fn run(conn: Connection, stopped: mpsc::Receiver<()>, activity: &AtomicU64) {
    let mut seen = activity.load(Ordering::Relaxed);
    loop {
        match stopped.recv_timeout(EVERY) {
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            // Stopped (the sender is dropped, or sent).
            _ => return,
        }
        let now = activity.load(Ordering::Relaxed);
        if now == seen {
            continue;
        }
        seen = now;
        // Passive: copies what no reader still needs, waits for nobody;
        // "busy" (another connection is checkpointing) is simply skipped.
        let result = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()));
        if let Err(e) = result {
            tracing::debug!(error = %e, "a background checkpoint failed; retrying after the next commits");
        }
    }
}
