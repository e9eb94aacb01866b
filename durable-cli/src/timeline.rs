//! A history as a timeline: each activity, timer, sub-orchestration and
//! event as one entry with its start, end and outcome. Pure: it reads the
//! events and nothing else.

use durable_runtime::chrono::TimeDelta;
use durable_runtime::history::{EventKind, FailureDetails, HistoryEvent, OrchestrationStatus};
use std::collections::HashMap;

type Timestamp = durable_runtime::chrono::DateTime<durable_runtime::chrono::Utc>;

/// What an entry of the timeline is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EntryKind {
    /// The execution started (`ExecutionStarted`).
    Started,
    /// An activity call (`TaskScheduled` and its completion).
    Activity,
    /// A durable timer (`TimerCreated` and `TimerFired`).
    Timer,
    /// A sub-orchestration (created, and its completion).
    SubOrchestration,
    /// An external event arrived (`EventRaised`).
    EventRaised,
    /// The orchestration sent an event (`EventSent`).
    EventSent,
    /// The execution was suspended.
    Suspended,
    /// The execution was resumed.
    Resumed,
    /// The failed execution was rewound (`ExecutionRewound`).
    Rewound,
    /// A terminate request arrived.
    TerminateRequested,
    /// The execution continued as new.
    ContinuedAsNew,
    /// The execution ended (`ExecutionCompleted`).
    Ended,
}

impl EntryKind {
    /// How the kind reads in the timeline.
    pub fn label(self) -> &'static str {
        match self {
            EntryKind::Started => "started",
            EntryKind::Activity => "activity",
            EntryKind::Timer => "timer",
            EntryKind::SubOrchestration => "sub-orchestration",
            EntryKind::EventRaised => "event raised",
            EntryKind::EventSent => "event sent",
            EntryKind::Suspended => "suspended",
            EntryKind::Resumed => "resumed",
            EntryKind::Rewound => "rewound",
            EntryKind::TerminateRequested => "terminate",
            EntryKind::ContinuedAsNew => "continued as new",
            EntryKind::Ended => "ended",
        }
    }
}

/// How an entry turned out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Still waiting for its completion.
    Pending,
    /// The execution ended without it finishing (a task not awaited, a
    /// timer cancelled or never reached).
    Unfinished,
    /// Finished with this payload (JSON text), if any.
    Value(Option<String>),
    /// Failed.
    Failed(FailureDetails),
    /// A timer fired.
    Fired,
    /// The execution ended with this status and output.
    Status(OrchestrationStatus, Option<String>),
}

/// One entry of the timeline.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Entry {
    /// The sequence number of a scheduling action (activity, timer,
    /// sub-orchestration, event sent).
    pub seq: Option<i32>,
    /// What it is.
    pub kind: EntryKind,
    /// Its name: the activity, event, orchestrator (with instance id), or
    /// a timer's fire time.
    pub name: String,
    /// When it began (the scheduling event's timestamp).
    pub start: Timestamp,
    /// When it ended; `None` while pending. Equal to `start` for events
    /// that are a single moment.
    pub end: Option<Timestamp>,
    /// How it turned out.
    pub outcome: Outcome,
}

impl Entry {
    /// `end - start`, for entries that span time; never negative (a
    /// timer's `TimerFired` carries its fire time, which can be a moment
    /// before its `TimerCreated` was recorded).
    pub fn duration(&self) -> Option<TimeDelta> {
        match self.kind {
            EntryKind::Activity | EntryKind::Timer | EntryKind::SubOrchestration => self
                .end
                .map(|end| (end - self.start).max(TimeDelta::zero())),
            _ => None,
        }
    }
}

/// The timeline of a history, in the order things began.
///
/// ```
/// use durable_cli::timeline::{timeline, EntryKind, Outcome};
/// use durable_runtime::history::{EventKind, HistoryEvent};
/// let t = durable_runtime::chrono::DateTime::UNIX_EPOCH;
/// let events = vec![
///     HistoryEvent::with_id(0, t, EventKind::TaskScheduled {
///         name: "ship".into(), version: None, input: None, tags: Default::default() }),
///     HistoryEvent::new(t, EventKind::TaskCompleted { task_scheduled_id: 0, result: Some("1".into()) }),
/// ];
/// let entries = timeline(&events);
/// assert_eq!(entries[0].kind, EntryKind::Activity);
/// assert_eq!(entries[0].outcome, Outcome::Value(Some("1".into())));
/// ```
pub fn timeline(events: &[HistoryEvent]) -> Vec<Entry> {
    let mut t = Builder::default();
    for e in events {
        let at = e.timestamp;
        match &e.kind {
            EventKind::ExecutionStarted {
                name,
                version,
                input,
                ..
            } => {
                let name = match version {
                    Some(v) => format!("{name} (version {v})"),
                    None => name.clone(),
                };
                t.entries.push(moment(
                    EntryKind::Started,
                    name,
                    at,
                    Outcome::Value(input.clone()),
                ));
            }
            EventKind::TaskScheduled { name, .. } => t.begin(e, EntryKind::Activity, name.clone()),
            EventKind::TaskCompleted {
                task_scheduled_id,
                result,
            } => t.close(
                EntryKind::Activity,
                *task_scheduled_id,
                at,
                Outcome::Value(result.clone()),
            ),
            EventKind::TaskFailed {
                task_scheduled_id,
                failure,
            } => t.close(
                EntryKind::Activity,
                *task_scheduled_id,
                at,
                Outcome::Failed(failure.clone()),
            ),
            EventKind::TimerCreated { fire_at } => t.begin(
                e,
                EntryKind::Timer,
                format!("fires at {}", crate::format::timestamp(*fire_at)),
            ),
            EventKind::TimerFired { timer_id, .. } => {
                t.close(EntryKind::Timer, *timer_id, at, Outcome::Fired)
            }
            EventKind::SubOrchestrationInstanceCreated {
                instance_id, name, ..
            } => t.begin(
                e,
                EntryKind::SubOrchestration,
                format!("{name} ({instance_id})"),
            ),
            EventKind::SubOrchestrationInstanceCompleted {
                task_scheduled_id,
                result,
            } => t.close(
                EntryKind::SubOrchestration,
                *task_scheduled_id,
                at,
                Outcome::Value(result.clone()),
            ),
            EventKind::SubOrchestrationInstanceFailed {
                task_scheduled_id,
                failure,
            } => t.close(
                EntryKind::SubOrchestration,
                *task_scheduled_id,
                at,
                Outcome::Failed(failure.clone()),
            ),
            EventKind::EventRaised { name, input } => t.entries.push(moment(
                EntryKind::EventRaised,
                name.clone(),
                at,
                Outcome::Value(input.clone()),
            )),
            EventKind::EventSent {
                instance_id,
                name,
                input,
            } => {
                let mut entry = moment(
                    EntryKind::EventSent,
                    format!("{name} -> {instance_id}"),
                    at,
                    Outcome::Value(input.clone()),
                );
                entry.seq = Some(e.event_id);
                t.entries.push(entry);
            }
            EventKind::ExecutionSuspended { input } => t.entries.push(moment(
                EntryKind::Suspended,
                String::new(),
                at,
                Outcome::Value(input.clone()),
            )),
            EventKind::ExecutionResumed { input } => t.entries.push(moment(
                EntryKind::Resumed,
                String::new(),
                at,
                Outcome::Value(input.clone()),
            )),
            EventKind::ExecutionRewound { reason } => t.entries.push(moment(
                EntryKind::Rewound,
                reason.clone().unwrap_or_default(),
                at,
                Outcome::Value(None),
            )),
            EventKind::ExecutionTerminated { input, recurse } => t.entries.push(moment(
                EntryKind::TerminateRequested,
                if *recurse {
                    "recursive".into()
                } else {
                    String::new()
                },
                at,
                Outcome::Value(input.clone()),
            )),
            EventKind::ContinueAsNew { input } => t.entries.push(moment(
                EntryKind::ContinuedAsNew,
                String::new(),
                at,
                Outcome::Value(input.clone()),
            )),
            EventKind::ExecutionCompleted {
                status,
                result,
                failure,
            } => {
                let outcome = match failure {
                    Some(f) => Outcome::Failed(f.clone()),
                    None => Outcome::Status(*status, result.clone()),
                };
                t.entries
                    .push(moment(EntryKind::Ended, status.to_string(), at, outcome));
            }
            EventKind::OrchestratorStarted | EventKind::OrchestratorCompleted => {}
        }
    }
    // Whatever is still open when the execution has ended never finished.
    if t.entries.iter().any(|e| e.kind == EntryKind::Ended) {
        for i in t.open.into_values() {
            t.entries[i].outcome = Outcome::Unfinished;
        }
    }
    t.entries
}

/// Entries so far, and the ones waiting for their completion by kind and
/// sequence number.
#[derive(Default)]
struct Builder {
    entries: Vec<Entry>,
    open: HashMap<(EntryKind, i32), usize>,
}

impl Builder {
    fn begin(&mut self, e: &HistoryEvent, kind: EntryKind, name: String) {
        self.open.insert((kind, e.event_id), self.entries.len());
        self.entries.push(Entry {
            seq: Some(e.event_id),
            kind,
            name,
            start: e.timestamp,
            end: None,
            outcome: Outcome::Pending,
        });
    }

    fn close(&mut self, kind: EntryKind, seq: i32, at: Timestamp, outcome: Outcome) {
        if let Some(i) = self.open.remove(&(kind, seq)) {
            self.entries[i].end = Some(at);
            self.entries[i].outcome = outcome;
        }
    }
}

/// An entry that is a single moment.
fn moment(kind: EntryKind, name: String, at: Timestamp, outcome: Outcome) -> Entry {
    Entry {
        seq: None,
        kind,
        name,
        start: at,
        end: Some(at),
        outcome,
    }
}

/// How many episodes (`OrchestratorStarted` events) the history holds.
pub fn episodes(events: &[HistoryEvent]) -> usize {
    events
        .iter()
        .filter(|e| matches!(e.kind, EventKind::OrchestratorStarted))
        .count()
}

#[cfg(test)]
mod tests {
    use super::*;
    use durable_runtime::chrono::{DateTime, Duration};

    fn t(ms: i64) -> Timestamp {
        DateTime::UNIX_EPOCH + Duration::milliseconds(ms)
    }

    fn sample() -> Vec<HistoryEvent> {
        vec![
            HistoryEvent::new(t(0), EventKind::OrchestratorStarted),
            HistoryEvent::new(
                t(0),
                EventKind::ExecutionStarted {
                    name: "checkout".into(),
                    version: Some("2".into()),
                    input: Some("{\"n\":1}".into()),
                    instance_id: "c-1".into(),
                    execution_id: None,
                    parent: None,
                    scheduled_start: None,
                    tags: Default::default(),
                },
            ),
            HistoryEvent::with_id(
                0,
                t(1),
                EventKind::TaskScheduled {
                    name: "charge".into(),
                    version: None,
                    input: None,
                    tags: Default::default(),
                },
            ),
            HistoryEvent::with_id(1, t(1), EventKind::TimerCreated { fire_at: t(5000) }),
            HistoryEvent::with_id(
                2,
                t(1),
                EventKind::SubOrchestrationInstanceCreated {
                    instance_id: "c-1:0002".into(),
                    name: "ship".into(),
                    version: None,
                    input: None,
                },
            ),
            HistoryEvent::new(t(2), EventKind::OrchestratorCompleted),
            HistoryEvent::new(t(40), EventKind::OrchestratorStarted),
            HistoryEvent::new(
                t(40),
                EventKind::TaskFailed {
                    task_scheduled_id: 0,
                    failure: FailureDetails::new("Declined", "card expired"),
                },
            ),
            HistoryEvent::new(
                t(41),
                EventKind::EventRaised {
                    name: "approve".into(),
                    input: Some("true".into()),
                },
            ),
            HistoryEvent::new(
                t(90),
                EventKind::SubOrchestrationInstanceCompleted {
                    task_scheduled_id: 2,
                    result: Some("\"shipped\"".into()),
                },
            ),
        ]
    }

    #[test]
    fn entries_pair_schedules_with_completions() {
        let entries = timeline(&sample());
        let kinds: Vec<EntryKind> = entries.iter().map(|e| e.kind).collect();
        assert_eq!(
            kinds,
            [
                EntryKind::Started,
                EntryKind::Activity,
                EntryKind::Timer,
                EntryKind::SubOrchestration,
                EntryKind::EventRaised
            ]
        );
        assert_eq!(entries[0].name, "checkout (version 2)");
        let charge = &entries[1];
        assert_eq!(charge.seq, Some(0));
        assert_eq!(charge.duration(), Some(Duration::milliseconds(39)));
        assert_eq!(
            charge.outcome,
            Outcome::Failed(FailureDetails::new("Declined", "card expired"))
        );
        assert_eq!(entries[2].outcome, Outcome::Pending);
        assert_eq!(entries[2].end, None);
        assert_eq!(entries[3].name, "ship (c-1:0002)");
        assert_eq!(
            entries[3].outcome,
            Outcome::Value(Some("\"shipped\"".into()))
        );
        assert_eq!(entries[4].duration(), None, "an event is a moment");
        assert_eq!(episodes(&sample()), 2);
    }

    #[test]
    fn what_is_open_when_the_execution_ends_never_finished() {
        let mut events = sample();
        events.push(HistoryEvent::new(
            t(100),
            EventKind::ExecutionCompleted {
                status: OrchestrationStatus::Completed,
                result: Some("7".into()),
                failure: None,
            },
        ));
        let entries = timeline(&events);
        assert_eq!(entries[2].kind, EntryKind::Timer);
        assert_eq!(entries[2].outcome, Outcome::Unfinished);
        let end = entries.last().unwrap();
        assert_eq!(end.kind, EntryKind::Ended);
        assert_eq!(
            end.outcome,
            Outcome::Status(OrchestrationStatus::Completed, Some("7".into()))
        );
    }

    #[test]
    fn a_fired_timer_and_a_completion_without_its_schedule() {
        let events = vec![
            HistoryEvent::with_id(3, t(0), EventKind::TimerCreated { fire_at: t(10) }),
            HistoryEvent::new(
                t(10),
                EventKind::TimerFired {
                    fire_at: t(10),
                    timer_id: 3,
                },
            ),
            // A completion whose schedule is not in this history is ignored.
            HistoryEvent::new(
                t(11),
                EventKind::TaskCompleted {
                    task_scheduled_id: 9,
                    result: None,
                },
            ),
        ];
        let entries = timeline(&events);
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].outcome, Outcome::Fired);
        assert_eq!(entries[0].duration(), Some(Duration::milliseconds(10)));
        // Fired at its fire time, a moment before its creation was recorded.
        let early = vec![
            HistoryEvent::with_id(0, t(5), EventKind::TimerCreated { fire_at: t(4) }),
            HistoryEvent::new(
                t(4),
                EventKind::TimerFired {
                    fire_at: t(4),
                    timer_id: 0,
                },
            ),
        ];
        assert_eq!(timeline(&early)[0].duration(), Some(Duration::zero()));
    }
}
