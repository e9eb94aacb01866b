//! The in-memory backend: everything in one process, nothing persisted.
//!
//! For tests and the generated test harness. Work delivery is push-based
//! (`tokio::sync::Notify`), never polled, so an episode costs microseconds.
//! With a virtual clock ([`MemoryBackend::with_virtual_clock`]) timers fire
//! only when a test advances time, which lets a 30-day timer fire at once.

use super::transition::{self, ControlRequest, HistoryUpdate, InstanceMessage, Limits, Reuse};
use super::{
    ActivityWorkItem, Backend, BackendError, CreateInstanceRequest, InstanceMetadata,
    InstanceQuery, OrchestrationWorkItem, PurgeTarget, QueryPage, RecordedEpisode, WaitFor,
};
use crate::actions::OrchestratorResult;
use crate::failure::TaskOutcome;
use crate::history::{HistoryEvent, OrchestrationStatus, Timestamp};
use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::sync::Notify;

struct Instance {
    meta: InstanceMetadata,
    history: Arc<Vec<HistoryEvent>>,
    inbox: Vec<HistoryEvent>,
    /// Lease token and number of inbox events delivered with it.
    lease: Option<(u64, usize)>,
}

#[derive(Default)]
struct State {
    instances: BTreeMap<String, Instance>,
    ready: VecDeque<String>,
    ready_set: HashSet<String>,
    activities: VecDeque<ActivityWorkItem>,
    leased_activities: HashMap<u64, ActivityWorkItem>,
    timers: BTreeMap<(Timestamp, u64), InstanceMessage>,
    next_token: u64,
    leased_orchestrations: usize,
    watchers: HashMap<String, Arc<Notify>>,
    /// Virtual clock only: the external events each running instance's
    /// latest applied episode waits for.
    event_waits: HashMap<String, Vec<String>>,
    /// The same, told for an episode not yet completed: (token, names).
    pending_waits: HashMap<String, (String, Vec<String>)>,
}

struct Shared {
    state: Mutex<State>,
    orchestration_work: Notify,
    activity_work: Notify,
    changed: Notify,
    virtual_now: Option<Mutex<Timestamp>>,
    limits: Limits,
}

/// The in-memory backend. Cloning gives another handle to the same store.
///
/// ```
/// use durable_runtime::{Client, MemoryBackend, Registry, Worker};
/// use std::sync::Arc;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let backend = Arc::new(MemoryBackend::new());
/// let registry = Registry::new()
///     .orchestrator_fn("hello", |_ctx, name: String| async move { Ok(format!("Hello, {name}!")) });
/// let worker = Worker::new(backend.clone(), registry).start().unwrap();
/// let client = Client::new(backend);
/// let id = client.schedule_by_name("hello", &"world", Default::default()).await.unwrap();
/// let state = client.wait_for_completion(&id, std::time::Duration::from_secs(5)).await.unwrap();
/// assert_eq!(state.output::<String>().unwrap(), "Hello, world!");
/// worker.shutdown().await;
/// # }
/// ```
#[derive(Clone)]
pub struct MemoryBackend {
    shared: Arc<Shared>,
}

impl Default for MemoryBackend {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend")
            .field("virtual_clock", &self.shared.virtual_now.is_some())
            .finish()
    }
}

impl MemoryBackend {
    /// A backend on the real clock with default limits.
    pub fn new() -> Self {
        Self::build(None, Limits::default())
    }

    /// A backend on a virtual clock starting at `start`: timers fire only
    /// when [`advance_to_next_timer`](Self::advance_to_next_timer) or
    /// [`advance`](Self::advance) moves time forward.
    pub fn with_virtual_clock(start: Timestamp) -> Self {
        Self::build(Some(start), Limits::default())
    }

    /// Replaces the size limits.
    pub fn with_limits(self, limits: Limits) -> Self {
        let virtual_start = self.shared.virtual_now.as_ref().map(|m| *lock(m));
        Self::build(virtual_start, limits)
    }

    fn build(virtual_start: Option<Timestamp>, limits: Limits) -> Self {
        MemoryBackend {
            shared: Arc::new(Shared {
                state: Mutex::new(State::default()),
                orchestration_work: Notify::new(),
                activity_work: Notify::new(),
                changed: Notify::new(),
                virtual_now: virtual_start.map(Mutex::new),
                limits,
            }),
        }
    }

    /// The backend's current time (virtual or real).
    pub fn now(&self) -> Timestamp {
        match &self.shared.virtual_now {
            Some(m) => *lock(m),
            None => chrono::Utc::now(),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        lock(&self.shared.state)
    }

    /// True when no work is queued or in flight (timers may be pending).
    pub fn is_idle(&self) -> bool {
        let s = self.state();
        s.ready.is_empty()
            && s.activities.is_empty()
            && s.leased_activities.is_empty()
            && s.leased_orchestrations == 0
    }

    /// Virtual clock only: the external events (names in lower case,
    /// sorted) the instance's latest episode left it waiting for; empty
    /// when it waits for none, has not run an episode, or has finished.
    pub fn event_waits(&self, instance_id: &str) -> Vec<String> {
        self.state()
            .event_waits
            .get(instance_id)
            .cloned()
            .unwrap_or_default()
    }

    /// When the earliest pending timer fires, if any.
    pub fn next_timer(&self) -> Option<Timestamp> {
        self.state().timers.keys().next().map(|(t, _)| *t)
    }

    /// A future that completes at the next change; create it before checking
    /// state so no change is missed.
    pub fn change_notification(&self) -> tokio::sync::futures::Notified<'_> {
        self.shared.changed.notified()
    }

    /// Virtual clock only: jumps to the earliest pending timer and fires
    /// every timer due by then. Returns the new time, or `None` if no timer
    /// is pending (or the clock is real).
    pub fn advance_to_next_timer(&self) -> Option<Timestamp> {
        let vm = self.shared.virtual_now.as_ref()?;
        let next = self.next_timer()?;
        {
            let mut now = lock(vm);
            if next > *now {
                *now = next;
            }
        }
        self.fire_due_timers();
        Some(next)
    }

    /// Virtual clock only: moves time forward by `d`, firing due timers.
    pub fn advance(&self, d: Duration) {
        if let Some(vm) = self.shared.virtual_now.as_ref() {
            {
                let mut now = lock(vm);
                *now = chrono::Duration::from_std(d)
                    .ok()
                    .and_then(|d| now.checked_add_signed(d))
                    .unwrap_or(chrono::DateTime::<chrono::Utc>::MAX_UTC);
            }
            self.fire_due_timers();
        }
    }

    fn fire_due_timers(&self) {
        let now = self.now();
        let mut s = self.state();
        let due: Vec<(Timestamp, u64)> = s
            .timers
            .range(..=(now, u64::MAX))
            .map(|(k, _)| *k)
            .collect();
        if due.is_empty() {
            return;
        }
        for k in due {
            if let Some(mut msg) = s.timers.remove(&k) {
                msg.visible_at = None;
                deliver(&mut s, msg, now);
            }
        }
        drop(s);
        self.notify_all();
    }

    fn notify_all(&self) {
        self.shared.orchestration_work.notify_waiters();
        self.shared.orchestration_work.notify_one();
        self.shared.changed.notify_waiters();
    }

    fn watcher(&self, id: &str) -> Arc<Notify> {
        self.state()
            .watchers
            .entry(id.to_string())
            .or_insert_with(|| Arc::new(Notify::new()))
            .clone()
    }

    fn create_locked(
        &self,
        s: &mut State,
        request: &CreateInstanceRequest,
        parent: Option<crate::history::ParentInstance>,
        now: Timestamp,
    ) -> Result<(), BackendError> {
        let decision = transition::check_reuse(
            s.instances.get(&request.instance_id).map(|i| &i.meta),
            &request.reuse_policy,
        )?;
        // Validate the new instance before touching the old one: a refused
        // request changes nothing.
        let (meta, start) = transition::create_instance(request, parent, now, &self.shared.limits)?;
        if decision != Reuse::Create {
            // Replace: the old instance (finished, or terminated here) goes
            // away; a worker still holding its lease will get LeaseLost.
            if let Some(old) = s.instances.remove(&request.instance_id) {
                if old.lease.is_some() {
                    s.leased_orchestrations -= 1;
                }
                if decision == Reuse::TerminateAndReplace {
                    if let Some(notice) = transition::terminated_for_replacement(
                        &request.instance_id,
                        &old.history,
                        &old.inbox,
                        now,
                    ) {
                        deliver(s, notice, now);
                    }
                }
            }
        }
        s.instances.insert(
            request.instance_id.clone(),
            Instance {
                meta,
                history: Arc::new(Vec::new()),
                inbox: Vec::new(),
                lease: None,
            },
        );
        deliver(s, start, now);
        touch(s, &request.instance_id);
        Ok(())
    }

    fn control(&self, instance_id: &str, request: ControlRequest) -> Result<(), BackendError> {
        request.check(&self.shared.limits)?;
        let now = self.now();
        let mut s = self.state();
        Self::control_locked(&mut s, instance_id, request, now)?;
        drop(s);
        self.notify_all();
        Ok(())
    }

    fn control_locked(
        s: &mut State,
        instance_id: &str,
        request: ControlRequest,
        now: Timestamp,
    ) -> Result<(), BackendError> {
        let inst = s
            .instances
            .get_mut(instance_id)
            .ok_or_else(|| BackendError::NotFound(instance_id.to_string()))?;
        let Some((event, status)) = request.decide(instance_id, inst.meta.status)? else {
            return Ok(());
        };
        if let Some(st) = status {
            inst.meta.status = st;
            inst.meta.last_updated_at = now;
        }
        let exec = inst.meta.execution_id.clone();
        deliver(
            s,
            InstanceMessage {
                instance_id: instance_id.to_string(),
                execution_id: Some(exec),
                event: HistoryEvent::new(now, event),
                visible_at: None,
            },
            now,
        );
        touch(s, instance_id);
        Ok(())
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // No user code runs under these locks; a poisoned lock still holds
    // consistent data.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn touch(s: &mut State, id: &str) {
    if let Some(w) = s.watchers.get(id) {
        w.notify_waiters();
    }
}

fn mark_ready(s: &mut State, id: &str) {
    if s.ready_set.insert(id.to_string()) {
        s.ready.push_back(id.to_string());
    }
}

/// Routes a message: later (timer), into an inbox, or nowhere (finished or
/// unknown instance, or another execution).
fn deliver(s: &mut State, msg: InstanceMessage, now: Timestamp) {
    if let Some(t) = msg.visible_at {
        if t > now {
            let seq = s.next_token;
            s.next_token += 1;
            s.timers.insert((t, seq), msg);
            return;
        }
    }
    let Some(inst) = s.instances.get_mut(&msg.instance_id) else {
        tracing::debug!(instance_id = %msg.instance_id, "dropping message for unknown instance");
        return;
    };
    if !transition::accepts_message(&inst.meta, &msg) {
        tracing::debug!(instance_id = %msg.instance_id, event = msg.event.kind.type_name(), "dropping message for finished instance or old execution");
        return;
    }
    inst.inbox.push(msg.event);
    if inst.lease.is_none() && transition::runnable(inst.history.is_empty(), &inst.inbox) {
        mark_ready(s, &msg.instance_id);
    }
}

fn parse_token(token: &str) -> Option<u64> {
    token.rsplit('#').next()?.parse().ok()
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn create_instance(&self, request: CreateInstanceRequest) -> Result<(), BackendError> {
        let now = self.now();
        {
            let mut s = self.state();
            self.create_locked(&mut s, &request, None, now)?;
        }
        self.notify_all();
        Ok(())
    }

    async fn get_instance(
        &self,
        instance_id: &str,
        with_payloads: bool,
    ) -> Result<Option<InstanceMetadata>, BackendError> {
        let s = self.state();
        Ok(s.instances.get(instance_id).map(|i| {
            if with_payloads {
                i.meta.clone()
            } else {
                i.meta.clone().without_payloads()
            }
        }))
    }

    async fn wait_for_instance(
        &self,
        instance_id: &str,
        wait_for: WaitFor,
        timeout: Duration,
    ) -> Result<InstanceMetadata, BackendError> {
        let watcher = self.watcher(instance_id);
        let deadline = super::deadline_after(timeout);
        loop {
            let notified = watcher.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.state();
                let found = s.instances.get(instance_id).map(|inst| {
                    let done = match wait_for {
                        WaitFor::Start => inst.meta.status != OrchestrationStatus::Pending,
                        WaitFor::Completion => inst.meta.status.is_terminal(),
                    };
                    (done, inst.meta.status.is_terminal(), inst.meta.clone())
                });
                let finished = found.as_ref().is_none_or(|(_, terminal, _)| *terminal);
                // Nothing more will happen to a missing or finished
                // instance: drop its notifier unless another waiter holds it.
                if finished && Arc::strong_count(&watcher) == 2 {
                    s.watchers.remove(instance_id);
                }
                match found {
                    None => return Err(BackendError::NotFound(instance_id.to_string())),
                    Some((true, _, meta)) => return Ok(meta),
                    Some((false, ..)) => {}
                }
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return Err(BackendError::Timeout(timeout, instance_id.to_string()));
            }
        }
    }

    async fn raise_event(
        &self,
        instance_id: &str,
        name: &str,
        input: Option<String>,
    ) -> Result<(), BackendError> {
        let name = name.to_string();
        self.control(instance_id, ControlRequest::RaiseEvent { name, input })
    }

    async fn terminate(
        &self,
        instance_id: &str,
        output: Option<String>,
        recursive: bool,
    ) -> Result<(), BackendError> {
        self.control(instance_id, ControlRequest::Terminate { output, recursive })
    }

    async fn suspend(&self, instance_id: &str, reason: Option<String>) -> Result<(), BackendError> {
        self.control(instance_id, ControlRequest::Suspend { reason })
    }

    async fn resume(&self, instance_id: &str, reason: Option<String>) -> Result<(), BackendError> {
        self.control(instance_id, ControlRequest::Resume { reason })
    }

    async fn rewind(&self, instance_id: &str, reason: Option<String>) -> Result<(), BackendError> {
        let request = ControlRequest::Rewind { reason };
        request.check(&self.shared.limits)?;
        let now = self.now();
        let mut s = self.state();
        // The instance first (refused unless it failed), then its failed
        // sub-orchestrations, all under one lock.
        Self::control_locked(&mut s, instance_id, request.clone(), now)?;
        let mut queue = vec![instance_id.to_string()];
        while let Some(id) = queue.pop() {
            let Some(parent) = s.instances.get(&id) else {
                continue;
            };
            let parent_meta = parent.meta.clone();
            for (child, task_id) in transition::rewind_children(&parent.history) {
                let Some(c) = s.instances.get(&child) else {
                    continue;
                };
                match transition::child_on_rewind(&parent_meta, task_id, &c.meta, now) {
                    Some(transition::ChildOnRewind::Rewind) => {
                        Self::control_locked(&mut s, &child, request.clone(), now)?;
                        queue.push(child);
                    }
                    Some(transition::ChildOnRewind::Deliver(msg)) => deliver(&mut s, *msg, now),
                    None => {}
                }
            }
        }
        drop(s);
        self.notify_all();
        Ok(())
    }

    async fn remove_idle_entity(
        &self,
        instance_id: &str,
        execution_id: &str,
    ) -> Result<bool, BackendError> {
        let mut s = self.state();
        let idle = s.instances.get(instance_id).is_some_and(|inst| {
            inst.meta.execution_id == execution_id
                && inst.meta.status == OrchestrationStatus::Running
                && inst.lease.is_none()
                && inst.inbox.is_empty()
        }) && !s.timers.values().any(|m| m.instance_id == instance_id);
        if !idle {
            return Ok(false);
        }
        s.instances.remove(instance_id);
        s.event_waits.remove(instance_id);
        if let Some(w) = s.watchers.remove(instance_id) {
            w.notify_waiters();
        }
        Ok(true)
    }

    async fn purge(&self, target: PurgeTarget, recursive: bool) -> Result<usize, BackendError> {
        let mut s = self.state();
        let mut roots: Vec<String> = match &target {
            PurgeTarget::Instance(id) => {
                let inst = s
                    .instances
                    .get(id)
                    .ok_or_else(|| BackendError::NotFound(id.clone()))?;
                if !inst.meta.status.is_terminal() {
                    return Err(BackendError::InvalidState {
                        id: id.clone(),
                        operation: "purge",
                        status: inst.meta.status,
                    });
                }
                vec![id.clone()]
            }
            PurgeTarget::Filter {
                created_from,
                created_to,
                statuses,
            } => s
                .instances
                .values()
                .filter(|i| {
                    let m = &i.meta;
                    m.status.is_terminal()
                        && (statuses.is_empty() || statuses.contains(&m.status))
                        && created_from.is_none_or(|t| m.created_at >= t)
                        && created_to.is_none_or(|t| m.created_at < t)
                })
                .map(|i| i.meta.instance_id.clone())
                .collect(),
        };
        let mut count = 0;
        while let Some(id) = roots.pop() {
            let Some(inst) = s.instances.get(&id) else {
                continue;
            };
            if !inst.meta.status.is_terminal() {
                continue;
            }
            if recursive {
                roots.extend(transition::all_children(&inst.history));
            }
            s.instances.remove(&id);
            s.event_waits.remove(&id);
            if let Some(w) = s.watchers.remove(&id) {
                w.notify_waiters();
            }
            count += 1;
        }
        Ok(count)
    }

    async fn query_instances(&self, query: InstanceQuery) -> Result<QueryPage, BackendError> {
        let s = self.state();
        let page = query.effective_page_size();
        let start = match &query.continuation_token {
            Some(t) => std::ops::Bound::Excluded(t.clone()),
            None => std::ops::Bound::Unbounded,
        };
        let mut instances = Vec::new();
        let mut last = None;
        let mut more = false;
        for (id, inst) in s.instances.range((start, std::ops::Bound::Unbounded)) {
            if !query.matches(&inst.meta) {
                continue;
            }
            if instances.len() == page {
                more = true;
                break;
            }
            instances.push(if query.fetch_payloads {
                inst.meta.clone()
            } else {
                inst.meta.clone().without_payloads()
            });
            last = Some(id.clone());
        }
        Ok(QueryPage {
            instances,
            continuation_token: if more { last } else { None },
        })
    }

    async fn get_history(&self, instance_id: &str) -> Result<Vec<HistoryEvent>, BackendError> {
        let s = self.state();
        let inst = s
            .instances
            .get(instance_id)
            .ok_or_else(|| BackendError::NotFound(instance_id.to_string()))?;
        Ok(inst.history.as_ref().clone())
    }

    async fn next_orchestration_item(&self) -> Result<OrchestrationWorkItem, BackendError> {
        loop {
            let notified = self.shared.orchestration_work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.shared.virtual_now.is_none() {
                self.fire_due_timers();
            }
            let now = self.now();
            let next_timer = {
                let mut s = self.state();
                while let Some(id) = s.ready.pop_front() {
                    s.ready_set.remove(&id);
                    let token = s.next_token;
                    let Some(inst) = s.instances.get_mut(&id) else {
                        continue;
                    };
                    if inst.lease.is_some()
                        || !transition::runnable(inst.history.is_empty(), &inst.inbox)
                    {
                        continue;
                    }
                    let n = inst.inbox.len();
                    inst.lease = Some((token, n));
                    let item = OrchestrationWorkItem {
                        instance_id: id.clone(),
                        execution_id: inst.meta.execution_id.clone(),
                        past_events: inst.history.clone(),
                        new_events: transition::episode_events(inst.inbox.iter().cloned(), now),
                        completion_token: format!("{id}#{token}"),
                        orchestration_span: None,
                    };
                    s.next_token += 1;
                    s.leased_orchestrations += 1;
                    crate::metrics::backlog(crate::metrics::KIND_ORCHESTRATION, s.ready.len());
                    return Ok(item);
                }
                s.timers.keys().next().map(|(t, _)| *t)
            };
            match (next_timer, self.shared.virtual_now.is_none()) {
                (Some(t), true) => {
                    let wait = (t - now).to_std().unwrap_or_default();
                    let _ = tokio::time::timeout(wait, notified).await;
                }
                _ => notified.await,
            }
        }
    }

    async fn complete_orchestration_episode(
        &self,
        item: OrchestrationWorkItem,
        result: OrchestratorResult,
    ) -> Result<Option<RecordedEpisode>, BackendError> {
        let now = self.now();
        let token = parse_token(&item.completion_token);
        let item_token = item.completion_token.clone();
        let OrchestrationWorkItem {
            instance_id,
            new_events,
            past_events,
            ..
        } = item;
        // Release our reference so the stored history can grow in place.
        drop(past_events);
        let mut s = self.state();
        let waits = s.pending_waits.remove(&instance_id);
        let inst = s
            .instances
            .get_mut(&instance_id)
            .ok_or_else(|| BackendError::LeaseLost(instance_id.clone()))?;
        let delivered = match inst.lease {
            Some((t, n)) if Some(t) == token => n,
            _ => return Err(BackendError::LeaseLost(instance_id.clone())),
        };
        let outcome = transition::apply_episode(
            &inst.meta,
            &inst.history,
            &new_events,
            &result,
            now,
            &self.shared.limits,
        );
        inst.lease = None;
        inst.inbox.drain(..delivered.min(inst.inbox.len()));
        // Timers the episode cancelled (or all, if the execution ended):
        // already in the inbox, or still waiting for their time.
        let dropped = outcome.dropped_timers;
        let execution_id = inst.meta.execution_id.clone();
        inst.inbox.retain(|e| !dropped.covers(e));
        inst.meta = outcome.metadata;
        let recorded = RecordedEpisode {
            status: inst.meta.status,
            failure: inst.meta.failure.clone(),
        };
        match outcome.history {
            HistoryUpdate::Append(events) => Arc::make_mut(&mut inst.history).extend(events),
            HistoryUpdate::Replace(events) => inst.history = Arc::new(events),
            HistoryUpdate::Restart { inbox_front } => {
                inst.history = Arc::new(Vec::new());
                let rest = std::mem::take(&mut inst.inbox);
                inst.inbox = inbox_front;
                inst.inbox
                    .extend(rest.into_iter().filter(transition::survives_restart));
            }
        }
        if inst.meta.status.is_terminal() {
            inst.inbox.clear();
        }
        let has_more = transition::runnable(inst.history.is_empty(), &inst.inbox);
        let terminal = inst.meta.status.is_terminal();
        if inst.inbox.is_empty() {
            // An idle instance should not keep its inbox's buffer.
            inst.inbox = Vec::new();
        }
        s.leased_orchestrations -= 1;
        match waits {
            Some((t, names)) if !terminal && t == item_token => {
                s.event_waits.insert(instance_id.clone(), names);
            }
            _ => {
                s.event_waits.remove(&instance_id);
            }
        }
        if has_more {
            mark_ready(&mut s, &instance_id);
        }
        if !dropped.is_empty() {
            s.timers.retain(|_, m| {
                !(m.instance_id == instance_id
                    && m.execution_id.as_deref() == Some(execution_id.as_str())
                    && dropped.covers(&m.event))
            });
        }
        let out = outcome.outbox;
        let new_activities = !out.activities.is_empty();
        s.activities.extend(out.activities);
        for child in out.new_instances {
            if let Err(e) = self.create_locked(&mut s, &child.request, child.parent.clone(), now) {
                if let Some(notice) = child.creation_failed(&e, now) {
                    deliver(&mut s, notice, now);
                }
            }
        }
        for msg in out.messages {
            deliver(&mut s, msg, now);
        }
        touch(&mut s, &instance_id);
        if terminal {
            // Waiters were just notified; later waiters find it finished.
            s.watchers.remove(&instance_id);
        }
        drop(s);
        if new_activities {
            self.shared.activity_work.notify_waiters();
            self.shared.activity_work.notify_one();
        }
        self.notify_all();
        Ok(Some(recorded))
    }

    async fn abandon_orchestration_item(
        &self,
        item: OrchestrationWorkItem,
    ) -> Result<(), BackendError> {
        let token = parse_token(&item.completion_token);
        let mut s = self.state();
        let inst = s
            .instances
            .get_mut(&item.instance_id)
            .ok_or_else(|| BackendError::LeaseLost(item.instance_id.clone()))?;
        match inst.lease {
            Some((t, _)) if Some(t) == token => inst.lease = None,
            _ => return Err(BackendError::LeaseLost(item.instance_id.clone())),
        }
        s.leased_orchestrations -= 1;
        mark_ready(&mut s, &item.instance_id);
        drop(s);
        self.notify_all();
        Ok(())
    }

    async fn next_activity_item(&self) -> Result<ActivityWorkItem, BackendError> {
        loop {
            let notified = self.shared.activity_work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            {
                let mut s = self.state();
                if let Some(mut item) = s.activities.pop_front() {
                    let token = s.next_token;
                    s.next_token += 1;
                    item.completion_token = format!("activity#{token}");
                    s.leased_activities.insert(token, item.clone());
                    crate::metrics::backlog(crate::metrics::KIND_ACTIVITY, s.activities.len());
                    return Ok(item);
                }
            }
            notified.await;
        }
    }

    async fn complete_activity_item(
        &self,
        item: &ActivityWorkItem,
        outcome: TaskOutcome,
    ) -> Result<(), BackendError> {
        let now = self.now();
        let token = parse_token(&item.completion_token);
        let mut s = self.state();
        let task = token
            .and_then(|t| s.leased_activities.remove(&t))
            .ok_or_else(|| BackendError::LeaseLost(item.completion_token.clone()))?;
        let event = transition::activity_completion(
            task.task_id,
            outcome,
            &task.name,
            now,
            &self.shared.limits,
        );
        deliver(
            &mut s,
            InstanceMessage {
                instance_id: task.instance_id,
                execution_id: Some(task.execution_id),
                event,
                visible_at: None,
            },
            now,
        );
        drop(s);
        self.notify_all();
        Ok(())
    }

    async fn abandon_activity_item(&self, item: &ActivityWorkItem) -> Result<(), BackendError> {
        let token = parse_token(&item.completion_token);
        let mut s = self.state();
        let task = token
            .and_then(|t| s.leased_activities.remove(&t))
            .ok_or_else(|| BackendError::LeaseLost(item.completion_token.clone()))?;
        s.activities.push_front(task);
        drop(s);
        self.shared.activity_work.notify_one();
        self.shared.changed.notify_waiters();
        Ok(())
    }

    fn wants_event_waits(&self) -> bool {
        self.shared.virtual_now.is_some()
    }

    fn record_event_waits(&self, item: &OrchestrationWorkItem, events: Vec<String>) {
        self.state().pending_waits.insert(
            item.instance_id.clone(),
            (item.completion_token.clone(), events),
        );
    }
}
