//! What every layer knows of a handler: its signature (wire name, version,
//! input and output types), the boxed future it runs as, and what an
//! activity is told about itself.
//!
//! The signatures sit at the bottom of the crate so the context can
//! schedule typed calls (`ctx.call_activity(ShipItem, input)`) without
//! knowing how handlers run; [`crate::registry`] adds `run` on top of them
//! ([`crate::Orchestrator`], [`crate::Activity`]). `#[orchestrator]` and
//! `#[activity]` implement both.

use serde::{Deserialize, Serialize};
use std::future::Future;
use std::pin::Pin;

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
}

impl ActivityContext {
    /// A context for calling an activity function directly (e.g. in a unit test).
    pub fn new(instance_id: impl Into<String>, task_id: i32, name: impl Into<String>) -> Self {
        ActivityContext {
            instance_id: instance_id.into(),
            task_id,
            name: name.into(),
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
}
