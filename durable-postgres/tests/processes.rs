//! Separate worker processes (`durable-postgres-worker`) on one database:
//! three share 1,000 orchestrations of every kind (chains, fan-outs of 100,
//! timers, sub-orchestrations, external events) and apply each episode
//! once; then one is SIGKILLed mid-run and the other two finish its work
//! once its leases expire.

mod support;

use durable_postgres::testing::TestCluster;
use durable_postgres::{PostgresBackend, PostgresOptions};
use durable_runtime::backend::Backend;
use durable_runtime::history::{EventKind, HistoryEvent, OrchestrationStatus};
use durable_runtime::{Client, ScheduleOptions};
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::check_no_duplicates;

/// How long the whole run may take.
const LIMIT: Duration = Duration::from_secs(120);

/// The lease of the worker processes: short, so a killed one's work moves soon.
const LEASE: Duration = Duration::from_millis(2000);

struct WorkerProcess {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<String>,
    /// Activities it reported starting.
    activities: usize,
}

impl WorkerProcess {
    fn start(schema: &str, lease_ms: u64) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_durable-postgres-worker"))
            .args([TestCluster::shared().url(), schema, &lease_ms.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| panic!("starting durable-postgres-worker failed: {e}"));
        let stdin = child.stdin.take();
        let stdout = child.stdout.take().expect("stdout is piped");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let mut p = WorkerProcess {
            child,
            stdin,
            lines,
            activities: 0,
        };
        p.until("ready", Instant::now() + LIMIT, |l| l == "ready");
        p
    }

    /// Reads lines until one satisfies `done`, counting activities.
    fn until(
        &mut self,
        what: &str,
        deadline: Instant,
        mut done: impl FnMut(&str) -> bool,
    ) -> String {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    if line == "activity" {
                        self.activities += 1;
                    }
                    if done(&line) {
                        return line;
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("a worker process did not report {what} in time")
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    panic!("a worker process ended before it reported {what}")
                }
            }
        }
    }

    /// Closes its input, so it shuts down, and returns how many activities
    /// it ran.
    fn stop(mut self) -> usize {
        drop(self.stdin.take());
        let line = self.until("done", Instant::now() + LIMIT, |l| l.starts_with("done "));
        let _ = self.child.wait();
        let ran: usize = line["done ".len()..].parse().expect("done <count>");
        assert_eq!(
            ran, self.activities,
            "the process's own count and its lines differ"
        );
        ran
    }

    /// SIGKILLs it; returns the activities it reported starting.
    fn kill(mut self) -> usize {
        self.child.kill().expect("SIGKILL");
        let _ = self.child.wait();
        // Every line it wrote before it died, up to the end of the pipe.
        loop {
            match self.lines.recv_timeout(LIMIT) {
                Ok(line) if line == "activity" => self.activities += 1,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    panic!("the killed process's output did not end")
                }
            }
        }
        self.activities
    }

    /// Counts the activity lines read so far.
    fn drain(&mut self) {
        while let Ok(line) = self.lines.try_recv() {
            if line == "activity" {
                self.activities += 1;
            }
        }
    }
}

async fn client_for(schema: &str) -> (Client, Arc<PostgresBackend>) {
    let options = PostgresOptions {
        schema: schema.to_string(),
        pool_size: 4,
        ..PostgresOptions::default()
    };
    let backend = Arc::new(
        PostgresBackend::connect_with(TestCluster::shared().url(), options)
            .await
            .unwrap_or_else(|e| panic!("connecting failed: {e}")),
    );
    (Client::new(backend.clone()), backend)
}

/// The value raised as event `go`.
const GO: i64 = 7;

/// One scheduled orchestration and what it must end with.
struct Planned {
    id: String,
    output: i64,
    /// Activities it (and its child) runs.
    activities: usize,
    /// Whether it has a child whose history is checked too.
    child: bool,
}

/// Schedules `n` orchestrations with ids `<prefix>-<i>`: every hundredth a
/// fan-out of 100, the rest in turn a chain of three, a timer, a
/// sub-orchestration (a chain) and a wait for an external event, which is
/// raised once all are scheduled.
async fn schedule(client: &Client, prefix: &str, n: i64) -> Vec<Planned> {
    let mut planned = Vec::new();
    let mut waiting = Vec::new();
    for x in 0..n {
        let (name, output, activities) = match (x % 100, x % 4) {
            (0, _) => ("fan100", 100 * x + 5050, 100),
            (_, 0) => ("chain", x + 3, 3),
            (_, 1) => ("timer", x + 1, 1),
            (_, 2) => ("parent", x + 4, 4),
            _ => ("event", x + GO + 1, 1),
        };
        let id = client
            .schedule_by_name(
                name,
                &x,
                ScheduleOptions::with_id(format!("{prefix}-{x}-{name}")),
            )
            .await
            .unwrap_or_else(|e| panic!("scheduling failed: {e}"));
        if name == "event" {
            waiting.push(id.clone());
        }
        planned.push(Planned {
            id,
            output,
            activities,
            child: name == "parent",
        });
    }
    for id in waiting {
        client
            .raise_event(&id, "go", &GO)
            .await
            .unwrap_or_else(|e| panic!("raising go on {id} failed: {e}"));
    }
    planned
}

/// The history of one completed execution, started and completed once,
/// with no task, timer or child scheduled or completed twice.
fn check_once(id: &str, history: &[HistoryEvent]) {
    let count = |f: fn(&EventKind) -> bool| history.iter().filter(|e| f(&e.kind)).count();
    assert_eq!(
        count(|k| matches!(k, EventKind::ExecutionStarted { .. })),
        1,
        "{id}: ExecutionStarted count"
    );
    assert_eq!(
        count(|k| matches!(k, EventKind::ExecutionCompleted { .. })),
        1,
        "{id}: ExecutionCompleted count"
    );
    check_no_duplicates(id, history);
}

/// Every instance completed with its output, once, and neither it nor its
/// child has a duplicated history event.
async fn check_all(client: &Client, backend: &PostgresBackend, planned: &[Planned]) {
    for p in planned {
        let id = &p.id;
        let state = client
            .wait_for_completion(id, LIMIT)
            .await
            .unwrap_or_else(|e| panic!("{id} did not complete: {e}"));
        assert_eq!(state.status(), OrchestrationStatus::Completed, "{id}");
        assert_eq!(state.output::<i64>().unwrap(), p.output, "{id}");
        let history = backend.get_history(id).await.unwrap();
        check_once(id, &history);
        let scheduled = history
            .iter()
            .filter(|e| matches!(e.kind, EventKind::TaskScheduled { .. }))
            .count();
        let mut children = 0;
        for e in &history {
            if let EventKind::SubOrchestrationInstanceCreated { instance_id, .. } = &e.kind {
                let child = backend.get_history(instance_id).await.unwrap();
                check_once(instance_id, &child);
                children += child
                    .iter()
                    .filter(|e| matches!(e.kind, EventKind::TaskScheduled { .. }))
                    .count();
            }
        }
        assert_eq!(scheduled + children, p.activities, "{id}: activities");
        assert_eq!(children > 0, p.child, "{id}: child");
    }
}

/// Reads the processes' lines until they report at least `total`
/// activities between them (each reports one before its activity returns,
/// but the lines may arrive after the instance completed).
fn count_until(workers: &mut [WorkerProcess], total: usize) -> Vec<usize> {
    let deadline = Instant::now() + LIMIT;
    loop {
        for w in workers.iter_mut() {
            w.drain();
        }
        let ran: Vec<usize> = workers.iter().map(|w| w.activities).collect();
        if ran.iter().sum::<usize>() >= total {
            return ran;
        }
        assert!(
            Instant::now() < deadline,
            "the processes reported {ran:?} activities, fewer than the {total} that completed"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The instances whose episode or activities the process `pid` holds a
/// lease on, read straight from the tables.
async fn held_by(schema: &str, pid: u32) -> HashSet<String> {
    let (db, connection) =
        tokio_postgres::connect(TestCluster::shared().url(), tokio_postgres::NoTls)
            .await
            .unwrap_or_else(|e| panic!("connecting failed: {e}"));
    tokio::spawn(connection);
    let owner = format!("%:{pid}:%");
    let rows = db
        .query(
            &format!(
                "SELECT instance_id FROM {schema}.instances
                  WHERE lease_token IS NOT NULL AND lease_owner LIKE $1
                 UNION
                 SELECT instance_id FROM {schema}.activities
                  WHERE lease_token IS NOT NULL AND lease_owner LIKE $1"
            ),
            &[&owner],
        )
        .await
        .unwrap_or_else(|e| panic!("reading the leases failed: {e}"));
    rows.iter().map(|r| r.get(0)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_a_thousand_orchestrations_and_finish_a_killed_one_s_work() {
    let schema = TestCluster::shared().fresh_schema();
    let (client, backend) = client_for(&schema).await;
    let mut workers: Vec<WorkerProcess> = (0..3)
        .map(|_| WorkerProcess::start(&schema, LEASE.as_millis() as u64))
        .collect();

    // 1. A thousand orchestrations over three processes.
    let t0 = Instant::now();
    let first = schedule(&client, "a", 1000).await;
    check_all(&client, &backend, &first).await;
    let secs = t0.elapsed().as_secs_f64();
    let activities: usize = first.iter().map(|p| p.activities).sum();
    let ran = count_until(&mut workers, activities);
    println!(
        "3 processes: 1,000 orchestrations ({activities} activities) in {secs:.2} s; activities per process {ran:?}"
    );
    assert!(
        ran.iter().all(|n| *n > 0),
        "each process must do part of the work: {ran:?}"
    );

    // 2. Another 300; one process is SIGKILLed once it has started 100 of
    // their activities.
    let second = schedule(&client, "b", 300).await;
    let before = workers[0].activities;
    workers[0].until("100 more activities", Instant::now() + LIMIT, {
        let mut seen = before;
        move |l| {
            if l == "activity" {
                seen += 1;
            }
            seen >= before + 100
        }
    });
    let victim = workers.remove(0);
    let pid = victim.child.id();
    let killed_at = Instant::now();
    let victim_ran = victim.kill();
    let held = held_by(&schema, pid).await;
    assert!(
        !held.is_empty(),
        "the killed process held no lease: the kill was not mid-run"
    );
    // What it held is finished by the others once its leases expire.
    let held_plans: Vec<&Planned> = second.iter().filter(|p| held.contains(&p.id)).collect();
    for p in &held_plans {
        client
            .wait_for_completion(&p.id, LIMIT)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "{}, held by the killed process, did not complete: {e}",
                    p.id
                )
            });
    }
    let taken_over = killed_at.elapsed();
    check_all(&client, &backend, &second).await;
    let all_done = killed_at.elapsed();
    let total: usize = first.iter().chain(&second).map(|p| p.activities).sum();
    let survivors = count_until(&mut workers, total - victim_ran);
    let survivors_ran: Vec<usize> = workers.into_iter().map(WorkerProcess::stop).collect();
    assert_eq!(
        survivors, survivors_ran,
        "counted lines and the processes' counts differ"
    );
    println!(
        "SIGKILLed one of three processes after {victim_ran} activities while it held {} \
         leases ({} of them on instances of the second batch); those finished {:.2} s and \
         all 300 {:.2} s after the kill (lease {LEASE:?}); survivors ran {survivors_ran:?}",
        held.len(),
        held_plans.len(),
        taken_over.as_secs_f64(),
        all_done.as_secs_f64(),
    );
    assert!(
        victim_ran + survivors_ran.iter().sum::<usize>() >= total,
        "every activity runs at least once: {victim_ran} + {survivors_ran:?} < {total}"
    );
}
