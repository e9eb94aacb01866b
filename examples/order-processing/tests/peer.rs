//! The order-processing example against a real Durable Task sidecar: the
//! Python `durabletask` package's in-memory server (started here, on a free
//! loopback port), with a Rust worker and client on the gRPC backend. The
//! same scenarios as `tests/workflows.rs`, then the app binary with
//! `--backend grpc`.
//!
//! Needs python3 and the pinned package (made into a virtual environment
//! under the target directory on first use); without them the tests fail
//! saying how to set them up.

use durable::grpc::{GrpcBackend, GrpcOptions};
use durable::prelude::*;
use durable::OrchestrationState;
use durable_grpc::testing::PeerServer;
use order_processing::workflows::*;
use std::sync::Arc;
use std::time::Duration;

/// The longest any one orchestration may take on the sidecar.
const WAIT: Duration = Duration::from_secs(60);

fn item(name: &str, quantity: i64, unit_price: f64) -> OrderItem {
    OrderItem {
        name: name.into(),
        quantity,
        unit_price,
    }
}

fn order(customer: &str, items: Vec<OrderItem>) -> Order {
    Order {
        customer: customer.into(),
        items,
    }
}

async fn run(
    client: &Client,
    o: impl Orchestrator<Input = Order>,
    input: Order,
) -> OrchestrationState {
    let id = client.schedule(o, input).await.expect("schedule");
    client
        .wait_for_completion(&id, WAIT)
        .await
        .unwrap_or_else(|e| panic!("waiting for {id}: {e}"))
}

fn result_of(scenario: &str, state: &OrchestrationState) -> OrderResult {
    assert_eq!(
        state.status(),
        OrchestrationStatus::Completed,
        "{scenario}: {:?}",
        state.failure()
    );
    state
        .output()
        .unwrap_or_else(|e| panic!("{scenario}: output: {e}"))
}

/// A high-value order whose manager answers `approved`.
async fn approval(client: &Client, customer: &str, quantity: i64, approved: bool) -> OrderResult {
    let id = client
        .schedule(
            order_with_approval,
            order(customer, vec![item("Server", quantity, 1500.0)]),
        )
        .await
        .expect("schedule");
    client
        .wait_for_start(&id, WAIT)
        .await
        .unwrap_or_else(|e| panic!("waiting for {id} to start: {e}"));
    client
        .raise(&id, &Approval(approved))
        .await
        .expect("raise the approval event");
    let state = client
        .wait_for_completion(&id, WAIT)
        .await
        .unwrap_or_else(|e| panic!("waiting for {id}: {e}"));
    result_of(&format!("approval {approved}"), &state)
}

/// Every scenario of `tests/workflows.rs` but the approval timeout, one
/// after another on one sidecar with one worker. (The Python sidecar has a
/// small thread pool, and every pending wait holds one of its threads, so
/// they do not run at once.)
///
/// Left out: `high_value_times_out`. Its 30 s approval timer is a real
/// timer on a sidecar, so the case would take 30 s of wall time here; it
/// runs on the virtual clock in `tests/workflows.rs`, and durable timers on
/// this sidecar are covered by the gRPC backend's conformance tests.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scenarios_on_the_python_sidecar() {
    let server = PeerServer::start();
    let backend = Arc::new(
        GrpcBackend::connect(GrpcOptions::new(server.endpoint()).task_hub("default"))
            .await
            .unwrap_or_else(|e| panic!("connecting to {}: {e}", server.endpoint())),
    );
    let registry = Registry::discover().expect("the example's functions register");
    let worker = Worker::new(backend.clone(), registry)
        .start()
        .expect("start the worker");
    let client = Client::new(backend);

    // Single item.
    let state = run(
        &client,
        process_order,
        order("Alice", vec![item("Widget", 2, 10.0)]),
    )
    .await;
    let result = result_of("single item", &state);
    assert_eq!(result.total, 20.0);
    assert_eq!(result.items_processed, 1);
    assert_eq!(result.status, "completed");
    assert_eq!(result.order_id, "PAY-2000");

    // Multi item.
    let items = vec![
        item("Widget", 3, 25.0),
        item("Gadget", 1, 99.99),
        item("Doohickey", 5, 4.5),
    ];
    let state = run(&client, process_order, order("Bob", items)).await;
    let result = result_of("multi item", &state);
    assert!((result.total - 197.49).abs() < 1e-9, "{result:?}");
    assert_eq!(result.items_processed, 3);
    assert_eq!(result.status, "completed");

    // Empty order.
    let state = run(&client, process_order, order("Eve", vec![])).await;
    assert_eq!(state.status(), OrchestrationStatus::Failed, "empty order");
    let failure = state.failure().expect("failure details");
    assert!(
        failure.message.contains("at least one item"),
        "empty order: {failure:?}"
    );

    // Zero quantity.
    let state = run(
        &client,
        process_order,
        order("Mallory", vec![item("Widget", 0, 10.0)]),
    )
    .await;
    assert_eq!(state.status(), OrchestrationStatus::Failed, "zero quantity");
    let failure = state.failure().expect("failure details");
    assert!(
        failure.message.contains("Invalid quantity"),
        "zero quantity: {failure:?}"
    );

    // Low value: approved without waiting.
    let state = run(
        &client,
        order_with_approval,
        order("Alice", vec![item("Pen", 10, 2.0)]),
    )
    .await;
    let result = result_of("low value", &state);
    assert_eq!(result.status, "completed");
    assert_eq!(result.total, 20.0);

    // High value, approved.
    let result = approval(&client, "Bob", 1, true).await;
    assert_eq!(result.status, "completed");
    assert_eq!(result.total, 1500.0);
    assert_eq!(result.items_processed, 1);

    // High value, rejected.
    let result = approval(&client, "Charlie", 2, false).await;
    assert_eq!(result.status, "rejected");
    assert_eq!(result.items_processed, 0);

    worker.shutdown().await;
    drop(server);
}

/// The app binary, as a user runs it against a sidecar.
#[test]
fn app_runs_against_the_python_sidecar() {
    let server = PeerServer::start();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_order-processing"))
        .args([
            "--backend",
            "grpc",
            "--endpoint",
            &server.endpoint(),
            "--taskhub",
            "default",
            "--timeout",
            "60",
        ])
        .output()
        .expect("run the app");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "the app failed ({}):\n{stdout}\n{stderr}\nserver log:\n{}",
        out.status,
        server.log_text()
    );
    assert_eq!(
        stdout.matches("status=completed").count(),
        2,
        "both sample orders complete:\n{stdout}"
    );
}
