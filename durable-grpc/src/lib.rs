//! The gRPC remote backend of durable: the Durable Task sidecar protocol.
//!
//! [`GrpcBackend`] implements [`durable_runtime::backend::Backend`] over
//! `TaskHubSidecarService`, the protocol of the Azure Durable Task Scheduler
//! (and its emulator), Dapr Workflow, durabletask-go and the other Durable
//! Task SDKs' sidecars. Orchestrations and activities written with durable
//! run there unchanged, and share a task hub with workers written in other
//! languages.
//!
//! What the protocol cannot carry: durable's in-process backends reject a
//! completion with a stale lease ([`durable_runtime::backend::BackendError::LeaseLost`]);
//! over gRPC, that check is the sidecar's, and some sidecars (the Python
//! SDK's test server among them) accept and ignore stale completions.

mod backend;
mod convert;
mod options;

pub use backend::GrpcBackend;
pub use options::{
    GrpcOptions, ReconnectPolicy, TokenFuture, TokenProvider, WorkItemFilters, DEFAULT_ENDPOINT,
    DEFAULT_TASK_HUB,
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
