//! What orchestrator code sees: [`OrchestrationContext`], its durable
//! futures, and the execution state they share with the replay engine.
//!
//! - `orchestration`: the context's public API (scheduling calls, time,
//!   ids, logging) and the options of those calls;
//! - `futures`: [`DurableFuture`], [`TimerFuture`], `when_any`'s futures;
//! - `entities`: calling, signalling and locking entities
//!   ([`EntityCall`], [`CriticalSection`]);
//! - `join`: the typed joins [`Join`] and [`TryJoin`] over tuples of
//!   futures of different types;
//! - `timeout`: [`Timeout`], a future raced against a deadline timer;
//! - `state`: the state of one execution, which only the context and the
//!   replay engine touch.

mod entities;
mod futures;
mod join;
mod orchestration;
pub(crate) mod state;
mod timeout;

pub use entities::{CriticalSection, EntityCall};
pub use futures::{DurableFuture, Either, TimerFuture, WhenAny, WhenAny2};
pub use join::{Join, JoinTuple, TryJoin, TryJoinTuple};
pub use orchestration::{OrchestrationContext, SubOrchestratorOptions, TimerSpec};
pub use timeout::Timeout;
