//! The state of one orchestration execution, shared by the context, its
//! futures and the replay engine: the next sequence number, the actions not
//! yet matched by history, the slot of every outstanding durable task and
//! the external events buffered for later waits.

use crate::actions::{ActionKind, Task};
use crate::failure::TaskOutcome;
use crate::history::{EventKind, FailureDetails, HistoryEvent, Timestamp};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Waker;

/// The state as the context and its futures share it.
pub(crate) type SharedState = Arc<Mutex<CtxState>>;

/// Locks the state. A panic in user code never happens while this lock is
/// held (the engine only locks around its own bookkeeping), so poisoning
/// can be ignored safely.
pub(crate) fn lock(state: &SharedState) -> MutexGuard<'_, CtxState> {
    state.lock().unwrap_or_else(|p| p.into_inner())
}

/// One outstanding (or resolved, not yet consumed) durable task.
pub(crate) struct Slot {
    pub(crate) outcome: Option<TaskOutcome>,
    pub(crate) waker: Option<Waker>,
    pub(crate) describe: String,
    /// When the task finished, as a position in the order of completions
    /// (1 for the first); 0 while it runs.
    pub(crate) finished_at: u64,
    /// Whether the task is a durable timer (dropping it unfired cancels it).
    pub(crate) timer: bool,
    /// For an external-event wait, the event's name as buffered
    /// (lower-case): dropping the wait unconsumed puts its event back.
    pub(crate) event: Option<String>,
}

/// Mutable state of one orchestration execution, shared by the context,
/// its futures and the replay engine.
pub(crate) struct CtxState {
    pub(crate) instance_id: String,
    pub(crate) name: String,
    /// The orchestrator version the execution started with.
    pub(crate) version: Option<String>,
    /// Identifies the execution (its id, or its start time) for `new_uuid`.
    pub(crate) execution_key: String,
    pub(crate) now: Timestamp,
    pub(crate) is_replaying: bool,
    pub(crate) next_seq: i32,
    pub(super) next_event_key: i64,
    pub(super) uuid_counter: u64,
    /// How many tasks have finished so far: completions, failures, fired
    /// timers and delivered events, in history order.
    pub(super) completions: u64,
    /// The latest completion the last poll of a future consumed (see
    /// `context::join`, which reads it to order failures as they happened).
    pub(super) consumed: u64,
    /// Actions created by the code and not yet matched by history events.
    pub(crate) pending_actions: BTreeMap<i32, ActionKind>,
    /// Unresolved or not-yet-consumed durable tasks; task ids are the keys,
    /// external-event waits use negative keys.
    pub(crate) slots: HashMap<i64, Slot>,
    pub(crate) event_waiters: HashMap<String, VecDeque<i64>>,
    pub(crate) event_buffer: HashMap<String, VecDeque<Option<String>>>,
    /// Order in which events were buffered, to carry them over on continue-as-new.
    pub(crate) event_buffer_order: VecDeque<String>,
    pub(crate) custom_status: Option<String>,
    pub(crate) continue_as_new: Option<(Option<String>, bool)>,
    /// The version the next execution starts on, if `continue_as_new`
    /// moves the instance to another one.
    pub(crate) continue_version: Option<String>,
    /// The version sub-orchestrations start on when the code names none
    /// (the worker's `VersioningOptions::default_version`).
    pub(crate) default_version: Option<String>,
    /// A value the code handed to the context could not be serialised; the
    /// orchestration fails with this at the end of the episode.
    pub(crate) deferred_failure: Option<FailureDetails>,
    /// Timers dropped before they fired, while the code ran live (not while
    /// replaying: those were reported by the episode that dropped them).
    pub(crate) cancelled_timers: Vec<i32>,
}

impl CtxState {
    pub(crate) fn new(instance_id: String, name: String, now: Timestamp) -> Self {
        CtxState {
            instance_id,
            name,
            version: None,
            execution_key: String::new(),
            now,
            is_replaying: false,
            next_seq: 0,
            next_event_key: -1,
            uuid_counter: 0,
            completions: 0,
            consumed: 0,
            pending_actions: BTreeMap::new(),
            slots: HashMap::new(),
            event_waiters: HashMap::new(),
            event_buffer: HashMap::new(),
            event_buffer_order: VecDeque::new(),
            custom_status: None,
            continue_as_new: None,
            continue_version: None,
            default_version: None,
            deferred_failure: None,
            cancelled_timers: Vec::new(),
        }
    }

    pub(super) fn schedule(&mut self, kind: ActionKind, describe: String) -> i32 {
        let id = self.next_seq;
        self.next_seq += 1;
        let timer = matches!(kind, ActionKind::CreateTimer { .. });
        self.pending_actions.insert(id, kind);
        self.slots.insert(
            id as i64,
            Slot {
                outcome: None,
                waker: None,
                describe,
                finished_at: 0,
                timer,
                event: None,
            },
        );
        id
    }

    /// A timer fired: resolves its wait, if the code still waits. A timer
    /// the code dropped (cancelled) is ignored, and is no longer reported
    /// as cancelled: it fired anyway.
    pub(crate) fn timer_fired(&mut self, id: i32) -> Option<Waker> {
        self.cancelled_timers.retain(|t| *t != id);
        self.resolve(id as i64, Ok(None))
    }

    /// When the task behind a slot finished (its position in the order of
    /// completions), or 0 while it runs or if it is gone.
    pub(super) fn finished_at(&self, key: i64) -> u64 {
        self.slots.get(&key).map_or(0, |s| s.finished_at)
    }

    /// The description of the task behind a slot, if it is still there.
    pub(super) fn describe(&self, key: i64) -> Option<String> {
        self.slots.get(&key).map(|s| s.describe.clone())
    }

    /// Resolves a slot; returns the waker to wake (outside the lock).
    pub(crate) fn resolve(&mut self, key: i64, outcome: TaskOutcome) -> Option<Waker> {
        let slot = self.slots.get_mut(&key)?;
        if slot.outcome.is_some() {
            return None;
        }
        slot.outcome = Some(outcome);
        self.completions += 1;
        slot.finished_at = self.completions;
        slot.waker.take()
    }

    /// Delivers an external event to the first waiter, or buffers it.
    pub(crate) fn deliver_event(&mut self, name: &str, input: Option<String>) -> Option<Waker> {
        let key = name.to_ascii_lowercase();
        if let Some(q) = self.event_waiters.get_mut(&key) {
            if let Some(slot) = q.pop_front() {
                if q.is_empty() {
                    self.event_waiters.remove(&key);
                }
                return self.resolve(slot, Ok(input));
            }
        }
        self.event_buffer
            .entry(key.clone())
            .or_default()
            .push_back(input);
        self.event_buffer_order.push_back(key);
        None
    }

    /// Starts a wait for the external event `name` (case-insensitive): a
    /// buffered event resolves it at once. Returns the wait's slot key.
    pub(super) fn wait_for_event(&mut self, name: &str) -> i64 {
        let key = name.to_ascii_lowercase();
        let slot = self.next_event_key;
        self.next_event_key -= 1;
        let describe = Task::ExternalEvent(name).to_string();
        let buffered = self.event_buffer.get_mut(&key).and_then(|q| q.pop_front());
        let mut finished_at = 0;
        let outcome = match buffered {
            Some(payload) => {
                self.completions += 1;
                finished_at = self.completions;
                if let Some(pos) = self.event_buffer_order.iter().position(|k| *k == key) {
                    self.event_buffer_order.remove(pos);
                }
                Some(Ok(payload))
            }
            None => {
                self.event_waiters
                    .entry(key.clone())
                    .or_default()
                    .push_back(slot);
                None
            }
        };
        self.slots.insert(
            slot,
            Slot {
                outcome,
                waker: None,
                describe,
                finished_at,
                timer: false,
                event: Some(key),
            },
        );
        slot
    }

    /// Takes the external events that arrived and were not consumed, in
    /// arrival order, as `EventRaised` events stamped `now` (to carry them
    /// over on continue-as-new).
    pub(crate) fn take_unconsumed_events(&mut self) -> Vec<HistoryEvent> {
        let mut out = Vec::new();
        for name in std::mem::take(&mut self.event_buffer_order) {
            if let Some(payload) = self.event_buffer.get_mut(&name).and_then(|q| q.pop_front()) {
                out.push(HistoryEvent::new(
                    self.now,
                    EventKind::EventRaised {
                        name,
                        input: payload,
                    },
                ));
            }
        }
        out
    }

    /// Forgets a slot whose future was dropped; an abandoned event wait
    /// must not swallow the next event, nor keep one it received and never
    /// handed to the code (a deadline awaited late that lost: the event is
    /// put back, first in line, for the next wait), and a timer that has not
    /// fired is cancelled (reported in the episode's result, unless this is
    /// a replay of an episode that already reported it).
    pub(super) fn forget(&mut self, key: i64) {
        let Some(slot) = self.slots.remove(&key) else {
            return;
        };
        if key < 0 {
            for q in self.event_waiters.values_mut() {
                q.retain(|k| *k != key);
            }
            self.event_waiters.retain(|_, q| !q.is_empty());
            if let (Some(Ok(payload)), Some(name)) = (slot.outcome, slot.event) {
                self.event_buffer
                    .entry(name.clone())
                    .or_default()
                    .push_front(payload);
                self.event_buffer_order.push_front(name);
            }
        } else if slot.timer && slot.outcome.is_none() && !self.is_replaying {
            self.cancelled_timers.push(key as i32);
        }
    }

    /// Whether any durable work is outstanding (so a pending orchestrator is
    /// legitimately waiting).
    pub(crate) fn has_outstanding(&self) -> bool {
        !self.pending_actions.is_empty() || self.slots.values().any(|s| s.outcome.is_none())
    }
}
