//! The pure core shared by the in-process backends.
//!
//! Given an instance's metadata, its history, the events delivered in an
//! episode and the episode's result, [`apply_episode`] computes the new
//! metadata, the events to append and everything to send elsewhere:
//! activity work, timers, messages to other instances, sub-orchestrations to
//! create. Backends only persist and queue what it returns, so the memory
//! and SQLite backends cannot disagree about what an episode means.

mod episode;

pub use episode::apply_episode;

use super::{
    ActivityWorkItem, BackendError, CreateInstanceRequest, IdReusePolicy, InstanceMetadata,
};
use crate::actions::Task;
use crate::failure::TaskOutcome;
use crate::history::{
    sub_orchestrations, EventKind, FailureDetails, HistoryEvent, OrchestrationStatus,
    ParentInstance, Timestamp,
};
use serde::{Deserialize, Serialize};

/// Size limits enforced by the backends.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Maximum events in one execution's history; an episode that would grow
    /// past it fails the orchestration instead.
    pub max_history_events: usize,
    /// Maximum size in bytes of one payload (input, output, event data).
    pub max_payload_bytes: usize,
}

impl Default for Limits {
    /// 100,000 history events; 4 MiB payloads (the usual gRPC message limit).
    fn default() -> Self {
        Limits {
            max_history_events: 100_000,
            max_payload_bytes: 4 * 1024 * 1024,
        }
    }
}

impl Limits {
    /// Checks a payload against the limit.
    pub fn check_payload(
        &self,
        what: impl FnOnce() -> String,
        payload: Option<&str>,
    ) -> Result<(), BackendError> {
        match payload {
            Some(p) if p.len() > self.max_payload_bytes => Err(BackendError::PayloadTooLarge {
                what: what(),
                size: p.len(),
                limit: self.max_payload_bytes,
            }),
            _ => Ok(()),
        }
    }
}

/// An event to deliver to an instance's inbox, possibly later.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceMessage {
    /// Target instance.
    pub instance_id: String,
    /// Only deliver to this execution (`None`: whichever is current).
    pub execution_id: Option<String>,
    /// The event.
    pub event: HistoryEvent,
    /// Deliver no earlier than this (timers, delayed starts).
    pub visible_at: Option<Timestamp>,
}

/// A sub-orchestration to create.
#[derive(Clone, Debug, PartialEq)]
pub struct NewInstance {
    /// The creation request (default reuse policy).
    pub request: CreateInstanceRequest,
    /// The parent, to notify if creation fails; `None` for an entity
    /// created by the first message sent to it (a taken id then means the
    /// entity exists, which is fine).
    pub parent: Option<ParentInstance>,
}

impl NewInstance {
    /// What the parent is told when the sub-orchestration could not be
    /// created (its id is taken, its input is too large, ...); `None` when
    /// there is no parent to tell.
    pub fn creation_failed(&self, error: &BackendError, now: Timestamp) -> Option<InstanceMessage> {
        Some(notify_parent(
            self.parent.as_ref()?,
            Err(FailureDetails::new(
                "SubOrchestrationCreationFailed",
                error.to_string(),
            )),
            now,
        ))
    }
}

/// What a finished sub-orchestration tells its parent.
fn notify_parent(p: &ParentInstance, result: TaskOutcome, now: Timestamp) -> InstanceMessage {
    let kind = match result {
        Ok(result) => EventKind::SubOrchestrationInstanceCompleted {
            task_scheduled_id: p.task_scheduled_id,
            result,
        },
        Err(failure) => EventKind::SubOrchestrationInstanceFailed {
            task_scheduled_id: p.task_scheduled_id,
            failure,
        },
    };
    InstanceMessage {
        instance_id: p.instance_id.clone(),
        execution_id: p.execution_id.clone(),
        event: HistoryEvent::new(now, kind),
        visible_at: None,
    }
}

/// The failure a parent sees when its sub-orchestration was terminated.
fn terminated_notice(instance_id: &str) -> FailureDetails {
    FailureDetails::new(
        "SubOrchestrationTerminated",
        format!("sub-orchestration \"{instance_id}\" was terminated"),
    )
}

/// Everything an episode sends elsewhere.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Outbox {
    /// Activities to enqueue.
    pub activities: Vec<ActivityWorkItem>,
    /// Events for instances (this one included: timers), possibly delayed.
    pub messages: Vec<InstanceMessage>,
    /// Sub-orchestrations to create.
    pub new_instances: Vec<NewInstance>,
}

/// How the history changes.
#[derive(Clone, Debug, PartialEq)]
pub enum HistoryUpdate {
    /// Append these events.
    Append(Vec<HistoryEvent>),
    /// The execution continued as new: drop the old history; `inbox_front`
    /// events start the new execution.
    Restart {
        /// Events to put first in the instance's inbox.
        inbox_front: Vec<HistoryEvent>,
    },
    /// The execution was rewound: its whole history is now these events
    /// (same execution; the inbox is kept as it is).
    Replace(Vec<HistoryEvent>),
}

/// The result of applying an episode.
#[derive(Clone, Debug, PartialEq)]
pub struct EpisodeOutcome {
    /// The instance's new metadata.
    pub metadata: InstanceMetadata,
    /// The history change.
    pub history: HistoryUpdate,
    /// What to send elsewhere.
    pub outbox: Outbox,
    /// The pending timers of the execution that ran the episode that the
    /// backend deletes, in the same transaction.
    pub dropped_timers: DroppedTimers,
}

/// Which pending timers of an execution a backend deletes after an
/// episode: `TimerFired` messages queued for later and those already
/// waiting in the instance's inbox, addressed to the execution that ran
/// the episode (its id before the episode: a continue-as-new changes it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DroppedTimers {
    /// The timers the orchestration cancelled (by timer id), usually none.
    Cancelled(Vec<i32>),
    /// Every timer: the execution ended or continued as new, so nothing
    /// would ever wait for them.
    All,
}

impl Default for DroppedTimers {
    fn default() -> Self {
        DroppedTimers::Cancelled(Vec::new())
    }
}

impl DroppedTimers {
    /// Whether nothing is dropped.
    pub fn is_empty(&self) -> bool {
        matches!(self, DroppedTimers::Cancelled(ids) if ids.is_empty())
    }

    /// Whether `event` (of a message addressed to the execution) is a
    /// dropped timer's `TimerFired`.
    pub fn covers(&self, event: &HistoryEvent) -> bool {
        match (&event.kind, self) {
            (EventKind::TimerFired { .. }, DroppedTimers::All) => true,
            (EventKind::TimerFired { timer_id, .. }, DroppedTimers::Cancelled(ids)) => {
                ids.contains(timer_id)
            }
            _ => false,
        }
    }
}

/// Finds the `ExecutionStarted` event of an execution.
pub fn execution_started(history: &[HistoryEvent]) -> Option<&HistoryEvent> {
    history
        .iter()
        .find(|e| matches!(e.kind, EventKind::ExecutionStarted { .. }))
}

fn parent_of(history: &[HistoryEvent], new_events: &[HistoryEvent]) -> Option<ParentInstance> {
    execution_started(history)
        .or_else(|| execution_started(new_events))
        .and_then(|e| match &e.kind {
            EventKind::ExecutionStarted { parent, .. } => parent.as_deref().cloned(),
            _ => None,
        })
}

/// Instance ids of sub-orchestrations started and not finished.
pub fn running_children(events: &[HistoryEvent]) -> Vec<String> {
    sub_orchestrations(events)
        .into_iter()
        .filter(|c| !c.finished)
        .map(|c| c.instance_id)
        .collect()
}

/// Every sub-orchestration instance id an execution ever started.
pub fn all_children(events: &[HistoryEvent]) -> Vec<String> {
    sub_orchestrations(events)
        .into_iter()
        .map(|c| c.instance_id)
        .collect()
}

/// A new execution id.
pub fn new_execution_id() -> String {
    uuid::Uuid::new_v4().simple().to_string()
}

/// Metadata and the `ExecutionStarted` message for a new instance.
pub fn create_instance(
    request: &CreateInstanceRequest,
    parent: Option<ParentInstance>,
    now: Timestamp,
    limits: &Limits,
) -> Result<(InstanceMetadata, InstanceMessage), BackendError> {
    request.validate()?;
    limits.check_payload(
        || format!("the input of orchestration \"{}\"", request.instance_id),
        request.input.as_deref(),
    )?;
    let execution_id = new_execution_id();
    let scheduled_start = request.scheduled_start.filter(|t| *t > now);
    let meta = InstanceMetadata {
        instance_id: request.instance_id.clone(),
        execution_id: execution_id.clone(),
        name: request.name.clone(),
        version: request.version.clone(),
        status: OrchestrationStatus::Pending,
        input: request.input.clone(),
        output: None,
        custom_status: None,
        failure: None,
        created_at: now,
        last_updated_at: now,
        completed_at: None,
        scheduled_start,
        parent_instance_id: parent.as_ref().map(|p| p.instance_id.clone()),
        tags: request.tags.clone(),
    };
    let started = HistoryEvent::new(
        now,
        EventKind::ExecutionStarted {
            name: request.name.clone(),
            version: request.version.clone(),
            input: request.input.clone(),
            instance_id: request.instance_id.clone(),
            execution_id: Some(execution_id.clone()),
            parent: parent.map(Box::new),
            scheduled_start,
            tags: request.tags.clone(),
        },
    )
    .with_trace(request.trace.clone());
    Ok((
        meta,
        InstanceMessage {
            instance_id: request.instance_id.clone(),
            execution_id: Some(execution_id),
            event: started,
            visible_at: scheduled_start,
        },
    ))
}

/// What to do with an existing instance when one with the same id is created.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reuse {
    /// No instance has the id: create.
    Create,
    /// Replace the existing (finished) instance: purge it, then create.
    Replace,
    /// Terminate the live instance, telling its parent (see
    /// [`terminated_for_replacement`]), then replace it.
    TerminateAndReplace,
}

/// What a live instance that is terminated to be replaced by a new one
/// with the same id sends: if it is a sub-orchestration, its parent learns
/// that it was terminated. `history` and `inbox` are the old instance's (a
/// pending instance's start is still in its inbox).
pub fn terminated_for_replacement(
    instance_id: &str,
    history: &[HistoryEvent],
    inbox: &[HistoryEvent],
    now: Timestamp,
) -> Option<InstanceMessage> {
    let parent = parent_of(history, inbox)?;
    let mut notice = terminated_notice(instance_id);
    notice
        .message
        .push_str(": a new instance with the same id replaced it");
    Some(notify_parent(&parent, Err(notice), now))
}

/// Applies an id reuse policy.
pub fn check_reuse(
    existing: Option<&InstanceMetadata>,
    policy: &IdReusePolicy,
) -> Result<Reuse, BackendError> {
    match existing {
        None => Ok(Reuse::Create),
        Some(m) if policy.replaceable.contains(&m.status) => Ok(if m.status.is_terminal() {
            Reuse::Replace
        } else {
            Reuse::TerminateAndReplace
        }),
        Some(m) => Err(BackendError::AlreadyExists {
            id: m.instance_id.clone(),
            status: m.status,
        }),
    }
}

/// The event a finished activity delivers to its orchestration. A result over
/// the payload limit becomes a failure saying so.
pub fn activity_completion(
    task_id: i32,
    outcome: TaskOutcome,
    name: &str,
    now: Timestamp,
    limits: &Limits,
) -> HistoryEvent {
    let kind = match outcome {
        Ok(result) => {
            match limits.check_payload(
                || format!("the result of {}", Task::Activity(name)),
                result.as_deref(),
            ) {
                Ok(()) => EventKind::TaskCompleted {
                    task_scheduled_id: task_id,
                    result,
                },
                Err(e) => EventKind::TaskFailed {
                    task_scheduled_id: task_id,
                    failure: FailureDetails {
                        non_retriable: true,
                        ..FailureDetails::new("PayloadTooLarge", e.to_string())
                    },
                },
            }
        }
        Err(failure) => EventKind::TaskFailed {
            task_scheduled_id: task_id,
            failure: failure.bounded(),
        },
    };
    HistoryEvent::new(now, kind)
}

/// The events delivered with a new episode: `OrchestratorStarted` then the inbox.
pub fn episode_events(
    inbox: impl IntoIterator<Item = HistoryEvent>,
    now: Timestamp,
) -> Vec<HistoryEvent> {
    let mut v = vec![HistoryEvent::new(now, EventKind::OrchestratorStarted)];
    v.extend(inbox);
    v
}

/// A client's request that reaches an instance as an event.
#[derive(Clone, Debug, PartialEq)]
pub enum ControlRequest {
    /// Raise an external event.
    RaiseEvent {
        /// Event name.
        name: String,
        /// Payload (JSON).
        input: Option<String>,
    },
    /// Terminate (and its sub-orchestrations if `recursive`).
    Terminate {
        /// Output to record (JSON).
        output: Option<String>,
        /// Also terminate running sub-orchestrations.
        recursive: bool,
    },
    /// Suspend: hold events until resumed.
    Suspend {
        /// Why (JSON).
        reason: Option<String>,
    },
    /// Resume a suspended instance.
    Resume {
        /// Why (JSON).
        reason: Option<String>,
    },
    /// Rewind a failed instance: it runs again from where it failed.
    Rewind {
        /// Why (text).
        reason: Option<String>,
    },
}

impl ControlRequest {
    /// Checks payload limits before anything is stored.
    pub fn check(&self, limits: &Limits) -> Result<(), BackendError> {
        match self {
            ControlRequest::RaiseEvent { name, input } => {
                limits.check_payload(|| format!("the data of event \"{name}\""), input.as_deref())
            }
            ControlRequest::Terminate { output, .. } => {
                limits.check_payload(|| "the termination output".to_string(), output.as_deref())
            }
            ControlRequest::Suspend { reason }
            | ControlRequest::Resume { reason }
            | ControlRequest::Rewind { reason } => {
                limits.check_payload(|| "the reason".to_string(), reason.as_deref())
            }
        }
    }

    /// Decides what the request does to an instance in status `current`:
    /// `Ok(None)` when it is already in effect (terminating a finished
    /// instance, suspending a suspended one, resuming a running one), else
    /// the event to queue and the status to set at once.
    pub fn decide(
        self,
        instance_id: &str,
        current: OrchestrationStatus,
    ) -> Result<Option<(EventKind, Option<OrchestrationStatus>)>, BackendError> {
        let operation = match &self {
            ControlRequest::RaiseEvent { .. } => "raise an event on",
            ControlRequest::Terminate { .. } => "terminate",
            ControlRequest::Suspend { .. } => "suspend",
            ControlRequest::Resume { .. } => "resume",
            ControlRequest::Rewind { .. } => "rewind",
        };
        if matches!(self, ControlRequest::Rewind { .. }) {
            // Only a failed instance has a failure to go back before.
            if current != OrchestrationStatus::Failed {
                return Err(BackendError::InvalidState {
                    id: instance_id.to_string(),
                    operation,
                    status: current,
                });
            }
        } else if current.is_terminal() {
            return match self {
                ControlRequest::Terminate { .. } => Ok(None),
                _ => Err(BackendError::InvalidState {
                    id: instance_id.to_string(),
                    operation,
                    status: current,
                }),
            };
        }
        Ok(match self {
            ControlRequest::RaiseEvent { name, input } => {
                Some((EventKind::EventRaised { name, input }, None))
            }
            ControlRequest::Terminate { output, recursive } => Some((
                EventKind::ExecutionTerminated {
                    input: output,
                    recurse: recursive,
                },
                None,
            )),
            ControlRequest::Suspend { .. } if current == OrchestrationStatus::Suspended => None,
            ControlRequest::Suspend { reason } => Some((
                EventKind::ExecutionSuspended { input: reason },
                Some(OrchestrationStatus::Suspended),
            )),
            ControlRequest::Resume { .. } if current != OrchestrationStatus::Suspended => None,
            ControlRequest::Resume { reason } => Some((
                EventKind::ExecutionResumed { input: reason },
                Some(OrchestrationStatus::Running),
            )),
            // Running again from the moment the rewind is queued.
            ControlRequest::Rewind { reason } => Some((
                EventKind::ExecutionRewound { reason },
                Some(OrchestrationStatus::Running),
            )),
        })
    }
}

/// The history a rewound execution continues from, if this episode is a
/// rewind: an `ExecutionRewound` delivered to an execution that failed.
/// (Delivered to one that did not fail, as a sidecar that rewinds the
/// history itself sends it, the event only marks the rewind.)
///
/// The rewound history is the failed one without what ended it: the failed
/// `ExecutionCompleted`; each *final* failure (a `TaskFailed` or
/// `SubOrchestrationInstanceFailed` after which nothing more was
/// scheduled: the failure the code did not get past) with, for a task, its
/// `TaskScheduled`; and the `TaskScheduled` of tasks and `TimerCreated` of
/// timers that had no result yet. The code schedules those again when it
/// replays; everything else stays and is not redone. A failure the code
/// handled and went on from (a caught error, a retried attempt) stays, so
/// the replay takes the same path. A sub-orchestration whose final failure
/// is dropped keeps its `SubOrchestrationInstanceCreated`: it is rewound
/// with its parent ([`rewind_children`]), and its result comes to the same
/// execution.
///
/// ```
/// use durable_runtime::backend::transition::rewind_of;
/// use durable_runtime::history::{EventKind, FailureDetails, HistoryEvent, OrchestrationStatus};
///
/// let t = chrono::Utc::now();
/// let ev = |id, kind| HistoryEvent::with_id(id, t, kind);
/// let scheduled = |name: &str| EventKind::TaskScheduled {
///     name: name.into(), version: None, input: None, tags: Default::default(),
/// };
/// let failure = FailureDetails::new("Boom", "the card was declined");
/// let failed = vec![
///     ev(-1, EventKind::OrchestratorStarted),
///     ev(0, scheduled("reserve")),
///     ev(1, scheduled("charge")),
///     ev(-1, EventKind::TaskCompleted { task_scheduled_id: 0, result: None }),
///     ev(-1, EventKind::TaskFailed { task_scheduled_id: 1, failure: failure.clone() }),
///     ev(-1, EventKind::ExecutionCompleted {
///         status: OrchestrationStatus::Failed, result: None, failure: Some(failure),
///     }),
/// ];
/// let rewind = vec![ev(-1, EventKind::ExecutionRewound { reason: None })];
/// let rewound = rewind_of(&failed, &rewind).expect("a rewind");
/// let kinds: Vec<_> = rewound.iter().map(|e| e.kind.type_name()).collect();
/// assert_eq!(kinds, ["OrchestratorStarted", "TaskScheduled", "TaskCompleted"]);
/// assert!(rewind_of(&rewound, &rewind).is_none(), "only a failed execution is rewound");
/// ```
pub fn rewind_of(past: &[HistoryEvent], new_events: &[HistoryEvent]) -> Option<Vec<HistoryEvent>> {
    let asked = new_events
        .iter()
        .any(|e| matches!(e.kind, EventKind::ExecutionRewound { .. }));
    let failed = past.iter().any(|e| {
        matches!(
            e.kind,
            EventKind::ExecutionCompleted {
                status: OrchestrationStatus::Failed,
                ..
            }
        )
    });
    if !asked || !failed {
        return None;
    }
    let plan = RewindPlan::of(past);
    Some(
        past.iter()
            .enumerate()
            .filter(|(i, e)| plan.keeps(*i, e))
            .map(|(_, e)| e.clone())
            .collect(),
    )
}

/// Which events of a failed history a rewind keeps (see [`rewind_of`]).
struct RewindPlan {
    /// Index of the last scheduling event: a failure after it is final.
    last_scheduling: Option<usize>,
    /// Tasks, timers and sub-orchestrations with a result that stays.
    resolved: std::collections::HashSet<i32>,
}

impl RewindPlan {
    fn of(history: &[HistoryEvent]) -> Self {
        let last_scheduling = history
            .iter()
            .rposition(|e| crate::actions::Task::scheduled_by(&e.kind).is_some());
        let is_final = |i: usize| last_scheduling.is_none_or(|l| i > l);
        let mut resolved = std::collections::HashSet::new();
        for (i, e) in history.iter().enumerate() {
            match e.kind {
                EventKind::TaskCompleted {
                    task_scheduled_id: id,
                    ..
                }
                | EventKind::SubOrchestrationInstanceCompleted {
                    task_scheduled_id: id,
                    ..
                }
                | EventKind::TimerFired { timer_id: id, .. } => {
                    resolved.insert(id);
                }
                EventKind::TaskFailed {
                    task_scheduled_id: id,
                    ..
                }
                | EventKind::SubOrchestrationInstanceFailed {
                    task_scheduled_id: id,
                    ..
                } if !is_final(i) => {
                    // Handled: the code went on from it.
                    resolved.insert(id);
                }
                _ => {}
            }
        }
        RewindPlan {
            last_scheduling,
            resolved,
        }
    }

    fn is_final(&self, i: usize) -> bool {
        self.last_scheduling.is_none_or(|l| i > l)
    }

    fn keeps(&self, i: usize, e: &HistoryEvent) -> bool {
        match &e.kind {
            EventKind::ExecutionCompleted { .. } => false,
            EventKind::TaskFailed { .. } | EventKind::SubOrchestrationInstanceFailed { .. } => {
                !self.is_final(i)
            }
            // Run again: failed at the end, or no result yet.
            EventKind::TaskScheduled { .. } | EventKind::TimerCreated { .. } => {
                self.resolved.contains(&e.event_id)
            }
            // Kept: the child is rewound, or its result is delivered.
            _ => true,
        }
    }
}

/// The sub-orchestrations a rewind of `history`'s instance must look at,
/// with the sequence number of each in the parent: those whose final
/// failure the rewind drops (see [`rewind_of`]) and those the parent has
/// no result of (still running, or finished after the parent failed). A
/// backend applies [`child_on_rewind`] to each.
pub fn rewind_children(history: &[HistoryEvent]) -> Vec<(String, i32)> {
    let plan = RewindPlan::of(history);
    history
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::SubOrchestrationInstanceCreated { instance_id, .. }
                if !plan.resolved.contains(&e.event_id) =>
            {
                Some((instance_id.clone(), e.event_id))
            }
            _ => None,
        })
        .collect()
}

/// What rewinding a parent does to one of its [`rewind_children`].
#[derive(Clone, Debug, PartialEq)]
pub enum ChildOnRewind {
    /// The child failed: rewind it too.
    Rewind,
    /// The child finished after its parent failed, so its result never
    /// reached the parent: deliver it now.
    Deliver(Box<InstanceMessage>),
}

/// What a rewind of `parent` (its metadata after the rewind) does to its
/// child `child` (metadata with payloads), started as sequence number
/// `task_id`: `None` if the child is still live (its result comes by
/// itself) or is not the parent's (an id reused since).
pub fn child_on_rewind(
    parent: &InstanceMetadata,
    task_id: i32,
    child: &InstanceMetadata,
    now: Timestamp,
) -> Option<ChildOnRewind> {
    if child.parent_instance_id.as_deref() != Some(parent.instance_id.as_str()) {
        return None;
    }
    let to_parent = ParentInstance {
        instance_id: parent.instance_id.clone(),
        execution_id: Some(parent.execution_id.clone()),
        name: Some(parent.name.clone()),
        task_scheduled_id: task_id,
    };
    match child.status {
        OrchestrationStatus::Failed => Some(ChildOnRewind::Rewind),
        OrchestrationStatus::Completed => Some(ChildOnRewind::Deliver(Box::new(notify_parent(
            &to_parent,
            Ok(child.output.clone()),
            now,
        )))),
        OrchestrationStatus::Terminated => Some(ChildOnRewind::Deliver(Box::new(notify_parent(
            &to_parent,
            Err(terminated_notice(&child.instance_id)),
            now,
        )))),
        _ => None,
    }
}

/// Whether an event still in the inbox when an execution continues as new
/// applies to the new execution: external and control events do; results of
/// the old execution's tasks and timers do not (their sequence numbers would
/// match the new execution's tasks).
pub fn survives_restart(e: &HistoryEvent) -> bool {
    !matches!(
        e.kind,
        EventKind::TaskCompleted { .. }
            | EventKind::TaskFailed { .. }
            | EventKind::TimerFired { .. }
            | EventKind::SubOrchestrationInstanceCompleted { .. }
            | EventKind::SubOrchestrationInstanceFailed { .. }
    )
}

/// Whether an instance has something an episode can act on: it has started
/// (a history, or its `ExecutionStarted` is queued), or it is being
/// terminated. Events raised before a delayed start wait for the start.
pub fn runnable(history_is_empty: bool, inbox: &[HistoryEvent]) -> bool {
    !inbox.is_empty()
        && (!history_is_empty
            || inbox.iter().any(|e| {
                matches!(
                    e.kind,
                    EventKind::ExecutionStarted { .. } | EventKind::ExecutionTerminated { .. }
                )
            }))
}

/// Whether an event in an inbox may be delivered to an instance in this state.
/// Events for finished instances are dropped by the caller.
pub fn accepts_message(meta: &InstanceMetadata, msg: &InstanceMessage) -> bool {
    !meta.status.is_terminal()
        && msg
            .execution_id
            .as_deref()
            .is_none_or(|e| e == meta.execution_id)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::actions::{ActionKind, OrchestratorResult};
    use OrchestrationStatus::*;

    fn decide(
        r: ControlRequest,
        s: OrchestrationStatus,
    ) -> Result<Option<OrchestrationStatus>, String> {
        r.decide("i", s)
            .map(|d| d.map(|(_, st)| st.unwrap_or(s)))
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_rewound_history_keeps_what_succeeded_and_drops_what_failed_or_was_pending() {
        use crate::history::FailureDetails;
        let t = chrono::Utc::now();
        let ev = |id, kind| HistoryEvent::with_id(id, t, kind);
        let task = |name: &str| EventKind::TaskScheduled {
            name: name.into(),
            version: None,
            input: None,
            tags: Default::default(),
        };
        let boom = FailureDetails::new("Boom", "failed");
        let failed = vec![
            ev(-1, EventKind::OrchestratorStarted),
            ev(0, task("ok")),
            ev(1, task("fails")),
            ev(2, task("pending")),
            ev(3, EventKind::TimerCreated { fire_at: t }),
            ev(4, EventKind::TimerCreated { fire_at: t }),
            ev(
                5,
                EventKind::SubOrchestrationInstanceCreated {
                    instance_id: "child".into(),
                    name: "c".into(),
                    version: None,
                    input: None,
                },
            ),
            ev(
                6,
                EventKind::EventSent {
                    instance_id: "other".into(),
                    name: "e".into(),
                    input: None,
                },
            ),
            ev(-1, EventKind::OrchestratorCompleted),
            ev(-1, EventKind::OrchestratorStarted),
            ev(
                -1,
                EventKind::TaskCompleted {
                    task_scheduled_id: 0,
                    result: None,
                },
            ),
            ev(
                -1,
                EventKind::TimerFired {
                    fire_at: t,
                    timer_id: 3,
                },
            ),
            ev(
                -1,
                EventKind::TaskFailed {
                    task_scheduled_id: 1,
                    failure: boom.clone(),
                },
            ),
            ev(
                -1,
                EventKind::SubOrchestrationInstanceFailed {
                    task_scheduled_id: 5,
                    failure: boom.clone(),
                },
            ),
            ev(
                -1,
                EventKind::EventRaised {
                    name: "x".into(),
                    input: None,
                },
            ),
            ev(-1, EventKind::OrchestratorCompleted),
            ev(
                -1,
                EventKind::ExecutionCompleted {
                    status: Failed,
                    result: None,
                    failure: Some(boom),
                },
            ),
        ];
        let rewind = [ev(-1, EventKind::ExecutionRewound { reason: None })];
        let rewound = rewind_of(&failed, &rewind).expect("a failed execution rewinds");
        let kept: Vec<(i32, &str)> = rewound
            .iter()
            .map(|e| (e.event_id, e.kind.type_name()))
            .collect();
        assert_eq!(
            kept,
            [
                (-1, "OrchestratorStarted"),
                (0, "TaskScheduled"),
                (3, "TimerCreated"),
                (5, "SubOrchestrationInstanceCreated"),
                (6, "EventSent"),
                (-1, "OrchestratorCompleted"),
                (-1, "OrchestratorStarted"),
                (-1, "TaskCompleted"),
                (-1, "TimerFired"),
                (-1, "EventRaised"),
                (-1, "OrchestratorCompleted"),
            ],
            "kept: what succeeded, fired, was sent or arrived, and the failed child's creation"
        );
        assert_eq!(rewind_children(&failed), [("child".to_string(), 5)]);
        // A failure followed by more scheduling was handled: it stays, and
        // so does its task; the failure after the last scheduling goes.
        let mut handled = failed.clone();
        handled.insert(13, ev(7, EventKind::TimerCreated { fire_at: t }));
        let rewound = rewind_of(&handled, &rewind).unwrap();
        let has = |kind: &str, id: i32| {
            rewound
                .iter()
                .any(|e| e.kind.type_name() == kind && e.event_id == id)
        };
        assert!(has("TaskScheduled", 1), "the handled failure's task stays");
        assert!(
            rewound.iter().any(|e| e.kind.type_name() == "TaskFailed"),
            "the handled failure stays"
        );
        assert!(!has("TimerCreated", 7), "the unfired timer goes");
        assert!(
            !rewound
                .iter()
                .any(|e| e.kind.type_name() == "SubOrchestrationInstanceFailed"),
            "the final failure goes"
        );
        // Not a rewind: nothing asked, or nothing failed.
        assert!(rewind_of(&failed, &[]).is_none());
        assert!(rewind_of(&rewound, &rewind).is_none());
    }

    #[test]
    fn control_requests_by_status() {
        let raise = || ControlRequest::RaiseEvent {
            name: "e".into(),
            input: None,
        };
        let terminate = || ControlRequest::Terminate {
            output: None,
            recursive: false,
        };
        let suspend = || ControlRequest::Suspend { reason: None };
        let resume = || ControlRequest::Resume { reason: None };
        // Live instances take every request.
        for s in [Pending, Running] {
            assert_eq!(decide(raise(), s), Ok(Some(s)));
            assert_eq!(decide(terminate(), s), Ok(Some(s)));
            assert_eq!(decide(suspend(), s), Ok(Some(Suspended)));
            assert_eq!(
                decide(resume(), s),
                Ok(None),
                "resuming a {s} instance does nothing"
            );
        }
        // Only a failed instance rewinds; it is running again at once.
        let rewind = || ControlRequest::Rewind { reason: None };
        assert_eq!(decide(rewind(), Failed), Ok(Some(Running)));
        for s in [Pending, Running, Suspended, Completed, Terminated] {
            let e = decide(rewind(), s).unwrap_err();
            assert!(e.contains("cannot rewind"), "{e}");
        }
        assert_eq!(decide(suspend(), Suspended), Ok(None));
        assert_eq!(decide(resume(), Suspended), Ok(Some(Running)));
        // Finished instances: terminate is a no-op, the rest are refused.
        for s in [Completed, Failed, Terminated] {
            assert_eq!(decide(terminate(), s), Ok(None));
            for r in [raise(), suspend(), resume()] {
                let e = decide(r, s).unwrap_err();
                assert!(e.contains(&s.to_string()), "{e}");
            }
        }
    }

    #[test]
    fn a_child_that_cannot_succeed_is_not_retried_by_its_parent() {
        let t = chrono::Utc::now();
        let request = child_request("child", "c");
        let parent = ParentInstance {
            instance_id: "parent".into(),
            execution_id: None,
            name: None,
            task_scheduled_id: 3,
        };
        let (meta, start) = create_instance(&request, Some(parent), t, &Limits::default()).unwrap();
        let mut nd = FailureDetails::new("NonDeterminismError", "changed code");
        nd.non_retriable = true;
        let result = OrchestratorResult {
            actions: vec![crate::actions::OrchestratorAction {
                id: 0,
                kind: ActionKind::failed(nd),
                trace: None,
            }],
            custom_status: None,
            cancelled_timers: Vec::new(),
        };
        let new_events = episode_events([start.event], t);
        let out = apply_episode(&meta, &[], &new_events, &result, t, &Limits::default());
        let to_parent = &out.outbox.messages[0];
        assert_eq!(to_parent.instance_id, "parent");
        match &to_parent.event.kind {
            EventKind::SubOrchestrationInstanceFailed {
                task_scheduled_id: 3,
                failure,
            } => {
                assert!(failure.non_retriable);
                assert!(
                    failure.message.contains("changed code"),
                    "{}",
                    failure.message
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn oversized_control_payloads_are_refused() {
        let limits = Limits {
            max_payload_bytes: 4,
            ..Limits::default()
        };
        let r = ControlRequest::RaiseEvent {
            name: "e".into(),
            input: Some("\"12345\"".into()),
        };
        let e = r.check(&limits).unwrap_err().to_string();
        assert!(
            e.contains("event \"e\"") && e.contains("limit of 4 bytes"),
            "{e}"
        );
    }

    #[test]
    fn only_task_results_are_dropped_on_restart() {
        let t = chrono::Utc::now();
        let ev = |k| HistoryEvent::new(t, k);
        assert!(survives_restart(&ev(EventKind::EventRaised {
            name: "x".into(),
            input: None
        })));
        assert!(survives_restart(&ev(EventKind::ExecutionTerminated {
            input: None,
            recurse: false
        })));
        assert!(!survives_restart(&ev(EventKind::TaskCompleted {
            task_scheduled_id: 0,
            result: None
        })));
        assert!(!survives_restart(&ev(EventKind::TimerFired {
            fire_at: t,
            timer_id: 1
        })));
    }

    #[test]
    fn events_before_a_delayed_start_wait_for_it() {
        let t = chrono::Utc::now();
        let raised = HistoryEvent::new(
            t,
            EventKind::EventRaised {
                name: "x".into(),
                input: None,
            },
        );
        let term = HistoryEvent::new(
            t,
            EventKind::ExecutionTerminated {
                input: None,
                recurse: false,
            },
        );
        assert!(!runnable(true, &[]));
        assert!(!runnable(true, std::slice::from_ref(&raised)));
        assert!(
            runnable(false, std::slice::from_ref(&raised)),
            "a started instance runs"
        );
        assert!(runnable(true, &[raised, term]), "terminate needs no start");
    }

    fn child_request(instance_id: &str, name: &str) -> CreateInstanceRequest {
        CreateInstanceRequest {
            instance_id: instance_id.into(),
            name: name.into(),
            version: None,
            input: None,
            scheduled_start: None,
            reuse_policy: IdReusePolicy::default(),
            trace: None,
            tags: Default::default(),
        }
    }

    #[test]
    fn replacing_a_live_child_tells_its_parent() {
        let t = chrono::DateTime::UNIX_EPOCH;
        let request = child_request("kid", "child");
        let parent = ParentInstance {
            instance_id: "parent".into(),
            execution_id: Some("e1".into()),
            name: None,
            task_scheduled_id: 4,
        };
        let (_, start) = create_instance(&request, Some(parent), t, &Limits::default()).unwrap();
        // Still pending: the start is in the inbox. Running: in the history.
        for (history, inbox) in [
            (vec![], vec![start.event.clone()]),
            (vec![start.event.clone()], vec![]),
        ] {
            let notice =
                terminated_for_replacement("kid", &history, &inbox, t).expect("the parent is told");
            assert_eq!(notice.instance_id, "parent");
            assert_eq!(notice.execution_id.as_deref(), Some("e1"));
            match notice.event.kind {
                EventKind::SubOrchestrationInstanceFailed {
                    task_scheduled_id,
                    failure,
                } => {
                    assert_eq!(task_scheduled_id, 4);
                    assert_eq!(failure.error_type, "SubOrchestrationTerminated");
                    assert!(failure.message.contains("\"kid\" was terminated"));
                    assert!(failure.message.contains("replaced"));
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        // A top-level instance has no one to tell.
        let (_, top) = create_instance(&request, None, t, &Limits::default()).unwrap();
        assert!(terminated_for_replacement("kid", &[top.event], &[], t).is_none());
        // The decision itself: live instances are terminated, finished ones purged.
        let (mut meta, _) = create_instance(&request, None, t, &Limits::default()).unwrap();
        meta.status = Running;
        assert_eq!(
            check_reuse(Some(&meta), &IdReusePolicy::always()).unwrap(),
            Reuse::TerminateAndReplace
        );
        meta.status = Completed;
        assert_eq!(
            check_reuse(Some(&meta), &IdReusePolicy::always()).unwrap(),
            Reuse::Replace
        );
    }

    #[test]
    fn a_non_deterministic_episode_keeps_the_stored_custom_status() {
        let t = chrono::DateTime::UNIX_EPOCH;
        let (mut meta, start) =
            create_instance(&child_request("nd", "o"), None, t, &Limits::default()).unwrap();
        meta.custom_status = Some("\"before\"".into());
        let new_events = episode_events([start.event], t);
        let ending = |failure: FailureDetails| OrchestratorResult {
            actions: vec![crate::actions::OrchestratorAction {
                id: 0,
                kind: ActionKind::failed(failure),
                trace: None,
            }],
            custom_status: Some("\"diverged\"".into()),
            cancelled_timers: Vec::new(),
        };
        let nd = FailureDetails::new(crate::failure::NON_DETERMINISM_ERROR, "changed code");
        let out = apply_episode(&meta, &[], &new_events, &ending(nd), t, &Limits::default());
        assert_eq!(out.metadata.status, Failed);
        assert_eq!(out.metadata.custom_status.as_deref(), Some("\"before\""));
        // The code's own failure keeps what the episode set.
        let own = FailureDetails::new("OrchestrationError", "nope");
        let out = apply_episode(&meta, &[], &new_events, &ending(own), t, &Limits::default());
        assert_eq!(out.metadata.custom_status.as_deref(), Some("\"diverged\""));
    }
}
