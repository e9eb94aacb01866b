//! Entity batches whose operations run elsewhere: a server of the Durable
//! Task protocol hands an entity's operations to a worker as an entity work
//! item (which carries the state and the operations, not the locks), and
//! turns the worker's answer back into the episode of the `@name@key`
//! instance. Critical sections stay with the server: which operations run,
//! and in what order, is decided here, by [`run_batch`](super::run_batch)'s
//! own rules.
//!
//! Pure: [`plan_remote_batch`] and [`finish_remote_batch`] read the same
//! episode, so a batch handed out again after a lost lease is the same
//! batch.

use super::batch::{run_batch_observed, ObservedOperation};
use super::handler::{EntityContext, ErasedEntity};
use super::message::EntitySnapshot;
use crate::actions::{ActionKind, OrchestratorAction, OrchestratorResult};
use crate::history::{EventKind, FailureDetails, HistoryEvent, OrchestrationStatus};
use std::sync::Mutex;

/// An operation of a batch, for the worker that runs it.
#[derive(Clone, Debug, PartialEq)]
pub struct RemoteOperation {
    /// The operation's name.
    pub op: String,
    /// Its input (JSON).
    pub input: Option<String>,
    /// The call's request id (`None`: a signal).
    pub request_id: Option<String>,
    /// Who sent it: the instance waiting for a call's answer.
    pub parent: Option<String>,
}

/// What an entity batch needs from a worker elsewhere.
#[derive(Clone, Debug, PartialEq)]
pub enum RemotePlan {
    /// Run these operations, in order, on this state (JSON; `None`: the
    /// entity has none).
    Run {
        /// The entity's state before the batch.
        state: Option<String>,
        /// The operations.
        operations: Vec<RemoteOperation>,
    },
    /// No operation runs (only locks changed hands, or nothing came): the
    /// episode's result, to complete without a worker.
    Done(OrchestratorResult),
}

/// What the worker reported for a [`RemotePlan::Run`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RemoteOutcome {
    /// One per operation, in order: the output (JSON) or the failure.
    pub results: Vec<Result<Option<String>, FailureDetails>>,
    /// The state after the batch (`None`: none, or deleted).
    pub state: Option<String>,
    /// Signals to entities and orchestration starts of the operations that
    /// succeeded (`SendEvent` / `CreateSubOrchestration`).
    pub actions: Vec<ActionKind>,
    /// The batch failed as a whole: its operations fail with this, and the
    /// state stays as it was.
    pub failure: Option<FailureDetails>,
}

/// Stands in for the entity: while planning it records nothing and changes
/// nothing; while finishing it answers with the worker's results, in order.
struct Stand {
    name: String,
    results: Mutex<std::vec::IntoIter<Result<Option<String>, FailureDetails>>>,
}

impl ErasedEntity for Stand {
    fn name(&self) -> &str {
        &self.name
    }

    fn run(
        &self,
        state: Option<&str>,
        _op: &str,
        _input: Option<&str>,
        _ctx: &mut EntityContext,
    ) -> Result<(Option<String>, Option<String>), FailureDetails> {
        let next = self
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next();
        match next {
            Some(Ok(output)) => Ok((state.map(str::to_string), output)),
            Some(Err(failure)) => Err(failure),
            None => Err(FailureDetails::new(
                "EntityBatchIncomplete",
                "the worker reported fewer results than the batch had operations",
            )),
        }
    }

    fn operation_names(&self) -> Vec<String> {
        Vec::new()
    }
}

fn entity_name(instance_id: &str) -> String {
    instance_id
        .parse::<super::EntityId>()
        .map(|id| id.name().to_string())
        .unwrap_or_default()
}

/// The operations of the episode that a worker must run, or the episode's
/// result when none must.
pub fn plan_remote_batch(
    instance_id: &str,
    execution_id: &str,
    past_events: &[HistoryEvent],
    new_events: &[HistoryEvent],
) -> RemotePlan {
    let stand = Stand {
        name: entity_name(instance_id),
        results: Mutex::new(Vec::new().into_iter()),
    };
    let mut operations = Vec::new();
    let result = run_batch_observed(
        &stand,
        instance_id,
        execution_id,
        past_events,
        new_events,
        &mut |o: ObservedOperation| {
            operations.push(RemoteOperation {
                op: o.op,
                input: o.input,
                request_id: o.request_id,
                parent: o.parent,
            })
        },
    );
    if operations.is_empty() {
        return RemotePlan::Done(result);
    }
    let state = past_events
        .iter()
        .chain(new_events)
        .find_map(|e| match &e.kind {
            EventKind::ExecutionStarted { input, .. } => Some(input.clone()),
            _ => None,
        })
        .flatten();
    RemotePlan::Run {
        state: EntitySnapshot::decode(state.as_deref())
            .ok()
            .and_then(|s| s.state),
        operations,
    }
}

/// The episode's result once the worker ran the operations of
/// [`plan_remote_batch`]: the answers to calls and the lock grants, the
/// worker's signals and starts, and the new snapshot with the worker's
/// state.
pub fn finish_remote_batch(
    instance_id: &str,
    execution_id: &str,
    past_events: &[HistoryEvent],
    new_events: &[HistoryEvent],
    outcome: RemoteOutcome,
) -> OrchestratorResult {
    let results = match &outcome.failure {
        Some(f) => {
            let planned =
                match plan_remote_batch(instance_id, execution_id, past_events, new_events) {
                    RemotePlan::Run { operations, .. } => operations.len(),
                    RemotePlan::Done(_) => 0,
                };
            vec![Err(f.clone()); planned]
        }
        None => outcome.results,
    };
    let stand = Stand {
        name: entity_name(instance_id),
        results: Mutex::new(results.into_iter()),
    };
    let mut result = run_batch_observed(
        &stand,
        instance_id,
        execution_id,
        past_events,
        new_events,
        &mut |_| {},
    );
    let mut extra = if outcome.failure.is_some() {
        Vec::new()
    } else {
        outcome.actions
    };
    let mut next_id = result.actions.iter().map(|a| a.id + 1).max().unwrap_or(0);
    let mut actions = Vec::with_capacity(result.actions.len() + extra.len());
    for mut action in std::mem::take(&mut result.actions) {
        if let ActionKind::CompleteOrchestration {
            status: OrchestrationStatus::ContinuedAsNew,
            result: snapshot,
            ..
        } = &mut action.kind
        {
            if outcome.failure.is_none() {
                let mut s = EntitySnapshot::decode(snapshot.as_deref()).unwrap_or_default();
                s.state = outcome.state.clone();
                *snapshot = Some(s.encode());
            }
            // The worker's sends go before the episode's end.
            for kind in extra.drain(..) {
                actions.push(OrchestratorAction {
                    id: next_id,
                    kind,
                    trace: None,
                });
                next_id += 1;
            }
        }
        actions.push(action);
    }
    result.actions = actions;
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::entity::{lock_event_name, EntityMessage, ENTITY_EVENT};
    use crate::history::HistoryEvent;

    fn started(snapshot: &EntitySnapshot) -> HistoryEvent {
        HistoryEvent::new(
            Default::default(),
            EventKind::ExecutionStarted {
                name: "counter".into(),
                version: None,
                input: Some(snapshot.encode()),
                instance_id: "@counter@a".into(),
                execution_id: Some("e".into()),
                parent: None,
                scheduled_start: None,
                tags: Default::default(),
            },
        )
    }

    fn message(m: &EntityMessage) -> HistoryEvent {
        HistoryEvent::new(
            Default::default(),
            EventKind::EventRaised {
                name: ENTITY_EVENT.into(),
                input: Some(serde_json::to_string(m).unwrap()),
            },
        )
    }

    fn call(op: &str, id: &str, parent: &str) -> EntityMessage {
        EntityMessage::Operation {
            op: op.into(),
            input: Some("1".into()),
            request_id: Some(id.into()),
            parent: Some(parent.into()),
            scheduled_time: None,
        }
    }

    fn snapshot_of(result: &OrchestratorResult) -> EntitySnapshot {
        result
            .actions
            .iter()
            .find_map(|a| match &a.kind {
                ActionKind::CompleteOrchestration {
                    status: OrchestrationStatus::ContinuedAsNew,
                    result,
                    ..
                } => Some(EntitySnapshot::decode(result.as_deref()).unwrap()),
                _ => None,
            })
            .expect("the batch continues as new")
    }

    #[test]
    fn a_locked_entity_runs_only_the_holders_operations_remotely() {
        let past = vec![started(&EntitySnapshot {
            state: Some("5".into()),
            locked_by: Some("holder".into()),
            queue: Vec::new(),
        })];
        let new = vec![
            HistoryEvent::new(Default::default(), EventKind::OrchestratorStarted),
            message(&call("add", "r1", "other")),
            message(&call("add", "r2", "holder")),
        ];
        let RemotePlan::Run { state, operations } =
            plan_remote_batch("@counter@a", "e", &past, &new)
        else {
            panic!("the holder's operation runs");
        };
        assert_eq!(state.as_deref(), Some("5"));
        assert_eq!(operations.len(), 1);
        assert_eq!(operations[0].request_id.as_deref(), Some("r2"));

        let result = finish_remote_batch(
            "@counter@a",
            "e",
            &past,
            &new,
            RemoteOutcome {
                results: vec![Ok(Some("6".into()))],
                state: Some("6".into()),
                actions: vec![],
                failure: None,
            },
        );
        let snapshot = snapshot_of(&result);
        assert_eq!(snapshot.state.as_deref(), Some("6"));
        assert_eq!(snapshot.locked_by.as_deref(), Some("holder"));
        // The other caller's request waits in the queue.
        assert_eq!(snapshot.queue, vec![call("add", "r1", "other")]);
        let answered: Vec<&str> = result
            .actions
            .iter()
            .filter_map(|a| match &a.kind {
                ActionKind::SendEvent { instance_id, .. } => Some(instance_id.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(answered, ["holder"]);
    }

    #[test]
    fn a_batch_of_locks_alone_completes_without_a_worker() {
        let past = vec![started(&EntitySnapshot::default())];
        let new = vec![
            HistoryEvent::new(Default::default(), EventKind::OrchestratorStarted),
            message(&EntityMessage::Lock {
                request_id: "l1".into(),
                parent: "o".into(),
            }),
        ];
        let RemotePlan::Done(result) = plan_remote_batch("@counter@a", "e", &past, &new) else {
            panic!("nothing to run remotely");
        };
        assert!(result.actions.iter().any(|a| matches!(
            &a.kind,
            ActionKind::SendEvent { name, .. } if *name == lock_event_name("l1")
        )));
        assert_eq!(snapshot_of(&result).locked_by.as_deref(), Some("o"));
    }

    #[test]
    fn a_failed_batch_keeps_the_state_and_fails_every_call() {
        let past = vec![started(&EntitySnapshot {
            state: Some("5".into()),
            ..Default::default()
        })];
        let new = vec![
            HistoryEvent::new(Default::default(), EventKind::OrchestratorStarted),
            message(&call("add", "r1", "o")),
            message(&call("add", "r2", "o")),
        ];
        let result = finish_remote_batch(
            "@counter@a",
            "e",
            &past,
            &new,
            RemoteOutcome {
                failure: Some(FailureDetails::new("Boom", "the worker failed")),
                state: Some("999".into()),
                ..Default::default()
            },
        );
        assert_eq!(snapshot_of(&result).state.as_deref(), Some("5"));
        let failures = result
            .actions
            .iter()
            .filter(|a| matches!(&a.kind, ActionKind::SendEvent { data: Some(d), .. } if d.contains("the worker failed")))
            .count();
        assert_eq!(failures, 2);
    }
}
