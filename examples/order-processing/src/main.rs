//! The order-processing app: runs sample orders end to end on a backend.
//!
//! ```text
//! cargo run -p order-processing                     # SQLite file ./durable.db (durable)
//! cargo run -p order-processing -- --db orders.db   # another file
//! cargo run -p order-processing -- --backend memory # volatile, in-process
//! cargo run -p order-processing -- --backend grpc --endpoint http://localhost:8080 --taskhub default
//! cargo run -p order-processing -- list             # instances stored by earlier runs
//! cargo run -p order-processing -- worker           # only a worker, until SIGINT or SIGTERM
//! ```

use clap::{Parser, Subcommand, ValueEnum};
use durable::backend::InstanceQuery;
use durable::prelude::*;
use durable::{Backend, MemoryBackend, OrchestrationState};
use order_processing::workflows::{
    order_with_approval, process_order, Approval, Order, OrderItem, OrderResult,
};
use std::io::Write;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Prints a line; a closed pipe (`| head`) just ends the output.
macro_rules! out {
    ($($arg:tt)*) => {{
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum BackendKind {
    /// An embedded SQLite file: durable, one machine (the default).
    Sqlite,
    /// In-process and volatile: everything is lost when the app exits.
    Memory,
    /// A Durable Task sidecar over gRPC (Durable Task Scheduler emulator,
    /// durabletask-go, Dapr, the Python SDK's test server).
    Grpc,
}

/// Runs the order-processing workflows of the durable example.
#[derive(Debug, Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    /// Which backend stores orchestrations.
    #[arg(long, value_enum, default_value_t = BackendKind::Sqlite)]
    backend: BackendKind,

    /// SQLite database file (with --backend sqlite); created if missing.
    #[arg(long, default_value = "durable.db")]
    db: std::path::PathBuf,

    /// gRPC endpoint of the sidecar (with --backend grpc).
    #[arg(long, env = "ENDPOINT", default_value = "http://localhost:8080")]
    endpoint: String,

    /// Task hub name sent to the sidecar (with --backend grpc).
    #[arg(long, env = "TASKHUB", default_value = "default")]
    taskhub: String,

    /// How long to wait for each orchestration, in seconds.
    #[arg(long, default_value_t = 60)]
    timeout: u64,

    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the sample orders end to end (the default).
    Run,
    /// Show one instance.
    Status {
        /// Instance id.
        id: String,
    },
    /// List the instances the backend holds.
    List,
    /// Run only a worker (no samples), until SIGINT (Ctrl-C) or SIGTERM;
    /// then stop gracefully. Schedule work from another process.
    Worker,
}

fn sample_order() -> Order {
    Order {
        customer: "Alice".into(),
        items: vec![
            OrderItem {
                name: "Widget".into(),
                quantity: 3,
                unit_price: 25.0,
            },
            OrderItem {
                name: "Gadget".into(),
                quantity: 1,
                unit_price: 99.99,
            },
        ],
    }
}

fn big_order() -> Order {
    Order {
        customer: "Bob".into(),
        items: vec![OrderItem {
            name: "Server".into(),
            quantity: 1,
            unit_price: 1500.0,
        }],
    }
}

async fn open_backend(cli: &Cli) -> Result<Arc<dyn Backend>, String> {
    Ok(match cli.backend {
        BackendKind::Sqlite => {
            Arc::new(durable::sqlite::SqliteBackend::open(&cli.db).map_err(|e| e.to_string())?)
        }
        BackendKind::Memory => Arc::new(MemoryBackend::new()),
        BackendKind::Grpc => {
            let options =
                durable::grpc::GrpcOptions::new(cli.endpoint.clone()).task_hub(cli.taskhub.clone());
            Arc::new(
                durable::grpc::GrpcBackend::connect(options)
                    .await
                    .map_err(|e| e.to_string())?,
            )
        }
    })
}

fn print_state(state: &OrchestrationState) {
    out!(
        "  {}  {:<20} {:<10} created {}",
        state.instance_id(),
        state.name(),
        state.status(),
        state.created_at().format("%Y-%m-%d %H:%M:%S")
    );
    if let Some(f) = state.failure() {
        out!("    failure: {f}");
    }
}

async fn run_samples(client: &Client, timeout: Duration) -> Result<(), String> {
    out!("== process_order: validate -> total -> pay -> ship items in parallel -> confirm");
    let id = client
        .schedule(process_order, sample_order())
        .await
        .map_err(|e| e.to_string())?;
    let state = client
        .wait_for_completion(&id, timeout)
        .await
        .map_err(|e| e.to_string())?;
    report(&id, &state)?;

    out!("== order_with_approval: a 1500.00 order waits for a manager's approval (or 30 s)");
    let id = client
        .schedule(order_with_approval, big_order())
        .await
        .map_err(|e| e.to_string())?;
    client
        .wait_for_start(&id, timeout)
        .await
        .map_err(|e| e.to_string())?;
    out!("  manager approves {id}");
    client
        .raise(&id, &Approval(true))
        .await
        .map_err(|e| e.to_string())?;
    let state = client
        .wait_for_completion(&id, timeout)
        .await
        .map_err(|e| e.to_string())?;
    report(&id, &state)
}

fn report(id: &str, state: &OrchestrationState) -> Result<(), String> {
    out!("  instance {id}: {}", state.status());
    match state.status() {
        OrchestrationStatus::Completed => {
            let result: OrderResult = state.output().map_err(|e| e.to_string())?;
            out!(
                "  result: order_id={} total={:.2} items_processed={} status={}",
                result.order_id,
                result.total,
                result.items_processed,
                result.status
            );
            Ok(())
        }
        other => Err(format!(
            "orchestration {id} ended {other}: {}",
            state.failure().map(|f| f.to_string()).unwrap_or_default()
        )),
    }
}

async fn app(cli: Cli) -> Result<(), String> {
    let backend = open_backend(&cli).await?;
    if cli.backend == BackendKind::Sqlite {
        out!(
            "backend: SQLite file {} (run `list` to see earlier runs)",
            cli.db.display()
        );
    }
    let client = Client::new(backend.clone());
    match cli.command.unwrap_or(Command::Run) {
        Command::Run => {
            let registry = Registry::discover().map_err(|e| e.to_string())?;
            let worker = Worker::new(backend, registry)
                .start()
                .map_err(|e| e.to_string())?;
            let outcome = run_samples(&client, Duration::from_secs(cli.timeout)).await;
            worker.shutdown().await;
            outcome
        }
        Command::Worker => {
            let registry = Registry::discover().map_err(|e| e.to_string())?;
            let stopped = Worker::new(backend, registry)
                .run_until_signal()
                .map_err(|e| e.to_string())?;
            out!("worker ready: running orchestrations and activities until SIGINT (Ctrl-C) or SIGTERM");
            let signal = stopped.await;
            out!("worker stopped gracefully after {signal}");
            Ok(())
        }
        Command::Status { id } => match client.get_state(&id).await.map_err(|e| e.to_string())? {
            Some(state) => {
                print_state(&state);
                if let Some(out) = state.output_json() {
                    out!("    output: {out}");
                }
                Ok(())
            }
            None => Err(format!("no instance with id {id}")),
        },
        Command::List => {
            let all = client
                .query_all(InstanceQuery::default())
                .await
                .map_err(|e| e.to_string())?;
            out!("{} instance(s):", all.len());
            for state in &all {
                print_state(state);
            }
            Ok(())
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    match app(Cli::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
