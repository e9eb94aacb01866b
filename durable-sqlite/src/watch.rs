//! Clients waiting on instances, and how they hear of changes.
//!
//! A commit through this backend wakes the waiters of the instances it
//! touched at once (`SqliteBackend::wake`). Commits by other connections to
//! the same file (other processes, or another backend value opened on the
//! same path) are found by [`Watchers::check`], which the connection thread
//! runs once per poll interval while anybody waits: one `PRAGMA
//! data_version` (it changes only when another connection committed), and
//! only then one read of the statuses of the watched instances. A waiter is
//! woken when the status it last saw is no longer the one in the file, so
//! an idle waiter costs no database work at all while nothing changes.

use crate::error::{SqlResult, Text};
use crate::lock;
use durable_runtime::BackendError;
use rusqlite::Connection;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::Notify;

/// The waiters of one instance.
struct Watched {
    notify: Arc<Notify>,
    /// The status each waiter (by its number) last read; `None` until its
    /// first read.
    seen: HashMap<u64, Option<String>>,
}

/// Every waiter of a backend, by instance.
#[derive(Default)]
pub(crate) struct Watchers {
    map: Mutex<HashMap<String, Watched>>,
    next_waiter: AtomicU64,
    /// `PRAGMA data_version` at the last check; `None` before the first.
    data_version: Mutex<Option<i64>>,
    /// Checks that ran a statement (for tests).
    checks: AtomicU64,
    /// Checks that read the watched instances' statuses (for tests).
    status_reads: AtomicU64,
}

impl Watchers {
    /// Records the status (as stored in the file) that `waiter` of `id`
    /// just read. Called on the connection thread, in the job that read it,
    /// so no check runs between the read and this.
    pub(crate) fn saw(&self, id: &str, waiter: u64, status: String) {
        // Only for a waiter still there: the read of a wait dropped
        // meanwhile must not bring its entry back (it would never leave).
        if let Some(seen) = lock(&self.map)
            .get_mut(id)
            .and_then(|w| w.seen.get_mut(&waiter))
        {
            *seen = Some(status);
        }
    }

    /// Wakes the waiters of `id`, if any.
    pub(crate) fn wake(&self, id: &str) {
        if let Some(w) = lock(&self.map).get(id) {
            w.notify.notify_waiters();
        }
    }

    /// Instances with at least one waiter.
    #[cfg(test)]
    pub(crate) fn watched(&self) -> usize {
        lock(&self.map).len()
    }

    /// Waiters whose first read has returned.
    #[cfg(test)]
    pub(crate) fn settled(&self) -> usize {
        lock(&self.map)
            .values()
            .map(|w| w.seen.values().filter(|s| s.is_some()).count())
            .sum()
    }

    /// Checks that ran a statement, and of those, checks that read statuses.
    #[cfg(test)]
    pub(crate) fn counts(&self) -> (u64, u64) {
        (
            self.checks.load(Ordering::Relaxed),
            self.status_reads.load(Ordering::Relaxed),
        )
    }

    /// Looks for commits by other connections and wakes the waiters whose
    /// instance they changed. Runs on the connection thread, between jobs.
    /// Does nothing while nobody waits.
    pub(crate) fn check(&self, conn: &Connection) {
        if lock(&self.map).is_empty() {
            return;
        }
        self.checks.fetch_add(1, Ordering::Relaxed);
        let version = match conn
            .query_row("PRAGMA data_version", [], |r| r.get::<_, i64>(0))
            .db()
        {
            Ok(v) => v,
            Err(e) => return self.wake_all_after(&e),
        };
        let previous = lock(&self.data_version).replace(version);
        if previous == Some(version) {
            return;
        }
        // Waiters that join after this list was taken read the file after
        // `version`; a later commit changes the version again.
        let ids: Vec<String> = lock(&self.map).keys().cloned().collect();
        self.status_reads.fetch_add(1, Ordering::Relaxed);
        let statuses = match statuses(conn, &ids) {
            Ok(s) => s,
            Err(e) => {
                *lock(&self.data_version) = None;
                return self.wake_all_after(&e);
            }
        };
        let map = lock(&self.map);
        for id in &ids {
            let Some(w) = map.get(id) else { continue };
            // A waiter that has not read yet will read what is there now.
            let now = statuses.get(id);
            if w.seen.values().flatten().any(|s| Some(s) != now) {
                w.notify.notify_waiters();
            }
        }
    }

    /// A check failed: every waiter reads for itself (and meets the error,
    /// if it persists).
    fn wake_all_after(&self, error: &BackendError) {
        tracing::warn!(%error, "could not look for changes by other processes; waking every waiter");
        for w in lock(&self.map).values() {
            w.notify.notify_waiters();
        }
    }
}

/// The status column of each of `ids` that exists (one statement, the ids
/// passed as one JSON array), or `set aside` for an instance set aside
/// because a row cannot be read (its waiters then read the reason). A
/// status that is not text is compared as read, so one damaged row does
/// not fail the check for every waiter.
fn statuses(conn: &Connection, ids: &[String]) -> Result<HashMap<String, String>, BackendError> {
    let ids = serde_json::to_string(ids).map_err(|e| BackendError::Other(e.to_string()))?;
    let mut stmt = conn
        .prepare_cached(
            "SELECT i.instance_id,
                    CASE WHEN i.lease_token = ?2 THEN 'set aside' ELSE i.status END
             FROM json_each(?1) AS w
             JOIN instances AS i ON i.instance_id = w.value",
        )
        .db()?;
    let rows = stmt
        .query_map(rusqlite::params![ids, crate::store::SET_ASIDE], |r| {
            Ok((r.get::<_, Text>(0)?, r.get::<_, Text>(1)?))
        })
        .db()?;
    let lossy = |t: Text| t.text().unwrap_or_else(|e| e.lossy);
    rows.map(|r| r.db().map(|(id, status)| (lossy(id), lossy(status))))
        .collect()
}

/// One waiter's place among the watchers of its instance. It leaves
/// however the wait ends: finished, or its future dropped (a `timeout`, a
/// `select!`); the instance's entry goes with its last waiter.
pub(crate) struct Watch<'a> {
    watchers: &'a Watchers,
    instance_id: &'a str,
    waiter: u64,
    notify: Arc<Notify>,
}

impl<'a> Watch<'a> {
    pub(crate) fn new(watchers: &'a Watchers, instance_id: &'a str) -> Self {
        let waiter = watchers.next_waiter.fetch_add(1, Ordering::Relaxed);
        let mut map = lock(&watchers.map);
        let entry = map
            .entry(instance_id.to_string())
            .or_insert_with(|| Watched {
                notify: Arc::new(Notify::new()),
                seen: HashMap::new(),
            });
        entry.seen.insert(waiter, None);
        let notify = entry.notify.clone();
        drop(map);
        Watch {
            watchers,
            instance_id,
            waiter,
            notify,
        }
    }

    pub(crate) fn notify(&self) -> &Notify {
        &self.notify
    }

    /// This waiter's number, for [`Watchers::saw`].
    pub(crate) fn waiter(&self) -> u64 {
        self.waiter
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        let mut map = lock(&self.watchers.map);
        if let Some(w) = map.get_mut(self.instance_id) {
            w.seen.remove(&self.waiter);
            if w.seen.is_empty() {
                map.remove(self.instance_id);
            }
        }
    }
}
