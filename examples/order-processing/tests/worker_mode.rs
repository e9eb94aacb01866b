//! `order-processing worker`: a worker-only process that runs work another
//! process schedules, and stops gracefully on SIGTERM.

use durable::prelude::*;
use order_processing::workflows::{process_order, Order, OrderItem, OrderResult};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How long each step may take before the test fails.
const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_worker_mode_runs_work_and_stops_gracefully_on_sigterm() {
    let dir = std::env::temp_dir().join(format!("durable-example-worker-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let db = dir.join("orders.db");
    let mut child = KillOnDrop(Some(
        Command::new(env!("CARGO_BIN_EXE_order-processing"))
            .arg("--db")
            .arg(&db)
            .arg("worker")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the example binary starts"),
    ));

    // Its output, line by line, from a thread of its own.
    let (lines_tx, lines) = mpsc::channel::<String>();
    let stdout = child.get().stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut seen = Vec::new();
    // A failure kills the child (KillOnDrop) as the test unwinds.
    let next_line = |what: &str, seen: &mut Vec<String>| loop {
        match lines.recv_timeout(LIMIT) {
            Ok(line) if line.contains(what) => {
                seen.push(line);
                return;
            }
            Ok(line) => seen.push(line),
            Err(e) => panic!("the worker never printed {what:?} ({e}); it printed: {seen:#?}"),
        }
    };
    next_line("worker ready", &mut seen);

    // Another process's client schedules an order on the same file; the
    // worker-only process runs it.
    let backend = std::sync::Arc::new(durable::sqlite::SqliteBackend::open(&db).unwrap());
    let client = Client::new(backend);
    let order = Order {
        customer: "Carol".into(),
        items: vec![OrderItem {
            name: "Lamp".into(),
            quantity: 2,
            unit_price: 30.0,
        }],
    };
    let id = client.schedule(process_order, order).await.unwrap();
    let state = client.wait_for_completion(&id, LIMIT).await.unwrap();
    assert_eq!(
        state.status(),
        OrchestrationStatus::Completed,
        "{:?}",
        state.failure()
    );
    let result: OrderResult = state.output().unwrap();
    assert_eq!(result.total, 60.0);

    let pid = child.get().id().to_string();
    let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
    assert!(status.success(), "`kill -TERM {pid}` failed");
    next_line("worker stopped gracefully after SIGTERM", &mut seen);

    let (done_tx, done) = mpsc::channel();
    let running = child.0.take().unwrap();
    std::thread::spawn(move || {
        let _ = done_tx.send(running.wait_with_output());
    });
    let exit = match done.recv_timeout(LIMIT) {
        Ok(exit) => exit.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-KILL", &pid]).status();
            panic!("the worker did not exit within {LIMIT:?} after SIGTERM; it was killed");
        }
    };
    assert!(
        exit.status.success(),
        "the worker exited with {} after SIGTERM; stderr: {}",
        exit.status,
        String::from_utf8_lossy(&exit.stderr)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// Kills the child process if the test fails before it exits.
struct KillOnDrop(Option<Child>);

impl KillOnDrop {
    fn get(&mut self) -> &mut Child {
        self.0.as_mut().expect("the child is still owned")
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
