//! `durable-bench`: measures durable on a backend against the project's
//! performance targets and prints a table (or, with `--json`, a
//! machine-readable report).
//!
//! ```text
//! cargo run --release -p durable-bench -- --backend memory
//! cargo run --release -p durable-bench -- --backend memory --scenario s1,s6 --repeat 3 --json
//! cargo run --release -p durable-bench -- --backend grpc --endpoint http://localhost:8080 --taskhub default
//! cargo run --release -p durable-bench -- --backend grpc --peer --compare-python --scenario s1 --repeat 3
//! ```
//!
//! Scenarios (see `docs/benchmarks.md`): S1 seq3 throughput, S2 fan-out,
//! S3 long chain (with and without the sticky cache), S4 waiting instances
//! (memory and event rate), S5 sub-orchestrations, S6 seq3 latency, S7 entity operations.

mod backend;
mod report;
mod scenarios;

use backend::{BackendArgs, BackendFactory};
use clap::Parser;
use report::{Failure, Machine, Report};
use scenarios::{Bench, Scenario, SizeArgs, WorkerArgs};
use std::process::ExitCode;
use std::time::Duration;

/// Benchmarks of durable's backends.
#[derive(Debug, Parser)]
#[command(name = "durable-bench", version, about)]
struct Cli {
    #[command(flatten)]
    backend: BackendArgs,

    /// Scenarios to run, comma-separated (default: all). S4 always runs
    /// first, so its memory reading starts from an unused heap.
    #[arg(long, value_enum, value_delimiter = ',')]
    scenario: Vec<Scenario>,

    /// Print a JSON report instead of the table.
    #[arg(long)]
    json: bool,

    /// Runs of each scenario; the median is reported.
    #[arg(long, default_value_t = 1)]
    repeat: usize,

    /// Longest wait for any one instance, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout: u64,

    #[command(flatten)]
    sizes: SizeArgs,

    #[command(flatten)]
    worker: WorkerArgs,

    /// Run as one of S1's worker processes (`--worker-processes`) on the
    /// schema SCHEMA of the PostgreSQL server at URL, until standard input
    /// closes.
    #[arg(long, hide = true, num_args = 2, value_names = ["URL", "SCHEMA"])]
    worker_process: Option<Vec<String>>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Some(target) = &cli.worker_process {
        return match scenarios::worker_process(&target[0], &target[1], &cli.worker).await {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("error: worker process: {e}");
                ExitCode::FAILURE
            }
        };
    }
    let args = cli.backend.clone();
    let factory = match tokio::task::spawn_blocking(move || BackendFactory::new(args)).await {
        Ok(Ok(f)) => f,
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let sizes = cli.sizes.apply(factory.default_sizes());
    let bench = Bench::new(
        factory.clone(),
        sizes,
        cli.worker.clone(),
        Duration::from_secs(cli.timeout),
    );
    let repeat = cli.repeat.max(1);
    let selected: Vec<Scenario> = Scenario::ALL
        .into_iter()
        .filter(|s| cli.scenario.is_empty() || cli.scenario.contains(s))
        // S7 reads entities as instances: not on a remote sidecar unless
        // asked for (then it says why it cannot run).
        .filter(|s| *s != Scenario::S7 || !factory.is_remote() || !cli.scenario.is_empty())
        .collect();
    let mut report = Report {
        backend: factory.name(),
        backend_detail: factory.describe(),
        repeat,
        machine: Machine::detect(),
        measurements: Vec::new(),
        failures: Vec::new(),
    };
    eprintln!("backend {}, sizes {:?}", factory.describe(), bench.sizes());
    for s in selected {
        for run in 1..=repeat {
            eprintln!("{} {}: run {run}/{repeat}", s.id(), s.title());
            match bench.run(s).await {
                Ok(ms) => report.add(ms),
                Err(e) => {
                    eprintln!("{} failed: {e}", s.id());
                    report.failures.push(Failure {
                        scenario: s.id(),
                        error: e.to_string(),
                    });
                    break;
                }
            }
        }
    }
    // Stops the Python sidecar started with --peer (when the last handle goes).
    drop(bench);
    drop(factory);
    if cli.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report.json()).expect("a JSON value serialises")
        );
    } else {
        print!("{}", report.table());
    }
    if report.failures.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
