//! Opening what is not a sound durable database fails clearly, naming the
//! file, and leaves it untouched; a full database fails writes cleanly.

use durable_runtime::backend::{Backend, CreateInstanceRequest, IdReusePolicy};
use durable_sqlite::{OpenError, SqliteBackend, SqliteOptions, SCHEMA_VERSION};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn dir() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap_or_else(|e| panic!("creating a temporary directory failed: {e}"))
}

/// Opens `path` expecting failure; checks the message names the file and
/// that the file and its neighbours are exactly as before.
fn refused(path: &Path) -> OpenError {
    let before = std::fs::read(path).unwrap_or_else(|e| panic!("{e}"));
    let err = match SqliteBackend::open(path) {
        Ok(_) => panic!("{} was opened", path.display()),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    assert!(
        msg.contains("untouched") || msg.contains("upgrade"),
        "{msg}"
    );
    assert_eq!(
        std::fs::read(path).unwrap_or_default(),
        before,
        "the file changed"
    );
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    assert!(!wal.exists() || std::fs::metadata(&wal).map(|m| m.len()).unwrap_or(0) == 0);
    err
}

#[test]
fn a_file_that_is_not_sqlite_is_refused() {
    let d = dir();
    let path = d.path().join("notes.txt");
    std::fs::write(
        &path,
        "shopping list: eggs, milk, a durable execution engine\n".repeat(200),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let err = refused(&path);
    assert!(matches!(err, OpenError::NotADatabase { .. }), "{err:?}");
    assert!(err.to_string().contains("not an SQLite database"), "{err}");
}

#[test]
fn a_damaged_database_is_refused() {
    let d = dir();
    let path = d.path().join("damaged.db");
    let mut bytes = b"SQLite format 3\0".to_vec();
    bytes.extend((0..8192u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8));
    std::fs::write(&path, bytes).unwrap_or_else(|e| panic!("{e}"));
    let err = refused(&path);
    assert!(matches!(err, OpenError::Corrupt { .. }), "{err:?}");
}

#[test]
fn a_newer_schema_asks_to_upgrade() {
    let d = dir();
    let path = d.path().join("newer.db");
    drop(SqliteBackend::open(&path).unwrap_or_else(|e| panic!("{e}")));
    {
        let conn = rusqlite::Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        conn.execute_batch(&format!("PRAGMA user_version = {}", SCHEMA_VERSION + 1))
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let err = refused(&path);
    assert!(matches!(err, OpenError::NewerSchema { .. }), "{err:?}");
    assert!(err.to_string().contains("upgrade durable"), "{err}");
}

#[test]
fn another_applications_database_is_refused() {
    let d = dir();
    let path = d.path().join("app.db");
    {
        let conn = rusqlite::Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
        conn.execute_batch("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT)")
            .unwrap_or_else(|e| panic!("{e}"));
    }
    let err = refused(&path);
    assert!(matches!(err, OpenError::NotDurable { .. }), "{err:?}");
}

#[test]
fn a_database_reopens_with_its_data() {
    let d = dir();
    let path = d.path().join("reopen.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let b = SqliteBackend::open(&path).unwrap_or_else(|e| panic!("{e}"));
        b.create_instance(request("kept", 10))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
    rt.block_on(async {
        let b = SqliteBackend::open(&path).unwrap_or_else(|e| panic!("{e}"));
        let m = b
            .get_instance("kept", true)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        let expected = format!("\"{}\"", "x".repeat(10));
        assert_eq!(m.and_then(|m| m.input), Some(expected));
    });
}

/// Undoes `chattr +i` when the test ends, so the directory can be removed.
struct Immutable(std::path::PathBuf);

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

/// A read-only file is refused at open, naming it, and left byte for byte
/// as it was; once it is writable again it opens with its queued work,
/// which a worker then gets.
#[test]
fn a_read_only_file_is_refused_and_recovers_once_writable() {
    let d = dir();
    let path = d.path().join("ro.db");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let b = SqliteBackend::open(&path).unwrap_or_else(|e| panic!("{e}"));
        b.create_instance(request("queued", 10))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
    });
    let before = std::fs::read(&path).unwrap_or_else(|e| panic!("{e}"));
    let mut perms = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&path, perms).unwrap_or_else(|e| panic!("{e}"));
    let mut _guard = None;
    if std::fs::OpenOptions::new().write(true).open(&path).is_ok() {
        // Permission bits do not bind this user (root): make the file
        // immutable instead, which binds root too.
        let made = std::process::Command::new("chattr")
            .arg("+i")
            .arg(&path)
            .status()
            .is_ok_and(|s| s.success());
        _guard = Some(Immutable(path.clone()));
        assert!(
            made && std::fs::OpenOptions::new().write(true).open(&path).is_err(),
            "cannot make a read-only file for this test: this user ignores permission bits and \
             `chattr +i` failed; run the test as a normal user or on a file system with \
             immutable attributes"
        );
    }
    let err = refused(&path);
    assert!(matches!(err, OpenError::ReadOnly { .. }), "{err:?}");
    let message = err.to_string();
    assert!(
        message.contains("ro.db"),
        "the error names the file: {message}"
    );
    assert!(
        std::fs::read(&path).unwrap_or_else(|e| panic!("{e}")) == before,
        "the refused open changed the file"
    );

    drop(_guard);
    let mut perms = std::fs::metadata(&path)
        .unwrap_or_else(|e| panic!("{e}"))
        .permissions();
    #[allow(clippy::permissions_set_readonly_false)]
    perms.set_readonly(false);
    std::fs::set_permissions(&path, perms).unwrap_or_else(|e| panic!("{e}"));
    rt.block_on(async {
        let b = SqliteBackend::open(&path)
            .unwrap_or_else(|e| panic!("the file did not open once writable again: {e}"));
        let item = tokio::time::timeout(Duration::from_secs(30), b.next_orchestration_item())
            .await
            .unwrap_or_else(|_| panic!("the queued instance was not delivered within 30 s"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(item.instance_id, "queued");
    });
}

fn request(id: &str, input_len: usize) -> CreateInstanceRequest {
    CreateInstanceRequest {
        instance_id: id.to_string(),
        name: "anything".into(),
        version: None,
        input: Some(format!("\"{}\"", "x".repeat(input_len))),
        scheduled_start: None,
        reuse_policy: IdReusePolicy::default(),
        trace: None,
        tags: Default::default(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_database_fails_writes_cleanly() {
    let d = dir();
    let path = d.path().join("full.db");
    let small = SqliteOptions {
        max_database_bytes: Some(256 * 1024),
        ..SqliteOptions::default()
    };
    let b = SqliteBackend::open_with(&path, small).unwrap_or_else(|e| panic!("{e}"));
    let mut created = 0;
    let err = loop {
        match b
            .create_instance(request(&format!("i-{created}"), 16 * 1024))
            .await
        {
            Ok(()) => created += 1,
            Err(e) => break e,
        }
        assert!(created < 1000, "the size limit was never reached");
    };
    let msg = err.to_string();
    assert!(msg.contains("full"), "{msg}");
    assert!(
        b.get_instance(&format!("i-{created}"), false)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_none(),
        "the failed create left an instance behind"
    );
    assert_eq!(
        b.integrity_check().await.unwrap_or_else(|e| panic!("{e}")),
        vec!["ok"]
    );
    for i in 0..created {
        assert!(b
            .get_instance(&format!("i-{i}"), false)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .is_some());
    }
    drop(b);
    let b = SqliteBackend::open(&path).unwrap_or_else(|e| panic!("{e}"));
    b.create_instance(request("after-space-was-freed", 16 * 1024))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
}

/// An episode whose completion a full disk refuses is given back at once
/// (not left to wait out its 60 s lease), nothing of it is applied, and it
/// completes as soon as space returns. The full disk is simulated: the
/// backend's connection may not grow the file past `max_database_bytes`,
/// and another connection fills it with a ballast table, then drops it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_refused_by_a_full_disk_is_given_back_and_completes_once_space_returns() {
    use durable_runtime::{Client, Registry, ScheduleOptions, Worker};
    use std::sync::Arc;
    use std::time::Instant;
    let d = dir();
    let path = d.path().join("full-then-freed.db");
    let options = SqliteOptions {
        max_database_bytes: Some(1024 * 1024),
        lease_duration: Duration::from_secs(60),
        ..SqliteOptions::default()
    };
    let b = Arc::new(SqliteBackend::open_with(&path, options).unwrap_or_else(|e| panic!("{e}")));
    let client = Client::new(b.clone());
    let id = client
        .schedule_by_name("big", &(), ScheduleOptions::default())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let side = rusqlite::Connection::open(&path).unwrap_or_else(|e| panic!("{e}"));
    side.execute_batch("CREATE TABLE ballast (b BLOB)")
        .unwrap_or_else(|e| panic!("{e}"));
    for _ in 0..24 {
        side.execute("INSERT INTO ballast VALUES (zeroblob(65536))", [])
            .unwrap_or_else(|e| panic!("{e}"));
    }
    // How many times the episode ran, watched by the test.
    let (runs, mut ran) = tokio::sync::watch::channel(0usize);
    let runs = Arc::new(runs);
    let counted = runs.clone();
    let registry = Registry::new().orchestrator_fn("big", move |_ctx, _: ()| {
        let runs = counted.clone();
        async move {
            runs.send_modify(|n| *n += 1);
            // An output that needs new pages.
            Ok("x".repeat(200 * 1024))
        }
    });
    let worker = Worker::new(b.clone(), registry)
        .start()
        .unwrap_or_else(|e| panic!("{e}"));
    tokio::time::timeout(Duration::from_secs(30), ran.wait_for(|n| *n >= 3))
        .await
        .unwrap_or_else(|_| {
            panic!("the refused episode was not given back and run again within 30 s (its lease is 60 s)")
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // A read committed in the same group as a refused write is refused
    // with it ("rolled back because another operation in it failed"):
    // read again, as the error says.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let (meta, history) = loop {
        let read = async {
            let meta = b.get_instance(&id, false).await?;
            let history = b.get_history(&id).await?;
            Ok::<_, durable_runtime::backend::BackendError>((meta, history))
        };
        match read.await {
            Ok(r) => break r,
            Err(e) if e.to_string().contains("another operation in it failed") => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "reads kept failing with the episode's full disk: {e}"
                );
                tokio::task::yield_now().await;
            }
            Err(e) => panic!("{e}"),
        }
    };
    let meta = meta.unwrap_or_else(|| panic!("the instance is gone"));
    assert!(!meta.status.is_terminal(), "{meta:?}");
    assert!(history.is_empty(), "a refused episode left history behind");
    side.execute_batch("DROP TABLE ballast")
        .unwrap_or_else(|e| panic!("{e}"));
    let freed = Instant::now();
    let state = client
        .wait_for_completion(&id, Duration::from_secs(30))
        .await
        .unwrap_or_else(|e| panic!("the instance did not complete once space returned: {e}"));
    println!(
        "full disk: {} runs while full; completed {:?} after space returned",
        *runs.borrow() - 1,
        freed.elapsed()
    );
    assert_eq!(
        state.output::<String>().map(|s| s.len()).ok(),
        Some(200 * 1024)
    );
    assert_eq!(
        b.integrity_check().await.unwrap_or_else(|e| panic!("{e}")),
        vec!["ok"]
    );
    worker.shutdown().await;
}

/// Several processes (here: threads, each with its own connection) opening
/// one new file at once all succeed: none mistakes the schema another is
/// creating for another application's file.
#[test]
fn backends_opening_a_new_file_at_once_all_succeed() {
    let d = dir();
    for round in 0..30 {
        let path = d.path().join(format!("race-{round}.db"));
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(4));
        let openers: Vec<_> = (0..4)
            .map(|_| {
                let (path, barrier) = (path.clone(), barrier.clone());
                std::thread::spawn(move || {
                    barrier.wait();
                    SqliteBackend::open(&path).map(drop)
                })
            })
            .collect();
        for opener in openers {
            let opened = opener
                .join()
                .unwrap_or_else(|_| panic!("an opener panicked"));
            if let Err(e) = opened {
                panic!("round {round}: opening a new file beside others failed: {e}");
            }
        }
    }
}
