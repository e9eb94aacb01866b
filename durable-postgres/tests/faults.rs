//! Faults of the server itself: restarted mid-run (workers reconnect and
//! nothing is lost), turned read-only, and out of disk space (both
//! reported in words that say so, with stored data kept). This binary has
//! a server of its own, since it restarts it; its tests run one at a time.

mod support;

use durable_postgres::testing::TestCluster;
use durable_postgres::{PostgresBackend, PostgresOptions};
use durable_runtime::backend::Backend;
use durable_runtime::history::{EventKind, OrchestrationStatus};
use durable_runtime::{ActivityError, Client, Registry, ScheduleOptions, Worker};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::check_no_duplicates;

/// How long anything that should happen may take before the test fails.
const LIMIT: Duration = Duration::from_secs(60);

/// The tests change the whole server (a restart, a role's settings):
/// one at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn admin() -> tokio_postgres::Client {
    let (client, connection) =
        tokio_postgres::connect(TestCluster::shared().url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting to the test server failed: {e}"));
    tokio::spawn(connection);
    client
}

/// The test server's URL with `role` as the user (the test server trusts
/// local connections).
fn url_as(role: &str) -> String {
    let url = TestCluster::shared().url();
    let rest = url
        .strip_prefix("postgres://")
        .and_then(|r| r.split_once('@'))
        .map(|(_, host)| host)
        .unwrap_or_else(|| panic!("the test URL has no user@ part: {url}"));
    format!("postgres://{role}@{rest}")
}

fn options(schema: &str) -> PostgresOptions {
    PostgresOptions {
        schema: schema.to_string(),
        pool_size: 4,
        lease_duration: Duration::from_secs(2),
        poll_interval: Duration::from_millis(200),
        ..PostgresOptions::default()
    }
}

/// `chain(x)`: five `step`s of 10 ms in a row, `x + 5`; `steps` counts runs.
fn registry(steps: Arc<AtomicUsize>) -> Registry {
    Registry::new()
        .activity_fn("step", move |_c, x: i64| {
            let steps = steps.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(10)).await;
                steps.fetch_add(1, Ordering::SeqCst);
                Ok::<_, ActivityError>(x + 1)
            }
        })
        .orchestrator_fn("chain", |ctx, x: i64| async move {
            let mut v = x;
            for _ in 0..5 {
                v = ctx.call_activity_by_name("step", &v).await?;
            }
            Ok(v)
        })
}

/// Whether an error is a lost connection, which an operation may meet
/// while the server restarts or sessions are ended.
fn connection_lost(e: &dyn std::fmt::Display) -> bool {
    let m = e.to_string();
    m.contains("connection") || m.contains("shutting down or starting")
}

/// Waits for `id` to complete, asking again when a connection was lost.
async fn completed(client: &Client, id: &str) -> durable_runtime::OrchestrationState {
    let deadline = Instant::now() + LIMIT;
    loop {
        match client.wait_for_completion(id, LIMIT).await {
            Ok(state) => return state,
            Err(e) if connection_lost(&e) && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await
            }
            Err(e) => panic!("{id}: {e}"),
        }
    }
}

/// Runs `op` until it does not fail for a lost connection (the pool may
/// hand out a connection the server already ended).
async fn through_reconnects<
    T,
    E: std::fmt::Display,
    F: std::future::Future<Output = Result<T, E>>,
>(
    what: &str,
    mut op: impl FnMut() -> F,
) -> Result<T, E> {
    let deadline = Instant::now() + LIMIT;
    loop {
        match op().await {
            Err(e) if connection_lost(&e) => {
                assert!(
                    Instant::now() < deadline,
                    "{what}: still {e} after {LIMIT:?}"
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restarted_mid_run_loses_nothing() {
    let _serial = SERIAL.lock().await;
    let cluster = TestCluster::shared();
    let schema = cluster.fresh_schema();
    let steps = Arc::new(AtomicUsize::new(0));
    let worker_side: Arc<dyn Backend> = Arc::new(
        PostgresBackend::connect_with(cluster.url(), options(&schema))
            .await
            .unwrap_or_else(|e| panic!("connecting failed: {e}")),
    );
    let worker = Worker::new(worker_side, registry(steps.clone()))
        .start()
        .unwrap();
    let backend = Arc::new(
        PostgresBackend::connect_with(cluster.url(), options(&schema))
            .await
            .unwrap_or_else(|e| panic!("connecting failed: {e}")),
    );
    let client = Client::new(backend.clone());
    let n = 60i64;
    let mut ids = Vec::new();
    for i in 0..n {
        let id = client
            .schedule_by_name("chain", &i, ScheduleOptions::default())
            .await
            .unwrap();
        ids.push((id, i));
    }
    // Mid-run: once 40 of the 300 steps ran.
    let deadline = Instant::now() + LIMIT;
    while steps.load(Ordering::SeqCst) < 40 {
        assert!(Instant::now() < deadline, "the steps did not start");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let before = steps.load(Ordering::SeqCst);
    let t = Instant::now();
    tokio::task::spawn_blocking(|| TestCluster::shared().restart())
        .await
        .unwrap()
        .unwrap_or_else(|e| panic!("{e}"));
    let restart = t.elapsed();
    for (id, i) in &ids {
        let state = completed(&client, id).await;
        assert_eq!(state.status(), OrchestrationStatus::Completed, "{id}");
        assert_eq!(state.output::<i64>().unwrap(), i + 5, "{id}");
        let history = through_reconnects("reading a history", || backend.get_history(id))
            .await
            .unwrap();
        check_no_duplicates(id, &history);
        let done = history
            .iter()
            .filter(|e| matches!(e.kind, EventKind::ExecutionCompleted { .. }))
            .count();
        assert_eq!(done, 1, "{id}: completed once");
    }
    let ran = steps.load(Ordering::SeqCst);
    println!(
        "server restarted after {before} of {} steps (pg_ctl restart took {:.2} s); all {n} \
         chains completed after it, {ran} step executions",
        5 * n,
        restart.as_secs_f64()
    );
    assert!(ran >= 5 * n as usize, "every step ran: {ran}");
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_database_is_reported_and_keeps_its_data() {
    let _serial = SERIAL.lock().await;
    let cluster = TestCluster::shared();
    let schema = cluster.fresh_schema();
    let role = format!("r_{schema}");
    let admin = admin().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT CREATE ON DATABASE postgres TO {role};"
        ))
        .await
        .unwrap();
    let end_sessions = || async {
        admin
            .execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1",
                &[&role],
            )
            .await
            .unwrap();
    };
    let steps = Arc::new(AtomicUsize::new(0));
    let worker_side: Arc<dyn Backend> = Arc::new(
        PostgresBackend::connect_with(&url_as(&role), options(&schema))
            .await
            .unwrap_or_else(|e| panic!("connecting as {role} failed: {e}")),
    );
    let worker = Worker::new(worker_side, registry(steps.clone()))
        .start()
        .unwrap();
    let backend = Arc::new(
        PostgresBackend::connect_with(&url_as(&role), options(&schema))
            .await
            .unwrap(),
    );
    let client = Client::new(backend.clone());
    let first = client
        .schedule_by_name("chain", &1i64, ScheduleOptions::default())
        .await
        .unwrap();
    assert_eq!(completed(&client, &first).await.output::<i64>().unwrap(), 6);

    // The database turns read-only for the role: new sessions refuse writes.
    admin
        .batch_execute(&format!(
            "ALTER ROLE {role} SET default_transaction_read_only = on"
        ))
        .await
        .unwrap();
    end_sessions().await;
    let refused = through_reconnects("scheduling on a read-only database", || {
        client.schedule_by_name("chain", &2i64, ScheduleOptions::default())
    })
    .await
    .expect_err("a write succeeded on a read-only database");
    let message = refused.to_string();
    println!("scheduling on a read-only database: {message}");
    assert!(
        message.contains("read-only") && message.contains("primary"),
        "the error does not say the database is read-only: {message}"
    );
    // Reads still work, and the stored instance is intact.
    let state = through_reconnects("reading on a read-only database", || {
        client.get_state(&first)
    })
    .await
    .unwrap()
    .expect("the instance is still there");
    assert_eq!(state.output::<i64>().unwrap(), 6);
    // Connecting to a read-only database is refused with the same words.
    let connect = PostgresBackend::connect_with(&url_as(&role), options(&schema))
        .await
        .expect_err("connected to a read-only database");
    let message = connect.to_string();
    println!("connecting to a read-only database: {message}");
    assert!(
        message.contains("read-only") && message.contains("primary"),
        "the connect error does not say the database is read-only: {message}"
    );

    // Writable again: the same worker and client carry on.
    admin
        .batch_execute(&format!(
            "ALTER ROLE {role} RESET default_transaction_read_only"
        ))
        .await
        .unwrap();
    end_sessions().await;
    let again = through_reconnects("scheduling once writable again", || {
        client.schedule_by_name("chain", &3i64, ScheduleOptions::default())
    })
    .await
    .unwrap_or_else(|e| panic!("scheduling once writable again failed: {e}"));
    assert_eq!(completed(&client, &again).await.output::<i64>().unwrap(), 8);
    worker.shutdown().await;
}

/// Whether this process may mount file systems (as root).
fn may_mount() -> bool {
    std::process::Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// A small tmpfs mounted at a directory, unmounted when dropped.
struct SmallDisk(PathBuf);

impl SmallDisk {
    fn mount(dir: &Path, size: &str, owner: Option<&str>) -> Result<Self, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        let run = |program: &str, args: &[&str]| -> Result<(), String> {
            let out = std::process::Command::new(program)
                .args(args)
                .output()
                .map_err(|e| format!("running {program}: {e}"))?;
            if out.status.success() {
                Ok(())
            } else {
                Err(format!(
                    "{program} {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                ))
            }
        };
        let path = dir.to_str().expect("a UTF-8 path");
        run(
            "mount",
            &["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs", path],
        )?;
        let disk = SmallDisk(dir.to_path_buf());
        if let Some(user) = owner {
            run("chown", &[user, path])?;
        }
        Ok(disk)
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        // Lazily: the server may still hold files of dropped tables open.
        let _ = std::process::Command::new("umount")
            .arg("-l")
            .arg(&self.0)
            .status();
    }
}

/// Schedules orchestrations with big inputs, as a role whose tables are
/// in the tablespace `space`, until the disk is full; checks the error and
/// that what was stored is intact.
async fn fill_the_disk(admin: &tokio_postgres::Client, schema: &str, space: &str) {
    let role = format!("r_{schema}");
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN;
             GRANT CREATE ON DATABASE postgres TO {role};
             GRANT CREATE ON TABLESPACE {space} TO {role};
             ALTER ROLE {role} SET default_tablespace = {space};"
        ))
        .await
        .unwrap();
    let backend = Arc::new(
        PostgresBackend::connect_with(&url_as(&role), options(schema))
            .await
            .unwrap_or_else(|e| panic!("connecting as {role} failed: {e}")),
    );
    let on_disk: Option<String> = admin
        .query_one(
            "SELECT tablespace::text FROM pg_tables WHERE schemaname = $1 AND tablename = 'instances'",
            &[&schema],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        on_disk.as_deref(),
        Some(space),
        "the tables are on the small disk"
    );
    let client = Client::new(backend.clone());
    // Inputs of 256 KiB that do not compress, until the disk is full.
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut payload = || {
        (0..256 * 1024)
            .map(|_| {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                char::from(b'!' + (seed % 90) as u8)
            })
            .collect::<String>()
    };
    let mut stored = Vec::new();
    let message = loop {
        assert!(
            stored.len() < 100,
            "100 inputs of 256 KiB fit on a 4 MiB disk"
        );
        let input = payload();
        match client
            .schedule_by_name("chain", &input, ScheduleOptions::default())
            .await
        {
            Ok(id) => stored.push((id, input)),
            Err(e) => break e.to_string(),
        }
    };
    println!("after {} inputs of 256 KiB: {message}", stored.len());
    assert!(!stored.is_empty(), "nothing fitted on the disk: {message}");
    assert!(
        message.contains("out of space") && message.contains("free disk space"),
        "the error does not say the disk is full: {message}"
    );
    // What was stored before is still there and readable.
    for (id, input) in &stored {
        let state = client.get_state(id).await.unwrap().expect("still there");
        assert!(
            state.input::<String>().unwrap() == *input,
            "{id}: the input changed"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_reported_and_keeps_its_data() {
    let _serial = SERIAL.lock().await;
    let cluster = TestCluster::shared();
    // A full disk is a real one: a 4 MiB tmpfs holding the tables, which
    // takes root to mount, and a server started by the tests to put a
    // tablespace on it.
    let Some(dir) = cluster.dir().filter(|_| may_mount()) else {
        let why = "the full-disk test mounts a 4 MiB tmpfs for a tablespace of the \
                   throwaway server: run the tests as root without DURABLE_TEST_POSTGRES_URL";
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{why}");
        }
        eprintln!("NOT RUN: {why}");
        return;
    };
    let schema = cluster.fresh_schema();
    let space = format!("s_{schema}");
    let disk = SmallDisk::mount(&dir.join(&space), "4m", cluster.server_user())
        .unwrap_or_else(|e| panic!("mounting a small disk failed: {e}"));
    let admin = admin().await;
    // Alone: CREATE TABLESPACE cannot run in a transaction block.
    admin
        .batch_execute(&format!(
            "CREATE TABLESPACE {space} LOCATION '{}'",
            disk.0.display()
        ))
        .await
        .unwrap();
    let outcome = futures::FutureExt::catch_unwind(std::panic::AssertUnwindSafe(fill_the_disk(
        &admin, &schema, &space,
    )))
    .await;
    // The tablespace goes before the disk, whatever happened, so the
    // server can restart.
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {schema} CASCADE"))
        .await
        .unwrap();
    admin
        .batch_execute(&format!("DROP TABLESPACE {space}"))
        .await
        .unwrap();
    drop(disk);
    if let Err(panic) = outcome {
        std::panic::resume_unwind(panic);
    }
}
