//! What every layer knows of a handler: its signature (wire name, version,
//! input and output types), the boxed future it runs as, and what an
//! activity is told about itself.
//!
//! The signatures sit at the bottom of the crate so the context can
//! schedule typed calls (`ctx.call_activity(ShipItem, input)`) without
//! knowing how handlers run; [`crate::registry`] adds `run` on top of them
//! ([`crate::Orchestrator`], [`crate::Activity`]). `#[orchestrator]` and
//! `#[activity]` implement both.

use crate::app_state::StateMap;
use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The signature of an orchestrator: its name and version on the wire and
/// its input and output types. Implemented by `#[orchestrator]`.
// The payload bounds say `for<'de> Deserialize<'de>` rather than serde's
// alias `DeserializeOwned`, so a type that misses the derive is reported as
// missing `serde::Deserialize`, not a trait of serde's internal crate.
pub trait OrchestratorSignature: Default + Copy + Send + Sync + 'static {
    /// Wire name.
    const NAME: &'static str;
    /// Version, if any.
    const VERSION: Option<&'static str> = None;
    /// Input type.
    type Input: Serialize + for<'de> Deserialize<'de> + Send + 'static;
    /// Output type.
    type Output: Serialize + for<'de> Deserialize<'de> + Send + 'static;
}

/// The signature of an activity: its name on the wire and its input and
/// output types. Implemented by `#[activity]`.
pub trait ActivitySignature: Default + Copy + Send + Sync + 'static {
    /// Wire name.
    const NAME: &'static str;
    /// Input type.
    type Input: Serialize + for<'de> Deserialize<'de> + Send + 'static;
    /// Output type.
    type Output: Serialize + for<'de> Deserialize<'de> + Send + 'static;
}

/// An external event type: its name on the wire and its payload, in one
/// Rust type. The orchestration waits for it with
/// [`OrchestrationContext::wait_for_event`](crate::OrchestrationContext::wait_for_event),
/// another orchestration sends it with
/// [`OrchestrationContext::send`](crate::OrchestrationContext::send) and a
/// client raises it with [`Client::raise`](crate::Client::raise), so a
/// payload of the wrong type or a misspelt event name is a compile error.
///
/// Implement it with `#[derive(Serialize, Deserialize, Event)]` from the
/// `durable` crate (the derive does not add serde's derives; name the
/// event with `#[event(name = "approval")]`), or by hand:
///
/// ```
/// use durable_runtime::Event;
///
/// #[derive(serde::Serialize, serde::Deserialize)]
/// struct Approval(bool);
///
/// impl Event for Approval {
///     const NAME: &'static str = "approval";
/// }
/// assert_eq!(Approval::NAME, "approval");
/// ```
///
/// The value is the event's data: `Approval(true)` travels as the JSON
/// `true`, exactly what `raise_event(id, "approval", &true)` sends, so
/// workers and clients in other languages raise and wait for the same
/// event by its name, [`NAME`](Self::NAME) (matched case-insensitively).
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not an event type",
    label = "not a declared event",
    note = "declare the event as a type: `#[derive(Serialize, Deserialize, Event)] struct MyEvent {{ .. }}`",
    note = "to use an event by its name instead, call `raise_event(id, name, &data)`, `send_event(id, name, &data)` or `wait_for_external_event::<T>(name)`"
)]
pub trait Event: Serialize + for<'de> Deserialize<'de> + Send + 'static {
    /// The event's name on the wire and in the history.
    const NAME: &'static str;
}

/// What an activity knows about itself.
#[derive(Clone, Debug)]
pub struct ActivityContext {
    pub(crate) instance_id: String,
    pub(crate) task_id: i32,
    pub(crate) name: String,
    /// The worker's application state (see [`crate::State`]).
    pub(crate) states: Arc<StateMap>,
    pub(crate) attempt: u32,
    pub(crate) idempotency_key: String,
    pub(crate) trace: Option<crate::trace::TraceContext>,
}

impl ActivityContext {
    /// A context for calling an activity function directly (e.g. in a unit test).
    ///
    /// It is the first attempt, and its idempotency key is
    /// [`idempotency_key`] of the instance id, an empty execution id and
    /// `task_id`; [`ActivityContext::with_attempt`] and
    /// [`ActivityContext::with_idempotency_key`] set others.
    pub fn new(instance_id: impl Into<String>, task_id: i32, name: impl Into<String>) -> Self {
        let instance_id = instance_id.into();
        ActivityContext {
            idempotency_key: idempotency_key(&instance_id, "", task_id),
            instance_id,
            task_id,
            name: name.into(),
            states: Arc::default(),
            attempt: 1,
            trace: None,
        }
    }
    /// Instance id of the orchestration that scheduled this activity.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }
    /// Sequence number of the task within that orchestration.
    pub fn task_id(&self) -> i32 {
        self.task_id
    }
    /// The activity's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Adds a value of application state, as a worker's
    /// [`state`](crate::Worker::state) does: for calling an activity that
    /// takes `State<T>` directly (a unit test). A value of the same type
    /// given before is replaced.
    ///
    /// ```
    /// use durable_runtime::ActivityContext;
    /// let ctx = ActivityContext::new("order-1", 0, "charge").with_state(String::from("eu-west"));
    /// assert_eq!(ctx.state::<String>().map(String::as_str), Some("eu-west"));
    /// ```
    pub fn with_state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        Arc::make_mut(&mut self.states).insert(value);
        self
    }

    /// Replaces the application state with `states` (what a worker does).
    pub fn with_state_map(mut self, states: Arc<StateMap>) -> Self {
        self.states = states;
        self
    }

    /// The value of application state of type `T`, if the worker has one:
    /// for activities registered as closures
    /// ([`Registry::activity_fn`](crate::Registry::activity_fn)), which
    /// cannot declare `State<T>` parameters (and so are not checked when
    /// the worker starts).
    pub fn state<T: 'static>(&self) -> Option<&T> {
        self.states.get::<T>()
    }

    /// All of the application state this activity was given.
    pub fn state_map(&self) -> &StateMap {
        &self.states
    }
}

/// The tags durable puts on the `ScheduleTask` of a retried activity call
/// (the protocol's `tags` of `ScheduleTaskAction`, `TaskScheduledEvent` and
/// `ActivityRequest`). The first attempt carries none.
pub mod task_tags {
    /// The attempt number, in decimal: `"2"` for the first retry.
    pub const ATTEMPT: &str = "durable.attempt";
    /// The sequence number of the call's first attempt, in decimal.
    pub const FIRST_TASK_ID: &str = "durable.first_task_id";
}

/// The idempotency key of an activity call: a version 5 UUID (namespace
/// OID) of the instance id, the execution id and the sequence number of the
/// call's first attempt.
///
/// Every attempt of one call (each retry is a task of its own) and every
/// redelivery of an attempt after a crash has the same key; two calls, two
/// executions of one instance (after continue-as-new) and two instances
/// have different ones.
///
/// ```
/// use durable_runtime::handler::idempotency_key;
///
/// let key = idempotency_key("order-7", "exec-1", 3);
/// assert_eq!(key, idempotency_key("order-7", "exec-1", 3));
/// assert_ne!(key, idempotency_key("order-7", "exec-1", 4));
/// assert_ne!(key, idempotency_key("order-7", "exec-2", 3));
/// assert_ne!(key, idempotency_key("order-8", "exec-1", 3));
/// assert_eq!(key.len(), 36);
/// ```
pub fn idempotency_key(instance_id: &str, execution_id: &str, first_task_id: i32) -> String {
    // The instance id's length first: ids may hold any character, and the
    // task id (digits) comes last, so no two triples give the same name.
    let name = format!(
        "durable-activity:{}:{instance_id}:{execution_id}:{first_task_id}",
        instance_id.len()
    );
    uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes()).to_string()
}

/// Attempts and idempotency.
impl ActivityContext {
    /// Which attempt of its call this run is: 1 for the first, 2 for the
    /// first retry of a retry policy (`call_activity_with_retry`), and so
    /// on. A redelivery of the same attempt (after a crash or a lost lease)
    /// has the same number.
    ///
    /// ```
    /// use durable_runtime::ActivityContext;
    ///
    /// let ctx = ActivityContext::new("order-7", 4, "charge_card");
    /// assert_eq!(ctx.attempt(), 1);
    /// assert_eq!(ctx.with_attempt(3).attempt(), 3);
    /// ```
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// A key equal across every attempt and redelivery of this logical call
    /// and different for every other call, execution and instance (see
    /// [`idempotency_key`]); pass it to a payment gateway or any service
    /// that deduplicates requests.
    ///
    /// ```
    /// use durable_runtime::ActivityContext;
    /// use durable_runtime::handler::idempotency_key;
    ///
    /// let ctx = ActivityContext::new("order-7", 4, "charge_card");
    /// assert_eq!(ctx.idempotency_key(), idempotency_key("order-7", "", 4));
    /// ```
    pub fn idempotency_key(&self) -> &str {
        &self.idempotency_key
    }

    /// The same context with another attempt number.
    pub fn with_attempt(mut self, attempt: u32) -> Self {
        self.attempt = attempt;
        self
    }

    /// The same context with another idempotency key.
    pub fn with_idempotency_key(mut self, key: impl Into<String>) -> Self {
        self.idempotency_key = key.into();
        self
    }

    /// The W3C trace context of this run's `activity:{name}` span (the span
    /// the worker reports when the activity ends): pass it on (as a
    /// `traceparent` header, or to OpenTelemetry) so work the activity
    /// starts elsewhere joins the orchestration's trace. `None` when the
    /// call came without a trace context (a direct call, or a sidecar that
    /// does not send one).
    ///
    /// ```
    /// use durable_runtime::ActivityContext;
    /// use durable_runtime::trace::TraceContext;
    /// let t = TraceContext::parse("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01", None).unwrap();
    /// let ctx = ActivityContext::new("order-1", 0, "charge").with_trace_context(Some(t.clone()));
    /// assert_eq!(ctx.trace_context(), Some(&t));
    /// assert_eq!(ActivityContext::new("order-1", 0, "charge").trace_context(), None);
    /// ```
    pub fn trace_context(&self) -> Option<&crate::trace::TraceContext> {
        self.trace.as_ref()
    }

    /// The same context with another trace context.
    pub fn with_trace_context(mut self, trace: Option<crate::trace::TraceContext>) -> Self {
        self.trace = trace;
        self
    }
}
