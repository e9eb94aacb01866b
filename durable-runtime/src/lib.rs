//! The runtime of durable: history model, replay engine, registry, worker,
//! client and backends. Most users depend on the `durable` facade crate,
//! which re-exports all of this with the macros.

pub mod actions;
pub mod backend;
pub mod client;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod error;
pub mod history;
pub mod registry;
pub mod replay;
pub mod testing;
pub mod worker;

pub use backend::{Backend, BackendError, MemoryBackend};
/// Re-export: timestamps are `chrono::DateTime<Utc>`.
pub use chrono;
pub use client::{Client, OrchestrationState, ScheduleOptions};
pub use error::{
    into_activity_error, into_orchestration_error, ActivityError, Error, OrchestrationError,
    TaskError,
};
pub use history::{FailureDetails, HistoryEvent, OrchestrationStatus};
pub use registry::{Activity, BoxFuture, Orchestrator, Registration, Registry, RegistryError};
pub use replay::context::{
    ActivityContext, DurableFuture, Either, OrchestrationContext, SubOrchestratorOptions,
    TimerFuture, TimerSpec,
};
pub use replay::retry::RetryPolicy;
pub use testing::{run_test, TestEnv};
pub use worker::{Worker, WorkerHandle, WorkerOptions};
