//! What an orchestration episode asks the backend to do.
//!
//! The replay engine turns one episode of an orchestrator into a list of
//! [`OrchestratorAction`]s; a backend records them in the history (the pure
//! [`crate::backend::transition`] core does that for in-process backends) or
//! sends them to a sidecar.

use crate::history::{FailureDetails, HistoryEvent, OrchestrationStatus, Timestamp};
use serde::{Deserialize, Serialize};

/// One action with its sequence number.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OrchestratorAction {
    /// Sequence number (call order within the orchestration).
    pub id: i32,
    /// What to do.
    pub kind: ActionKind,
}

/// The kinds of action.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[allow(missing_docs)] // fields mirror the protocol one to one
pub enum ActionKind {
    /// Run an activity.
    ScheduleTask {
        name: String,
        version: Option<String>,
        input: Option<String>,
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
}

impl ActionKind {
    /// Short human description used in non-determinism reports, e.g.
    /// `activity "ship_item"`.
    pub fn describe(&self) -> String {
        match self {
            ActionKind::ScheduleTask { name, .. } => format!("activity \"{name}\""),
            ActionKind::CreateSubOrchestration { name, .. } => {
                format!("sub-orchestration \"{name}\"")
            }
            ActionKind::CreateTimer { .. } => "timer".to_string(),
            ActionKind::SendEvent {
                name, instance_id, ..
            } => {
                format!("send event \"{name}\" to \"{instance_id}\"")
            }
            ActionKind::CompleteOrchestration { status, .. } => {
                format!("complete orchestration ({status})")
            }
            ActionKind::TerminateOrchestration { instance_id, .. } => {
                format!("terminate \"{instance_id}\"")
            }
        }
    }
}

/// Everything one episode produced.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct OrchestratorResult {
    /// New actions, in sequence order; at most one `CompleteOrchestration`, last.
    pub actions: Vec<OrchestratorAction>,
    /// Custom status set by the orchestrator (JSON), if any.
    pub custom_status: Option<String>,
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
