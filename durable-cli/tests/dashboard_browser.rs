//! The dashboard in a real browser: headless Chromium, driven by
//! playwright-core (pinned in `tests/browser/package.json`, installed by
//! the test under target/ with `npm install --prefix`), against a
//! `durable serve` running the order-processing example's scenarios
//! through a gRPC worker. The list shows them, the approved order's
//! timeline shows the wait for approval and the sub-orchestration (whose
//! bar opens the child), and terminating the waiting order from the page
//! terminates it, as the client sees. Screenshots are saved under
//! target/tmp/dashboard-screenshots.
//!
//! Without Chromium, node or npm the test fails saying how to install
//! them.

mod support;

use durable_grpc::{GrpcBackend, GrpcOptions};
use durable_runtime::{Backend, Client, OrchestrationStatus, Registry, ScheduleOptions, Worker};
use order_processing::workflows::{order_with_approval, process_order, Approval, Order, OrderItem};
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use support::{drain, start_serve, stop_serve, LIMIT};

const PACKAGE: &str = include_str!("browser/package.json");

const CHROMIUM_HINT: &str =
    "the dashboard's browser test needs Chromium: install Debian's package \
(`apt-get install chromium`), or set DURABLE_CHROMIUM to a Chromium or Chrome binary";

/// The Chromium to drive: `DURABLE_CHROMIUM`, else `chromium` or
/// `chromium-browser` on PATH.
fn chromium() -> PathBuf {
    if let Some(path) = std::env::var_os("DURABLE_CHROMIUM") {
        let path = PathBuf::from(path);
        assert!(
            path.is_file(),
            "DURABLE_CHROMIUM is {}, which is not a file: {CHROMIUM_HINT}",
            path.display()
        );
        return path;
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        for name in ["chromium", "chromium-browser"] {
            let candidate = dir.join(name);
            if candidate.is_file() {
                return candidate;
            }
        }
    }
    let ci = std::env::var("CI").is_ok_and(|v| v == "true");
    panic!(
        "no Chromium found{}: {CHROMIUM_HINT}",
        if ci { " (CI=true)" } else { "" }
    );
}

fn run(cmd: &mut Command, what: &str) {
    let out = cmd.stdin(Stdio::null()).output().unwrap_or_else(|e| {
        panic!(
            "{what}: cannot run it ({e}); install node and npm (e.g. `apt-get install nodejs npm`)"
        )
    });
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `node_modules` with the pinned playwright-core, installed once per
/// build directory.
fn playwright() -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-browser");
    let modules = dir.join("node_modules");
    // FNV-1a of the package file: a changed pin installs again.
    let hash = PACKAGE.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let marker = dir.join(format!(".installed-{hash:016x}"));
    if !marker.exists() {
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("package.json"), PACKAGE).unwrap();
        run(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--loglevel=error", "--prefix"])
                .arg(&dir),
            "`npm install` of tests/browser/package.json (playwright-core; is the npm registry reachable?)",
        );
        std::fs::write(&marker, PACKAGE).unwrap();
    }
    modules
}

fn order(customer: &str, items: &[(&str, i64, f64)]) -> Order {
    Order {
        customer: customer.into(),
        items: items
            .iter()
            .map(|(name, quantity, unit_price)| OrderItem {
                name: (*name).into(),
                quantity: *quantity,
                unit_price: *unit_price,
            })
            .collect(),
    }
}

/// The example's scenarios, as `cargo run -p order-processing` and its
/// tests run them; returns the ids and the status each ends in (the
/// waiting order is left waiting).
async fn scenarios(client: &Client) -> BTreeMap<&'static str, OrchestrationStatus> {
    use OrchestrationStatus::*;
    let with = ScheduleOptions::with_id;
    let small = order("Alice", &[("Widget", 3, 25.0), ("Gadget", 1, 99.99)]);
    let big = |who| order(who, &[("Server", 1, 1500.0)]);
    client
        .schedule_with(process_order, small.clone(), with("order-alice"))
        .await
        .unwrap();
    client
        .schedule_with(process_order, order("Eve", &[]), with("order-empty"))
        .await
        .unwrap();
    for id in ["approval-bob", "approval-dave", "approval-carol"] {
        client
            .schedule_with(order_with_approval, big(id), with(id))
            .await
            .unwrap();
    }
    for id in ["approval-bob", "approval-dave", "approval-carol"] {
        client.wait_for_start(id, LIMIT).await.unwrap();
    }
    // Until the orchestration waits, the event would only queue: wait
    // for its timer (the approval deadline) to be in the history.
    for id in ["approval-bob", "approval-dave", "approval-carol"] {
        let deadline = tokio::time::Instant::now() + LIMIT;
        while !client.history(id).await.unwrap().iter().any(|e| {
            matches!(
                e.kind,
                durable_runtime::history::EventKind::TimerCreated { .. }
            )
        }) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "{id} did not start waiting for approval within {LIMIT:?}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    client.raise("approval-bob", &Approval(true)).await.unwrap();
    client
        .raise("approval-dave", &Approval(false))
        .await
        .unwrap();
    let want = [
        ("order-alice", Completed),
        ("order-empty", Failed),
        ("approval-bob", Completed),
        ("approval-dave", Completed),
    ];
    for (id, status) in want {
        let state = client.wait_for_completion(id, LIMIT).await.unwrap();
        assert_eq!(state.status(), status, "{id}: {:?}", state.failure());
    }
    let mut all: BTreeMap<_, _> = want.into();
    all.insert("approval-carol", Running);
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dashboard_shows_the_order_scenarios_and_terminates_from_the_page() {
    let chromium = chromium();
    let modules = tokio::task::spawn_blocking(playwright).await.unwrap();
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let store = format!("sqlite:{}", dir.path().join("orders.db").display());
    let (server, addr, lines) = start_serve(&[
        "--store",
        &store,
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--dashboard",
        "127.0.0.1:0",
    ]);
    let second = lines.recv_timeout(LIMIT).expect("the dashboard's line");
    let url = second
        .strip_prefix("durable serve: dashboard on ")
        .unwrap_or_else(|| panic!("unexpected second line: {second}"))
        .to_string();

    let backend: Arc<dyn Backend> = Arc::new(
        GrpcBackend::new(GrpcOptions::new(format!("http://{addr}"))).expect("valid options"),
    );
    let registry = Registry::discover().expect("the example's functions register");
    let worker = Worker::new(backend.clone(), registry).start().unwrap();
    let client = Client::new(backend);
    let statuses = scenarios(&client).await;

    let shots = Path::new(env!("CARGO_TARGET_TMPDIR")).join("dashboard-screenshots");
    std::fs::create_dir_all(&shots).unwrap();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/browser/dashboard.js");
    let mut child = Command::new("node")
        .env("NODE_PATH", &modules)
        .arg(&script)
        .args([
            &url,
            &chromium.display().to_string(),
            &shots.display().to_string(),
        ])
        .args(["approval-bob", "approval-carol"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting node (install it: `apt-get install nodejs npm`)");
    let stdout = drain(child.stdout.take().expect("stdout is piped"));
    let stderr = drain(child.stderr.take().expect("stderr is piped"));
    let out = tokio::task::spawn_blocking(move || stdout.recv_timeout(LIMIT * 2))
        .await
        .unwrap();
    let Ok(out) = out else {
        let _ = child.kill();
        panic!("the browser did not finish within {:?}", LIMIT * 2);
    };
    let status = child.wait().expect("waiting for node");
    let err = stderr.recv_timeout(LIMIT).unwrap_or_default();
    assert!(
        status.success() && out.lines().last() == Some("done"),
        "the browser run failed ({status:?}):\n{out}\n{err}"
    );
    let seen: BTreeMap<String, Value> = out
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| {
            let v: Value = serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}"));
            (v["what"].as_str().unwrap().to_string(), v["value"].clone())
        })
        .collect();
    let got = |what: &str| {
        seen.get(what)
            .unwrap_or_else(|| panic!("the browser reported no {what}:\n{out}"))
    };

    // The list shows every scenario with its status (and the children).
    let listed: BTreeMap<&str, &str> = got("list")
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["id"].as_str().unwrap(), r["status"].as_str().unwrap()))
        .collect();
    for (id, status) in &statuses {
        assert_eq!(
            listed.get(id).copied(),
            Some(status.to_string().as_str()),
            "{id} in the list {listed:?}"
        );
    }
    assert!(
        listed.keys().any(|id| id.starts_with("approval-bob:")),
        "the approved order's sub-orchestration is listed: {listed:?}"
    );
    let running: Vec<&str> = got("running")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(running, ["approval-carol"], "the status filter");

    // The approved order's timeline: the total, the wait for approval
    // ended by the event, the sub-orchestration linked to its child.
    let rows = got("timeline").as_array().unwrap();
    let kinds: Vec<&str> = rows.iter().map(|r| r["kind"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["activity", "wait", "sub-orchestration", "marks"],
        "{rows:#?}"
    );
    assert!(rows[0]["label"]
        .as_str()
        .unwrap()
        .contains("calculate_total"));
    let wait = &rows[1];
    assert!(
        wait["label"]
            .as_str()
            .unwrap()
            .contains("wait for \"approval\""),
        "{wait}"
    );
    assert_eq!(wait["bars"][0]["outcome"], "event");
    let sub = &rows[2];
    assert!(
        sub["label"].as_str().unwrap().contains("process_order"),
        "{sub}"
    );
    let child_id = sub["bars"][0]["link"]
        .as_str()
        .expect("the bar links the child");
    assert!(child_id.starts_with("approval-bob:"), "{child_id}");
    assert_eq!(sub["bars"][0]["outcome"], "completed");
    for row in &rows[..3] {
        assert!(
            row["bars"][0]["width"].as_f64().unwrap() >= 3.0,
            "a bar too thin to see: {row}"
        );
    }
    let marks: Vec<(&str, &str)> = rows[3]["marks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| (m["kind"].as_str().unwrap(), m["label"].as_str().unwrap()))
        .collect();
    assert!(marks.contains(&("event raised", "approval")), "{marks:?}");
    let history: Vec<&str> = got("history")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for kind in [
        "ExecutionStarted",
        "TimerCreated",
        "EventRaised",
        "SubOrchestrationInstanceCreated",
        "ExecutionCompleted",
    ] {
        assert!(
            history.contains(&kind),
            "{kind} not in the history table: {history:?}"
        );
    }
    assert_eq!(got("output")["status"], "completed");
    assert_eq!(got("output")["items_processed"], 1);

    // The drill-down opened the child, which links back to its parent.
    let child = got("child");
    assert_eq!(child["hash"], format!("#/instances/{child_id}"));
    assert_eq!(child["name"], "process_order");
    assert_eq!(child["parent"], "approval-bob");
    let child_rows: Vec<&str> = child["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(
        child_rows.iter().filter(|k| **k == "activity").count(),
        5,
        "validate, total, pay, one shipment, confirm: {child_rows:?}"
    );

    // The waiting order's wait is still running; terminating it from
    // the page terminates it.
    let waiting = got("waiting").as_array().unwrap();
    assert!(
        waiting
            .iter()
            .any(|r| r["kind"] == "timer" && r["outcome"][0] == "pending"),
        "{waiting:?}"
    );
    let terminated = got("terminated");
    assert!(
        terminated["message"]
            .as_str()
            .unwrap()
            .contains("terminate: done"),
        "{terminated}"
    );
    assert_eq!(terminated["output"], "terminated from the dashboard");
    let state = client
        .get_state("approval-carol")
        .await
        .unwrap()
        .expect("still there");
    assert_eq!(state.status(), OrchestrationStatus::Terminated);
    assert_eq!(
        state.output::<String>().unwrap(),
        "terminated from the dashboard"
    );
    assert_eq!(
        got("page errors"),
        &Value::Array(vec![]),
        "script errors on the page"
    );
    for shot in ["list.png", "instance.png", "child.png", "terminated.png"] {
        let len = std::fs::metadata(shots.join(shot))
            .map(|m| m.len())
            .unwrap_or(0);
        assert!(len > 10_000, "{shot} missing or empty ({len} bytes)");
    }

    worker.shutdown().await;
    stop_serve(server, lines);
}
