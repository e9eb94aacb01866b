//! A worker process for durable-postgres's multi-process tests:
//! `durable-postgres-worker <url> <schema> <lease-ms>` connects, runs a
//! worker with the test orchestrations until its standard input closes,
//! then shuts down. Its orchestrations: `chain` (three `inc` in a row),
//! `fan100` (a fan-out of 100), `timer` (a timer, then `inc`), `parent` (a
//! `chain` sub-orchestration, then `inc`), `event` (waits for the event
//! `go`, then `inc`), `mix` (one, five in parallel, a `child` with a timer).
//! It prints `ready` once its worker runs, `activity` each
//! time it starts an activity (which then takes 20 ms), and `done <n>` (activities run) at the end.

use durable_postgres::{PostgresBackend, PostgresOptions};
use durable_runtime::{ActivityError, Registry, Worker};
use std::io::{BufRead, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn say(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, schema, lease_ms] = &args[..] else {
        eprintln!("usage: durable-postgres-worker <url> <schema> <lease-ms>");
        std::process::exit(2);
    };
    let lease_ms: u64 = lease_ms
        .parse()
        .expect("the lease is a number of milliseconds");
    let options = PostgresOptions {
        schema: schema.clone(),
        lease_duration: Duration::from_millis(lease_ms),
        poll_interval: Duration::from_millis(200),
        pool_size: 4,
        ..PostgresOptions::default()
    };
    let backend = Arc::new(
        PostgresBackend::connect_with(url, options)
            .await
            .unwrap_or_else(|e| panic!("connecting failed: {e}")),
    );
    let ran = Arc::new(AtomicUsize::new(0));
    let counter = ran.clone();
    let registry = Registry::new()
        .activity_fn("inc", move |_c, x: i64| {
            let ran = counter.clone();
            async move {
                ran.fetch_add(1, Ordering::SeqCst);
                say("activity");
                // Still running (and leased) when the test reads the line.
                tokio::time::sleep(Duration::from_millis(20)).await;
                Ok::<_, ActivityError>(x + 1)
            }
        })
        .orchestrator_fn("child", |ctx, x: i64| async move {
            ctx.create_timer(Duration::from_millis(5)).await;
            let y: i64 = ctx.call_activity_by_name("inc", &x).await?;
            Ok(y)
        })
        .orchestrator_fn("chain", |ctx, x: i64| async move {
            let mut y = x;
            for _ in 0..3 {
                y = ctx.call_activity_by_name("inc", &y).await?;
            }
            Ok(y)
        })
        .orchestrator_fn("fan100", |ctx, x: i64| async move {
            let fan = (0..100).map(|i| ctx.call_activity_by_name::<i64>("inc", &(x + i)));
            Ok(ctx.when_all(fan).await?.into_iter().sum::<i64>())
        })
        .orchestrator_fn("timer", |ctx, x: i64| async move {
            ctx.create_timer(Duration::from_millis(20)).await;
            let y: i64 = ctx.call_activity_by_name("inc", &x).await?;
            Ok(y)
        })
        .orchestrator_fn("parent", |ctx, x: i64| async move {
            let y: i64 = ctx
                .call_sub_orchestrator_by_name("chain", None, &x, None)
                .await?;
            let z: i64 = ctx.call_activity_by_name("inc", &y).await?;
            Ok(z)
        })
        .orchestrator_fn("event", |ctx, x: i64| async move {
            let v: i64 = ctx.wait_for_external_event("go").await?;
            let y: i64 = ctx.call_activity_by_name("inc", &(x + v)).await?;
            Ok(y)
        })
        .orchestrator_fn("mix", |ctx, x: i64| async move {
            let a: i64 = ctx.call_activity_by_name("inc", &x).await?;
            let fan = (0..5).map(|i| ctx.call_activity_by_name::<i64>("inc", &(a + i)));
            let sum: i64 = ctx.when_all(fan).await?.into_iter().sum();
            let c: i64 = ctx
                .call_sub_orchestrator_by_name("child", None, &sum, None)
                .await?;
            Ok(c)
        });
    let worker = Worker::new(backend, registry)
        .start()
        .unwrap_or_else(|e| panic!("starting the worker failed: {e}"));
    say("ready");
    // Until the test closes our standard input.
    tokio::task::spawn_blocking(|| {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            if line.is_err() {
                break;
            }
        }
    })
    .await
    .expect("reading standard input");
    worker.shutdown().await;
    say(&format!("done {}", ran.load(Ordering::SeqCst)));
}
