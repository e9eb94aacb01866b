//! The Python `durabletask` SDK's worker and client against durable's own
//! server (`durable_grpc::server`) on the in-memory and SQLite backends:
//! Python orchestrations (one activity, a chain, a fan-out) run to
//! completion, and a Python client runs a Rust orchestration served by a
//! Rust worker.

use durable_grpc::server::SidecarServer;
use durable_grpc::testing::PyProcess;
use durable_grpc::{GrpcBackend, GrpcOptions};
use durable_runtime::backend::{Backend, MemoryBackend};
use durable_runtime::{ActivityError, Registry, Worker};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

/// Serves `backend` on a fresh loopback port; returns `host:port`.
async fn serve(backend: Arc<dyn Backend>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().unwrap().to_string();
    tokio::spawn(SidecarServer::new(backend).serve(listener, std::future::pending()));
    address
}

/// Runs tests/peer/client.py (off the async threads) and returns what it
/// reported.
async fn python_client(address: &str, name: &'static str, input: &'static str) -> Value {
    let address = address.to_string();
    tokio::task::spawn_blocking(move || {
        let mut client = PyProcess::spawn("client.py", &[&address, name, input]);
        let line = client.expect_line("RESULT ", Duration::from_secs(90));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("client.py printed {line}: {e}"))
    })
    .await
    .expect("the Python client task")
}

/// The Python worker's orchestrations, run by the Python client.
async fn python_orchestrations_complete(backend: Arc<dyn Backend>) {
    let address = serve(backend).await;
    let mut worker = tokio::task::spawn_blocking({
        let address = address.clone();
        move || {
            let mut w = PyProcess::spawn("worker.py", &[&address]);
            w.expect_line("READY", Duration::from_secs(60));
            w
        }
    })
    .await
    .unwrap();

    let one = python_client(&address, "py_orchestrator", r#""ada""#).await;
    assert_eq!(one["status"], "COMPLETED", "{one}");
    assert_eq!(one["output"], r#""python says ADA!""#, "{one}");

    let chain = python_client(&address, "py_chain", r#""go""#).await;
    assert_eq!(chain["status"], "COMPLETED", "{chain}");
    assert_eq!(chain["output"], r#""GO!!!""#, "{chain}");

    let fan = python_client(&address, "py_fan_out", "5").await;
    assert_eq!(fan["status"], "COMPLETED", "{fan}");
    let output: Vec<String> = serde_json::from_str(fan["output"].as_str().expect("an output"))
        .unwrap_or_else(|e| panic!("the fan-out's output: {e}: {fan}"));
    let expected: Vec<String> = (0..5).map(|i| format!("ITEM{i}!")).collect();
    assert_eq!(output, expected, "{fan}");

    worker.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_worker_and_client_on_memory() {
    python_orchestrations_complete(Arc::new(MemoryBackend::new())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_worker_and_client_on_sqlite() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let path = dir.path().join("durable.db");
    let backend = durable_sqlite::SqliteBackend::open(&path)
        .unwrap_or_else(|e| panic!("opening {} failed: {e}", path.display()));
    python_orchestrations_complete(Arc::new(backend)).await;
    // The backend's thread may outlive the test body.
    std::mem::forget(dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_runs_a_rust_orchestration() {
    let store = Arc::new(MemoryBackend::new());
    let address = serve(store.clone()).await;
    let registry = Registry::new()
        .activity_fn("rust_upper", |_c, s: String| async move {
            Ok::<_, ActivityError>(s.to_uppercase())
        })
        .orchestrator_fn("rust_greeter", |ctx, name: String| async move {
            let upper: String = ctx.call_activity_by_name("rust_upper", &name).await?;
            Ok(format!("Hello, {upper}!"))
        });
    let backend =
        Arc::new(GrpcBackend::new(GrpcOptions::new(format!("http://{address}"))).unwrap());
    let worker = Worker::new(backend, registry).start().unwrap();
    let ok = python_client(&address, "rust_greeter", r#""ada""#).await;
    assert_eq!(ok["status"], "COMPLETED", "{ok}");
    assert_eq!(ok["output"], r#""Hello, ADA!""#, "{ok}");
    // The Python client's instance tags are stored, and are on the
    // ExecutionStarted the worker was given.
    let id = ok["instance_id"].as_str().expect("an instance id");
    let stored = store
        .get_instance(id, false)
        .await
        .unwrap()
        .expect("the instance");
    let tags = std::collections::BTreeMap::from([("client".to_string(), "python".to_string())]);
    assert_eq!(stored.tags, tags, "{stored:?}");
    let history = store.get_history(id).await.unwrap();
    assert!(
        history.iter().any(|e| matches!(
            &e.kind,
            durable_runtime::history::EventKind::ExecutionStarted { tags: t, .. } if *t == tags
        )),
        "{history:?}"
    );
    worker.shutdown().await;
}

/// Rust and Python workers on one server, each asking only for its own
/// names: each gets only its own work, and orchestrations call across.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_and_python_workers_share_the_server() {
    let address = serve(Arc::new(MemoryBackend::new())).await;
    let mut python_worker = tokio::task::spawn_blocking({
        let address = address.clone();
        move || {
            let mut w = PyProcess::spawn("worker.py", &[&address]);
            w.expect_line("READY", Duration::from_secs(60));
            w
        }
    })
    .await
    .unwrap();
    let registry =
        Registry::new().orchestrator_fn("calls_python", |ctx, name: String| async move {
            let shouted: String = ctx.call_activity_by_name("py_shout", &name).await?;
            Ok(format!("rust heard {shouted}"))
        });
    let filters = durable_grpc::WorkItemFilters {
        orchestrations: vec!["calls_python".into()],
        activities: vec![],
        ..Default::default()
    };
    let backend = Arc::new(
        GrpcBackend::new(GrpcOptions::new(format!("http://{address}")).work_item_filters(filters))
            .unwrap(),
    );
    let client = durable_runtime::Client::new(backend.clone());
    let worker = Worker::new(backend, registry).start().unwrap();
    let wait = Duration::from_secs(30);
    for (name, input, expected) in [
        ("calls_python", "ada", "rust heard ADA!"),
        ("py_orchestrator", "lin", "python says LIN!"),
        ("py_chain", "go", "GO!!!"),
    ] {
        let id = client
            .schedule_by_name(name, &input, durable_runtime::ScheduleOptions::default())
            .await
            .unwrap();
        let s = client.wait_for_completion(&id, wait).await.unwrap();
        assert_eq!(
            s.status(),
            durable_runtime::OrchestrationStatus::Completed,
            "{name}: {:?}",
            s.failure()
        );
        assert_eq!(s.output::<String>().unwrap(), expected, "{name}");
    }
    worker.shutdown().await;
    python_worker.kill();
}
