//! `durable serve` on SQLite killed with SIGKILL while a worker and a client
//! of durable's gRPC backend run chains and fan-outs through it, then
//! started again on the same file and port: the worker reconnects, every
//! instance finishes with the right output, and no history holds an event
//! twice.
//!
//! Some activities wait at a gate the test opens only after the restart, so
//! the kill always finds work leased to the worker and episodes half done.

mod support;

use durable_grpc::{GrpcBackend, GrpcOptions, ReconnectPolicy};
use durable_runtime::history::EventKind;
use durable_runtime::{
    ActivityError, Backend, Client, OrchestrationStatus, Registry, ScheduleOptions, Worker,
};
use durable_sqlite::SqliteBackend;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;
use support::{start_serve, stop_serve, LIMIT};
use tokio::sync::{mpsc, watch};

const CHAINS: usize = 8;
const FAN_OUTS: usize = 4;
/// Activities of a fan-out besides its gated one.
const FAN_WIDTH: i64 = 5;

/// A free loopback port below the kernel's ephemeral range (which starts at
/// 32768 on Linux by default), so no connection of another test takes it
/// while the server is down.
fn port_below_ephemeral_range() -> u16 {
    let start = 20_000 + (std::process::id() % 12_000) as u16;
    (0..12_000u16)
        .map(|i| 20_000 + (start - 20_000 + i) % 12_000)
        .find(|p| std::net::TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free loopback port between 20000 and 32000")
}

/// `inc` adds one; `gated` adds one hundred once the gate is open, and
/// reports each arrival (every run, first or again) on `arrived`.
fn registry(gate: watch::Receiver<bool>, arrived: mpsc::UnboundedSender<i64>) -> Registry {
    Registry::new()
        .activity_fn("inc", |_ctx, x: i64| async move {
            Ok::<_, ActivityError>(x + 1)
        })
        .activity_fn("gated", move |_ctx, x: i64| {
            let mut gate = gate.clone();
            let arrived = arrived.clone();
            async move {
                let _ = arrived.send(x);
                gate.wait_for(|open| *open)
                    .await
                    .map_err(|_| ActivityError::new("Gate", "the test dropped the gate"))?;
                Ok::<_, ActivityError>(x + 100)
            }
        })
        .orchestrator_fn("chain", |ctx, x: i64| async move {
            let a: i64 = ctx.call_activity_by_name("inc", &x).await?;
            let b: i64 = ctx.call_activity_by_name("gated", &a).await?;
            let c: i64 = ctx.call_activity_by_name("inc", &b).await?;
            let d: i64 = ctx.call_activity_by_name("inc", &c).await?;
            Ok(d)
        })
        .orchestrator_fn("fan_out", |ctx, x: i64| async move {
            let mut calls: Vec<_> = (0..FAN_WIDTH)
                .map(|i| ctx.call_activity_by_name::<i64>("inc", &(x + i)))
                .collect();
            calls.push(ctx.call_activity_by_name::<i64>("gated", &x));
            let all = ctx.when_all(calls).await?;
            Ok(all.into_iter().sum::<i64>())
        })
}

fn chain_output(x: i64) -> i64 {
    x + 103
}

fn fan_out_output(x: i64) -> i64 {
    (0..FAN_WIDTH).map(|i| x + i + 1).sum::<i64>() + x + 100
}

fn grpc(addr: &str) -> Arc<dyn Backend> {
    let options = GrpcOptions::new(format!("http://{addr}"))
        .connect_timeout(Duration::from_secs(2))
        .reconnect(ReconnectPolicy {
            initial_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(400),
            multiplier: 2.0,
        });
    Arc::new(GrpcBackend::new(options).expect("valid options"))
}

/// Fails naming the instance and the event if a history holds an event
/// twice: a second start or end, a task scheduled twice under one id, or a
/// task's result recorded twice.
fn assert_no_duplicates(id: &str, history: &[durable_runtime::history::HistoryEvent]) {
    let mut started = 0;
    let mut completed = 0;
    let mut scheduled = BTreeSet::new();
    let mut results = BTreeMap::new();
    for e in history {
        match &e.kind {
            EventKind::ExecutionStarted { .. } => started += 1,
            EventKind::ExecutionCompleted { .. } => completed += 1,
            EventKind::TaskScheduled { .. } => assert!(
                scheduled.insert(e.event_id),
                "{id}: task {} scheduled twice: {history:#?}",
                e.event_id
            ),
            EventKind::TaskCompleted {
                task_scheduled_id, ..
            }
            | EventKind::TaskFailed {
                task_scheduled_id, ..
            } => *results.entry(*task_scheduled_id).or_insert(0) += 1,
            _ => {}
        }
    }
    assert_eq!(started, 1, "{id}: ExecutionStarted count: {history:#?}");
    assert_eq!(completed, 1, "{id}: ExecutionCompleted count: {history:#?}");
    for (task, n) in &results {
        assert_eq!(*n, 1, "{id}: task {task} has {n} results: {history:#?}");
        assert!(
            scheduled.contains(task),
            "{id}: a result for task {task}, never scheduled: {history:#?}"
        );
    }
    assert_eq!(
        results.len(),
        scheduled.len(),
        "{id}: every scheduled task has one result: {history:#?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_run_then_restart_on_the_same_file_finishes_everything_once() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("killed.db");
    let store = format!("sqlite:{}", path.display());
    let listen = format!("127.0.0.1:{}", port_below_ephemeral_range());
    let args = ["--store", &store, "serve", "--listen", &listen];
    let (mut server, addr, _lines) = start_serve(&args);

    let (open, gate) = watch::channel(false);
    let (arrived_tx, mut arrived) = mpsc::unbounded_channel();
    let backend = grpc(&addr);
    let worker = Worker::new(backend.clone(), registry(gate, arrived_tx))
        .start()
        .unwrap();
    let client = Client::new(backend);
    let mut expected = BTreeMap::new();
    for i in 0..CHAINS as i64 {
        let x = i * 1_000;
        let id = client
            .schedule_by_name("chain", &x, ScheduleOptions::with_id(format!("chain-{i}")))
            .await
            .unwrap();
        expected.insert(id, chain_output(x));
    }
    for i in 0..FAN_OUTS as i64 {
        let x = 50_000 + i * 1_000;
        let id = client
            .schedule_by_name("fan_out", &x, ScheduleOptions::with_id(format!("fan-{i}")))
            .await
            .unwrap();
        expected.insert(id, fan_out_output(x));
    }

    // Every instance has reached its gated activity: each holds leased
    // work, and the fan-outs' other activities are in flight or done.
    let mut at_gate = BTreeSet::new();
    while at_gate.len() < CHAINS + FAN_OUTS {
        let x = tokio::time::timeout(LIMIT, arrived.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} of {} instances reached the gate within {LIMIT:?}",
                    at_gate.len(),
                    CHAINS + FAN_OUTS
                )
            })
            .expect("the worker holds the sender");
        at_gate.insert(x);
    }

    // SIGKILL: no graceful stop, no lease given back.
    server.child().kill().expect("sending SIGKILL");
    let status = server.child().wait().expect("waiting for durable serve");
    assert!(!status.success(), "killed, not exited: {status:?}");
    drop(server);

    let (server, again, lines) = start_serve(&args);
    assert_eq!(again, addr, "restarted on the same address");
    // The activities held at the kill finish now; their completions carry
    // the dead server's tokens, refused by the new one, which delivers the
    // work again.
    open.send_replace(true);

    for (id, want) in &expected {
        let state = client
            .wait_for_completion(id, LIMIT)
            .await
            .unwrap_or_else(|e| panic!("instance {id} did not finish after the restart: {e}"));
        assert_eq!(
            state.status(),
            OrchestrationStatus::Completed,
            "{id}: {:?}",
            state.failure()
        );
        assert_eq!(state.output::<i64>().unwrap(), *want, "output of {id}");
    }
    worker.shutdown().await;
    stop_serve(server, lines);

    let file = SqliteBackend::open(&path).unwrap();
    for id in expected.keys() {
        let history = file.get_history(id).await.unwrap();
        assert_no_duplicates(id, &history);
        let tasks = history
            .iter()
            .filter(|e| matches!(e.kind, EventKind::TaskScheduled { .. }))
            .count();
        let want = if id.starts_with("chain") {
            4
        } else {
            FAN_WIDTH as usize + 1
        };
        assert_eq!(tasks, want, "{id}: tasks scheduled: {history:#?}");
    }
}

#[test]
#[should_panic(expected = "task 0 has 2 results")]
fn a_result_recorded_twice_is_caught() {
    let history: Vec<durable_runtime::history::HistoryEvent> = serde_json::from_str(
        r#"[
        {"event_id":-1,"timestamp":"2030-01-01T00:00:00Z","type":"ExecutionStarted","name":"chain","instance_id":"x"},
        {"event_id":0,"timestamp":"2030-01-01T00:00:00Z","type":"TaskScheduled","name":"inc"},
        {"event_id":-1,"timestamp":"2030-01-01T00:00:00Z","type":"TaskCompleted","task_scheduled_id":0,"result":"1"},
        {"event_id":-1,"timestamp":"2030-01-01T00:00:00Z","type":"TaskCompleted","task_scheduled_id":0,"result":"1"},
        {"event_id":-1,"timestamp":"2030-01-01T00:00:00Z","type":"ExecutionCompleted","status":"Completed","result":"1"}
        ]"#,
    )
    .expect("history JSON");
    assert_no_duplicates("x", &history);
}
