//! The schema and its migrations, and the checks made before touching a file.
//!
//! `PRAGMA application_id` marks the file as durable's; `PRAGMA
//! user_version` is the schema version. Migrations run at open, in one
//! `BEGIN IMMEDIATE` transaction, so processes opening the same file at once
//! agree on who migrates.

use crate::error::OpenError;
use rusqlite::{Connection, ErrorCode};
use std::path::Path;

/// Marks a durable database ("durb").
pub(crate) const APPLICATION_ID: i64 = 0x6475_7262;

/// One entry per schema version; entry `i` takes version `i` to `i + 1`.
const MIGRATIONS: &[&str] = &[
    // Version 1.
    //
    // Times are microseconds since the Unix epoch (UTC). `ready_at` is when
    // an instance next needs a worker: its earliest deliverable inbox
    // message, or, while leased, when the lease expires; it is NULL when
    // there is nothing to do. Activities use `visible_at` the same way.
    r#"
    CREATE TABLE instances (
        instance_id    TEXT PRIMARY KEY,
        execution_id   TEXT NOT NULL,
        status         TEXT NOT NULL,
        created_at     INTEGER NOT NULL,
        meta           TEXT NOT NULL,
        input          TEXT,
        output         TEXT,
        custom_status  TEXT,
        history_len    INTEGER NOT NULL DEFAULT 0,
        ready_at       INTEGER,
        lease_token    INTEGER,
        lease_expires  INTEGER
    );
    CREATE INDEX instances_ready ON instances (ready_at) WHERE ready_at IS NOT NULL;
    CREATE INDEX instances_status ON instances (status, created_at);

    CREATE TABLE history (
        instance_id   TEXT NOT NULL,
        seq           INTEGER NOT NULL,
        execution_id  TEXT NOT NULL,
        event_type    TEXT NOT NULL,
        event         TEXT NOT NULL,
        PRIMARY KEY (instance_id, seq)
    ) WITHOUT ROWID;

    CREATE TABLE inbox (
        seq           INTEGER PRIMARY KEY,
        instance_id   TEXT NOT NULL,
        execution_id  TEXT,
        visible_at    INTEGER NOT NULL,
        checked       INTEGER NOT NULL,
        lease_token   INTEGER,
        event         TEXT NOT NULL
    );
    CREATE INDEX inbox_instance ON inbox (instance_id, visible_at, seq);

    CREATE TABLE activities (
        id            INTEGER PRIMARY KEY,
        instance_id   TEXT NOT NULL,
        execution_id  TEXT NOT NULL,
        task_id       INTEGER NOT NULL,
        name          TEXT NOT NULL,
        version       TEXT,
        input         TEXT,
        visible_at    INTEGER NOT NULL,
        lease_token   INTEGER
    );
    CREATE INDEX activities_visible ON activities (visible_at, id);
    CREATE INDEX activities_instance ON activities (instance_id);
    "#,
    // Version 2: process identity in leases.
    //
    // Every backend that opens the file registers a row in `processes`
    // (a random id, its OS process id, a heartbeat) and holds an OS lock on
    // a lock file named after that id; `lease_owner` says which process
    // holds a lease. A process whose lock file can be locked by someone
    // else has died, so its leases are released at once instead of when
    // they expire (see `crate::process`).
    r#"
    CREATE TABLE processes (
        id            INTEGER PRIMARY KEY,
        pid           INTEGER NOT NULL,
        started_at    INTEGER NOT NULL,
        heartbeat_at  INTEGER NOT NULL
    );
    ALTER TABLE instances ADD COLUMN lease_owner INTEGER;
    ALTER TABLE activities ADD COLUMN lease_owner INTEGER;
    CREATE INDEX instances_owner ON instances (lease_owner) WHERE lease_owner IS NOT NULL;
    CREATE INDEX activities_owner ON activities (lease_owner) WHERE lease_owner IS NOT NULL;
    "#,
    // Version 3: an activity's tags (a JSON object of strings; NULL when it
    // has none), which carry a retried call's attempt number.
    r#"
    ALTER TABLE activities ADD COLUMN tags TEXT;
    "#,
    // Version 4: no indexes on `lease_owner`. Every lease and every release
    // changed them (two index writes per episode and per activity), for
    // the sake of queries that run only when a process closes or is found
    // dead, which now scan the tables instead.
    r#"
    DROP INDEX IF EXISTS instances_owner;
    DROP INDEX IF EXISTS activities_owner;
    "#,
];

/// The schema version this build writes.
pub(crate) const SCHEMA_VERSION: i64 = MIGRATIONS.len() as i64;

/// Refuses, without writing, a file that is not an SQLite database.
pub(crate) fn check_header(path: &Path) -> Result<(), OpenError> {
    use std::io::Read;
    let io = |source| OpenError::Io {
        path: path.to_path_buf(),
        source,
    };
    let meta = match std::fs::metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io(e)),
    };
    if meta.is_dir() {
        return Err(io(std::io::Error::other("it is a directory")));
    }
    if meta.len() == 0 {
        // SQLite treats an empty file as an empty database.
        return Ok(());
    }
    let mut header = [0u8; 16];
    let mut f = std::fs::File::open(path).map_err(io)?;
    match f.read_exact(&mut header) {
        Ok(()) if &header == b"SQLite format 3\0" => Ok(()),
        Ok(()) => Err(OpenError::NotADatabase {
            path: path.to_path_buf(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => Err(OpenError::NotADatabase {
            path: path.to_path_buf(),
        }),
        Err(e) => Err(io(e)),
    }
}

fn classify(path: &Path, e: rusqlite::Error) -> OpenError {
    let path = path.to_path_buf();
    match e.sqlite_error_code() {
        Some(ErrorCode::NotADatabase) | Some(ErrorCode::DatabaseCorrupt) => OpenError::Corrupt {
            path,
            detail: e.to_string(),
        },
        Some(ErrorCode::ReadOnly) => OpenError::ReadOnly { path },
        Some(ErrorCode::DatabaseBusy) | Some(ErrorCode::DatabaseLocked) => OpenError::Busy { path },
        _ => OpenError::Sqlite { path, source: e },
    }
}

/// Reads the file's identity and refuses what is not ours or too new,
/// before anything is written.
pub(crate) fn check_identity(conn: &Connection, path: &Path) -> Result<(), OpenError> {
    let read = || -> rusqlite::Result<(i64, i64, i64)> {
        let app: i64 = conn.query_row("PRAGMA application_id", [], |r| r.get(0))?;
        let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        let tables: i64 = conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| r.get(0))?;
        Ok((app, version, tables))
    };
    // One snapshot for the three reads: another process may be creating
    // the schema right now, and its tables without its marker would look
    // like another application's file.
    let snapshot = conn.is_autocommit();
    let read_all = || -> rusqlite::Result<(i64, i64, i64)> {
        if !snapshot {
            return read();
        }
        conn.execute_batch("BEGIN DEFERRED")?;
        let out = read();
        let _ = conn.execute_batch("COMMIT");
        out
    };
    let (app, version, tables) = read_all().map_err(|e| classify(path, e))?;
    if app != 0 && app != APPLICATION_ID {
        return Err(OpenError::NotDurable {
            path: path.to_path_buf(),
            detail: format!("its application id is {app:#x}"),
        });
    }
    if app == 0 && tables > 0 {
        return Err(OpenError::NotDurable {
            path: path.to_path_buf(),
            detail: format!("it already holds {tables} tables or indexes and no durable marker"),
        });
    }
    if version > SCHEMA_VERSION {
        return Err(OpenError::NewerSchema {
            path: path.to_path_buf(),
            found: version,
            supported: SCHEMA_VERSION,
        });
    }
    Ok(())
}

/// Sets the connection up and applies pending migrations.
pub(crate) fn prepare(
    conn: &Connection,
    path: &Path,
    options: &crate::SqliteOptions,
    file: bool,
) -> Result<(), OpenError> {
    let err = |e| classify(path, e);
    conn.busy_timeout(options.busy_timeout).map_err(err)?;
    conn.set_prepared_statement_cache_capacity(128);
    if file {
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(err)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(OpenError::Sqlite {
                path: path.to_path_buf(),
                source: rusqlite::Error::InvalidParameterName(format!(
                    "the file system refused write-ahead logging (journal mode is {mode})"
                )),
            });
        }
    }
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {};",
        options.synchronous.pragma()
    ))
    .map_err(err)?;
    if let Some(max) = options.max_database_bytes {
        let page: i64 = conn
            .query_row("PRAGMA page_size", [], |r| r.get(0))
            .map_err(err)?;
        let pages = (max / page.max(512) as u64).max(1);
        conn.query_row(&format!("PRAGMA max_page_count = {pages}"), [], |_| Ok(()))
            .map_err(err)?;
    }
    conn.execute_batch("BEGIN IMMEDIATE").map_err(err)?;
    let migrate = || -> Result<(), OpenError> {
        // Read again under the write lock: another process may have
        // migrated since the first look.
        check_identity(conn, path)?;
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(err)?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            conn.execute_batch(sql).map_err(err)?;
            conn.execute_batch(&format!("PRAGMA user_version = {}", i + 1))
                .map_err(err)?;
        }
        if version < SCHEMA_VERSION {
            conn.execute_batch(&format!("PRAGMA application_id = {APPLICATION_ID}"))
                .map_err(err)?;
        }
        // Instances set aside because a row could not be read get another
        // chance at every open: the row may have been repaired, or this
        // build may read what an older one could not.
        let retries = [
            (
                "instances",
                "UPDATE instances SET lease_token = NULL, lease_expires = NULL,
                        ready_at = (SELECT MIN(visible_at) FROM inbox
                                    WHERE inbox.instance_id = instances.instance_id)
                 WHERE lease_token = ?1",
            ),
            (
                "activities",
                "UPDATE activities SET lease_token = NULL, lease_owner = NULL,
                        visible_at = CAST(strftime('%s', 'now') AS INTEGER) * 1000000
                 WHERE lease_token = ?1",
            ),
        ];
        for (what, sql) in retries {
            let retried = conn.execute(sql, [crate::store::SET_ASIDE]).map_err(err)?;
            if retried > 0 {
                tracing::info!(
                    retried,
                    "retrying {what} set aside because a row could not be read"
                );
            }
        }
        Ok(())
    };
    match migrate() {
        Ok(()) => conn.execute_batch("COMMIT").map_err(err),
        Err(e) => {
            let _ = conn.execute_batch("ROLLBACK");
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file left by a build of schema version 3 opens, is migrated, and
    /// keeps its rows and leases.
    #[test]
    fn a_version_3_file_is_migrated_and_keeps_its_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v3.db");
        {
            let conn = Connection::open(&path).unwrap();
            for sql in &MIGRATIONS[..3] {
                conn.execute_batch(sql).unwrap();
            }
            conn.execute_batch(&format!(
                "PRAGMA user_version = 3; PRAGMA application_id = {APPLICATION_ID};
                 INSERT INTO instances (instance_id, execution_id, status, created_at, meta,
                                        lease_token, lease_expires, lease_owner)
                 VALUES ('i', 'e', 'Running', 0, '{{}}', 7, 9, 42);"
            ))
            .unwrap();
        }
        let conn = Connection::open(&path).unwrap();
        prepare(&conn, &path, &crate::SqliteOptions::default(), true).unwrap();
        let version: i64 = conn
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        let owner_indexes: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE name LIKE '%_owner'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(owner_indexes, 0);
        let lease: (i64, i64) = conn
            .query_row(
                "SELECT lease_token, lease_owner FROM instances WHERE instance_id = 'i'",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .unwrap();
        assert_eq!(lease, (7, 42));
    }
}
