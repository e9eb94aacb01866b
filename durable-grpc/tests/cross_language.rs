//! Rust and Python on one sidecar: a Python client runs a Rust
//! orchestration by name; Rust orchestrations call activities a Python
//! worker serves, and a Rust client runs a Python orchestration. Results and
//! failure details must come through intact.

use durable_grpc::testing::{PeerServer, PyProcess};
use durable_grpc::{GrpcBackend, GrpcOptions, WorkItemFilters};
use durable_runtime::{
    ActivityError, Backend, Client, OrchestrationError, OrchestrationStatus, Registry,
    ScheduleOptions, Worker,
};
use serde_json::Value;
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

fn rust_registry() -> Registry {
    Registry::new()
        .activity_fn("rust_upper", |_c, s: String| async move {
            Ok::<_, ActivityError>(s.to_uppercase())
        })
        .orchestrator_fn("rust_greeter", |ctx, name: String| async move {
            let upper: String = ctx.call_activity_by_name("rust_upper", &name).await?;
            Ok(format!("Hello, {upper}!"))
        })
        .orchestrator_fn("rust_fails", |_ctx, order: u32| async move {
            Err::<(), _>(OrchestrationError::with_type(
                "InvoiceError",
                format!("no invoice for order {order}"),
            ))
        })
        .orchestrator_fn("calls_python", |ctx, name: String| async move {
            let shouted: String = ctx.call_activity_by_name("py_shout", &name).await?;
            Ok(format!("rust heard {shouted}"))
        })
        .orchestrator_fn("python_fails_for_us", |ctx, reason: String| async move {
            match ctx
                .call_activity_by_name::<String>("py_refuse", &reason)
                .await
            {
                Ok(v) => Ok(format!("unexpected success: {v}")),
                Err(e) => Ok(format!("{} | {}", e.error_type(), e.message())),
            }
        })
}

/// A Rust worker that asks the sidecar only for what it registered, so a
/// Python worker on the same task hub gets the rest.
fn rust_backend(server: &PeerServer, registry: &Registry) -> Arc<dyn Backend> {
    let filters = WorkItemFilters::of_registry(registry);
    Arc::new(
        GrpcBackend::new(GrpcOptions::new(server.endpoint()).work_item_filters(filters))
            .expect("valid options"),
    )
}

/// Runs tests/peer/client.py (blocking, so off the async threads) and
/// returns what it reported.
async fn python_client(address: String, name: &'static str, input: &'static str) -> Value {
    tokio::task::spawn_blocking(move || {
        let mut client = PyProcess::spawn("client.py", &[&address, name, input]);
        let line = client.expect_line("RESULT ", Duration::from_secs(60));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("client.py printed {line}: {e}"))
    })
    .await
    .expect("the Python client task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_runs_a_rust_orchestration_by_name() {
    let server = PeerServer::start();
    let registry = rust_registry();
    let backend = rust_backend(&server, &registry);
    let worker = Worker::new(backend, registry).start().unwrap();

    let ok = python_client(server.address(), "rust_greeter", r#""ada""#).await;
    assert_eq!(ok["status"], "COMPLETED", "{ok}");
    assert_eq!(ok["output"], r#""Hello, ADA!""#, "{ok}");

    let failed = python_client(server.address(), "rust_fails", "17").await;
    assert_eq!(failed["status"], "FAILED", "{failed}");
    assert_eq!(failed["failure_type"], "InvoiceError", "{failed}");
    assert_eq!(
        failed["failure_message"], "no invoice for order 17",
        "{failed}"
    );

    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_orchestrations_call_python_activities_and_the_other_way_round() {
    let server = PeerServer::start();
    let mut python_worker = PyProcess::spawn("worker.py", &[&server.address()]);
    python_worker.expect_line("READY", Duration::from_secs(60));

    let registry = rust_registry();
    let backend = rust_backend(&server, &registry);
    let client = Client::new(backend.clone());
    let worker = Worker::new(backend, registry).start().unwrap();

    let id = client
        .schedule_by_name("calls_python", &"ada", ScheduleOptions::default())
        .await
        .unwrap();
    let s = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(
        s.status(),
        OrchestrationStatus::Completed,
        "{:?}",
        s.failure()
    );
    assert_eq!(s.output::<String>().unwrap(), "rust heard ADA!");

    let id = client
        .schedule_by_name(
            "python_fails_for_us",
            &"no reason",
            ScheduleOptions::default(),
        )
        .await
        .unwrap();
    let s = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(
        s.status(),
        OrchestrationStatus::Completed,
        "{:?}",
        s.failure()
    );
    assert_eq!(
        s.output::<String>().unwrap(),
        "builtins.ValueError | python refuses: no reason"
    );

    // A Rust client runs a Python orchestration, which calls a Python activity.
    let id = client
        .schedule_by_name("py_orchestrator", &"grace", ScheduleOptions::default())
        .await
        .unwrap();
    let s = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(
        s.status(),
        OrchestrationStatus::Completed,
        "{:?}",
        s.failure()
    );
    assert_eq!(s.output::<String>().unwrap(), "python says GRACE!");

    // And a Python client sees the Rust orchestration's result as Python would.
    let v = python_client(server.address(), "calls_python", r#""lin""#).await;
    assert_eq!(v["status"], "COMPLETED", "{v}");
    assert_eq!(v["output"], r#""rust heard LIN!""#, "{v}");

    worker.shutdown().await;
    drop(python_worker);
}
