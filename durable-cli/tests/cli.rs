//! The `durable` binary against a real SQLite file, filled by a real worker
//! running in the test process: every command, its text and JSON output,
//! and the exit codes of its errors.

mod support;

use durable_runtime::history::{HistoryEvent, OrchestrationStatus};
use durable_runtime::{Client, OrchestrationState, ScheduleOptions, Worker, WorkerHandle};
use durable_sqlite::SqliteBackend;
use serde_json::Value;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::Arc;
use support::{drain, durable, registry, run_raw, run_with_input, Run, Running, LIMIT};

/// A database with a worker running on it, and the CLI pointed at it.
struct Store {
    _dir: tempfile::TempDir,
    path: PathBuf,
    client: Client,
    worker: WorkerHandle,
}

impl Store {
    async fn new() -> Store {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
            .unwrap_or_else(|e| panic!("creating a temporary directory failed: {e}"));
        let path = dir.path().join("durable.db");
        let backend = Arc::new(SqliteBackend::open(&path).expect("opening the test database"));
        let worker = Worker::new(backend.clone(), registry())
            .start()
            .expect("starting the worker");
        Store {
            _dir: dir,
            path,
            client: Client::new(backend),
            worker,
        }
    }

    fn store(&self) -> String {
        format!("sqlite:{}", self.path.display())
    }

    /// Runs the CLI on this store.
    fn cli(&self, args: &[&str]) -> Run {
        let store = self.store();
        let mut all = vec!["--store", store.as_str()];
        all.extend_from_slice(args);
        run_raw(&all)
    }

    async fn schedule(&self, name: &str, input: impl serde::Serialize, id: &str) -> String {
        self.client
            .schedule_by_name(name, &input, ScheduleOptions::with_id(id))
            .await
            .unwrap_or_else(|e| panic!("scheduling {name} as {id}: {e}"))
    }

    async fn done(&self, id: &str) -> OrchestrationState {
        self.client
            .wait_for_completion(id, LIMIT)
            .await
            .unwrap_or_else(|e| panic!("waiting for {id} to finish: {e}"))
    }

    async fn started(&self, id: &str) {
        self.client
            .wait_for_start(id, LIMIT)
            .await
            .unwrap_or_else(|e| panic!("waiting for {id} to start: {e}"));
    }

    async fn status(&self, id: &str) -> Option<OrchestrationStatus> {
        self.client
            .get_status(id)
            .await
            .expect("reading a status")
            .map(|s| s.status())
    }

    /// The usual instances: completed, failed, waiting for an event, with a
    /// sub-orchestration, with a timer.
    async fn seeded() -> Store {
        let s = Store::new().await;
        s.schedule("greet", "world", "greet-1").await;
        s.schedule("checkout", 25, "checkout-1").await;
        s.schedule("approval", (), "approval-1").await;
        s.schedule("parent", "child", "parent-1").await;
        s.schedule("timed", "timer", "timed-1").await;
        for id in ["greet-1", "checkout-1", "parent-1", "timed-1"] {
            s.done(id).await;
        }
        s.done("parent-1:0000").await;
        s.started("approval-1").await;
        s
    }

    async fn stop(self) {
        self.worker.shutdown().await;
    }
}

fn ids_in_table(text: &str) -> Vec<String> {
    text.lines()
        .skip(1)
        .filter(|l| !l.starts_with("more:"))
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_filters_pages_and_json() {
    let s = Store::seeded().await;
    let all = s.cli(&["list"]).ok();
    let mut ids = ids_in_table(&all.stdout);
    ids.sort();
    assert_eq!(
        ids,
        [
            "approval-1",
            "checkout-1",
            "greet-1",
            "parent-1",
            "parent-1:0000",
            "timed-1"
        ],
        "{}",
        all.stdout
    );
    assert!(all.stdout.starts_with("INSTANCE "), "{}", all.stdout);
    let row = |id: &str| {
        all.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("no row for {id}: {}", all.stdout))
            .to_string()
    };
    assert!(
        row("checkout-1").contains(" Failed "),
        "{}",
        row("checkout-1")
    );
    assert!(
        row("approval-1").contains(" Running "),
        "{}",
        row("approval-1")
    );
    assert!(row("greet-1").contains("greet"), "{}", row("greet-1"));

    let failed = s.cli(&["list", "--status", "failed"]).ok();
    assert_eq!(ids_in_table(&failed.stdout), ["checkout-1"]);
    let two = s.cli(&["list", "--status", "Running,FAILED"]).ok();
    assert_eq!(ids_in_table(&two.stdout), ["approval-1", "checkout-1"]);
    let greet = s.cli(&["list", "--name", "greet"]).ok();
    assert_eq!(ids_in_table(&greet.stdout), ["greet-1", "parent-1:0000"]);
    let prefix = s.cli(&["list", "--prefix", "parent-"]).ok();
    assert_eq!(ids_in_table(&prefix.stdout), ["parent-1", "parent-1:0000"]);
    let none = s
        .cli(&["list", "--created-after", "2999-01-01T00:00:00Z"])
        .ok();
    assert_eq!(none.stdout, "no instances match\n");
    let before = s
        .cli(&["list", "--created-before", "2999-01-01T00:00:00+02:00"])
        .ok();
    assert_eq!(ids_in_table(&before.stdout).len(), 6);

    // Pages of two, followed by their tokens, give every instance once.
    let mut seen = Vec::new();
    let mut token: Option<String> = None;
    for page in 0.. {
        assert!(page < 10, "paging does not end");
        let mut args = vec!["list", "--page-size", "2"];
        if let Some(t) = token.as_deref() {
            args.extend(["--continue", t]);
        }
        let r = s.cli(&args).ok();
        let rows = ids_in_table(&r.stdout);
        assert!(rows.len() <= 2, "{}", r.stdout);
        seen.extend(rows);
        token = r
            .stdout
            .lines()
            .find_map(|l| l.strip_prefix("more: add --continue "))
            .map(|l| l.trim_end_matches(" for the next page").to_string());
        if token.is_none() {
            break;
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 6, "{seen:?}");
    assert_eq!(seen.len(), 6, "{seen:?}");
    let every = s.cli(&["list", "--page-size", "2", "--all"]).ok();
    assert_eq!(ids_in_table(&every.stdout).len(), 6);
    assert!(!every.stdout.contains("more:"), "{}", every.stdout);

    // JSON: the same instances, and the token of the next page.
    let j = s.cli(&["list", "--json", "--page-size", "4"]).ok().json();
    let instances = j["instances"].as_array().expect("instances is an array");
    assert_eq!(instances.len(), 4);
    assert!(j["continuation_token"].is_string(), "{j}");
    let first = &instances[0];
    assert_eq!(first["instance_id"], "approval-1");
    assert_eq!(first["name"], "approval");
    assert_eq!(first["status"], "Running");
    let j = s
        .cli(&["list", "--json", "--status", "completed", "--all"])
        .ok()
        .json();
    let completed: Vec<&str> = j["instances"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["instance_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        completed,
        ["greet-1", "parent-1", "parent-1:0000", "timed-1"]
    );
    assert_eq!(j["continuation_token"], Value::Null);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn show_prints_everything_about_an_instance() {
    let s = Store::seeded().await;
    let greet = s.cli(&["show", "greet-1"]).ok().stdout;
    for line in [
        "Instance       greet-1\n",
        "Name           greet\n",
        "Status         Completed\n",
        "Input          \"world\"\n",
        "Output         \"Hello, world!\"\n",
        "Parent         -\n",
        "Failure        -\n",
    ] {
        assert!(greet.contains(line), "no {line:?} in\n{greet}");
    }
    assert!(greet.contains("\nCreated        20"), "{greet}");
    assert!(greet.contains("\nCompleted      20"), "{greet}");

    let failed = s.cli(&["show", "checkout-1"]).ok().stdout;
    assert!(failed.contains("Status         Failed\n"), "{failed}");
    assert!(
        failed.contains("Failure        TaskFailedError: activity \"charge\""),
        "{failed}"
    );
    assert!(
        failed.contains("caused by CardDeclined: card expired (non-retriable)"),
        "{failed}"
    );

    let waiting = s.cli(&["show", "approval-1"]).ok().stdout;
    assert!(waiting.contains("Status         Running\n"), "{waiting}");
    assert!(
        waiting.contains("Custom status  \"waiting for approval\"\n"),
        "{waiting}"
    );
    let child = s.cli(&["show", "parent-1:0000"]).ok().stdout;
    assert!(child.contains("Parent         parent-1\n"), "{child}");

    let j = s.cli(&["show", "checkout-1", "--json"]).ok().json();
    assert_eq!(j["status"], "Failed");
    assert_eq!(j["name"], "checkout");
    assert_eq!(j["input"], 25);
    assert_eq!(j["failure"]["inner"]["error_type"], "CardDeclined");
    assert_eq!(j["failure"]["inner"]["non_retriable"], true);
    let j = s.cli(&["--json", "show", "greet-1"]).ok().json();
    assert_eq!(j["output"], "Hello, world!");
    assert!(j["completed_at"].is_string(), "{j}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_is_a_timeline_or_the_export_format() {
    let s = Store::seeded().await;
    let greet = s.cli(&["history", "greet-1"]).ok().stdout;
    assert!(greet.starts_with("Instance greet-1: "), "{greet}");
    let header = greet
        .lines()
        .find(|l| l.starts_with("SEQ "))
        .unwrap_or_else(|| panic!("no table in\n{greet}"));
    for column in ["KIND", "NAME", "START", "END", "DURATION", "RESULT"] {
        assert!(header.contains(column), "{header}");
    }
    let activity = greet
        .lines()
        .find(|l| l.starts_with("0 "))
        .unwrap_or_else(|| panic!("no activity row in\n{greet}"));
    assert!(activity.contains("activity"), "{activity}");
    assert!(activity.contains("hello"), "{activity}");
    assert!(
        activity.ends_with("completed: \"Hello, world!\""),
        "{activity}"
    );
    let columns: Vec<&str> = activity.split_whitespace().collect();
    assert!(
        columns[5].ends_with('s') && columns[5].starts_with(|c: char| c.is_ascii_digit()),
        "no duration in {activity}"
    );
    assert!(greet.contains("started"), "{greet}");
    assert!(greet.contains("output \"Hello, world!\""), "{greet}");

    let timed = s.cli(&["history", "timed-1"]).ok().stdout;
    let timer = timed
        .lines()
        .find(|l| l.contains("  timer  "))
        .unwrap_or_else(|| panic!("no timer row in\n{timed}"));
    assert!(timer.contains("fires at 20"), "{timer}");
    assert!(timer.ends_with("fired"), "{timer}");

    let parent = s.cli(&["history", "parent-1"]).ok().stdout;
    assert!(
        parent.contains("sub-orchestration  greet (parent-1:0000)"),
        "{parent}"
    );
    let failed = s.cli(&["history", "checkout-1"]).ok().stdout;
    assert!(
        failed.contains("failed: CardDeclined: card expired"),
        "{failed}"
    );
    let waiting = s.cli(&["history", "approval-1"]).ok().stdout;
    assert!(!waiting.contains("ended"), "{waiting}");

    // --json is the export format: it reads back as the history itself.
    for id in ["greet-1", "checkout-1", "parent-1", "timed-1", "approval-1"] {
        let r = s.cli(&["history", id, "--json"]).ok();
        let exported: Vec<HistoryEvent> = serde_json::from_str(&r.stdout).unwrap_or_else(|e| {
            panic!("the export of {id} does not read back ({e}): {}", r.stdout)
        });
        let stored = s.client.history(id).await.unwrap();
        assert_eq!(exported, stored, "{id}");
        assert!(!exported.is_empty());
    }
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raise_makes_a_waiting_instance_complete() {
    let s = Store::seeded().await;
    // Malformed JSON is refused before anything is sent.
    let bad = s.cli(&["raise", "approval-1", "approve", "{yes"]).code(1);
    assert!(bad.stderr.contains("not valid JSON"), "{}", bad.stderr);
    let bare = s.cli(&["raise", "approval-1", "approve", "yes"]).code(1);
    assert!(bare.stderr.contains("quote text"), "{}", bare.stderr);
    assert_eq!(
        s.status("approval-1").await,
        Some(OrchestrationStatus::Running)
    );
    let history = s.client.history("approval-1").await.unwrap();
    assert!(
        !history.iter().any(|e| e.kind.type_name() == "EventRaised"),
        "a malformed event reached the instance"
    );
    // Unknown id.
    let nf = s.cli(&["raise", "nobody", "approve", "true"]).code(2);
    assert!(nf.stderr.contains("\"nobody\""), "{}", nf.stderr);

    let store = s.store();
    let piped = [
        "--store",
        store.as_str(),
        "raise",
        "approval-1",
        "approve",
        "-",
    ];
    let bad = run_with_input(&piped, "{\"approved\": ").code(1);
    assert!(bad.stderr.contains("not valid JSON"), "{}", bad.stderr);
    let r = run_with_input(&piped, "true\n").ok();
    assert_eq!(r.stdout, "raised event \"approve\" on approval-1\n");
    let state = s.done("approval-1").await;
    assert_eq!(state.status(), OrchestrationStatus::Completed);
    assert_eq!(state.output::<String>().unwrap(), "approved");
    let shown = s.cli(&["show", "approval-1"]).ok().stdout;
    assert!(shown.contains("Status         Completed\n"), "{shown}");
    assert!(shown.contains("Output         \"approved\"\n"), "{shown}");
    let timeline = s.cli(&["history", "approval-1"]).ok().stdout;
    let raised = timeline
        .lines()
        .find(|l| l.contains("event raised"))
        .unwrap_or_else(|| panic!("no event row in\n{timeline}"));
    assert!(raised.contains("approve"), "{raised}");
    assert!(raised.ends_with("true"), "{raised}");
    // Raising on a finished instance is refused (status, not usage of ids).
    let late = s.cli(&["raise", "approval-1", "approve", "false"]).code(1);
    assert!(late.stderr.contains("Completed"), "{}", late.stderr);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn terminate_with_a_reason_and_recursively() {
    let s = Store::new().await;
    s.schedule("approval", (), "t-1").await;
    s.started("t-1").await;
    let r = s
        .cli(&["terminate", "t-1", "--reason", "no longer needed"])
        .ok();
    assert!(r.stdout.starts_with("terminating t-1"), "{}", r.stdout);
    let state = s.done("t-1").await;
    assert_eq!(state.status(), OrchestrationStatus::Terminated);
    let shown = s.cli(&["show", "t-1", "--json"]).ok().json();
    assert_eq!(shown["status"], "Terminated");
    assert_eq!(shown["output"], "no longer needed");

    s.schedule("waiting_parent", (), "tp").await;
    s.started("tp").await;
    s.started("tp:0000").await;
    s.cli(&["terminate", "tp", "--recursive"]).ok();
    assert_eq!(s.done("tp").await.status(), OrchestrationStatus::Terminated);
    assert_eq!(
        s.done("tp:0000").await.status(),
        OrchestrationStatus::Terminated
    );
    s.cli(&["terminate", "missing"]).code(2);
    let again = s.cli(&["terminate", "t-1"]).ok();
    assert_eq!(
        again.stdout,
        "t-1 has already finished (Terminated); nothing to terminate\n"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_holds_events_until_resume() {
    let s = Store::new().await;
    s.schedule("approval", (), "s-1").await;
    s.started("s-1").await;
    let r = s.cli(&["suspend", "s-1", "--reason", "maintenance"]).ok();
    assert_eq!(r.stdout, "suspended s-1\n");
    assert_eq!(s.status("s-1").await, Some(OrchestrationStatus::Suspended));
    let shown = s.cli(&["show", "s-1"]).ok().stdout;
    assert!(shown.contains("Status         Suspended\n"), "{shown}");
    let listed = s.cli(&["list", "--status", "suspended"]).ok().stdout;
    assert_eq!(ids_in_table(&listed), ["s-1"]);

    s.cli(&["raise", "s-1", "approve", "true"]).ok();
    let j = s.cli(&["resume", "s-1", "--json"]).ok().json();
    assert_eq!(j["resumed"], true);
    let state = s.done("s-1").await;
    assert_eq!(state.status(), OrchestrationStatus::Completed);
    assert_eq!(state.output::<String>().unwrap(), "approved");
    let timeline = s.cli(&["history", "s-1"]).ok().stdout;
    let at = |what: &str| {
        timeline
            .find(what)
            .unwrap_or_else(|| panic!("no {what:?} in\n{timeline}"))
    };
    assert!(at("suspended") < at("resumed"), "{timeline}");
    assert!(timeline.contains("\"maintenance\""), "{timeline}");
    s.cli(&["suspend", "s-1"]).code(1);
    s.cli(&["resume", "nope"]).code(2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purge_by_id_and_by_filter() {
    let s = Store::seeded().await;
    let r = s.cli(&["purge", "greet-1"]).ok();
    assert_eq!(r.stdout, "purged 1 instance\n");
    assert_eq!(s.status("greet-1").await, None);
    s.cli(&["show", "greet-1"]).code(2);
    s.cli(&["purge", "greet-1"]).code(2);
    let running = s.cli(&["purge", "approval-1"]).code(1);
    assert!(running.stderr.contains("Running"), "{}", running.stderr);
    assert!(s.status("approval-1").await.is_some());

    let empty = s.cli(&["purge"]).code(1);
    assert!(
        empty.stderr.contains("needs an instance id or a filter"),
        "{}",
        empty.stderr
    );
    let live = s.cli(&["purge", "--status", "running"]).code(1);
    assert!(
        live.stderr.contains("only finished instances"),
        "{}",
        live.stderr
    );
    s.cli(&["purge", "checkout-1", "--status", "failed"])
        .code(1);

    let r = s.cli(&["purge", "parent-1", "--recursive", "--json"]).ok();
    assert_eq!(r.json()["purged"], 2);
    assert_eq!(s.status("parent-1:0000").await, None);

    let r = s
        .cli(&[
            "purge",
            "--status",
            "completed,failed",
            "--created-before",
            "2999-01-01T00:00:00Z",
        ])
        .ok();
    assert_eq!(r.stdout, "purged 2 instances\n", "checkout-1 and timed-1");
    let left = s.cli(&["list"]).ok().stdout;
    assert_eq!(ids_in_table(&left), ["approval-1"]);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_under_the_same_id_or_a_new_one() {
    let s = Store::seeded().await;
    let before = s.client.history("greet-1").await.unwrap();
    let r = s.cli(&["restart", "greet-1"]).ok();
    assert_eq!(r.stdout, "restarted greet-1 as greet-1\n");
    let again = s.done("greet-1").await;
    assert_eq!(again.output::<String>().unwrap(), "Hello, world!");
    let after = s.client.history("greet-1").await.unwrap();
    assert_ne!(before, after, "the restart ran a new execution");

    let j = s
        .cli(&["restart", "checkout-1", "--new-id", "--json"])
        .ok()
        .json();
    let new_id = j["instance_id"].as_str().expect("the new id").to_string();
    assert_ne!(new_id, "checkout-1");
    assert_eq!(j["restarted_from"], "checkout-1");
    assert_eq!(s.done(&new_id).await.status(), OrchestrationStatus::Failed);
    let state = s.client.get_state(&new_id).await.unwrap().unwrap();
    assert_eq!(state.input::<u32>().unwrap(), 25);
    assert_eq!(
        s.status("checkout-1").await,
        Some(OrchestrationStatus::Failed)
    );

    let live = s.cli(&["restart", "approval-1"]).code(1);
    assert!(live.stderr.contains("cannot restart"), "{}", live.stderr);
    s.cli(&["restart", "nope"]).code(2);
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_prints_changes_and_exits_by_final_status() {
    let s = Store::seeded().await;
    let done = s.cli(&["watch", "greet-1"]).code(0);
    assert!(done.stdout.contains("  Completed"), "{}", done.stdout);
    let failed = s.cli(&["watch", "checkout-1"]).code(4);
    assert!(failed.stdout.contains("  Failed  "), "{}", failed.stdout);
    assert!(failed.stdout.contains("CardDeclined"), "{}", failed.stdout);
    s.cli(&["watch", "nope"]).code(2);
    let timed_out = s
        .cli(&[
            "watch",
            "approval-1",
            "--timeout",
            "200ms",
            "--interval",
            "50ms",
        ])
        .code(6);
    assert!(
        timed_out.stderr.contains("still Running"),
        "{}",
        timed_out.stderr
    );

    // A watch that sees the instance finish: its first line says it is
    // watching, then the event comes.
    let store = s.store();
    let mut child = Running::spawn(durable(&[
        "--store",
        &store,
        "watch",
        "approval-1",
        "--interval",
        "50ms",
    ]));
    let (tx, lines) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let stdout = child.child().stdout.take().expect("stdout is piped");
    std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            all.push_str(&line);
            all.push('\n');
            let _ = tx.send(line);
        }
        let _ = done_tx.send(all);
    });
    let first = match lines.recv_timeout(LIMIT) {
        Ok(l) => l,
        Err(_) => panic!("durable watch printed nothing within {LIMIT:?}"),
    };
    assert!(first.contains("  Running"), "{first}");
    assert!(first.contains("waiting for approval"), "{first}");
    // Each change is printed: the instance stays suspended until resumed,
    // so the watch cannot miss it.
    let next_line = |what: &str| match lines.recv_timeout(LIMIT) {
        Ok(l) => l,
        Err(_) => panic!("durable watch printed no {what} line within {LIMIT:?}"),
    };
    s.client.suspend("approval-1", None).await.unwrap();
    let suspended = next_line("Suspended");
    assert!(suspended.contains("  Suspended"), "{suspended}");
    s.client.resume("approval-1", None).await.unwrap();
    let resumed = next_line("Running");
    assert!(resumed.contains("  Running"), "{resumed}");
    s.client
        .raise_event("approval-1", "approve", &false)
        .await
        .unwrap();
    let run = child.finish(done_rx, "durable watch approval-1").code(0);
    let printed: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(printed.len(), 4, "{}", run.stdout);
    assert!(printed[3].contains("  Completed"), "{}", run.stdout);

    // Terminated: its own code.
    s.schedule("approval", (), "w-t").await;
    s.started("w-t").await;
    s.client.terminate("w-t", &"stop").await.unwrap();
    s.done("w-t").await;
    let j = s.cli(&["watch", "w-t", "--json"]).code(5);
    let line: Value = serde_json::from_str(j.stdout.lines().last().unwrap()).unwrap();
    assert_eq!(line["status"], "Terminated");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_have_their_exit_codes() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // A missing SQLite file: exit 3, and no file is created.
    let missing = dir.path().join("missing.db");
    let store = format!("sqlite:{}", missing.display());
    for args in [
        vec!["--store", &store, "list"],
        vec!["--store", &store, "show", "x"],
        vec!["--store", &store, "history", "x"],
        vec!["--store", &store, "raise", "x", "e", "1"],
    ] {
        let r = run_raw(&args).code(3);
        assert!(r.stderr.contains("does not exist"), "{}", r.stderr);
        assert!(
            !missing.exists(),
            "`{}` created the database",
            args.join(" ")
        );
    }
    // Not a database.
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, "this is not SQLite, it is a shopping list").unwrap();
    let r = run_raw(&["--store", &format!("sqlite:{}", junk.display()), "list"]).code(3);
    assert!(r.stderr.contains("not an SQLite database"), "{}", r.stderr);
    assert_eq!(
        std::fs::read_to_string(&junk).unwrap(),
        "this is not SQLite, it is a shopping list"
    );
    // Nothing listens on port 1.
    let r = run_raw(&["--endpoint", "http://127.0.0.1:1", "list"]).code(3);
    assert!(r.stderr.contains("http://127.0.0.1:1"), "{}", r.stderr);
    let r = run_raw(&["--store", "postgres://durable@127.0.0.1:1/durable", "list"]).code(3);
    assert!(r.stderr.contains("127.0.0.1:1"), "{}", r.stderr);
    // Usage errors are 1 (not clap's 2, which means "not found" here).
    let r = run_raw(&["--store", "sqlite:x.db", "--endpoint", "http://h:1", "list"]).code(1);
    assert!(r.stderr.contains("not both"), "{}", r.stderr);
    let r = run_raw(&["--header", "a=b", "list"]).code(1);
    assert!(r.stderr.contains("only to a sidecar"), "{}", r.stderr);
    let r = run_raw(&[
        "--endpoint",
        "http://127.0.0.1:1",
        "--header",
        "oops",
        "list",
    ])
    .code(1);
    assert!(r.stderr.contains("NAME=VALUE"), "{}", r.stderr);
    run_raw(&["frobnicate"]).code(1);
    run_raw(&["show"]).code(1);
    let r = run_raw(&["--store", "redis://h", "list"]).code(1);
    assert!(r.stderr.contains("unknown store"), "{}", r.stderr);
    let r = run_raw(&["list", "--status", "finished"]).code(1);
    assert!(r.stderr.contains("unknown status"), "{}", r.stderr);
    let r = run_raw(&["list", "--created-after", "last tuesday"]).code(1);
    assert!(r.stderr.contains("RFC 3339"), "{}", r.stderr);
    // Help documents the exit codes.
    let help = run_raw(&["--help"]).ok();
    assert!(help.stdout.contains("Exit codes:"), "{}", help.stdout);
    assert!(
        help.stdout
            .contains("5  watch: the instance was terminated"),
        "{}",
        help.stdout
    );

    let watch = run_raw(&["watch", "--help"]).ok();
    assert!(
        watch.stdout.contains("4  the instance failed"),
        "{}",
        watch.stdout
    );

    // On a real store: unknown ids are 2 for every command reading one.
    let s = Store::new().await;
    for args in [
        vec!["show", "ghost"],
        vec!["history", "ghost"],
        vec!["history", "ghost", "--json"],
        vec!["suspend", "ghost"],
        vec!["purge", "ghost"],
        vec!["watch", "ghost"],
    ] {
        let r = s.cli(&args).code(2);
        assert!(r.stderr.contains("\"ghost\""), "{}", r.stderr);
    }
    // The default store is ./durable.db in the working directory.
    let r = {
        let mut cmd = durable(&["list"]);
        cmd.current_dir(dir.path());
        let mut child = Running::spawn(cmd);
        let stdout = drain(child.child().stdout.take().unwrap());
        child.finish(stdout, "durable list (default store)")
    }
    .code(3);
    assert!(r.stderr.contains("./durable.db"), "{}", r.stderr);
    assert!(!dir.path().join("durable.db").exists());
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rewind_runs_a_failed_instance_again_from_where_it_failed() {
    let s = Store::seeded().await;
    let r = s
        .cli(&["rewind", "checkout-1", "--reason", "card fixed"])
        .ok();
    assert_eq!(
        r.stdout,
        "rewound checkout-1: it runs again from where it failed\n"
    );
    // Its cause is not fixed here: it fails again, and the history shows
    // the rewind.
    assert_eq!(
        s.done("checkout-1").await.status(),
        OrchestrationStatus::Failed
    );
    let timeline = s.cli(&["history", "checkout-1"]).ok().stdout;
    assert!(timeline.contains("rewound"), "{timeline}");
    assert!(timeline.contains("card fixed"), "{timeline}");

    let done = s.cli(&["rewind", "greet-1"]).code(1);
    assert!(done.stderr.contains("cannot rewind"), "{}", done.stderr);
    s.cli(&["rewind", "nope"]).code(2);
    s.stop().await;
}

/// Polls `durable schedule describe --json` until `ready` holds (bounded).
async fn schedule_until(
    store: &Store,
    id: &str,
    what: &str,
    ready: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + LIMIT;
    loop {
        let r = store.cli(&["--json", "schedule", "describe", id]);
        if r.code == 0 {
            let v: Value = serde_json::from_str(&r.stdout).expect("describe --json is JSON");
            if ready(&v) {
                return v;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "schedule {id} never got {what}: {r:#?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_created_listed_paused_resumed_updated_and_deleted() {
    let s = Store::new().await;
    // Bad input is refused before anything is stored.
    let r = s
        .cli(&["schedule", "create", "hourly", "greet", "--every", "10ms"])
        .code(1);
    assert!(r.stderr.contains("at least one second"), "{}", r.stderr);
    let r = s
        .cli(&[
            "schedule", "create", "hourly", "greet", "--every", "1h", "--input", "{oops",
        ])
        .code(1);
    assert!(r.stderr.contains("JSON"), "{}", r.stderr);

    // Without --start-at a schedule starts when it is created and first
    // runs an interval later; --start-now-if-late runs it at once.
    let r = s
        .cli(&[
            "schedule",
            "create",
            "hourly",
            "greet",
            "--every",
            "1h",
            "--input",
            r#""ada""#,
            "--start-now-if-late",
        ])
        .ok();
    assert!(r.stdout.contains("created schedule hourly"), "{}", r.stdout);
    let v = schedule_until(&s, "hourly", "its first run", |v| v["runs"] == 1).await;
    assert_eq!(v["status"], "active");
    let page = s
        .client
        .backend()
        .query_instances(durable_runtime::backend::InstanceQuery {
            instance_id_prefix: Some("hourly-".into()),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.instances.len(), 1, "{page:?}");
    let started = s.done(&page.instances[0].instance_id).await;
    assert_eq!(started.output::<String>().unwrap(), "Hello, ada!");

    let list = s.cli(&["--json", "schedule", "list"]).ok();
    let all: Value = serde_json::from_str(&list.stdout).unwrap();
    assert_eq!(all.as_array().map(Vec::len), Some(1), "{}", list.stdout);
    let text = s.cli(&["schedule", "list"]).ok().stdout;
    assert!(
        text.contains("schedule hourly: active") && text.contains("runs greet"),
        "{text}"
    );

    s.cli(&["schedule", "pause", "hourly"]).ok();
    schedule_until(&s, "hourly", "paused", |v| v["status"] == "paused").await;
    // Pausing a paused schedule is a usage error.
    let r = s.cli(&["schedule", "pause", "hourly"]).code(1);
    assert!(r.stderr.contains("is paused"), "{}", r.stderr);
    s.cli(&["schedule", "resume", "hourly"]).ok();
    schedule_until(&s, "hourly", "active again", |v| v["status"] == "active").await;
    s.cli(&["schedule", "update", "hourly", "--every", "2h"])
        .ok();
    schedule_until(&s, "hourly", "the new interval", |v| {
        v["options"]["interval"] == 7200.0
    })
    .await;

    s.cli(&["schedule", "delete", "hourly"]).ok();
    let deadline = std::time::Instant::now() + LIMIT;
    while s.cli(&["schedule", "describe", "hourly"]).code != 2 {
        assert!(
            std::time::Instant::now() < deadline,
            "the schedule was never deleted"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let r = s.cli(&["schedule", "resume", "hourly"]).code(2);
    assert!(r.stderr.contains("no schedule"), "{}", r.stderr);
    assert_eq!(s.cli(&["schedule", "list"]).ok().stdout, "no schedules\n");
    s.worker.shutdown().await;
}
