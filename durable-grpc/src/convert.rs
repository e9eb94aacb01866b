//! The one place where protocol messages and durable's model meet.
//!
//! Every mapping between the generated protobuf types and
//! [`durable_runtime`]'s history, actions, failures, statuses and metadata
//! lives here, both ways, so it can be round-trip tested without a socket.
//!
//! Payloads are JSON text on both sides (`google.protobuf.StringValue` on the
//! wire). An empty string is read as "no payload": it is not JSON, and some
//! sidecars store an absent input as `""`.

use crate::proto;
use chrono::DateTime;
use durable_runtime::actions::{ActionKind, OrchestratorAction, OrchestratorResult};
use durable_runtime::backend::{
    ActivityWorkItem, CreateInstanceRequest, IdReusePolicy, InstanceMetadata, InstanceQuery,
    OrchestrationSpan, OrchestrationWorkItem, PurgeTarget,
};
use durable_runtime::failure::TaskOutcome;
use durable_runtime::history::{
    EventKind, FailureDetails, HistoryEvent, OrchestrationStatus, ParentInstance, Timestamp,
};
use durable_runtime::trace::TraceContext;
use proto::history_event::EventType;
use proto::orchestrator_action::OrchestratorActionType;
use proto::send_entity_message_action::EntityMessageType;
use std::collections::{BTreeMap, HashMap};

pub(crate) mod entities;

/// A message from the peer that durable cannot read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum ConvertError {
    /// A field the protocol requires was absent.
    #[error("{message} has no {field}")]
    MissingField {
        /// The message kind, e.g. `"timerCreated event"`.
        message: &'static str,
        /// The missing field.
        field: &'static str,
    },
    /// A history event of a kind durable does not model (entities, rewind, ...).
    #[error(
        "history event {event_id} is of a kind durable does not support \
         (entity operations, rewind and generic events are not implemented)"
    )]
    UnsupportedEvent {
        /// The event's id.
        event_id: i32,
    },
    /// An action of a kind durable does not model.
    #[error("orchestrator action {id} is of a kind durable does not support")]
    UnsupportedAction {
        /// The action's sequence number.
        id: i32,
    },
    /// An entity work item for an id that is not `@name@key`.
    #[error("entity work item for \"{0}\", which is not an entity id (@name@key)")]
    NotAnEntity(String),
    /// A critical section in the protocol's form, which durable does not
    /// take.
    #[error(
        "the protocol's entity locks (entityLockRequested, entityUnlockSent) are not \
         supported by durable; lock entities from a durable orchestration instead"
    )]
    UnsupportedEntityLock,
    /// A status number outside the protocol's enum.
    #[error("unknown orchestration status {0}")]
    UnknownStatus(i32),
    /// A timestamp that is out of range or malformed.
    #[error("invalid timestamp ({seconds} s, {nanos} ns)")]
    InvalidTimestamp {
        /// Seconds since the Unix epoch.
        seconds: i64,
        /// Nanoseconds.
        nanos: i32,
    },
}

type Result<T> = std::result::Result<T, ConvertError>;

// ---- scalars ----

/// Converts a time to the protocol's timestamp.
pub(crate) fn timestamp_to_proto(t: &Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: t.timestamp_subsec_nanos() as i32,
    }
}

/// Converts the protocol's timestamp to a time.
pub(crate) fn timestamp_from_proto(t: &prost_types::Timestamp) -> Result<Timestamp> {
    u32::try_from(t.nanos)
        .ok()
        .and_then(|nanos| DateTime::from_timestamp(t.seconds, nanos))
        .ok_or(ConvertError::InvalidTimestamp {
            seconds: t.seconds,
            nanos: t.nanos,
        })
}

/// An optional timestamp; absent stays absent.
fn opt_timestamp(t: Option<&prost_types::Timestamp>) -> Result<Option<Timestamp>> {
    t.map(timestamp_from_proto).transpose()
}

/// A timestamp many peers leave unset on events they create: unset reads as
/// the Unix epoch, which is what the protocol's default value means.
fn timestamp_or_epoch(t: Option<&prost_types::Timestamp>) -> Result<Timestamp> {
    Ok(opt_timestamp(t)?.unwrap_or(DateTime::UNIX_EPOCH))
}

fn required_timestamp(
    t: Option<&prost_types::Timestamp>,
    message: &'static str,
    field: &'static str,
) -> Result<Timestamp> {
    opt_timestamp(t)?.ok_or(ConvertError::MissingField { message, field })
}

/// A payload from the wire: empty text means none.
pub(crate) fn payload(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// An optional string field (version, reason, ...): empty means none.
fn opt_string(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// Converts a status to the protocol's enum value.
pub(crate) fn status_to_proto(s: OrchestrationStatus) -> i32 {
    s.as_i32()
}

/// Converts the protocol's enum value to a status.
pub(crate) fn status_from_proto(v: i32) -> Result<OrchestrationStatus> {
    OrchestrationStatus::from_i32(v).ok_or(ConvertError::UnknownStatus(v))
}

// ---- failures ----

/// Converts failure details to the protocol's message, within durable's
/// bounds on a failure's depth and size (`FailureDetails::bounded`), so a
/// huge stack trace does not push the whole message over a sidecar's limit.
pub(crate) fn failure_to_proto(f: &FailureDetails) -> proto::TaskFailureDetails {
    failure_chain_to_proto(&f.clone().bounded())
}

fn failure_chain_to_proto(f: &FailureDetails) -> proto::TaskFailureDetails {
    proto::TaskFailureDetails {
        error_type: f.error_type.clone(),
        error_message: f.message.clone(),
        stack_trace: f.stack_trace.clone(),
        inner_failure: f
            .inner
            .as_deref()
            .map(|i| Box::new(failure_chain_to_proto(i))),
        is_non_retriable: f.non_retriable,
    }
}

/// Converts the protocol's failure details, within durable's bounds on a
/// failure's depth and size (see `FailureDetails::bounded`): a chain another
/// SDK sent is kept as far as durable keeps its own.
pub(crate) fn failure_from_proto(f: proto::TaskFailureDetails) -> FailureDetails {
    failure_chain_from_proto(f).bounded()
}

fn failure_chain_from_proto(f: proto::TaskFailureDetails) -> FailureDetails {
    FailureDetails {
        error_type: f.error_type,
        message: f.error_message,
        stack_trace: opt_string(f.stack_trace),
        inner: f
            .inner_failure
            .map(|i| Box::new(failure_chain_from_proto(*i))),
        non_retriable: f.is_non_retriable,
    }
}

fn required_failure(
    f: Option<proto::TaskFailureDetails>,
    message: &'static str,
) -> Result<FailureDetails> {
    f.map(failure_from_proto).ok_or(ConvertError::MissingField {
        message,
        field: "failureDetails",
    })
}

// ---- trace contexts ----

/// A trace context as the protocol's message.
pub(crate) fn trace_to_proto(t: Option<&TraceContext>) -> Option<proto::TraceContext> {
    t.map(|t| proto::TraceContext {
        trace_parent: t.traceparent.clone(),
        trace_state: t.tracestate.clone(),
        ..Default::default()
    })
}

/// The protocol's trace context; `None` when absent, empty or not a W3C
/// `traceparent` (a trace context only informs tracing: one another SDK
/// wrote badly is dropped, never an error).
pub(crate) fn trace_from_proto(t: Option<proto::TraceContext>) -> Option<TraceContext> {
    let t = t?;
    if t.trace_parent.is_empty() {
        return None;
    }
    match TraceContext::parse(&t.trace_parent, opt_string(t.trace_state)) {
        Ok(t) => Some(t),
        Err(e) => {
            tracing::debug!(error = %e, "a trace context from the wire is dropped");
            None
        }
    }
}

/// The orchestration span of an episode (its id and start), as the
/// protocol's `OrchestrationTraceContext`: what a worker of another SDK
/// reuses so each episode reports the same span, and what a sidecar keeps.
pub(crate) fn orchestration_trace_to_proto(
    item: &OrchestrationWorkItem,
) -> Option<proto::OrchestrationTraceContext> {
    // The span a sidecar gave (another SDK's worker chose it) is echoed,
    // filled in with the derived id or start where it had none.
    let t = durable_runtime::observe::ExecutionTrace::of(
        &item.instance_id,
        &item.execution_id,
        &item.past_events,
        &item.new_events,
        OrchestrationSpan::given(item.orchestration_span.as_ref()),
    )?;
    Some(proto::OrchestrationTraceContext {
        span_id: t.context.span_id().map(|s| s.to_string()),
        span_start_time: Some(timestamp_to_proto(&t.start)),
    })
}

// ---- history ----

/// Converts a history event to the protocol's message.
pub(crate) fn event_to_proto(e: &HistoryEvent) -> proto::HistoryEvent {
    let event_type = match &e.kind {
        EventKind::ExecutionStarted {
            name,
            version,
            input,
            instance_id,
            execution_id,
            parent,
            scheduled_start,
            tags,
        } => EventType::ExecutionStarted(proto::ExecutionStartedEvent {
            name: name.clone(),
            version: version.clone(),
            input: input.clone(),
            orchestration_instance: Some(proto::OrchestrationInstance {
                instance_id: instance_id.clone(),
                execution_id: execution_id.clone(),
            }),
            parent_instance: parent.as_ref().map(|p| proto::ParentInstanceInfo {
                task_scheduled_id: p.task_scheduled_id,
                name: p.name.clone(),
                version: None,
                orchestration_instance: Some(proto::OrchestrationInstance {
                    instance_id: p.instance_id.clone(),
                    execution_id: p.execution_id.clone(),
                }),
            }),
            scheduled_start_timestamp: scheduled_start.as_ref().map(timestamp_to_proto),
            parent_trace_context: trace_to_proto(e.trace.as_deref()),
            tags: tags_to_proto(tags),
        }),
        EventKind::ExecutionCompleted {
            status,
            result,
            failure,
        } => EventType::ExecutionCompleted(proto::ExecutionCompletedEvent {
            orchestration_status: status_to_proto(*status),
            result: result.clone(),
            failure_details: failure.as_ref().map(failure_to_proto),
        }),
        EventKind::ExecutionTerminated { input, recurse } => {
            EventType::ExecutionTerminated(proto::ExecutionTerminatedEvent {
                input: input.clone(),
                recurse: *recurse,
            })
        }
        EventKind::TaskScheduled {
            name,
            version,
            input,
            tags,
        } => EventType::TaskScheduled(proto::TaskScheduledEvent {
            name: name.clone(),
            version: version.clone(),
            input: input.clone(),
            tags: tags_to_proto(tags),
            parent_trace_context: trace_to_proto(e.trace.as_deref()),
        }),
        EventKind::TaskCompleted {
            task_scheduled_id,
            result,
        } => EventType::TaskCompleted(proto::TaskCompletedEvent {
            task_scheduled_id: *task_scheduled_id,
            result: result.clone(),
        }),
        EventKind::TaskFailed {
            task_scheduled_id,
            failure,
        } => EventType::TaskFailed(proto::TaskFailedEvent {
            task_scheduled_id: *task_scheduled_id,
            failure_details: Some(failure_to_proto(failure)),
        }),
        EventKind::SubOrchestrationInstanceCreated {
            instance_id,
            name,
            version,
            input,
        } => EventType::SubOrchestrationInstanceCreated(
            proto::SubOrchestrationInstanceCreatedEvent {
                instance_id: instance_id.clone(),
                name: name.clone(),
                version: version.clone(),
                input: input.clone(),
                parent_trace_context: trace_to_proto(e.trace.as_deref()),
            },
        ),
        EventKind::SubOrchestrationInstanceCompleted {
            task_scheduled_id,
            result,
        } => EventType::SubOrchestrationInstanceCompleted(
            proto::SubOrchestrationInstanceCompletedEvent {
                task_scheduled_id: *task_scheduled_id,
                result: result.clone(),
            },
        ),
        EventKind::SubOrchestrationInstanceFailed {
            task_scheduled_id,
            failure,
        } => {
            EventType::SubOrchestrationInstanceFailed(proto::SubOrchestrationInstanceFailedEvent {
                task_scheduled_id: *task_scheduled_id,
                failure_details: Some(failure_to_proto(failure)),
            })
        }
        EventKind::TimerCreated { fire_at } => EventType::TimerCreated(proto::TimerCreatedEvent {
            fire_at: Some(timestamp_to_proto(fire_at)),
        }),
        EventKind::TimerFired { fire_at, timer_id } => {
            EventType::TimerFired(proto::TimerFiredEvent {
                fire_at: Some(timestamp_to_proto(fire_at)),
                timer_id: *timer_id,
            })
        }
        EventKind::OrchestratorStarted => {
            EventType::OrchestratorStarted(proto::OrchestratorStartedEvent {})
        }
        EventKind::OrchestratorCompleted => {
            EventType::OrchestratorCompleted(proto::OrchestratorCompletedEvent {})
        }
        EventKind::EventSent {
            instance_id,
            name,
            input,
        } if entities::message_to_proto(instance_id, name, input.as_deref(), e.event_id)
            .is_some() =>
        {
            match entities::message_to_proto(instance_id, name, input.as_deref(), e.event_id) {
                Some(EntityMessageType::EntityOperationCalled(c)) => {
                    EventType::EntityOperationCalled(c)
                }
                Some(EntityMessageType::EntityOperationSignaled(s)) => {
                    EventType::EntityOperationSignaled(s)
                }
                _ => unreachable!("message_to_proto makes calls and signals only"),
            }
        }
        EventKind::EventRaised { name, input }
            if entities::response_to_proto(name, input.as_deref()).is_some() =>
        {
            entities::response_to_proto(name, input.as_deref()).expect("checked")
        }
        EventKind::EventSent {
            instance_id,
            name,
            input,
        } => EventType::EventSent(proto::EventSentEvent {
            instance_id: instance_id.clone(),
            name: name.clone(),
            input: input.clone(),
        }),
        EventKind::EventRaised { name, input } => EventType::EventRaised(proto::EventRaisedEvent {
            name: name.clone(),
            input: input.clone(),
        }),
        EventKind::ContinueAsNew { input } => EventType::ContinueAsNew(proto::ContinueAsNewEvent {
            input: input.clone(),
        }),
        EventKind::ExecutionSuspended { input } => {
            EventType::ExecutionSuspended(proto::ExecutionSuspendedEvent {
                input: input.clone(),
            })
        }
        EventKind::ExecutionResumed { input } => {
            EventType::ExecutionResumed(proto::ExecutionResumedEvent {
                input: input.clone(),
            })
        }
        EventKind::ExecutionRewound { reason } => {
            EventType::ExecutionRewound(proto::ExecutionRewoundEvent {
                reason: reason.clone(),
            })
        }
    };
    proto::HistoryEvent {
        event_id: e.event_id,
        timestamp: Some(timestamp_to_proto(&e.timestamp)),
        event_type: Some(event_type),
    }
}

/// Converts the protocol's history event.
pub(crate) fn event_from_proto(e: proto::HistoryEvent) -> Result<HistoryEvent> {
    let timestamp = timestamp_or_epoch(e.timestamp.as_ref())?;
    let event_id = e.event_id;
    let mut trace = None;
    let kind = match e
        .event_type
        .ok_or(ConvertError::UnsupportedEvent { event_id })?
    {
        EventType::ExecutionStarted(s) => {
            trace = trace_from_proto(s.parent_trace_context);
            let instance = s.orchestration_instance.unwrap_or_default();
            EventKind::ExecutionStarted {
                name: s.name,
                version: opt_string(s.version),
                input: payload(s.input),
                instance_id: instance.instance_id,
                execution_id: opt_string(instance.execution_id),
                parent: s.parent_instance.map(|p| {
                    let pi = p.orchestration_instance.unwrap_or_default();
                    Box::new(ParentInstance {
                        instance_id: pi.instance_id,
                        execution_id: opt_string(pi.execution_id),
                        name: opt_string(p.name),
                        task_scheduled_id: p.task_scheduled_id,
                    })
                }),
                scheduled_start: opt_timestamp(s.scheduled_start_timestamp.as_ref())?,
                tags: tags_from_proto(s.tags),
            }
        }
        EventType::ExecutionCompleted(c) => EventKind::ExecutionCompleted {
            status: status_from_proto(c.orchestration_status)?,
            result: payload(c.result),
            failure: c.failure_details.map(failure_from_proto),
        },
        EventType::ExecutionTerminated(t) => EventKind::ExecutionTerminated {
            input: payload(t.input),
            recurse: t.recurse,
        },
        EventType::TaskScheduled(t) => {
            trace = trace_from_proto(t.parent_trace_context);
            EventKind::TaskScheduled {
                name: t.name,
                version: opt_string(t.version),
                input: payload(t.input),
                tags: tags_from_proto(t.tags),
            }
        }
        EventType::TaskCompleted(t) => EventKind::TaskCompleted {
            task_scheduled_id: t.task_scheduled_id,
            result: payload(t.result),
        },
        EventType::TaskFailed(t) => EventKind::TaskFailed {
            task_scheduled_id: t.task_scheduled_id,
            failure: required_failure(t.failure_details, "taskFailed event")?,
        },
        EventType::SubOrchestrationInstanceCreated(s) => {
            trace = trace_from_proto(s.parent_trace_context);
            EventKind::SubOrchestrationInstanceCreated {
                instance_id: s.instance_id,
                name: s.name,
                version: opt_string(s.version),
                input: payload(s.input),
            }
        }
        EventType::SubOrchestrationInstanceCompleted(s) => {
            EventKind::SubOrchestrationInstanceCompleted {
                task_scheduled_id: s.task_scheduled_id,
                result: payload(s.result),
            }
        }
        EventType::SubOrchestrationInstanceFailed(s) => EventKind::SubOrchestrationInstanceFailed {
            task_scheduled_id: s.task_scheduled_id,
            failure: required_failure(s.failure_details, "subOrchestrationInstanceFailed event")?,
        },
        EventType::TimerCreated(t) => EventKind::TimerCreated {
            fire_at: required_timestamp(t.fire_at.as_ref(), "timerCreated event", "fireAt")?,
        },
        EventType::TimerFired(t) => EventKind::TimerFired {
            fire_at: required_timestamp(t.fire_at.as_ref(), "timerFired event", "fireAt")?,
            timer_id: t.timer_id,
        },
        EventType::OrchestratorStarted(_) => EventKind::OrchestratorStarted,
        EventType::OrchestratorCompleted(_) => EventKind::OrchestratorCompleted,
        EventType::EventSent(s) => EventKind::EventSent {
            instance_id: s.instance_id,
            name: s.name,
            input: payload(s.input),
        },
        EventType::EventRaised(r) => EventKind::EventRaised {
            name: r.name,
            input: payload(r.input),
        },
        EventType::ContinueAsNew(c) => EventKind::ContinueAsNew {
            input: payload(c.input),
        },
        EventType::ExecutionSuspended(s) => EventKind::ExecutionSuspended {
            input: payload(s.input),
        },
        EventType::ExecutionResumed(r) => EventKind::ExecutionResumed {
            input: payload(r.input),
        },
        EventType::ExecutionRewound(r) => EventKind::ExecutionRewound {
            reason: opt_string(r.reason),
        },
        EventType::EntityOperationCalled(c) => {
            let (instance_id, name, input) = entities::message_from_proto(
                EntityMessageType::EntityOperationCalled(c),
                "entityOperationCalled event",
            )?;
            EventKind::EventSent {
                instance_id,
                name,
                input,
            }
        }
        EventType::EntityOperationSignaled(s) => {
            let (instance_id, name, input) = entities::message_from_proto(
                EntityMessageType::EntityOperationSignaled(s),
                "entityOperationSignaled event",
            )?;
            EventKind::EventSent {
                instance_id,
                name,
                input,
            }
        }
        EventType::EntityOperationCompleted(c) => {
            entities::response_from_proto(&c.request_id, c.output, None)
        }
        EventType::EntityOperationFailed(f) => entities::response_from_proto(
            &f.request_id,
            None,
            Some(entities::failure_or_unknown(f.failure_details)),
        ),
        EventType::EntityLockRequested(_)
        | EventType::EntityLockGranted(_)
        | EventType::EntityUnlockSent(_) => return Err(ConvertError::UnsupportedEntityLock),
    };
    Ok(HistoryEvent {
        event_id,
        timestamp,
        kind,
        trace: trace.map(Box::new),
    })
}

/// Converts a list of protocol history events.
pub(crate) fn events_from_proto(events: Vec<proto::HistoryEvent>) -> Result<Vec<HistoryEvent>> {
    events.into_iter().map(event_from_proto).collect()
}

// ---- actions ----

/// Converts an orchestrator action to the protocol's message.
pub(crate) fn action_to_proto(a: &OrchestratorAction) -> proto::OrchestratorAction {
    let action = match &a.kind {
        ActionKind::ScheduleTask {
            name,
            version,
            input,
            tags,
        } => OrchestratorActionType::ScheduleTask(proto::ScheduleTaskAction {
            name: name.clone(),
            version: version.clone(),
            input: input.clone(),
            tags: tags_to_proto(tags),
            parent_trace_context: trace_to_proto(a.trace.as_ref()),
        }),
        ActionKind::CreateSubOrchestration {
            instance_id,
            name,
            version,
            input,
        } => OrchestratorActionType::CreateSubOrchestration(proto::CreateSubOrchestrationAction {
            instance_id: instance_id.clone(),
            name: name.clone(),
            version: version.clone(),
            input: input.clone(),
            parent_trace_context: trace_to_proto(a.trace.as_ref()),
        }),
        ActionKind::CreateTimer { fire_at } => {
            OrchestratorActionType::CreateTimer(proto::CreateTimerAction {
                fire_at: Some(timestamp_to_proto(fire_at)),
            })
        }
        ActionKind::SendEvent {
            instance_id,
            name,
            data,
        } if entities::message_to_proto(instance_id, name, data.as_deref(), a.id).is_some() => {
            OrchestratorActionType::SendEntityMessage(proto::SendEntityMessageAction {
                entity_message_type: entities::message_to_proto(
                    instance_id,
                    name,
                    data.as_deref(),
                    a.id,
                ),
            })
        }
        ActionKind::SendEvent {
            instance_id,
            name,
            data,
        } => OrchestratorActionType::SendEvent(proto::SendEventAction {
            instance: Some(proto::OrchestrationInstance {
                instance_id: instance_id.clone(),
                execution_id: None,
            }),
            name: name.clone(),
            data: data.clone(),
        }),
        ActionKind::CompleteOrchestration {
            status,
            result,
            failure,
            new_version,
            carryover_events,
        } => OrchestratorActionType::CompleteOrchestration(proto::CompleteOrchestrationAction {
            orchestration_status: status_to_proto(*status),
            result: result.clone(),
            details: None,
            new_version: new_version.clone(),
            carryover_events: carryover_events.iter().map(event_to_proto).collect(),
            failure_details: failure.as_ref().map(failure_to_proto),
        }),
        ActionKind::TerminateOrchestration {
            instance_id,
            reason,
            recurse,
        } => OrchestratorActionType::TerminateOrchestration(proto::TerminateOrchestrationAction {
            instance_id: instance_id.clone(),
            reason: reason.clone(),
            recurse: *recurse,
        }),
        ActionKind::RewindOrchestration { new_history } => {
            OrchestratorActionType::RewindOrchestration(proto::RewindOrchestrationAction {
                new_history: new_history.iter().map(event_to_proto).collect(),
            })
        }
    };
    proto::OrchestratorAction {
        id: a.id,
        orchestrator_action_type: Some(action),
    }
}

/// Converts the protocol's orchestrator action (what a sidecar reads: the
/// server, and tests).
#[cfg_attr(not(any(test, feature = "server")), allow(dead_code))]
pub(crate) fn action_from_proto(a: proto::OrchestratorAction) -> Result<OrchestratorAction> {
    let id = a.id;
    let mut trace = None;
    let kind = match a
        .orchestrator_action_type
        .ok_or(ConvertError::UnsupportedAction { id })?
    {
        OrchestratorActionType::ScheduleTask(t) => {
            trace = trace_from_proto(t.parent_trace_context);
            ActionKind::ScheduleTask {
                name: t.name,
                version: opt_string(t.version),
                input: payload(t.input),
                tags: tags_from_proto(t.tags),
            }
        }
        OrchestratorActionType::CreateSubOrchestration(s) => {
            trace = trace_from_proto(s.parent_trace_context);
            ActionKind::CreateSubOrchestration {
                instance_id: s.instance_id,
                name: s.name,
                version: opt_string(s.version),
                input: payload(s.input),
            }
        }
        OrchestratorActionType::CreateTimer(t) => ActionKind::CreateTimer {
            fire_at: required_timestamp(t.fire_at.as_ref(), "createTimer action", "fireAt")?,
        },
        OrchestratorActionType::SendEvent(s) => ActionKind::SendEvent {
            instance_id: s.instance.unwrap_or_default().instance_id,
            name: s.name,
            data: payload(s.data),
        },
        OrchestratorActionType::CompleteOrchestration(c) => ActionKind::CompleteOrchestration {
            status: status_from_proto(c.orchestration_status)?,
            result: payload(c.result),
            failure: c.failure_details.map(failure_from_proto),
            new_version: opt_string(c.new_version),
            carryover_events: events_from_proto(c.carryover_events)?,
        },
        OrchestratorActionType::TerminateOrchestration(t) => ActionKind::TerminateOrchestration {
            instance_id: t.instance_id,
            reason: payload(t.reason),
            recurse: t.recurse,
        },
        OrchestratorActionType::RewindOrchestration(r) => ActionKind::RewindOrchestration {
            new_history: events_from_proto(r.new_history)?,
        },
        OrchestratorActionType::SendEntityMessage(m) => {
            let message = m
                .entity_message_type
                .ok_or(ConvertError::UnsupportedAction { id })?;
            let (instance_id, name, data) =
                entities::message_from_proto(message, "sendEntityMessage action")?;
            ActionKind::SendEvent {
                instance_id,
                name,
                data,
            }
        }
    };
    Ok(OrchestratorAction { id, kind, trace })
}

// ---- client-side messages ----

/// Converts the protocol's instance state to metadata.
pub(crate) fn metadata_from_proto(s: proto::OrchestrationState) -> Result<InstanceMetadata> {
    let status = status_from_proto(s.orchestration_status)?;
    let created_at = timestamp_or_epoch(s.created_timestamp.as_ref())?;
    Ok(InstanceMetadata {
        instance_id: s.instance_id,
        execution_id: s.execution_id.unwrap_or_default(),
        name: s.name,
        version: opt_string(s.version),
        status,
        input: payload(s.input),
        output: payload(s.output),
        custom_status: payload(s.custom_status),
        failure: s.failure_details.map(failure_from_proto),
        created_at,
        last_updated_at: opt_timestamp(s.last_updated_timestamp.as_ref())?.unwrap_or(created_at),
        completed_at: opt_timestamp(s.completed_timestamp.as_ref())?,
        scheduled_start: opt_timestamp(s.scheduled_start_timestamp.as_ref())?,
        parent_instance_id: opt_string(s.parent_instance_id),
        tags: tags_from_proto(s.tags),
    })
}

/// Converts metadata to the protocol's instance state (for the server and tests).
#[cfg_attr(not(any(test, feature = "server")), allow(dead_code))]
pub(crate) fn metadata_to_proto(m: &InstanceMetadata) -> proto::OrchestrationState {
    proto::OrchestrationState {
        instance_id: m.instance_id.clone(),
        name: m.name.clone(),
        version: m.version.clone(),
        orchestration_status: status_to_proto(m.status),
        scheduled_start_timestamp: m.scheduled_start.as_ref().map(timestamp_to_proto),
        created_timestamp: Some(timestamp_to_proto(&m.created_at)),
        last_updated_timestamp: Some(timestamp_to_proto(&m.last_updated_at)),
        input: m.input.clone(),
        output: m.output.clone(),
        custom_status: m.custom_status.clone(),
        failure_details: m.failure.as_ref().map(failure_to_proto),
        execution_id: Some(m.execution_id.clone()).filter(|s| !s.is_empty()),
        completed_timestamp: m.completed_at.as_ref().map(timestamp_to_proto),
        parent_instance_id: m.parent_instance_id.clone(),
        tags: tags_to_proto(&m.tags),
    }
}

/// Converts a query to the protocol's message.
pub(crate) fn query_to_proto(q: &InstanceQuery) -> proto::InstanceQuery {
    proto::InstanceQuery {
        runtime_status: q.statuses.iter().map(|s| status_to_proto(*s)).collect(),
        created_time_from: q.created_from.as_ref().map(timestamp_to_proto),
        created_time_to: q.created_to.as_ref().map(timestamp_to_proto),
        max_instance_count: i32::try_from(q.effective_page_size()).unwrap_or(i32::MAX),
        continuation_token: q.continuation_token.clone(),
        instance_id_prefix: q.instance_id_prefix.clone(),
        fetch_inputs_and_outputs: q.fetch_payloads,
    }
}

/// Converts a purge target to the protocol's request.
pub(crate) fn purge_to_proto(t: &PurgeTarget, recursive: bool) -> proto::PurgeInstancesRequest {
    use proto::purge_instances_request::Request;
    let request = match t {
        PurgeTarget::Instance(id) => Request::InstanceId(id.clone()),
        PurgeTarget::Filter {
            created_from,
            created_to,
            statuses,
        } => Request::PurgeInstanceFilter(proto::PurgeInstanceFilter {
            created_time_from: created_from.as_ref().map(timestamp_to_proto),
            created_time_to: created_to.as_ref().map(timestamp_to_proto),
            runtime_status: statuses.iter().map(|s| status_to_proto(*s)).collect(),
        }),
    };
    proto::PurgeInstancesRequest {
        request: Some(request),
        recursive,
        is_orchestration: true,
    }
}

/// Converts a request to create an instance to the protocol's message. The
/// reuse policy is always sent, so an empty list means "never reuse".
pub(crate) fn create_request_to_proto(r: CreateInstanceRequest) -> proto::CreateInstanceRequest {
    proto::CreateInstanceRequest {
        instance_id: r.instance_id,
        name: r.name,
        version: r.version,
        input: r.input,
        scheduled_start_timestamp: r.scheduled_start.as_ref().map(timestamp_to_proto),
        orchestration_id_reuse_policy: Some(proto::OrchestrationIdReusePolicy {
            replaceable_status: r
                .reuse_policy
                .replaceable
                .iter()
                .map(|s| status_to_proto(*s))
                .collect(),
        }),
        parent_trace_context: trace_to_proto(r.trace.as_ref()),
        tags: tags_to_proto(&r.tags),
    }
}

/// Converts the protocol's request to create an instance. An absent reuse
/// policy is durable's default (replace finished instances only); a policy
/// that is present is taken as it is, so an empty one means "never reuse".
#[cfg_attr(not(any(test, feature = "server")), allow(dead_code))]
pub(crate) fn create_request_from_proto(
    r: proto::CreateInstanceRequest,
) -> Result<CreateInstanceRequest> {
    let reuse_policy = match r.orchestration_id_reuse_policy {
        None => IdReusePolicy::default(),
        Some(p) => IdReusePolicy {
            replaceable: p
                .replaceable_status
                .into_iter()
                .map(status_from_proto)
                .collect::<Result<_>>()?,
        },
    };
    Ok(CreateInstanceRequest {
        instance_id: r.instance_id,
        name: r.name,
        version: opt_string(r.version),
        input: payload(r.input),
        scheduled_start: opt_timestamp(r.scheduled_start_timestamp.as_ref())?,
        reuse_policy,
        trace: trace_from_proto(r.parent_trace_context),
        tags: tags_from_proto(r.tags),
    })
}

/// Converts the protocol's query. A page size of 0 or less means the
/// backend's default.
#[cfg_attr(not(any(test, feature = "server")), allow(dead_code))]
pub(crate) fn query_from_proto(q: proto::InstanceQuery) -> Result<InstanceQuery> {
    Ok(InstanceQuery {
        statuses: q
            .runtime_status
            .into_iter()
            .map(status_from_proto)
            .collect::<Result<_>>()?,
        created_from: opt_timestamp(q.created_time_from.as_ref())?,
        created_to: opt_timestamp(q.created_time_to.as_ref())?,
        instance_id_prefix: opt_string(q.instance_id_prefix),
        page_size: usize::try_from(q.max_instance_count).unwrap_or(0),
        continuation_token: opt_string(q.continuation_token),
        fetch_payloads: q.fetch_inputs_and_outputs,
    })
}

/// Converts the protocol's purge request to a target and whether to
/// recurse; `None` when it names neither an instance nor a filter.
#[cfg_attr(not(any(test, feature = "server")), allow(dead_code))]
pub(crate) fn purge_from_proto(
    r: proto::PurgeInstancesRequest,
) -> Result<Option<(PurgeTarget, bool)>> {
    use proto::purge_instances_request::Request;
    let target = match r.request {
        None => return Ok(None),
        Some(Request::InstanceId(id)) => PurgeTarget::Instance(id),
        Some(Request::PurgeInstanceFilter(f)) => PurgeTarget::Filter {
            created_from: opt_timestamp(f.created_time_from.as_ref())?,
            created_to: opt_timestamp(f.created_time_to.as_ref())?,
            statuses: f
                .runtime_status
                .into_iter()
                .map(status_from_proto)
                .collect::<Result<_>>()?,
        },
    };
    Ok(Some((target, r.recursive)))
}

// ---- work items ----

/// The execution id of an orchestration work item: the request's, else the
/// one its `ExecutionStarted` records, else empty (some sidecars send none).
fn execution_id_of(request_id: Option<String>, events: &[&[HistoryEvent]]) -> String {
    opt_string(request_id)
        .or_else(|| {
            events
                .iter()
                .flat_map(|es| es.iter())
                .find_map(|e| match &e.kind {
                    EventKind::ExecutionStarted { execution_id, .. } => execution_id.clone(),
                    _ => None,
                })
        })
        .unwrap_or_default()
}

/// The orchestration span a sidecar sent with an episode; `None` when it
/// sent none or its span id is not 16 lowercase hex digits (then durable's
/// derived span is used).
pub(crate) fn orchestration_span_from_proto(
    t: Option<proto::OrchestrationTraceContext>,
) -> Option<OrchestrationSpan> {
    let t = t?;
    let span_id = t
        .span_id
        .as_deref()
        .and_then(durable_runtime::trace::SpanId::parse);
    let start = t
        .span_start_time
        .as_ref()
        .and_then(|t| timestamp_from_proto(t).ok());
    (span_id.is_some() || start.is_some()).then_some(OrchestrationSpan { span_id, start })
}

/// Builds an orchestration work item from the protocol's request. The past
/// events are passed separately because a sidecar may ask the worker to
/// stream them (`requiresHistoryStreaming`).
pub(crate) fn orchestration_item_from_proto(
    r: proto::OrchestratorRequest,
    past_events: Vec<HistoryEvent>,
    completion_token: String,
) -> Result<OrchestrationWorkItem> {
    let new_events = events_from_proto(r.new_events)?;
    let execution_id = execution_id_of(r.execution_id, &[&past_events, &new_events]);
    Ok(OrchestrationWorkItem {
        instance_id: r.instance_id,
        execution_id,
        past_events: past_events.into(),
        new_events,
        completion_token,
        orchestration_span: orchestration_span_from_proto(r.orchestration_trace_context),
    })
}

/// Builds an activity work item from the protocol's request.
pub(crate) fn activity_item_from_proto(
    r: proto::ActivityRequest,
    completion_token: String,
) -> ActivityWorkItem {
    let instance = r.orchestration_instance.unwrap_or_default();
    ActivityWorkItem {
        instance_id: instance.instance_id,
        execution_id: instance.execution_id.unwrap_or_default(),
        name: r.name,
        version: opt_string(r.version),
        input: payload(r.input),
        task_id: r.task_id,
        completion_token,
        tags: tags_from_proto(r.tags),
        trace: trace_from_proto(r.parent_trace_context),
    }
}

/// An orchestration work item as the protocol's work item, under a
/// completion token of the server's (not the backend's own).
#[cfg_attr(not(any(test, feature = "server")), allow(dead_code))]
pub(crate) fn orchestration_item_to_proto(
    item: &OrchestrationWorkItem,
    completion_token: String,
) -> proto::WorkItem {
    proto::WorkItem {
        request: Some(proto::work_item::Request::OrchestratorRequest(
            proto::OrchestratorRequest {
                instance_id: item.instance_id.clone(),
                execution_id: Some(item.execution_id.clone()).filter(|s| !s.is_empty()),
                past_events: item.past_events.iter().map(event_to_proto).collect(),
                new_events: item.new_events.iter().map(event_to_proto).collect(),
                requires_history_streaming: false,
                orchestration_trace_context: orchestration_trace_to_proto(item),
            },
        )),
        completion_token,
    }
}

/// An activity work item as the protocol's work item, under a completion
/// token of the server's.
#[cfg_attr(not(any(test, feature = "server")), allow(dead_code))]
pub(crate) fn activity_item_to_proto(
    item: &ActivityWorkItem,
    completion_token: String,
) -> proto::WorkItem {
    proto::WorkItem {
        request: Some(proto::work_item::Request::ActivityRequest(
            proto::ActivityRequest {
                name: item.name.clone(),
                version: item.version.clone(),
                input: item.input.clone(),
                orchestration_instance: Some(proto::OrchestrationInstance {
                    instance_id: item.instance_id.clone(),
                    execution_id: Some(item.execution_id.clone()).filter(|s| !s.is_empty()),
                }),
                task_id: item.task_id,
                tags: tags_to_proto(&item.tags),
                parent_trace_context: trace_to_proto(item.trace.as_ref()),
            },
        )),
        completion_token,
    }
}

/// Converts a worker's episode result (its actions and custom status). The
/// protocol cannot say which timers were dropped, so none are cancelled.
#[cfg_attr(not(any(test, feature = "server")), allow(dead_code))]
pub(crate) fn orchestrator_result_from_proto(
    r: proto::OrchestratorResponse,
) -> Result<OrchestratorResult> {
    Ok(OrchestratorResult {
        actions: r
            .actions
            .into_iter()
            .map(action_from_proto)
            .collect::<Result<_>>()?,
        custom_status: payload(r.custom_status),
        cancelled_timers: Vec::new(),
    })
}

/// Converts an activity's outcome to the protocol's result and failure.
/// Sidecars tell a failure from a success by a non-empty message, so a
/// failure without one gets its type, or a generic message, as its message.
pub(crate) fn activity_outcome_to_proto(
    outcome: TaskOutcome,
) -> (Option<String>, Option<proto::TaskFailureDetails>) {
    match outcome {
        Ok(result) => (result, None),
        Err(mut failure) => {
            if failure.message.is_empty() {
                failure.message = if failure.error_type.is_empty() {
                    "the activity failed".to_string()
                } else {
                    failure.error_type.clone()
                };
            }
            (None, Some(failure_to_proto(&failure)))
        }
    }
}

/// Converts a worker's activity response to its outcome: a failure if it
/// carries failure details, else its result.
#[cfg_attr(not(any(test, feature = "server")), allow(dead_code))]
pub(crate) fn activity_outcome_from_proto(r: proto::ActivityResponse) -> TaskOutcome {
    match r.failure_details {
        Some(f) => Err(failure_from_proto(f)),
        None => Ok(payload(r.result)),
    }
}

/// A task's tags on the wire (the protocol's `map<string, string>`).
fn tags_to_proto(tags: &BTreeMap<String, String>) -> HashMap<String, String> {
    tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect()
}

/// A task's tags from the wire, in key order.
fn tags_from_proto(tags: HashMap<String, String>) -> BTreeMap<String, String> {
    tags.into_iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use chrono::Utc;

    fn t(secs: i64, nanos: u32) -> Timestamp {
        Utc.timestamp_opt(secs, nanos).single().unwrap()
    }

    fn failure() -> FailureDetails {
        FailureDetails {
            error_type: "ValueError".into(),
            message: "bad input".into(),
            stack_trace: Some("at line 3".into()),
            inner: Some(Box::new(FailureDetails::new("IoError", "disk full"))),
            non_retriable: true,
        }
    }

    fn every_event_kind() -> Vec<EventKind> {
        vec![
            EventKind::ExecutionStarted {
                name: "order".into(),
                version: Some("2".into()),
                input: Some(r#"{"n":1}"#.into()),
                instance_id: "i-1".into(),
                execution_id: Some("e-1".into()),
                parent: Some(Box::new(ParentInstance {
                    instance_id: "p".into(),
                    execution_id: Some("pe".into()),
                    name: Some("parent".into()),
                    task_scheduled_id: 4,
                })),
                scheduled_start: Some(t(1_700_000_100, 5)),
                tags: Default::default(),
            },
            EventKind::ExecutionStarted {
                name: "plain".into(),
                version: None,
                input: None,
                instance_id: "i-2".into(),
                execution_id: None,
                parent: None,
                scheduled_start: None,
                tags: Default::default(),
            },
            EventKind::ExecutionCompleted {
                status: OrchestrationStatus::Failed,
                result: None,
                failure: Some(failure()),
            },
            EventKind::ExecutionCompleted {
                status: OrchestrationStatus::Completed,
                result: Some("42".into()),
                failure: None,
            },
            EventKind::ExecutionTerminated {
                input: Some(r#""stop""#.into()),
                recurse: true,
            },
            EventKind::TaskScheduled {
                name: "ship".into(),
                version: Some("1".into()),
                input: Some(r#"["a"]"#.into()),
                tags: tags(&[("durable.attempt", "2"), ("durable.first_task_id", "0")]),
            },
            EventKind::TaskScheduled {
                name: "untagged".into(),
                version: None,
                input: None,
                tags: BTreeMap::new(),
            },
            EventKind::TaskCompleted {
                task_scheduled_id: 3,
                result: Some("true".into()),
            },
            EventKind::TaskFailed {
                task_scheduled_id: 3,
                failure: failure(),
            },
            EventKind::SubOrchestrationInstanceCreated {
                instance_id: "child".into(),
                name: "sub".into(),
                version: None,
                input: Some("1".into()),
            },
            EventKind::SubOrchestrationInstanceCompleted {
                task_scheduled_id: 7,
                result: Some("null".into()),
            },
            EventKind::SubOrchestrationInstanceFailed {
                task_scheduled_id: 7,
                failure: FailureDetails::new("E", "m"),
            },
            EventKind::TimerCreated {
                fire_at: t(1_700_000_500, 123_456_789),
            },
            EventKind::TimerFired {
                fire_at: t(1_700_000_500, 123_456_789),
                timer_id: 9,
            },
            EventKind::OrchestratorStarted,
            EventKind::OrchestratorCompleted,
            EventKind::EventSent {
                instance_id: "other".into(),
                name: "ping".into(),
                input: Some("{}".into()),
            },
            EventKind::EventRaised {
                name: "approval".into(),
                input: Some("true".into()),
            },
            EventKind::ContinueAsNew {
                input: Some("5".into()),
            },
            EventKind::ExecutionSuspended {
                input: Some(r#""maintenance""#.into()),
            },
            EventKind::ExecutionResumed { input: None },
        ]
    }

    #[test]
    fn every_history_event_round_trips() {
        for (i, kind) in every_event_kind().into_iter().enumerate() {
            let event = HistoryEvent::with_id(i as i32 - 1, t(1_700_000_000 + i as i64, 7), kind);
            let wire = event_to_proto(&event);
            assert_eq!(event_from_proto(wire).unwrap(), event);
        }
    }

    #[test]
    fn every_event_survives_the_wire_encoding() {
        use prost::Message;
        for kind in every_event_kind() {
            let event = HistoryEvent::new(t(1_600_000_000, 0), kind);
            let bytes = event_to_proto(&event).encode_to_vec();
            let decoded = proto::HistoryEvent::decode(bytes.as_slice()).unwrap();
            assert_eq!(event_from_proto(decoded).unwrap(), event);
        }
    }

    fn every_action_kind() -> Vec<ActionKind> {
        vec![
            ActionKind::ScheduleTask {
                name: "ship".into(),
                version: Some("3".into()),
                input: Some(r#""x""#.into()),
                tags: tags(&[("durable.attempt", "3"), ("durable.first_task_id", "1")]),
            },
            ActionKind::ScheduleTask {
                name: "noinput".into(),
                version: None,
                input: None,
                tags: BTreeMap::new(),
            },
            ActionKind::CreateSubOrchestration {
                instance_id: "c".into(),
                name: "sub".into(),
                version: None,
                input: Some("[1,2]".into()),
            },
            ActionKind::CreateTimer {
                fire_at: t(1_800_000_000, 1),
            },
            ActionKind::SendEvent {
                instance_id: "o".into(),
                name: "go".into(),
                data: Some("1".into()),
            },
            ActionKind::CompleteOrchestration {
                status: OrchestrationStatus::ContinuedAsNew,
                result: Some("7".into()),
                failure: None,
                new_version: Some("v2".into()),
                carryover_events: vec![HistoryEvent::new(
                    t(1_700_000_000, 0),
                    EventKind::EventRaised {
                        name: "e".into(),
                        input: Some("1".into()),
                    },
                )],
            },
            ActionKind::CompleteOrchestration {
                status: OrchestrationStatus::Failed,
                result: None,
                failure: Some(failure()),
                new_version: None,
                carryover_events: vec![],
            },
            ActionKind::TerminateOrchestration {
                instance_id: "t".into(),
                reason: Some(r#""why""#.into()),
                recurse: true,
            },
        ]
    }

    #[test]
    fn every_action_round_trips() {
        for (id, kind) in every_action_kind().into_iter().enumerate() {
            let action = OrchestratorAction {
                id: id as i32,
                kind,
                trace: None,
            };
            assert_eq!(action_from_proto(action_to_proto(&action)).unwrap(), action);
        }
    }

    #[test]
    fn metadata_round_trips() {
        let m = InstanceMetadata {
            instance_id: "i".into(),
            execution_id: "e".into(),
            name: "n".into(),
            version: Some("1".into()),
            status: OrchestrationStatus::Failed,
            input: Some("1".into()),
            output: Some("2".into()),
            custom_status: Some(r#""half""#.into()),
            failure: Some(failure()),
            created_at: t(1_700_000_000, 0),
            last_updated_at: t(1_700_000_001, 0),
            completed_at: Some(t(1_700_000_002, 0)),
            scheduled_start: Some(t(1_699_999_999, 0)),
            parent_instance_id: Some("p".into()),
            tags: Default::default(),
        };
        assert_eq!(metadata_from_proto(metadata_to_proto(&m)).unwrap(), m);
    }

    #[test]
    fn every_status_round_trips_and_unknown_ones_are_errors() {
        for s in OrchestrationStatus::ALL {
            assert_eq!(status_from_proto(status_to_proto(s)).unwrap(), s);
        }
        assert_eq!(status_from_proto(99), Err(ConvertError::UnknownStatus(99)));
    }

    #[test]
    fn empty_payloads_read_as_none() {
        let wire = proto::HistoryEvent {
            event_id: -1,
            timestamp: None,
            event_type: Some(EventType::EventRaised(proto::EventRaisedEvent {
                name: "e".into(),
                input: Some(String::new()),
            })),
        };
        let event = event_from_proto(wire).unwrap();
        assert_eq!(event.timestamp, DateTime::UNIX_EPOCH);
        assert_eq!(
            event.kind,
            EventKind::EventRaised {
                name: "e".into(),
                input: None
            }
        );
    }

    #[test]
    fn peer_bytes_that_do_not_fit_the_model_are_errors_not_panics() {
        let unknown = proto::HistoryEvent {
            event_id: 12,
            timestamp: None,
            event_type: None,
        };
        assert_eq!(
            event_from_proto(unknown),
            Err(ConvertError::UnsupportedEvent { event_id: 12 })
        );
        let bad_time = proto::HistoryEvent {
            event_id: -1,
            timestamp: Some(prost_types::Timestamp {
                seconds: 0,
                nanos: -5,
            }),
            event_type: Some(EventType::OrchestratorStarted(
                proto::OrchestratorStartedEvent {},
            )),
        };
        assert!(matches!(
            event_from_proto(bad_time),
            Err(ConvertError::InvalidTimestamp { .. })
        ));
        let no_fire_at = proto::HistoryEvent {
            event_id: 1,
            timestamp: None,
            event_type: Some(EventType::TimerCreated(proto::TimerCreatedEvent {
                fire_at: None,
            })),
        };
        assert_eq!(
            event_from_proto(no_fire_at).unwrap_err().to_string(),
            "timerCreated event has no fireAt"
        );
        let no_failure = proto::HistoryEvent {
            event_id: -1,
            timestamp: None,
            event_type: Some(EventType::TaskFailed(proto::TaskFailedEvent {
                task_scheduled_id: 1,
                failure_details: None,
            })),
        };
        assert!(event_from_proto(no_failure).is_err());
        let huge = prost_types::Timestamp {
            seconds: i64::MAX,
            nanos: 0,
        };
        assert!(timestamp_from_proto(&huge).is_err());
    }

    #[test]
    fn work_items_take_the_execution_id_from_execution_started() {
        let started = HistoryEvent::new(
            t(1_700_000_000, 0),
            EventKind::ExecutionStarted {
                name: "n".into(),
                version: None,
                input: None,
                instance_id: "i".into(),
                execution_id: Some("exec-9".into()),
                parent: None,
                scheduled_start: None,
                tags: Default::default(),
            },
        );
        let request = proto::OrchestratorRequest {
            instance_id: "i".into(),
            execution_id: None,
            past_events: vec![],
            new_events: vec![
                event_to_proto(&HistoryEvent::new(
                    t(1_700_000_000, 0),
                    EventKind::OrchestratorStarted,
                )),
                event_to_proto(&started),
            ],
            requires_history_streaming: false,
            orchestration_trace_context: None,
        };
        let item = orchestration_item_from_proto(request, vec![], "tok".into()).unwrap();
        assert_eq!(item.execution_id, "exec-9");
        assert_eq!(item.completion_token, "tok");
        assert_eq!(item.new_events.len(), 2);
        assert_eq!(item.new_events[1], started);
    }

    #[test]
    fn activity_items_carry_everything_the_worker_needs() {
        let request = proto::ActivityRequest {
            name: "ship".into(),
            version: Some(String::new()),
            input: Some(r#""x""#.into()),
            orchestration_instance: Some(proto::OrchestrationInstance {
                instance_id: "i".into(),
                execution_id: Some("e".into()),
            }),
            task_id: 4,
            parent_trace_context: None,
            tags: [("durable.attempt".to_string(), "2".to_string())].into(),
        };
        let item = activity_item_from_proto(request, "7".into());
        assert_eq!(
            item,
            ActivityWorkItem {
                instance_id: "i".into(),
                execution_id: "e".into(),
                name: "ship".into(),
                version: None,
                input: Some(r#""x""#.into()),
                task_id: 4,
                completion_token: "7".into(),
                tags: tags(&[("durable.attempt", "2")]),
                trace: None,
            }
        );
    }

    #[test]
    fn create_requests_round_trip_and_an_absent_policy_is_the_default() {
        let r = CreateInstanceRequest {
            instance_id: "i".into(),
            name: "o".into(),
            version: Some("2".into()),
            input: Some("[1]".into()),
            scheduled_start: Some(t(1_700_000_000, 9)),
            reuse_policy: IdReusePolicy::never(),
            trace: None,
            tags: Default::default(),
        };
        let wire = create_request_to_proto(r.clone());
        assert_eq!(create_request_from_proto(wire.clone()).unwrap(), r);
        let no_policy = proto::CreateInstanceRequest {
            orchestration_id_reuse_policy: None,
            ..wire
        };
        assert_eq!(
            create_request_from_proto(no_policy).unwrap().reuse_policy,
            IdReusePolicy::default()
        );
    }

    #[test]
    fn queries_and_purges_round_trip() {
        let q = InstanceQuery {
            statuses: vec![OrchestrationStatus::Running, OrchestrationStatus::Failed],
            created_from: Some(t(1_700_000_000, 0)),
            created_to: Some(t(1_700_000_100, 0)),
            instance_id_prefix: Some("order-".into()),
            page_size: 7,
            continuation_token: Some("next".into()),
            fetch_payloads: true,
        };
        assert_eq!(query_from_proto(query_to_proto(&q)).unwrap(), q);
        let targets = [
            PurgeTarget::Instance("i".into()),
            PurgeTarget::Filter {
                created_from: Some(t(1_700_000_000, 0)),
                created_to: None,
                statuses: vec![OrchestrationStatus::Completed],
            },
        ];
        for target in targets {
            for recursive in [false, true] {
                assert_eq!(
                    purge_from_proto(purge_to_proto(&target, recursive)).unwrap(),
                    Some((target.clone(), recursive))
                );
            }
        }
        assert_eq!(
            purge_from_proto(proto::PurgeInstancesRequest::default()).unwrap(),
            None
        );
        // A newer client's batch of ids (field 4, `instanceBatch`, holding
        // `instanceIds: ["x"]`), recursive: read as naming nothing, so the
        // server refuses it rather than purging something else.
        let batch = [0x22, 0x03, 0x0a, 0x01, b'x', 0x18, 0x01];
        let decoded = <proto::PurgeInstancesRequest as prost::Message>::decode(&batch[..]).unwrap();
        assert!(decoded.recursive);
        assert_eq!(purge_from_proto(decoded).unwrap(), None);
    }

    #[test]
    fn work_items_round_trip_under_the_servers_token() {
        let started = HistoryEvent::new(
            t(1_700_000_000, 0),
            EventKind::ExecutionStarted {
                name: "n".into(),
                version: None,
                input: Some("1".into()),
                instance_id: "i".into(),
                execution_id: Some("e".into()),
                parent: None,
                scheduled_start: None,
                tags: Default::default(),
            },
        );
        let item = OrchestrationWorkItem {
            instance_id: "i".into(),
            execution_id: "e".into(),
            past_events: std::sync::Arc::new(vec![started]),
            new_events: vec![HistoryEvent::new(
                t(1_700_000_001, 0),
                EventKind::OrchestratorStarted,
            )],
            completion_token: "backend-token".into(),
            orchestration_span: None,
        };
        let wire = orchestration_item_to_proto(&item, "server-token".into());
        assert_eq!(wire.completion_token, "server-token");
        let Some(proto::work_item::Request::OrchestratorRequest(r)) = wire.request else {
            panic!("an orchestrator request");
        };
        let past = events_from_proto(r.past_events.clone()).unwrap();
        let sent = orchestration_span_from_proto(r.orchestration_trace_context.clone());
        let back = orchestration_item_from_proto(r, past, "server-token".into()).unwrap();
        // The server sends the span it derives; the worker takes it.
        let derived = durable_runtime::observe::ExecutionTrace::of(
            "i",
            "e",
            &item.past_events,
            &item.new_events,
            (None, None),
        )
        .unwrap();
        assert_eq!(sent.unwrap().span_id, derived.context.span_id());
        assert_eq!(sent.unwrap().start, Some(derived.start));
        assert_eq!(
            back,
            OrchestrationWorkItem {
                completion_token: "server-token".into(),
                orchestration_span: sent,
                ..item
            }
        );

        let activity = ActivityWorkItem {
            instance_id: "i".into(),
            execution_id: "e".into(),
            name: "ship".into(),
            version: Some("1".into()),
            input: Some("2".into()),
            task_id: 3,
            completion_token: "backend-token".into(),
            tags: tags(&[("durable.attempt", "2")]),
            trace: None,
        };
        let wire = activity_item_to_proto(&activity, "server-token".into());
        let Some(proto::work_item::Request::ActivityRequest(r)) = wire.request else {
            panic!("an activity request");
        };
        assert_eq!(
            activity_item_from_proto(r, "server-token".into()),
            ActivityWorkItem {
                completion_token: "server-token".into(),
                ..activity
            }
        );
    }

    #[test]
    fn results_and_outcomes_round_trip() {
        let actions: Vec<OrchestratorAction> = every_action_kind()
            .into_iter()
            .enumerate()
            .map(|(id, kind)| OrchestratorAction {
                id: id as i32,
                kind,
                trace: None,
            })
            .collect();
        let wire = proto::OrchestratorResponse {
            instance_id: "i".into(),
            actions: actions.iter().map(action_to_proto).collect(),
            custom_status: Some("\"half\"".into()),
            completion_token: "t".into(),
            orchestration_trace_context: None,
        };
        let result = orchestrator_result_from_proto(wire).unwrap();
        assert_eq!(result.actions, actions);
        assert_eq!(result.custom_status.as_deref(), Some("\"half\""));
        assert!(result.cancelled_timers.is_empty());

        let response = |(result, failure_details)| proto::ActivityResponse {
            result,
            failure_details,
            ..Default::default()
        };
        for outcome in [Ok(Some("1".to_string())), Ok(None), Err(failure())] {
            let back =
                activity_outcome_from_proto(response(activity_outcome_to_proto(outcome.clone())));
            assert_eq!(back, outcome);
        }
        // A failure with no message gets one, so peers see a failure.
        let silent = FailureDetails::new("E", "");
        let back = activity_outcome_from_proto(response(activity_outcome_to_proto(Err(silent))));
        assert_eq!(back.unwrap_err().message, "E");
    }

    fn tags(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }
}
