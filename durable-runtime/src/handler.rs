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
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

/// A boxed, sendable future.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// The signature of an orchestrator: its name and version on the wire and
/// its input and output types. Implemented by `#[orchestrator]`.
pub trait OrchestratorSignature: Default + Copy + Send + Sync + 'static {
    /// Wire name.
    const NAME: &'static str;
    /// Version, if any.
    const VERSION: Option<&'static str> = None;
    /// Input type.
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// Output type.
    type Output: Serialize + DeserializeOwned + Send + 'static;
}

/// The signature of an activity: its name on the wire and its input and
/// output types. Implemented by `#[activity]`.
pub trait ActivitySignature: Default + Copy + Send + Sync + 'static {
    /// Wire name.
    const NAME: &'static str;
    /// Input type.
    type Input: Serialize + DeserializeOwned + Send + 'static;
    /// Output type.
    type Output: Serialize + DeserializeOwned + Send + 'static;
}

/// What an activity knows about itself.
#[derive(Clone, Debug)]
pub struct ActivityContext {
    pub(crate) instance_id: String,
    pub(crate) task_id: i32,
    pub(crate) name: String,
    /// The worker's application state (see [`crate::State`]).
    pub(crate) states: Arc<StateMap>,
}

impl ActivityContext {
    /// A context for calling an activity function directly (e.g. in a unit test).
    pub fn new(instance_id: impl Into<String>, task_id: i32, name: impl Into<String>) -> Self {
        ActivityContext {
            instance_id: instance_id.into(),
            task_id,
            name: name.into(),
            states: Arc::default(),
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
