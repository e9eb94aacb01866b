//! Chains and a fan-out on a file on disk with default settings, checking
//! every output. The full-size measurements are the bench's:
//! `cargo run --release -p durable-bench -- --backend sqlite`.
//! With `BENCH_MEMORY=1` the same scenarios run on the in-memory backend.

use durable_runtime::{ActivityError, Backend, Client, Registry, ScheduleOptions, Worker};
use durable_sqlite::SqliteBackend;
use std::sync::Arc;
use std::time::{Duration, Instant};

fn registry() -> Registry {
    Registry::new()
        .activity_fn(
            "inc",
            |_c, x: i64| async move { Ok::<_, ActivityError>(x + 1) },
        )
        .orchestrator_fn("chain3", |ctx, x: i64| async move {
            let a: i64 = ctx.call_activity_by_name("inc", &x).await?;
            let b: i64 = ctx.call_activity_by_name("inc", &a).await?;
            let c: i64 = ctx.call_activity_by_name("inc", &b).await?;
            Ok(c)
        })
        .orchestrator_fn("fan", |ctx, n: i64| async move {
            let all = ctx
                .when_all((0..n).map(|i| ctx.call_activity_by_name::<i64>("inc", &i)))
                .await?;
            Ok(all.iter().sum::<i64>())
        })
}

fn backend() -> (tempfile::TempDir, Arc<dyn Backend>) {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap_or_else(|e| panic!("creating a temporary directory failed: {e}"));
    if std::env::var("BENCH_MEMORY").is_ok() {
        return (dir, Arc::new(durable_runtime::MemoryBackend::new()));
    }
    let b = SqliteBackend::open(dir.path().join("bench.db"))
        .unwrap_or_else(|e| panic!("opening the database failed: {e}"));
    (dir, Arc::new(b))
}

/// S1: `n` orchestrations of three chained activities; returns orchestrations/s.
async fn chains(n: usize) -> f64 {
    let (_dir, backend) = backend();
    let worker = Worker::new(backend.clone(), registry())
        .start()
        .unwrap_or_else(|e| panic!("worker: {e}"));
    let client = Client::new(backend);
    let start = Instant::now();
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(
            client
                .schedule_by_name("chain3", &(i as i64), ScheduleOptions::default())
                .await
                .unwrap_or_else(|e| panic!("schedule: {e}")),
        );
    }
    for (i, id) in ids.iter().enumerate() {
        let s = client
            .wait_for_completion(id, Duration::from_secs(120))
            .await
            .unwrap_or_else(|e| panic!("instance {id}: {e}"));
        assert_eq!(s.output::<i64>().ok(), Some(i as i64 + 3), "{s:?}");
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    worker.shutdown().await;
    rate
}

/// S2: one orchestration fanning out to `n` activities; returns seconds.
async fn fan_out(n: i64) -> f64 {
    let (_dir, backend) = backend();
    let worker = Worker::new(backend.clone(), registry())
        .start()
        .unwrap_or_else(|e| panic!("worker: {e}"));
    let client = Client::new(backend);
    let start = Instant::now();
    let id = client
        .schedule_by_name("fan", &n, ScheduleOptions::default())
        .await
        .unwrap_or_else(|e| panic!("schedule: {e}"));
    let s = client
        .wait_for_completion(&id, Duration::from_secs(300))
        .await
        .unwrap_or_else(|e| panic!("fan-out: {e}"));
    assert_eq!(s.output::<i64>().ok(), Some((0..n).map(|i| i + 1).sum()));
    let secs = start.elapsed().as_secs_f64();
    worker.shutdown().await;
    secs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_chains_and_fan_out() {
    let rate = chains(100).await;
    println!("100 chains of 3: {rate:.0} orchestrations/s");
    let secs = fan_out(500).await;
    println!("fan-out of 500: {secs:.2} s");
}
