//! Entities across languages: a Python orchestration calls a Rust entity
//! (results, and a failed operation rolled back), a Rust orchestration
//! calls a Python entity, and a Python client signals a Rust entity and
//! reads its state. On the Python SDK's in-memory sidecar (which hands out
//! entity work items, `entityRequestV2`, and takes `CompleteEntityTask`)
//! and on durable's own server (which runs entities as `@name@key`
//! instances and serves the entity RPCs).

use durable_grpc::server::SidecarServer;
use durable_grpc::testing::{PeerServer, PyProcess};
use durable_grpc::{GrpcBackend, GrpcOptions, WorkItemFilters};
use durable_runtime::backend::{Backend, MemoryBackend};
use durable_runtime::conformance::entities::registry as entity_registry;
use durable_runtime::entity::EntityId;
use durable_runtime::{Client, OrchestrationStatus, Registry, ScheduleOptions, Worker};
use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(60);

/// The Rust side: the conformance suite's entities (`counter`, `account`)
/// and an orchestration calling the Python entity `pycounter`.
fn rust_registry() -> Registry {
    entity_registry().orchestrator_fn("rust_calls_py", |ctx, key: String| async move {
        let id = EntityId::new("pycounter", key);
        let first: i64 = ctx.call_entity(&id, "add", &7).await?;
        let second: i64 = ctx.call_entity(&id, "add", &8).await?;
        let read: i64 = ctx.call_entity(&id, "get", &()).await?;
        Ok(vec![first, second, read])
    })
}

/// Runs a Rust orchestration or a Python one by name through `client`.
async fn run(client: &Client, name: &str, input: &str) -> Value {
    let id = client
        .schedule_by_name(name, &input, ScheduleOptions::default())
        .await
        .unwrap();
    let s = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(
        s.status(),
        OrchestrationStatus::Completed,
        "{name}: {:?}",
        s.failure()
    );
    s.output().unwrap()
}

/// The three crossings on the sidecar at `address` (`host:port`).
async fn entities_cross(address: String) {
    let mut python_worker = PyProcess::spawn("entities.py", &["worker", &address]);
    python_worker.expect_line("READY", WAIT);

    let registry = rust_registry();
    let filters = WorkItemFilters::of_registry(&registry);
    assert_eq!(filters.entities, ["account", "counter"]);
    let backend: Arc<dyn Backend> = Arc::new(
        GrpcBackend::new(GrpcOptions::new(format!("http://{address}")).work_item_filters(filters))
            .expect("valid options"),
    );
    let client = Client::new(backend.clone());
    let worker = Worker::new(backend, registry).start().unwrap();

    // A Python orchestration calls the Rust counter: outputs in order.
    assert_eq!(
        run(&client, "py_calls_rust", "p1").await,
        json!([5, 11, 11])
    );
    // A failed operation reaches the Python caller as a failure, and its
    // state change is rolled back.
    let failing = run(&client, "py_calls_rust_failing", "p2").await;
    assert!(
        failing["failure"]
            .as_str()
            .is_some_and(|f| f.contains("refused to add 40")),
        "{failing}"
    );
    assert_eq!(failing["after"], 0, "{failing}");

    // A Rust orchestration calls the Python entity.
    assert_eq!(
        run(&client, "rust_calls_py", "r1").await,
        json!([7, 15, 15])
    );

    // A Python client signals the Rust counter 20 times and reads it.
    let line = tokio::task::spawn_blocking(move || {
        let mut signaller =
            PyProcess::spawn("entities.py", &["signal", &address, "s1", "20", "20"]);
        signaller.next_line(Duration::from_secs(90))
    })
    .await
    .unwrap()
    .expect("entities.py signal reports");
    let state = line
        .strip_prefix("STATE ")
        .unwrap_or_else(|| panic!("the Python client did not see 20: {line}"));
    assert_eq!(
        serde_json::from_str::<Value>(state).unwrap(),
        json!({"value": 20})
    );

    worker.shutdown().await;
    drop(python_worker);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_cross_languages_on_the_python_sidecar() {
    let server = PeerServer::start();
    entities_cross(server.address()).await;
}
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entities_cross_languages_on_durable_serve() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a loopback port");
    let address = listener.local_addr().unwrap().to_string();
    let backend: Arc<dyn Backend> = Arc::new(MemoryBackend::new());
    tokio::spawn(SidecarServer::new(backend).serve(listener, std::future::pending()));
    entities_cross(address).await;
}
