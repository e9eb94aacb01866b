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

    /// Waits until no work is queued or running (timers may be pending),
    /// e.g. before raising an event to an orchestration that must already be
    /// waiting.
    pub async fn wait_until_idle(&self) {
        let deadline = crate::backend::deadline_after(self.wait_limit);
        loop {
            let changed = self.backend.change_notification();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.backend.is_idle() {
                return;
            }
            if tokio::time::timeout_at(deadline, changed).await.is_err() {
                panic!(
                    "the test environment did not become idle within {:?}",
                    self.wait_limit
                );
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

/// Runs an async test body with a [`TestEnv`] on a fresh tokio runtime.
/// `registry` defaults to everything discovered in the binary.
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
}

/// Replays a recorded history (e.g. exported with `client.history(&id)` and
/// stored as JSON) against the current code of `orchestrator`. Returns `Ok`
/// if the code still makes the same decisions, else a report naming the
/// sequence number, what the history holds and what the code now does.
///
/// Activities are not run: their recorded results are fed back.
pub fn replay<O: Orchestrator>(
    orchestrator: O,
    history: &[HistoryEvent],
) -> Result<(), ReplayError> {
    let started = history
        .iter()
        .find_map(|e| match &e.kind {
            EventKind::ExecutionStarted {
                name, instance_id, ..
            } => Some((name.clone(), instance_id.clone())),
            _ => None,
        })
        .ok_or(ReplayError::NotAHistory)?;
    if started.0 != O::NAME {
        return Err(ReplayError::WrongOrchestrator {
            expected: O::NAME.to_string(),
            found: started.0,
        });
    }
    let registry = Arc::new(Registry::new().orchestrator(orchestrator));
    let mut exec = Execution::new(registry, &started.1);
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
