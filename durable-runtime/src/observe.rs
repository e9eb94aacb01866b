//! The spans of orchestrations, computed from histories (pure functions;
//! the worker and client report them, see [`crate::trace`]).
//!
//! An execution has one `orchestration:{name}` span. Its context is
//! derived, not stored: the trace is the one its `ExecutionStarted`
//! continues (or one derived from the instance and execution ids), its
//! span id is derived from the instance and execution ids, and it starts
//! at the execution's first `OrchestratorStarted`. So every episode, on
//! any worker, sees the same span, replays included, and the span is
//! reported once: by the episode that ends the execution.
//!
//! Each call the code makes gets a span id derived from the execution and
//! its sequence number ([`ExecutionTrace::annotate`]), recorded on the
//! scheduling event; the call's span (`activity:{name}`,
//! `orchestration:{name}` for a sub-orchestration, the timer's) is
//! reported by the episode that receives its completion
//! ([`ExecutionTrace::episode_spans`]), with the scheduling and completion
//! times. Only the events new in an episode produce spans, so replaying
//! past events reports nothing twice.

use crate::actions::{ActionKind, OrchestratorAction};
use crate::history::{EventKind, HistoryEvent, OrchestrationStatus, Timestamp};
use crate::trace::{attr, SpanId, SpanKind, SpanRecord, TraceContext, TraceId};

/// The orchestration span of one execution, as every episode of it sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ExecutionTrace {
    /// The instance id.
    pub instance_id: String,
    /// The execution id.
    pub execution_id: String,
    /// The orchestrator name.
    pub name: String,
    /// The orchestrator version, if any.
    pub version: Option<String>,
    /// The orchestration span's own context.
    pub context: TraceContext,
    /// Its parent (the span that created the execution), if it has one.
    pub parent: Option<TraceContext>,
    /// When the span starts: the execution's first episode.
    pub start: Timestamp,
    /// The trace id and flags of `context`, parsed once.
    ids: (TraceId, u8),
    /// How many times the execution was rewound: part of the derived ids,
    /// so a rewound execution's span and its calls run again are new spans,
    /// not the failed ones reported a second time.
    rewinds: usize,
}

/// The parts a derived span id is made of, with the rewind count after
/// them once the execution has been rewound (before that, the ids every
/// earlier version of durable derived).
fn derived_span(parts: &[&str], rewinds: usize) -> SpanId {
    if rewinds == 0 {
        return SpanId::derived(parts);
    }
    let n = format!("rewind-{rewinds}");
    let mut all = parts.to_vec();
    all.push(&n);
    SpanId::derived(&all)
}

/// Span name with an optional version, as the Durable Task SDKs write it:
/// `orchestration:name` or `orchestration:name@(1.0)`.
pub fn span_name(kind: &str, name: &str, version: Option<&str>) -> String {
    match version {
        Some(v) if !v.is_empty() => format!("{kind}:{name}@({v})"),
        _ => format!("{kind}:{name}"),
    }
}

impl ExecutionTrace {
    /// The trace of the execution whose history is `past` then `new`;
    /// `None` without an `ExecutionStarted` (a terminate delivered before
    /// a scheduled start). `given` is a span id and start time a sidecar
    /// kept for the execution (the protocol's `OrchestrationTraceContext`);
    /// they win over the derived ones.
    pub fn of(
        instance_id: &str,
        execution_id: &str,
        past: &[HistoryEvent],
        new: &[HistoryEvent],
        given: (Option<SpanId>, Option<Timestamp>),
    ) -> Option<ExecutionTrace> {
        let events = || past.iter().chain(new);
        let started = events().find(|e| matches!(e.kind, EventKind::ExecutionStarted { .. }))?;
        let EventKind::ExecutionStarted { name, version, .. } = &started.kind else {
            return None;
        };
        // The parent's ids are parsed once; an ill-formed one counts as none.
        let parent = started
            .trace
            .as_deref()
            .and_then(|t| t.ids().map(|(trace, _, flags)| (t.clone(), trace, flags)));
        let rewound: Vec<&HistoryEvent> = events()
            .filter(|e| matches!(e.kind, EventKind::ExecutionRewound { .. }))
            .collect();
        let rewinds = rewound.len();
        let span_id = given.0.unwrap_or_else(|| {
            derived_span(&["orchestration", instance_id, execution_id], rewinds)
        });
        let (context, ids) = match &parent {
            Some((p, trace, flags)) => (
                TraceContext {
                    traceparent: crate::trace::traceparent(*trace, span_id, *flags),
                    tracestate: p.tracestate.clone(),
                },
                (*trace, *flags),
            ),
            None => {
                let trace = TraceId::derived(&["trace", instance_id, execution_id]);
                (TraceContext::new(trace, span_id), (trace, 1))
            }
        };
        let parent = parent.map(|(p, _, _)| p);
        // A rewound execution's span starts at its last rewind.
        let start = given.1.unwrap_or_else(|| match rewound.last() {
            Some(r) => r.timestamp,
            None => {
                events()
                    .find(|e| matches!(e.kind, EventKind::OrchestratorStarted))
                    .unwrap_or(started)
                    .timestamp
            }
        });
        Some(ExecutionTrace {
            ids,
            rewinds,
            instance_id: instance_id.to_string(),
            execution_id: execution_id.to_string(),
            name: name.clone(),
            version: version.clone(),
            context,
            parent,
            start,
        })
    }

    /// The context of the span of call `task_id` (an activity,
    /// sub-orchestration or event sent by this execution).
    pub fn task_context(&self, task_id: i32) -> TraceContext {
        let id = task_id.to_string();
        let span = derived_span(
            &["task", &self.instance_id, &self.execution_id, &id],
            self.rewinds,
        );
        TraceContext {
            traceparent: crate::trace::traceparent(self.ids.0, span, self.ids.1),
            tracestate: self.context.tracestate.clone(),
        }
    }

    /// Gives each action that starts work elsewhere (an activity, a
    /// sub-orchestration, an event sent) the context of its span, unless
    /// it has one.
    pub fn annotate(&self, actions: &mut [OrchestratorAction]) {
        for a in actions {
            let starts_work = matches!(
                a.kind,
                ActionKind::ScheduleTask { .. }
                    | ActionKind::CreateSubOrchestration { .. }
                    | ActionKind::SendEvent { .. }
            );
            if starts_work && a.trace.is_none() {
                a.trace = Some(self.task_context(a.id));
            }
        }
    }

    fn record(
        &self,
        name: String,
        kind: SpanKind,
        context: &TraceContext,
        parent: Option<SpanId>,
        (start, end): (Timestamp, Timestamp),
        attributes: Vec<(&'static str, String)>,
    ) -> Option<SpanRecord> {
        let (trace_id, span_id, flags) = context.ids()?;
        Some(SpanRecord {
            name,
            kind,
            trace_id,
            span_id,
            parent_span_id: parent,
            tracestate: context.tracestate.clone(),
            sampled: flags & 1 == 1,
            start,
            end,
            attributes,
            error: None,
        })
    }

    fn base(&self, ty: &str, name: &str, version: Option<&str>) -> Vec<(&'static str, String)> {
        let mut a = vec![
            (attr::TYPE, ty.to_string()),
            (attr::TASK_NAME, name.to_string()),
            (attr::INSTANCE_ID, self.instance_id.clone()),
        ];
        if let Some(v) = version.filter(|v| !v.is_empty()) {
            a.push((attr::TASK_VERSION, v.to_string()));
        }
        a
    }

    /// The spans one episode finishes: the calls whose completions are
    /// among `new` (an activity's, a sub-orchestration's, a timer's), the
    /// events the episode sends, and the orchestration's own span if the
    /// episode ends the execution. `actions` are the episode's, annotated;
    /// `now` is when the episode ended.
    pub fn episode_spans(
        &self,
        past: &[HistoryEvent],
        new: &[HistoryEvent],
        actions: &[OrchestratorAction],
        now: Timestamp,
    ) -> Vec<SpanRecord> {
        let own = self.context.span_id();
        let scheduled = |id: i32| {
            past.iter()
                .chain(new)
                .find(|e| e.event_id == id && crate::actions::Task::scheduled_by(&e.kind).is_some())
        };
        // A call scheduled before the last rewind whose result comes after
        // it (a failed sub-orchestration, rewound and finished) was already
        // reported once, failed, with its recorded context: it is reported
        // again as a new span, with the rewind-aware id.
        let last_rewind = past
            .iter()
            .chain(new)
            .enumerate()
            .filter(|(_, e)| matches!(e.kind, EventKind::ExecutionRewound { .. }))
            .map(|(i, _)| i)
            .last();
        let before_rewind = |id: i32| {
            last_rewind.is_some_and(|r| {
                past.iter().chain(new).take(r).any(|e| {
                    e.event_id == id && crate::actions::Task::scheduled_by(&e.kind).is_some()
                })
            })
        };
        let mut spans = Vec::new();
        for e in new {
            let (id, failure) = match &e.kind {
                EventKind::TaskCompleted {
                    task_scheduled_id, ..
                }
                | EventKind::SubOrchestrationInstanceCompleted {
                    task_scheduled_id, ..
                } => (*task_scheduled_id, None),
                EventKind::TaskFailed {
                    task_scheduled_id,
                    failure,
                }
                | EventKind::SubOrchestrationInstanceFailed {
                    task_scheduled_id,
                    failure,
                } => (*task_scheduled_id, Some(failure)),
                EventKind::TimerFired { timer_id, fire_at } => {
                    let Some(created) = scheduled(*timer_id) else {
                        continue;
                    };
                    let mut a = self.base("timer", &self.name, None);
                    a.push((attr::TASK_ID, timer_id.to_string()));
                    a.push((attr::FIRE_AT, fire_at.to_rfc3339()));
                    let ctx = self.task_context(*timer_id);
                    spans.extend(self.record(
                        format!("orchestration:{}:timer", self.name),
                        SpanKind::Internal,
                        &ctx,
                        own,
                        (created.timestamp, e.timestamp.max(created.timestamp)),
                        a,
                    ));
                    continue;
                }
                _ => continue,
            };
            let Some(call) = scheduled(id) else {
                continue;
            };
            let (ty, name, version) = match &call.kind {
                EventKind::TaskScheduled { name, version, .. } => ("activity", name, version),
                EventKind::SubOrchestrationInstanceCreated { name, version, .. } => {
                    ("orchestration", name, version)
                }
                _ => continue,
            };
            let ctx = call
                .trace
                .as_deref()
                .cloned()
                .filter(|t| t.ids().is_some() && !before_rewind(id))
                .unwrap_or_else(|| self.task_context(id));
            let mut a = self.base(ty, name, version.as_deref());
            a.push((attr::TASK_ID, id.to_string()));
            let status = if failure.is_some() {
                "Failed"
            } else {
                "Completed"
            };
            a.push((attr::STATUS, status.to_string()));
            if let Some(mut s) = self.record(
                span_name(ty, name, version.as_deref()),
                SpanKind::Client,
                &ctx,
                own,
                (call.timestamp, e.timestamp.max(call.timestamp)),
                a,
            ) {
                s.error = failure.map(|f| f.to_string());
                spans.push(s);
            }
        }
        for action in actions {
            match &action.kind {
                ActionKind::SendEvent {
                    instance_id, name, ..
                } => {
                    let ctx = action
                        .trace
                        .clone()
                        .unwrap_or_else(|| self.task_context(action.id));
                    let mut a = self.base("event", name, None);
                    a.push((attr::EVENT_TARGET, instance_id.clone()));
                    spans.extend(self.record(
                        span_name("orchestration_event", name, None),
                        SpanKind::Producer,
                        &ctx,
                        own,
                        (now, now),
                        a,
                    ));
                }
                ActionKind::CompleteOrchestration {
                    status, failure, ..
                } => {
                    let mut a = self.base("orchestration", &self.name, self.version.as_deref());
                    a.push((attr::EXECUTION_ID, self.execution_id.clone()));
                    a.push((attr::STATUS, status.to_string()));
                    if let Some(mut s) = self.record(
                        span_name("orchestration", &self.name, self.version.as_deref()),
                        SpanKind::Server,
                        &self.context,
                        self.parent.as_ref().and_then(|p| p.span_id()),
                        (self.start, now.max(self.start)),
                        a,
                    ) {
                        if *status == OrchestrationStatus::Failed {
                            s.error = Some(
                                failure
                                    .as_ref()
                                    .map(|f| f.to_string())
                                    .unwrap_or_else(|| "failed".to_string()),
                            );
                        }
                        spans.push(s);
                    }
                }
                _ => {}
            }
        }
        spans
    }
}

/// The context an activity run's span will have (a new span id in the
/// trace of `parent`, the `TaskScheduled` event's context), chosen before
/// the run so the activity's code can pass it on; `None` without a
/// well-formed parent.
pub fn activity_run_context(parent: Option<&TraceContext>) -> Option<TraceContext> {
    parent?.with_span(SpanId::random())
}

/// The span of one activity run, a child of the orchestration's span for
/// the call (`parent`, the `TaskScheduled` event's context), with the span
/// id of `own` (from [`activity_run_context`]) if given; a root span of a
/// new trace without a parent.
#[allow(clippy::too_many_arguments)]
pub fn activity_span(
    name: &str,
    version: Option<&str>,
    instance_id: &str,
    task_id: i32,
    parent: Option<&TraceContext>,
    own: Option<&TraceContext>,
    (start, end): (Timestamp, Timestamp),
    error: Option<String>,
) -> SpanRecord {
    let parent = parent.filter(|p| p.ids().is_some());
    let span_id = own.and_then(|o| o.span_id()).unwrap_or_else(SpanId::random);
    let (trace_id, parent_span_id, tracestate) = match parent {
        Some(p) => (
            p.trace_id().expect("checked"),
            p.span_id(),
            p.tracestate.clone(),
        ),
        None => (TraceId::random(), None, None),
    };
    let mut attributes = vec![
        (attr::TYPE, "activity".to_string()),
        (attr::TASK_NAME, name.to_string()),
        (attr::INSTANCE_ID, instance_id.to_string()),
    ];
    if let Some(v) = version.filter(|v| !v.is_empty()) {
        attributes.push((attr::TASK_VERSION, v.to_string()));
    }
    attributes.push((attr::TASK_ID, task_id.to_string()));
    let status = if error.is_some() {
        "Failed"
    } else {
        "Completed"
    };
    attributes.push((attr::STATUS, status.to_string()));
    SpanRecord {
        name: span_name("activity", name, version),
        kind: SpanKind::Server,
        trace_id,
        span_id,
        parent_span_id,
        tracestate,
        sampled: parent.is_none_or(|p| p.sampled()),
        start,
        end,
        attributes,
        error,
    }
}

/// The span of a client creating an orchestration
/// (`create_orchestration:{name}`), in the trace of `parent` if given, else
/// in a new trace.
pub fn create_orchestration_span(
    name: &str,
    version: Option<&str>,
    instance_id: &str,
    parent: Option<&TraceContext>,
    (start, end): (Timestamp, Timestamp),
) -> SpanRecord {
    let parent = parent.filter(|p| p.ids().is_some());
    let mut attributes = vec![
        (attr::TYPE, "orchestration".to_string()),
        (attr::TASK_NAME, name.to_string()),
        (attr::INSTANCE_ID, instance_id.to_string()),
    ];
    if let Some(v) = version.filter(|v| !v.is_empty()) {
        attributes.push((attr::TASK_VERSION, v.to_string()));
    }
    SpanRecord {
        name: span_name("create_orchestration", name, version),
        kind: SpanKind::Producer,
        trace_id: parent
            .and_then(|p| p.trace_id())
            .unwrap_or_else(TraceId::random),
        span_id: SpanId::random(),
        parent_span_id: parent.and_then(|p| p.span_id()),
        tracestate: parent.and_then(|p| p.tracestate.clone()),
        sampled: parent.is_none_or(|p| p.sampled()),
        start,
        end,
        attributes,
        error: None,
    }
}

/// The span of a client raising event `name` on instance `target`
/// (`orchestration_event:{name}`), a root span of a new trace.
pub fn raise_event_span(
    name: &str,
    target: &str,
    (start, end): (Timestamp, Timestamp),
) -> SpanRecord {
    SpanRecord {
        name: span_name("orchestration_event", name, None),
        kind: SpanKind::Producer,
        trace_id: TraceId::random(),
        span_id: SpanId::random(),
        parent_span_id: None,
        tracestate: None,
        sampled: true,
        start,
        end,
        attributes: vec![
            (attr::TYPE, "event".to_string()),
            (attr::TASK_NAME, name.to_string()),
            (attr::EVENT_TARGET, target.to_string()),
        ],
        error: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::history::FailureDetails;

    fn at(secs: i64) -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000 + secs, 0).unwrap()
    }

    fn ev(id: i32, secs: i64, kind: EventKind) -> HistoryEvent {
        HistoryEvent::with_id(id, at(secs), kind)
    }

    fn started(parent: Option<TraceContext>) -> HistoryEvent {
        ev(
            -1,
            0,
            EventKind::ExecutionStarted {
                name: "order".into(),
                version: None,
                input: None,
                instance_id: "i".into(),
                execution_id: Some("e".into()),
                parent: None,
                scheduled_start: None,
                tags: Default::default(),
            },
        )
        .with_trace(parent)
    }

    fn scheduled(id: i32, secs: i64, name: &str, trace: Option<TraceContext>) -> HistoryEvent {
        ev(
            id,
            secs,
            EventKind::TaskScheduled {
                name: name.into(),
                version: None,
                input: None,
                tags: Default::default(),
            },
        )
        .with_trace(trace)
    }

    fn client() -> TraceContext {
        TraceContext::parse(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            None,
        )
        .unwrap()
    }

    fn of(past: &[HistoryEvent], new: &[HistoryEvent]) -> ExecutionTrace {
        ExecutionTrace::of("i", "e", past, new, (None, None)).unwrap()
    }

    #[test]
    fn every_episode_sees_the_same_orchestration_span() {
        let first = [
            ev(-1, 1, EventKind::OrchestratorStarted),
            started(Some(client())),
        ];
        let call = scheduled(0, 1, "charge", None);
        let mut past = first.to_vec();
        past.push(call);
        let second = [
            ev(-1, 5, EventKind::OrchestratorStarted),
            ev(
                -1,
                5,
                EventKind::TaskCompleted {
                    task_scheduled_id: 0,
                    result: None,
                },
            ),
        ];
        let a = of(&[], &first);
        let b = of(&past, &second);
        assert_eq!(a, b);
        // A child of the client's span, in its trace, started at the first
        // episode.
        assert_eq!(a.context.trace_id(), client().trace_id());
        assert_eq!(a.parent, Some(client()));
        assert_eq!(a.start, at(1));
        assert_ne!(a.context.span_id(), client().span_id());
        // A sidecar's OrchestrationTraceContext wins.
        let given = SpanId::derived(&["given"]);
        let c = ExecutionTrace::of("i", "e", &past, &second, (Some(given), Some(at(0)))).unwrap();
        assert_eq!((c.context.span_id(), c.start), (Some(given), at(0)));
        // Without a parent: a trace of its own, still stable.
        let lone = [ev(-1, 1, EventKind::OrchestratorStarted), started(None)];
        assert_eq!(of(&[], &lone).context, of(&lone, &second).context);
        assert_eq!(of(&[], &lone).parent, None);
        // No ExecutionStarted, no span.
        assert!(ExecutionTrace::of("i", "e", &[], &second, (None, None)).is_none());
    }

    #[test]
    fn calls_get_their_span_context_and_keep_one_they_have() {
        let t = of(&[], &[started(Some(client()))]);
        let theirs = client().with_span(SpanId::derived(&["theirs"])).unwrap();
        let mut actions = vec![
            OrchestratorAction {
                id: 0,
                kind: ActionKind::ScheduleTask {
                    name: "charge".into(),
                    version: None,
                    input: None,
                    tags: Default::default(),
                },
                trace: None,
            },
            OrchestratorAction {
                id: 1,
                kind: ActionKind::CreateTimer { fire_at: at(60) },
                trace: None,
            },
            OrchestratorAction {
                id: 2,
                kind: ActionKind::SendEvent {
                    instance_id: "other".into(),
                    name: "ping".into(),
                    data: None,
                },
                trace: Some(theirs.clone()),
            },
        ];
        t.annotate(&mut actions);
        assert_eq!(actions[0].trace, Some(t.task_context(0)));
        assert_eq!(actions[1].trace, None, "a timer starts nothing elsewhere");
        assert_eq!(actions[2].trace, Some(theirs));
        assert_eq!(
            actions[0].trace.as_ref().unwrap().trace_id(),
            client().trace_id()
        );
    }

    #[test]
    fn an_episode_reports_what_completed_in_it_and_the_end_once() {
        let t = of(&[], &[started(Some(client()))]);
        let call = t.task_context(0);
        let past = vec![
            ev(-1, 1, EventKind::OrchestratorStarted),
            started(Some(client())),
            scheduled(0, 1, "charge", Some(call.clone())),
            ev(1, 1, EventKind::TimerCreated { fire_at: at(4) }),
        ];
        let new = vec![
            ev(-1, 4, EventKind::OrchestratorStarted),
            ev(
                -1,
                4,
                EventKind::TimerFired {
                    fire_at: at(4),
                    timer_id: 1,
                },
            ),
            ev(
                -1,
                4,
                EventKind::TaskFailed {
                    task_scheduled_id: 0,
                    failure: FailureDetails {
                        error_type: "Declined".into(),
                        message: "card declined".into(),
                        stack_trace: None,
                        inner: None,
                        non_retriable: false,
                    },
                },
            ),
        ];
        let end = OrchestratorAction {
            id: 2,
            kind: ActionKind::completed(Some("1".into())),
            trace: None,
        };
        let send = OrchestratorAction {
            id: 3,
            kind: ActionKind::SendEvent {
                instance_id: "other".into(),
                name: "shipped".into(),
                data: None,
            },
            trace: None,
        };
        // The context given to the call is the same once it has a history.
        let t = of(&past, &new);
        assert_eq!(t.task_context(0), call);
        let spans = t.episode_spans(&past, &new, &[send, end], at(5));
        let names: Vec<_> = spans.iter().map(|s| (s.name.as_str(), s.kind)).collect();
        assert_eq!(
            names,
            [
                ("orchestration:order:timer", SpanKind::Internal),
                ("activity:charge", SpanKind::Client),
                ("orchestration_event:shipped", SpanKind::Producer),
                ("orchestration:order", SpanKind::Server),
            ]
        );
        let own = t.context.span_id();
        assert!(spans[..3].iter().all(|s| s.parent_span_id == own));
        let activity = &spans[1];
        assert_eq!(Some(activity.span_id), call.span_id());
        assert_eq!((activity.start, activity.end), (at(1), at(4)));
        assert_eq!(activity.attribute(attr::STATUS), Some("Failed"));
        assert_eq!(activity.attribute(attr::TASK_ID), Some("0"));
        assert!(activity.error.as_deref().unwrap().contains("card declined"));
        assert_eq!(
            spans[0].attribute(attr::FIRE_AT),
            Some(at(4).to_rfc3339().as_str())
        );
        assert_eq!(spans[2].attribute(attr::EVENT_TARGET), Some("other"));
        let orch = &spans[3];
        assert_eq!(orch.parent_span_id, client().span_id());
        assert_eq!((orch.start, orch.end), (at(1), at(5)));
        assert_eq!(orch.attribute(attr::STATUS), Some("Completed"));
        assert_eq!(orch.error, None);

        // Replaying the same history as past reports none of it again.
        let mut all = past.clone();
        all.extend(new);
        let later = [ev(-1, 9, EventKind::OrchestratorStarted)];
        assert!(t.episode_spans(&all, &later, &[], at(9)).is_empty());
    }

    #[test]
    fn names_carry_the_version_as_the_sdks_write_it() {
        assert_eq!(
            span_name("activity", "Say", Some("1.0")),
            "activity:Say@(1.0)"
        );
        assert_eq!(
            span_name("orchestration", "Order", Some("")),
            "orchestration:Order"
        );
        let run = activity_span(
            "Say",
            None,
            "i",
            3,
            Some(&client()),
            None,
            (at(0), at(1)),
            None,
        );
        assert_eq!(run.parent_span_id, client().span_id());
        assert_eq!(run.trace_id, client().trace_id().unwrap());
        assert_eq!(run.kind, SpanKind::Server);
        let root = create_orchestration_span("Order", Some("2"), "i", None, (at(0), at(0)));
        assert_eq!(root.name, "create_orchestration:Order@(2)");
        assert_eq!(root.parent_span_id, None);
        assert_eq!(root.attribute(attr::TASK_VERSION), Some("2"));
    }

    #[test]
    fn a_rewound_execution_and_its_calls_get_new_span_ids() {
        let first = [
            ev(-1, 1, EventKind::OrchestratorStarted),
            started(Some(client())),
        ];
        let before = of(&[], &first);
        let rewound = [
            ev(-1, 7, EventKind::OrchestratorStarted),
            ev(-1, 7, EventKind::ExecutionRewound { reason: None }),
        ];
        let after = of(&first, &rewound);
        // Same trace, same parent; another span, starting at the rewind.
        assert_eq!(after.context.trace_id(), before.context.trace_id());
        assert_eq!(after.parent, before.parent);
        assert_ne!(after.context.span_id(), before.context.span_id());
        assert_eq!(after.start, at(7));
        assert_ne!(after.task_context(0), before.task_context(0));
        // Stable across the episodes after the rewind, and a second rewind
        // gives yet another span.
        let mut past = first.to_vec();
        past.extend(rewound.clone());
        let later = of(&past, &[ev(-1, 9, EventKind::OrchestratorStarted)]);
        assert_eq!(later, after);
        let again = of(
            &past,
            &[ev(-1, 11, EventKind::ExecutionRewound { reason: None })],
        );
        assert_ne!(again.context.span_id(), after.context.span_id());
        // An execution never rewound keeps the ids of earlier versions.
        assert_eq!(
            before.context.span_id(),
            Some(SpanId::derived(&["orchestration", "i", "e"]))
        );
    }

    #[test]
    fn a_call_reported_failed_before_a_rewind_is_a_new_span_after_it() {
        let mut past = vec![
            ev(-1, 1, EventKind::OrchestratorStarted),
            started(Some(client())),
        ];
        let first = of(&[], &past);
        let stored = first.task_context(0);
        past.push(
            ev(
                0,
                1,
                EventKind::SubOrchestrationInstanceCreated {
                    instance_id: "child".into(),
                    name: "child".into(),
                    version: None,
                    input: None,
                },
            )
            .with_trace(Some(stored.clone())),
        );
        // The child failed (reported then), the parent was rewound, and the
        // rewound child's completion comes now.
        past.push(ev(-1, 5, EventKind::ExecutionRewound { reason: None }));
        let new = [
            ev(-1, 9, EventKind::OrchestratorStarted),
            ev(
                -1,
                9,
                EventKind::SubOrchestrationInstanceCompleted {
                    task_scheduled_id: 0,
                    result: None,
                },
            ),
        ];
        let t = of(&past, &new);
        let spans = t.episode_spans(&past, &new, &[], at(9));
        assert_eq!(spans.len(), 1, "{spans:#?}");
        assert_ne!(Some(spans[0].span_id), stored.span_id());
        assert_eq!(Some(spans[0].trace_id), stored.trace_id());
    }

    #[test]
    fn an_unsampled_trace_stays_unsampled() {
        let unsampled = TraceContext::parse(
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00",
            None,
        )
        .unwrap();
        let t = of(&[], &[started(Some(unsampled.clone()))]);
        assert!(!t.context.sampled());
        assert!(!t.task_context(0).sampled());
        let done = [crate::actions::OrchestratorAction {
            id: 0,
            kind: ActionKind::CompleteOrchestration {
                status: OrchestrationStatus::Completed,
                result: None,
                failure: None,
                new_version: None,
                carryover_events: Vec::new(),
            },
            trace: None,
        }];
        let spans = t.episode_spans(&[], &[], &done, at(3));
        assert_eq!(spans.len(), 1);
        assert!(!spans[0].sampled);
        assert!(!spans[0].context().sampled());
        let own = activity_run_context(Some(&unsampled)).unwrap();
        let run = activity_span(
            "Say",
            None,
            "i",
            0,
            Some(&unsampled),
            Some(&own),
            (at(0), at(1)),
            None,
        );
        assert!(!run.sampled);
        assert_eq!(Some(run.span_id), own.span_id());
        let root = create_orchestration_span("Order", None, "i", None, (at(0), at(0)));
        assert!(root.sampled);
    }
}
