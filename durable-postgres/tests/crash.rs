//! Crash safety on PostgreSQL: the `durable-postgres-crashtest` workload
//! runs in a child process that is SIGKILLed at several points (right after
//! start, during a 500-activity fan-out, mid-episode, mid-activity,
//! between episodes) and started again on the same schema until it
//! finishes. Then every instance has its expected output, every history is
//! whole and free of duplicates, every activity ran at least once (counted
//! in a log the activities append to), and no message or activity is left
//! queued.

mod support;

use durable_postgres::testing::TestCluster;
use durable_postgres::{PostgresBackend, PostgresOptions};
use durable_runtime::backend::Backend;
use durable_runtime::history::{EventKind, HistoryEvent, OrchestrationStatus};
use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};
use support::check_no_duplicates;

/// Decides, line by line, when to kill the child.
type KillWhen = Box<dyn FnMut(&str) -> bool>;

struct Workload {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Workload {
    fn start(schema: &str, log: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_durable-postgres-crashtest"))
            .arg(TestCluster::shared().url())
            .arg(schema)
            .arg(log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the crashtest binary failed: {e}"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Workload { child, lines }
    }

    /// Reads markers until `kill_when` says so (then SIGKILLs the child and
    /// returns true) or the workload finishes (returns false).
    fn run(mut self, what: &str, limit: Duration, mut kill_when: impl FnMut(&str) -> bool) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line == "ALL DONE" => {
                    let status = self.child.wait().expect("waiting for the child");
                    assert!(status.success(), "the workload exited with {status}");
                    return false;
                }
                Ok(line) if kill_when(&line) => {
                    // std's kill is SIGKILL on Unix: no destructor runs.
                    self.child.kill().expect("SIGKILL");
                    let _ = self.child.wait();
                    return true;
                }
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    panic!("phase \"{what}\": no progress marker within {limit:?}");
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().expect("waiting for the child");
                    panic!(
                        "phase \"{what}\": the workload exited early with {status} (its stderr is above)"
                    );
                }
            }
        }
    }
}

/// Expected outcome per instance: id, output, activities, timers, children.
fn expected() -> Vec<(String, i64, usize, usize, usize)> {
    let mut v = vec![("fan".to_string(), (0..500).map(|k| k * 2).sum(), 500, 0, 0)];
    for i in 0..30 {
        v.push((format!("chain-{i}"), i + 5, 5, 0, 0));
    }
    for i in 0..5 {
        v.push((format!("timers-{i}"), i + 3, 3, 3, 0));
    }
    for i in 0..3 {
        v.push((format!("parent-{i}"), 30 * i + 9, 0, 0, 3));
        v.push((format!("event-{i}"), i + 1, 1, 0, 0));
        v.push((format!("sender-{i}"), 0, 0, 0, 0));
    }
    v
}

/// The history is one whole execution: started and completed once, every
/// episode completed, every task and timer scheduled and completed once,
/// none failed; returns the tasks scheduled.
fn check_history(id: &str, h: &[HistoryEvent], activities: usize, timers: usize) -> Vec<i32> {
    let count = |f: &dyn Fn(&EventKind) -> bool| h.iter().filter(|e| f(&e.kind)).count();
    assert_eq!(
        count(&|k| matches!(k, EventKind::ExecutionStarted { .. })),
        1,
        "{id}: ExecutionStarted count"
    );
    assert!(
        matches!(
            h.last().map(|e| &e.kind),
            Some(EventKind::ExecutionCompleted { .. })
        ),
        "{id}: the history does not end with ExecutionCompleted"
    );
    assert_eq!(
        count(&|k| matches!(k, EventKind::ExecutionCompleted { .. })),
        1,
        "{id}: ExecutionCompleted count"
    );
    assert_eq!(
        count(&|k| matches!(k, EventKind::OrchestratorStarted)),
        count(&|k| matches!(k, EventKind::OrchestratorCompleted)),
        "{id}: every episode that started must have completed exactly once"
    );
    check_no_duplicates(id, h);
    let mut scheduled = Vec::new();
    let mut completed = Vec::new();
    let (mut created, mut fired) = (0, 0);
    for e in h {
        match &e.kind {
            EventKind::TaskScheduled { .. } => scheduled.push(e.event_id),
            EventKind::TaskCompleted {
                task_scheduled_id, ..
            } => completed.push(*task_scheduled_id),
            EventKind::TaskFailed {
                task_scheduled_id,
                failure,
            } => panic!("{id}: task {task_scheduled_id} failed: {failure}"),
            EventKind::TimerCreated { .. } => created += 1,
            EventKind::TimerFired { .. } => fired += 1,
            _ => {}
        }
    }
    assert_eq!(scheduled.len(), activities, "{id}: activities scheduled");
    completed.sort();
    assert_eq!(
        completed, scheduled,
        "{id}: completions do not match schedules"
    );
    assert_eq!(
        (created, fired),
        (timers, timers),
        "{id}: timers created and fired"
    );
    scheduled
}

/// Instance `id` completed with `output`; returns its history.
async fn check_completed(backend: &PostgresBackend, id: &str, output: i64) -> Vec<HistoryEvent> {
    let meta = backend
        .get_instance(id, true)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .unwrap_or_else(|| panic!("instance {id} is missing (lost)"));
    assert_eq!(
        meta.status,
        OrchestrationStatus::Completed,
        "{id}: {meta:?}"
    );
    assert_eq!(
        meta.output.as_deref(),
        Some(output.to_string().as_str()),
        "{id}"
    );
    backend
        .get_history(id)
        .await
        .unwrap_or_else(|e| panic!("{e}"))
}

/// Every task of `id` in `tasks` ran, by the activity log.
fn check_ran(runs: &HashMap<(String, i32), usize>, id: &str, tasks: &[i32]) {
    for t in tasks {
        assert!(
            runs.contains_key(&(id.to_string(), *t)),
            "{id}: task {t} completed but never ran"
        );
    }
}

/// No message or activity is left queued in `schema`.
async fn check_drained(schema: &str) {
    let (db, connection) =
        tokio_postgres::connect(TestCluster::shared().url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting failed: {e}"));
    tokio::spawn(connection);
    for table in ["inbox", "activities"] {
        let left: i64 = db
            .query_one(&format!("SELECT count(*) FROM {schema}.{table}"), &[])
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .get(0);
        assert_eq!(
            left, 0,
            "work left in {table} after every instance finished"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_lose_nothing_and_duplicate_nothing() {
    let cluster = TestCluster::shared();
    let schema = cluster.fresh_schema();
    let log = std::env::temp_dir().join(format!("durable-pg-crash-{schema}.log"));
    let limit = Duration::from_secs(60);

    let nth = |prefix: &'static str, n: usize| {
        let mut seen = 0;
        Box::new(move |l: &str| {
            if l.starts_with(prefix) {
                seen += 1;
            }
            seen >= n
        }) as KillWhen
    };
    let phases: Vec<(&str, KillWhen)> = vec![
        ("right after start", nth("started", 1)),
        ("during the 500 fan-out", nth("fan ", 3)),
        ("later in the fan-out", nth("fan ", 4)),
        ("mid-episode", nth("episode ", 10)),
        ("mid-activity", nth("mid-activity", 1)),
        ("between episodes", nth("timer-armed", 2)),
        ("again mid-episode", nth("episode ", 20)),
    ];
    let planned = phases.len();
    let mut kills = Vec::new();
    let t0 = Instant::now();
    for (what, kill_when) in phases {
        if Workload::start(&schema, &log).run(what, limit, kill_when) {
            kills.push(what);
        } else {
            break;
        }
    }
    assert_eq!(
        kills.len(),
        planned,
        "the workload finished before every kill point was reached (killed: {kills:?})"
    );
    assert!(
        !Workload::start(&schema, &log).run("final run", Duration::from_secs(120), |_| false),
        "the final run was killed"
    );
    let took = t0.elapsed();

    let backend = PostgresBackend::connect_with(
        cluster.url(),
        PostgresOptions {
            schema: schema.clone(),
            ..PostgresOptions::default()
        },
    )
    .await
    .unwrap_or_else(|e| panic!("connecting after the crashes failed: {e}"));
    let text = std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("reading the activity log failed: {e}"));
    let _ = std::fs::remove_file(&log);
    let mut runs: HashMap<(String, i32), usize> = HashMap::new();
    for line in text.lines() {
        let (inst, task) = line
            .split_once(' ')
            .unwrap_or_else(|| panic!("a torn line in the activity log: {line:?}"));
        let task = task.parse().unwrap_or_else(|e| panic!("{line:?}: {e}"));
        *runs.entry((inst.to_string(), task)).or_default() += 1;
    }
    let mut total_tasks = 0;
    for (id, output, activities, timers, children) in expected() {
        let h = check_completed(&backend, &id, output).await;
        let tasks = check_history(&id, &h, activities, timers);
        check_ran(&runs, &id, &tasks);
        total_tasks += activities;
        let mut seen = 0;
        for e in &h {
            if let EventKind::SubOrchestrationInstanceCreated { instance_id, .. } = &e.kind {
                let meta = backend
                    .get_instance(instance_id, true)
                    .await
                    .unwrap()
                    .unwrap();
                assert_eq!(meta.status, OrchestrationStatus::Completed, "{instance_id}");
                let ch = backend.get_history(instance_id).await.unwrap();
                let tasks = check_history(instance_id, &ch, 2, 0);
                check_ran(&runs, instance_id, &tasks);
                total_tasks += 2;
                seen += 1;
            }
        }
        assert_eq!(seen, children, "{id}: children");
    }
    let executions: usize = runs.values().sum();
    assert!(
        executions >= total_tasks,
        "{executions} executions < {total_tasks} tasks"
    );
    check_drained(&schema).await;
    println!(
        "killed {} times ({kills:?}), {:.1} s in all; {executions} activity executions for \
         {total_tasks} tasks ({} re-runs)",
        kills.len(),
        took.as_secs_f64(),
        executions - total_tasks
    );
}
