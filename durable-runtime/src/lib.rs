//! The runtime of durable: history model, replay engine, registry, worker,
//! client and backends. Most users depend on the `durable` facade crate,
//! which re-exports all of this with the macros.

//!
//! Modules form a ladder: each uses only modules on its own rung or below,
//! and no dependency runs in a circle (`tests/module_graph.rs` checks
//! both):
//!
//! 1. [`history`], [`codec`]: the history model and payload encoding;
//!    [`trace`]: W3C trace contexts and finished spans;
//!    [`app_state`]: the application state activities take;
//! 2. [`actions`], [`failure`], [`handler`], [`retry`]: what an episode asks
//!    for, failures, handler signatures, retry policies; [`entity`]: entity
//!    ids, messages, declarations and the batch that runs them; [`metrics`]:
//!    the metrics the worker and stores report;
//! 3. [`context`]: what orchestrator code calls;
//! 4. [`registry`]: handlers by name;
//! 5. [`replay`]: the replay engine; [`backend`]: the `Backend` trait, the
//!    transition core, the in-memory backend; [`observe`]: the spans of
//!    histories;
//! 6. [`error`], [`client`], [`worker`];
//! 7. [`testing`], and the conformance suite (feature `conformance`).

pub mod actions;
pub mod app_state;
pub mod backend;
pub mod client;
pub mod codec;
#[cfg(feature = "conformance")]
pub mod conformance;
pub mod context;
pub mod entity;
pub mod error;
pub mod failure;
pub mod handler;
pub mod history;
pub mod metrics;
pub mod observe;
pub mod registry;
pub mod replay;
pub mod retry;
pub mod schedule;
pub mod testing;
pub mod trace;
pub mod versioning;
pub mod worker;

#[doc(hidden)]
pub use inventory as __inventory;

pub use app_state::{State, StateMap};
pub use backend::{Backend, BackendError, IdReusePolicy, MemoryBackend};
/// Re-export: timestamps are `chrono::DateTime<Utc>`.
pub use chrono;
pub use client::{Client, OrchestrationState, ScheduleOptions};
pub use context::{
    DurableFuture, Either, Join, JoinTuple, OrchestrationContext, SubOrchestratorOptions, Timeout,
    TimerFuture, TimerSpec, TryJoin, TryJoinTuple,
};
pub use error::Error;
pub use failure::{
    into_activity_error, into_orchestration_error, ActivityError, ContinueAsNewResult,
    ContinuedAsNew, OrchestrationError, TaskError, TimedOut,
};
pub use handler::{ActivityContext, ActivitySignature, BoxFuture, Event, OrchestratorSignature};
pub use history::{FailureDetails, HistoryEvent, OrchestrationStatus};
pub use registry::{Activity, Orchestrator, Registration, Registry, RegistryError};
pub use retry::RetryPolicy;
pub use testing::{run_test, TestEnv, TestEnvBuilder};
pub use worker::{StopSignal, Worker, WorkerHandle, WorkerOptions};
