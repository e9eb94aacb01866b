//! Crash safety, for real: the `durable-sqlite-crashtest` workload runs in a
//! child process that is SIGKILLed at several points (mid-activity, during a
//! 1,000-activity fan-out, mid-episode, between episodes, right after
//! start) and restarted on the same file until it finishes. Then every
//! instance must have its expected output, every history must be whole and
//! free of duplicates, every activity must have run at least once, and the
//! file must pass `PRAGMA integrity_check`.

use durable_runtime::backend::Backend;
use durable_runtime::history::{EventKind, HistoryEvent, OrchestrationStatus};
use durable_sqlite::SqliteBackend;
use std::collections::{HashMap, HashSet};
use std::io::BufRead;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Decides, line by line, when to kill the child.
type KillWhen = Box<dyn FnMut(&str) -> bool>;

struct Workload {
    child: Child,
    lines: mpsc::Receiver<String>,
}

impl Workload {
    fn start(db: &Path, log: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_durable-sqlite-crashtest"))
            .arg(db)
            .arg(log)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting the crashtest binary failed: {e}"));
        let stdout = child
            .stdout
            .take()
            .unwrap_or_else(|| panic!("the child has no stdout"));
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
                    let status = self
                        .child
                        .wait()
                        .unwrap_or_else(|e| panic!("waiting for the child failed: {e}"));
                    assert!(status.success(), "the workload exited with {status}");
                    return false;
                }
                Ok(line) if kill_when(&line) => {
                    // std's kill is SIGKILL on Unix: no destructor, no flush.
                    self.child
                        .kill()
                        .unwrap_or_else(|e| panic!("killing the child failed: {e}"));
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
                    let status = self
                        .child
                        .wait()
                        .unwrap_or_else(|e| panic!("waiting for the child failed: {e}"));
                    panic!("phase \"{what}\": the workload exited early with {status} (its stderr is above)");
                }
            }
        }
    }
}

/// Expected outcome per instance: id, output, activities, timers.
fn expected() -> Vec<(String, i64, usize, usize)> {
    let mut v = vec![("fan".to_string(), (0..1000).map(|k| k * 2).sum(), 1000, 0)];
    for i in 0..40 {
        v.push((format!("chain-{i}"), i + 5, 5, 0));
    }
    for i in 0..5 {
        v.push((format!("timers-{i}"), i + 3, 3, 3));
    }
    v
}

fn check_history(id: &str, h: &[HistoryEvent], activities: usize, timers: usize) {
    let count = |f: &dyn Fn(&EventKind) -> bool| h.iter().filter(|e| f(&e.kind)).count();
    assert_eq!(
        count(&|k| matches!(k, EventKind::ExecutionStarted { .. })),
        1,
        "{id}: ExecutionStarted count"
    );
    assert_eq!(
        count(&|k| matches!(k, EventKind::ExecutionCompleted { .. })),
        1,
        "{id}: ExecutionCompleted count"
    );
    assert!(
        matches!(
            h.last().map(|e| &e.kind),
            Some(EventKind::ExecutionCompleted { .. })
        ),
        "{id}: the history does not end with ExecutionCompleted"
    );
    assert_eq!(
        count(&|k| matches!(k, EventKind::OrchestratorStarted)),
        count(&|k| matches!(k, EventKind::OrchestratorCompleted)),
        "{id}: every episode that started must have completed exactly once"
    );
    let mut scheduled = HashSet::new();
    let mut completed = HashSet::new();
    let mut created = HashSet::new();
    let mut fired = HashSet::new();
    for e in h {
        match &e.kind {
            EventKind::TaskScheduled { .. } => {
                assert!(
                    scheduled.insert(e.event_id),
                    "{id}: task {} scheduled twice",
                    e.event_id
                )
            }
            EventKind::TaskCompleted {
                task_scheduled_id, ..
            } => assert!(
                completed.insert(*task_scheduled_id),
                "{id}: task {task_scheduled_id} completed twice"
            ),
            EventKind::TaskFailed {
                task_scheduled_id,
                failure,
            } => panic!("{id}: task {task_scheduled_id} failed: {failure}"),
            EventKind::TimerCreated { .. } => {
                assert!(
                    created.insert(e.event_id),
                    "{id}: timer {} created twice",
                    e.event_id
                )
            }
            EventKind::TimerFired { timer_id, .. } => {
                assert!(
                    fired.insert(*timer_id),
                    "{id}: timer {timer_id} fired twice"
                )
            }
            _ => {}
        }
    }
    assert_eq!(scheduled.len(), activities, "{id}: activities scheduled");
    assert_eq!(
        completed, scheduled,
        "{id}: completions do not match schedules"
    );
    assert_eq!(created.len(), timers, "{id}: timers created");
    assert_eq!(
        fired, created,
        "{id}: fired timers do not match created ones"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_workers_lose_nothing_and_duplicate_nothing() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap_or_else(|e| panic!("creating a temporary directory failed: {e}"));
    let db = dir.path().join("crash.db");
    let log = dir.path().join("activities.log");
    let limit = Duration::from_secs(60);

    let mut kills = Vec::new();
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
        ("during the 1,000 fan-out", nth("fan ", 3)),
        // The fan-out's activities were queued first, so chains advance
        // only once it has drained.
        ("later in the fan-out", nth("fan ", 2)),
        ("mid-episode", nth("episode ", 10)),
        ("mid-activity", nth("mid-activity", 1)),
        ("between episodes", nth("timer-armed", 1)),
    ];
    let planned = phases.len();
    for (what, kill_when) in phases {
        if Workload::start(&db, &log).run(what, limit, kill_when) {
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
        !Workload::start(&db, &log).run("final run", Duration::from_secs(120), |_| false),
        "the final run was killed"
    );

    let backend = SqliteBackend::open(&db)
        .unwrap_or_else(|e| panic!("reopening after the crashes failed: {e}"));
    assert_eq!(
        backend
            .integrity_check()
            .await
            .unwrap_or_else(|e| panic!("{e}")),
        vec!["ok".to_string()]
    );
    let text = std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("reading the activity log failed: {e}"));
    let mut runs: HashMap<(String, i32), usize> = HashMap::new();
    for line in text.lines() {
        if let Some((inst, task)) = line.split_once(' ') {
            if let Ok(task) = task.parse() {
                *runs.entry((inst.to_string(), task)).or_default() += 1;
            }
        }
    }
    let mut total_tasks = 0;
    for (id, output, activities, timers) in expected() {
        let meta = backend
            .get_instance(&id, true)
            .await
            .unwrap_or_else(|e| panic!("{e}"))
            .unwrap_or_else(|| panic!("instance {id} is missing"));
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
        let h = backend
            .get_history(&id)
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        check_history(&id, &h, activities, timers);
        for e in &h {
            if let EventKind::TaskCompleted {
                task_scheduled_id, ..
            } = e.kind
            {
                assert!(
                    runs.contains_key(&(id.clone(), task_scheduled_id)),
                    "{id}: task {task_scheduled_id} completed but never ran"
                );
            }
        }
        total_tasks += activities;
    }
    let executions: usize = runs.values().sum();
    assert!(executions >= total_tasks);
    drop(backend);
    let conn = rusqlite::Connection::open(&db).unwrap_or_else(|e| panic!("{e}"));
    for table in ["inbox", "activities"] {
        let left: i64 = conn
            .query_row(&format!("SELECT count(*) FROM {table}"), [], |r| r.get(0))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            left, 0,
            "work left in {table} after every instance finished"
        );
    }
    println!(
        "killed {} times ({kills:?}); {executions} activity executions for {total_tasks} tasks \
         ({} re-runs)",
        kills.len(),
        executions - total_tasks
    );
}
