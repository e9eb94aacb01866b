//! `OrchestrationContext`, `ActivityContext` and the durable futures.
//!
//! Every scheduling call takes the next sequence number and records an action
//! at call time; the returned future resolves when the history holds the
//! matching completion. The futures never wake themselves: only the replay
//! engine resolves them, one history event at a time, which keeps the
//! orchestration deterministic.

use super::retry::RetryPolicy;
use crate::actions::ActionKind;
use crate::error::TaskError;
use crate::history::{FailureDetails, Timestamp};
use crate::registry::{encode, Activity, BoxFuture, Orchestrator};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

/// Outcome stored for a durable task.
#[derive(Clone, Debug)]
pub(crate) enum Outcome {
    Ok(Option<String>),
    Err(FailureDetails),
}

pub(crate) struct Slot {
    pub(crate) outcome: Option<Outcome>,
    pub(crate) waker: Option<Waker>,
    pub(crate) describe: String,
}

/// Mutable state of one orchestration execution, shared by the context,
/// its futures and the replay engine.
pub(crate) struct CtxState {
    pub(crate) instance_id: String,
    pub(crate) name: String,
    /// Identifies the execution (its id, or its start time) for `new_uuid`.
    pub(crate) execution_key: String,
    pub(crate) now: Timestamp,
    pub(crate) is_replaying: bool,
    pub(crate) next_seq: i32,
    next_event_key: i64,
    uuid_counter: u64,
    /// Actions created by the code and not yet matched by history events.
    pub(crate) pending_actions: BTreeMap<i32, ActionKind>,
    /// Unresolved or not-yet-consumed durable tasks; task ids are the keys,
    /// external-event waits use negative keys.
    pub(crate) slots: HashMap<i64, Slot>,
    pub(crate) event_waiters: HashMap<String, VecDeque<i64>>,
    pub(crate) event_buffer: HashMap<String, VecDeque<Option<String>>>,
    /// Order in which events were buffered, to carry them over on continue-as-new.
    pub(crate) event_buffer_order: VecDeque<String>,
    pub(crate) custom_status: Option<String>,
    pub(crate) continue_as_new: Option<(Option<String>, bool)>,
    /// A value the code handed to the context could not be serialised; the
    /// orchestration fails with this at the end of the episode.
    pub(crate) deferred_failure: Option<FailureDetails>,
}

impl CtxState {
    pub(crate) fn new(instance_id: String, name: String, now: Timestamp) -> Self {
        CtxState {
            instance_id,
            name,
            execution_key: String::new(),
            now,
            is_replaying: false,
            next_seq: 0,
            next_event_key: -1,
            uuid_counter: 0,
            pending_actions: BTreeMap::new(),
            slots: HashMap::new(),
            event_waiters: HashMap::new(),
            event_buffer: HashMap::new(),
            event_buffer_order: VecDeque::new(),
            custom_status: None,
            continue_as_new: None,
            deferred_failure: None,
        }
    }

    fn schedule(&mut self, kind: ActionKind, describe: String) -> i32 {
        let id = self.next_seq;
        self.next_seq += 1;
        self.pending_actions.insert(id, kind);
        self.slots.insert(
            id as i64,
            Slot {
                outcome: None,
                waker: None,
                describe,
            },
        );
        id
    }

    /// Resolves a slot; returns the waker to wake (outside the lock).
    pub(crate) fn resolve(&mut self, key: i64, outcome: Outcome) -> Option<Waker> {
        let slot = self.slots.get_mut(&key)?;
        if slot.outcome.is_some() {
            return None;
        }
        slot.outcome = Some(outcome);
        slot.waker.take()
    }

    /// Delivers an external event to the first waiter, or buffers it.
    pub(crate) fn deliver_event(&mut self, name: &str, input: Option<String>) -> Option<Waker> {
        let key = name.to_ascii_lowercase();
        if let Some(q) = self.event_waiters.get_mut(&key) {
            if let Some(slot) = q.pop_front() {
                if q.is_empty() {
                    self.event_waiters.remove(&key);
                }
                return self.resolve(slot, Outcome::Ok(input));
            }
        }
        self.event_buffer
            .entry(key.clone())
            .or_default()
            .push_back(input);
        self.event_buffer_order.push_back(key);
        None
    }

    /// Whether any durable work is outstanding (so a pending orchestrator is
    /// legitimately waiting).
    pub(crate) fn has_outstanding(&self) -> bool {
        !self.pending_actions.is_empty() || self.slots.values().any(|s| s.outcome.is_none())
    }
}

/// The handle an orchestrator uses to schedule durable work. Cheap to clone.
///
/// Everything an orchestrator does that is not pure computation must go
/// through this context, so that replaying the history reproduces it.
#[derive(Clone)]
pub struct OrchestrationContext {
    pub(crate) state: Arc<Mutex<CtxState>>,
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

fn to_json<T: Serialize>(value: &T, what: &str) -> Result<Option<String>, FailureDetails> {
    encode(value, what).map_err(|mut d| {
        d.error_type = "InputSerializationError".into();
        d.message = d.message.replace("the output of", "the input of");
        d
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

/// Which of two futures finished first, with its output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Either<A, B> {
    /// The first future won.
    First(A),
    /// The second future won.
    Second(B),
}

impl OrchestrationContext {
    pub(crate) fn new(state: CtxState) -> Self {
        OrchestrationContext {
            state: Arc::new(Mutex::new(state)),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, CtxState> {
        // A panic in user code never happens while this lock is held (the
        // engine only locks around its own bookkeeping), so poisoning can be
        // ignored safely.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The instance id.
    pub fn instance_id(&self) -> String {
        self.lock().instance_id.clone()
    }

    /// The orchestrator's name.
    pub fn name(&self) -> String {
        self.lock().name.clone()
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
        match serde_json::to_string(value) {
            Ok(json) => Some(json),
            Err(e) => {
                let mut s = self.lock();
                s.deferred_failure.get_or_insert_with(|| {
                    FailureDetails::new(
                        "SerializationError",
                        format!(
                            "{what} (`{}`) could not be serialised: {e}",
                            std::any::type_name::<T>()
                        ),
                    )
                });
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
    pub fn call_activity<A: Activity>(
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
        let describe = format!("activity \"{name}\"");
        match to_json(input, &describe) {
            Ok(input) => self.schedule(
                ActionKind::ScheduleTask {
                    name: name.to_string(),
                    version: None,
                    input,
                },
                describe,
            ),
            Err(d) => DurableFuture::failed(self.clone(), describe, d),
        }
    }

    /// Schedules a typed activity with a retry policy. Retries wait on
    /// durable timers, so they survive restarts.
    pub fn call_activity_with_retry<A: Activity>(
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
        let describe = format!("activity \"{name}\"");
        let input = to_json(input, &describe);
        let name = name.to_string();
        Box::pin(async move {
            let input = input.map_err(|details| TaskError {
                task: describe.clone(),
                task_id: -1,
                details,
            })?;
            super::retry::with_retry(&ctx, &policy, || {
                ctx.schedule::<O>(
                    ActionKind::ScheduleTask {
                        name: name.clone(),
                        version: None,
                        input: input.clone(),
                    },
                    describe.clone(),
                )
            })
            .await
        })
    }

    /// Starts a typed sub-orchestration and waits for its output. Its
    /// instance id is `"{this instance id}:{sequence number}"`.
    pub fn call_sub_orchestrator<O: Orchestrator>(
        &self,
        _orchestrator: O,
        input: O::Input,
    ) -> DurableFuture<O::Output> {
        self.call_sub_orchestrator_by_name(O::NAME, O::VERSION, &input, None)
    }

    /// Starts a typed sub-orchestration with options (instance id, retries).
    pub fn call_sub_orchestrator_with<O: Orchestrator>(
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
        let describe = format!("sub-orchestration \"{name}\"");
        let input = to_json(input, &describe);
        let (name, version) = (name.to_string(), version.map(str::to_string));
        Box::pin(async move {
            let input = input.map_err(|details| TaskError {
                task: describe.clone(),
                task_id: -1,
                details,
            })?;
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
                    super::retry::with_retry(&ctx, policy, || {
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
        let describe = format!("sub-orchestration \"{name}\"");
        match to_json(input, &describe) {
            Ok(input) => self.sub_orchestration_raw(name, version, input, instance_id),
            Err(d) => DurableFuture::failed(self.clone(), describe, d),
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
        let describe = format!("sub-orchestration \"{name}\"");
        let id = s.schedule(
            ActionKind::CreateSubOrchestration {
                instance_id,
                name: name.to_string(),
                version: version.map(str::to_string),
                input,
            },
            describe,
        );
        drop(s);
        DurableFuture::new(self.clone(), id as i64)
    }

    /// A durable timer: fires after a delay or at a time. Survives restarts.
    pub fn create_timer(&self, when: impl Into<TimerSpec>) -> TimerFuture {
        let fire_at = match when.into() {
            TimerSpec::At(t) => t,
            TimerSpec::After(d) => {
                let now = self.current_utc_datetime();
                chrono::Duration::from_std(d)
                    .ok()
                    .and_then(|d| now.checked_add_signed(d))
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC)
            }
        };
        TimerFuture(self.schedule(ActionKind::CreateTimer { fire_at }, "timer".to_string()))
    }

    /// Waits for an external event with this name (case-insensitive),
    /// decoding its payload into `T`. An event raised before anyone waits is
    /// kept for the first waiter.
    pub fn wait_for_external_event<T: DeserializeOwned>(&self, name: &str) -> DurableFuture<T> {
        let mut s = self.lock();
        let key = name.to_ascii_lowercase();
        let slot = s.next_event_key;
        s.next_event_key -= 1;
        let describe = format!("external event \"{name}\"");
        let buffered = s.event_buffer.get_mut(&key).and_then(|q| q.pop_front());
        match buffered {
            Some(payload) => {
                if let Some(pos) = s.event_buffer_order.iter().position(|k| *k == key) {
                    s.event_buffer_order.remove(pos);
                }
                s.slots.insert(
                    slot,
                    Slot {
                        outcome: Some(Outcome::Ok(payload)),
                        waker: None,
                        describe,
                    },
                );
            }
            None => {
                s.slots.insert(
                    slot,
                    Slot {
                        outcome: None,
                        waker: None,
                        describe,
                    },
                );
                s.event_waiters.entry(key).or_default().push_back(slot);
            }
        }
        drop(s);
        DurableFuture::new(self.clone(), slot)
    }

    /// Raises an event on another orchestration instance (fire and forget).
    pub fn send_event(&self, instance_id: &str, name: &str, data: &impl Serialize) {
        let describe = format!("send event \"{name}\"");
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

    /// Restarts the orchestration with a new input once the orchestrator
    /// function returns (its return value is then ignored). Unprocessed
    /// external events are dropped; see
    /// [`continue_as_new_keep_events`](Self::continue_as_new_keep_events).
    pub fn continue_as_new<T: Serialize>(&self, input: &T) {
        let json = self.serialize(input, "the new input");
        self.lock().continue_as_new = Some((json, false));
    }

    /// Like [`continue_as_new`](Self::continue_as_new) but carries external
    /// events that arrived and were not consumed over to the new execution.
    pub fn continue_as_new_keep_events<T: Serialize>(&self, input: &T) {
        let json = self.serialize(input, "the new input");
        self.lock().continue_as_new = Some((json, true));
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

    /// Waits for the first of several futures; returns its index and output.
    /// The others are dropped (their results, if they come, are ignored).
    pub fn when_any<F: Future + Unpin>(&self, futures: Vec<F>) -> WhenAny<F> {
        WhenAny { futures }
    }

    /// Waits for the first of two futures (e.g. an event or a timer).
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
        DurableFuture::new(self.clone(), id as i64)
    }
}

/// A durable task's result: activity, sub-orchestration or external event.
#[must_use = "durable futures do nothing unless awaited (the task is scheduled, but its result is lost)"]
pub struct DurableFuture<T> {
    ctx: OrchestrationContext,
    key: i64,
    failed: Option<(String, FailureDetails)>,
    _t: PhantomData<fn() -> T>,
}

impl<T> DurableFuture<T> {
    fn new(ctx: OrchestrationContext, key: i64) -> Self {
        DurableFuture {
            ctx,
            key,
            failed: None,
            _t: PhantomData,
        }
    }

    fn failed(ctx: OrchestrationContext, describe: String, d: FailureDetails) -> Self {
        DurableFuture {
            ctx,
            key: i64::MIN,
            failed: Some((describe, d)),
            _t: PhantomData,
        }
    }

    /// The sequence number of the task (negative for external events).
    pub fn task_id(&self) -> i64 {
        self.key
    }
}

impl<T> Unpin for DurableFuture<T> {}

impl<T: DeserializeOwned> Future for DurableFuture<T> {
    type Output = Result<T, TaskError>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some((task, details)) = self.failed.take() {
            return Poll::Ready(Err(TaskError {
                task,
                task_id: -1,
                details,
            }));
        }
        let mut s = self.ctx.lock();
        let Some(slot) = s.slots.get_mut(&self.key) else {
            return Poll::Ready(Err(TaskError {
                task: "durable task".into(),
                task_id: self.key.max(-1) as i32,
                details: FailureDetails::new(
                    "InvalidState",
                    "this durable future was polled after it completed",
                ),
            }));
        };
        match slot.outcome.take() {
            None => {
                slot.waker = Some(cx.waker().clone());
                Poll::Pending
            }
            Some(outcome) => {
                let slot = s.slots.remove(&self.key);
                drop(s);
                let describe = slot.map(|s| s.describe).unwrap_or_default();
                let task_id = if self.key >= 0 { self.key as i32 } else { -1 };
                Poll::Ready(match outcome {
                    Outcome::Ok(json) => {
                        serde_json::from_str::<T>(json.as_deref().unwrap_or("null")).map_err(|e| {
                            TaskError {
                                details: FailureDetails::new(
                                    "OutputDeserializationError",
                                    format!(
                                    "the result of {describe} does not deserialise into `{}`: {e}",
                                    std::any::type_name::<T>()
                                ),
                                ),
                                task: describe,
                                task_id,
                            }
                        })
                    }
                    Outcome::Err(details) => Err(TaskError {
                        task: describe,
                        task_id,
                        details,
                    }),
                })
            }
        }
    }
}

impl<T> Drop for DurableFuture<T> {
    fn drop(&mut self) {
        if self.key == i64::MIN {
            return;
        }
        let mut s = self.ctx.lock();
        if s.slots.remove(&self.key).is_some() && self.key < 0 {
            // An abandoned event wait must not swallow the next event.
            for q in s.event_waiters.values_mut() {
                q.retain(|k| *k != self.key);
            }
            s.event_waiters.retain(|_, q| !q.is_empty());
        }
    }
}

/// A durable timer; completes when it fires.
#[must_use = "a timer does nothing unless awaited"]
pub struct TimerFuture(DurableFuture<()>);

impl Future for TimerFuture {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// Future returned by [`OrchestrationContext::when_any`].
pub struct WhenAny<F> {
    futures: Vec<F>,
}

impl<F: Future + Unpin> Future for WhenAny<F> {
    type Output = (usize, F::Output);
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        for (i, f) in self.futures.iter_mut().enumerate() {
            if let Poll::Ready(v) = Pin::new(f).poll(cx) {
                return Poll::Ready((i, v));
            }
        }
        Poll::Pending
    }
}

/// Future returned by [`OrchestrationContext::when_any2`].
pub struct WhenAny2<A, B> {
    a: Option<A>,
    b: Option<B>,
}

impl<A: Future + Unpin, B: Future + Unpin> Future for WhenAny2<A, B> {
    type Output = Either<A::Output, B::Output>;
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        if let Some(a) = self.a.as_mut() {
            if let Poll::Ready(v) = Pin::new(a).poll(cx) {
                self.a = None;
                self.b = None;
                return Poll::Ready(Either::First(v));
            }
        }
        if let Some(b) = self.b.as_mut() {
            if let Poll::Ready(v) = Pin::new(b).poll(cx) {
                self.a = None;
                self.b = None;
                return Poll::Ready(Either::Second(v));
            }
        }
        Poll::Pending
    }
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
