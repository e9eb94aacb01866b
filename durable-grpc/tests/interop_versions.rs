//! Versioning, rewind and restart between Rust and Python on one sidecar
//! (the Python SDK's): a Python client starts a version of a Rust
//! orchestrator and a strict Rust worker leaves other versions to another
//! worker; a Python client rewinds a failed Rust orchestration; a Rust
//! client restarts a Python one.

use durable_grpc::testing::{PeerServer, PyProcess};
use durable_grpc::{GrpcBackend, GrpcOptions, WorkItemFilters};
use durable_runtime::versioning::{FailureStrategy, MatchStrategy, VersioningOptions};
use durable_runtime::{
    ActivityError, Backend, Client, OrchestrationStatus, Registry, ScheduleOptions, Worker,
    WorkerOptions,
};
use serde_json::Value;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

const WAIT: Duration = Duration::from_secs(30);

/// Failed calls of "pay_gateway" before it succeeds.
static GATEWAY_CALLS: AtomicU32 = AtomicU32::new(0);

fn registry(who: &'static str) -> Registry {
    Registry::new()
        .orchestrator_version_fn("greet", "1", move |ctx, name: String| async move {
            Ok(format!(
                "{who} v{}: Hello, {name}",
                ctx.version().unwrap_or_default()
            ))
        })
        .orchestrator_version_fn("greet", "2", move |ctx, name: String| async move {
            Ok(format!(
                "{who} v{}: Hi {name}!",
                ctx.version().unwrap_or_default()
            ))
        })
        .activity_fn("pay_gateway", |_c, amount: u32| async move {
            if GATEWAY_CALLS.fetch_add(1, Ordering::SeqCst) == 0 {
                return Err(ActivityError::new("Unavailable", "the gateway is down"));
            }
            Ok(format!("paid {amount}"))
        })
        .activity_fn("reserve", |_c, amount: u32| async move {
            Ok::<_, ActivityError>(format!("reserved {amount}"))
        })
        .orchestrator_fn("pay", |ctx, amount: u32| async move {
            let reserved: String = ctx.call_activity_by_name("reserve", &amount).await?;
            let paid: String = ctx.call_activity_by_name("pay_gateway", &amount).await?;
            Ok(format!("{reserved}, {paid}"))
        })
}

/// A backend asking only for this registry's work, so Python workers on
/// the same sidecar get theirs.
fn backend_for(server: &PeerServer, registry: &Registry) -> Arc<dyn Backend> {
    let filters = WorkItemFilters::of_registry(registry);
    Arc::new(
        GrpcBackend::new(GrpcOptions::new(server.endpoint()).work_item_filters(filters))
            .expect("valid options"),
    )
}

/// Runs tests/peer/manage.py (off the async threads) and returns its report.
async fn manage(args: Vec<String>) -> Value {
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut p = PyProcess::spawn("manage.py", &args);
        let line = p.expect_line("RESULT ", Duration::from_secs(60));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("manage.py printed {line}: {e}"))
    })
    .await
    .expect("the Python client task")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_starts_a_version_of_a_rust_orchestrator() {
    let server = PeerServer::start();
    let registry = registry("rust");
    let backend = backend_for(&server, &registry);
    let worker = Worker::new(backend.clone(), registry).start().unwrap();
    let r = manage(vec![
        server.address(),
        "schedule".into(),
        "greet".into(),
        r#""ada""#.into(),
        "2".into(),
    ])
    .await;
    assert_eq!(r["status"], "COMPLETED", "{r}");
    assert_eq!(r["output"], r#""rust v2: Hi ada!""#, "{r}");
    let id = r["instance_id"].as_str().expect("an instance id");
    // The Python test sidecar leaves the version out of an instance's
    // state; its history has it.
    let history = Client::new(backend).history(id).await.unwrap();
    let started = history.iter().find_map(|e| match &e.kind {
        durable_runtime::history::EventKind::ExecutionStarted { version, .. } => {
            Some(version.clone())
        }
        _ => None,
    });
    assert_eq!(started, Some(Some("2".to_string())), "{history:?}");
    worker.shutdown().await;
}

/// A strict version-2 worker gives a version-1 instance back to the
/// sidecar; a version-1 worker started later runs it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_rust_worker_leaves_another_version_to_another_worker() {
    let server = PeerServer::start();
    let strict_registry = registry("strict");
    let strict_backend = backend_for(&server, &strict_registry);
    let strict = Worker::new(strict_backend, strict_registry)
        .with_options(WorkerOptions {
            versioning: VersioningOptions {
                version: "2".into(),
                match_strategy: MatchStrategy::Strict,
                failure_strategy: FailureStrategy::Reject,
                reject_pause: Duration::from_millis(20),
                ..VersioningOptions::default()
            },
            ..WorkerOptions::default()
        })
        .start()
        .unwrap();
    let client_registry = registry("client");
    let client = Client::new(backend_for(&server, &client_registry));
    let v1 = client
        .schedule_by_name(
            "greet",
            &"bo",
            ScheduleOptions {
                version: Some("1".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let v2 = client
        .schedule_by_name(
            "greet",
            &"cy",
            ScheduleOptions {
                version: Some("2".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let s = client.wait_for_completion(&v2, WAIT).await.unwrap();
    assert_eq!(s.output::<String>().unwrap(), "strict v2: Hi cy!");
    let pending = client.get_state(&v1).await.unwrap().unwrap();
    assert_eq!(
        pending.status(),
        OrchestrationStatus::Pending,
        "the strict worker ran another version: {:?}",
        pending.output_json()
    );
    let other_registry = registry("other");
    let other = Worker::new(backend_for(&server, &other_registry), other_registry)
        .start()
        .unwrap();
    let s = client.wait_for_completion(&v1, WAIT).await.unwrap();
    assert_eq!(s.output::<String>().unwrap(), "other v1: Hello, bo");
    strict.shutdown().await;
    other.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_client_rewinds_a_failed_rust_orchestration() {
    let server = PeerServer::start();
    let registry = registry("rust");
    let backend = backend_for(&server, &registry);
    let worker = Worker::new(backend.clone(), registry).start().unwrap();
    let client = Client::new(backend);
    let id = client
        .schedule_by_name("pay", &30u32, ScheduleOptions::default())
        .await
        .unwrap();
    let failed = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(failed.status(), OrchestrationStatus::Failed);
    let r = manage(vec![
        server.address(),
        "rewind".into(),
        id.clone(),
        "gateway back".into(),
    ])
    .await;
    assert_eq!(r["status"], "COMPLETED", "{r}");
    assert_eq!(r["output"], r#""reserved 30, paid 30""#, "{r}");
    let history = client.history(&id).await.unwrap();
    let count = |name| {
        history
            .iter()
            .filter(|e| e.kind.type_name() == name)
            .count()
    };
    assert_eq!(count("ExecutionRewound"), 1, "{history:?}");
    assert_eq!(
        count("TaskCompleted"),
        2,
        "the reservation was not redone: {history:?}"
    );
    worker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rust_client_restarts_a_python_orchestration() {
    let server = PeerServer::start();
    let mut python_worker = PyProcess::spawn("worker.py", &[&server.address()]);
    python_worker.expect_line("READY", Duration::from_secs(60));
    let backend: Arc<dyn Backend> =
        Arc::new(GrpcBackend::new(GrpcOptions::new(server.endpoint())).expect("valid options"));
    let client = Client::new(backend);
    let id = client
        .schedule_by_name("py_orchestrator", &"dee", ScheduleOptions::default())
        .await
        .unwrap();
    let first = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(first.output::<String>().unwrap(), "python says DEE!");
    assert_eq!(client.restart(&id).await.unwrap(), id);
    let again = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(again.status(), OrchestrationStatus::Completed);
    assert_eq!(again.output::<String>().unwrap(), "python says DEE!");
    let copy = client.restart_as_new(&id).await.unwrap();
    assert_ne!(copy, id);
    let copied = client.wait_for_completion(&copy, WAIT).await.unwrap();
    assert_eq!(copied.output::<String>().unwrap(), "python says DEE!");
}
