//! A workload for the crash tests of durable-sqlite (`tests/crash.rs`).
//!
//! `durable-sqlite-crashtest <database> <activity-log>` schedules a fixed
//! set of orchestrations (unless they exist already), runs a worker until
//! all of them have finished, prints `ALL DONE` and exits. It is meant to
//! be killed at any moment and started again on the same files:
//!
//! - `chain-0` .. `chain-39`: five chained `step` activities each (output
//!   `i + 5`); the third step of every fifth chain is slow (`slow_step`);
//! - `fan`: one orchestration fanning out to 1,000 `fan_item` activities
//!   (output 999,000);
//! - `timers-0` .. `timers-4`: three 500 ms durable timers, each followed by
//!   a `step` (output `i + 3`).
//!
//! Activities take 50 ms and at most 20 run at once, so a run lasts long
//! enough to be killed in the middle of each part.
//!
//! Every activity appends `<instance> <task id>` to the activity log just
//! before it returns, so the test can count executions. Progress markers go
//! to stdout (`mid-activity`, `episode <id>`, `fan <k>`, `timer-armed
//! <id>`), so the test can choose when to kill it.

use durable_runtime::backend::{BackendError, IdReusePolicy};
use durable_runtime::{
    ActivityContext, ActivityError, Backend, Client, Error, Registry, ScheduleOptions, Worker,
    WorkerOptions,
};
use durable_sqlite::{SqliteBackend, SqliteOptions};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

fn record(log: &Mutex<std::fs::File>, ctx: &ActivityContext) -> Result<(), ActivityError> {
    let line = format!("{} {}\n", ctx.instance_id(), ctx.task_id());
    let mut f = log.lock().unwrap_or_else(|p| p.into_inner());
    f.write_all(line.as_bytes())
        .map_err(|e| ActivityError::new("Log", e.to_string()))
}

fn registry(log: Arc<Mutex<std::fs::File>>) -> Registry {
    let (l1, l2, l3) = (log.clone(), log.clone(), log);
    Registry::new()
        .activity_fn("step", move |c, x: i64| {
            let log = l1.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                record(&log, &c)?;
                Ok::<_, ActivityError>(x + 1)
            }
        })
        .activity_fn("slow_step", move |c, x: i64| {
            let log = l2.clone();
            async move {
                say("mid-activity");
                tokio::time::sleep(Duration::from_millis(300)).await;
                record(&log, &c)?;
                Ok::<_, ActivityError>(x + 1)
            }
        })
        .activity_fn("fan_item", move |c, k: i64| {
            let log = l3.clone();
            async move {
                if k % 50 == 0 {
                    say(format!("fan {k}"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                record(&log, &c)?;
                Ok::<_, ActivityError>(k * 2)
            }
        })
        .orchestrator_fn("chain", |ctx, i: i64| async move {
            let mut x = i;
            for n in 0..5 {
                if !ctx.is_replaying() {
                    say(format!("episode {}", ctx.instance_id()));
                }
                let name = if i % 5 == 0 && n == 2 {
                    "slow_step"
                } else {
                    "step"
                };
                x = ctx.call_activity_by_name(name, &x).await?;
            }
            Ok(x)
        })
        .orchestrator_fn("fan", |ctx, n: i64| async move {
            let all = ctx
                .when_all((0..n).map(|k| ctx.call_activity_by_name::<i64>("fan_item", &k)))
                .await?;
            Ok(all.iter().sum::<i64>())
        })
        .orchestrator_fn("timers", |ctx, i: i64| async move {
            let mut x = i;
            for _ in 0..3 {
                if !ctx.is_replaying() {
                    say(format!("timer-armed {}", ctx.instance_id()));
                }
                ctx.create_timer(Duration::from_millis(500)).await;
                x = ctx.call_activity_by_name("step", &x).await?;
            }
            Ok(x)
        })
}

/// The instances of the workload: id, orchestrator, input.
fn workload() -> Vec<(String, &'static str, i64)> {
    let mut w: Vec<(String, &'static str, i64)> = Vec::new();
    w.push(("fan".into(), "fan", 1_000));
    for i in 0..40 {
        w.push((format!("chain-{i}"), "chain", i));
    }
    for i in 0..5 {
        w.push((format!("timers-{i}"), "timers", i));
    }
    w
}

async fn run(db: &str, log: &str) -> Result<(), String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open the activity log {log}: {e}"))?;
    let backend = SqliteBackend::open_with(
        db,
        SqliteOptions {
            // Short, so a restarted process soon gets the work a killed one held.
            lease_duration: Duration::from_secs(1),
            poll_interval: Duration::from_millis(50),
            ..SqliteOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let backend: Arc<dyn Backend> = Arc::new(backend);
    let worker = Worker::new(backend.clone(), registry(Arc::new(Mutex::new(log))))
        .with_options(WorkerOptions {
            max_concurrent_activities: 20,
            ..WorkerOptions::default()
        })
        .start()
        .map_err(|e| e.to_string())?;
    say("started");
    let client = Client::new(backend);
    for (id, name, input) in workload() {
        let options = ScheduleOptions {
            reuse_policy: Some(IdReusePolicy::never()),
            ..ScheduleOptions::with_id(id.clone())
        };
        match client.schedule_by_name(name, &input, options).await {
            Ok(_) | Err(Error::Backend(BackendError::AlreadyExists { .. })) => {}
            Err(e) => return Err(format!("scheduling {id}: {e}")),
        }
    }
    for (id, _, _) in workload() {
        let state = client
            .wait_for_completion(&id, Duration::from_secs(120))
            .await
            .map_err(|e| format!("waiting for {id}: {e}"))?;
        say(format!("finished {id} {}", state.status()));
    }
    say("ALL DONE");
    worker.shutdown().await;
    Ok(())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (Some(db), Some(log)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: durable-sqlite-crashtest <database> <activity-log>");
        std::process::exit(2);
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = runtime.block_on(run(db, log)) {
        eprintln!("crashtest: {e}");
        std::process::exit(1);
    }
}
