//! The gRPC remote backend of durable: the Durable Task sidecar protocol.
//!
//! [`GrpcBackend`] implements [`durable_runtime::backend::Backend`] over
//! `TaskHubSidecarService`, the protocol of the Azure Durable Task Scheduler
//! (and its emulator), Dapr Workflow, durabletask-go and the other Durable
//! Task SDKs' sidecars. Orchestrations and activities written with durable
//! run there unchanged, and share a task hub with workers written in other
//! languages (use [`WorkItemFilters`] so each worker gets only its own work).
//!
//! ```no_run
//! use durable_grpc::{GrpcBackend, GrpcOptions};
//! use durable_runtime::{ActivityError, Client, Registry, ScheduleOptions, Worker};
//! use std::sync::Arc;
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! // The Durable Task Scheduler emulator's defaults: http://localhost:8080, task hub "default".
//! let backend = Arc::new(GrpcBackend::connect(GrpcOptions::default()).await?);
//! let registry = Registry::new()
//!     .activity_fn("greet", |_ctx, name: String| async move {
//!         Ok::<_, ActivityError>(format!("Hello, {name}!"))
//!     })
//!     .orchestrator_fn("hello", |ctx, name: String| async move {
//!         let greeting: String = ctx.call_activity_by_name("greet", &name).await?;
//!         Ok(greeting)
//!     });
//! let worker = Worker::new(backend.clone(), registry).start()?;
//! let client = Client::new(backend);
//! let id = client.schedule_by_name("hello", &"world", ScheduleOptions::default()).await?;
//! let state = client.wait_for_completion(&id, Duration::from_secs(30)).await?;
//! assert_eq!(state.output::<String>()?, "Hello, world!");
//! worker.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! Delivery: as on every backend, activities run at least once. Episodes
//! are applied once as far as the sidecar enforces its completion tokens;
//! some (the Python SDK's test sidecar among them) accept and ignore a stale
//! completion instead of rejecting it, so
//! [`durable_runtime::backend::BackendError::LeaseLost`] is only reported
//! where the sidecar reports it.
//!
//! Feature `server`: the `server` module serves `TaskHubSidecarService`
//! from any durable backend (memory, SQLite, PostgreSQL), so workers and
//! clients of any Durable Task SDK can use it.
//!
//! Feature `testing`: the `testing` module starts the Python `durabletask`
//! package's in-memory sidecar (and its client and worker) as a peer for
//! tests and benchmarks in this workspace.

mod backend;
mod convert;
mod options;
#[cfg(feature = "server")]
pub mod server;
#[cfg(feature = "testing")]
pub mod testing;

pub use backend::GrpcBackend;
pub use options::{
    GrpcOptions, ReconnectPolicy, TokenFuture, TokenProvider, WorkItemFilters, DEFAULT_ENDPOINT,
    DEFAULT_MAX_INCOMING_MESSAGE_SIZE, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_TASK_HUB,
};

#[allow(
    missing_docs,
    unreachable_pub,
    dead_code,
    clippy::all,
    clippy::pedantic
)]
mod proto {
    tonic::include_proto!("_");
}
