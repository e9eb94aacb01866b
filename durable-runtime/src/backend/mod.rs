//! The [`Backend`] trait: where instances, histories and work items live.
//!
//! The trait mirrors the Durable Task sidecar protocol (`TaskHubSidecarService`):
//! a client side (create, query, raise, terminate, ...) and a worker side
//! (leased work items that are completed or abandoned). The worker and the
//! client only ever talk to this trait, so the same orchestrations run on the
//! in-memory backend, the SQLite backend and a remote gRPC sidecar.
//!
//! Delivery guarantees: activities run at least once (a lease that is lost or
//! abandoned delivers the item again); orchestration episodes are applied
//! exactly once (completing with a stale token is rejected with
//! [`BackendError::LeaseLost`]).

mod history_cache;
pub mod memory;
pub mod transition;

use crate::actions::OrchestratorResult;
use crate::failure::TaskOutcome;
use crate::handler::task_tags;
use crate::history::{FailureDetails, HistoryEvent, OrchestrationStatus, Timestamp};
use crate::trace::TraceContext;
use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::time::Duration;

pub use history_cache::HistoryCache;
pub use memory::MemoryBackend;

/// Errors a backend reports. Each says what went wrong and what to do next.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// No instance has this id.
    #[error("no orchestration instance with id \"{0}\"; check the id, or schedule it first")]
    NotFound(String),
    /// The id is in use and the reuse policy does not allow replacing it.
    #[error(
        "an orchestration instance with id \"{id}\" already exists with status {status}; \
         pick another id, or pass an id reuse policy that allows replacing {status} instances"
    )]
    AlreadyExists {
        /// The instance id.
        id: String,
        /// Its current status.
        status: OrchestrationStatus,
    },
    /// The operation does not apply to the instance in its current state.
    #[error("cannot {operation} instance \"{id}\": it is {status}")]
    InvalidState {
        /// The instance id.
        id: String,
        /// What was attempted.
        operation: &'static str,
        /// Its current status.
        status: OrchestrationStatus,
    },
    /// A payload is larger than the configured limit.
    #[error(
        "{what} is {size} bytes, over the limit of {limit} bytes; send a smaller payload \
         (store large data elsewhere and pass a reference) or raise the backend's payload limit"
    )]
    PayloadTooLarge {
        /// What carried the payload (e.g. "input of orchestration \"x\"").
        what: String,
        /// Its size in bytes.
        size: usize,
        /// The limit in bytes.
        limit: usize,
    },
    /// The work item's lease expired or was already completed.
    #[error("the lease on this work item was lost (it expired, or the item was already completed or abandoned): {0}")]
    LeaseLost(String),
    /// Waiting for an instance took longer than allowed.
    #[error(
        "timed out after {0:?} waiting for instance \"{1}\"; is a worker running with its \
         orchestrator registered, and is the instance waiting for an event or timer?"
    )]
    Timeout(Duration, String),
    /// The backend was shut down.
    #[error("the backend is shut down")]
    Shutdown,
    /// The caller passed something malformed.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The backend could not be reached.
    #[error("backend unavailable: {0}")]
    Unavailable(String),
    /// Anything else the storage or transport reported.
    #[error("backend error: {0}")]
    Other(String),
}

/// `now + timeout` as a tokio deadline, or a century from now for huge
/// timeouts: `Duration::MAX` means "wait forever", not an overflow.
pub fn deadline_after(timeout: Duration) -> tokio::time::Instant {
    let now = tokio::time::Instant::now();
    now.checked_add(timeout)
        .unwrap_or_else(|| now + Duration::from_secs(100 * 365 * 24 * 3600))
}

/// Which existing instances a new instance with the same id may replace.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdReusePolicy {
    /// Statuses of an existing instance that may be replaced. A running,
    /// pending or suspended instance listed here is terminated first (a
    /// sub-orchestration's parent then sees it fail as terminated).
    pub replaceable: Vec<OrchestrationStatus>,
}

impl Default for IdReusePolicy {
    /// Replace finished instances (completed, failed, terminated, canceled);
    /// refuse while one is pending, running or suspended.
    fn default() -> Self {
        IdReusePolicy {
            replaceable: vec![
                OrchestrationStatus::Completed,
                OrchestrationStatus::Failed,
                OrchestrationStatus::Terminated,
                OrchestrationStatus::Canceled,
            ],
        }
    }
}

impl IdReusePolicy {
    /// Never reuse an id, whatever state the existing instance is in.
    pub fn never() -> Self {
        IdReusePolicy {
            replaceable: Vec::new(),
        }
    }

    /// Always reuse: terminate a live instance (a sub-orchestration's
    /// parent then sees it fail as terminated) and replace it.
    pub fn always() -> Self {
        IdReusePolicy {
            replaceable: OrchestrationStatus::ALL.to_vec(),
        }
    }
}

/// A request to create an orchestration instance.
#[derive(Clone, Debug, PartialEq)]
pub struct CreateInstanceRequest {
    /// The instance id.
    pub instance_id: String,
    /// Orchestrator name.
    pub name: String,
    /// Orchestrator version.
    pub version: Option<String>,
    /// Input as JSON text.
    pub input: Option<String>,
    /// Start no earlier than this.
    pub scheduled_start: Option<Timestamp>,
    /// What to do if the id is taken.
    pub reuse_policy: IdReusePolicy,
    /// The trace context of the span that creates the instance (recorded
    /// on its `ExecutionStarted`; see [`crate::trace`]).
    pub trace: Option<TraceContext>,
    /// The instance's tags: labels kept in its metadata and on the
    /// `ExecutionStarted` of each execution (the protocol's instance tags).
    pub tags: BTreeMap<String, String>,
}

impl CreateInstanceRequest {
    /// Checks what every backend refuses before anything is stored or sent:
    /// an empty instance id or orchestrator name, and input that is empty
    /// text (not JSON: pass no input, or JSON such as `null`; a sidecar
    /// would read it back as no input, so it would mean something else
    /// there).
    pub fn validate(&self) -> Result<(), BackendError> {
        let refused = |why: String| Err(BackendError::InvalidRequest(why));
        if self.instance_id.is_empty() {
            return refused("instance id must not be empty".into());
        }
        if self.name.is_empty() {
            return refused("orchestrator name must not be empty".into());
        }
        if self.input.as_deref() == Some("") {
            return refused(format!(
                "the input of orchestration \"{}\" is empty text, which is not JSON; \
                 pass no input, or JSON text such as null",
                self.name
            ));
        }
        Ok(())
    }
}

/// An instance's metadata and status, as a backend stores it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct InstanceMetadata {
    /// Instance id.
    pub instance_id: String,
    /// Execution id of the current execution (changes on continue-as-new).
    pub execution_id: String,
    /// Orchestrator name.
    pub name: String,
    /// Orchestrator version.
    pub version: Option<String>,
    /// Runtime status.
    pub status: OrchestrationStatus,
    /// Input (JSON); `None` when fetched without payloads.
    pub input: Option<String>,
    /// Output (JSON); `None` when fetched without payloads or not finished.
    pub output: Option<String>,
    /// Custom status (JSON).
    pub custom_status: Option<String>,
    /// Failure, when the status is `Failed`.
    pub failure: Option<FailureDetails>,
    /// When the instance was created.
    pub created_at: Timestamp,
    /// When it last changed.
    pub last_updated_at: Timestamp,
    /// When it reached a terminal state.
    pub completed_at: Option<Timestamp>,
    /// When it was scheduled to start, if later than creation.
    pub scheduled_start: Option<Timestamp>,
    /// The parent instance id of a sub-orchestration.
    pub parent_instance_id: Option<String>,
    /// The tags the instance was created with (kept across
    /// continue-as-new and restart).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
}

impl InstanceMetadata {
    /// The same metadata without input, output and custom status.
    pub fn without_payloads(mut self) -> Self {
        self.input = None;
        self.output = None;
        self.custom_status = None;
        self
    }
}

/// Filter and paging for [`Backend::query_instances`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InstanceQuery {
    /// Only these statuses (empty: any).
    pub statuses: Vec<OrchestrationStatus>,
    /// Created at or after.
    pub created_from: Option<Timestamp>,
    /// Created before.
    pub created_to: Option<Timestamp>,
    /// Instance id starts with.
    pub instance_id_prefix: Option<String>,
    /// Page size (0: backend default of 100).
    pub page_size: usize,
    /// Token from the previous page.
    pub continuation_token: Option<String>,
    /// Include input, output and custom status.
    pub fetch_payloads: bool,
}

impl InstanceQuery {
    /// Whether an instance matches the filter (ignores paging).
    pub fn matches(&self, m: &InstanceMetadata) -> bool {
        (self.statuses.is_empty() || self.statuses.contains(&m.status))
            && self.created_from.is_none_or(|t| m.created_at >= t)
            && self.created_to.is_none_or(|t| m.created_at < t)
            && self
                .instance_id_prefix
                .as_deref()
                .is_none_or(|p| m.instance_id.starts_with(p))
    }

    /// The page size to use.
    pub fn effective_page_size(&self) -> usize {
        if self.page_size == 0 {
            100
        } else {
            self.page_size
        }
    }
}

/// One page of query results.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct QueryPage {
    /// Matching instances, ordered by instance id.
    pub instances: Vec<InstanceMetadata>,
    /// Pass to the next query to get the next page; `None` when done.
    pub continuation_token: Option<String>,
}

/// What to purge.
#[derive(Clone, Debug, PartialEq)]
pub enum PurgeTarget {
    /// One instance.
    Instance(String),
    /// Every finished instance matching a filter.
    Filter {
        /// Created at or after.
        created_from: Option<Timestamp>,
        /// Created before.
        created_to: Option<Timestamp>,
        /// Only these statuses (empty: every terminal status).
        statuses: Vec<OrchestrationStatus>,
    },
}

/// What to wait for in [`Backend::wait_for_instance`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WaitFor {
    /// The instance left `Pending`.
    Start,
    /// The instance reached a terminal state.
    Completion,
}

/// An orchestration episode to run.
#[derive(Clone, Debug, PartialEq)]
pub struct OrchestrationWorkItem {
    /// The instance.
    pub instance_id: String,
    /// Its current execution id.
    pub execution_id: String,
    /// History already applied (shared, so backends need not copy a long
    /// history for every episode).
    pub past_events: std::sync::Arc<Vec<HistoryEvent>>,
    /// Events to apply in this episode (starting with `OrchestratorStarted`).
    pub new_events: Vec<HistoryEvent>,
    /// Lease token to pass back on completion.
    pub completion_token: String,
    /// The orchestration span a sidecar keeps for this execution (the
    /// protocol's `OrchestrationTraceContext`, set by another SDK's worker
    /// that ran an earlier episode): reported as the execution's span
    /// instead of the one durable derives, so every episode's children
    /// point at the span that is reported. `None` from durable's stores.
    pub orchestration_span: Option<OrchestrationSpan>,
}

/// What a store recorded for an episode (see
/// [`Backend::complete_orchestration_episode`]).
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedEpisode {
    /// The instance's status after the episode.
    pub status: OrchestrationStatus,
    /// Its failure, when it failed.
    pub failure: Option<FailureDetails>,
}

/// The span id and start a sidecar keeps for an execution's orchestration
/// span (see [`OrchestrationWorkItem::orchestration_span`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OrchestrationSpan {
    /// The span's id.
    pub span_id: Option<crate::trace::SpanId>,
    /// When the span started.
    pub start: Option<Timestamp>,
}

impl OrchestrationSpan {
    /// The form [`crate::observe::ExecutionTrace::of`] takes.
    pub fn given(
        span: Option<&OrchestrationSpan>,
    ) -> (Option<crate::trace::SpanId>, Option<Timestamp>) {
        span.map_or((None, None), |s| (s.span_id, s.start))
    }
}

/// An activity to run: what an episode schedules (the transition core's
/// outbox) and, once a backend leases it, what a worker runs.
#[derive(Clone, Debug, PartialEq)]
pub struct ActivityWorkItem {
    /// The orchestration instance that scheduled it.
    pub instance_id: String,
    /// The execution of that instance.
    pub execution_id: String,
    /// Activity name.
    pub name: String,
    /// Activity version.
    pub version: Option<String>,
    /// Input as JSON text.
    pub input: Option<String>,
    /// Sequence number of the `ScheduleTask` action.
    pub task_id: i32,
    /// Lease token to pass back on completion; empty until a backend
    /// leases the item.
    pub completion_token: String,
    /// The task's tags, as scheduled (see [`crate::handler::task_tags`]).
    pub tags: BTreeMap<String, String>,
    /// The trace context of the orchestration's span for this call (the
    /// `TaskScheduled` event's), which the activity's own span continues.
    pub trace: Option<TraceContext>,
}

impl ActivityWorkItem {
    /// The attempt number and the first attempt's sequence number, read
    /// from the tags: `(1, task_id)` for a task without them (a first
    /// attempt, or a wire that drops tags). Tags that do not parse count as
    /// absent.
    pub fn attempt(&self) -> (u32, i32) {
        let tag = |key| self.tags.get(key).map(String::as_str);
        let attempt = tag(task_tags::ATTEMPT).and_then(|v| v.parse::<u32>().ok());
        let first = tag(task_tags::FIRST_TASK_ID).and_then(|v| v.parse::<i32>().ok());
        match (attempt, first) {
            (Some(attempt), Some(first)) if attempt >= 1 => (attempt, first),
            _ => (1, self.task_id),
        }
    }
}

/// Storage and transport of orchestrations. See the module docs.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    // ---- client side ----

    /// Creates an instance and queues its `ExecutionStarted`.
    async fn create_instance(&self, request: CreateInstanceRequest) -> Result<(), BackendError>;

    /// Metadata of an instance, or `None` if there is none with this id.
    async fn get_instance(
        &self,
        instance_id: &str,
        with_payloads: bool,
    ) -> Result<Option<InstanceMetadata>, BackendError>;

    /// Waits until the instance started or completed, or until `timeout`
    /// (then [`BackendError::Timeout`]).
    async fn wait_for_instance(
        &self,
        instance_id: &str,
        wait_for: WaitFor,
        timeout: Duration,
    ) -> Result<InstanceMetadata, BackendError>;

    /// Deletes entity instance `instance_id` (its rows, as a purge does) if,
    /// checked in the same step as the delete: it still runs execution
    /// `execution_id` (no batch of operations ran since the caller read its
    /// snapshot and found it empty), it is running and no worker holds it,
    /// and no message waits for it (none queued, none delayed). `Ok(true)`
    /// when it was deleted, `Ok(false)` when it was kept. A message sent
    /// after the delete creates the entity again, empty, as a first message
    /// does. What [`crate::Client::clean_entity_storage`] uses to remove
    /// empty entities without losing a message on its way.
    ///
    /// The default keeps every entity (`Ok(false)`): a backend that cannot
    /// check and delete in one step must not delete.
    async fn remove_idle_entity(
        &self,
        instance_id: &str,
        execution_id: &str,
    ) -> Result<bool, BackendError> {
        let _ = (instance_id, execution_id);
        Ok(false)
    }

    /// Cleans entity storage where the store keeps entities apart (a
    /// sidecar's `CleanEntityStorage` call): `Ok(Some((removed, released)))`
    /// with the number of empty entities removed and orphaned locks
    /// released, or `Ok(None)`, the default, when the store keeps entities
    /// as instances and [`crate::Client::clean_entity_storage`] does it
    /// through the other calls.
    async fn clean_entity_storage(
        &self,
        remove_empty: bool,
        release_orphaned_locks: bool,
    ) -> Result<Option<(usize, usize)>, BackendError> {
        let _ = (remove_empty, release_orphaned_locks);
        Ok(None)
    }

    /// Queues an external event for the instance.
    async fn raise_event(
        &self,
        instance_id: &str,
        name: &str,
        input: Option<String>,
    ) -> Result<(), BackendError>;

    /// Terminates the instance (and its sub-orchestrations if `recursive`).
    async fn terminate(
        &self,
        instance_id: &str,
        output: Option<String>,
        recursive: bool,
    ) -> Result<(), BackendError>;

    /// Suspends the instance: events are held until it is resumed.
    async fn suspend(&self, instance_id: &str, reason: Option<String>) -> Result<(), BackendError>;

    /// Resumes a suspended instance.
    async fn resume(&self, instance_id: &str, reason: Option<String>) -> Result<(), BackendError>;

    /// Rewinds a failed instance and, recursively, its failed
    /// sub-orchestrations, at once: each is running again from that moment
    /// and an `ExecutionRewound` event is queued for it
    /// ([`transition::ControlRequest::Rewind`]); the engine does the rest
    /// ([`transition::rewind_of`]). `InvalidState` unless the instance
    /// failed. The default refuses: a backend without it says so.
    async fn rewind(&self, instance_id: &str, reason: Option<String>) -> Result<(), BackendError> {
        let _ = reason;
        Err(BackendError::InvalidRequest(format!(
            "cannot rewind \"{instance_id}\": this backend does not support rewinding"
        )))
    }

    /// Deletes finished instances and their history; returns how many.
    async fn purge(&self, target: PurgeTarget, recursive: bool) -> Result<usize, BackendError>;

    /// Lists instances matching a filter, one page at a time.
    async fn query_instances(&self, query: InstanceQuery) -> Result<QueryPage, BackendError>;

    /// The full history of the instance's current execution.
    async fn get_history(&self, instance_id: &str) -> Result<Vec<HistoryEvent>, BackendError>;

    // ---- worker side ----

    /// Waits for the next orchestration episode and leases it.
    async fn next_orchestration_item(&self) -> Result<OrchestrationWorkItem, BackendError>;

    /// Applies an episode's result. Takes the item by value so a backend can
    /// reclaim the shared history without copying it. Rejected with [`BackendError::LeaseLost`]
    /// if the lease expired or was already used.
    ///
    /// The default completes it with
    /// [`complete_orchestration_episode`](Self::complete_orchestration_episode).
    async fn complete_orchestration_item(
        &self,
        item: OrchestrationWorkItem,
        result: OrchestratorResult,
    ) -> Result<(), BackendError> {
        self.complete_orchestration_episode(item, result)
            .await
            .map(|_| ())
    }

    /// Completes an episode as
    /// [`complete_orchestration_item`](Self::complete_orchestration_item)
    /// does, saying what the store recorded: the instance's status and
    /// failure after the episode, which differ from what the episode asked
    /// when the store failed it instead (an output or input over the payload
    /// limit, a history over its cap, a result a sidecar refused for good).
    /// The worker reports the execution's span and metrics from it. `None`
    /// when the store cannot say: the worker then goes by the episode's
    /// actions.
    async fn complete_orchestration_episode(
        &self,
        item: OrchestrationWorkItem,
        result: OrchestratorResult,
    ) -> Result<Option<RecordedEpisode>, BackendError>;

    /// Gives the episode back, to be delivered again.
    async fn abandon_orchestration_item(
        &self,
        item: OrchestrationWorkItem,
    ) -> Result<(), BackendError>;

    /// Waits for the next activity and leases it.
    async fn next_activity_item(&self) -> Result<ActivityWorkItem, BackendError>;

    /// Records an activity's outcome and delivers it to its orchestration.
    async fn complete_activity_item(
        &self,
        item: &ActivityWorkItem,
        outcome: TaskOutcome,
    ) -> Result<(), BackendError>;

    /// Gives the activity back, to be delivered again.
    async fn abandon_activity_item(&self, item: &ActivityWorkItem) -> Result<(), BackendError>;

    /// Called when a worker starts using this backend (default: nothing), so
    /// a backend shared by several workers knows how many there are.
    async fn worker_started(&self) {}

    /// Called when a worker using this backend has shut down, so a remote
    /// backend can stop fetching work no one will run (default: nothing).
    async fn worker_stopped(&self) {}

    /// How often a worker should renew the lease of a running activity, or
    /// `None` (the default) when leases do not expire while held.
    fn activity_lease_renewal(&self) -> Option<Duration> {
        None
    }

    /// Extends the lease of a running activity so a long activity is not
    /// delivered to another worker while it still runs.
    async fn renew_activity_item(&self, item: &ActivityWorkItem) -> Result<(), BackendError> {
        let _ = item;
        Ok(())
    }

    /// How often a worker should renew the lease of an orchestration
    /// episode while it runs and while its completion is written, or `None`
    /// (the default) when leases do not expire while held.
    fn orchestration_lease_renewal(&self) -> Option<Duration> {
        None
    }

    /// Extends the lease of an episode (identified by its instance id and
    /// completion token; the events may be left out) so a long episode or a
    /// slow completion is not delivered to another worker meanwhile.
    async fn renew_orchestration_item(
        &self,
        item: &OrchestrationWorkItem,
    ) -> Result<(), BackendError> {
        let _ = item;
        Ok(())
    }

    /// Whether the worker should tell this backend, through
    /// [`record_event_waits`](Backend::record_event_waits), which external
    /// events each episode leaves its orchestration waiting for. `false`
    /// (the default) costs nothing: the worker does not collect them. The
    /// in-memory backend on a virtual clock says yes, for
    /// `TestEnv::wait_until_waiting_for_event`.
    fn wants_event_waits(&self) -> bool {
        false
    }

    /// The names (in lower case, sorted) of the external events the
    /// orchestration of `item` waits for once its episode is applied;
    /// called just before `complete_orchestration_item`, only if
    /// [`wants_event_waits`](Backend::wants_event_waits).
    fn record_event_waits(&self, item: &OrchestrationWorkItem, events: Vec<String>) {
        let _ = (item, events);
    }
}
