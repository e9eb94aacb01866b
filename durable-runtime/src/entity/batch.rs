//! Running one batch of an entity's messages: the whole of an entity
//! episode.

use super::handler::{EntityContext, ErasedEntity};
use super::id::EntityId;
use super::message::{
    lock_event_name, response_event_name, EntityMessage, EntityResponse, EntitySnapshot,
    ENTITY_EVENT,
};
use crate::actions::{ActionKind, OrchestratorAction, OrchestratorResult, Task};
use crate::history::{EventKind, FailureDetails, HistoryEvent, Timestamp};

/// Runs an entity episode: reads the snapshot the execution started with,
/// applies the messages delivered in `new_events` one at a time in arrival
/// order (holding back those of others while a critical section holds the
/// entity), and ends the execution by continuing it as new with the new
/// snapshot. An episode without messages (the start of an execution that
/// nothing else came with) returns no actions: the execution waits for the
/// next message as it is. The result carries the responses to calls, lock grants, and
/// what the successful operations sent.
///
/// Pure: the same events give the same result, so a batch redelivered
/// after a lost lease runs again from the same snapshot.
pub fn run_batch(
    entity: &dyn ErasedEntity,
    instance_id: &str,
    execution_id: &str,
    past_events: &[HistoryEvent],
    new_events: &[HistoryEvent],
) -> OrchestratorResult {
    run_batch_observed(
        entity,
        instance_id,
        execution_id,
        past_events,
        new_events,
        &mut |_| {},
    )
}

/// An operation a batch runs, as [`run_batch_observed`] reports it before
/// running it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ObservedOperation {
    pub op: String,
    pub input: Option<String>,
    pub request_id: Option<String>,
    pub parent: Option<String>,
}

/// [`run_batch`], telling `observe` about each operation before it runs.
pub(crate) fn run_batch_observed(
    entity: &dyn ErasedEntity,
    instance_id: &str,
    execution_id: &str,
    past_events: &[HistoryEvent],
    new_events: &[HistoryEvent],
    observe: &mut dyn FnMut(ObservedOperation),
) -> OrchestratorResult {
    let all = || past_events.iter().chain(new_events);
    let first_id = all()
        .filter(|e| Task::scheduled_by(&e.kind).is_some())
        .count() as i32;
    let mut batch = Batch {
        entity,
        id: instance_id
            .parse()
            .unwrap_or_else(|_| EntityId::new(entity.name(), instance_id)),
        seed: execution_id.to_string(),
        now: new_events
            .iter()
            .find(|e| matches!(e.kind, EventKind::OrchestratorStarted))
            .map(|e| e.timestamp)
            .unwrap_or_else(chrono::Utc::now),
        actions: Vec::new(),
        snapshot: EntitySnapshot::default(),
        operations: 0,
        observe,
    };
    let finish = |actions: Vec<ActionKind>| OrchestratorResult {
        actions: actions
            .into_iter()
            .enumerate()
            .map(|(i, kind)| OrchestratorAction {
                id: first_id + i as i32,
                kind,
                trace: None,
            })
            .collect(),
        custom_status: None,
        cancelled_timers: Vec::new(),
    };
    let input = all().find_map(|e| match &e.kind {
        EventKind::ExecutionStarted { input, .. } => Some(input.clone()),
        _ => None,
    });
    match EntitySnapshot::decode(input.flatten().as_deref()) {
        Ok(s) => batch.snapshot = s,
        Err(e) => {
            // Never overwrite what cannot be read: fail the instance, which
            // keeps its input for inspection.
            let failure = FailureDetails::new(
                "EntityStateUnreadable",
                format!(
                    "the stored snapshot of entity \"{instance_id}\" does not parse ({e}); \
                     it was not written by this version of durable: inspect its input, \
                     then purge the instance to start the entity afresh"
                ),
            );
            return finish(vec![ActionKind::failed(failure)]);
        }
    }
    let delivered = new_events.iter().any(|e| match &e.kind {
        EventKind::EventRaised { name, .. } => name.eq_ignore_ascii_case(ENTITY_EVENT),
        EventKind::ExecutionTerminated { .. } => true,
        _ => false,
    });
    if !delivered {
        // Nothing to do (the start of an execution that carried no
        // messages): the execution waits as it is, rather than continue as
        // new into another empty episode.
        return finish(Vec::new());
    }
    for event in new_events {
        match &event.kind {
            EventKind::ExecutionTerminated { input, .. } => {
                return finish(vec![ActionKind::terminated(input.clone())]);
            }
            EventKind::EventRaised { name, input } if name.eq_ignore_ascii_case(ENTITY_EVENT) => {
                match input.as_deref().map(serde_json::from_str::<EntityMessage>) {
                    Some(Ok(m)) => batch.handle(m),
                    Some(Err(e)) => {
                        tracing::warn!(entity = %instance_id, error = %e, "dropping a message to an entity that does not parse")
                    }
                    None => {
                        tracing::warn!(entity = %instance_id, "dropping an empty message to an entity")
                    }
                }
            }
            _ => {}
        }
    }
    tracing::debug!(entity = %instance_id, operations = batch.operations, "entity batch");
    let mut actions = batch.actions;
    actions.push(ActionKind::continued_as_new(
        Some(batch.snapshot.encode()),
        Vec::new(),
    ));
    finish(actions)
}

struct Batch<'a> {
    entity: &'a dyn ErasedEntity,
    id: EntityId,
    seed: String,
    now: Timestamp,
    actions: Vec<ActionKind>,
    snapshot: EntitySnapshot,
    operations: usize,
    observe: &'a mut dyn FnMut(ObservedOperation),
}

impl Batch<'_> {
    /// Whether the entity is locked by someone other than `parent`.
    fn held_from(&self, parent: Option<&str>) -> bool {
        match &self.snapshot.locked_by {
            Some(holder) => parent != Some(holder.as_str()),
            None => false,
        }
    }

    fn handle(&mut self, m: EntityMessage) {
        match m {
            EntityMessage::Unlock { parent } => {
                if self.snapshot.locked_by.as_deref() == Some(parent.as_str()) {
                    self.snapshot.locked_by = None;
                    // Everything held back comes in again, in order; a lock
                    // it grants holds back the rest again.
                    let queued = std::mem::take(&mut self.snapshot.queue);
                    for q in queued {
                        self.handle(q);
                    }
                } else {
                    // An orchestration that gives up a lock it was still
                    // waiting for (it failed, or dropped the section while
                    // the request was queued) withdraws the request (its
                    // first queued one: a section sends one lock and one
                    // unlock per entity), or the lock would later be
                    // granted to it and never be released.
                    if let Some(at) = self.snapshot.queue.iter().position(
                        |q| matches!(q, EntityMessage::Lock { parent: p, .. } if *p == parent),
                    ) {
                        self.snapshot.queue.remove(at);
                    }
                }
            }
            m if self.held_from(m.parent()) => self.snapshot.queue.push(m),
            EntityMessage::Lock { request_id, parent } => {
                self.snapshot.locked_by = Some(parent.clone());
                self.send(
                    &parent,
                    lock_event_name(&request_id),
                    Some(serde_json::to_string(&self.id.to_string()).expect("a string")),
                );
            }
            EntityMessage::Operation {
                op,
                input,
                request_id,
                parent,
                ..
            } => self.operate(&op, input.as_deref(), request_id, parent),
        }
    }

    fn operate(
        &mut self,
        op: &str,
        input: Option<&str>,
        request_id: Option<String>,
        parent: Option<String>,
    ) {
        self.operations += 1;
        (self.observe)(ObservedOperation {
            op: op.to_string(),
            input: input.map(str::to_string),
            request_id: request_id.clone(),
            parent: parent.clone(),
        });
        let mut ctx = EntityContext::new(
            self.id.clone(),
            self.now,
            format!("{}/{}", self.seed, self.operations),
        );
        let state = self.snapshot.state.as_deref();
        let entity = self.entity;
        let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            entity.run(state, op, input, &mut ctx)
        }))
        .unwrap_or_else(|panic| {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".to_string());
            Err(FailureDetails::new(
                "EntityPanic",
                format!(
                    "operation \"{op}\" of entity \"{}\" panicked: {message}",
                    self.id
                ),
            ))
        });
        let response = match outcome {
            Ok((state, result)) => {
                self.snapshot.state = state;
                self.actions.append(&mut ctx.actions);
                EntityResponse {
                    result,
                    failure: None,
                }
            }
            Err(failure) => {
                tracing::debug!(entity = %self.id, op, error = %failure.message, "entity operation failed; its state change is rolled back");
                EntityResponse {
                    result: None,
                    failure: Some(failure),
                }
            }
        };
        if let (Some(request_id), Some(parent)) = (request_id, parent) {
            let data = serde_json::to_string(&response).expect("plain data");
            self.send(&parent, response_event_name(&request_id), Some(data));
        }
    }

    fn send(&mut self, to: &str, name: String, data: Option<String>) {
        self.actions.push(ActionKind::SendEvent {
            instance_id: to.to_string(),
            name,
            data,
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::{Entity, Operations};

    #[derive(Default, serde::Serialize, serde::Deserialize)]
    struct Log(Vec<String>);

    impl Entity for Log {
        const NAME: &'static str = "log";
        fn operations(ops: &mut Operations<Self>) {
            ops.op("push", |l: &mut Log, s: String| -> Result<usize, String> {
                l.0.push(s);
                Ok(l.0.len())
            })
            .op(
                "push_then_fail",
                |l: &mut Log, s: String| -> Result<(), String> {
                    l.0.push(s);
                    Err("no".into())
                },
            );
        }
    }

    fn t() -> Timestamp {
        chrono::DateTime::from_timestamp(1_700_000_000, 0).unwrap()
    }

    fn started(snapshot: Option<&EntitySnapshot>) -> Vec<HistoryEvent> {
        vec![
            HistoryEvent::new(t(), EventKind::OrchestratorStarted),
            HistoryEvent::new(
                t(),
                EventKind::ExecutionStarted {
                    name: "log".into(),
                    version: None,
                    input: snapshot.map(EntitySnapshot::encode),
                    instance_id: "@log@k".into(),
                    execution_id: Some("e1".into()),
                    parent: None,
                    scheduled_start: None,
                    tags: Default::default(),
                },
            ),
        ]
    }

    fn message(m: EntityMessage) -> HistoryEvent {
        HistoryEvent::new(
            t(),
            EventKind::EventRaised {
                name: ENTITY_EVENT.into(),
                input: Some(serde_json::to_string(&m).unwrap()),
            },
        )
    }

    fn push(s: &str, from: &str, request: Option<&str>) -> HistoryEvent {
        message(EntityMessage::Operation {
            op: "push".into(),
            input: Some(format!("\"{s}\"")),
            request_id: request.map(str::to_string),
            parent: Some(from.into()),
            scheduled_time: None,
        })
    }

    fn run(events: Vec<HistoryEvent>) -> (EntitySnapshot, Vec<ActionKind>) {
        let entity = crate::entity::erase::<Log>();
        let r = run_batch(entity.as_ref(), "@log@k", "e1", &[], &events);
        let mut actions: Vec<ActionKind> = r.actions.into_iter().map(|a| a.kind).collect();
        let snapshot = match actions.pop() {
            Some(ActionKind::CompleteOrchestration { result, .. }) => {
                EntitySnapshot::decode(result.as_deref()).unwrap()
            }
            other => panic!("the batch did not end with its snapshot: {other:?}"),
        };
        (snapshot, actions)
    }

    fn state(s: &EntitySnapshot) -> Vec<String> {
        serde_json::from_str::<Log>(s.state.as_deref().unwrap())
            .unwrap()
            .0
    }

    #[test]
    fn operations_run_in_arrival_order_and_calls_are_answered() {
        let mut events = started(None);
        events.push(push("a", "o1", None));
        events.push(push("b", "o2", Some("r1")));
        let (snapshot, actions) = run(events);
        assert_eq!(state(&snapshot), ["a", "b"]);
        assert_eq!(
            actions,
            [ActionKind::SendEvent {
                instance_id: "o2".into(),
                name: response_event_name("r1"),
                data: Some(r#"{"result":"2"}"#.into()),
            }]
        );
    }

    #[test]
    fn a_failed_operation_changes_nothing() {
        let mut events = started(None);
        events.push(push("a", "o1", None));
        events.push(message(EntityMessage::Operation {
            op: "push_then_fail".into(),
            input: Some("\"x\"".into()),
            request_id: Some("r".into()),
            parent: Some("o1".into()),
            scheduled_time: None,
        }));
        events.push(push("b", "o1", None));
        let (snapshot, actions) = run(events);
        assert_eq!(state(&snapshot), ["a", "b"]);
        let ActionKind::SendEvent { data, .. } = &actions[0] else {
            panic!("no response: {actions:?}");
        };
        let response: EntityResponse = serde_json::from_str(data.as_deref().unwrap()).unwrap();
        assert_eq!(response.failure.unwrap().message, "no");
    }

    #[test]
    fn a_lock_holds_back_others_until_it_is_released() {
        let mut events = started(None);
        events.push(message(EntityMessage::Lock {
            request_id: "l1".into(),
            parent: "holder".into(),
        }));
        events.push(push("other-1", "other", None));
        events.push(message(EntityMessage::Lock {
            request_id: "l2".into(),
            parent: "next".into(),
        }));
        events.push(push("other-2", "other", None));
        events.push(push("held", "holder", None));
        let (snapshot, actions) = run(events.clone());
        assert_eq!(state(&snapshot), ["held"]);
        assert_eq!(snapshot.locked_by.as_deref(), Some("holder"));
        assert_eq!(snapshot.queue.len(), 3);
        assert_eq!(
            actions.len(),
            1,
            "only the first lock is granted: {actions:?}"
        );

        // The next batch starts from that snapshot: the release lets the
        // queue in, in order, up to the next lock, which holds back the
        // rest again.
        let mut next = started(Some(&snapshot));
        next.push(message(EntityMessage::Unlock {
            parent: "holder".into(),
        }));
        let (snapshot, actions) = run(next);
        assert_eq!(state(&snapshot), ["held", "other-1"]);
        assert_eq!(snapshot.locked_by.as_deref(), Some("next"));
        assert_eq!(snapshot.queue.len(), 1);
        assert!(matches!(
            &actions[..],
            [ActionKind::SendEvent { instance_id, name, .. }]
                if instance_id == "next" && *name == lock_event_name("l2")
        ));
    }

    #[test]
    fn an_unlock_withdraws_a_lock_request_still_queued() {
        let mut events = started(None);
        events.push(message(EntityMessage::Lock {
            request_id: "l1".into(),
            parent: "holder".into(),
        }));
        events.push(message(EntityMessage::Lock {
            request_id: "l2".into(),
            parent: "gave-up".into(),
        }));
        events.push(push("queued", "gave-up", None));
        // "gave-up" fails while waiting: its section sends the unlock.
        events.push(message(EntityMessage::Unlock {
            parent: "gave-up".into(),
        }));
        let (snapshot, _) = run(events);
        assert_eq!(snapshot.locked_by.as_deref(), Some("holder"));
        assert_eq!(snapshot.queue.len(), 1, "only the operation stays queued");
        let mut next = started(Some(&snapshot));
        next.push(message(EntityMessage::Unlock {
            parent: "holder".into(),
        }));
        let (snapshot, actions) = run(next);
        assert_eq!(snapshot.locked_by, None, "the withdrawn lock was granted");
        assert_eq!(state(&snapshot), ["queued"]);
        assert!(actions.is_empty(), "{actions:?}");
    }

    #[test]
    fn a_start_without_messages_does_nothing() {
        let entity = crate::entity::erase::<Log>();
        let r = run_batch(entity.as_ref(), "@log@k", "e1", &[], &started(None));
        assert!(r.actions.is_empty(), "{:?}", r.actions);
    }

    #[test]
    fn an_unreadable_snapshot_fails_the_instance_instead_of_overwriting_it() {
        let mut events = started(None);
        if let EventKind::ExecutionStarted { input, .. } = &mut events[1].kind {
            *input = Some("[1, 2]".into());
        }
        events.push(push("a", "o1", None));
        let entity = crate::entity::erase::<Log>();
        let r = run_batch(entity.as_ref(), "@log@k", "e1", &[], &events);
        assert!(
            r.actions[0]
                .kind
                .completes_as(crate::history::OrchestrationStatus::Failed),
            "{:?}",
            r.actions
        );
    }
}
