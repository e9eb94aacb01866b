//! [`OrchestrationContext`]: what orchestrator code calls to schedule
//! durable work, and the options of those calls.
//!
//! Every scheduling call takes the next sequence number and records an action
//! at call time; the returned future resolves when the history holds the
//! matching completion.

use super::futures::{DurableFuture, TimerFuture, WhenAny, WhenAny2};
use super::join::{Join, JoinState, JoinTuple, TryJoin, TryJoinTuple};
use super::state::{self, CtxState, SharedState};
use super::timeout::Timeout;
use crate::actions::{ActionKind, Task};
use crate::codec;
use crate::failure::{ContinueAsNewResult, TaskError};
use crate::handler::{task_tags, ActivitySignature, BoxFuture, Event, OrchestratorSignature};
use crate::history::{FailureDetails, Timestamp};
use crate::retry::RetryPolicy;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// The handle an orchestrator uses to schedule durable work. Cheap to clone.
///
/// Everything an orchestrator does that is not pure computation must go
/// through this context, so that replaying the history reproduces it.
#[derive(Clone)]
pub struct OrchestrationContext {
    pub(crate) state: SharedState,
}

impl std::fmt::Debug for OrchestrationContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let s = self.lock();
        f.debug_struct("OrchestrationContext")
            .field("instance_id", &s.instance_id)
            .field("name", &s.name)
            .finish()
    }
}

/// A task's input as a payload; a value that cannot be serialised fails
/// the task (not the orchestration) with a message naming it.
fn encode_input<T: Serialize>(value: &T, task: &str) -> Result<Option<String>, FailureDetails> {
    codec::encode(value).map_err(|e| {
        e.about(format!("the input of {task}"))
            .into_failure("InputSerializationError")
    })
}

/// [`encode_input`] for calls that return a `TaskError` (retried calls).
fn encode_task_input<T: Serialize>(value: &T, task: &str) -> Result<Option<String>, TaskError> {
    encode_input(value, task).map_err(|details| TaskError {
        task: task.to_string(),
        task_id: -1,
        details,
    })
}

/// Options for a sub-orchestration call.
#[derive(Clone, Debug, Default)]
pub struct SubOrchestratorOptions {
    /// Instance id of the child; default: `"{parent id}:{sequence number}"`.
    pub instance_id: Option<String>,
    /// Retry policy; default: no retries.
    pub retry: Option<RetryPolicy>,
}

/// When a timer fires: after a delay or at a point in time.
#[derive(Clone, Copy, Debug)]
pub enum TimerSpec {
    /// After this long (from the orchestration's current time).
    After(Duration),
    /// At this time.
    At(Timestamp),
}

impl From<Duration> for TimerSpec {
    fn from(d: Duration) -> Self {
        TimerSpec::After(d)
    }
}

impl From<Timestamp> for TimerSpec {
    fn from(t: Timestamp) -> Self {
        TimerSpec::At(t)
    }
}

impl OrchestrationContext {
    pub(crate) fn new(state: CtxState) -> Self {
        OrchestrationContext {
            state: Arc::new(Mutex::new(state)),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, CtxState> {
        state::lock(&self.state)
    }

    /// The instance id.
    pub fn instance_id(&self) -> String {
        self.lock().instance_id.clone()
    }

    /// The orchestrator's name.
    pub fn name(&self) -> String {
        self.lock().name.clone()
    }

    /// The orchestrator version this execution started with (its
    /// `ExecutionStarted` version): the version it was scheduled with, or
    /// `None`. An instance runs that version for its whole life.
    pub fn version(&self) -> Option<String> {
        self.lock().version.clone()
    }

    /// The orchestration's notion of now: the time the current episode
    /// started, taken from the history (replay-safe, unlike `SystemTime::now`).
    pub fn current_utc_datetime(&self) -> Timestamp {
        self.lock().now
    }

    /// True while the engine re-applies events from the past; use it to
    /// skip side effects such as logging.
    pub fn is_replaying(&self) -> bool {
        self.lock().is_replaying
    }

    /// A deterministic UUID (v5, from the instance and execution ids, the
    /// current time and a counter): the same on every replay, different in
    /// each execution.
    pub fn new_uuid(&self) -> uuid::Uuid {
        let mut s = self.lock();
        let name = format!(
            "{}_{}_{}_{}",
            s.instance_id,
            s.execution_key,
            s.now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            s.uuid_counter
        );
        s.uuid_counter += 1;
        uuid::Uuid::new_v5(&uuid::Uuid::NAMESPACE_OID, name.as_bytes())
    }

    /// Sets the custom status that clients see (any serialisable value).
    pub fn set_custom_status<T: Serialize>(&self, status: &T) {
        let json = self.serialize(status, "the custom status");
        self.lock().custom_status = json;
    }

    /// Serialises a value handed to the context; a failure fails the
    /// orchestration at the end of the episode, naming `what` and the type.
    fn serialize<T: Serialize>(&self, value: &T, what: &str) -> Option<String> {
        match codec::encode(value) {
            Ok(json) => json,
            Err(e) => {
                let mut s = self.lock();
                s.deferred_failure
                    .get_or_insert_with(|| e.about(what).into_failure("SerializationError"));
                None
            }
        }
    }

    /// Logs at info level, silently while replaying.
    pub fn log_info(&self, message: impl std::fmt::Display) {
        let s = self.lock();
        if !s.is_replaying {
            tracing::info!(instance_id = %s.instance_id, orchestrator = %s.name, "{message}");
        }
    }

    /// Logs at warn level, silently while replaying.
    pub fn log_warn(&self, message: impl std::fmt::Display) {
        let s = self.lock();
        if !s.is_replaying {
            tracing::warn!(instance_id = %s.instance_id, orchestrator = %s.name, "{message}");
        }
    }

    /// Logs at error level, silently while replaying.
    pub fn log_error(&self, message: impl std::fmt::Display) {
        let s = self.lock();
        if !s.is_replaying {
            tracing::error!(instance_id = %s.instance_id, orchestrator = %s.name, "{message}");
        }
    }

    /// Schedules a typed activity. The input type is checked at compile time.
    pub fn call_activity<A: ActivitySignature>(
        &self,
        _activity: A,
        input: A::Input,
    ) -> DurableFuture<A::Output> {
        self.call_activity_by_name(A::NAME, &input)
    }

    /// Schedules an activity by name (for activities served by workers in
    /// other languages). `O` is the type its JSON result is decoded into.
    pub fn call_activity_by_name<O: DeserializeOwned>(
        &self,
        name: &str,
        input: &impl Serialize,
    ) -> DurableFuture<O> {
        let describe = Task::Activity(name).to_string();
        match encode_input(input, &describe) {
            Ok(input) => self.schedule(
                ActionKind::ScheduleTask {
                    name: name.to_string(),
                    version: None,
                    input,
                    tags: BTreeMap::new(),
                },
                describe,
            ),
            Err(d) => DurableFuture::failed(self.state.clone(), describe, d),
        }
    }

    /// Schedules a typed activity with a retry policy. Retries wait on
    /// durable timers, so they survive restarts.
    pub fn call_activity_with_retry<A: ActivitySignature>(
        &self,
        _activity: A,
        input: A::Input,
        policy: RetryPolicy,
    ) -> BoxFuture<'static, Result<A::Output, TaskError>> {
        self.call_activity_by_name_with_retry(A::NAME, &input, policy)
    }

    /// Schedules an activity by name with a retry policy.
    pub fn call_activity_by_name_with_retry<O: DeserializeOwned + Send + 'static>(
        &self,
        name: &str,
        input: &impl Serialize,
        policy: RetryPolicy,
    ) -> BoxFuture<'static, Result<O, TaskError>> {
        let ctx = self.clone();
        let describe = Task::Activity(name).to_string();
        let input = encode_task_input(input, &describe);
        let name = name.to_string();
        Box::pin(async move {
            let input = input?;
            // Each attempt is a task of its own; from the second on, its
            // tags carry the attempt number and the first attempt's
            // sequence number, from which the activity's idempotency key
            // is derived.
            let mut attempt = 0u32;
            let mut first_task_id = None;
            with_retry(&ctx, &policy, || {
                attempt += 1;
                let mut tags = BTreeMap::new();
                if let Some(first) = first_task_id {
                    tags.insert(task_tags::ATTEMPT.to_string(), attempt.to_string());
                    tags.insert(task_tags::FIRST_TASK_ID.to_string(), format!("{first}"));
                }
                let kind = ActionKind::ScheduleTask {
                    name: name.clone(),
                    version: None,
                    input: input.clone(),
                    tags,
                };
                let id = ctx.lock().schedule(kind, describe.clone());
                first_task_id.get_or_insert(id);
                DurableFuture::<O>::new(ctx.state.clone(), id as i64)
            })
            .await
        })
    }

    /// Starts a typed sub-orchestration and waits for its output. Its
    /// instance id is `"{this instance id}:{sequence number}"`.
    pub fn call_sub_orchestrator<O: OrchestratorSignature>(
        &self,
        _orchestrator: O,
        input: O::Input,
    ) -> DurableFuture<O::Output> {
        self.call_sub_orchestrator_by_name(O::NAME, O::VERSION, &input, None)
    }

    /// Starts a typed sub-orchestration with options (instance id, retries).
    pub fn call_sub_orchestrator_with<O: OrchestratorSignature>(
        &self,
        _orchestrator: O,
        input: O::Input,
        options: SubOrchestratorOptions,
    ) -> BoxFuture<'static, Result<O::Output, TaskError>> {
        self.call_sub_orchestrator_by_name_with(O::NAME, O::VERSION, &input, options)
    }

    /// Starts a sub-orchestration by name with options (instance id,
    /// retries). Each retry is a new child instance (`"{id}:retry{n}"` when
    /// an id is given).
    pub fn call_sub_orchestrator_by_name_with<O: DeserializeOwned + Send + 'static>(
        &self,
        name: &str,
        version: Option<&str>,
        input: &impl Serialize,
        options: SubOrchestratorOptions,
    ) -> BoxFuture<'static, Result<O, TaskError>> {
        let ctx = self.clone();
        let describe = Task::SubOrchestration(name).to_string();
        let input = encode_task_input(input, &describe);
        let (name, version) = (name.to_string(), version.map(str::to_string));
        Box::pin(async move {
            let input = input?;
            let make = |attempt: u32| {
                let instance_id = options.instance_id.as_ref().map(|id| {
                    if attempt == 0 {
                        id.clone()
                    } else {
                        format!("{id}:retry{attempt}")
                    }
                });
                ctx.sub_orchestration_raw::<O>(
                    &name,
                    version.as_deref(),
                    input.clone(),
                    instance_id,
                )
            };
            match &options.retry {
                None => make(0).await,
                Some(policy) => {
                    let mut attempt = 0;
                    with_retry(&ctx, policy, || {
                        let f = make(attempt);
                        attempt += 1;
                        f
                    })
                    .await
                }
            }
        })
    }

    /// Starts a sub-orchestration by name (for orchestrators in other
    /// languages).
    pub fn call_sub_orchestrator_by_name<O: DeserializeOwned>(
        &self,
        name: &str,
        version: Option<&str>,
        input: &impl Serialize,
        instance_id: Option<String>,
    ) -> DurableFuture<O> {
        let describe = Task::SubOrchestration(name).to_string();
        match encode_input(input, &describe) {
            Ok(input) => self.sub_orchestration_raw(name, version, input, instance_id),
            Err(d) => DurableFuture::failed(self.state.clone(), describe, d),
        }
    }

    fn sub_orchestration_raw<O: DeserializeOwned>(
        &self,
        name: &str,
        version: Option<&str>,
        input: Option<String>,
        instance_id: Option<String>,
    ) -> DurableFuture<O> {
        let mut s = self.lock();
        let seq = s.next_seq;
        let instance_id = instance_id.unwrap_or_else(|| format!("{}:{seq:04}", s.instance_id));
        let describe = Task::SubOrchestration(name).to_string();
        let version = version
            .map(str::to_string)
            .or_else(|| s.default_version.clone());
        let id = s.schedule(
            ActionKind::CreateSubOrchestration {
                instance_id,
                name: name.to_string(),
                version,
                input,
            },
            describe,
        );
        drop(s);
        DurableFuture::new(self.state.clone(), id as i64)
    }

    /// A durable timer: fires after a delay or at a time. Survives restarts.
    pub fn create_timer(&self, when: impl Into<TimerSpec>) -> TimerFuture {
        let fire_at = self.fire_at(when.into());
        TimerFuture(self.schedule(ActionKind::CreateTimer { fire_at }, Task::Timer.to_string()))
    }

    /// When a timer of this spec fires, from the orchestration's time.
    fn fire_at(&self, when: TimerSpec) -> Timestamp {
        match when {
            TimerSpec::At(t) => t,
            TimerSpec::After(d) => {
                let now = self.current_utc_datetime();
                chrono::Duration::from_std(d)
                    .ok()
                    .and_then(|d| now.checked_add_signed(d))
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
            }
        }
    }

    /// Waits for an external event with this name (case-insensitive),
    /// decoding its payload into `T`. An event raised before anyone waits is
    /// kept for the first waiter.
    ///
    /// By name, for events raised by code in other languages; for an
    /// [`Event`] type, [`wait_for_event`](Self::wait_for_event) checks the
    /// name and the payload type at compile time.
    pub fn wait_for_external_event<T: DeserializeOwned>(&self, name: &str) -> DurableFuture<T> {
        let slot = self.lock().wait_for_event(name);
        DurableFuture::new(self.state.clone(), slot)
    }

    /// Raises an event on another orchestration instance (fire and forget),
    /// by name; for an [`Event`] type, [`send`](Self::send) takes the name
    /// from the type.
    pub fn send_event(&self, instance_id: &str, name: &str, data: &impl Serialize) {
        let describe = Task::SendEvent { name, instance_id }.to_string();
        let data = self.serialize(data, &format!("the data of event \"{name}\""));
        let id = self.lock().schedule(
            ActionKind::SendEvent {
                instance_id: instance_id.to_string(),
                name: name.to_string(),
                data,
            },
            describe,
        );
        // Nothing ever completes a sent event; it is matched by `EventSent`.
        self.lock().slots.remove(&(id as i64));
    }

    /// Restarts the orchestration with a new input: the current execution
    /// ends (status `ContinuedAsNew`) and a new one starts from an empty
    /// history, so an eternal loop keeps its history small. Unprocessed
    /// external events are dropped; see
    /// [`continue_as_new_keep_events`](Self::continue_as_new_keep_events).
    ///
    /// Return its value from the orchestrator:
    /// `return ctx.continue_as_new(&next)`. It is a placeholder of the
    /// orchestrator's return type (`Err(ContinuedAsNew.into())` for a
    /// `Result`, see [`ContinueAsNewResult`]); once `continue_as_new` was
    /// called, the engine ignores what the orchestrator returns, `Ok` or
    /// `Err`, and restarts it when it returns.
    ///
    /// Called as a statement (`ctx.continue_as_new(&next);`) it does not
    /// compile ("type annotations needed ... type parameter `Return`"):
    /// return its value instead. Where the call cannot be the return value,
    /// name the type, e.g. `let () = ctx.continue_as_new(&next);` and
    /// return as usual.
    ///
    /// ```
    /// use durable_runtime::{Registry, TestEnv};
    ///
    /// let registry = Registry::new().orchestrator_fn("count_to_3", |ctx, n: u32| async move {
    ///     if n < 3 {
    ///         return ctx.continue_as_new(&(n + 1));
    ///     }
    ///     Ok(n)
    /// });
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let env = TestEnv::new(registry).unwrap();
    /// let id = env.client().schedule_by_name("count_to_3", &0, Default::default()).await.unwrap();
    /// let state = env.wait_for_completion(&id).await.unwrap();
    /// assert_eq!(state.output::<u32>().unwrap(), 3);
    /// # });
    /// ```
    pub fn continue_as_new<T: Serialize, Return: ContinueAsNewResult>(&self, input: &T) -> Return {
        let json = self.serialize(input, "the new input");
        self.lock().continue_as_new = Some((json, false));
        Return::continued_as_new()
    }

    /// Like [`continue_as_new`](Self::continue_as_new), and the new
    /// execution starts on orchestrator version `version` (the protocol's
    /// `newVersion`): how an eternal orchestration moves to new code, so
    /// its old version can be removed. The new version must be registered
    /// (see [`version`](Self::version)).
    ///
    /// ```
    /// use durable_runtime::{Registry, ScheduleOptions, TestEnv};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let registry = Registry::new()
    ///     .orchestrator_version_fn("monitor", "1", |ctx, n: u32| async move {
    ///         // Version 1 hands over to version 2 at its next iteration.
    ///         let next: Result<String, durable_runtime::OrchestrationError> =
    ///             ctx.continue_as_new_at_version(&(n + 1), "2");
    ///         next
    ///     })
    ///     .orchestrator_version_fn("monitor", "2", |ctx, n: u32| async move {
    ///         Ok(format!("{n} on version {}", ctx.version().unwrap_or_default()))
    ///     });
    /// let env = TestEnv::new(registry).unwrap();
    /// let v1 = ScheduleOptions { version: Some("1".into()), ..Default::default() };
    /// let id = env.client().schedule_by_name("monitor", &1u32, v1).await.unwrap();
    /// let state = env.wait_for_completion(&id).await.unwrap();
    /// assert_eq!(state.output::<String>().unwrap(), "2 on version 2");
    /// # env.shutdown().await;
    /// # });
    /// ```
    pub fn continue_as_new_at_version<T: Serialize, Return: ContinueAsNewResult>(
        &self,
        input: &T,
        version: &str,
    ) -> Return {
        let json = self.serialize(input, "the new input");
        let mut s = self.lock();
        s.continue_as_new = Some((json, false));
        s.continue_version = Some(version.to_string());
        drop(s);
        Return::continued_as_new()
    }

    /// Like [`continue_as_new`](Self::continue_as_new) but carries external
    /// events that arrived and were not consumed over to the new execution:
    /// `return ctx.continue_as_new_keep_events(&next)`.
    pub fn continue_as_new_keep_events<T: Serialize, Return: ContinueAsNewResult>(
        &self,
        input: &T,
    ) -> Return {
        let json = self.serialize(input, "the new input");
        self.lock().continue_as_new = Some((json, true));
        Return::continued_as_new()
    }

    /// Waits for all futures; fails with the first failure (in completion
    /// order). Output order follows input order.
    pub fn when_all<I>(&self, futures: I) -> futures::future::TryJoinAll<I::Item>
    where
        I: IntoIterator,
        I::Item: futures::TryFuture,
    {
        futures::future::try_join_all(futures)
    }

    /// Waits for every future and returns every output, in input order,
    /// whether each succeeded or failed (the "all settled" form of
    /// [`when_all`](Self::when_all)). Use it when each outcome matters, e.g.
    /// to compensate the tasks that did succeed.
    ///
    /// It is `futures::future::join_all`: it polls only the children that
    /// were woken, and its output order is the input order whatever order
    /// the tasks finish in.
    pub fn when_all_settled<I>(&self, futures: I) -> futures::future::JoinAll<I::Item>
    where
        I: IntoIterator,
        I::Item: Future,
    {
        futures::future::join_all(futures)
    }

    /// Waits for 2 to 6 futures of different types, given as a tuple, and
    /// returns the tuple of their outputs once all have finished: for
    /// durable tasks `(Result<A, TaskError>, Result<B, TaskError>, ..)`.
    /// Nothing is dropped early, so a saga sees which steps succeeded.
    ///
    /// The futures must be `Unpin`: durable futures, timers and retried
    /// calls are; `Box::pin` an `async` block. The join is deterministic
    /// under replay: it polls its futures in argument order and spawns
    /// nothing (see the design notes, "Combinators inside orchestrators").
    ///
    /// ```
    /// use durable_runtime::{ActivityError, Registry, TestEnv};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct FlightRef(String);
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct HotelRef(u32);
    ///
    /// let registry = Registry::new()
    ///     .activity_fn("book_flight", |_, to: String| async move {
    ///         Ok::<_, ActivityError>(FlightRef(format!("FL-{to}")))
    ///     })
    ///     .activity_fn("book_hotel", |_, _nights: u32| async move {
    ///         Err::<HotelRef, _>(ActivityError::new("NoRooms", "fully booked"))
    ///     })
    ///     .activity_fn("cancel_flight", |_, flight: String| async move {
    ///         Ok::<_, ActivityError>(format!("cancelled {flight}"))
    ///     })
    ///     .orchestrator_fn("trip", |ctx, to: String| async move {
    ///         let flight = ctx.call_activity_by_name::<FlightRef>("book_flight", &to);
    ///         let hotel = ctx.call_activity_by_name::<HotelRef>("book_hotel", &3);
    ///         // Both outcomes, whatever each is: undo what did succeed.
    ///         match ctx.join((flight, hotel)).await {
    ///             (Ok(flight), Ok(hotel)) => Ok(format!("{} + room {}", flight.0, hotel.0)),
    ///             (Ok(flight), Err(_)) => {
    ///                 Ok(ctx.call_activity_by_name("cancel_flight", &flight.0).await?)
    ///             }
    ///             (Err(e), _) => Err(e.into()),
    ///         }
    ///     });
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let env = TestEnv::new(registry).unwrap();
    /// let id = env.client().schedule_by_name("trip", &"Oslo", Default::default()).await.unwrap();
    /// let state = env.wait_for_completion(&id).await.unwrap();
    /// assert_eq!(state.output::<String>().unwrap(), "cancelled FL-Oslo");
    /// # });
    /// ```
    pub fn join<T: JoinTuple>(&self, futures: T) -> Join<T> {
        Join {
            children: futures.start(),
            state: JoinState(self.state.clone()),
        }
    }

    /// Waits for 2 to 6 futures of `Result<_, TaskError>` of different
    /// types, given as a tuple: `Ok` with the tuple of their values, or the
    /// first failure **in history order** (the task that failed first,
    /// even if several failures are seen in one step; argument order
    /// decides only between failures that consumed no history event, such
    /// as an input that could not be serialised).
    ///
    /// On a failure the futures still running are dropped, as in
    /// [`when_all`](Self::when_all): their tasks stay scheduled and their
    /// results, when they come, are ignored. When the other outcomes matter
    /// (to compensate), use [`join`](Self::join).
    ///
    /// ```
    /// use durable_runtime::{ActivityError, Registry, TestEnv};
    ///
    /// let registry = Registry::new()
    ///     .activity_fn("price", |_, item: String| async move {
    ///         Ok::<_, ActivityError>(item.len() as u64 * 100)
    ///     })
    ///     .activity_fn("in_stock", |_, item: String| async move {
    ///         Ok::<_, ActivityError>(!item.is_empty())
    ///     })
    ///     .orchestrator_fn("quote", |ctx, item: String| async move {
    ///         let (price, available) = ctx
    ///             .try_join((
    ///                 ctx.call_activity_by_name::<u64>("price", &item),
    ///                 ctx.call_activity_by_name::<bool>("in_stock", &item),
    ///             ))
    ///             .await?;
    ///         Ok(available.then_some(price))
    ///     });
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let env = TestEnv::new(registry).unwrap();
    /// let id = env.client().schedule_by_name("quote", &"pen", Default::default()).await.unwrap();
    /// let state = env.wait_for_completion(&id).await.unwrap();
    /// assert_eq!(state.output::<Option<u64>>().unwrap(), Some(300));
    /// # });
    /// ```
    pub fn try_join<T: TryJoinTuple>(&self, futures: T) -> TryJoin<T> {
        TryJoin {
            children: Some(futures.start()),
            state: JoinState(self.state.clone()),
        }
    }

    /// Waits for the first of several futures; returns its index and output.
    /// The others are dropped (their results, if they come, are ignored; a
    /// timer that has not fired is cancelled).
    pub fn when_any<F: Future + Unpin>(&self, futures: Vec<F>) -> WhenAny<F> {
        WhenAny { futures }
    }

    /// Waits for the first of two futures (e.g. an event or a timer). The
    /// other is dropped (a timer that has not fired is cancelled). For an
    /// event or task with a deadline, [`DurableFuture::timeout`] says the
    /// same in one call.
    pub fn when_any2<A: Future + Unpin, B: Future + Unpin>(&self, a: A, b: B) -> WhenAny2<A, B> {
        WhenAny2 {
            a: Some(a),
            b: Some(b),
        }
    }

    fn schedule<T: DeserializeOwned>(
        &self,
        kind: ActionKind,
        describe: String,
    ) -> DurableFuture<T> {
        let id = self.lock().schedule(kind, describe);
        DurableFuture::new(self.state.clone(), id as i64)
    }
}

/// Deadlines: a durable future raced against a durable timer.
impl OrchestrationContext {
    /// Waits for `future` (any `Unpin` future made of durable futures: a
    /// join, a `when_any`, a retried call) until a deadline: after a delay
    /// from the orchestration's current time, or at a time. Resolves to
    /// `Ok(output)` if it finishes first, `Err(TimedOut)` if the deadline
    /// passes first; the loser is dropped (the deadline's timer is
    /// cancelled, a task's late result is ignored). The timer is created
    /// now, so it takes the next sequence number.
    ///
    /// For a single durable future, [`DurableFuture::timeout`] says which
    /// task timed out.
    ///
    /// ```
    /// use durable_runtime::{ActivityError, Registry, TestEnv};
    /// use std::time::Duration;
    ///
    /// let registry = Registry::new()
    ///     .orchestrator_fn("both_signatures", |ctx, _: ()| async move {
    ///         let legal = ctx.wait_for_external_event::<String>("legal");
    ///         let finance = ctx.wait_for_external_event::<String>("finance");
    ///         match ctx.timeout(ctx.join((legal, finance)), Duration::from_secs(3600)).await {
    ///             Ok((legal, finance)) => Ok(format!("signed by {} and {}", legal?, finance?)),
    ///             Err(timed_out) => Ok(timed_out.to_string()),
    ///         }
    ///     });
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let env = TestEnv::new(registry).unwrap();
    /// let id = env.client().schedule_by_name("both_signatures", &(), Default::default()).await.unwrap();
    /// env.wait_until_idle().await;
    /// env.client().raise_event(&id, "legal", &"Ann").await.unwrap();
    /// // Nobody from finance signs: an hour later (virtual time) it times out.
    /// let state = env.wait_for_completion(&id).await.unwrap();
    /// let out = state.output::<String>().unwrap();
    /// assert!(out.starts_with("timed out"), "{out}");
    /// # });
    /// ```
    pub fn timeout<F: Future + Unpin>(&self, future: F, after: impl Into<TimerSpec>) -> Timeout<F> {
        self.timeout_of(future, after.into(), None, None)
    }

    /// `task` names a single durable future and `slot` is its key, so a
    /// deadline that passed first is decided without consuming it.
    fn timeout_of<F>(
        &self,
        future: F,
        after: TimerSpec,
        task: Option<String>,
        slot: Option<i64>,
    ) -> Timeout<F> {
        let deadline = self.fire_at(after);
        let timer = self.create_timer(deadline);
        Timeout {
            future: Some(future),
            timer: Some(timer),
            task,
            slot,
            deadline,
            state: self.state.clone(),
        }
    }
}

// Defined here rather than with `DurableFuture`: it schedules a timer
// through the context.
impl<T> DurableFuture<T> {
    /// Waits for this task until a deadline: after a delay from the
    /// orchestration's current time (a `Duration`), or at a time (a
    /// `Timestamp`). Resolves to `Ok(result)` if the task finishes first, or
    /// `Err(TimedOut)` if the deadline passes first; `TimedOut` names the
    /// task (`external event "approval"`) and the deadline, and `?` turns it
    /// into an [`OrchestrationError`](crate::OrchestrationError) of type
    /// `TimedOut`.
    ///
    /// The deadline is a durable timer, created now. When the task wins,
    /// the timer is cancelled: backends that can delete the pending timer
    /// do, so a 24-hour deadline met in a minute leaves nothing behind
    /// (over gRPC the sidecar still fires it, and the engine ignores it).
    /// When the deadline wins, the task is dropped: an activity's late
    /// result is ignored, an event that comes later stays for the next
    /// wait. Replay gives the same winner: the one first in the history.
    ///
    /// ```
    /// use durable_runtime::{Registry, TestEnv};
    /// use std::time::Duration;
    ///
    /// let registry = Registry::new().orchestrator_fn("approval", |ctx, _: ()| async move {
    ///     let day = Duration::from_secs(24 * 3600);
    ///     match ctx.wait_for_external_event::<bool>("approval").timeout(day).await {
    ///         Ok(approved) => Ok(if approved? { "approved" } else { "rejected" }.to_string()),
    ///         Err(timed_out) => Ok(format!("escalated: {timed_out}")),
    ///     }
    /// });
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let env = TestEnv::new(registry).unwrap();
    ///
    /// // Approved in time: the 24-hour timer is cancelled, nothing is pending.
    /// let id = env.client().schedule_by_name("approval", &(), Default::default()).await.unwrap();
    /// env.wait_until_idle().await;
    /// env.client().raise_event(&id, "approval", &true).await.unwrap();
    /// let state = env.wait_for_completion(&id).await.unwrap();
    /// assert_eq!(state.output::<String>().unwrap(), "approved");
    /// assert_eq!(env.backend().next_timer(), None);
    ///
    /// // Nobody answers: a day later (virtual time) the deadline passes.
    /// let id = env.client().schedule_by_name("approval", &(), Default::default()).await.unwrap();
    /// let state = env.wait_for_completion(&id).await.unwrap();
    /// let out = state.output::<String>().unwrap();
    /// assert!(out.starts_with("escalated: external event \"approval\" timed out"), "{out}");
    /// # });
    /// ```
    pub fn timeout(self, after: impl Into<TimerSpec>) -> Timeout<DurableFuture<T>> {
        let ctx = OrchestrationContext {
            state: self.state().clone(),
        };
        let task = Some(self.describe());
        let slot = Some(self.task_id());
        ctx.timeout_of(self, after.into(), task, slot)
    }
}

/// Typed external events: an [`Event`] type carries the event's name and
/// its payload, so the wait and the send (and the client's
/// [`raise`](crate::Client::raise)) agree at compile time.
impl OrchestrationContext {
    /// Waits for the external event `E`: the next event named `E::NAME`
    /// (case-insensitive), its data decoded into `E`. An event raised
    /// before anyone waits is kept for the first waiter, as with
    /// [`wait_for_external_event`](Self::wait_for_external_event), which
    /// this is with the name taken from the type.
    ///
    /// ```
    /// use durable_runtime::{Event, Registry, TestEnv};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Approval {
    ///     approved: bool,
    ///     by: String,
    /// }
    /// impl Event for Approval {
    ///     const NAME: &'static str = "approval";
    /// }
    ///
    /// let registry = Registry::new().orchestrator_fn("review", |ctx, _: ()| async move {
    ///     let approval = ctx.wait_for_event::<Approval>().await?;
    ///     Ok(format!("approved: {} by {}", approval.approved, approval.by))
    /// });
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let env = TestEnv::new(registry).unwrap();
    /// let client = env.client();
    /// let id = client.schedule_by_name("review", &(), Default::default()).await.unwrap();
    /// client.raise(&id, &Approval { approved: true, by: "ana".into() }).await.unwrap();
    /// let state = env.wait_for_completion(&id).await.unwrap();
    /// assert_eq!(state.output::<String>().unwrap(), "approved: true by ana");
    /// # });
    /// ```
    pub fn wait_for_event<E: Event>(&self) -> DurableFuture<E> {
        self.wait_for_external_event(E::NAME)
    }

    /// Sends the event `E` to another orchestration instance (fire and
    /// forget): [`send_event`](Self::send_event) with the name `E::NAME`
    /// and `event` as the data. The receiver waits for it with
    /// [`wait_for_event::<E>`](Self::wait_for_event), or, in another
    /// language, by the name `E::NAME`.
    ///
    /// ```
    /// use durable_runtime::{Event, Registry, TestEnv};
    ///
    /// #[derive(serde::Serialize, serde::Deserialize)]
    /// struct Ping(u32);
    /// impl Event for Ping {
    ///     const NAME: &'static str = "ping";
    /// }
    ///
    /// let registry = Registry::new()
    ///     .orchestrator_fn("receiver", |ctx, _: ()| async move {
    ///         Ok(ctx.wait_for_event::<Ping>().await?.0)
    ///     })
    ///     .orchestrator_fn("sender", |ctx, to: String| async move {
    ///         ctx.send(&to, &Ping(7));
    ///         Ok(())
    ///     });
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let env = TestEnv::new(registry).unwrap();
    /// let client = env.client();
    /// let receiver = client.schedule_by_name("receiver", &(), Default::default()).await.unwrap();
    /// client.schedule_by_name("sender", &receiver, Default::default()).await.unwrap();
    /// let state = env.wait_for_completion(&receiver).await.unwrap();
    /// assert_eq!(state.output::<u32>().unwrap(), 7);
    /// # });
    /// ```
    pub fn send<E: Event>(&self, instance_id: &str, event: &E) {
        self.send_event(instance_id, E::NAME, event)
    }
}

/// Runs attempts until one succeeds, the policy gives up, or its timeout
/// would pass; each wait between attempts is a durable timer.
async fn with_retry<T, F, Fut>(
    ctx: &OrchestrationContext,
    policy: &RetryPolicy,
    mut attempt_fn: F,
) -> Result<T, TaskError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, TaskError>>,
{
    let started = ctx.current_utc_datetime();
    let mut attempt = 1;
    loop {
        let err = match attempt_fn().await {
            Ok(v) => return Ok(v),
            Err(e) => e,
        };
        if attempt >= policy.max_attempts() || !policy.should_retry(&err) {
            return Err(err);
        }
        let delay = policy.delay_for_attempt(attempt);
        if let Some(timeout) = policy.timeout_limit() {
            let elapsed = (ctx.current_utc_datetime() - started)
                .to_std()
                .unwrap_or_default();
            if elapsed + delay > timeout {
                return Err(err);
            }
        }
        if !ctx.is_replaying() {
            // The failure itself was logged where it happened (the
            // activity's worker, or the sub-orchestration's); this says
            // only what happens next.
            tracing::info!(
                instance_id = %ctx.instance_id(),
                task = %err.task,
                attempt,
                error_type = %err.details.error_type,
                ?delay,
                "retrying after a failed attempt"
            );
        }
        ctx.create_timer(delay).await;
        attempt += 1;
    }
}
