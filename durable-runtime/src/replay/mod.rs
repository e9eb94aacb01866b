//! The replay engine: runs an orchestrator function against its history.
//!
//! An [`Execution`] owns the orchestrator's future and its context state. It
//! is fed history events one at a time; after each event that wakes the
//! orchestrator it polls it once, so the code observes completions in
//! history order on every replay. Scheduling calls record actions, which
//! are matched against the `TaskScheduled`/`TimerCreated`/... events of the
//! history by sequence number; a mismatch is a [`NonDeterminism`] error.
//!
//! The same `Execution` can be kept alive between episodes (sticky
//! execution): it is then fed only the new events. Both paths produce the
//! same actions; the tests check it on the same histories.

#[cfg(test)]
mod tests;

use crate::actions::{ActionKind, OrchestratorAction, OrchestratorResult, Task};
use crate::context::state::CtxState;
use crate::context::OrchestrationContext;
use crate::failure::{
    panic_details, ContinuedAsNew, TaskOutcome, CONTINUED_AS_NEW, NON_DETERMINISM_ERROR,
};
use crate::handler::BoxFuture;
use crate::history::{EventKind, FailureDetails, HistoryEvent, OrchestrationStatus};
use crate::registry::{OrchestratorFn, Registry};
use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

/// The code and the history disagree: replaying would not reproduce what
/// happened before.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NonDeterminism {
    /// Sequence number where they disagree.
    pub sequence_id: i32,
    /// What the history holds there (e.g. `activity "ship_item"`), if anything.
    pub history: Option<String>,
    /// What the code does there now, if anything.
    pub code: Option<String>,
}

impl std::fmt::Display for NonDeterminism {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let history = self.history.as_deref().unwrap_or("nothing");
        let code = self.code.as_deref().unwrap_or("nothing");
        write!(
            f,
            "non-deterministic orchestration: at sequence #{} the history has {history} but the code now schedules {code}; \
             the orchestrator's code changed in a way that breaks replay of running instances \
             (deploy it under a new orchestrator name or version, or let old instances finish first)",
            self.sequence_id
        )
    }
}

impl std::error::Error for NonDeterminism {}

/// Whether a recorded scheduling event records this action.
fn same_action(kind: &EventKind, action: &ActionKind) -> bool {
    match (Task::scheduled_by(kind), action.task()) {
        (Some(recorded), Some(now)) => recorded.replays_as(&now),
        _ => false,
    }
}

struct RootWaker(AtomicBool);

impl Wake for RootWaker {
    fn wake(self: Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
    fn wake_by_ref(self: &Arc<Self>) {
        self.0.store(true, Ordering::Release);
    }
}

type RootFuture = BoxFuture<'static, TaskOutcome>;

/// One live execution of an orchestration.
pub struct Execution {
    registry: Arc<Registry>,
    ctx: OrchestrationContext,
    root: Option<RootFuture>,
    woken: Arc<RootWaker>,
    waker: Waker,
    completion: Option<ActionKind>,
    /// The orchestrator continued as new keeping its events: events that
    /// arrive after it returned, in the same episode, go over too.
    carry_events: bool,
    non_determinism: Option<NonDeterminism>,
    /// The `ExecutionStarted` this execution ran from, to recognise its
    /// history (and not a replaced instance's) in the sticky-cache check.
    started: Option<HistoryEvent>,
    suspended: bool,
    held: Vec<HistoryEvent>,
    /// Events applied so far (past and new), for the sticky-cache check.
    events_seen: usize,
    /// Actions handed out in the last episode, in order, to check the
    /// events a backend appends for them.
    last_actions: Vec<OrchestratorAction>,
}

impl std::fmt::Debug for Execution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Execution")
            .field("ctx", &self.ctx)
            .field("events_seen", &self.events_seen)
            .field("completed", &self.completion.is_some())
            .finish()
    }
}

impl Execution {
    /// A fresh execution for an instance, resolving orchestrators in `registry`.
    pub fn new(registry: Arc<Registry>, instance_id: &str) -> Self {
        let woken = Arc::new(RootWaker(AtomicBool::new(false)));
        Execution {
            registry,
            ctx: OrchestrationContext::new(CtxState::new(
                instance_id.to_string(),
                String::new(),
                chrono::DateTime::UNIX_EPOCH,
            )),
            root: None,
            waker: Waker::from(woken.clone()),
            woken,
            completion: None,
            carry_events: false,
            non_determinism: None,
            started: None,
            suspended: false,
            held: Vec::new(),
            events_seen: 0,
            last_actions: Vec::new(),
        }
    }

    /// Sub-orchestrations this execution starts without naming a version
    /// start on `version` (a worker's
    /// [`VersioningOptions::default_version`](crate::versioning::VersioningOptions::default_version)).
    pub fn with_default_version(self, version: Option<String>) -> Self {
        self.ctx.lock().default_version = version;
        self
    }

    /// The non-determinism found, if any (the result then fails the
    /// orchestration).
    pub fn non_determinism(&self) -> Option<&NonDeterminism> {
        self.non_determinism.as_ref()
    }

    /// Whether the orchestration finished.
    pub fn is_complete(&self) -> bool {
        self.completion.is_some()
    }

    /// The external events (names in lower case, sorted) the orchestration
    /// waits for now: waits started and not yet resolved nor dropped.
    pub fn waiting_for_events(&self) -> Vec<String> {
        let mut names: Vec<String> = self.ctx.lock().event_waiters.keys().cloned().collect();
        names.sort();
        names
    }

    /// Runs one episode from scratch or continues a cached execution.
    /// `past` must be the full prior history; if this execution has already
    /// seen a prefix of it, only the remainder is applied.
    pub fn run_episode(
        &mut self,
        past: &[HistoryEvent],
        new: &[HistoryEvent],
    ) -> OrchestratorResult {
        {
            let mut s = self.ctx.lock();
            s.is_replaying = true;
        }
        if self.events_seen == 0 {
            for e in past {
                self.apply(e);
            }
        }
        self.ctx.lock().is_replaying = false;
        self.apply_new(new);
        self.events_seen = past.len() + new.len();
        self.finish_episode()
    }

    /// Applies an episode's new events. A terminate request wins over
    /// everything delivered with it: the orchestrator does not run again,
    /// so it schedules nothing more.
    fn apply_new(&mut self, new: &[HistoryEvent]) {
        let terminate = new
            .iter()
            .find(|e| matches!(e.kind, EventKind::ExecutionTerminated { .. }));
        match terminate {
            Some(t) => {
                for e in new
                    .iter()
                    .filter(|e| matches!(e.kind, EventKind::OrchestratorStarted))
                {
                    self.apply(e);
                }
                self.apply(t);
            }
            None => {
                for e in new {
                    self.apply(e);
                }
            }
        }
    }

    /// Whether this cached execution can continue with `past` as the prior
    /// history: the history must be what it saw plus exactly the events a
    /// backend records for the actions it returned last time.
    pub fn can_continue(&self, past: &[HistoryEvent]) -> bool {
        if self.completion.is_some() || self.events_seen == 0 || past.len() < self.events_seen {
            return false;
        }
        // The same execution: its ExecutionStarted opens the history.
        let start = past
            .iter()
            .take(8)
            .find(|e| matches!(e.kind, EventKind::ExecutionStarted { .. }));
        if self.started.is_none() || start != self.started.as_ref() {
            return false;
        }
        let mut expected = self
            .last_actions
            .iter()
            .filter(|a| !matches!(a.kind, ActionKind::CompleteOrchestration { .. }));
        for e in &past[self.events_seen..] {
            match &e.kind {
                EventKind::OrchestratorCompleted => {}
                EventKind::OrchestratorStarted => {}
                k if Task::scheduled_by(k).is_some() => match expected.next() {
                    Some(a) if a.id == e.event_id && same_action(k, &a.kind) => {}
                    _ => return false,
                },
                _ => return false,
            }
        }
        expected.next().is_none()
    }

    /// Runs an episode on a cached execution: applies the events of `past`
    /// it has not seen (only those recording its own actions, checked by
    /// [`can_continue`](Self::can_continue)), then `new`.
    pub fn continue_episode(
        &mut self,
        past: &[HistoryEvent],
        new: &[HistoryEvent],
    ) -> OrchestratorResult {
        // The unseen part of `past` only records this execution's own
        // actions (checked by `can_continue`); nothing to apply.
        self.ctx.lock().is_replaying = false;
        self.apply_new(new);
        self.events_seen = past.len() + new.len();
        self.finish_episode()
    }

    fn finish_episode(&mut self) -> OrchestratorResult {
        let deferred = self.ctx.lock().deferred_failure.take();
        let terminated = self.is_terminated();
        if let Some(d) = deferred {
            if self.non_determinism.is_none() && !terminated {
                self.fail(d);
            }
        }
        let mut s = self.ctx.lock();
        if self.completion.is_none()
            && self.non_determinism.is_none()
            && self.root.is_some()
            && !self.suspended
            && !s.has_outstanding()
        {
            let name = s.name.clone();
            drop(s);
            self.fail(FailureDetails::new(
                "NonDurableAwaitError",
                format!(
                    "orchestrator \"{name}\" is waiting on something that is not a durable task \
                     (a tokio timer, a channel, a lock, an HTTP call, ...); orchestrators may only await \
                     futures from OrchestrationContext (activities, timers, sub-orchestrations, external events)"
                ),
            ));
            s = self.ctx.lock();
        }
        let pending = std::mem::take(&mut s.pending_actions);
        // A terminated orchestration dispatches nothing more, nor does one
        // whose code no longer matches its history. One that failed
        // dispatches what expects no result (events it sent): the episode
        // happened, only its tasks would never be awaited.
        let failed = self
            .completion
            .as_ref()
            .is_some_and(|c| c.completes_as(OrchestrationStatus::Failed));
        let mut actions: Vec<OrchestratorAction> =
            if self.is_terminated() || self.non_determinism.is_some() {
                Vec::new()
            } else {
                pending
                    .into_iter()
                    .filter(|(_, kind)| !failed || kind.is_fire_and_forget())
                    .map(|(id, kind)| OrchestratorAction {
                        id,
                        kind,
                        trace: None,
                    })
                    .collect()
            };
        // Actions handed out stay matched: the next history will record them.
        self.last_actions = actions.clone();
        if let Some(c) = &self.completion {
            actions.push(OrchestratorAction {
                id: s.next_seq,
                kind: c.clone(),
                trace: None,
            });
        }
        let mut cancelled_timers = std::mem::take(&mut s.cancelled_timers);
        cancelled_timers.sort_unstable();
        OrchestratorResult {
            actions,
            custom_status: s.custom_status.clone(),
            cancelled_timers,
        }
    }

    /// After `continue_as_new_keep_events`, an event raised in the same
    /// episode after the orchestrator returned joins the events carried to
    /// the new execution, like the buffered ones (stamped with the
    /// episode's time, as they are).
    fn carry_over(&mut self, e: &HistoryEvent) {
        let EventKind::EventRaised { name, input } = &e.kind else {
            return;
        };
        if !self.carry_events {
            return;
        }
        if let Some(ActionKind::CompleteOrchestration {
            status: OrchestrationStatus::ContinuedAsNew,
            carryover_events,
            ..
        }) = &mut self.completion
        {
            let now = self.ctx.lock().now;
            carryover_events.push(HistoryEvent::new(
                now,
                EventKind::EventRaised {
                    name: name.clone(),
                    input: input.clone(),
                },
            ));
        }
    }

    fn is_terminated(&self) -> bool {
        self.completion
            .as_ref()
            .is_some_and(|c| c.completes_as(OrchestrationStatus::Terminated))
    }

    fn fail(&mut self, details: FailureDetails) {
        self.completion = Some(ActionKind::failed(details));
        self.drop_root();
    }

    /// Drops the orchestrator future; a panic in a destructor of user code
    /// must not take the worker down.
    fn drop_root(&mut self) {
        let root = self.root.take();
        let _ = std::panic::catch_unwind(AssertUnwindSafe(move || drop(root)));
    }

    fn report_non_determinism(&mut self, nd: NonDeterminism) {
        let mut d = FailureDetails::new(NON_DETERMINISM_ERROR, nd.to_string());
        d.non_retriable = true;
        self.non_determinism = Some(nd);
        self.fail(d);
    }

    fn apply(&mut self, e: &HistoryEvent) {
        if self.completion.is_some() {
            // Records of actions after the code finished must still match
            // what the code scheduled (e.g. changed code that now returns
            // early is non-deterministic).
            if self.non_determinism.is_none() && Task::scheduled_by(&e.kind).is_some() {
                self.match_scheduled(e);
            }
            self.carry_over(e);
            return;
        }
        // While suspended, inputs (the start, completions, timers, events)
        // are held until resume; records of our own actions and control
        // events are not.
        if self.suspended
            && matches!(
                e.kind,
                EventKind::ExecutionStarted { .. }
                    | EventKind::TaskCompleted { .. }
                    | EventKind::TaskFailed { .. }
                    | EventKind::SubOrchestrationInstanceCompleted { .. }
                    | EventKind::SubOrchestrationInstanceFailed { .. }
                    | EventKind::TimerFired { .. }
                    | EventKind::EventRaised { .. }
            )
        {
            self.held.push(e.clone());
            return;
        }
        let wake: Option<Waker> = match &e.kind {
            EventKind::OrchestratorStarted => {
                self.ctx.lock().now = e.timestamp;
                None
            }
            EventKind::ExecutionStarted {
                name,
                version,
                input,
                execution_id,
                ..
            } => {
                if self.started.is_some() {
                    return;
                }
                self.started = Some(e.clone());
                {
                    let mut s = self.ctx.lock();
                    s.name = name.clone();
                    s.version = version.clone();
                    s.execution_key = execution_id
                        .clone()
                        .unwrap_or_else(|| e.timestamp.to_rfc3339());
                    if s.now == chrono::DateTime::UNIX_EPOCH {
                        s.now = e.timestamp;
                    }
                }
                match self.registry.get_orchestrator(name, version.as_deref()) {
                    Ok(Some(f)) => self.start(f, input.clone()),
                    Err(versions) => {
                        let shown = |v: &Option<&str>| match v {
                            Some(v) => format!("\"{v}\""),
                            None => "no version".to_string(),
                        };
                        let known: Vec<String> = versions.iter().map(shown).collect();
                        let wanted = shown(&version.as_deref());
                        self.fail(FailureDetails::new(
                            "VersionNotRegistered",
                            format!(
                                "instance started with {wanted} of orchestrator \"{name}\", which this \
                                 worker does not have (registered versions: [{}]); register that \
                                 version beside the others until its instances finish",
                                known.join(", ")
                            ),
                        ));
                        return;
                    }
                    Ok(None) => {
                        let known = self.registry.orchestrator_names().join(", ");
                        self.fail(FailureDetails::new(
                            "OrchestratorNotRegistered",
                            format!(
                                "orchestrator \"{name}\" is not registered on this worker (registered: [{known}]); \
                                 add it to the worker's Registry or fix the name used to schedule it"
                            ),
                        ));
                        return;
                    }
                }
                None
            }
            EventKind::TaskScheduled { .. }
            | EventKind::TimerCreated { .. }
            | EventKind::SubOrchestrationInstanceCreated { .. }
            | EventKind::EventSent { .. } => {
                self.match_scheduled(e);
                return;
            }
            // Negative keys belong to external-event waits; a completion
            // carrying one (corrupt peer data) must not resolve them.
            EventKind::TaskCompleted {
                task_scheduled_id: id,
                result,
            }
            | EventKind::SubOrchestrationInstanceCompleted {
                task_scheduled_id: id,
                result,
            } if *id >= 0 => self.ctx.lock().resolve(*id as i64, Ok(result.clone())),
            EventKind::TaskFailed {
                task_scheduled_id: id,
                failure,
            }
            | EventKind::SubOrchestrationInstanceFailed {
                task_scheduled_id: id,
                failure,
            } if *id >= 0 => self.ctx.lock().resolve(*id as i64, Err(failure.clone())),
            // A timer the code dropped (cancelled) finds no wait and is
            // ignored: a backend that cannot delete it lets it fire.
            EventKind::TimerFired { timer_id, .. } if *timer_id >= 0 => {
                self.ctx.lock().timer_fired(*timer_id)
            }
            EventKind::EventRaised { name, input } => {
                self.ctx.lock().deliver_event(name, input.clone())
            }
            EventKind::ExecutionTerminated { input, .. } => {
                self.completion = Some(ActionKind::terminated(input.clone()));
                self.drop_root();
                return;
            }
            EventKind::ExecutionSuspended { .. } => {
                self.suspended = true;
                return;
            }
            EventKind::ExecutionResumed { .. } => {
                self.suspended = false;
                for held in std::mem::take(&mut self.held) {
                    self.apply(&held);
                }
                return;
            }
            _ => None,
        };
        if let Some(w) = wake {
            w.wake();
        }
        self.poll_root();
    }

    /// Matches a recorded scheduling event against the action the code
    /// created with the same sequence number.
    fn match_scheduled(&mut self, e: &HistoryEvent) {
        let action = self.ctx.lock().pending_actions.remove(&e.event_id);
        match action {
            Some(a) if same_action(&e.kind, &a) => {}
            other => self.report_non_determinism(NonDeterminism {
                sequence_id: e.event_id,
                history: Task::scheduled_by(&e.kind).map(|t| t.to_string()),
                code: other.map(|a| a.describe()),
            }),
        }
    }

    fn start(&mut self, f: OrchestratorFn, input: Option<String>) {
        let ctx = self.ctx.clone();
        match std::panic::catch_unwind(AssertUnwindSafe(|| f(ctx, input))) {
            Ok(fut) => {
                self.root = Some(fut);
                self.woken.0.store(true, Ordering::Release);
            }
            Err(p) => self.fail(panic_details(p)),
        }
    }

    fn poll_root(&mut self) {
        while self.woken.0.swap(false, Ordering::AcqRel) {
            let Some(root) = self.root.as_mut() else {
                return;
            };
            let mut cx = Context::from_waker(&self.waker);
            match std::panic::catch_unwind(AssertUnwindSafe(|| root.as_mut().poll(&mut cx))) {
                Ok(Poll::Pending) => {}
                Ok(Poll::Ready(result)) => {
                    self.drop_root();
                    let mut s = self.ctx.lock();
                    // Once `continue_as_new` was called, what the
                    // orchestrator returned is ignored: an `Ok`, the
                    // `ContinuedAsNew` placeholder, or any other error.
                    let completion = match (s.continue_as_new.take(), result) {
                        (Some((input, keep)), result) => {
                            if let Err(details) = &result {
                                if !is_continued_as_new(details) && !s.is_replaying {
                                    tracing::warn!(
                                        instance_id = %s.instance_id,
                                        orchestrator = %s.name,
                                        "the orchestrator returned an error after calling \
                                         continue_as_new; it continues as new and the error \
                                         is ignored: {details}"
                                    );
                                }
                            }
                            self.carry_events = keep;
                            let carryover = if keep {
                                s.take_unconsumed_events()
                            } else {
                                Vec::new()
                            };
                            let mut next = ActionKind::continued_as_new(input, carryover);
                            if let ActionKind::CompleteOrchestration { new_version, .. } = &mut next
                            {
                                *new_version = s.continue_version.take();
                            }
                            next
                        }
                        (_, Ok(output)) => ActionKind::completed(output),
                        (_, Err(details)) => ActionKind::failed(details),
                    };
                    drop(s);
                    self.completion = Some(completion);
                    return;
                }
                Err(p) => {
                    self.fail(panic_details(p));
                    return;
                }
            }
        }
    }
}

/// Whether a returned failure is the placeholder of `continue_as_new`
/// (through `OrchestrationError` it keeps its type; through `anyhow` or a
/// boxed error, its message).
fn is_continued_as_new(details: &FailureDetails) -> bool {
    details.error_type == CONTINUED_AS_NEW || details.message == ContinuedAsNew.to_string()
}

/// Runs one episode from scratch (no cache): the reference behaviour that
/// the sticky path must match.
pub fn replay_episode(
    registry: Arc<Registry>,
    instance_id: &str,
    past: &[HistoryEvent],
    new: &[HistoryEvent],
) -> OrchestratorResult {
    Execution::new(registry, instance_id).run_episode(past, new)
}
