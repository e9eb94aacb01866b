//! Entities between durable's model and the protocol's.
//!
//! In durable an entity is an `@name@key` instance: an operation is an
//! event named [`ENTITY_EVENT`] carrying an [`EntityMessage`], its answer an
//! event named `@response@<request id>` carrying an [`EntityResponse`]
//! (see docs/entities.md). The protocol has messages of their own for
//! these: `entityOperationCalled` / `entityOperationSignaled` (as history
//! events and as `sendEntityMessage` actions), `entityOperationCompleted`
//! / `entityOperationFailed`, and entity work items whose results are
//! `EntityBatchResult`s. Every mapping between the two lives here.
//!
//! Locks (durable's `Lock` / `Unlock` messages, the protocol's
//! `entityLockRequested` / `entityUnlockSent` / `entityLockGranted`) are
//! not mapped: durable's critical sections go over the protocol as plain
//! events, which durable's own server and workers understand.

use super::{
    failure_from_proto, failure_to_proto, opt_string, opt_timestamp, payload, timestamp_to_proto,
    ConvertError, Result,
};
use crate::proto;
use durable_runtime::actions::{ActionKind, OrchestratorResult};
use durable_runtime::backend::OrchestrationWorkItem;
use durable_runtime::entity::{
    response_event_name, EntityId, EntityMessage, EntityResponse, EntitySnapshot, RemoteOperation,
    RemoteOutcome, ENTITY_EVENT,
};
use durable_runtime::history::Timestamp;
use durable_runtime::history::{EventKind, FailureDetails, HistoryEvent, OrchestrationStatus};
use proto::send_entity_message_action::EntityMessageType;
use std::sync::Arc;

/// The prefix of the response event names.
const RESPONSE_PREFIX: &str = "@response@";

/// Marks the completion token of a work item durable built from an entity
/// work item, so that completing or abandoning it uses the entity calls.
pub(crate) const ENTITY_TOKEN: &str = "@entity-batch@";

/// The protocol's entity message for a durable send: an operation called
/// (it has a request id) or signalled, to an `@name@key` instance. `None`
/// for anything else (other events, and locks).
pub(crate) fn message_to_proto(
    target: &str,
    name: &str,
    data: Option<&str>,
    sequence: i32,
) -> Option<EntityMessageType> {
    if !name.eq_ignore_ascii_case(ENTITY_EVENT) || target.parse::<EntityId>().is_err() {
        return None;
    }
    let EntityMessage::Operation {
        op,
        input,
        request_id,
        parent,
        scheduled_time,
    } = serde_json::from_str::<EntityMessage>(data?).ok()?
    else {
        return None;
    };
    let scheduled_time = scheduled_time.as_ref().map(timestamp_to_proto);
    Some(match request_id {
        Some(request_id) => {
            EntityMessageType::EntityOperationCalled(proto::EntityOperationCalledEvent {
                request_id,
                operation: op,
                scheduled_time,
                input,
                parent_instance_id: parent,
                parent_execution_id: None,
                target_instance_id: Some(target.to_string()),
            })
        }
        None => EntityMessageType::EntityOperationSignaled(proto::EntityOperationSignaledEvent {
            // A signal is answered by no one; its id only names it.
            request_id: format!("{target}#{sequence}"),
            operation: op,
            scheduled_time,
            input,
            target_instance_id: Some(target.to_string()),
        }),
    })
}

/// The durable send (target, event name, data) of the protocol's entity
/// message. Lock messages are refused: durable does not take the
/// protocol's critical sections.
pub(crate) fn message_from_proto(
    m: EntityMessageType,
    what: &'static str,
) -> Result<(String, String, Option<String>)> {
    let target = |t: Option<String>| {
        opt_string(t).ok_or(ConvertError::MissingField {
            message: what,
            field: "targetInstanceId",
        })
    };
    let (target, message) = match m {
        EntityMessageType::EntityOperationCalled(c) => (
            target(c.target_instance_id)?,
            EntityMessage::Operation {
                op: c.operation,
                input: payload(c.input),
                request_id: Some(c.request_id),
                parent: opt_string(c.parent_instance_id),
                scheduled_time: opt_timestamp(c.scheduled_time.as_ref())?,
            },
        ),
        EntityMessageType::EntityOperationSignaled(s) => (
            target(s.target_instance_id)?,
            EntityMessage::Operation {
                op: s.operation,
                input: payload(s.input),
                request_id: None,
                parent: None,
                scheduled_time: opt_timestamp(s.scheduled_time.as_ref())?,
            },
        ),
        EntityMessageType::EntityLockRequested(_) | EntityMessageType::EntityUnlockSent(_) => {
            return Err(ConvertError::UnsupportedEntityLock)
        }
    };
    let data = serde_json::to_string(&message).expect("an entity message is plain data");
    Ok((target, ENTITY_EVENT.to_string(), Some(data)))
}

/// The protocol's answer event for a durable response event
/// (`@response@<id>` carrying an [`EntityResponse`]); `None` for any other
/// event.
pub(crate) fn response_to_proto(
    name: &str,
    input: Option<&str>,
) -> Option<proto::history_event::EventType> {
    use proto::history_event::EventType;
    let request_id = name.strip_prefix(RESPONSE_PREFIX)?.to_string();
    let response: EntityResponse = serde_json::from_str(input?).ok()?;
    Some(match response.failure {
        Some(failure) => EventType::EntityOperationFailed(proto::EntityOperationFailedEvent {
            request_id,
            failure_details: Some(failure_to_proto(&failure)),
        }),
        None => EventType::EntityOperationCompleted(proto::EntityOperationCompletedEvent {
            request_id,
            output: response.result,
        }),
    })
}

/// The durable response event (name, data) of an operation's answer.
pub(crate) fn response_from_proto(
    request_id: &str,
    output: Option<String>,
    failure: Option<FailureDetails>,
) -> EventKind {
    let response = match failure {
        Some(failure) => EntityResponse {
            result: None,
            failure: Some(failure),
        },
        None => EntityResponse {
            result: payload(output),
            failure: None,
        },
    };
    EventKind::EventRaised {
        name: response_event_name(request_id),
        input: Some(serde_json::to_string(&response).expect("a response is plain data")),
    }
}

/// The failure of an `entityOperationFailed` event without details.
pub(crate) fn failure_or_unknown(f: Option<proto::TaskFailureDetails>) -> FailureDetails {
    f.map(failure_from_proto).unwrap_or_else(|| {
        FailureDetails::new(
            "EntityOperationFailed",
            "the entity operation failed; the sidecar gave no details",
        )
    })
}

/// One operation of an entity work item.
struct Operation {
    name: String,
    input: Option<String>,
    request_id: String,
    /// Who waits for the answer (calls only).
    destination: Option<String>,
}

/// The work item the worker runs for an entity work item: the entity
/// instance starting from a snapshot that holds the state, and one message
/// per operation. Every operation is given a response (a signal's goes to
/// `""`, which no one is), so the result has one answer per operation, in
/// order. The sidecar keeps locks itself, so the snapshot holds none.
fn entity_item(
    instance_id: String,
    execution_id: String,
    state: Option<String>,
    operations: Vec<Operation>,
    token: &str,
    now: Timestamp,
) -> Result<OrchestrationWorkItem> {
    let id: EntityId = instance_id
        .parse()
        .map_err(|_| ConvertError::NotAnEntity(instance_id.clone()))?;
    let snapshot = EntitySnapshot {
        state: payload(state),
        locked_by: None,
        queue: Vec::new(),
    };
    let event = |kind| HistoryEvent {
        event_id: -1,
        timestamp: now,
        kind,
        trace: None,
    };
    let started = event(EventKind::ExecutionStarted {
        name: id.name().to_string(),
        version: None,
        input: Some(snapshot.encode()),
        instance_id: instance_id.clone(),
        execution_id: Some(execution_id.clone()),
        parent: None,
        scheduled_start: None,
        tags: Default::default(),
    });
    let mut new_events = vec![event(EventKind::OrchestratorStarted)];
    for op in operations {
        let message = EntityMessage::Operation {
            op: op.name,
            input: op.input,
            request_id: Some(op.request_id),
            parent: Some(op.destination.unwrap_or_default()),
            scheduled_time: None,
        };
        new_events.push(event(EventKind::EventRaised {
            name: ENTITY_EVENT.to_string(),
            input: Some(serde_json::to_string(&message).expect("plain data")),
        }));
    }
    Ok(OrchestrationWorkItem {
        instance_id,
        execution_id,
        past_events: Arc::new(vec![started]),
        new_events,
        completion_token: format!("{ENTITY_TOKEN}{token}"),
        orchestration_span: None,
    })
}

/// The work item of the older entity work item (`entityRequest`).
pub(crate) fn item_from_batch_request(
    r: proto::EntityBatchRequest,
    token: &str,
    now: Timestamp,
) -> Result<OrchestrationWorkItem> {
    let operations = r
        .operations
        .into_iter()
        .map(|o| Operation {
            name: o.operation,
            input: o.input,
            request_id: o.request_id,
            destination: None,
        })
        .collect();
    let execution_id = r.instance_id.clone();
    entity_item(
        r.instance_id,
        execution_id,
        r.entity_state,
        operations,
        token,
        now,
    )
}

/// The work item of the newer entity work item (`entityRequestV2`), whose
/// operations are `entityOperationSignaled` / `entityOperationCalled`
/// events.
pub(crate) fn item_from_request(
    r: proto::EntityRequest,
    token: &str,
    now: Timestamp,
) -> Result<OrchestrationWorkItem> {
    use proto::history_event::EventType;
    let mut operations = Vec::new();
    for e in r.operation_requests {
        let event_id = e.event_id;
        operations.push(match e.event_type {
            Some(EventType::EntityOperationSignaled(s)) => Operation {
                name: s.operation,
                input: s.input,
                request_id: s.request_id,
                destination: None,
            },
            Some(EventType::EntityOperationCalled(c)) => Operation {
                name: c.operation,
                input: c.input,
                request_id: c.request_id,
                destination: opt_string(c.parent_instance_id),
            },
            _ => return Err(ConvertError::UnsupportedEvent { event_id }),
        });
    }
    let execution_id = match r.execution_id {
        e if e.is_empty() => r.instance_id.clone(),
        e => e,
    };
    entity_item(
        r.instance_id,
        execution_id,
        r.entity_state,
        operations,
        token,
        now,
    )
}

/// The `EntityBatchResult` of a batch the worker ran on `item` (built by
/// [`item_from_request`] or [`item_from_batch_request`]): one result per
/// operation, the signals and orchestration starts of the operations that
/// succeeded, the new state, and where each answer goes.
pub(crate) fn batch_result_to_proto(
    item: &OrchestrationWorkItem,
    result: &OrchestratorResult,
) -> proto::EntityBatchResult {
    let token = item
        .completion_token
        .strip_prefix(ENTITY_TOKEN)
        .unwrap_or(&item.completion_token)
        .to_string();
    let mut infos = Vec::new();
    for e in &item.new_events {
        if let EventKind::EventRaised { input: Some(m), .. } = &e.kind {
            if let Ok(EntityMessage::Operation {
                request_id, parent, ..
            }) = serde_json::from_str::<EntityMessage>(m)
            {
                infos.push(proto::OperationInfo {
                    request_id: request_id.unwrap_or_default(),
                    response_destination: parent.filter(|p| !p.is_empty()).map(|p| {
                        proto::OrchestrationInstance {
                            instance_id: p,
                            execution_id: None,
                        }
                    }),
                });
            }
        }
    }
    let state_before = item.past_events.iter().find_map(|e| match &e.kind {
        EventKind::ExecutionStarted { input, .. } => EntitySnapshot::decode(input.as_deref())
            .ok()
            .and_then(|s| s.state),
        _ => None,
    });
    let mut results = Vec::new();
    let mut actions = Vec::new();
    let mut entity_state = state_before;
    let mut failure_details = None;
    for action in &result.actions {
        match &action.kind {
            ActionKind::SendEvent { name, data, .. } if name.starts_with(RESPONSE_PREFIX) => {
                let response = data
                    .as_deref()
                    .and_then(|d| serde_json::from_str::<EntityResponse>(d).ok());
                results.push(operation_result(response));
            }
            ActionKind::SendEvent {
                instance_id,
                name,
                data,
            } if name.eq_ignore_ascii_case(ENTITY_EVENT) => {
                if let Some(Ok(EntityMessage::Operation {
                    op,
                    input,
                    scheduled_time,
                    ..
                })) = data.as_deref().map(serde_json::from_str::<EntityMessage>)
                {
                    actions.push(proto::OperationAction {
                        id: actions.len() as i32,
                        operation_action_type: Some(
                            proto::operation_action::OperationActionType::SendSignal(
                                proto::SendSignalAction {
                                    instance_id: instance_id.clone(),
                                    name: op,
                                    input,
                                    scheduled_time: scheduled_time.as_ref().map(timestamp_to_proto),
                                    request_time: None,
                                },
                            ),
                        ),
                    });
                }
            }
            ActionKind::CreateSubOrchestration {
                instance_id,
                name,
                version,
                input,
            } => actions.push(proto::OperationAction {
                id: actions.len() as i32,
                operation_action_type: Some(
                    proto::operation_action::OperationActionType::StartNewOrchestration(
                        proto::StartNewOrchestrationAction {
                            instance_id: instance_id.clone(),
                            name: name.clone(),
                            version: version.clone(),
                            input: input.clone(),
                            scheduled_time: None,
                            request_time: None,
                        },
                    ),
                ),
            }),
            ActionKind::CompleteOrchestration {
                status: OrchestrationStatus::ContinuedAsNew,
                result: snapshot,
                ..
            } => {
                entity_state = EntitySnapshot::decode(snapshot.as_deref())
                    .ok()
                    .and_then(|s| s.state);
            }
            ActionKind::CompleteOrchestration {
                failure, result, ..
            } => {
                failure_details = Some(failure_to_proto(&failure.clone().unwrap_or_else(|| {
                    FailureDetails::new(
                        "EntityBatchEnded",
                        format!(
                            "the entity batch ended without continuing ({})",
                            result.as_deref().unwrap_or("no output")
                        ),
                    )
                })));
            }
            _ => {}
        }
    }
    // Every operation has an answer; one missing (the batch failed as a
    // whole) is a failure.
    while results.len() < infos.len() {
        results.push(operation_result(None));
    }
    proto::EntityBatchResult {
        results,
        actions,
        entity_state,
        failure_details,
        completion_token: token,
        operation_infos: infos,
    }
}

fn operation_result(response: Option<EntityResponse>) -> proto::OperationResult {
    use proto::operation_result::ResultType;
    let kind = match response {
        Some(EntityResponse {
            failure: None,
            result,
        }) => ResultType::Success(proto::OperationResultSuccess {
            result,
            start_time_utc: None,
            end_time_utc: None,
        }),
        Some(EntityResponse {
            failure: Some(f), ..
        }) => ResultType::Failure(proto::OperationResultFailure {
            failure_details: Some(failure_to_proto(&f)),
            start_time_utc: None,
            end_time_utc: None,
        }),
        None => ResultType::Failure(proto::OperationResultFailure {
            failure_details: Some(failure_to_proto(&FailureDetails::new(
                "EntityBatchFailed",
                "the entity batch ended before this operation ran",
            ))),
            start_time_utc: None,
            end_time_utc: None,
        }),
    };
    proto::OperationResult {
        result_type: Some(kind),
    }
}

/// The entity work item (`entityRequestV2`) of a batch whose operations a
/// worker runs (durable's server).
#[cfg_attr(not(any(test, feature = "server")), allow(dead_code))]
pub(crate) fn request_to_proto(
    instance_id: &str,
    execution_id: &str,
    state: Option<String>,
    operations: &[RemoteOperation],
) -> proto::EntityRequest {
    use proto::history_event::EventType;
    let operation_requests = operations
        .iter()
        .enumerate()
        .map(|(i, o)| {
            let event_type = match &o.request_id {
                Some(request_id) => {
                    EventType::EntityOperationCalled(proto::EntityOperationCalledEvent {
                        request_id: request_id.clone(),
                        operation: o.op.clone(),
                        scheduled_time: None,
                        input: o.input.clone(),
                        parent_instance_id: o.parent.clone(),
                        parent_execution_id: None,
                        target_instance_id: Some(instance_id.to_string()),
                    })
                }
                None => EventType::EntityOperationSignaled(proto::EntityOperationSignaledEvent {
                    request_id: format!("{instance_id}#{i}"),
                    operation: o.op.clone(),
                    scheduled_time: None,
                    input: o.input.clone(),
                    target_instance_id: Some(instance_id.to_string()),
                }),
            };
            proto::HistoryEvent {
                event_id: -1,
                timestamp: None,
                event_type: Some(event_type),
            }
        })
        .collect();
    proto::EntityRequest {
        instance_id: instance_id.to_string(),
        execution_id: execution_id.to_string(),
        entity_state: state,
        operation_requests,
    }
}

/// What a worker reported for an entity work item (durable's server): the
/// results, the state, and its signals and starts as durable's actions,
/// sent from `instance_id`.
#[cfg_attr(not(any(test, feature = "server")), allow(dead_code))]
pub(crate) fn outcome_from_proto(
    instance_id: &str,
    r: proto::EntityBatchResult,
) -> Result<RemoteOutcome> {
    use proto::operation_action::OperationActionType;
    use proto::operation_result::ResultType;
    let results = r
        .results
        .into_iter()
        .map(|res| match res.result_type {
            Some(ResultType::Success(s)) => Ok(payload(s.result)),
            Some(ResultType::Failure(f)) => Err(failure_or_unknown(f.failure_details)),
            None => Err(FailureDetails::new(
                "EntityOperationFailed",
                "the worker gave no result for this operation",
            )),
        })
        .collect();
    let mut actions = Vec::new();
    for (i, a) in r.actions.into_iter().enumerate() {
        match a.operation_action_type {
            Some(OperationActionType::SendSignal(s)) => {
                let message = EntityMessage::Operation {
                    op: s.name,
                    input: payload(s.input),
                    request_id: None,
                    parent: Some(instance_id.to_string()),
                    scheduled_time: opt_timestamp(s.scheduled_time.as_ref())?,
                };
                actions.push(ActionKind::SendEvent {
                    instance_id: s.instance_id,
                    name: ENTITY_EVENT.to_string(),
                    data: Some(serde_json::to_string(&message).expect("plain data")),
                });
            }
            Some(OperationActionType::StartNewOrchestration(o)) => {
                actions.push(ActionKind::CreateSubOrchestration {
                    instance_id: match o.instance_id {
                        id if id.is_empty() => format!("{:032x}", fastrand::u128(..)),
                        id => id,
                    },
                    name: o.name,
                    version: opt_string(o.version),
                    input: payload(o.input),
                })
            }
            None => {
                return Err(ConvertError::UnsupportedAction { id: i as i32 });
            }
        }
    }
    Ok(RemoteOutcome {
        results,
        state: payload(r.entity_state),
        actions,
        failure: r.failure_details.map(failure_from_proto),
    })
}

#[cfg(test)]
mod tests {
    use super::super::{event_from_proto, event_to_proto};
    use super::*;
    use durable_runtime::actions::OrchestratorAction;

    fn call_event() -> HistoryEvent {
        let message = EntityMessage::Operation {
            op: "add".into(),
            input: Some("5".into()),
            request_id: Some("r1".into()),
            parent: Some("orch".into()),
            scheduled_time: None,
        };
        HistoryEvent {
            event_id: 3,
            timestamp: Default::default(),
            kind: EventKind::EventSent {
                instance_id: "@counter@a".into(),
                name: ENTITY_EVENT.into(),
                input: Some(serde_json::to_string(&message).unwrap()),
            },
            trace: None,
        }
    }

    #[test]
    fn calls_and_answers_travel_as_the_protocols_entity_events_and_come_back() {
        use proto::history_event::EventType;
        let sent = call_event();
        let wire = event_to_proto(&sent);
        let Some(EventType::EntityOperationCalled(c)) = &wire.event_type else {
            panic!("a call is entityOperationCalled: {wire:?}");
        };
        assert_eq!(
            (c.request_id.as_str(), c.target_instance_id.as_deref()),
            ("r1", Some("@counter@a"))
        );
        assert_eq!(event_from_proto(wire).unwrap(), sent);

        let answer = response_from_proto("r1", Some("6".into()), None);
        let event = HistoryEvent {
            event_id: -1,
            timestamp: Default::default(),
            kind: answer,
            trace: None,
        };
        let wire = event_to_proto(&event);
        assert!(matches!(
            &wire.event_type,
            Some(EventType::EntityOperationCompleted(c)) if c.output.as_deref() == Some("6")
        ));
        assert_eq!(event_from_proto(wire).unwrap(), event);

        // Locks are plain events: durable's critical sections.
        let lock = EntityMessage::Lock {
            request_id: "l".into(),
            parent: "orch".into(),
        };
        assert!(message_to_proto(
            "@counter@a",
            ENTITY_EVENT,
            Some(&serde_json::to_string(&lock).unwrap()),
            1
        )
        .is_none());
    }

    #[test]
    fn a_batch_result_has_one_answer_per_operation_and_the_new_state() {
        let request = proto::EntityRequest {
            instance_id: "@counter@a".into(),
            execution_id: "e".into(),
            entity_state: Some(r#"{"value":1}"#.into()),
            operation_requests: request_to_proto(
                "@counter@a",
                "e",
                None,
                &[
                    RemoteOperation {
                        op: "add".into(),
                        input: Some("2".into()),
                        request_id: Some("r1".into()),
                        parent: Some("orch".into()),
                    },
                    RemoteOperation {
                        op: "add".into(),
                        input: Some("3".into()),
                        request_id: None,
                        parent: None,
                    },
                ],
            )
            .operation_requests,
        };
        let item = item_from_request(request, "tok", Default::default()).unwrap();
        assert!(item.completion_token.starts_with(ENTITY_TOKEN));
        // What a worker's batch gives: an answer per operation (the
        // signal's goes to no one), a signal it sent, the new state.
        let send = |instance_id: &str, name: &str, data: &str| ActionKind::SendEvent {
            instance_id: instance_id.into(),
            name: name.into(),
            data: Some(data.into()),
        };
        let signal = EntityMessage::Operation {
            op: "add".into(),
            input: Some("1".into()),
            request_id: None,
            parent: Some("@counter@a".into()),
            scheduled_time: None,
        };
        let kinds = vec![
            send("orch", "@response@r1", r#"{"result":"3"}"#),
            send(
                "",
                "@response@x",
                r#"{"failure":{"errorType":"E","errorMessage":"no"}}"#,
            ),
            send(
                "@counter@b",
                ENTITY_EVENT,
                &serde_json::to_string(&signal).unwrap(),
            ),
            ActionKind::continued_as_new(
                Some(
                    EntitySnapshot {
                        state: Some(r#"{"value":3}"#.into()),
                        ..Default::default()
                    }
                    .encode(),
                ),
                vec![],
            ),
        ];
        let result = OrchestratorResult {
            actions: kinds
                .into_iter()
                .enumerate()
                .map(|(i, kind)| OrchestratorAction {
                    id: i as i32,
                    kind,
                    trace: None,
                })
                .collect(),
            custom_status: None,
            cancelled_timers: vec![],
        };
        let r = batch_result_to_proto(&item, &result);
        assert_eq!(r.completion_token, "tok");
        assert_eq!(r.results.len(), 2);
        assert!(matches!(
            &r.results[0].result_type,
            Some(proto::operation_result::ResultType::Success(s)) if s.result.as_deref() == Some("3")
        ));
        assert!(matches!(
            &r.results[1].result_type,
            Some(proto::operation_result::ResultType::Failure(_))
        ));
        assert_eq!(r.entity_state.as_deref(), Some(r#"{"value":3}"#));
        assert_eq!(r.actions.len(), 1);
        assert_eq!(
            r.operation_infos
                .iter()
                .map(|i| i
                    .response_destination
                    .as_ref()
                    .map(|d| d.instance_id.as_str()))
                .collect::<Vec<_>>(),
            [Some("orch"), None]
        );
    }
}
