//! [`apply_episode`]: what one episode's result does to an instance. Each
//! action kind is recorded by a function of its own; the episode then ends
//! in one of four ways: still running, continued as new, failed, or
//! finished (completed or terminated).

use super::{
    execution_started, new_execution_id, notify_parent, parent_of, running_children,
    terminated_notice, DroppedTimers, EpisodeOutcome, HistoryUpdate, InstanceMessage, Limits,
    NewInstance, Outbox,
};
use crate::actions::{ActionKind, OrchestratorResult, Task};
use crate::backend::InstanceMetadata;
use crate::backend::{ActivityWorkItem, BackendError, CreateInstanceRequest, IdReusePolicy};
use crate::failure::NON_DETERMINISM_ERROR;
use crate::history::{
    EventKind, FailureDetails, HistoryEvent, OrchestrationStatus, ParentInstance, Timestamp,
};
use crate::trace::TraceContext;
use std::collections::BTreeMap;

/// Applies one episode. `history` is the execution's history before the
/// episode, `new_events` what was delivered (starting with
/// `OrchestratorStarted`).
///
/// The outcome's [`DroppedTimers`] says which pending timers of the
/// execution the backend deletes: the ones the episode cancelled or, if the
/// execution ended or continued as new, all of them. Timers both created
/// and dropped by the episode are already left out of the outbox.
///
/// An episode whose first action is [`ActionKind::RewindOrchestration`]
/// continues the rewound history it carries instead of `history`: the
/// failure the instance ended with is gone from its metadata, and the
/// outcome replaces the stored history ([`HistoryUpdate::Replace`]).
pub fn apply_episode(
    meta: &InstanceMetadata,
    history: &[HistoryEvent],
    new_events: &[HistoryEvent],
    result: &OrchestratorResult,
    now: Timestamp,
    limits: &Limits,
) -> EpisodeOutcome {
    let rewound = match result.actions.first().map(|a| &a.kind) {
        Some(ActionKind::RewindOrchestration { new_history }) => Some(new_history.as_slice()),
        _ => None,
    };
    let mut outcome = match rewound {
        Some(new_history) => {
            // A worker speaking the protocol sends the rewound history with
            // this episode's events at its end, and nothing else: the next
            // episode, which it leaves to the backend, runs the code on it.
            let alone = result.actions.len() == 1;
            let base = match new_history.len().checked_sub(new_events.len()) {
                Some(cut) if !new_events.is_empty() && new_history[cut..] == *new_events => {
                    &new_history[..cut]
                }
                _ => new_history,
            };
            let mut meta = meta.clone();
            meta.failure = None;
            meta.output = None;
            meta.completed_at = None;
            let mut outcome = record_episode(&meta, base, new_events, result, now, limits);
            if let HistoryUpdate::Append(events) = outcome.history {
                let all = base.iter().cloned().chain(events).collect();
                outcome.history = HistoryUpdate::Replace(all);
            }
            if alone && !outcome.metadata.status.is_terminal() {
                outcome.outbox.messages.push(InstanceMessage {
                    instance_id: meta.instance_id.clone(),
                    execution_id: Some(meta.execution_id.clone()),
                    event: HistoryEvent::new(now, EventKind::OrchestratorStarted),
                    visible_at: None,
                });
            }
            outcome
        }
        None => record_episode(meta, history, new_events, result, now, limits),
    };
    let ended = outcome.metadata.status.is_terminal()
        || matches!(outcome.history, HistoryUpdate::Restart { .. });
    outcome.dropped_timers = if ended {
        DroppedTimers::All
    } else {
        DroppedTimers::Cancelled(result.cancelled_timers.clone())
    };
    let dropped = &outcome.dropped_timers;
    outcome.outbox.messages.retain(|m| {
        !(m.instance_id == meta.instance_id
            && m.execution_id.as_deref() == Some(meta.execution_id.as_str())
            && dropped.covers(&m.event))
    });
    outcome
}

fn record_episode(
    meta: &InstanceMetadata,
    history: &[HistoryEvent],
    new_events: &[HistoryEvent],
    result: &OrchestratorResult,
    now: Timestamp,
    limits: &Limits,
) -> EpisodeOutcome {
    let mut ep = Episode {
        meta,
        history,
        new_events,
        now,
        limits,
        appended: new_events.to_vec(),
        outbox: Outbox::default(),
    };
    let instance_id = &meta.instance_id;
    if let Err(e) = limits.check_payload(
        || format!("the custom status of \"{instance_id}\""),
        result.custom_status.as_deref(),
    ) {
        return ep.fail(too_large(e));
    }

    let completion = result.completion();
    let ends_as = |status| completion.is_some_and(|c| c.completes_as(status));
    // A terminated orchestration dispatches nothing more, whatever else the
    // episode asked for; a failing one still sends what expects no result.
    let terminated = ends_as(OrchestrationStatus::Terminated);
    let failed = ends_as(OrchestrationStatus::Failed);
    for action in &result.actions {
        let recorded = match &action.kind {
            ActionKind::CompleteOrchestration { .. } => Ok(()),
            _ if terminated => Ok(()),
            kind if failed && !kind.is_fire_and_forget() => Ok(()),
            kind => ep.record(action.id, kind, action.trace.as_ref()),
        };
        if let Err(e) = recorded {
            return ep.fail(too_large(e));
        }
    }
    ep.appended
        .push(HistoryEvent::new(now, EventKind::OrchestratorCompleted));

    let events = history.len() + ep.appended.len();
    if events > limits.max_history_events {
        return ep.fail(FailureDetails::new(
            "HistoryTooLarge",
            format!(
                "the history of \"{instance_id}\" would grow to {events} events, over the limit of {}; \
                 use continue_as_new to start a fresh history, or raise the backend's history limit",
                limits.max_history_events
            ),
        ));
    }

    let mut metadata = meta.clone();
    metadata.last_updated_at = now;
    metadata.custom_status = result.custom_status.clone();
    metadata.status = status_after(meta.status, new_events);

    match completion {
        Some(ActionKind::CompleteOrchestration {
            status,
            result: output,
            failure,
            carryover_events,
            new_version,
        }) => match status {
            OrchestrationStatus::ContinuedAsNew => ep.continue_as_new(
                metadata,
                output.clone(),
                carryover_events,
                new_version.clone(),
            ),
            OrchestrationStatus::Failed => match (ep.check_output(output), failure) {
                (Err(e), _) => ep.fail(e),
                // Code that no longer matches its history set nothing
                // that counts, not even its custom status.
                (Ok(()), Some(f)) if f.error_type == NON_DETERMINISM_ERROR => ep.fail(f.clone()),
                (Ok(()), f) => ep.fail_with_episode(
                    metadata,
                    f.clone().unwrap_or_else(|| {
                        FailureDetails::new("OrchestrationError", "the orchestration failed")
                    }),
                ),
            },
            status => ep.finish(metadata, *status, output.clone(), failure.clone()),
        },
        _ => EpisodeOutcome {
            metadata,
            history: HistoryUpdate::Append(ep.appended),
            outbox: ep.outbox,
            dropped_timers: DroppedTimers::default(),
        },
    }
}

/// The failure an over-limit payload turns into.
fn too_large(e: BackendError) -> FailureDetails {
    FailureDetails::new("PayloadTooLarge", e.to_string())
}

/// The entity an event is a message to: an [`ENTITY_EVENT`] sent to an
/// `@name@key` id.
///
/// [`ENTITY_EVENT`]: crate::entity::ENTITY_EVENT
fn entity_message(target: &str, name: &str) -> Option<crate::entity::EntityId> {
    if !name.eq_ignore_ascii_case(crate::entity::ENTITY_EVENT) {
        return None;
    }
    target.parse().ok()
}

/// Status implied by suspend/resume events delivered in an episode.
fn status_after(current: OrchestrationStatus, new_events: &[HistoryEvent]) -> OrchestrationStatus {
    let mut status = current;
    for e in new_events {
        match e.kind {
            EventKind::ExecutionStarted { .. } if status == OrchestrationStatus::Pending => {
                status = OrchestrationStatus::Running
            }
            EventKind::ExecutionSuspended { .. } => status = OrchestrationStatus::Suspended,
            EventKind::ExecutionResumed { .. } => status = OrchestrationStatus::Running,
            _ => {}
        }
    }
    status
}

/// The episode being applied: what it appends and what it sends.
struct Episode<'a> {
    meta: &'a InstanceMetadata,
    history: &'a [HistoryEvent],
    new_events: &'a [HistoryEvent],
    now: Timestamp,
    limits: &'a Limits,
    appended: Vec<HistoryEvent>,
    outbox: Outbox,
}

impl Episode<'_> {
    /// Records a scheduling action (not a completion); an over-limit
    /// payload is refused.
    fn record(
        &mut self,
        id: i32,
        kind: &ActionKind,
        trace: Option<&TraceContext>,
    ) -> Result<(), BackendError> {
        // The action's trace context goes on the event that records it.
        let recorded = self.appended.len();
        let result = self.record_kind(id, kind, trace);
        if let (Some(trace), Some(event)) = (trace, self.appended.get_mut(recorded)) {
            event.trace = Some(Box::new(trace.clone()));
        }
        result
    }

    fn record_kind(
        &mut self,
        id: i32,
        kind: &ActionKind,
        trace: Option<&TraceContext>,
    ) -> Result<(), BackendError> {
        match kind {
            ActionKind::ScheduleTask {
                name,
                version,
                input,
                tags,
            } => self.schedule_task(id, name, version, input, tags, trace),
            ActionKind::CreateTimer { fire_at } => {
                self.create_timer(id, *fire_at);
                Ok(())
            }
            ActionKind::CreateSubOrchestration {
                instance_id,
                name,
                version,
                input,
            } => self.create_sub_orchestration(id, instance_id, name, version, input, trace),
            ActionKind::SendEvent {
                instance_id,
                name,
                data,
            } => self.send_event(id, instance_id, name, data),
            ActionKind::TerminateOrchestration {
                instance_id,
                reason,
                recurse,
            } => {
                self.send(terminate_message(instance_id, reason, *recurse, self.now));
                Ok(())
            }
            ActionKind::CompleteOrchestration { .. } | ActionKind::RewindOrchestration { .. } => {
                Ok(())
            }
        }
    }

    fn check_input(&self, task: Task<'_>, input: &Option<String>) -> Result<(), BackendError> {
        self.limits
            .check_payload(|| format!("the input of {task}"), input.as_deref())
    }

    fn check_output(&self, output: &Option<String>) -> Result<(), FailureDetails> {
        let instance_id = &self.meta.instance_id;
        self.limits
            .check_payload(
                || format!("the output of \"{instance_id}\""),
                output.as_deref(),
            )
            .map_err(too_large)
    }

    fn append(&mut self, id: i32, kind: EventKind) {
        self.appended
            .push(HistoryEvent::with_id(id, self.now, kind));
    }

    fn send(&mut self, message: InstanceMessage) {
        self.outbox.messages.push(message);
    }

    fn schedule_task(
        &mut self,
        id: i32,
        name: &str,
        version: &Option<String>,
        input: &Option<String>,
        tags: &BTreeMap<String, String>,
        trace: Option<&TraceContext>,
    ) -> Result<(), BackendError> {
        self.check_input(Task::Activity(name), input)?;
        self.append(
            id,
            EventKind::TaskScheduled {
                name: name.to_string(),
                version: version.clone(),
                input: input.clone(),
                tags: tags.clone(),
            },
        );
        self.outbox.activities.push(ActivityWorkItem {
            instance_id: self.meta.instance_id.clone(),
            execution_id: self.meta.execution_id.clone(),
            task_id: id,
            name: name.to_string(),
            version: version.clone(),
            input: input.clone(),
            completion_token: String::new(),
            tags: tags.clone(),
            trace: trace.cloned(),
        });
        Ok(())
    }

    fn create_timer(&mut self, id: i32, fire_at: Timestamp) {
        self.append(id, EventKind::TimerCreated { fire_at });
        self.send(InstanceMessage {
            instance_id: self.meta.instance_id.clone(),
            execution_id: Some(self.meta.execution_id.clone()),
            event: HistoryEvent::new(
                fire_at,
                EventKind::TimerFired {
                    fire_at,
                    timer_id: id,
                },
            ),
            visible_at: Some(fire_at),
        });
    }

    fn create_sub_orchestration(
        &mut self,
        id: i32,
        child: &str,
        name: &str,
        version: &Option<String>,
        input: &Option<String>,
        trace: Option<&TraceContext>,
    ) -> Result<(), BackendError> {
        self.check_input(Task::SubOrchestration(name), input)?;
        self.append(
            id,
            EventKind::SubOrchestrationInstanceCreated {
                instance_id: child.to_string(),
                name: name.to_string(),
                version: version.clone(),
                input: input.clone(),
            },
        );
        self.outbox.new_instances.push(NewInstance {
            request: CreateInstanceRequest {
                instance_id: child.to_string(),
                name: name.to_string(),
                version: version.clone(),
                input: input.clone(),
                scheduled_start: None,
                reuse_policy: IdReusePolicy::default(),
                trace: trace.cloned(),
                tags: Default::default(),
            },
            parent: Some(ParentInstance {
                instance_id: self.meta.instance_id.clone(),
                execution_id: Some(self.meta.execution_id.clone()),
                name: Some(self.meta.name.clone()),
                task_scheduled_id: id,
            }),
        });
        Ok(())
    }

    fn send_event(
        &mut self,
        id: i32,
        target: &str,
        name: &str,
        data: &Option<String>,
    ) -> Result<(), BackendError> {
        self.limits
            .check_payload(|| format!("the data of event \"{name}\""), data.as_deref())?;
        self.append(
            id,
            EventKind::EventSent {
                instance_id: target.to_string(),
                name: name.to_string(),
                input: data.clone(),
            },
        );
        let visible_at = match entity_message(target, name) {
            Some(entity) => {
                // A message to an entity creates it if it does not exist
                // (an existing one, in any state, is kept); a delayed
                // signal waits like a timer.
                self.outbox.new_instances.push(NewInstance {
                    request: CreateInstanceRequest {
                        instance_id: target.to_string(),
                        name: entity.name().to_string(),
                        version: None,
                        input: None,
                        scheduled_start: None,
                        reuse_policy: IdReusePolicy::never(),
                        trace: None,
                        tags: Default::default(),
                    },
                    parent: None,
                });
                crate::entity::delivery_time(data.as_deref())
            }
            None => None,
        };
        self.send(InstanceMessage {
            instance_id: target.to_string(),
            execution_id: None,
            event: HistoryEvent::new(
                self.now,
                EventKind::EventRaised {
                    name: name.to_string(),
                    input: data.clone(),
                },
            ),
            visible_at,
        });
        Ok(())
    }

    fn parent(&self) -> Option<ParentInstance> {
        parent_of(self.history, self.new_events)
    }

    /// The episode fails the orchestration instead: only the delivered
    /// events are kept, the actions and the custom status are dropped, and
    /// the parent is told. (An episode over a limit, for example.)
    fn fail(self, details: FailureDetails) -> EpisodeOutcome {
        let mut appended = self.new_events.to_vec();
        appended.push(HistoryEvent::new(
            self.now,
            EventKind::OrchestratorCompleted,
        ));
        let metadata = self.meta.clone();
        self.failed(appended, metadata, Outbox::default(), details)
    }

    /// The orchestrator's code failed the orchestration: the episode is
    /// kept as it ran (its custom status, and the events it sent, which
    /// expect no result), and the parent is told.
    fn fail_with_episode(
        mut self,
        metadata: InstanceMetadata,
        details: FailureDetails,
    ) -> EpisodeOutcome {
        let appended = std::mem::take(&mut self.appended);
        let outbox = std::mem::take(&mut self.outbox);
        self.failed(appended, metadata, outbox, details)
    }

    /// Ends the history with the failure and tells the parent.
    fn failed(
        self,
        mut appended: Vec<HistoryEvent>,
        mut metadata: InstanceMetadata,
        mut outbox: Outbox,
        details: FailureDetails,
    ) -> EpisodeOutcome {
        let details = details.bounded();
        let now = self.now;
        appended.push(HistoryEvent::new(
            now,
            EventKind::ExecutionCompleted {
                status: OrchestrationStatus::Failed,
                result: None,
                failure: Some(details.clone()),
            },
        ));
        metadata.status = OrchestrationStatus::Failed;
        metadata.failure = Some(details.clone());
        metadata.output = None;
        metadata.last_updated_at = now;
        metadata.completed_at = Some(now);
        if let Some(p) = self.parent() {
            let failure = FailureDetails::new(
                "SubOrchestrationFailed",
                format!(
                    "sub-orchestration \"{}\" failed: {}",
                    self.meta.instance_id, details.message
                ),
            )
            // A child that cannot succeed (e.g. non-deterministic) must not
            // be retried by the parent's retry policy.
            .non_retriable_if(details.non_retriable)
            .with_inner(details);
            outbox.messages.push(notify_parent(&p, Err(failure), now));
        }
        EpisodeOutcome {
            metadata,
            history: HistoryUpdate::Append(appended),
            outbox,
            dropped_timers: DroppedTimers::default(),
        }
    }

    /// The execution starts over with a new input (and the carried-over
    /// events); the old history is dropped.
    fn continue_as_new(
        self,
        mut metadata: InstanceMetadata,
        input: Option<String>,
        carryover_events: &[HistoryEvent],
        new_version: Option<String>,
    ) -> EpisodeOutcome {
        let instance_id = &self.meta.instance_id;
        if let Err(e) = self.limits.check_payload(
            || format!("the new input of \"{instance_id}\""),
            input.as_deref(),
        ) {
            return self.fail(too_large(e));
        }
        let execution_id = new_execution_id();
        metadata.execution_id = execution_id.clone();
        metadata.status = OrchestrationStatus::Running;
        metadata.input = input.clone();
        metadata.output = None;
        metadata.failure = None;
        // The next execution runs the version the code asked for, else
        // the same one.
        metadata.version = new_version.or_else(|| self.meta.version.clone());
        let mut inbox_front = vec![HistoryEvent::new(
            self.now,
            EventKind::ExecutionStarted {
                name: self.meta.name.clone(),
                version: metadata.version.clone(),
                input,
                instance_id: instance_id.clone(),
                execution_id: Some(execution_id),
                parent: self.parent().map(Box::new),
                scheduled_start: None,
                tags: metadata.tags.clone(),
            },
        )
        // The new execution continues the trace of the one it replaces.
        .with_trace(
            execution_started(self.history)
                .or_else(|| execution_started(self.new_events))
                .and_then(|e| e.trace.as_deref().cloned()),
        )];
        inbox_front.extend(carryover_events.iter().cloned());
        EpisodeOutcome {
            metadata,
            history: HistoryUpdate::Restart { inbox_front },
            outbox: self.outbox,
            dropped_timers: DroppedTimers::default(),
        }
    }

    /// The orchestration completed or was terminated: record it, tell the
    /// parent and, for a recursive terminate, the running children.
    fn finish(
        mut self,
        mut metadata: InstanceMetadata,
        status: OrchestrationStatus,
        output: Option<String>,
        failure: Option<FailureDetails>,
    ) -> EpisodeOutcome {
        let now = self.now;
        if let Err(e) = self.check_output(&output) {
            return self.fail(e);
        }
        let instance_id = &self.meta.instance_id;
        self.appended.push(HistoryEvent::new(
            now,
            EventKind::ExecutionCompleted {
                status,
                result: output.clone(),
                failure: failure.clone(),
            },
        ));
        metadata.status = status;
        metadata.output = output.clone();
        metadata.failure = failure;
        metadata.completed_at = Some(now);
        if let Some(p) = self.parent() {
            let result = if status == OrchestrationStatus::Completed {
                Ok(output.clone())
            } else {
                Err(terminated_notice(instance_id))
            };
            self.send(notify_parent(&p, result, now));
        }
        let recurse = status == OrchestrationStatus::Terminated
            && self
                .new_events
                .iter()
                .any(|e| matches!(e.kind, EventKind::ExecutionTerminated { recurse: true, .. }));
        if recurse {
            let mut all = self.history.to_vec();
            all.extend(self.appended.iter().cloned());
            for child in running_children(&all) {
                self.send(terminate_message(&child, &output, true, now));
            }
        }
        EpisodeOutcome {
            metadata,
            history: HistoryUpdate::Append(self.appended),
            outbox: self.outbox,
            dropped_timers: DroppedTimers::default(),
        }
    }
}

/// An `ExecutionTerminated` for another instance.
fn terminate_message(
    instance_id: &str,
    reason: &Option<String>,
    recurse: bool,
    now: Timestamp,
) -> InstanceMessage {
    InstanceMessage {
        instance_id: instance_id.to_string(),
        execution_id: None,
        event: HistoryEvent::new(
            now,
            EventKind::ExecutionTerminated {
                input: reason.clone(),
                recurse,
            },
        ),
        visible_at: None,
    }
}
