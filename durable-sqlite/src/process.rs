//! Process identity in leases, and taking back at once the work of a
//! process that died.
//!
//! Every backend that opens a file registers itself: a row in `processes`
//! (a random id, the OS process id, a heartbeat the connection thread
//! refreshes) and an exclusive OS lock (`flock`) on a lock file named after
//! that id, in the directory `<database>.processes` next to the file. Every
//! lease it takes records that id as `lease_owner`.
//!
//! The lock is the proof of life: the operating system releases it when
//! the process ends, however it ends (`kill -9` included), and never while
//! it lives. So when another backend can take the lock of a registered
//! process, that process is gone, and its leases are expired on the spot
//! (their work is delivered again at once) instead of when they run out. A
//! live process's lock cannot be taken, even by another backend in the same
//! process (the lock belongs to the open file), so two live processes never
//! take each other's work this way; their leases only ever expire by time.
//!
//! Where there is no lock file (it could not be created, or the platform
//! has no `flock`), a heartbeat older than the lease duration counts as
//! death: such a process's leases have run out by then anyway.
//!
//! Every backend looks for dead processes when it opens the file (so a
//! restarted process takes back what its previous incarnation held without
//! waiting) and at every heartbeat.

use crate::store::micros;
use rusqlite::{params, Connection};
use std::fs::File;
use std::path::{Path, PathBuf};

/// This backend's registration: its id and, while it lives, its lock.
#[derive(Debug)]
pub(crate) struct Registration {
    pub(crate) id: i64,
    pub(crate) pid: u32,
    started_at: i64,
    dir: Option<PathBuf>,
    _lock: Option<LockFile>,
}

/// A held lock file; dropping it removes the file, then releases the lock.
#[derive(Debug)]
struct LockFile {
    path: PathBuf,
    _file: File,
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The directory of the lock files of the processes using `db`.
pub(crate) fn lock_dir(db: &Path) -> PathBuf {
    let mut name = db.file_name().unwrap_or_default().to_os_string();
    name.push(".processes");
    db.with_file_name(name)
}

fn lock_path(dir: &Path, id: i64) -> PathBuf {
    dir.join(format!("{id}.lock"))
}

/// Takes the exclusive lock on `file` without waiting: `Some(true)` if it
/// was taken, `Some(false)` if someone holds it, `None` if locks cannot be
/// taken here.
#[cfg(unix)]
fn try_lock(file: &File) -> Option<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: `flock` only reads the descriptor, which `file` keeps open.
    let r = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if r == 0 {
        return Some(true);
    }
    match std::io::Error::last_os_error().raw_os_error() {
        Some(libc::EWOULDBLOCK) => Some(false),
        _ => None,
    }
}

#[cfg(not(unix))]
fn try_lock(_file: &File) -> Option<bool> {
    None
}

/// Creates and locks this process's lock file; `None` (with a warning) if
/// that fails: the backend then works without the proof of life.
fn create_lock(dir: &Path, id: i64) -> Option<LockFile> {
    let path = lock_path(dir, id);
    let made = std::fs::create_dir_all(dir).and_then(|()| {
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
    });
    match made.map(|f| (try_lock(&f), f)) {
        Ok((Some(true), file)) => Some(LockFile { path, _file: file }),
        Ok((_, file)) => {
            drop(file);
            let _ = std::fs::remove_file(&path);
            tracing::warn!(path = %path.display(), "cannot lock the process lock file; work a crashed process held comes back when its leases expire");
            None
        }
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot create the process lock file; work a crashed process held comes back when its leases expire");
            None
        }
    }
}

/// Registers this backend: takes its lock first, then writes its row (so
/// a registered process always holds its lock while it lives).
pub(crate) fn register(conn: &Connection, db: Option<&Path>) -> rusqlite::Result<Registration> {
    let id = crate::store::new_token();
    let dir = db.map(lock_dir);
    let lock = dir.as_deref().and_then(|d| create_lock(d, id));
    let reg = Registration {
        id,
        pid: std::process::id(),
        started_at: micros(chrono::Utc::now()),
        dir: lock.as_ref().and(dir),
        _lock: lock,
    };
    insert(conn, &reg, reg.started_at)?;
    Ok(reg)
}

fn insert(conn: &Connection, reg: &Registration, now: i64) -> rusqlite::Result<()> {
    conn.prepare_cached(
        "INSERT OR REPLACE INTO processes (id, pid, started_at, heartbeat_at)
         VALUES (?1, ?2, ?3, ?4)",
    )?
    .execute(params![reg.id, reg.pid, reg.started_at, now])?;
    Ok(())
}

/// Removes this backend's row and expires the leases it still holds: it
/// is closing, so no one can complete them any more (its lock file goes
/// with the registration).
pub(crate) fn unregister(conn: &Connection, id: i64) -> rusqlite::Result<()> {
    expire_leases_of(conn, id, micros(chrono::Utc::now()))?;
    conn.prepare_cached("DELETE FROM processes WHERE id = ?1")?
        .execute([id])?;
    Ok(())
}

/// Makes every lease process `id` holds expire now; returns how many
/// orchestration and activity leases that was.
fn expire_leases_of(conn: &Connection, id: i64, now: i64) -> rusqlite::Result<(usize, usize)> {
    let orchestrations = conn
        .prepare_cached(
            "UPDATE instances SET lease_owner = NULL, lease_expires = ?2, ready_at = ?2
             WHERE lease_owner = ?1 AND lease_token >= 0",
        )?
        .execute(params![id, now])?;
    let activities = conn
        .prepare_cached(
            "UPDATE activities SET lease_owner = NULL, visible_at = MIN(visible_at, ?2)
             WHERE lease_owner = ?1 AND lease_token IS NOT NULL",
        )?
        .execute(params![id, now])?;
    Ok((orchestrations, activities))
}

/// Work taken back from dead processes.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Reaped {
    pub(crate) processes: usize,
    pub(crate) orchestrations: usize,
    pub(crate) activities: usize,
}

/// Refreshes this backend's heartbeat, then expires at once the leases of
/// every registered process that is dead (see the module docs). `stale`
/// (µs) is how old a heartbeat must be to count as death for a process
/// without a lock file. Runs inside the caller's transaction; returns the
/// locks of the dead, to be dropped (their files removed) after the commit.
fn heartbeat_and_reap(
    conn: &Connection,
    reg: &Registration,
    stale: i64,
) -> rusqlite::Result<(Reaped, Vec<LockFile>)> {
    let now = micros(chrono::Utc::now());
    let n = conn
        .prepare_cached("UPDATE processes SET heartbeat_at = ?2 WHERE id = ?1")?
        .execute(params![reg.id, now])?;
    if n == 0 {
        // Another backend found no heartbeat for a long while and removed
        // the row (this connection was blocked); register again.
        tracing::warn!(
            process = reg.id,
            "this process's registration was removed for lack of heartbeat; registering again"
        );
        insert(conn, reg, now)?;
    }
    let others: Vec<(i64, i64, i64)> = conn
        .prepare_cached("SELECT id, pid, heartbeat_at FROM processes WHERE id != ?1")?
        .query_map([reg.id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))?
        .collect::<rusqlite::Result<_>>()?;
    let mut reaped = Reaped::default();
    // Locks of dead processes, held until their rows are gone.
    let mut taken = Vec::new();
    for (id, pid, heartbeat_at) in others {
        let proof = reg.dir.as_deref().and_then(|dir| {
            let path = lock_path(dir, id);
            let file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .ok()?;
            let dead = try_lock(&file)?;
            if dead {
                taken.push(LockFile { path, _file: file });
            }
            Some(dead)
        });
        let silent_for = now.saturating_sub(heartbeat_at);
        let dead = match proof {
            Some(dead) => dead,
            None => silent_for > stale,
        };
        if !dead {
            continue;
        }
        let (orchestrations, activities) = expire_leases_of(conn, id, now)?;
        conn.prepare_cached("DELETE FROM processes WHERE id = ?1")?
            .execute([id])?;
        tracing::info!(
            process = id,
            pid,
            orchestrations,
            activities,
            silent_ms = silent_for / 1000,
            proof = if proof.is_some() {
                "its lock was free"
            } else {
                "no heartbeat"
            },
            "a process that used this file has ended; the work it held is delivered again now"
        );
        reaped.processes += 1;
        reaped.orchestrations += orchestrations;
        reaped.activities += activities;
    }
    Ok((reaped, taken))
}

/// Refreshes this backend's heartbeat and takes back the work of dead
/// processes (see the module docs), in a transaction of its own. `stale`
/// (µs) is how old a heartbeat must be to count as death for a process
/// without a lock file.
pub(crate) fn tick(conn: &Connection, reg: &Registration, stale: i64) -> rusqlite::Result<Reaped> {
    conn.execute_batch("BEGIN IMMEDIATE")?;
    match heartbeat_and_reap(conn, reg, stale) {
        Ok((r, taken)) => {
            conn.execute_batch("COMMIT")?;
            drop(taken);
            Ok(r)
        }
        Err(e) => {
            if !conn.is_autocommit() {
                let _ = conn.execute_batch("ROLLBACK");
            }
            Err(e)
        }
    }
}

/// How many live backends (in this process or others) have the database
/// at `db` open, as far as their lock files tell: each lock file in the
/// lock directory that cannot be locked belongs to a live backend. A
/// backend that could not create its lock file is not counted, nor is any
/// on a platform without `flock` (there the answer is always 0).
pub fn backends_using(db: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(lock_dir(db)) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| e.path().extension().is_some_and(|x| x == "lock"))
        .filter(|e| {
            std::fs::File::open(e.path())
                .ok()
                .and_then(|f| try_lock(&f))
                == Some(false)
        })
        .count()
}
