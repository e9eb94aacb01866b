//! Procedural macros of durable: `#[orchestrator]`, `#[activity]`,
//! `#[durable::test]`, `#[derive(Event)]` and the
//! `#[durable::nondeterministic]` marker.
//!
//! Use them through the `durable` crate, which re-exports them; the code they
//! generate names everything through `::durable::__private`.
//!
//! Each macro lives in its own module and runs in three steps: parse (into a
//! small model that keeps spans), validate (collects every error), expand
//! (cannot fail). On error the macros still emit a stub of the item beside
//! the errors, so the rest of the crate keeps type-checking.

mod errors;
mod event;
mod handler;
mod lints;
mod options;
mod test_fn;

use proc_macro::TokenStream;

/// Turns an `async fn` into an orchestrator.
///
/// ```
/// use durable::prelude::*;
///
/// #[activity]
/// async fn greet(_ctx: ActivityContext, name: String) -> String {
///     format!("hello, {name}")
/// }
///
/// /// Greets everyone on the list, one after the other.
/// #[orchestrator]
/// async fn greet_all(ctx: OrchestrationContext, names: Vec<String>) -> Result<Vec<String>, OrchestrationError> {
///     let mut greetings = Vec::new();
///     for name in names {
///         greetings.push(ctx.call_activity(greet, name).await?);
///     }
///     Ok(greetings)
/// }
///
/// // The function's name is now a value naming the orchestrator.
/// let registry = Registry::new().orchestrator(greet_all).activity(greet);
/// # let _ = registry;
/// ```
///
/// # Signature
///
/// `async fn name(ctx: OrchestrationContext, input: In) -> Result<Out, OrchestrationError>`
///
/// - The first parameter is the context, taken by value. Its type is
///   recognised by its last path segment, so `OrchestrationContext`,
///   `durable::OrchestrationContext` and the like all work.
/// - At most one input follows; leave it out for an orchestrator without
///   input (its input type is then `()`). Bundle several values in a struct or
///   a tuple. Parameters may use any irrefutable pattern
///   (`Order { id, .. }: Order`, `(a, b): (u32, u32)`, `_ctx`).
/// - The input and output must be owned serde types (`Serialize +
///   DeserializeOwned + Send + 'static`): they are stored in the history as
///   JSON.
/// - The return type may be `Result<Out, E>` with any displayable `E`
///   (`OrchestrationError`, `String`, `anyhow::Error`, boxed errors; with
///   `OrchestrationError`, `?` works on task results and on any
///   `std::error::Error`), or a plain `Out`, which always succeeds. A return type whose last
///   segment is `Result` is read as fallible; an alias of `Result` under
///   another name is refused (write `Result<T, E>`). Leave it out for `()`.
/// - No generics, lifetimes, `self` receivers, `const`, `unsafe` or `extern`.
///
/// # What it generates
///
/// The function's name becomes a unit struct (same visibility, doc comments
/// kept; it derives `Clone`, `Copy`, `Debug`, `Default`) implementing
/// `durable::OrchestratorSignature` (its `NAME`, `VERSION`, `Input` and
/// `Output`) and `durable::Orchestrator` (running it), so it is a typed
/// handle:
/// `ctx.call_sub_orchestrator(greet_all, names)`,
/// `client.schedule(greet_all, names)`,
/// `Registry::new().orchestrator(greet_all)`. A wrong input type is a compile
/// error at the call. The orchestrator is also registered for discovery, so
/// `Registry::discover()` and `#[durable::test]` find it.
///
/// Because the handle is a struct of the function's name and visibility:
/// - its input and output types must be at least as visible as the
///   function (a `pub` orchestrator taking a `pub(crate)` type is error
///   E0446, "private type in public interface"); make the function
///   `pub(crate)` or the types `pub`;
/// - a local variable of the same name in the same module (`let greet_all =
///   ...`) is read as the handle; pick another name;
/// - attributes that rewrite functions, such as `#[tracing::instrument]`,
///   go above `#[orchestrator]`, so they see the user's function.
///
/// # Options
///
/// - `name = "..."`: the name on the wire and in the history (default: the
///   function's name). Use it to interoperate with workers written in other
///   languages, or to rename the function without breaking running instances.
/// - `version = "..."`: the orchestrator's version, recorded in new instances.
///
/// # Replay safety
///
/// An orchestrator is re-executed from its history many times, so its body
/// must make the same decisions every time. The macro rejects, with a compile
/// error at the call and the replay-safe replacement, calls that break this:
///
/// | rejected | use instead |
/// |---|---|
/// | `SystemTime::now`, `Instant::now`, `Utc::now`, `Local::now`, `OffsetDateTime::now_utc` | `ctx.current_utc_datetime()` |
/// | `rand::*`, `fastrand::*`, `getrandom::*`, `thread_rng()` | `ctx.new_uuid()`, or an activity |
/// | `Uuid::new_v4`, `Uuid::now_v7` (and v1, v6) | `ctx.new_uuid()` |
/// | `tokio::spawn`, `spawn_blocking`, `std::thread::spawn` | activities or sub-orchestrations, joined with `ctx.when_all(..)` |
/// | `tokio::time::sleep`, `sleep_until`, `std::thread::sleep` | `ctx.create_timer(duration).await` |
/// | `tokio::time::timeout`, `interval` | `task.timeout(duration)` or `ctx.timeout(future, duration)`; `ctx.create_timer(..)` in a loop |
/// | `tokio::select!` without `biased;`, `futures::select!` | `biased;` as the first line, or `ctx.when_any(..)` |
/// | `std::env::var`, `var_os`, `vars`, `args`, `current_dir` | an activity, or the orchestration input |
/// | `std::fs::*`, `tokio::fs::*`, `File::open`, `File::create`, `OpenOptions`, `TcpStream::connect`, `TcpListener::bind`, `UdpSocket::bind`, `Command::new`, `reqwest::*`, `ureq::*` | an activity |
///
/// The check is syntactic: it sees the paths written in the body (also inside
/// closures, async blocks and the arguments of expression macros such as
/// `format!`), not what a helper function called from the body does, and it
/// recognises a call by the path as written (`sleep(..)` after
/// `use tokio::time::sleep` is caught; an alias is not).
///
/// To keep a deliberate call, put `#[durable::nondeterministic]` on the
/// statement that contains it. The marker exempts that whole statement and
/// is removed before the compiler sees it. It works on `let` statements and
/// on expression statements that are calls, method calls, `.await`, `?`,
/// blocks, `if`, `match` and loops (stable Rust does not allow attributes on
/// an assignment or an operator expression; wrap those in a block):
///
/// ```
/// use durable::prelude::*;
///
/// #[orchestrator]
/// async fn timed(ctx: OrchestrationContext) {
///     // Only used for a log line; the orchestration never branches on it.
///     #[durable::nondeterministic]
///     let started = std::time::Instant::now();
///     let _ = started;
/// }
/// ```
#[proc_macro_attribute]
pub fn orchestrator(args: TokenStream, item: TokenStream) -> TokenStream {
    handler::run(handler::Kind::Orchestrator, args.into(), item.into()).into()
}

/// Turns an `async fn` into an activity: the unit of work an orchestrator
/// schedules, where I/O, clocks and randomness belong.
///
/// ```
/// use durable::prelude::*;
///
/// #[derive(Debug, Serialize, Deserialize)]
/// struct Payment {
///     order_id: String,
///     amount: f64,
/// }
///
/// /// Charges the customer; returns the payment id.
/// #[activity]
/// async fn process_payment(_ctx: ActivityContext, payment: Payment) -> Result<String, String> {
///     if payment.amount <= 0.0 {
///         return Err(format!("invalid amount {}", payment.amount));
///     }
///     Ok(format!("PAY-{}", payment.order_id))
/// }
///
/// #[activity(name = "ShipItem")]
/// async fn ship_item(_ctx: ActivityContext, name: String) -> String {
///     format!("TRACK-{}", name.to_uppercase())
/// }
/// # let _ = (process_payment, ship_item);
/// ```
///
/// # Signature
///
/// `async fn name(ctx: ActivityContext, input: In) -> Out` or
/// `-> Result<Out, E>`, with the same rules as `#[orchestrator]` for the
/// context (`ActivityContext`), the single optional input, patterns, serde
/// types and what is not supported. The error type `E` must implement
/// `Display + 'static`; it becomes the task's failure message, and an
/// `ActivityError` is kept as it is (with its details and retry hints).
///
/// Between the context and the input, an activity may take any number of
/// `State<T>` parameters (`durable::State`, in the prelude): application
/// state the worker holds, one value per type, given with
/// `Worker::state(value)` (in tests `TestEnv::builder().state(value)` or
/// `#[durable::test(state(value))]`). `T` must be `Clone + Send + Sync +
/// 'static`; each call gets a clone, so put an `Arc` or a pool handle in
/// it. A parameter is read as state when its type is written `State<..>`
/// (any path ending in `State` with one type argument). The types are
/// recorded, and a worker without a value of one of them does not start.
///
/// ```
/// use durable::prelude::*;
/// use std::sync::Arc;
///
/// #[derive(Clone)]
/// struct Gateway {
///     api_key: Arc<str>,
/// }
///
/// #[derive(Clone)]
/// struct Limits {
///     max_cents: u64,
/// }
///
/// #[activity]
/// async fn charge(
///     _ctx: ActivityContext,
///     State(gateway): State<Gateway>,
///     State(limits): State<Limits>,
///     cents: u64,
/// ) -> Result<String, String> {
///     if cents > limits.max_cents {
///         return Err(format!("{cents} is over the limit"));
///     }
///     Ok(format!("charged {cents} with key {}", gateway.api_key))
/// }
///
/// #[durable::test(state(Gateway { api_key: "test".into() }, Limits { max_cents: 1_000 }))]
/// async fn charges_within_the_limit(env: TestEnv) {
///     # let _ = env;
/// }
/// # charges_within_the_limit();
/// ```
///
/// Activities are not checked for replay safety: they run once per attempt
/// (at least once overall), and their result is recorded in the history.
///
/// # What it generates
///
/// A unit struct named after the function implementing
/// `durable::ActivitySignature` (its `NAME`, `Input` and `Output`) and
/// `durable::Activity` (running it), usable as `ctx.call_activity(process_payment, payment)` and
/// `Registry::new().activity(process_payment)`, and a registration for
/// `Registry::discover()`.
///
/// # Options
///
/// - `name = "..."`: the name on the wire and in the history (default: the
///   function's name).
#[proc_macro_attribute]
pub fn activity(args: TokenStream, item: TokenStream) -> TokenStream {
    handler::run(handler::Kind::Activity, args.into(), item.into()).into()
}

/// Turns an `async fn` into a test that runs against an in-memory backend
/// with a virtual clock.
///
/// ```
/// use durable::prelude::*;
///
/// #[orchestrator]
/// async fn wait_a_month(ctx: OrchestrationContext) -> Result<(), OrchestrationError> {
///     ctx.create_timer(std::time::Duration::from_secs(30 * 24 * 3600)).await;
///     Ok(())
/// }
///
/// #[durable::test]
/// async fn a_month_passes_in_milliseconds(env: TestEnv) {
///     let id = env.client().schedule(wait_a_month, ()).await.unwrap();
///     let state = env.wait_for_completion(&id).await.unwrap();
///     assert_eq!(state.status(), OrchestrationStatus::Completed);
/// }
/// # a_month_passes_in_milliseconds();
/// ```
///
/// The function takes the `TestEnv` (or nothing) and returns `()` or a
/// `Result<(), E>` with `E: Debug` (an `Err` fails the test). It becomes a
/// `#[test] fn` (an ordinary function outside `cfg(test)`, so a doctest can
/// call it) that builds a runtime and a `TestEnv`: an in-memory backend,
/// a worker, a client, and a clock that jumps to the next timer whenever the
/// system is idle. Other attributes (`#[ignore]`, `#[should_panic]`, ...)
/// are kept.
///
/// By default the worker runs every orchestrator and activity in the binary
/// (`Registry::discover()`). To register only some, name them:
///
/// ```
/// # use durable::prelude::*;
/// # #[orchestrator] async fn process_order(_ctx: OrchestrationContext) {}
/// # #[activity] async fn validate_order(_ctx: ActivityContext) {}
/// #[durable::test(orchestrators(process_order), activities(validate_order))]
/// async fn runs_with_only_these(env: TestEnv) {
///     let id = env.client().schedule(process_order, ()).await.unwrap();
///     env.wait_for_completion(&id).await.unwrap();
/// }
/// # runs_with_only_these();
/// ```
///
/// `state(value, ..)` gives the test's activities application state (each
/// value is this test's own), and `fake(real = fake, ..)` runs an
/// `#[activity]` in place of another with the same input and output types,
/// under the real one's name; everything else stays as it was. The test
/// reads its state back with `env.state::<T>()`:
///
/// ```
/// # use durable::prelude::*;
/// # use std::sync::{Arc, Mutex};
/// #[derive(Clone, Default)]
/// struct Sent(Arc<Mutex<Vec<String>>>);
///
/// #[activity]
/// async fn send_email(_ctx: ActivityContext, to: String) -> Result<(), String> {
///     Err(format!("no mail server in tests (to {to})"))
/// }
///
/// #[activity]
/// async fn record_email(_ctx: ActivityContext, State(sent): State<Sent>, to: String) -> Result<(), String> {
///     sent.0.lock().unwrap().push(to);
///     Ok(())
/// }
///
/// #[orchestrator]
/// async fn welcome(ctx: OrchestrationContext, to: String) -> Result<(), OrchestrationError> {
///     Ok(ctx.call_activity(send_email, to).await?)
/// }
///
/// #[durable::test(state(Sent::default()), fake(send_email = record_email))]
/// async fn welcomes_by_email(env: TestEnv) {
///     let id = env.client().schedule(welcome, "ada@example.com".to_string()).await.unwrap();
///     let state = env.wait_for_completion(&id).await.unwrap();
///     assert_eq!(state.status(), OrchestrationStatus::Completed);
///     assert_eq!(*env.state::<Sent>().unwrap().0.lock().unwrap(), ["ada@example.com"]);
/// }
/// # welcomes_by_email();
/// ```
#[proc_macro_attribute]
pub fn test(args: TokenStream, item: TokenStream) -> TokenStream {
    test_fn::run(args.into(), item.into()).into()
}

/// Marks a statement inside an `#[orchestrator]` body as deliberately not
/// replay-safe, silencing the replay-safety check for that statement.
///
/// `#[orchestrator]` removes the marker; it has no meaning anywhere else,
/// and using it elsewhere is an error. See `#[orchestrator]` for where the
/// marker can go.
#[proc_macro_attribute]
pub fn nondeterministic(args: TokenStream, item: TokenStream) -> TokenStream {
    lints::misplaced_marker(args.into(), item.into()).into()
}

/// Declares a type as an external event: implements `durable::Event`,
/// whose `NAME` is the event's name on the wire and in the history.
///
/// ```
/// use durable::prelude::*;
///
/// /// A manager's decision on an order.
/// #[derive(Serialize, Deserialize, Event)]
/// #[event(name = "approval")]
/// struct Approval(bool);
///
/// #[orchestrator]
/// async fn big_order(ctx: OrchestrationContext) -> Result<String, OrchestrationError> {
///     let Approval(approved) = ctx.wait_for_event::<Approval>().await?;
///     Ok(if approved { "shipped" } else { "cancelled" }.to_string())
/// }
///
/// #[durable::test]
/// async fn ships_once_approved(env: TestEnv) {
///     let id = env.client().schedule(big_order, ()).await.unwrap();
///     env.client().raise(&id, &Approval(true)).await.unwrap();
///     let state = env.wait_for_completion(&id).await.unwrap();
///     assert_eq!(state.output::<String>().unwrap(), "shipped");
/// }
/// # ships_once_approved();
/// ```
///
/// The type is the event's payload, so the wait
/// (`ctx.wait_for_event::<Approval>()`), the send between orchestrations
/// (`ctx.send(&id, &Approval(true))`) and the client's raise
/// (`client.raise(&id, &Approval(true))`) agree at compile time: a payload
/// of another type, or a misspelt event, does not compile.
///
/// - The derive implements only `Event`. The payload is stored as JSON, so
///   derive serde's traits beside it: `#[derive(Serialize, Deserialize,
///   Event)]`. It works on structs (with named fields, tuple or unit) and
///   enums; a generic type is an event whenever it is a payload.
/// - `#[event(name = "...")]` sets the name (default: the type's name as
///   written, e.g. `"Approval"`). Names match case-insensitively.
/// - Other languages raise and wait for the event by that name, with the
///   type's JSON as its data: `Approval(true)` travels as `true`. The
///   by-name calls (`raise_event`, `send_event`, `wait_for_external_event`)
///   stay for events defined elsewhere.
#[proc_macro_derive(Event, attributes(event))]
pub fn derive_event(item: TokenStream) -> TokenStream {
    event::derive(item.into()).into()
}
