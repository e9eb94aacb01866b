//! A workload for the crash test of durable-postgres (`tests/crash.rs`).
//!
//! `durable-postgres-crashtest <url> <schema> <activity-log>` schedules a
//! fixed set of orchestrations (those an earlier run has not), runs a
//! worker until all of them have finished, prints `ALL DONE` and exits. It
//! is meant to be SIGKILLed at any moment and started again on the same
//! schema:
//!
//! - `chain-0` .. `chain-29`: five chained `step` activities (output
//!   `i + 5`); the third step of every fifth chain is `slow_step`;
//! - `fan`: a fan-out of 500 `fan_item` activities (output 249,500);
//! - `timers-0` .. `timers-4`: three 300 ms timers, each followed by a
//!   `step` (output `i + 3`);
//! - `parent-0` .. `parent-2`: three `pair` sub-orchestrations of two steps
//!   each (output `30 i + 9`);
//! - `event-0` .. `event-2`: waits for event `go`, sent with data `i` by
//!   the orchestration `sender-i` (scheduled after it), then a step
//!   (output `i + 1`); `sender-i` outputs 0.
//!
//! Activities take 30 ms and at most 20 run at once, so a run lasts long
//! enough to be killed in the middle of each part. Every activity appends
//! `<instance> <task id>` to the activity log just before it returns, so
//! the test counts executions. Progress markers go to standard output
//! (`started`, `mid-activity`, `episode <id>`, `fan <k>`, `timer-armed <id>`),
//! so the test can choose when to kill it.

use durable_postgres::{PostgresBackend, PostgresOptions};
use durable_runtime::backend::{BackendError, IdReusePolicy};
use durable_runtime::{
    ActivityContext, ActivityError, Backend, Client, Error, Registry, ScheduleOptions, Worker,
    WorkerOptions,
};
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

fn say(line: impl std::fmt::Display) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

type Log = Arc<Mutex<std::fs::File>>;

/// Appends `<instance> <task id>` to the log.
fn record(log: &Log, ctx: &ActivityContext) -> Result<(), ActivityError> {
    let line = format!("{} {}\n", ctx.instance_id(), ctx.task_id());
    let mut f = log.lock().unwrap_or_else(|p| p.into_inner());
    f.write_all(line.as_bytes())
        .map_err(|e| ActivityError::new("Log", e.to_string()))
}

/// An activity of `ms` milliseconds returning `f(input)`, logged.
fn logged(
    registry: Registry,
    name: &'static str,
    log: &Log,
    ms: u64,
    f: fn(i64) -> i64,
) -> Registry {
    let log = log.clone();
    registry.activity_fn(name, move |c, x: i64| {
        let log = log.clone();
        async move {
            if name == "slow_step" {
                say("mid-activity");
            }
            if name == "fan_item" && x % 50 == 0 {
                say(format!("fan {x}"));
            }
            tokio::time::sleep(Duration::from_millis(ms)).await;
            record(&log, &c)?;
            Ok::<_, ActivityError>(f(x))
        }
    })
}

fn registry(log: &Log) -> Registry {
    let r = logged(Registry::new(), "step", log, 30, |x| x + 1);
    let r = logged(r, "slow_step", log, 300, |x| x + 1);
    logged(r, "fan_item", log, 30, |k| k * 2)
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
                ctx.create_timer(Duration::from_millis(300)).await;
                x = ctx.call_activity_by_name("step", &x).await?;
            }
            Ok(x)
        })
        .orchestrator_fn("pair", |ctx, x: i64| async move {
            let y: i64 = ctx.call_activity_by_name("step", &x).await?;
            let z: i64 = ctx.call_activity_by_name("step", &y).await?;
            Ok(z)
        })
        .orchestrator_fn("parent", |ctx, i: i64| async move {
            let children = (0..3).map(|k| {
                ctx.call_sub_orchestrator_by_name::<i64>("pair", None, &(10 * i + k), None)
            });
            Ok(ctx.when_all(children).await?.into_iter().sum::<i64>())
        })
        .orchestrator_fn("event", |ctx, _i: i64| async move {
            let v: i64 = ctx.wait_for_external_event("go").await?;
            let y: i64 = ctx.call_activity_by_name("step", &v).await?;
            Ok(y)
        })
        .orchestrator_fn("sender", |ctx, i: i64| async move {
            ctx.send_event(&format!("event-{i}"), "go", &i);
            Ok(0i64)
        })
}

/// The instances of the workload, in the order they are scheduled: id,
/// orchestrator, input.
fn workload() -> Vec<(String, &'static str, i64)> {
    let mut w: Vec<(String, &'static str, i64)> = vec![("fan".into(), "fan", 500)];
    for i in 0..30 {
        w.push((format!("chain-{i}"), "chain", i));
    }
    for i in 0..5 {
        w.push((format!("timers-{i}"), "timers", i));
    }
    for i in 0..3 {
        w.push((format!("parent-{i}"), "parent", i));
        w.push((format!("event-{i}"), "event", i));
        w.push((format!("sender-{i}"), "sender", i));
    }
    w
}

/// Schedules instance `id` unless an earlier run already did.
async fn schedule_once(client: &Client, id: &str, name: &str, input: i64) -> Result<(), String> {
    let options = ScheduleOptions {
        reuse_policy: Some(IdReusePolicy::never()),
        ..ScheduleOptions::with_id(id)
    };
    match client.schedule_by_name(name, &input, options).await {
        Ok(_) | Err(Error::Backend(BackendError::AlreadyExists { .. })) => Ok(()),
        Err(e) => Err(format!("scheduling {id}: {e}")),
    }
}

async fn run(url: &str, schema: &str, log: &str) -> Result<(), String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open the activity log {log}: {e}"))?;
    let options = PostgresOptions {
        schema: schema.to_string(),
        // Short, so a restarted process soon gets the work a killed one held.
        lease_duration: Duration::from_secs(1),
        poll_interval: Duration::from_millis(100),
        pool_size: 4,
        ..PostgresOptions::default()
    };
    let backend = PostgresBackend::connect_with(url, options)
        .await
        .map_err(|e| e.to_string())?;
    let backend: Arc<dyn Backend> = Arc::new(backend);
    let worker = Worker::new(backend.clone(), registry(&Arc::new(Mutex::new(log))))
        .with_options(WorkerOptions {
            max_concurrent_activities: 20,
            ..WorkerOptions::default()
        })
        .start()
        .map_err(|e| e.to_string())?;
    say("started");
    let client = Client::new(backend);
    for (id, name, input) in workload() {
        schedule_once(&client, &id, name, input).await?;
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

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, url, schema, log] = &args[..] else {
        eprintln!("usage: durable-postgres-crashtest <url> <schema> <activity-log>");
        std::process::exit(2);
    };
    if let Err(e) = run(url, schema, log).await {
        eprintln!("durable-postgres-crashtest: {e}");
        std::process::exit(1);
    }
}
