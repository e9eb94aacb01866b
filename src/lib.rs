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
//!
//! # Activity state
//!
//! Activities that need a database pool, an HTTP client or configuration
//! take it as [`State<T>`] parameters, between the context and the input
//! (as axum handlers take `State`). The worker holds one value per type,
//! given with [`Worker::state`]; every activity call gets a clone, so put
//! an `Arc` (or a pool handle, which is shared already) in it. A worker
//! that lacks a value an activity takes does not start: the error names the
//! activity, the type and the fix ([`RegistryError::MissingState`]).
//!
//! ```
//! use durable::prelude::*;
//! use std::collections::HashMap;
//! use std::sync::{Arc, Mutex};
//!
//! /// The application's database: cheap to clone, the rows are shared.
//! #[derive(Clone, Default)]
//! struct Db(Arc<Mutex<HashMap<String, u64>>>);
//!
//! #[activity]
//! async fn charge(_ctx: ActivityContext, State(db): State<Db>, (order, cents): (String, u64)) -> u64 {
//!     let mut totals = db.0.lock().unwrap();
//!     let total = totals.entry(order).or_default();
//!     *total += cents;
//!     *total
//! }
//!
//! #[orchestrator]
//! async fn checkout(ctx: OrchestrationContext, order: String) -> Result<u64, OrchestrationError> {
//!     ctx.call_activity(charge, (order.clone(), 250)).await?;
//!     Ok(ctx.call_activity(charge, (order, 100)).await?)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! // In `async fn main() -> Result<(), Box<dyn std::error::Error>>`:
//! let backend: Arc<dyn durable::Backend> = Arc::new(durable::MemoryBackend::new());
//! let db = Db::default();
//! let worker = Worker::new(backend.clone(), Registry::discover()?)
//!     .state(db.clone())
//!     .start()?;
//! let client = Client::new(backend.clone());
//! let id = client.schedule(checkout, "o-1".to_string()).await?;
//! let state = client.wait_for_completion(&id, std::time::Duration::from_secs(10)).await?;
//! assert_eq!(state.output::<u64>()?, 350);
//! assert_eq!(db.0.lock().unwrap()["o-1"], 350);
//! worker.shutdown().await;
//!
//! // Without a `Db` the worker does not start, and says why.
//! let error = Worker::new(backend, Registry::discover()?).start().unwrap_err();
//! assert!(error.to_string().contains("activity \"charge\""));
//! # Ok(())
//! # }
//! ```
//!
//! An activity may take several `State` parameters of different types.
//! Activities registered as closures ([`Registry::activity_fn`]) read state
//! with [`ActivityContext::state`] instead, and are not checked at startup.
//! Orchestrators cannot take state: they are replayed, so what they use
//! must come from their input or from activities.
//!
//! # Testing: fakes and per-test state
//!
//! A test gives its `TestEnv` state values and replaces single activities
//! with fakes, while everything else stays discovered:
//! `#[durable::test(state(value, ..), fake(real = fake, ..))]`, or
//! [`TestEnv::builder()`](TestEnv::builder) with
//! [`.state(..)`](TestEnvBuilder::state) and
//! [`.fake_activity(real, fake)`](TestEnvBuilder::fake_activity). A fake is
//! an `#[activity]` with the same input and output types as the real one
//! (a compile error otherwise) and runs under the real one's name; the
//! state it takes replaces what the real one took, so faking the activity
//! that talks to a gateway means the test needs no gateway. Faking an
//! activity that is not registered is an error naming it.
//!
//! A `static` counter is shared by every test of a binary (tests run in
//! parallel, in any order), so what one test reads depends on the others.
//! A value given to one `TestEnv` is that test's own:
//!
//! ```
//! use durable::prelude::*;
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use std::sync::Arc;
//!
//! /// The real gateway client: tests do not have one.
//! #[derive(Clone)]
//! struct Gateway {
//!     url: String,
//! }
//!
//! #[activity]
//! async fn charge(_ctx: ActivityContext, State(gateway): State<Gateway>, cents: u64) -> Result<String, String> {
//!     Err(format!("calling {} to charge {cents} is not for tests", gateway.url))
//! }
//!
//! #[activity]
//! async fn send_receipt(_ctx: ActivityContext, receipt: String) -> String {
//!     format!("sent {receipt}")
//! }
//!
//! #[orchestrator]
//! async fn pay(ctx: OrchestrationContext, cents: u64) -> Result<String, OrchestrationError> {
//!     let receipt = ctx.call_activity(charge, cents).await?;
//!     Ok(ctx.call_activity(send_receipt, receipt).await?)
//! }
//!
//! /// Every test of the binary adds to this one.
//! static ALL_CHARGES: AtomicU32 = AtomicU32::new(0);
//!
//! /// Each test that is given one counts only its own charges.
//! #[derive(Clone, Default)]
//! struct Charges(Arc<AtomicU32>);
//!
//! /// Stands in for `charge`: same input and output.
//! #[activity]
//! async fn fake_charge(_ctx: ActivityContext, State(charges): State<Charges>, cents: u64) -> Result<String, String> {
//!     ALL_CHARGES.fetch_add(1, Ordering::SeqCst);
//!     charges.0.fetch_add(1, Ordering::SeqCst);
//!     Ok(format!("receipt-{cents}"))
//! }
//!
//! #[durable::test(state(Charges::default()), fake(charge = fake_charge))]
//! async fn pays_once(env: TestEnv) {
//!     let id = env.client().schedule(pay, 500).await.unwrap();
//!     let state = env.wait_for_completion(&id).await.unwrap();
//!     assert_eq!(state.output::<String>().unwrap(), "sent receipt-500");
//!     // This test's own count, whatever other tests do.
//!     assert_eq!(env.state::<Charges>().unwrap().0.load(Ordering::SeqCst), 1);
//! }
//!
//! pays_once();
//!
//! // The builder form (in a `#[tokio::test]`): the test keeps its own
//! // handle on the value.
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let charges = Charges::default();
//! let env = TestEnv::builder()
//!     .state(charges.clone())
//!     .fake_activity(charge, fake_charge)
//!     .build()
//!     .unwrap();
//! for cents in [100, 200] {
//!     let id = env.client().schedule(pay, cents).await.unwrap();
//!     env.wait_for_completion(&id).await.unwrap();
//! }
//! assert_eq!(charges.0.load(Ordering::SeqCst), 2);
//! env.shutdown().await;
//! # });
//!
//! // The static saw both tests' charges.
//! assert_eq!(ALL_CHARGES.load(Ordering::SeqCst), 3);
//! ```
//!
//! A fake is an `#[activity]` itself, so discovery registers it under its
//! own name too, and the state it takes is needed by every `TestEnv` of the
//! binary that discovers it.

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

/// OpenTelemetry export of durable's spans (feature `otel`):
/// `durable::otel::init_otlp("my-service")` sends them over OTLP.
#[cfg(feature = "otel")]
pub use durable_otel as otel;

/// What most code that defines or runs orchestrations needs:
/// `use durable::prelude::*;`.
///
/// The test macro is not in the prelude, because a glob import of a macro
/// named `test` would shadow the built-in `#[test]`; write `#[durable::test]`.
pub mod prelude {
    pub use durable_macros::{activity, orchestrator, Event};
    pub use durable_runtime::context::CriticalSection;
    pub use durable_runtime::entity::{Entity, EntityContext, EntityId, Operations};
    pub use durable_runtime::{
        Activity, ActivityContext, ActivityError, ActivitySignature, Client, ContinuedAsNew,
        DurableFuture, Either, Event, IdReusePolicy, OrchestrationContext, OrchestrationError,
        OrchestrationState, OrchestrationStatus, Orchestrator, OrchestratorSignature, Registry,
        RetryPolicy, ScheduleOptions, State, SubOrchestratorOptions, TaskError, TestEnv, TimedOut,
        Timeout, TimerSpec, Worker, WorkerOptions,
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
    pub use durable_runtime::app_state::{StateParam, StateRequirement};
    pub use durable_runtime::registry::missing_state;
    pub use durable_runtime::testing::TestEnvBuilder;
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
    /// that `configure` describes, then checks the outcome.
    pub fn run_test<C, F, Fut>(configure: C, test: F)
    where
        C: FnOnce() -> TestEnvBuilder,
        F: FnOnce(TestEnv) -> Fut,
        Fut: core::future::Future,
        Fut::Output: TestOutcome,
    {
        durable_runtime::testing::run_test_with(configure, |env| async move {
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
