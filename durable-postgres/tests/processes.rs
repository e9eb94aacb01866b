//! Separate worker processes (`durable-postgres-worker`) on one database:
//! they share the work and apply each episode once; when one is SIGKILLed
//! mid-run, the others finish its work once its leases expire.

mod support;

use durable_postgres::testing::TestCluster;
use durable_postgres::{PostgresBackend, PostgresOptions};
use durable_runtime::backend::Backend;
use durable_runtime::history::EventKind;
use durable_runtime::{Client, ScheduleOptions};
use std::io::{BufRead, BufReader};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::check_no_duplicates;

/// How long the whole run may take.
const LIMIT: Duration = Duration::from_secs(120);

/// Activities per `mix` orchestration: one, a fan-out of five, one in the child.
const ACTIVITIES: usize = 7;

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

/// `mix(x)`: a = x + 1; five activities add one to a + i; the child adds one.
fn expected(x: i64) -> i64 {
    5 * (x + 1) + 15 + 1
}

async fn schedule(client: &Client, n: i64) -> Vec<(String, i64)> {
    let mut ids = Vec::new();
    for x in 0..n {
        let id = client
            .schedule_by_name("mix", &x, ScheduleOptions::default())
            .await
            .unwrap_or_else(|e| panic!("scheduling failed: {e}"));
        ids.push((id, x));
    }
    ids
}

/// Every instance completed with its output, and neither it nor its child
/// has a duplicated history event.
async fn check_all(client: &Client, backend: &PostgresBackend, ids: &[(String, i64)]) {
    for (id, x) in ids {
        let state = client
            .wait_for_completion(id, LIMIT)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(state.output::<i64>().unwrap(), expected(*x), "{id}");
        let history = backend.get_history(id).await.unwrap();
        check_no_duplicates(id, &history);
        for e in &history {
            if let EventKind::SubOrchestrationInstanceCreated { instance_id, .. } = &e.kind {
                let child = backend.get_history(instance_id).await.unwrap();
                check_no_duplicates(instance_id, &child);
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_share_the_work() {
    let schema = TestCluster::shared().fresh_schema();
    let (client, backend) = client_for(&schema).await;
    let workers: Vec<WorkerProcess> = (0..3)
        .map(|_| WorkerProcess::start(&schema, 5000))
        .collect();
    let t0 = Instant::now();
    let ids = schedule(&client, 300).await;
    check_all(&client, &backend, &ids).await;
    let secs = t0.elapsed().as_secs_f64();
    let ran: Vec<usize> = workers.into_iter().map(WorkerProcess::stop).collect();
    println!(
        "3 processes, 300 orchestrations ({} activities) in {secs:.2} s; activities per process {ran:?}",
        300 * ACTIVITIES
    );
    assert!(
        ran.iter().sum::<usize>() >= 300 * ACTIVITIES,
        "every activity runs at least once: {ran:?}"
    );
    assert!(
        ran.iter().all(|n| *n > 0),
        "each process must do part of the work: {ran:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_process_s_work_is_finished_by_the_others() {
    let lease = Duration::from_millis(2000);
    let schema = TestCluster::shared().fresh_schema();
    let (client, backend) = client_for(&schema).await;
    let mut victim = WorkerProcess::start(&schema, lease.as_millis() as u64);
    let mut survivor = WorkerProcess::start(&schema, lease.as_millis() as u64);
    let ids = schedule(&client, 200).await;
    // Mid-run: once the victim has started 100 activities.
    victim.until("100 activities", Instant::now() + LIMIT, {
        let mut seen = 0;
        move |l| {
            if l == "activity" {
                seen += 1;
            }
            seen >= 100
        }
    });
    let killed_at = Instant::now();
    let victim_ran = victim.kill();
    check_all(&client, &backend, &ids).await;
    let finished_after = killed_at.elapsed();
    survivor.drain();
    let survivor_ran = survivor.stop();
    println!(
        "SIGKILLed one of two processes after it started {victim_ran} activities; the other \
         ran {survivor_ran} and finished all 200 orchestrations {:.2} s after the kill \
         (lease {:?})",
        finished_after.as_secs_f64(),
        lease
    );
    assert!(
        victim_ran + survivor_ran >= 200 * ACTIVITIES,
        "every activity runs at least once: {victim_ran} + {survivor_ran}"
    );
    assert!(survivor_ran > 0, "the survivor did no work");
}
