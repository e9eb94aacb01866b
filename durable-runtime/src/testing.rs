//! Testing support: [`TestEnv`] (in-memory backend, worker, client and a
//! virtual clock) and [`replay`], which checks recorded histories against
//! the current code.

use crate::app_state::StateMap;
use crate::backend::{Backend, MemoryBackend};
use crate::client::{Client, OrchestrationState};
use crate::history::{EventKind, HistoryEvent, OrchestrationStatus};
use crate::registry::{here, Activity, Orchestrator, Registry, RegistryError};
use crate::replay::{Execution, NonDeterminism};
use crate::worker::{Worker, WorkerHandle, WorkerOptions};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

/// An in-memory backend, a worker and a client, on a virtual clock.
///
/// Time stands still until a test waits: while
/// [`wait_for_completion`](TestEnv::wait_for_completion) waits and the system
/// is idle (no queued work, nothing in flight), the clock jumps to the next
/// pending timer. A 30-day timer therefore costs microseconds.
pub struct TestEnv {
    backend: MemoryBackend,
    client: Client,
    worker: Option<WorkerHandle>,
    wait_limit: Duration,
    states: StateMap,
}

impl std::fmt::Debug for TestEnv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnv")
            .field("backend", &self.backend)
            .finish()
    }
}

/// Why a test wait failed.
#[derive(Debug, thiserror::Error)]
pub enum TestError {
    /// The instance does not exist.
    #[error("instance \"{0}\" does not exist; was it scheduled on this TestEnv's client?")]
    NotFound(String),
    /// Nothing more can happen and the instance is not finished.
    #[error(
        "instance \"{id}\" can never complete: it is {status}, no work is queued or running and no timer is pending \
         (is it waiting for an external event nobody raised?)"
    )]
    Stuck {
        /// The instance.
        id: String,
        /// Its status.
        status: OrchestrationStatus,
    },
    /// The wall-clock limit ran out.
    #[error(
        "instance \"{id}\" did not complete within {limit:?} of wall time; last status {status}"
    )]
    WallTimeout {
        /// The instance.
        id: String,
        /// The limit.
        limit: Duration,
        /// Its last status.
        status: OrchestrationStatus,
    },
    /// The client failed.
    #[error(transparent)]
    Client(#[from] crate::Error),
    /// A wait for a state can never succeed: the instance finished, or
    /// nothing more can happen (no work queued or running, no timer
    /// pending) and the state was not reached.
    #[error("instance \"{id}\" will never be {waited_for}: {saw}")]
    NotReached {
        /// The instance.
        id: String,
        /// The state waited for, e.g. `waiting for event "approval"`.
        waited_for: String,
        /// What the instance was when the wait gave up.
        saw: String,
    },
    /// A wait for a state ran out of wall time.
    #[error("{waited_for} did not happen within {limit:?} of wall time; {saw}")]
    StateTimeout {
        /// What was waited for.
        waited_for: String,
        /// The limit.
        limit: Duration,
        /// What was seen last.
        saw: String,
    },
    /// Virtual time was asked to go back.
    #[error("virtual time cannot go back: it is {now}, and {target} was asked for")]
    TimeGoesBack {
        /// The virtual time now.
        now: crate::history::Timestamp,
        /// The time asked for.
        target: crate::history::Timestamp,
    },
}

/// Builds a [`TestEnv`]: which orchestrators and activities it runs
/// (everything discovered in the binary unless [`registry`](TestEnvBuilder::registry)
/// says otherwise), the application state its activities get, and the
/// activities it fakes. Made by [`TestEnv::builder`].
///
/// State given here is this test's own: every test builds its own
/// `TestEnv`, so a counter in a `State` value counts the calls of one test,
/// where a `static` counter would be shared by every test of the binary.
#[must_use = "a builder does nothing until `build` is called"]
pub struct TestEnvBuilder {
    registry: Option<Registry>,
    states: StateMap,
    fakes: Vec<Fake>,
}

type Fake = Box<dyn FnOnce(Registry) -> Registry + Send>;

impl std::fmt::Debug for TestEnvBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestEnvBuilder")
            .field("registry", &self.registry)
            .field("states", &self.states)
            .field("fakes", &self.fakes.len())
            .finish()
    }
}

impl TestEnvBuilder {
    /// Runs exactly these orchestrators and activities instead of
    /// everything discovered.
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// Gives the activities a value of application state (see
    /// [`crate::State`] and [`Worker::state`]).
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.states.insert(value);
        self
    }

    /// Runs `fake` in place of `real`, under `real`'s name, while every
    /// other activity stays as registered (see
    /// [`Registry::replace_activity`]). `build` fails if `real` is not
    /// registered.
    #[track_caller]
    pub fn fake_activity<A, F>(mut self, real: A, fake: F) -> Self
    where
        A: Activity,
        F: Activity<Input = A::Input, Output = A::Output>,
    {
        let at = here();
        self.fakes.push(Box::new(move |r: Registry| {
            r.replace_activity_at(real, fake, at)
        }));
        self
    }

    /// Starts the environment: an in-memory backend on a virtual clock, a
    /// worker and a client. Fails, naming the problem, if two definitions
    /// share a name, a fake names an activity that is not registered, or an
    /// activity takes a `State<T>` no value was given for. Must be called
    /// inside a tokio runtime.
    pub fn build(self) -> Result<TestEnv, RegistryError> {
        let mut registry = match self.registry {
            Some(r) => r,
            None => Registry::discover()?,
        };
        for fake in self.fakes {
            registry = fake(registry);
        }
        TestEnv::start(registry, self.states)
    }
}

impl TestEnv {
    /// A builder for a test environment (registry, state, fakes).
    ///
    /// ```
    /// use durable_runtime::{ActivityError, Registry, TestEnv};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let registry = Registry::new().activity_fn("region", |ctx, _: ()| async move {
    ///     Ok::<_, ActivityError>(ctx.state::<String>().cloned())
    /// });
    /// let env = TestEnv::builder()
    ///     .registry(registry)
    ///     .state(String::from("eu-west"))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(env.state::<String>().as_deref(), Some("eu-west"));
    /// env.shutdown().await;
    /// # });
    /// ```
    pub fn builder() -> TestEnvBuilder {
        TestEnvBuilder {
            registry: None,
            states: StateMap::new(),
            fakes: Vec::new(),
        }
    }

    /// A test environment with the given registry. Must be called inside a
    /// tokio runtime.
    pub fn new(registry: Registry) -> Result<Self, crate::RegistryError> {
        Self::start(registry, StateMap::new())
    }

    fn start(registry: Registry, states: StateMap) -> Result<Self, crate::RegistryError> {
        let start = chrono::DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .map(|t| t.with_timezone(&chrono::Utc))
            .unwrap_or_else(|_| chrono::Utc::now());
        let backend = MemoryBackend::with_virtual_clock(start);
        let shared: Arc<dyn Backend> = Arc::new(backend.clone());
        let worker = Worker::new(shared.clone(), registry)
            .with_options(WorkerOptions {
                shutdown_grace: Duration::from_millis(100),
                ..Default::default()
            })
            .state_map(states.clone())
            .start()?;
        Ok(TestEnv {
            backend,
            client: Client::new(shared),
            worker: Some(worker),
            wait_limit: Duration::from_secs(30),
            states,
        })
    }

    /// A test environment with everything annotated in this binary.
    pub fn discover() -> Result<Self, crate::RegistryError> {
        Self::new(Registry::discover()?)
    }

    /// A clone of the application state of type `T` this environment's
    /// activities get, if it was given one: a test reads what its own
    /// activities did through it (a counter, a recorded call).
    pub fn state<T: Clone + 'static>(&self) -> Option<T> {
        self.states.get::<T>().cloned()
    }

    /// The client.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The in-memory backend (virtual clock controls live here).
    pub fn backend(&self) -> &MemoryBackend {
        &self.backend
    }

    /// The virtual time now.
    pub fn now(&self) -> crate::history::Timestamp {
        self.backend.now()
    }

    /// Moves virtual time forward, firing due timers.
    pub fn advance(&self, d: Duration) {
        self.backend.advance(d);
    }

    /// Waits until the instance finishes, jumping the virtual clock to the
    /// next timer whenever the system is idle. Fails with a message naming
    /// the instance and its status if it can never finish, or after 30 s of
    /// wall time.
    pub async fn wait_for_completion(
        &self,
        instance_id: &str,
    ) -> Result<OrchestrationState, TestError> {
        let deadline = crate::backend::deadline_after(self.wait_limit);
        loop {
            let changed = self.backend.change_notification();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let state = self
                .client
                .get_state(instance_id)
                .await?
                .ok_or_else(|| TestError::NotFound(instance_id.to_string()))?;
            if state.status().is_terminal() {
                return Ok(state);
            }
            if self.backend.is_idle() {
                // The last episode may have finished between reading the
                // state and checking idleness: read it again first.
                let state = self
                    .client
                    .get_state(instance_id)
                    .await?
                    .ok_or_else(|| TestError::NotFound(instance_id.to_string()))?;
                if state.status().is_terminal() {
                    return Ok(state);
                }
                if self.backend.advance_to_next_timer().is_some() {
                    continue;
                }
                return Err(TestError::Stuck {
                    id: instance_id.to_string(),
                    status: state.status(),
                });
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(TestError::WallTimeout {
                    id: instance_id.to_string(),
                    limit: self.wait_limit,
                    status: state.status(),
                });
            }
        }
    }

    /// Waits until no work is queued or running, without moving virtual
    /// time.
    ///
    /// Pending timers are not work: an orchestration waiting on a durable
    /// timer is idle here, and that includes the back-off timer between two
    /// attempts of a retried activity (`call_activity_with_retry`), a
    /// timeout racing an event, and any `create_timer`. So after a failed
    /// attempt this returns with the retry still to come, and what the
    /// instance shows (its custom status, its history) is the state before
    /// the retry. To wait for a state rather than for quiet, use
    /// [`wait_for_custom_status`](TestEnv::wait_for_custom_status),
    /// [`wait_until_waiting_for_event`](TestEnv::wait_until_waiting_for_event),
    /// [`wait_for_completion`](TestEnv::wait_for_completion) (these move
    /// virtual time when nothing else can happen), or move time yourself
    /// with [`advance_by`](TestEnv::advance_by) /
    /// [`advance_to`](TestEnv::advance_to).
    ///
    /// Panics after 30 s of wall time if work never stops.
    pub async fn wait_until_idle(&self) {
        if !self.idle_within_limit().await {
            panic!(
                "the test environment did not become idle within {:?}",
                self.wait_limit
            );
        }
    }

    /// Waits until no work is queued or running; false if the wall-time
    /// limit passed first.
    async fn idle_within_limit(&self) -> bool {
        let deadline = crate::backend::deadline_after(self.wait_limit);
        loop {
            let changed = self.backend.change_notification();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.backend.is_idle() {
                return true;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return false;
            }
        }
    }

    /// The history of an instance.
    pub async fn history(&self, instance_id: &str) -> Vec<HistoryEvent> {
        self.client.history(instance_id).await.unwrap_or_default()
    }

    /// Stops the worker.
    pub async fn shutdown(mut self) {
        if let Some(w) = self.worker.take() {
            w.shutdown().await;
        }
    }
}

/// Waiting for a state, and moving virtual time.
///
/// Each wait reads the instance after every change; when the system is idle
/// (no work queued or running) and the state is not reached, it jumps the
/// virtual clock to the next timer, as
/// [`wait_for_completion`](TestEnv::wait_for_completion) does, so a retry
/// back-off or a deadline in between passes. It fails with
/// [`TestError::NotReached`] once the state can no longer come (the
/// instance finished, or nothing is left to happen), and with
/// [`TestError::StateTimeout`] after 30 s of wall time (see
/// [`with_wait_limit`](TestEnv::with_wait_limit)); both say what was
/// waited for and what was seen.
impl TestEnv {
    /// The same environment with another wall-time limit for its waits
    /// (30 s by default).
    pub fn with_wait_limit(mut self, limit: Duration) -> Self {
        self.wait_limit = limit;
        self
    }

    /// Waits until the instance's custom status decodes as `T` and `check`
    /// holds for it, and returns it. Statuses of another shape (an earlier
    /// stage of another type) count as not yet.
    ///
    /// ```
    /// use durable_runtime::testing::TestEnv;
    /// use durable_runtime::{Registry, RetryPolicy};
    /// use std::time::Duration;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let registry = Registry::new()
    ///     .activity_fn("charge", |ctx, _: ()| async move {
    ///         if ctx.attempt() < 3 {
    ///             return Err(durable_runtime::ActivityError::new("Declined", "try again"));
    ///         }
    ///         Ok(())
    ///     })
    ///     .orchestrator_fn("order", |ctx, _: ()| async move {
    ///         ctx.set_custom_status(&"charging");
    ///         let retry = RetryPolicy::new(5, Duration::from_secs(60));
    ///         ctx.call_activity_by_name_with_retry::<()>("charge", &(), retry).await?;
    ///         ctx.set_custom_status(&"awaiting-confirmation");
    ///         let _: bool = ctx.wait_for_external_event("confirm").await?;
    ///         Ok(())
    ///     });
    /// let env = TestEnv::new(registry).unwrap();
    /// let id = env.client().schedule_by_name("order", &(), Default::default()).await.unwrap();
    /// // Two back-off timers (60 s, 120 s) pass while it waits.
    /// let stage: String = env
    ///     .wait_for_custom_status(&id, |s: &String| s == "awaiting-confirmation")
    ///     .await
    ///     .unwrap();
    /// assert_eq!(stage, "awaiting-confirmation");
    /// # env.shutdown().await;
    /// # }
    /// ```
    pub async fn wait_for_custom_status<T, F>(
        &self,
        instance_id: &str,
        check: F,
    ) -> Result<T, TestError>
    where
        T: DeserializeOwned,
        F: Fn(&T) -> bool,
    {
        let waited_for = format!(
            "showing a custom status of type {} that passes the check",
            std::any::type_name::<T>()
        );
        self.wait_for_state(instance_id, &waited_for, |state, _| {
            match state.custom_status::<T>() {
                Ok(v) if check(&v) => Ok(v),
                _ => Err(describe_custom_status(state)),
            }
        })
        .await
    }

    /// Waits until the instance's custom status equals `expected`.
    ///
    /// ```
    /// # use durable_runtime::testing::TestEnv;
    /// # use durable_runtime::Registry;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let registry = Registry::new().orchestrator_fn("stages", |ctx, _: ()| async move {
    ///     ctx.set_custom_status(&"started");
    ///     ctx.create_timer(std::time::Duration::from_secs(3600)).await;
    ///     ctx.set_custom_status(&"an hour later");
    ///     let _: () = ctx.wait_for_external_event("go").await?;
    ///     Ok(())
    /// });
    /// let env = TestEnv::new(registry).unwrap();
    /// let id = env.client().schedule_by_name("stages", &(), Default::default()).await.unwrap();
    /// env.wait_for_custom_status_eq(&id, &"an hour later".to_string()).await.unwrap();
    /// # env.shutdown().await;
    /// # }
    /// ```
    pub async fn wait_for_custom_status_eq<T>(
        &self,
        instance_id: &str,
        expected: &T,
    ) -> Result<(), TestError>
    where
        T: DeserializeOwned + PartialEq + Serialize,
    {
        let shown = serde_json::to_string(expected).unwrap_or_else(|e| format!("<{e}>"));
        let waited_for = format!("showing the custom status {shown}");
        self.wait_for_state(instance_id, &waited_for, |state, _| {
            match state.custom_status::<T>() {
                Ok(v) if v == *expected => Ok(()),
                _ => Err(describe_custom_status(state)),
            }
        })
        .await
    }

    /// Waits until the instance's latest episode left it waiting for the
    /// external event `event` (case-insensitive, as events are matched) and
    /// nothing else can happen first: no work is queued or running. Raising
    /// the event then reaches a waiting orchestration, before any timer
    /// that races it (virtual time does not move once it waits).
    ///
    /// ```
    /// # use durable_runtime::testing::TestEnv;
    /// # use durable_runtime::{Either, Registry};
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let registry = Registry::new().orchestrator_fn("approval", |ctx, _: ()| async move {
    ///     ctx.create_timer(Duration::from_secs(60)).await; // a delay before asking
    ///     let answer = ctx.wait_for_external_event::<bool>("approval");
    ///     let deadline = ctx.create_timer(Duration::from_secs(24 * 3600));
    ///     Ok(match ctx.when_any2(answer, deadline).await {
    ///         Either::First(answer) => answer?,
    ///         Either::Second(()) => false,
    ///     })
    /// });
    /// let env = TestEnv::new(registry).unwrap();
    /// let id = env.client().schedule_by_name("approval", &(), Default::default()).await.unwrap();
    /// env.wait_until_waiting_for_event(&id, "approval").await.unwrap();
    /// env.client().raise_event(&id, "approval", &true).await.unwrap();
    /// let done = env.wait_for_completion(&id).await.unwrap();
    /// assert!(done.output::<bool>().unwrap());
    /// # env.shutdown().await;
    /// # }
    /// ```
    pub async fn wait_until_waiting_for_event(
        &self,
        instance_id: &str,
        event: &str,
    ) -> Result<(), TestError> {
        let name = event.to_ascii_lowercase();
        let waited_for = format!("waiting for event \"{event}\"");
        self.wait_for_state(instance_id, &waited_for, |state, idle| {
            let waits = self.backend.event_waits(instance_id);
            if idle && state.status() == OrchestrationStatus::Running && waits.contains(&name) {
                return Ok(());
            }
            Err(match (state.status(), waits.as_slice()) {
                (OrchestrationStatus::Running, []) => {
                    "it is running and waits for no external event".to_string()
                }
                (OrchestrationStatus::Running, w) => {
                    format!("it is running and waits for the events {w:?}")
                }
                (status, _) => format!("it is {status}"),
            })
        })
        .await
    }

    /// Moves virtual time forward to `target`, firing the timers due by
    /// then in order and letting the system settle after each (so a timer
    /// that schedules another one due before `target` fires too), then
    /// waits until it is idle at `target`. Fails if `target` is in the past
    /// or work does not settle within 30 s of wall time.
    ///
    /// ```
    /// # use durable_runtime::testing::TestEnv;
    /// # use durable_runtime::Registry;
    /// # use std::time::Duration;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let registry = Registry::new().orchestrator_fn("reminders", |ctx, _: ()| async move {
    ///     for n in 1..=3 {
    ///         ctx.create_timer(Duration::from_secs(24 * 3600)).await;
    ///         ctx.set_custom_status(&n);
    ///     }
    ///     Ok(())
    /// });
    /// let env = TestEnv::new(registry).unwrap();
    /// let id = env.client().schedule_by_name("reminders", &(), Default::default()).await.unwrap();
    /// env.wait_until_idle().await;
    /// env.advance_to(env.now() + chrono::Duration::hours(50)).await.unwrap();
    /// let state = env.client().get_state(&id).await.unwrap().unwrap();
    /// assert_eq!(state.custom_status::<u32>().unwrap(), 2);
    /// # env.shutdown().await;
    /// # }
    /// ```
    pub async fn advance_to(&self, target: crate::history::Timestamp) -> Result<(), TestError> {
        let now = self.backend.now();
        if target < now {
            return Err(TestError::TimeGoesBack { now, target });
        }
        loop {
            self.settle(target).await?;
            match self.backend.next_timer() {
                Some(at) if at <= target => {
                    self.backend.advance_to_next_timer();
                }
                _ => break,
            }
        }
        let left = (target - self.backend.now()).to_std().unwrap_or_default();
        self.backend.advance(left);
        self.settle(target).await
    }

    /// Moves virtual time forward by `by`, as [`advance_to`](TestEnv::advance_to)
    /// does (unlike [`advance`](TestEnv::advance), which fires the due
    /// timers and returns at once).
    pub async fn advance_by(&self, by: Duration) -> Result<(), TestError> {
        let by = chrono::Duration::from_std(by).unwrap_or(chrono::Duration::MAX);
        let target = self
            .backend
            .now()
            .checked_add_signed(by)
            .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
        self.advance_to(target).await
    }

    /// Waits until no work is queued or running, within the wall-time limit.
    async fn settle(&self, target: crate::history::Timestamp) -> Result<(), TestError> {
        if self.idle_within_limit().await {
            return Ok(());
        }
        Err(TestError::StateTimeout {
            waited_for: format!("advancing virtual time to {target}"),
            limit: self.wait_limit,
            saw: format!("work was still running at {}", self.backend.now()),
        })
    }

    /// The loop behind the state waits: `reached(state, idle)` returns the
    /// value once the state is reached, or a description of what it saw.
    async fn wait_for_state<T>(
        &self,
        instance_id: &str,
        waited_for: &str,
        reached: impl Fn(&OrchestrationState, bool) -> Result<T, String>,
    ) -> Result<T, TestError> {
        let deadline = crate::backend::deadline_after(self.wait_limit);
        let read = || async {
            self.client
                .get_state(instance_id)
                .await?
                .ok_or_else(|| TestError::NotFound(instance_id.to_string()))
        };
        let not_reached = |saw: String| TestError::NotReached {
            id: instance_id.to_string(),
            waited_for: waited_for.to_string(),
            saw,
        };
        loop {
            let changed = self.backend.change_notification();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let idle = self.backend.is_idle();
            let state = read().await?;
            let saw = match reached(&state, idle) {
                Ok(v) => return Ok(v),
                Err(saw) => saw,
            };
            if state.status().is_terminal() {
                return Err(not_reached(format!(
                    "it finished ({}); {saw}",
                    state.status()
                )));
            }
            if idle {
                if self.backend.advance_to_next_timer().is_some() {
                    continue;
                }
                return Err(not_reached(format!(
                    "{saw}, and no work is queued or running and no timer is pending"
                )));
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                return Err(TestError::StateTimeout {
                    waited_for: format!("instance \"{instance_id}\" {waited_for}"),
                    limit: self.wait_limit,
                    saw,
                });
            }
        }
    }
}

/// A custom status as a wait failure shows it.
fn describe_custom_status(state: &OrchestrationState) -> String {
    match state.metadata().custom_status.as_deref() {
        Some(json) => format!("its custom status is {json}"),
        None => "it has no custom status".to_string(),
    }
}

/// Runs an async test body with a [`TestEnv`] on a fresh tokio runtime
/// (used by `#[durable::test]`). `registry` defaults to everything
/// discovered in the binary.
pub fn run_test<F, Fut>(registry: Option<Registry>, test: F)
where
    F: FnOnce(TestEnv) -> Fut,
    Fut: Future<Output = ()>,
{
    run_test_with(
        move || match registry {
            Some(r) => TestEnv::builder().registry(r),
            None => TestEnv::builder(),
        },
        test,
    )
}

/// Runs an async test body with the [`TestEnv`] that `configure` describes,
/// on a fresh tokio runtime (used by `#[durable::test]`). `configure` runs
/// inside the runtime, so state values that need one can be made there.
/// Panics with the builder's error if the environment cannot start.
pub fn run_test_with<C, F, Fut>(configure: C, test: F)
where
    C: FnOnce() -> TestEnvBuilder,
    F: FnOnce(TestEnv) -> Fut,
    Fut: Future<Output = ()>,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| panic!("could not start a tokio runtime for the test: {e}"));
    rt.block_on(async move {
        let env = configure().build().unwrap_or_else(|e| panic!("{e}"));
        test(env).await;
    });
}

/// How replaying a recorded history against the current code went wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReplayError {
    /// The code schedules something other than what the history recorded.
    #[error("{0}")]
    NonDeterminism(NonDeterminism),
    /// The code does more than the history recorded at a point where the
    /// recorded run did not (e.g. a new activity call inserted).
    #[error(
        "the code now schedules {code} at sequence #{sequence_id}, which the recorded history does not have; \
         running instances would not replay (deploy it under a new orchestrator name or version)"
    )]
    Extra {
        /// Sequence number.
        sequence_id: i32,
        /// What the code schedules.
        code: String,
    },
    /// The history is not of this orchestrator.
    #[error("the history is of orchestrator \"{found}\", not \"{expected}\"")]
    WrongOrchestrator {
        /// Expected name.
        expected: String,
        /// Name in the history.
        found: String,
    },
    /// The history has no `ExecutionStarted` event.
    #[error("the history has no ExecutionStarted event; export it with `client.history(&id)`")]
    NotAHistory,
    /// The history was recorded on another version of the orchestrator
    /// than the one given.
    #[error(
        "the history was recorded on {} of orchestrator \"{name}\", not on {}; replay it against \
         that version (keep it registered while its instances run), or use `replay_registry`",
        shown_version(found),
        shown_version(expected)
    )]
    WrongVersion {
        /// Orchestrator name.
        name: String,
        /// The version given.
        expected: Option<String>,
        /// The version in the history.
        found: Option<String>,
    },
    /// The registry has no registration that would run the history (the
    /// name is unknown, or its version is not registered).
    #[error(
        "no registration would run this history of {} of orchestrator \"{name}\" (registered \
         versions: [{}]); instances of it would fail with VersionNotRegistered or \
         OrchestratorNotRegistered",
        shown_version(version),
        registered.iter().map(shown_version).collect::<Vec<_>>().join(", ")
    )]
    NotRegistered {
        /// Orchestrator name.
        name: String,
        /// The version in the history.
        version: Option<String>,
        /// The versions of the name that are registered.
        registered: Vec<Option<String>>,
    },
}

fn shown_version(v: &Option<String>) -> String {
    match v {
        Some(v) => format!("version \"{v}\""),
        None => "no version".to_string(),
    }
}

/// What a history's `ExecutionStarted` says: name, version, instance id.
fn started_by(history: &[HistoryEvent]) -> Result<(String, Option<String>, String), ReplayError> {
    history
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ExecutionStarted {
                name,
                version,
                instance_id,
                ..
            } => Some((name.clone(), version.clone(), instance_id.clone())),
            _ => None,
        })
        .ok_or(ReplayError::NotAHistory)
}

/// Replays `history` against `registry`, whose registration of the
/// history's name runs under the history's version.
fn replay_on(
    registry: Registry,
    instance_id: &str,
    history: &[HistoryEvent],
) -> Result<(), ReplayError> {
    let mut exec = Execution::new(Arc::new(registry), instance_id);
    let result = exec.run_episode(history, &[]);
    if let Some(nd) = exec.non_determinism() {
        return Err(ReplayError::NonDeterminism(nd.clone()));
    }
    if let Some(a) = result.actions.iter().find(|a| {
        !matches!(
            a.kind,
            crate::actions::ActionKind::CompleteOrchestration { .. }
        )
    }) {
        return Err(ReplayError::Extra {
            sequence_id: a.id,
            code: a.kind.describe(),
        });
    }
    Ok(())
}

/// Replays a recorded history (e.g. exported with `client.history(&id)` and
/// stored as JSON) against the current code of `orchestrator`. Returns `Ok`
/// if the code still makes the same decisions, else a report naming the
/// sequence number, what the history holds and what the code now does.
///
/// Activities are not run: their recorded results are fed back. The
/// history must have been recorded on the orchestrator's version
/// ([`ReplayError::WrongVersion`] otherwise; an instance started before
/// the orchestrator had versions replays against any). To replay against
/// whichever registration a worker would run, use [`replay_registry`];
/// to find which versions can run it, [`replayable_versions`].
pub fn replay<O: Orchestrator>(
    orchestrator: O,
    history: &[HistoryEvent],
) -> Result<(), ReplayError> {
    let (name, version, instance_id) = started_by(history)?;
    if name != O::NAME {
        return Err(ReplayError::WrongOrchestrator {
            expected: O::NAME.to_string(),
            found: name,
        });
    }
    let expected = O::VERSION.map(str::to_string);
    if version.is_some() && version != expected {
        return Err(ReplayError::WrongVersion {
            name,
            expected,
            found: version,
        });
    }
    replay_on(
        Registry::new().orchestrator(orchestrator),
        &instance_id,
        history,
    )
}

/// Replays a recorded history against the registration of `registry` that
/// a worker with it would run the instance on: the version the history
/// started with (or, for an instance started before the orchestrator had
/// versions, the oldest), so a deploy is checked as a whole.
///
/// ```
/// use durable_runtime::history::{EventKind, HistoryEvent};
/// use durable_runtime::testing::{replay_registry, replayable_versions};
/// use durable_runtime::Registry;
///
/// // Version 2 inserted a step before the one version 1 had.
/// let registry = Registry::new()
///     .activity_fn("charge", |_c, x: i64| async move { Ok::<_, durable_runtime::ActivityError>(x) })
///     .activity_fn("audit", |_c, x: i64| async move { Ok::<_, durable_runtime::ActivityError>(x) })
///     .orchestrator_version_fn("pay", "1", |ctx, x: i64| async move {
///         Ok(ctx.call_activity_by_name::<i64>("charge", &x).await?)
///     })
///     .orchestrator_version_fn("pay", "2", |ctx, x: i64| async move {
///         ctx.call_activity_by_name::<i64>("audit", &x).await?;
///         Ok(ctx.call_activity_by_name::<i64>("charge", &x).await?)
///     });
/// // A version-1 instance that has scheduled its charge.
/// let t = chrono::Utc::now();
/// let history = vec![
///     HistoryEvent::new(t, EventKind::OrchestratorStarted),
///     HistoryEvent::new(t, EventKind::ExecutionStarted {
///         name: "pay".into(), version: Some("1".into()), input: Some("5".into()),
///         instance_id: "p1".into(), execution_id: None, parent: None,
///         scheduled_start: None, tags: Default::default(),
///     }),
///     HistoryEvent::with_id(0, t, EventKind::TaskScheduled {
///         name: "charge".into(), version: None, input: Some("5".into()), tags: Default::default(),
///     }),
///     HistoryEvent::new(t, EventKind::OrchestratorCompleted),
/// ];
/// assert!(replay_registry(&registry, &history).is_ok());
/// assert_eq!(replayable_versions(&registry, &history)?, [Some("1".to_string())]);
/// # Ok::<(), durable_runtime::testing::ReplayError>(())
/// ```
pub fn replay_registry(registry: &Registry, history: &[HistoryEvent]) -> Result<(), ReplayError> {
    let (name, version, instance_id) = started_by(history)?;
    match registry.get_orchestrator(&name, version.as_deref()) {
        Ok(Some(_)) => replay_on(registry.clone(), &instance_id, history),
        Ok(None) | Err(_) => Err(ReplayError::NotRegistered {
            registered: owned_versions(registry, &name),
            name,
            version,
        }),
    }
}

/// Which registered versions of the history's orchestrator replay it
/// without a breaking change, oldest first: the version it was recorded
/// on should be among them, and a version that is not needs the history's
/// instances to stay on the old one. Empty when the name is not
/// registered.
pub fn replayable_versions(
    registry: &Registry,
    history: &[HistoryEvent],
) -> Result<Vec<Option<String>>, ReplayError> {
    let (name, version, instance_id) = started_by(history)?;
    let mut ok = Vec::new();
    for candidate in owned_versions(registry, &name) {
        let Some(only) =
            registry.only_orchestrator(&name, candidate.as_deref(), version.as_deref())
        else {
            continue;
        };
        if replay_on(only, &instance_id, history).is_ok() {
            ok.push(candidate);
        }
    }
    Ok(ok)
}

/// The registered versions of `name`, oldest first.
fn owned_versions(registry: &Registry, name: &str) -> Vec<Option<String>> {
    let mut v: Vec<Option<String>> = registry
        .orchestrator_versions(name)
        .into_iter()
        .map(|v| v.map(str::to_string))
        .collect();
    v.sort_by(|a, b| {
        crate::versioning::compare_versions(a.as_deref().unwrap_or(""), b.as_deref().unwrap_or(""))
    });
    v
}
