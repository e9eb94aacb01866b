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
//!
//! `durable-sqlite-crashtest mix <database> <activity-log> <round>` runs a
//! mix of every pattern with the default [`SqliteOptions`], scheduling (if
//! not yet) and waiting for the instances of every round up to `<round>`
//! (ids prefixed `r<round>-`) (see [`mix`]). Each activity prints `act` when it
//! finishes.
//!
//! `durable-sqlite-crashtest hold <database> <lease-ms>` creates instance
//! `held` (unless it exists), leases its episode, prints `holding` and
//! waits to be killed (or stopped): a process that dies holding work.

use durable_runtime::backend::{BackendError, IdReusePolicy};
use durable_runtime::{
    ActivityContext, ActivityError, Backend, Client, Error, Registry, ScheduleOptions, Worker,
    WorkerHandle, WorkerOptions,
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

/// Starts a worker (20 activities at a time) on `backend`, says `started`,
/// and returns it with a client.
fn start(backend: Arc<dyn Backend>, registry: Registry) -> Result<(WorkerHandle, Client), String> {
    let worker = Worker::new(backend.clone(), registry)
        .with_options(WorkerOptions {
            max_concurrent_activities: 20,
            ..WorkerOptions::default()
        })
        .start()
        .map_err(|e| e.to_string())?;
    say("started");
    Ok((worker, Client::new(backend)))
}

/// Schedules instance `id` unless an earlier run already did.
async fn schedule_once(
    client: &Client,
    id: &str,
    name: &str,
    input: &impl serde::Serialize,
) -> Result<(), String> {
    let options = ScheduleOptions {
        reuse_policy: Some(IdReusePolicy::never()),
        ..ScheduleOptions::with_id(id)
    };
    match client.schedule_by_name(name, input, options).await {
        Ok(_) | Err(Error::Backend(BackendError::AlreadyExists { .. })) => Ok(()),
        Err(e) => Err(format!("scheduling {id}: {e}")),
    }
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
    let (worker, client) = start(backend, registry(Arc::new(Mutex::new(log))))?;
    for (id, name, input) in workload() {
        schedule_once(&client, &id, name, &input).await?;
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

/// Instances of every pattern in round `r`: id, orchestrator, input, and
/// the event to raise (if the orchestrator waits for one).
///
/// - `r<r>-chain-<i>` (`chain`, 6): five steps, output `i + 5`;
/// - `r<r>-fan` (`fan`, 1): 60 parallel items, output 3,540;
/// - `r<r>-timers-<i>` (`timers`, 2): three 500 ms timers and steps, `i + 3`;
/// - `r<r>-parent-<i>` (`parent`, 3): three `child` sub-orchestrations of
///   two steps each, output `30 i + 9`;
/// - `r<r>-count-<i>` (`count`, 3): four generations of continue-as-new,
///   one step each, output `i + 4`;
/// - `r<r>-event-<i>` (`event`, 3): waits for event `go` (data `i`), then a
///   step, output `i + 1`.
fn mix(r: u32) -> Vec<(String, &'static str, serde_json::Value)> {
    use serde_json::json;
    let mut w = Vec::new();
    for i in 0..6 {
        w.push((format!("r{r}-chain-{i}"), "chain", json!(i)));
    }
    w.push((format!("r{r}-fan"), "fan", json!(60)));
    for i in 0..2 {
        w.push((format!("r{r}-timers-{i}"), "timers", json!(i)));
    }
    for i in 0..3 {
        w.push((format!("r{r}-parent-{i}"), "parent", json!(i)));
        w.push((format!("r{r}-count-{i}"), "count", json!([4, i])));
        w.push((format!("r{r}-event-{i}"), "event", json!(i)));
    }
    w
}

fn mix_registry(log: Arc<Mutex<std::fs::File>>) -> Registry {
    let (l1, l2) = (log.clone(), log.clone());
    registry(log)
        .activity_fn("gen_step", move |c, (generation, x): (i64, i64)| {
            let log = l1.clone();
            async move {
                // Simulated work, so that kills land while activities run.
                tokio::time::sleep(Duration::from_millis(20)).await;
                // Each generation reuses the task ids: the log tells them apart.
                let line = format!("{}#{generation} {}\n", c.instance_id(), c.task_id());
                let mut f = log.lock().unwrap_or_else(|p| p.into_inner());
                f.write_all(line.as_bytes())
                    .map_err(|e| ActivityError::new("Log", e.to_string()))?;
                say("act");
                Ok::<_, ActivityError>(x + 1)
            }
        })
        .activity_fn("quick", move |c, x: i64| {
            let log = l2.clone();
            async move {
                // Simulated work, so that kills land while activities run.
                tokio::time::sleep(Duration::from_millis(20)).await;
                record(&log, &c)?;
                say("act");
                Ok::<_, ActivityError>(x + 1)
            }
        })
        .orchestrator_fn("child", |ctx, x: i64| async move {
            let a: i64 = ctx.call_activity_by_name("quick", &x).await?;
            let b: i64 = ctx.call_activity_by_name("quick", &a).await?;
            Ok(b)
        })
        .orchestrator_fn("parent", |ctx, i: i64| async move {
            let all = ctx
                .when_all((0..3).map(|j| {
                    ctx.call_sub_orchestrator_by_name::<i64>("child", None, &(i * 10 + j), None)
                }))
                .await?;
            Ok(all.iter().sum::<i64>())
        })
        .orchestrator_fn("count", |ctx, (left, acc): (i64, i64)| async move {
            if left == 0 {
                return Ok(acc);
            }
            let acc: i64 = ctx.call_activity_by_name("gen_step", &(left, acc)).await?;
            ctx.continue_as_new(&(left - 1, acc))
        })
        .orchestrator_fn("event", |ctx, _: i64| async move {
            let x: i64 = ctx.wait_for_external_event("go").await?;
            let y: i64 = ctx.call_activity_by_name("quick", &x).await?;
            Ok(y)
        })
}

/// The instances `mix` rewrites for its smaller mixes: the chains, fan and
/// timers of the first workload take `quick` steps instead.
fn quick(name: &'static str) -> &'static str {
    match name {
        "chain" => "quick_chain",
        "fan" => "quick_fan",
        "timers" => "quick_timers",
        other => other,
    }
}

fn quick_orchestrators(r: Registry) -> Registry {
    r.orchestrator_fn("quick_chain", |ctx, i: i64| async move {
        let mut x = i;
        for _ in 0..5 {
            x = ctx.call_activity_by_name("quick", &x).await?;
        }
        Ok(x)
    })
    .orchestrator_fn("quick_fan", |ctx, n: i64| async move {
        let all = ctx
            .when_all((0..n).map(|k| ctx.call_activity_by_name::<i64>("quick", &(k * 2 - 1))))
            .await?;
        Ok(all.iter().sum::<i64>())
    })
    .orchestrator_fn("quick_timers", |ctx, i: i64| async move {
        let mut x = i;
        for _ in 0..3 {
            ctx.create_timer(Duration::from_millis(500)).await;
            x = ctx.call_activity_by_name("quick", &x).await?;
        }
        Ok(x)
    })
}

async fn run_mix(db: &str, log: &str, round: u32) -> Result<(), String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| format!("cannot open the activity log {log}: {e}"))?;
    // The defaults: recovery must be prompt without tuning.
    let backend = SqliteBackend::open(db).map_err(|e| e.to_string())?;
    let backend: Arc<dyn Backend> = Arc::new(backend);
    let registry = quick_orchestrators(mix_registry(Arc::new(Mutex::new(log))));
    let (worker, client) = start(backend, registry)?;
    // Every round up to this one: an earlier run may have been killed
    // before it scheduled its own.
    let all: Vec<_> = (0..=round).flat_map(mix).collect();
    for (id, name, input) in &all {
        schedule_once(&client, id, quick(name), input).await?;
    }
    // Raised again by every run until the instance finishes: a run may be
    // killed before its event is stored. The orchestrator takes the first.
    for (id, name, input) in &all {
        if *name != "event" {
            continue;
        }
        let done = client
            .get_state(id)
            .await
            .map_err(|e| format!("reading {id}: {e}"))?
            .is_some_and(|s| s.status().is_terminal());
        if !done {
            match client.raise_event(id, "go", input).await {
                // It finished in between (this process's worker runs).
                Ok(()) | Err(Error::Backend(BackendError::InvalidState { .. })) => {}
                Err(e) => return Err(format!("raising go on {id}: {e}")),
            }
        }
    }
    for (id, _, _) in &all {
        let state = client
            .wait_for_completion(id, Duration::from_secs(120))
            .await
            .map_err(|e| format!("waiting for {id}: {e}"))?;
        say(format!("finished {id} {}", state.status()));
    }
    say("ALL DONE");
    worker.shutdown().await;
    Ok(())
}

async fn hold(db: &str, lease_ms: &str) -> Result<(), String> {
    use durable_runtime::backend::CreateInstanceRequest;
    let lease_ms: u64 = lease_ms
        .parse()
        .map_err(|e| format!("lease-ms {lease_ms:?}: {e}"))?;
    let backend = SqliteBackend::open_with(
        db,
        SqliteOptions {
            lease_duration: Duration::from_millis(lease_ms),
            ..SqliteOptions::default()
        },
    )
    .map_err(|e| e.to_string())?;
    let created = backend
        .create_instance(CreateInstanceRequest {
            instance_id: "held".into(),
            name: "orch".into(),
            version: None,
            input: None,
            scheduled_start: None,
            reuse_policy: IdReusePolicy::never(),
            trace: None,
            tags: Default::default(),
        })
        .await;
    match created {
        Ok(()) | Err(BackendError::AlreadyExists { .. }) => {}
        Err(e) => return Err(format!("creating held: {e}")),
    }
    let item = backend
        .next_orchestration_item()
        .await
        .map_err(|e| format!("leasing: {e}"))?;
    say(format!("holding {}", item.instance_id));
    // Renew like a live worker would, until killed or stopped.
    loop {
        tokio::time::sleep(Duration::from_millis(lease_ms / 3 + 1)).await;
        backend
            .renew_orchestration_item(&item)
            .await
            .map_err(|e| format!("renewing: {e}"))?;
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: durable-sqlite-crashtest <database> <activity-log> | \
                 mix <database> <activity-log> <round> | hold <database> <lease-ms>";
    let arg = |i: usize| args.get(i).map(String::as_str);
    let job: std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), String>>>> =
        match (arg(1), arg(2), arg(3), arg(4)) {
            (Some("mix"), Some(db), Some(log), Some(round)) => match round.parse() {
                Ok(round) => Box::pin(run_mix(db, log, round)),
                Err(_) => {
                    eprintln!("{usage}");
                    std::process::exit(2);
                }
            },
            (Some("hold"), Some(db), Some(lease_ms), None) => Box::pin(hold(db, lease_ms)),
            (Some(db), Some(log), None, None) => Box::pin(run(db, log)),
            _ => {
                eprintln!("{usage}");
                std::process::exit(2);
            }
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
    if let Err(e) = runtime.block_on(job) {
        eprintln!("crashtest: {e}");
        std::process::exit(1);
    }
}
