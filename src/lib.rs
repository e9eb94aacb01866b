//! Durable Task orchestrations in Rust: typed, replay-safe, testable in
//! milliseconds.
//!
//! An *orchestrator* is an `async fn` that coordinates work; an *activity* is
//! an `async fn` that does it. The runtime records every step in a history,
//! so an orchestration survives crashes and restarts: after one, the
//! orchestrator is replayed from its history and carries on where it was.
//!
//! ```
//! use durable::prelude::*;
//!
//! #[derive(Clone, Debug, Serialize, Deserialize)]
//! struct Order {
//!     id: String,
//!     items: Vec<String>,
//! }
//!
//! #[activity]
//! async fn ship_item(_ctx: ActivityContext, name: String) -> String {
//!     format!("TRACK-{}", name.to_uppercase())
//! }
//!
//! #[orchestrator]
//! async fn ship_order(ctx: OrchestrationContext, order: Order) -> Result<Vec<String>, OrchestrationError> {
//!     // Fan out: one activity per item, run in parallel, results in order.
//!     let shipments = order.items.iter().map(|item| ctx.call_activity(ship_item, item.clone()));
//!     Ok(ctx.when_all(shipments).await?)
//! }
//!
//! #[durable::test]
//! async fn ships_every_item(env: TestEnv) {
//!     let order = Order { id: "o-1".into(), items: vec!["book".into(), "pen".into()] };
//!     let id = env.client().schedule(ship_order, order).await.unwrap();
//!     let state = env.wait_for_completion(&id).await.unwrap();
//!     assert_eq!(state.output::<Vec<String>>().unwrap(), ["TRACK-BOOK", "TRACK-PEN"]);
//! }
//! # ships_every_item();
//! ```
//!
//! - [`macro@orchestrator`] and [`macro@activity`] turn functions into typed
//!   handles (`ship_order`, `ship_item` above are values) and register them
//!   for [`Registry::discover`]. `#[orchestrator]` also rejects, at compile
//!   time, calls that would break replay (clocks, randomness, I/O, ...).
//! - [`derive@Event`] declares an external event type (its name and its
//!   payload in one type), used by `ctx.wait_for_event::<E>()`,
//!   `ctx.send(id, &event)` and `client.raise(id, &event)`.
//! - [`macro@test`] runs a test against an in-memory backend whose clock
//!   jumps to the next timer whenever the system is idle.
//! - The [`prelude`] has what most code needs.
//!
//! Activities run at least once; orchestration episodes are applied exactly
//! once.

pub use durable_runtime::*;

pub use durable_macros::{activity, nondeterministic, orchestrator, test, Event};

/// The embedded SQLite backend: durable, one machine (feature `sqlite`, on
/// by default).
#[cfg(feature = "sqlite")]
pub use durable_sqlite as sqlite;

/// The gRPC backend for Durable Task sidecars: Azure Durable Task Scheduler
/// and its emulator, Dapr Workflow, durabletask-go (feature `grpc`).
#[cfg(feature = "grpc")]
pub use durable_grpc as grpc;

/// What most code that defines or runs orchestrations needs:
/// `use durable::prelude::*;`.
///
/// The test macro is not in the prelude, because a glob import of a macro
/// named `test` would shadow the built-in `#[test]`; write `#[durable::test]`.
pub mod prelude {
    pub use durable_macros::{activity, orchestrator, Event};
    pub use durable_runtime::{
        Activity, ActivityContext, ActivityError, ActivitySignature, Client, ContinuedAsNew,
        DurableFuture, Either, Event, IdReusePolicy, OrchestrationContext, OrchestrationError,
        OrchestrationState, OrchestrationStatus, Orchestrator, OrchestratorSignature, Registry,
        RetryPolicy, ScheduleOptions, SubOrchestratorOptions, TaskError, TestEnv, TimerSpec,
        Worker, WorkerOptions,
    };
    pub use serde::{Deserialize, Serialize};
}

/// The README's examples, run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

/// What the macros' generated code names. Not a public API: it changes
/// without notice.
#[doc(hidden)]
pub mod __private {
    pub use durable_runtime::{
        into_activity_error, into_orchestration_error, Activity, ActivitySignature, BoxFuture,
        Event, Orchestrator, OrchestratorSignature, Registration, Registry,
    };

    /// Implemented once for every type, and a second time for `Result`: so
    /// naming `<T as ReturnTypeIsNotAResult<_>>::CHECK` is ambiguous exactly
    /// when `T` is a `Result` hidden behind an alias. Write `Result<T, E>`
    /// in the signature so the macro sees it.
    pub trait ReturnTypeIsNotAResult<Marker> {
        /// Names the check.
        const CHECK: () = ();
    }

    impl<T: ?Sized> ReturnTypeIsNotAResult<()> for T {}

    /// The marker of the `Result` impl; its name is the hint in the error.
    #[allow(non_camel_case_types)]
    pub struct write_Result_T_E_in_the_signature_not_an_alias;

    impl<T, E> ReturnTypeIsNotAResult<write_Result_T_E_in_the_signature_not_an_alias>
        for core::result::Result<T, E>
    {
    }
    pub use durable_runtime::testing::TestEnv;
    pub use durable_runtime::{
        ActivityContext, ActivityError, OrchestrationContext, OrchestrationError,
    };
    pub use inventory;
    pub use serde;

    /// Runs a `#[durable::test]` body: builds the runtime and the `TestEnv`
    /// (with `registry`, or everything discovered), then checks the outcome.
    pub fn run_test<F, Fut>(registry: Option<Registry>, test: F)
    where
        F: FnOnce(TestEnv) -> Fut,
        Fut: core::future::Future,
        Fut::Output: TestOutcome,
    {
        durable_runtime::testing::run_test(registry, |env| async move {
            test(env).await.check();
        });
    }

    /// What a `#[durable::test]` function may return: `()` or
    /// `Result<(), E>` with `E: Debug`.
    #[diagnostic::on_unimplemented(
        message = "`#[durable::test]` functions return `()` or `Result<(), E>`, not `{Self}`",
        label = "change the return type to `()` or `Result<(), E>`"
    )]
    pub trait TestOutcome {
        /// Panics (failing the test) on an error.
        fn check(self);
    }

    impl TestOutcome for () {
        fn check(self) {}
    }

    impl<E: core::fmt::Debug> TestOutcome for Result<(), E> {
        fn check(self) {
            if let Err(error) = self {
                panic!("the test returned an error: {error:?}");
            }
        }
    }
}
