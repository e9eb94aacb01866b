//! The worker: fetches work items from any [`Backend`] and runs them.
//!
//! Orchestration episodes run on the replay engine, with a bounded sticky
//! cache of live executions so a long orchestration is not replayed from the
//! start at every step. Activities run as ordinary tokio tasks. Panics in
//! user code fail that one instance or task, never the worker.

mod entities;

use crate::actions::{ActionKind, OrchestratorResult};
use crate::app_state::StateMap;
use crate::backend::{ActivityWorkItem, Backend, BackendError, OrchestrationWorkItem};
use crate::failure::{panic_details, TaskOutcome};
use crate::handler::{idempotency_key, ActivityContext};
use crate::history::{FailureDetails, OrchestrationStatus};
use crate::observe::ExecutionTrace;
use crate::registry::{Registry, RegistryError};
use crate::replay::Execution;
use crate::versioning::{FailureStrategy, VersioningOptions};
use futures::FutureExt;
use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

/// Worker settings.
#[derive(Clone, Debug)]
pub struct WorkerOptions {
    /// Orchestration episodes running at once (default 100).
    pub max_concurrent_orchestrations: usize,
    /// Activities running at once (default 100).
    pub max_concurrent_activities: usize,
    /// Live executions kept between episodes (default 1,024; 0 disables the
    /// sticky cache, so every episode replays from the start).
    pub cache_capacity: usize,
    /// On shutdown, how long in-flight items may take to finish before they
    /// are abandoned (default 5 s).
    pub shutdown_grace: Duration,
    /// Which instances this worker runs, by the orchestrator version they
    /// started with, and what it does with the others (default: every
    /// instance). See [`VersioningOptions`].
    pub versioning: VersioningOptions,
}

impl Default for WorkerOptions {
    fn default() -> Self {
        WorkerOptions {
            max_concurrent_orchestrations: 100,
            max_concurrent_activities: 100,
            cache_capacity: 1024,
            shutdown_grace: Duration::from_secs(5),
            versioning: VersioningOptions::default(),
        }
    }
}

/// Runs orchestrations and activities from a backend.
pub struct Worker {
    backend: Arc<dyn Backend>,
    registry: Registry,
    options: WorkerOptions,
    states: StateMap,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("registry", &self.registry)
            .field("options", &self.options)
            .field("states", &self.states)
            .finish()
    }
}

struct Cache {
    capacity: usize,
    tick: u64,
    /// Instance id -> (execution id, live execution, last use).
    entries: HashMap<String, (String, Execution, u64)>,
}

impl Cache {
    fn take(&mut self, id: &str) -> Option<(String, Execution)> {
        self.entries.remove(id).map(|(x, e, _)| (x, e))
    }

    fn put(&mut self, id: String, execution_id: String, e: Execution) {
        if self.capacity == 0 {
            return;
        }
        if self.entries.len() >= self.capacity {
            if let Some(oldest) = self
                .entries
                .iter()
                .min_by_key(|(_, (_, _, t))| *t)
                .map(|(k, _)| k.clone())
            {
                self.entries.remove(&oldest);
            }
        }
        self.tick += 1;
        self.entries.insert(id, (execution_id, e, self.tick));
    }
}

struct Inner {
    backend: Arc<dyn Backend>,
    registry: Arc<Registry>,
    /// The application state every activity is given.
    states: Arc<StateMap>,
    cache: Mutex<Cache>,
    /// Episode completions that failed in a row (not for a lost lease), to
    /// space out the retries of a backend that cannot write.
    completion_failures: AtomicU32,
    versioning: VersioningOptions,
}

/// A running worker; stop it with [`shutdown`](WorkerHandle::shutdown).
pub struct WorkerHandle {
    backend: Arc<dyn Backend>,
    stop: watch::Sender<bool>,
    abort: watch::Sender<bool>,
    loops: JoinSet<()>,
    grace: Duration,
}

impl Worker {
    /// A worker for `registry` on `backend`, with default options.
    pub fn new(backend: Arc<dyn Backend>, registry: Registry) -> Self {
        Worker {
            backend,
            registry,
            options: WorkerOptions::default(),
            states: StateMap::new(),
        }
    }

    /// Adds a value of application state, which activities take as
    /// `State<T>` ([`crate::State`]); one value per type (a second value of
    /// the same type replaces the first). The value is cloned for every
    /// activity call, so make it cheap to clone: an `Arc`, or a pool or
    /// client handle that is shared already.
    ///
    /// ```
    /// use durable_runtime::{MemoryBackend, Registry, Worker};
    /// use std::sync::Arc;
    ///
    /// #[derive(Clone)]
    /// struct Config {
    ///     region: Arc<str>,
    /// }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let registry = Registry::new().activity_fn("region", |ctx, _: ()| async move {
    ///     // `#[activity]` functions take `State(config): State<Config>` instead.
    ///     let config = ctx.state::<Config>().expect("given to the worker");
    ///     Ok::<_, durable_runtime::ActivityError>(config.region.to_string())
    /// });
    /// let worker = Worker::new(Arc::new(MemoryBackend::new()), registry)
    ///     .state(Config { region: "eu-west".into() })
    ///     .start()
    ///     .unwrap();
    /// worker.shutdown().await;
    /// # });
    /// ```
    pub fn state<T: Clone + Send + Sync + 'static>(mut self, value: T) -> Self {
        self.states.insert(value);
        self
    }

    /// Adds every value of `states` (see [`state`](Worker::state)).
    pub fn state_map(mut self, states: StateMap) -> Self {
        self.states.extend(states);
        self
    }

    /// Replaces the options.
    pub fn with_options(mut self, options: WorkerOptions) -> Self {
        self.options = options;
        self
    }

    /// Starts fetching and running work on the current tokio runtime. Fails
    /// if the registry has duplicate names or a fake of an unknown
    /// activity, or if an activity takes a `State<T>` this worker has no
    /// value for ([`RegistryError::MissingState`]).
    pub fn start(self) -> Result<WorkerHandle, RegistryError> {
        self.registry.check()?;
        self.registry.check_state(&self.states)?;
        tracing::info!(
            orchestrators = ?self.registry.orchestrator_names(),
            activities = ?self.registry.activity_names(),
            states = ?self.states,
            max_concurrent_orchestrations = self.options.max_concurrent_orchestrations,
            max_concurrent_activities = self.options.max_concurrent_activities,
            "worker started"
        );
        let inner = Arc::new(Inner {
            backend: self.backend,
            registry: Arc::new(self.registry),
            states: Arc::new(self.states),
            cache: Mutex::new(Cache {
                capacity: self.options.cache_capacity,
                tick: 0,
                entries: HashMap::new(),
            }),
            completion_failures: AtomicU32::new(0),
            versioning: self.options.versioning.clone(),
        });
        let (stop, stop_rx) = watch::channel(false);
        let (abort, abort_rx) = watch::channel(false);
        let mut loops = JoinSet::new();
        loops.spawn(orchestration_loop(
            inner.clone(),
            self.options.max_concurrent_orchestrations.max(1),
            stop_rx.clone(),
            abort_rx.clone(),
        ));
        let backend = inner.backend.clone();
        loops.spawn(activity_loop(
            inner,
            self.options.max_concurrent_activities.max(1),
            stop_rx,
            abort_rx,
        ));
        Ok(WorkerHandle {
            backend,
            stop,
            abort,
            loops,
            grace: self.options.shutdown_grace,
        })
    }
}

/// Running until the process is asked to stop.
impl Worker {
    /// Runs the worker until the process receives SIGINT (Ctrl-C) or
    /// SIGTERM (what `kill`, systemd, Docker and Kubernetes send), then
    /// shuts it down gracefully ([`WorkerHandle::shutdown`]: no new work,
    /// in-flight work gets [`WorkerOptions::shutdown_grace`] to finish, the
    /// rest is given back for redelivery) and yields the signal.
    ///
    /// The handlers are installed and the worker started when this is
    /// called, before it returns, so a signal that arrives any time after
    /// is caught: print a readiness line between the call and the `.await`.
    /// On other platforms than Unix only Ctrl-C is listened for. The signal
    /// and the shutdown are logged at info level (`tracing`).
    ///
    /// Fails if the registry is inconsistent ([`Error::Registry`](crate::Error::Registry)) or the
    /// handlers cannot be installed ([`Error::Signal`](crate::Error::Signal)). Must be called
    /// inside a tokio runtime with I/O enabled (`#[tokio::main]`).
    ///
    /// ```no_run
    /// use durable_runtime::{MemoryBackend, Registry, Worker};
    /// use std::sync::Arc;
    ///
    /// #[tokio::main]
    /// async fn main() -> Result<(), durable_runtime::Error> {
    ///     let registry = Registry::new()
    ///         .orchestrator_fn("hello", |_ctx, name: String| async move { Ok(format!("Hello, {name}!")) });
    ///     let stopped = Worker::new(Arc::new(MemoryBackend::new()), registry).run_until_signal()?;
    ///     println!("worker ready; stop it with Ctrl-C or SIGTERM");
    ///     let signal = stopped.await;
    ///     println!("worker stopped gracefully after {signal}");
    ///     Ok(())
    /// }
    /// ```
    pub fn run_until_signal(
        self,
    ) -> Result<impl Future<Output = StopSignal> + Send + 'static, crate::Error> {
        let mut signals = StopSignals::install().map_err(crate::Error::Signal)?;
        let handle = self.start()?;
        tracing::info!("worker running until SIGINT or SIGTERM");
        Ok(async move {
            let signal = signals.recv().await;
            tracing::info!(%signal, "received {signal}; shutting the worker down gracefully");
            handle.shutdown().await;
            signal
        })
    }
}

/// The signal that stopped [`Worker::run_until_signal`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT: Ctrl-C in a terminal.
    Interrupt,
    /// SIGTERM: the usual request to stop (`kill`, service managers).
    Terminate,
}

impl std::fmt::Display for StopSignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        })
    }
}

/// Listeners for SIGINT and SIGTERM, installed at once.
struct StopSignals {
    #[cfg(unix)]
    interrupt: tokio::signal::unix::Signal,
    #[cfg(unix)]
    terminate: tokio::signal::unix::Signal,
}

impl StopSignals {
    #[cfg(unix)]
    fn install() -> std::io::Result<Self> {
        use tokio::signal::unix::{signal, SignalKind};
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    #[cfg(not(unix))]
    fn install() -> std::io::Result<Self> {
        Ok(StopSignals {})
    }

    #[cfg(unix)]
    async fn recv(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.interrupt.recv() => StopSignal::Interrupt,
            _ = self.terminate.recv() => StopSignal::Terminate,
        }
    }

    #[cfg(not(unix))]
    async fn recv(&mut self) -> StopSignal {
        match tokio::signal::ctrl_c().await {
            Ok(()) => StopSignal::Interrupt,
            Err(e) => {
                tracing::warn!(error = %e, "listening for Ctrl-C failed; the worker runs until the process ends");
                std::future::pending().await
            }
        }
    }
}

impl std::fmt::Debug for WorkerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerHandle")
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl WorkerHandle {
    /// Stops fetching work, lets in-flight items finish within the grace
    /// period, then abandons the rest so another worker gets them.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        let drained = tokio::time::timeout(self.grace, async {
            while self.loops.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            tracing::info!(
                grace = ?self.grace,
                "work still running after the shutdown grace period is given back for redelivery"
            );
            let _ = self.abort.send(true);
            while self.loops.join_next().await.is_some() {}
        }
        self.backend.worker_stopped().await;
        tracing::info!("worker stopped");
    }
}

async fn stopped(rx: &mut watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Capped exponential backoff for a backend that keeps failing.
fn backoff(failures: u32) -> Duration {
    Duration::from_millis((50u64 << failures.min(6)).min(2_000))
}

/// Fetches work items and runs each in its own task, at most `limit` at
/// once, until `stop`; items still running on `abort` are given back.
/// `job` turns an item into the future that runs it and the one that
/// abandons it.
async fn dispatch_loop<T, Fetch, FetchFut, Job, Run, Abandon>(
    kind: &'static str,
    limit: usize,
    mut stop: watch::Receiver<bool>,
    abort: watch::Receiver<bool>,
    fetch: Fetch,
    job: Job,
) where
    Fetch: Fn() -> FetchFut,
    FetchFut: Future<Output = Result<T, BackendError>>,
    Job: Fn(T) -> (Run, Abandon),
    Run: Future<Output = ()> + Send + 'static,
    Abandon: Future<Output = ()> + Send + 'static,
{
    let sem = Arc::new(Semaphore::new(limit));
    let mut tasks = JoinSet::new();
    let mut failures = 0;
    loop {
        let permit = tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            p = sem.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let item = tokio::select! {
            biased;
            _ = stopped(&mut stop) => break,
            r = fetch() => r,
        };
        while tasks.try_join_next().is_some() {}
        match item {
            Ok(item) => {
                failures = 0;
                let (run, abandon) = job(item);
                let mut abort = abort.clone();
                tasks.spawn(async move {
                    let _permit = permit;
                    tokio::select! {
                        biased;
                        _ = run => {}
                        _ = stopped(&mut abort) => abandon.await,
                    }
                });
            }
            Err(BackendError::Shutdown) => break,
            Err(e) => {
                tracing::warn!(error = %e, "fetching {kind} work failed; retrying");
                failures += 1;
                tokio::select! {
                    _ = stopped(&mut stop) => break,
                    _ = tokio::time::sleep(backoff(failures)) => {}
                }
            }
        }
    }
    while tasks.join_next().await.is_some() {}
}

async fn orchestration_loop(
    inner: Arc<Inner>,
    limit: usize,
    stop: watch::Receiver<bool>,
    abort: watch::Receiver<bool>,
) {
    inner.backend.worker_started().await;
    let fetcher = inner.clone();
    let fetch = move || {
        let fetcher = fetcher.clone();
        async move { fetcher.backend.next_orchestration_item().await }
    };
    let job = |item: OrchestrationWorkItem| {
        let lease = lease_of(&item);
        let (a, b) = (inner.clone(), inner.clone());
        let renewal = lease.clone();
        (
            async move {
                // On a task of its own, so it goes on while the episode
                // runs on this one; it stops when this future ends or is
                // dropped.
                let _renewing = AbortOnDrop(tokio::spawn(renew_episode_lease(
                    a.backend.clone(),
                    renewal,
                )));
                // Let it start first: a task spawned here waits in this
                // thread's next-task slot, which other threads cannot take,
                // so an episode that blocks this thread would hold it back.
                tokio::task::yield_now().await;
                run_orchestration(&a, item).await
            },
            async move {
                let _ = b.backend.abandon_orchestration_item(lease).await;
            },
        )
    };
    dispatch_loop("orchestration", limit, stop, abort, fetch, job).await;
}

/// What abandoning, renewing or a backend's bookkeeping needs of an
/// episode: its identity and lease, without a second reference to its
/// history (which would force the backend to copy it).
fn lease_of(item: &OrchestrationWorkItem) -> OrchestrationWorkItem {
    OrchestrationWorkItem {
        instance_id: item.instance_id.clone(),
        execution_id: item.execution_id.clone(),
        past_events: Arc::default(),
        new_events: Vec::new(),
        completion_token: item.completion_token.clone(),
        orchestration_span: item.orchestration_span,
    }
}

/// The version the instance of `item` started with; `None` when the item
/// holds no start (a terminate delivered before a scheduled start).
fn started_version(item: &OrchestrationWorkItem) -> Option<Option<String>> {
    let started = crate::backend::transition::execution_started(&item.past_events)
        .or_else(|| crate::backend::transition::execution_started(&item.new_events))?;
    match &started.kind {
        crate::history::EventKind::ExecutionStarted { version, .. } => Some(version.clone()),
        _ => None,
    }
}

/// Applies the worker's versioning to an episode: false to run it; true
/// when it was refused (given back for another worker, or failed).
async fn version_refused(
    inner: &Inner,
    item: &OrchestrationWorkItem,
    taken: std::time::Instant,
) -> bool {
    let v = &inner.versioning;
    // Without a start there is nothing to run on any version: the engine
    // applies what came (a terminate).
    let Some(version) = started_version(item) else {
        return false;
    };
    if v.accepts(version.as_deref()) {
        return false;
    }
    let shown = version.as_deref().unwrap_or("");
    match v.failure_strategy {
        FailureStrategy::Reject => {
            tracing::info!(instance_id = %item.instance_id, version = shown, worker_version = %v.version, "the instance's version does not match this worker's; giving it back for another worker");
            tokio::time::sleep(v.reject_pause).await;
            let lease = lease_of(item);
            if let Err(e) = inner.backend.abandon_orchestration_item(lease).await {
                tracing::warn!(instance_id = %item.instance_id, error = %e, "giving back an instance of another version failed; it runs again when its lease expires");
            }
        }
        FailureStrategy::Fail => {
            let mut failure = FailureDetails::new(
                "VersionMismatch",
                format!(
                    "instance \"{}\" started with version \"{shown}\", which a worker of version \
                     \"{}\" does not run ({:?} matching); run a worker that accepts it",
                    item.instance_id, v.version, v.match_strategy
                ),
            );
            failure.non_retriable = true;
            tracing::warn!(instance_id = %item.instance_id, "{}", failure.message);
            // The completion takes the next sequence number, as the engine's would.
            let next = item
                .past_events
                .iter()
                .chain(&item.new_events)
                .filter(|e| crate::actions::Task::scheduled_by(&e.kind).is_some())
                .count() as i32;
            let mut result = OrchestratorResult {
                actions: vec![crate::actions::OrchestratorAction {
                    id: next,
                    kind: ActionKind::failed(failure),
                    trace: None,
                }],
                custom_status: None,
                cancelled_timers: Vec::new(),
            };
            // The execution ends here: its span and metrics are reported as
            // any other execution's end is.
            let trace = ExecutionTrace::of(
                &item.instance_id,
                &item.execution_id,
                &item.past_events,
                &item.new_events,
                crate::backend::OrchestrationSpan::given(item.orchestration_span.as_ref()),
            );
            let spans = episode_spans(trace.as_ref(), item, &mut result);
            let started = item
                .new_events
                .iter()
                .any(|e| matches!(e.kind, crate::history::EventKind::ExecutionStarted { .. }));
            let item = OrchestrationWorkItem {
                instance_id: item.instance_id.clone(),
                execution_id: item.execution_id.clone(),
                past_events: item.past_events.clone(),
                new_events: item.new_events.clone(),
                completion_token: item.completion_token.clone(),
                orchestration_span: item.orchestration_span,
            };
            match inner
                .backend
                .complete_orchestration_item(item, result)
                .await
            {
                Ok(()) => {
                    spans.into_iter().for_each(crate::trace::emit);
                    if let Some(trace) = &trace {
                        crate::metrics::episode(
                            &trace.name,
                            crate::metrics::REPLAY_NONE,
                            taken.elapsed().as_secs_f64(),
                            started,
                            Some(crate::history::OrchestrationStatus::Failed),
                        );
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "failing an instance of another version failed; it is delivered again")
                }
            }
        }
    }
    true
}

async fn run_orchestration(inner: &Inner, item: OrchestrationWorkItem) {
    if entities::is_entity_item(&inner.registry, &item) {
        return entities::run(inner.backend.as_ref(), &inner.registry, item).await;
    }
    let taken = std::time::Instant::now();
    if inner.versioning.match_strategy != crate::versioning::MatchStrategy::None
        && version_refused(inner, &item, taken).await
    {
        return;
    }
    // Only an execution of the same execution id may continue (the instance
    // may have been replaced or continued as new meanwhile).
    let cached = lock_cache(inner)
        .take(&item.instance_id)
        .filter(|(execution_id, _)| *execution_id == item.execution_id)
        .map(|(_, exec)| exec);
    let rewound = crate::backend::transition::rewind_of(&item.past_events, &item.new_events);
    let (exec, mut result, replay) = match (rewound, cached) {
        (Some(history), _) => {
            // A rewind: the code replays the failed history without its
            // failure and schedules again what failed; the backend replaces
            // the history with the rewound one the action carries.
            let mut exec = Execution::new(inner.registry.clone(), &item.instance_id)
                .with_default_version(inner.versioning.default_version.clone());
            let mut r = exec.run_episode(&history, &item.new_events);
            r.actions.insert(
                0,
                crate::actions::OrchestratorAction {
                    id: -1,
                    kind: ActionKind::RewindOrchestration {
                        new_history: history,
                    },
                    trace: None,
                },
            );
            (exec, r, "rewind")
        }
        (None, Some(mut exec)) if exec.can_continue(&item.past_events) => {
            let r = exec.continue_episode(&item.past_events, &item.new_events);
            (exec, r, "cached")
        }
        (None, _) => {
            let mut exec = Execution::new(inner.registry.clone(), &item.instance_id)
                .with_default_version(inner.versioning.default_version.clone());
            let r = exec.run_episode(&item.past_events, &item.new_events);
            (exec, r, "full")
        }
    };
    let instance_id = item.instance_id.clone();
    let execution_id = item.execution_id.clone();
    let lease = lease_of(&item);
    let trace = ExecutionTrace::of(
        &item.instance_id,
        &item.execution_id,
        &item.past_events,
        &item.new_events,
        crate::backend::OrchestrationSpan::given(item.orchestration_span.as_ref()),
    );
    let spans = episode_spans(trace.as_ref(), &item, &mut result);
    let started = item
        .new_events
        .iter()
        .any(|e| matches!(e.kind, crate::history::EventKind::ExecutionStarted { .. }));
    let ended = result.actions.iter().find_map(|a| match &a.kind {
        ActionKind::CompleteOrchestration { status, .. } => Some(*status),
        _ => None,
    });
    log_episode(&instance_id, &exec, &result);
    if inner.backend.wants_event_waits() {
        inner
            .backend
            .record_event_waits(&lease, exec.waiting_for_events());
    }
    // Cache before completing: completion makes the next episode of this
    // instance deliverable at once, and it must find the execution there.
    // A stale cached execution is harmless: `can_continue` rejects it.
    let live = !exec.is_complete();
    if live {
        lock_cache(inner).put(instance_id.clone(), execution_id, exec);
    }
    let e = match inner
        .backend
        .complete_orchestration_episode(item, result)
        .await
    {
        Ok(recorded) => {
            inner.completion_failures.store(0, Ordering::Relaxed);
            let (spans, ended) = with_recorded_end(trace.as_ref(), spans, ended, recorded);
            // Reported once the episode is recorded: an episode that is run
            // again (its lease lost) reports its spans then.
            spans.into_iter().for_each(crate::trace::emit);
            if let Some(trace) = &trace {
                crate::metrics::episode(
                    &trace.name,
                    replay,
                    taken.elapsed().as_secs_f64(),
                    started,
                    ended,
                );
            }
            return;
        }
        Err(e) => e,
    };
    if live {
        lock_cache(inner).take(&instance_id);
    }
    match e {
        BackendError::Shutdown => {}
        BackendError::LeaseLost(_) => {
            crate::metrics::lease_lost(crate::metrics::KIND_ORCHESTRATION);
            tracing::warn!(instance_id = %instance_id, error = %e, "completing an orchestration episode failed: its lease was lost; whoever holds it now runs it again");
        }
        e => {
            // The backend could not write (disk full, read-only file, ...):
            // give the episode back rather than let it wait out its lease,
            // after a pause that grows while completions keep failing.
            let failures = inner.completion_failures.fetch_add(1, Ordering::Relaxed) + 1;
            let pause = backoff(failures);
            tracing::warn!(instance_id = %instance_id, error = %e, retry_in = ?pause, "completing an orchestration episode failed; it is given back to run again");
            tokio::time::sleep(pause).await;
            if let Err(e) = inner.backend.abandon_orchestration_item(lease).await {
                tracing::warn!(instance_id = %instance_id, error = %e, "giving an orchestration episode back failed; it runs again when its lease expires");
            }
        }
    }
}

/// When the store failed the execution instead of recording what the
/// episode asked (an output over the payload limit, a history over its
/// cap, a result a sidecar refused for good), the execution's span and
/// metrics say what was recorded: it failed, with the store's failure.
fn with_recorded_end(
    trace: Option<&ExecutionTrace>,
    mut spans: Vec<crate::trace::SpanRecord>,
    ended: Option<OrchestrationStatus>,
    recorded: Option<crate::backend::RecordedEpisode>,
) -> (Vec<crate::trace::SpanRecord>, Option<OrchestrationStatus>) {
    let Some(r) = recorded.filter(|r| {
        r.status == OrchestrationStatus::Failed && ended != Some(OrchestrationStatus::Failed)
    }) else {
        return (spans, ended);
    };
    if let Some(trace) = trace.filter(|_| crate::trace::wanted()) {
        let own = trace.context.span_id();
        spans.retain(|s| Some(s.span_id) != own);
        let failure = r.failure.unwrap_or_else(|| {
            FailureDetails::new("Failed", "the store recorded the orchestration as failed")
        });
        let end = crate::actions::OrchestratorAction {
            id: -1,
            kind: ActionKind::failed(failure),
            trace: None,
        };
        spans.extend(trace.episode_spans(&[], &[], &[end], chrono::Utc::now()));
    }
    (spans, Some(OrchestrationStatus::Failed))
}

/// Gives the episode's calls their trace contexts and returns the spans
/// the episode finishes (none when nothing would see them: no sink and the
/// `durable::span` log off).
fn episode_spans(
    trace: Option<&ExecutionTrace>,
    item: &OrchestrationWorkItem,
    result: &mut OrchestratorResult,
) -> Vec<crate::trace::SpanRecord> {
    let Some(trace) = trace else {
        return Vec::new();
    };
    trace.annotate(&mut result.actions);
    if !crate::trace::wanted() {
        return Vec::new();
    }
    trace.episode_spans(
        &item.past_events,
        &item.new_events,
        &result.actions,
        chrono::Utc::now(),
    )
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Renews an episode's lease while it runs and while its completion is
/// written (never returns if the backend wants renewals; returns at once if
/// it does not, or once the lease is lost).
async fn renew_episode_lease(backend: Arc<dyn Backend>, lease: OrchestrationWorkItem) {
    let Some(every) = backend.orchestration_lease_renewal() else {
        return;
    };
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match backend.renew_orchestration_item(&lease).await {
            Ok(()) => {}
            // Completed meanwhile, or taken over: nothing left to renew.
            Err(BackendError::LeaseLost(_)) | Err(BackendError::Shutdown) => return,
            Err(e) => {
                tracing::warn!(instance_id = %lease.instance_id, error = %e, "renewing an orchestration lease failed; its completion may be rejected")
            }
        }
    }
}

/// What an episode did, at a level that matches: each step and the end are
/// debug, a failure warn, a non-determinism error (the code changed under
/// running instances).
fn log_episode(instance_id: &str, exec: &Execution, result: &OrchestratorResult) {
    let scheduled = result.actions.len();
    if !result.cancelled_timers.is_empty() {
        tracing::debug!(instance_id, timers = ?result.cancelled_timers, "timers cancelled");
    }
    match result.completion() {
        None => tracing::debug!(instance_id, scheduled, "orchestration episode ran"),
        Some(ActionKind::CompleteOrchestration {
            status, failure, ..
        }) => match (status, failure, exec.non_determinism()) {
            (_, _, Some(nd)) => {
                tracing::error!(instance_id, "orchestration failed: {nd}")
            }
            (OrchestrationStatus::Failed, Some(f), None) => {
                tracing::warn!(instance_id, error_type = %f.error_type, "orchestration failed: {}", f.message)
            }
            (status, _, None) => tracing::debug!(instance_id, %status, "orchestration finished"),
        },
        Some(_) => {}
    }
}

fn lock_cache(inner: &Inner) -> std::sync::MutexGuard<'_, Cache> {
    inner.cache.lock().unwrap_or_else(|p| p.into_inner())
}

async fn activity_loop(
    inner: Arc<Inner>,
    limit: usize,
    stop: watch::Receiver<bool>,
    abort: watch::Receiver<bool>,
) {
    let fetcher = inner.clone();
    let fetch = move || {
        let fetcher = fetcher.clone();
        async move { fetcher.backend.next_activity_item().await }
    };
    let job = |item: ActivityWorkItem| {
        let (a, b) = (inner.clone(), inner.clone());
        let lease = item.clone();
        (
            async move {
                // The lease is renewed until the outcome is recorded.
                let renew = renew_lease(a.backend.as_ref(), &item);
                // The run's span context is chosen first, so the activity's
                // code can pass it on (ActivityContext::trace_context), and
                // the run happens inside a `tracing` span carrying it.
                let own = crate::observe::activity_run_context(item.trace.as_ref());
                let run_span = tracing::info_span!(
                    "activity",
                    name = %item.name,
                    instance_id = %item.instance_id,
                    task_id = item.task_id,
                    trace_id = own.as_ref().and_then(|t| t.trace_id()).map(|t| t.to_string()),
                    span_id = own.as_ref().and_then(|t| t.span_id()).map(|s| s.to_string()),
                );
                let work = async {
                    let started = chrono::Utc::now();
                    let clock = std::time::Instant::now();
                    let outcome =
                        run_activity_traced(&a.registry, &a.states, &item, own.clone()).await;
                    crate::metrics::activity(
                        &item.name,
                        clock.elapsed().as_secs_f64(),
                        outcome.is_err(),
                    );
                    let span = crate::trace::wanted().then(|| {
                        crate::observe::activity_span(
                            &item.name,
                            item.version.as_deref(),
                            &item.instance_id,
                            item.task_id,
                            item.trace.as_ref(),
                            own.as_ref(),
                            (started, chrono::Utc::now()),
                            outcome.as_ref().err().map(|f| f.to_string()),
                        )
                    });
                    match &outcome {
                        Ok(_) => {
                            tracing::debug!(activity = %item.name, instance_id = %item.instance_id, task_id = item.task_id, "activity completed")
                        }
                        Err(f) => {
                            tracing::warn!(activity = %item.name, instance_id = %item.instance_id, task_id = item.task_id, error_type = %f.error_type, "activity failed: {}", f.message)
                        }
                    }
                    // Reported before the outcome is recorded, so the span of
                    // the last activity is out when its orchestration ends.
                    span.into_iter().for_each(crate::trace::emit);
                    complete_activity(a.backend.as_ref(), &item, outcome).await;
                }
                .instrument(run_span);
                tokio::select! {
                    biased;
                    _ = renew => {}
                    _ = work => {}
                }
            },
            async move {
                let _ = b.backend.abandon_activity_item(&lease).await;
            },
        )
    };
    dispatch_loop("activity", limit, stop, abort, fetch, job).await;
}

/// Times an activity's outcome is offered again when recording it fails
/// (a full disk, a read-only file) before the activity is given back.
const ACTIVITY_COMPLETION_TRIES: u32 = 6;

/// Records an activity's outcome. When the backend cannot write, the
/// outcome (already paid for) is offered again a few times, with growing
/// pauses, while the lease is renewed; if that keeps failing, the activity
/// is given back at once rather than left to wait out its lease.
async fn complete_activity(backend: &dyn Backend, item: &ActivityWorkItem, outcome: TaskOutcome) {
    let mut tries = 0;
    loop {
        let e = match backend.complete_activity_item(item, outcome.clone()).await {
            Ok(()) => return,
            Err(e) => e,
        };
        tries += 1;
        match e {
            BackendError::Shutdown => return,
            BackendError::LeaseLost(_) => {
                crate::metrics::lease_lost(crate::metrics::KIND_ACTIVITY);
                tracing::warn!(activity = %item.name, instance_id = %item.instance_id, error = %e, "completing an activity failed: its lease was lost, so it is delivered again");
                return;
            }
            e if tries >= ACTIVITY_COMPLETION_TRIES => {
                tracing::warn!(activity = %item.name, instance_id = %item.instance_id, error = %e, tries, "completing an activity failed; it is given back to run again");
                if let Err(e) = backend.abandon_activity_item(item).await {
                    tracing::warn!(activity = %item.name, error = %e, "giving an activity back failed; it runs again when its lease expires");
                }
                return;
            }
            e => {
                let pause = backoff(tries);
                tracing::warn!(activity = %item.name, instance_id = %item.instance_id, error = %e, retry_in = ?pause, "completing an activity failed; retrying");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Renews an activity's lease while it runs (never returns if the backend
/// wants renewals; returns at once if it does not).
async fn renew_lease(backend: &dyn Backend, item: &ActivityWorkItem) {
    let Some(every) = backend.activity_lease_renewal() else {
        return std::future::pending().await;
    };
    let mut ticks = tokio::time::interval(every);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        if let Err(e) = backend.renew_activity_item(item).await {
            tracing::warn!(activity = %item.name, error = %e, "renewing an activity lease failed; its result may be rejected");
        }
    }
}

/// Runs one activity work item against a registry, without application
/// state (panics become failures).
pub async fn run_activity(registry: &Registry, item: &ActivityWorkItem) -> TaskOutcome {
    let own = crate::observe::activity_run_context(item.trace.as_ref());
    run_activity_traced(registry, &Arc::default(), item, own).await
}

/// Runs one activity work item against a registry, giving it `states` and
/// its run's trace context `own`.
async fn run_activity_traced(
    registry: &Registry,
    states: &Arc<StateMap>,
    item: &ActivityWorkItem,
    own: Option<crate::trace::TraceContext>,
) -> TaskOutcome {
    tracing::debug!(activity = %item.name, instance_id = %item.instance_id, task_id = item.task_id, "activity started");
    let Some(handler) = registry.get_activity(&item.name) else {
        let known = registry.activity_names().join(", ");
        return Err(FailureDetails {
            non_retriable: true,
            ..FailureDetails::new(
                "ActivityNotRegistered",
                format!(
                    "activity \"{}\" is not registered on this worker (registered: [{known}]); \
                     add it to the worker's Registry or fix the name it is called by",
                    item.name
                ),
            )
        });
    };
    let (attempt, first_task_id) = item.attempt();
    let ctx = ActivityContext::new(item.instance_id.clone(), item.task_id, item.name.clone())
        .with_state_map(states.clone())
        .with_attempt(attempt)
        .with_idempotency_key(idempotency_key(
            &item.instance_id,
            &item.execution_id,
            first_task_id,
        ))
        .with_trace_context(own);
    let fut = match std::panic::catch_unwind(AssertUnwindSafe(|| handler(ctx, item.input.clone())))
    {
        Ok(f) => f,
        Err(p) => return Err(panic_details(p)),
    };
    match AssertUnwindSafe(fut).catch_unwind().await {
        Ok(outcome) => outcome,
        Err(p) => Err(panic_details(p)),
    }
}
