//! The history model: one variant per Durable Task history event.
//!
//! An orchestration's history is the append-only log its replay is driven
//! from. Payloads are JSON text exactly as they travel on the wire, so the
//! gRPC mapping is one-to-one and histories written by other SDKs read the
//! same. The serde form of [`HistoryEvent`] is the documented export format
//! (see `docs/history-format.md`).

use crate::trace::TraceContext;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Point in time, always UTC.
pub type Timestamp = DateTime<Utc>;

/// One entry of an orchestration's history.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryEvent {
    /// For scheduling events (task, timer, sub-orchestration, event sent) the
    /// sequence number of the action that produced them; `-1` otherwise.
    pub event_id: i32,
    /// When the backend recorded the event.
    pub timestamp: Timestamp,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
    /// The trace context of the work this event starts elsewhere: on
    /// `ExecutionStarted` the span that created the execution, on
    /// `TaskScheduled` and `SubOrchestrationInstanceCreated` the
    /// orchestration's span for that call, on `EventSent` the span of the
    /// send. `None` on other events and in histories written before
    /// tracing (the field is then absent from the export format).
    /// (Boxed: most events have none, and every event is as large as
    /// its largest field set.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace: Option<Box<TraceContext>>,
}

impl HistoryEvent {
    /// An event that carries no sequence number (`event_id == -1`).
    pub fn new(timestamp: Timestamp, kind: EventKind) -> Self {
        HistoryEvent {
            event_id: -1,
            timestamp,
            kind,
            trace: None,
        }
    }

    /// An event carrying the sequence number of the action it records.
    pub fn with_id(event_id: i32, timestamp: Timestamp, kind: EventKind) -> Self {
        HistoryEvent {
            event_id,
            timestamp,
            kind,
            trace: None,
        }
    }

    /// The same event carrying trace context `trace`.
    pub fn with_trace(mut self, trace: Option<TraceContext>) -> Self {
        self.trace = trace.map(Box::new);
        self
    }
}

/// The parent of a sub-orchestration, as recorded in its `ExecutionStarted`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentInstance {
    /// The parent's instance id.
    pub instance_id: String,
    /// The parent's execution id, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub execution_id: Option<String>,
    /// The parent's orchestrator name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The sequence number of the `CreateSubOrchestration` action in the parent.
    pub task_scheduled_id: i32,
}

/// The kinds of history event. Field names follow the Durable Task protobuf
/// definitions (in snake case).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type")]
#[allow(missing_docs)] // fields mirror the protocol one to one; documented per variant
pub enum EventKind {
    /// The orchestration (this execution of it) started.
    ExecutionStarted {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        instance_id: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        execution_id: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        // Boxed: every event is as large as the largest kind.
        parent: Option<Box<ParentInstance>>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        scheduled_start: Option<Timestamp>,
        /// The instance's tags (see [`ScheduleOptions::tags`](crate::ScheduleOptions::tags)).
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        tags: BTreeMap<String, String>,
    },
    /// The orchestration reached a terminal state (or continued as new).
    ExecutionCompleted {
        status: OrchestrationStatus,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        failure: Option<FailureDetails>,
    },
    /// A terminate request reached the orchestration.
    ExecutionTerminated {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        #[serde(default)]
        recurse: bool,
    },
    /// An activity was scheduled (`event_id` is its sequence number).
    /// `tags` are the protocol's task tags; durable sets `durable.attempt`
    /// and `durable.first_task_id` on the retries of an activity call.
    TaskScheduled {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
        #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
        tags: BTreeMap<String, String>,
    },
    /// An activity returned.
    TaskCompleted {
        task_scheduled_id: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<String>,
    },
    /// An activity failed.
    TaskFailed {
        task_scheduled_id: i32,
        failure: FailureDetails,
    },
    /// A sub-orchestration was started (`event_id` is its sequence number).
    SubOrchestrationInstanceCreated {
        instance_id: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        version: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
    },
    /// A sub-orchestration completed.
    SubOrchestrationInstanceCompleted {
        task_scheduled_id: i32,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        result: Option<String>,
    },
    /// A sub-orchestration failed.
    SubOrchestrationInstanceFailed {
        task_scheduled_id: i32,
        failure: FailureDetails,
    },
    /// A durable timer was created (`event_id` is its sequence number).
    TimerCreated { fire_at: Timestamp },
    /// A durable timer fired.
    TimerFired { fire_at: Timestamp, timer_id: i32 },
    /// An episode began; its timestamp is the orchestration's "now".
    OrchestratorStarted,
    /// An episode ended.
    OrchestratorCompleted,
    /// The orchestration sent an event to another instance.
    EventSent {
        instance_id: String,
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
    },
    /// An external event arrived.
    EventRaised {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
    },
    /// The orchestration continued as new with this input.
    ContinueAsNew {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
    },
    /// The orchestration was suspended.
    ExecutionSuspended {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
    },
    /// The orchestration was resumed.
    ExecutionResumed {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        input: Option<String>,
    },
    /// A failed orchestration was rewound: it continues from where it
    /// failed (see `Client::rewind`). Delivered, it asks the engine to
    /// rewind; in a history, it marks where the rewind happened.
    ExecutionRewound {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        reason: Option<String>,
    },
}

impl EventKind {
    /// The protocol's name for this kind of event, e.g. `"TaskScheduled"`.
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::ExecutionStarted { .. } => "ExecutionStarted",
            EventKind::ExecutionCompleted { .. } => "ExecutionCompleted",
            EventKind::ExecutionTerminated { .. } => "ExecutionTerminated",
            EventKind::TaskScheduled { .. } => "TaskScheduled",
            EventKind::TaskCompleted { .. } => "TaskCompleted",
            EventKind::TaskFailed { .. } => "TaskFailed",
            EventKind::SubOrchestrationInstanceCreated { .. } => "SubOrchestrationInstanceCreated",
            EventKind::SubOrchestrationInstanceCompleted { .. } => {
                "SubOrchestrationInstanceCompleted"
            }
            EventKind::SubOrchestrationInstanceFailed { .. } => "SubOrchestrationInstanceFailed",
            EventKind::TimerCreated { .. } => "TimerCreated",
            EventKind::TimerFired { .. } => "TimerFired",
            EventKind::OrchestratorStarted => "OrchestratorStarted",
            EventKind::OrchestratorCompleted => "OrchestratorCompleted",
            EventKind::EventSent { .. } => "EventSent",
            EventKind::EventRaised { .. } => "EventRaised",
            EventKind::ContinueAsNew { .. } => "ContinueAsNew",
            EventKind::ExecutionSuspended { .. } => "ExecutionSuspended",
            EventKind::ExecutionResumed { .. } => "ExecutionResumed",
            EventKind::ExecutionRewound { .. } => "ExecutionRewound",
        }
    }
}

/// Runtime status of an orchestration instance. Numbering follows the
/// protocol's `OrchestrationStatus` enum.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
pub enum OrchestrationStatus {
    /// Started and not finished.
    Running,
    /// Finished successfully.
    Completed,
    /// Restarted with new input (transient; the new execution is `Running`).
    ContinuedAsNew,
    /// Finished with an error.
    Failed,
    /// Canceled (reserved by the protocol; durable does not produce it).
    Canceled,
    /// Stopped by a terminate request.
    Terminated,
    /// Created and not yet started (e.g. scheduled for later).
    Pending,
    /// Suspended; events are held until it is resumed.
    Suspended,
}

impl OrchestrationStatus {
    /// Completed, failed, terminated or canceled: nothing more will happen.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            OrchestrationStatus::Completed
                | OrchestrationStatus::Failed
                | OrchestrationStatus::Terminated
                | OrchestrationStatus::Canceled
        )
    }

    /// Every status, in protocol order.
    pub const ALL: [OrchestrationStatus; 8] = [
        OrchestrationStatus::Running,
        OrchestrationStatus::Completed,
        OrchestrationStatus::ContinuedAsNew,
        OrchestrationStatus::Failed,
        OrchestrationStatus::Canceled,
        OrchestrationStatus::Terminated,
        OrchestrationStatus::Pending,
        OrchestrationStatus::Suspended,
    ];

    /// The protocol's numeric value.
    pub fn as_i32(self) -> i32 {
        match self {
            OrchestrationStatus::Running => 0,
            OrchestrationStatus::Completed => 1,
            OrchestrationStatus::ContinuedAsNew => 2,
            OrchestrationStatus::Failed => 3,
            OrchestrationStatus::Canceled => 4,
            OrchestrationStatus::Terminated => 5,
            OrchestrationStatus::Pending => 6,
            OrchestrationStatus::Suspended => 7,
        }
    }

    /// From the protocol's numeric value.
    pub fn from_i32(v: i32) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_i32() == v)
    }
}

impl fmt::Display for OrchestrationStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// Why a task or orchestration failed, as the protocol carries it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailureDetails {
    /// Type of the error, e.g. `"ValueError"` or a Rust type path.
    pub error_type: String,
    /// Human-readable message.
    pub message: String,
    /// Extra details (a stack trace or anything the failing code attached).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack_trace: Option<String>,
    /// The failure that caused this one, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub inner: Option<Box<FailureDetails>>,
    /// When true, retry policies do not retry this failure.
    #[serde(default)]
    pub non_retriable: bool,
}

impl FailureDetails {
    /// A failure with a type and a message.
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        FailureDetails {
            error_type: error_type.into(),
            message: message.into(),
            stack_trace: None,
            inner: None,
            non_retriable: false,
        }
    }
}

impl FailureDetails {
    /// The same failure, marked non-retriable if `yes`.
    pub fn non_retriable_if(mut self, yes: bool) -> Self {
        self.non_retriable |= yes;
        self
    }

    /// The same failure with `inner` as its cause (the chain is then
    /// [`bounded`](Self::bounded)).
    pub fn with_inner(mut self, inner: FailureDetails) -> Self {
        self.inner = Some(Box::new(inner));
        self.bounded()
    }

    /// The same failure within bounds, so a failure that travels up many
    /// levels of sub-orchestrations (each wrapping its child's) stays
    /// storable and readable: at most [`MAX_FAILURE_DEPTH`] causes are kept,
    /// the outermost ones and the innermost (the root cause), and the last
    /// outer one kept says how many were dropped between; each message and
    /// stack trace is cut to [`MAX_FAILURE_TEXT`] bytes, note included.
    /// Bounding a bounded failure changes nothing, and bounding again after
    /// wrapping adds up the dropped causes.
    ///
    /// ```
    /// use durable_runtime::history::{FailureDetails, MAX_FAILURE_DEPTH};
    /// let mut f = FailureDetails::new("E", "root cause");
    /// for level in 1..100 {
    ///     f = FailureDetails::new("E", format!("level {level}")).with_inner(f);
    /// }
    /// let kept: Vec<&str> = f.chain().map(|c| c.message.as_str()).collect();
    /// assert_eq!(kept.len(), MAX_FAILURE_DEPTH);
    /// assert_eq!(kept[0], "level 99");
    /// assert_eq!(kept[MAX_FAILURE_DEPTH - 2], "level 91 (90 causes omitted)");
    /// assert_eq!(kept[MAX_FAILURE_DEPTH - 1], "root cause");
    /// ```
    pub fn bounded(self) -> Self {
        // Unlink the chain, outermost first.
        let mut levels = Vec::new();
        let mut next = Some(self);
        while let Some(mut f) = next {
            next = f.inner.take().map(|b| *b);
            truncate_text(&mut f.message);
            if let Some(trace) = f.stack_trace.as_mut() {
                truncate_text(trace);
            }
            levels.push(f);
        }
        if levels.len() > MAX_FAILURE_DEPTH {
            let root = levels.pop().expect("a long chain has a root");
            let dropped: Vec<FailureDetails> = levels.drain(MAX_FAILURE_DEPTH - 1..).collect();
            let omitted: usize = dropped
                .iter()
                .map(|d| 1 + omitted_count(&d.message).0)
                .sum();
            let last = levels.last_mut().expect("MAX_FAILURE_DEPTH is at least 2");
            let (before, base) = omitted_count(&last.message);
            last.message = format!("{base} ({} causes omitted)", before + omitted);
            truncate_text(&mut last.message);
            levels.push(root);
        }
        let mut chain: Option<FailureDetails> = None;
        while let Some(mut f) = levels.pop() {
            f.inner = chain.map(Box::new);
            chain = Some(f);
        }
        chain.expect("a failure has at least itself")
    }

    /// This failure, then its causes, outermost first.
    pub fn chain(&self) -> impl Iterator<Item = &FailureDetails> {
        std::iter::successors(Some(self), |f| f.inner.as_deref())
    }
}

/// How many causes a failure keeps (itself included); see
/// [`FailureDetails::bounded`].
pub const MAX_FAILURE_DEPTH: usize = 10;

/// The longest message or stack trace a failure keeps, in bytes; see
/// [`FailureDetails::bounded`].
pub const MAX_FAILURE_TEXT: usize = 8 * 1024;

/// The count in a trailing " (N causes omitted)" note, and the text before it.
fn omitted_count(message: &str) -> (usize, &str) {
    message
        .strip_suffix(" causes omitted)")
        .and_then(|m| {
            let open = m.rfind(" (")?;
            let n = m[open + 2..].parse().ok()?;
            Some((n, &m[..open]))
        })
        .unwrap_or((0, message))
}

/// Cuts `text` so that it, with the note saying so, fits in
/// [`MAX_FAILURE_TEXT`] bytes; text that fits is left as it is.
fn truncate_text(text: &mut String) {
    if text.len() <= MAX_FAILURE_TEXT {
        return;
    }
    // Room for the note ("... (N more bytes cut)", N under 20 digits).
    let mut cut = MAX_FAILURE_TEXT - 40;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    let dropped = text.len() - cut;
    text.truncate(cut);
    text.push_str(&format!("... ({dropped} more bytes cut)"));
}

impl fmt::Display for FailureDetails {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.error_type, self.message)
    }
}

/// A sub-orchestration an instance started, as its history records it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubOrchestration {
    /// The sub-orchestration's instance id.
    pub instance_id: String,
    /// Whether the history also records its end (completed or failed).
    pub finished: bool,
}

/// The sub-orchestrations `events` record the start of, in the order they
/// were started, each with whether it has finished: a
/// `SubOrchestrationInstanceCompleted` or `SubOrchestrationInstanceFailed`
/// answers the `SubOrchestrationInstanceCreated` whose `event_id` is its
/// `task_scheduled_id`.
pub fn sub_orchestrations(events: &[HistoryEvent]) -> Vec<SubOrchestration> {
    let finished: std::collections::HashSet<i32> = events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::SubOrchestrationInstanceCompleted {
                task_scheduled_id, ..
            }
            | EventKind::SubOrchestrationInstanceFailed {
                task_scheduled_id, ..
            } => Some(*task_scheduled_id),
            _ => None,
        })
        .collect();
    events
        .iter()
        .filter_map(|e| match &e.kind {
            EventKind::SubOrchestrationInstanceCreated { instance_id, .. } => {
                Some(SubOrchestration {
                    instance_id: instance_id.clone(),
                    finished: finished.contains(&e.event_id),
                })
            }
            _ => None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> Timestamp {
        DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
    }

    /// The export format is documented in docs/history-format.md; this pins it.
    #[test]
    fn export_format_is_stable() {
        let events = vec![
            HistoryEvent::with_id(
                0,
                t(),
                EventKind::TaskScheduled {
                    name: "ship_item".into(),
                    version: None,
                    input: Some("\"book\"".into()),
                    tags: Default::default(),
                },
            ),
            HistoryEvent::new(
                t(),
                EventKind::TaskFailed {
                    task_scheduled_id: 0,
                    failure: FailureDetails::new("Boom", "no stock"),
                },
            ),
            HistoryEvent::new(t(), EventKind::OrchestratorCompleted),
            HistoryEvent::with_id(
                2,
                t(),
                EventKind::TaskScheduled {
                    name: "ship_item".into(),
                    version: None,
                    input: Some("\"book\"".into()),
                    tags: [
                        ("durable.attempt".to_string(), "2".to_string()),
                        ("durable.first_task_id".to_string(), "0".to_string()),
                    ]
                    .into(),
                },
            ),
        ];
        let json = serde_json::to_string(&events).unwrap();
        assert_eq!(
            json,
            concat!(
                r#"[{"event_id":0,"timestamp":"2030-01-01T00:00:00Z","type":"TaskScheduled","name":"ship_item","input":"\"book\""},"#,
                r#"{"event_id":-1,"timestamp":"2030-01-01T00:00:00Z","type":"TaskFailed","task_scheduled_id":0,"#,
                r#""failure":{"error_type":"Boom","message":"no stock","non_retriable":false}},"#,
                r#"{"event_id":-1,"timestamp":"2030-01-01T00:00:00Z","type":"OrchestratorCompleted"},"#,
                r#"{"event_id":2,"timestamp":"2030-01-01T00:00:00Z","type":"TaskScheduled","name":"ship_item","input":"\"book\"","#,
                r#""tags":{"durable.attempt":"2","durable.first_task_id":"0"}}]"#
            )
        );
        let back: Vec<HistoryEvent> = serde_json::from_str(&json).unwrap();
        assert_eq!(back, events);
    }

    #[test]
    fn status_numbers_follow_the_protocol() {
        for s in OrchestrationStatus::ALL {
            assert_eq!(OrchestrationStatus::from_i32(s.as_i32()), Some(s));
        }
        assert_eq!(OrchestrationStatus::Suspended.as_i32(), 7);
        assert!(OrchestrationStatus::Terminated.is_terminal());
        assert!(!OrchestrationStatus::Suspended.is_terminal());
    }

    #[test]
    fn sub_orchestrations_are_listed_with_whether_they_finished() {
        let created = |seq: i32, id: &str| {
            HistoryEvent::with_id(
                seq,
                t(),
                EventKind::SubOrchestrationInstanceCreated {
                    instance_id: id.into(),
                    name: "child".into(),
                    version: None,
                    input: None,
                },
            )
        };
        let events = vec![
            created(0, "done"),
            created(1, "running"),
            created(2, "failed"),
            HistoryEvent::new(
                t(),
                EventKind::SubOrchestrationInstanceCompleted {
                    task_scheduled_id: 0,
                    result: None,
                },
            ),
            HistoryEvent::new(
                t(),
                EventKind::SubOrchestrationInstanceFailed {
                    task_scheduled_id: 2,
                    failure: FailureDetails::new("Boom", "no"),
                },
            ),
            // An activity's completion with the same number is not a child's.
            HistoryEvent::new(
                t(),
                EventKind::TaskCompleted {
                    task_scheduled_id: 1,
                    result: None,
                },
            ),
        ];
        let child = |id: &str, finished: bool| SubOrchestration {
            instance_id: id.into(),
            finished,
        };
        assert_eq!(
            sub_orchestrations(&events),
            [
                child("done", true),
                child("running", false),
                child("failed", true)
            ]
        );
        assert_eq!(sub_orchestrations(&[]), []);
    }

    #[test]
    fn failures_are_bounded_in_depth_and_size() {
        // Multi-byte text cut at a character boundary, with a note.
        let long = "é".repeat(MAX_FAILURE_TEXT);
        let f = FailureDetails {
            stack_trace: Some(long.clone()),
            ..FailureDetails::new("E", long)
        }
        .bounded();
        assert!(f.message.len() < MAX_FAILURE_TEXT + 64);
        assert!(
            f.message.ends_with("more bytes cut)"),
            "{}",
            &f.message[f.message.len() - 40..]
        );
        assert!(f.stack_trace.unwrap().ends_with("more bytes cut)"));
        // Cutting is idempotent: bounding again (as each wrap does) keeps it.
        let once = FailureDetails::new("E", "x".repeat(50_000)).bounded();
        assert!(once.message.len() <= MAX_FAILURE_TEXT);
        assert_eq!(once.clone().bounded(), once);
        assert!(
            once.message.ends_with("(41848 more bytes cut)"),
            "{}",
            &once.message[8100..]
        );
        // A deep chain keeps the outermost causes and the root cause, and
        // says how many it dropped, added up over repeated wrapping.
        let mut f = FailureDetails::new("E", "0");
        for i in 1..=30 {
            f = FailureDetails {
                inner: Some(Box::new(f)),
                ..FailureDetails::new("E", i.to_string())
            };
        }
        let f = f.bounded();
        let kept: Vec<&str> = f.chain().map(|c| c.message.as_str()).collect();
        assert_eq!(kept.len(), MAX_FAILURE_DEPTH);
        assert_eq!(kept[0], "30");
        assert_eq!(
            kept[MAX_FAILURE_DEPTH - 2],
            format!(
                "{} ({} causes omitted)",
                32 - MAX_FAILURE_DEPTH,
                31 - MAX_FAILURE_DEPTH
            )
        );
        assert_eq!(kept[MAX_FAILURE_DEPTH - 1], "0");
        assert_eq!(f.clone().bounded(), f, "bounding is idempotent");
        let wrapped = FailureDetails::new("E", "31").with_inner(f);
        let kept: Vec<&str> = wrapped.chain().map(|c| c.message.as_str()).collect();
        assert_eq!(
            kept[MAX_FAILURE_DEPTH - 2],
            format!(
                "{} ({} causes omitted)",
                33 - MAX_FAILURE_DEPTH,
                32 - MAX_FAILURE_DEPTH
            )
        );
        // Within bounds, nothing changes.
        let small = FailureDetails::new("E", "x").with_inner(FailureDetails::new("F", "y"));
        assert_eq!(small.clone().bounded(), small);
    }
}
