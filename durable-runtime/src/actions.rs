//! What an orchestration episode asks the backend to do.
//!
//! The replay engine turns one episode of an orchestrator into a list of
//! [`OrchestratorAction`]s; a backend records them in the history (the pure
//! [`crate::backend::transition`] core does that for in-process backends) or
//! sends them to a sidecar.

use crate::history::{EventKind, FailureDetails, HistoryEvent, OrchestrationStatus, Timestamp};
use crate::trace::TraceContext;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// One action with its sequence number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrchestratorAction {
    /// Sequence number (call order within the orchestration).
    pub id: i32,
    /// What to do.
    pub kind: ActionKind,
    /// The trace context of the span this action starts (an activity or
    /// sub-orchestration call, an event sent): recorded on the event the
    /// action becomes, so the work it starts elsewhere continues the trace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<TraceContext>,
}

/// The kinds of action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[allow(missing_docs)] // fields mirror the protocol one to one
pub enum ActionKind {
    /// Run an activity. `tags` travel with the task to the activity (see
    /// [`crate::handler::task_tags`]).
    ScheduleTask {
        name: String,
        version: Option<String>,
        input: Option<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        tags: BTreeMap<String, String>,
    },
    /// Start a sub-orchestration.
    CreateSubOrchestration {
        instance_id: String,
        name: String,
        version: Option<String>,
        input: Option<String>,
    },
    /// Start a durable timer.
    CreateTimer { fire_at: Timestamp },
    /// Raise an event on another instance.
    SendEvent {
        instance_id: String,
        name: String,
        data: Option<String>,
    },
    /// Finish the orchestration (completed, failed, terminated or continued
    /// as new). For `ContinuedAsNew`, `result` is the new input and
    /// `carryover_events` are unprocessed external events to keep.
    CompleteOrchestration {
        status: OrchestrationStatus,
        result: Option<String>,
        failure: Option<FailureDetails>,
        new_version: Option<String>,
        carryover_events: Vec<HistoryEvent>,
    },
    /// Terminate another instance.
    TerminateOrchestration {
        instance_id: String,
        reason: Option<String>,
        recurse: bool,
    },
    /// The episode rewound a failed execution: its history is replaced by
    /// `new_history` (the failed one without its failure, see
    /// [`transition::rewind_of`](crate::backend::transition::rewind_of)),
    /// which the episode's other actions continue. First in its episode's
    /// actions when present; the protocol's `RewindOrchestrationAction`.
    RewindOrchestration { new_history: Vec<HistoryEvent> },
}

/// A durable task as messages name it: `activity "ship_item"`, `timer`,
/// `sub-orchestration "payment"`, `external event "approval"`, `send event
/// "done" to "order-7"`. The one place these descriptions are written, for
/// actions, their history records, task errors and limit messages alike
/// (an event's data is named by the event, not as a task).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Task<'a> {
    /// An activity, by name.
    Activity(&'a str),
    /// A sub-orchestration, by orchestrator name.
    SubOrchestration(&'a str),
    /// A durable timer.
    Timer,
    /// An event sent to another instance.
    SendEvent {
        /// Event name.
        name: &'a str,
        /// Target instance.
        instance_id: &'a str,
    },
    /// A wait for an external event, by event name.
    ExternalEvent(&'a str),
}

impl<'a> Task<'a> {
    /// The task a history event records the scheduling of (`TaskScheduled`,
    /// `TimerCreated`, `SubOrchestrationInstanceCreated`, `EventSent`).
    pub fn scheduled_by(kind: &'a EventKind) -> Option<Task<'a>> {
        Some(match kind {
            EventKind::TaskScheduled { name, .. } => Task::Activity(name),
            EventKind::TimerCreated { .. } => Task::Timer,
            EventKind::SubOrchestrationInstanceCreated { name, .. } => Task::SubOrchestration(name),
            EventKind::EventSent {
                name, instance_id, ..
            } => Task::SendEvent { name, instance_id },
            _ => return None,
        })
    }

    /// Whether a recorded task and a task the code schedules now are the
    /// same for replay: the same kind and name (an event's target may be
    /// computed differently, so it is not compared).
    pub fn replays_as(&self, other: &Task<'_>) -> bool {
        match (self, other) {
            (Task::Activity(a), Task::Activity(b))
            | (Task::SubOrchestration(a), Task::SubOrchestration(b))
            | (Task::ExternalEvent(a), Task::ExternalEvent(b)) => a == b,
            (Task::Timer, Task::Timer) => true,
            (Task::SendEvent { name: a, .. }, Task::SendEvent { name: b, .. }) => a == b,
            _ => false,
        }
    }
}

impl fmt::Display for Task<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Task::Activity(name) => write!(f, "activity \"{name}\""),
            Task::SubOrchestration(name) => write!(f, "sub-orchestration \"{name}\""),
            Task::Timer => f.write_str("timer"),
            Task::SendEvent { name, instance_id } => {
                write!(f, "send event \"{name}\" to \"{instance_id}\"")
            }
            Task::ExternalEvent(name) => write!(f, "external event \"{name}\""),
        }
    }
}

impl ActionKind {
    /// The task this action schedules; `None` for completing or
    /// terminating an orchestration.
    pub fn task(&self) -> Option<Task<'_>> {
        Some(match self {
            ActionKind::ScheduleTask { name, .. } => Task::Activity(name),
            ActionKind::CreateSubOrchestration { name, .. } => Task::SubOrchestration(name),
            ActionKind::CreateTimer { .. } => Task::Timer,
            ActionKind::SendEvent {
                name, instance_id, ..
            } => Task::SendEvent { name, instance_id },
            ActionKind::CompleteOrchestration { .. }
            | ActionKind::TerminateOrchestration { .. }
            | ActionKind::RewindOrchestration { .. } => return None,
        })
    }

    /// Short human description used in non-determinism reports, e.g.
    /// `activity "ship_item"`.
    pub fn describe(&self) -> String {
        match self {
            ActionKind::CompleteOrchestration { status, .. } => {
                format!("complete orchestration ({status})")
            }
            ActionKind::TerminateOrchestration { instance_id, .. } => {
                format!("terminate \"{instance_id}\"")
            }
            ActionKind::RewindOrchestration { .. } => "rewind orchestration".to_string(),
            other => other.task().map(|t| t.to_string()).unwrap_or_default(),
        }
    }

    /// Finish with an output.
    pub fn completed(output: Option<String>) -> Self {
        Self::finish(OrchestrationStatus::Completed, output, None)
    }

    /// Finish with a failure.
    pub fn failed(failure: FailureDetails) -> Self {
        Self::finish(OrchestrationStatus::Failed, None, Some(failure))
    }

    /// Finish as terminated, recording the termination's output.
    pub fn terminated(output: Option<String>) -> Self {
        Self::finish(OrchestrationStatus::Terminated, output, None)
    }

    /// Start over with a new input, carrying these external events over.
    pub fn continued_as_new(input: Option<String>, carryover_events: Vec<HistoryEvent>) -> Self {
        ActionKind::CompleteOrchestration {
            status: OrchestrationStatus::ContinuedAsNew,
            result: input,
            failure: None,
            new_version: None,
            carryover_events,
        }
    }

    fn finish(
        status: OrchestrationStatus,
        result: Option<String>,
        failure: Option<FailureDetails>,
    ) -> Self {
        ActionKind::CompleteOrchestration {
            status,
            result,
            failure,
            new_version: None,
            carryover_events: Vec::new(),
        }
    }

    /// Whether the action expects no result (sending an event, terminating
    /// another instance): such actions still go out when the episode that
    /// took them fails the orchestration.
    pub fn is_fire_and_forget(&self) -> bool {
        matches!(
            self,
            ActionKind::SendEvent { .. } | ActionKind::TerminateOrchestration { .. }
        )
    }

    /// Whether this action finishes the orchestration with `status`.
    pub fn completes_as(&self, status: OrchestrationStatus) -> bool {
        matches!(self, ActionKind::CompleteOrchestration { status: s, .. } if *s == status)
    }
}

/// Everything one episode produced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OrchestratorResult {
    /// New actions, in sequence order; at most one `CompleteOrchestration`, last.
    pub actions: Vec<OrchestratorAction>,
    /// Custom status set by the orchestrator (JSON), if any.
    pub custom_status: Option<String>,
    /// Timers (by sequence number) the orchestration dropped before they
    /// fired in this episode: the loser of a `.timeout(..)` or `when_any`,
    /// a timer future dropped unawaited. A backend deletes their pending
    /// `TimerFired`; one that cannot (the Durable Task protocol has no
    /// cancel action) lets it fire, and the engine ignores it.
    #[serde(default)]
    pub cancelled_timers: Vec<i32>,
}

impl OrchestratorResult {
    /// The completion action, if the episode finished the orchestration.
    pub fn completion(&self) -> Option<&ActionKind> {
        self.actions
            .iter()
            .map(|a| &a.kind)
            .find(|k| matches!(k, ActionKind::CompleteOrchestration { .. }))
    }
}
