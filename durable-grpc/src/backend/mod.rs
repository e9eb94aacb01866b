//! [`GrpcBackend`]: the [`Backend`] trait spoken over `TaskHubSidecarService`.
//!
//! Client calls map one to one onto unary RPCs. The worker side is one
//! long-lived `GetWorkItems` stream owned by a background task, which sorts
//! the items into an orchestration queue and an activity queue (what
//! [`Backend::next_orchestration_item`] and [`Backend::next_activity_item`]
//! wait on) and reopens the stream with capped, jittered exponential backoff
//! whenever it breaks, e.g. when the sidecar restarts.
//!
//! This module holds the backend and its [`Backend`] impl; the parts it is
//! built from live in its submodules: `rpc` (what every call needs),
//! `instance` (status and history reads), `tree` (recursive terminate and
//! purge), `pump` (the task owning the stream), `lifecycle` (when the
//! stream runs), `completion` (finishing with work items) and `error`
//! (failures as backend errors).

mod completion;
mod error;
mod instance;
mod lifecycle;
mod pump;
mod rpc;
#[cfg(test)]
mod scripted;
mod tree;

use completion::{
    fail_in_place, refusal, send_activity_response, too_large_failure, Refusal,
    INVALID_RESULT_REFUSALS,
};
use error::unreadable;
use instance::instance_from_response;
use rpc::Rpc;

use crate::convert;
use crate::options::GrpcOptions;
use crate::proto;
use async_trait::async_trait;
use durable_runtime::actions::{ActionKind, OrchestratorAction, OrchestratorResult};
use durable_runtime::backend::{
    ActivityWorkItem, Backend, BackendError, CreateInstanceRequest, InstanceMetadata,
    InstanceQuery, OrchestrationWorkItem, PurgeTarget, QueryPage, RecordedEpisode, WaitFor,
};
use durable_runtime::history::{HistoryEvent, OrchestrationStatus};
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;
use tokio::sync::{mpsc, Mutex, Notify};
use tokio::task::JoinHandle;
use tonic::Code;

/// The longest single wait call; longer waits are several calls.
const WAIT_CALL: Duration = Duration::from_secs(300);

/// A [`Backend`] whose instances live in a Durable Task sidecar: the Azure
/// Durable Task Scheduler or its emulator, Dapr Workflow, durabletask-go, or
/// any other server of `TaskHubSidecarService`.
///
/// Cloning is cheap and clones share one connection and one work-item stream.
///
/// ```no_run
/// use durable_grpc::{GrpcBackend, GrpcOptions};
///
/// # async fn run() -> Result<(), durable_runtime::backend::BackendError> {
/// // The Durable Task Scheduler emulator's defaults.
/// let backend = GrpcBackend::connect(GrpcOptions::new("http://localhost:8080").task_hub("default")).await?;
/// # let _ = backend;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct GrpcBackend {
    inner: Arc<Inner>,
}

/// What the clones of a [`GrpcBackend`] share.
struct Inner {
    rpc: Rpc,
    options: GrpcOptions,
    orchestrations: Mutex<mpsc::UnboundedReceiver<OrchestrationWorkItem>>,
    activities: Mutex<mpsc::UnboundedReceiver<ActivityWorkItem>>,
    orchestration_tx: mpsc::UnboundedSender<OrchestrationWorkItem>,
    activity_tx: mpsc::UnboundedSender<ActivityWorkItem>,
    /// The task owning the work-item stream, while it runs.
    pump: StdMutex<Option<JoinHandle<()>>>,
    /// `next_*` calls waiting now.
    waiting: AtomicUsize,
    /// Workers that announced themselves (`Backend::worker_started`) and
    /// have not stopped.
    workers: AtomicUsize,
    /// `next_*` calls ever made (to tell a pause from a shutdown).
    calls: AtomicU64,
    /// Woken when the stream is closed, so that waiting `next_*` calls
    /// reopen it.
    stream_closed: Notify,
    /// Instances whose last episode results the sidecar called invalid, and
    /// how many times in a row.
    invalid_results: StdMutex<HashMap<String, u32>>,
}

impl std::fmt::Debug for GrpcBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GrpcBackend")
            .field("endpoint", &self.inner.options.endpoint)
            .field("task_hub", &self.inner.options.task_hub)
            .finish_non_exhaustive()
    }
}

impl GrpcBackend {
    /// Counts one more refusal of `instance_id`'s result as invalid
    /// (`refused`) or forgets its count; returns the count.
    fn invalid_results_of(&self, instance_id: &str, refused: bool) -> u32 {
        let mut counts = self
            .inner
            .invalid_results
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if refused {
            let n = counts.entry(instance_id.to_string()).or_default();
            *n += 1;
            *n
        } else {
            counts.remove(instance_id);
            0
        }
    }

    /// A backend for `options`, connecting lazily: nothing is sent until the
    /// first call, and an unreachable sidecar shows up as
    /// [`BackendError::Unavailable`] from that call. Must be called inside a
    /// Tokio runtime.
    ///
    /// Fails with [`BackendError::InvalidRequest`] if the endpoint is not an
    /// `http://` or `https://` URL or the task hub is not valid header text.
    pub fn new(options: GrpcOptions) -> Result<Self, BackendError> {
        let rpc = Rpc::new(&options)?;
        let (orchestration_tx, orch_rx) = mpsc::unbounded_channel();
        let (activity_tx, act_rx) = mpsc::unbounded_channel();
        Ok(GrpcBackend {
            inner: Arc::new(Inner {
                rpc,
                options,
                orchestrations: Mutex::new(orch_rx),
                activities: Mutex::new(act_rx),
                orchestration_tx,
                activity_tx,
                pump: StdMutex::new(None),
                waiting: AtomicUsize::new(0),
                workers: AtomicUsize::new(0),
                calls: AtomicU64::new(0),
                stream_closed: Notify::new(),
                invalid_results: StdMutex::default(),
            }),
        })
    }

    /// Like [`GrpcBackend::new`], then says hello to the sidecar, so that a
    /// wrong endpoint is reported here, with what to do about it.
    pub async fn connect(options: GrpcOptions) -> Result<Self, BackendError> {
        let backend = GrpcBackend::new(options)?;
        backend.ping().await?;
        Ok(backend)
    }

    /// Calls the sidecar's `Hello`.
    pub async fn ping(&self) -> Result<(), BackendError> {
        let rpc = &self.inner.rpc;
        let req = rpc.request((), "a hello").await?;
        rpc.client()
            .hello(req)
            .await
            .map_err(|s| rpc.error(s, None))?;
        Ok(())
    }

    /// Closes the work-item stream now and gives back the items it brought
    /// that no worker took, so the sidecar hands them to other workers. The
    /// stream reopens on the next `next_*` call (at once if calls are
    /// waiting).
    ///
    /// The backend does this by itself shortly after a worker stops; call it
    /// to be certain, e.g. right after shutting a worker down when the
    /// backend lives on for a client: a sidecar whose abandon of activities
    /// is a no-op (the Python SDK's test sidecar) would lose activities
    /// delivered to a stream no worker reads.
    pub fn close_work_stream(&self) {
        self.inner.stop_pump();
    }

    /// The options this backend was built with.
    pub fn options(&self) -> &GrpcOptions {
        &self.inner.options
    }
}

#[async_trait]
impl Backend for GrpcBackend {
    async fn worker_started(&self) {
        self.inner.workers.fetch_add(1, Ordering::SeqCst);
    }

    async fn worker_stopped(&self) {
        // The stopped worker's calls are gone. If no other worker uses this
        // backend (none announced, and no `next_*` call is waiting), nobody
        // will run what the stream delivers now: close it so the sidecar
        // hands that work to another worker.
        let left = self
            .inner
            .workers
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .map_or(0, |n| n - 1);
        if left == 0 && self.inner.waiting.load(Ordering::SeqCst) == 0 {
            self.close_work_stream();
        } else {
            tracing::debug!(
                "a worker stopped; others still use this backend, so the work-item stream stays open"
            );
        }
    }

    async fn create_instance(&self, request: CreateInstanceRequest) -> Result<(), BackendError> {
        // Refused here as on every backend (a sidecar would make up an id
        // for an empty one, which the caller never learns).
        request.validate()?;
        let rpc = &self.inner.rpc;
        let id = request.instance_id.clone();
        let what = format!("the input of orchestration \"{}\"", request.name);
        let message = convert::create_request_to_proto(request);
        let req = rpc.request(message, &what).await?;
        match rpc.client().start_instance(req).await {
            Ok(_) => Ok(()),
            Err(status) if status.code() == Code::AlreadyExists => {
                let current = rpc.get_instance(&id, false).await.ok().flatten();
                Err(BackendError::AlreadyExists {
                    id,
                    status: current.map_or(OrchestrationStatus::Running, |m| m.status),
                })
            }
            Err(status) => Err(rpc.error(status, Some(&id))),
        }
    }

    async fn get_instance(
        &self,
        instance_id: &str,
        with_payloads: bool,
    ) -> Result<Option<InstanceMetadata>, BackendError> {
        self.inner
            .rpc
            .get_instance(instance_id, with_payloads)
            .await
    }

    async fn wait_for_instance(
        &self,
        instance_id: &str,
        wait_for: WaitFor,
        timeout: Duration,
    ) -> Result<InstanceMetadata, BackendError> {
        let rpc = &self.inner.rpc;
        let done = |m: &InstanceMetadata| match wait_for {
            WaitFor::Start => m.status != OrchestrationStatus::Pending,
            WaitFor::Completion => m.status.is_terminal(),
        };
        // Ask first: an unknown id is reported at once (some sidecars would
        // hold the call for the whole timeout), a finished one needs no wait.
        match rpc.get_instance(instance_id, true).await? {
            None => return Err(BackendError::NotFound(instance_id.to_string())),
            Some(m) if done(&m) => return Ok(m),
            Some(_) => {}
        }
        // One call waits at most WAIT_CALL, so a long wait neither needs a
        // deadline the header cannot express nor pins a sidecar thread forever.
        let deadline = tokio::time::Instant::now().checked_add(timeout);
        loop {
            let now = tokio::time::Instant::now();
            let left = deadline.map_or(WAIT_CALL, |d| d.saturating_duration_since(now));
            if left.is_zero() {
                return Err(BackendError::Timeout(timeout, instance_id.to_string()));
            }
            let mut req = rpc
                .request(
                    proto::GetInstanceRequest {
                        instance_id: instance_id.to_string(),
                        get_inputs_and_outputs: true,
                    },
                    "a wait request",
                )
                .await?;
            req.set_timeout(left.min(WAIT_CALL));
            let mut client = rpc.client();
            let result = match wait_for {
                WaitFor::Start => client.wait_for_instance_start(req).await,
                WaitFor::Completion => client.wait_for_instance_completion(req).await,
            };
            match result {
                Ok(resp) => {
                    return instance_from_response(resp.into_inner(), true)?
                        .ok_or_else(|| BackendError::NotFound(instance_id.to_string()));
                }
                Err(status)
                    if status.code() == Code::DeadlineExceeded
                        || (status.code() == Code::Cancelled
                            && status.message().contains("Timeout expired")) => {}
                Err(status) => return Err(rpc.error(status, Some(instance_id))),
            }
        }
    }

    async fn raise_event(
        &self,
        instance_id: &str,
        name: &str,
        input: Option<String>,
    ) -> Result<(), BackendError> {
        let rpc = &self.inner.rpc;
        let what = format!("the data of event \"{name}\"");
        rpc.require_instance(instance_id, Some("raise an event on"))
            .await?;
        let req = rpc
            .request(
                proto::RaiseEventRequest {
                    instance_id: instance_id.to_string(),
                    name: name.to_string(),
                    input,
                },
                &what,
            )
            .await?;
        rpc.client()
            .raise_event(req)
            .await
            .map_err(|s| rpc.error(s, Some(instance_id)))?;
        Ok(())
    }

    async fn terminate(
        &self,
        instance_id: &str,
        output: Option<String>,
        recursive: bool,
    ) -> Result<(), BackendError> {
        self.inner
            .rpc
            .terminate_tree(instance_id, output, recursive)
            .await
    }

    async fn suspend(&self, instance_id: &str, reason: Option<String>) -> Result<(), BackendError> {
        let rpc = &self.inner.rpc;
        // Sent even if the instance reads as suspended: a resume sent just
        // before may not have been applied yet (the sidecar decides).
        rpc.require_instance(instance_id, Some("suspend")).await?;
        let req = rpc
            .request(
                proto::SuspendRequest {
                    instance_id: instance_id.to_string(),
                    reason,
                },
                "the reason of a suspend request",
            )
            .await?;
        rpc.client()
            .suspend_instance(req)
            .await
            .map_err(|s| rpc.error(s, Some(instance_id)))?;
        rpc.settle(instance_id, OrchestrationStatus::Running).await
    }

    async fn rewind(&self, instance_id: &str, reason: Option<String>) -> Result<(), BackendError> {
        let rpc = &self.inner.rpc;
        let meta = rpc.require_instance(instance_id, None).await?;
        if meta.status != OrchestrationStatus::Failed {
            return Err(BackendError::InvalidState {
                id: instance_id.to_string(),
                operation: "rewind",
                status: meta.status,
            });
        }
        let req = rpc
            .request(
                proto::RewindInstanceRequest {
                    instance_id: instance_id.to_string(),
                    reason,
                },
                "the reason of a rewind request",
            )
            .await?;
        rpc.client()
            .rewind_instance(req)
            .await
            .map_err(|s| rpc.error(s, Some(instance_id)))?;
        // A sidecar may record the new status only once a worker ran the
        // rewind; a status read right after the call should not see the
        // failure it rewound.
        rpc.settle(instance_id, OrchestrationStatus::Failed).await
    }

    async fn resume(&self, instance_id: &str, reason: Option<String>) -> Result<(), BackendError> {
        let rpc = &self.inner.rpc;
        // Sent even if the instance reads as running: a suspend sent just
        // before may not have been applied yet (the sidecar decides).
        rpc.require_instance(instance_id, Some("resume")).await?;
        let req = rpc
            .request(
                proto::ResumeRequest {
                    instance_id: instance_id.to_string(),
                    reason,
                },
                "the reason of a resume request",
            )
            .await?;
        rpc.client()
            .resume_instance(req)
            .await
            .map_err(|s| rpc.error(s, Some(instance_id)))?;
        rpc.settle(instance_id, OrchestrationStatus::Suspended)
            .await
    }

    async fn clean_entity_storage(
        &self,
        remove_empty: bool,
        release_orphaned_locks: bool,
    ) -> Result<Option<(usize, usize)>, BackendError> {
        // The sidecar keeps the entities: it cleans them, a page at a time.
        let rpc = &self.inner.rpc;
        let (mut removed, mut released, mut token) = (0usize, 0usize, None);
        loop {
            let req = rpc
                .request(
                    proto::CleanEntityStorageRequest {
                        continuation_token: token.take(),
                        remove_empty_entities: remove_empty,
                        release_orphaned_locks,
                    },
                    "a clean entity storage request",
                )
                .await?;
            let resp = rpc
                .client()
                .clean_entity_storage(req)
                .await
                .map_err(|s| rpc.error(s, None))?
                .into_inner();
            removed += usize::try_from(resp.empty_entities_removed).unwrap_or(0);
            released += usize::try_from(resp.orphaned_locks_released).unwrap_or(0);
            match resp.continuation_token.filter(|t| !t.is_empty()) {
                Some(t) => token = Some(t),
                None => return Ok(Some((removed, released))),
            }
        }
    }

    async fn purge(&self, target: PurgeTarget, recursive: bool) -> Result<usize, BackendError> {
        let rpc = &self.inner.rpc;
        if let PurgeTarget::Instance(id) = &target {
            return rpc.purge_tree(id, recursive).await;
        }
        let req = rpc
            .request(
                convert::purge_to_proto(&target, recursive),
                "a purge request",
            )
            .await?;
        let resp = rpc
            .client()
            .purge_instances(req)
            .await
            .map_err(|s| rpc.error(s, None))?
            .into_inner();
        Ok(usize::try_from(resp.deleted_instance_count).unwrap_or(0))
    }

    async fn query_instances(&self, query: InstanceQuery) -> Result<QueryPage, BackendError> {
        let rpc = &self.inner.rpc;
        let req = rpc
            .request(
                proto::QueryInstancesRequest {
                    query: Some(convert::query_to_proto(&query)),
                },
                "a query",
            )
            .await?;
        let resp = rpc
            .client()
            .query_instances(req)
            .await
            .map_err(|s| rpc.error(s, None))?
            .into_inner();
        let mut instances = Vec::with_capacity(resp.orchestration_state.len());
        for state in resp.orchestration_state {
            let id = state.instance_id.clone();
            let m = convert::metadata_from_proto(state)
                .map_err(|e| unreadable("the status of", &id, e))?;
            instances.push(if query.fetch_payloads {
                m
            } else {
                m.without_payloads()
            });
        }
        Ok(QueryPage {
            instances,
            continuation_token: convert::payload(resp.continuation_token),
        })
    }

    async fn get_history(&self, instance_id: &str) -> Result<Vec<HistoryEvent>, BackendError> {
        self.inner.rpc.history(instance_id, None, false).await
    }

    async fn next_orchestration_item(&self) -> Result<OrchestrationWorkItem, BackendError> {
        self.next_item(&self.inner.orchestrations).await
    }

    /// Says what was recorded only when the sidecar's refusal made it fail
    /// the orchestration in place; otherwise the sidecar recorded what the
    /// episode asked.
    async fn complete_orchestration_episode(
        &self,
        item: OrchestrationWorkItem,
        result: OrchestratorResult,
    ) -> Result<Option<RecordedEpisode>, BackendError> {
        let rpc = &self.inner.rpc;
        if item
            .completion_token
            .starts_with(convert::entities::ENTITY_TOKEN)
        {
            let result = convert::entities::batch_result_to_proto(&item, &result);
            let what = format!("the result of a batch of entity \"{}\"", item.instance_id);
            let req = rpc.request(result, &what).await?;
            rpc.client()
                .complete_entity_task(req)
                .await
                .map_err(|s| rpc.lease_error(s, &item.instance_id))?;
            return Ok(None);
        }
        if !result.cancelled_timers.is_empty() {
            // The protocol has no action to cancel a timer: the sidecar
            // fires it, and the engine ignores it.
            tracing::debug!(
                instance_id = %item.instance_id,
                timers = ?result.cancelled_timers,
                "cancelled timers stay with the sidecar, which will fire them"
            );
        }
        let what = format!(
            "the result of an episode of instance \"{}\"",
            item.instance_id
        );
        let actions = match result.actions.first().map(|a| &a.kind) {
            // A rewind goes over as the protocol has it: the rewritten
            // history alone, with this episode's events (the rewind among
            // them) at its end; the sidecar replaces the history and runs
            // the next episode on it, which schedules again what failed.
            Some(ActionKind::RewindOrchestration { new_history }) => {
                let mut history = new_history.clone();
                history.extend(item.new_events.iter().cloned());
                vec![convert::action_to_proto(&OrchestratorAction {
                    id: -1,
                    kind: ActionKind::RewindOrchestration {
                        new_history: history,
                    },
                    trace: None,
                })]
            }
            _ => result
                .actions
                .iter()
                .map(convert::action_to_proto)
                .collect(),
        };
        let response = proto::OrchestratorResponse {
            instance_id: item.instance_id.clone(),
            actions,
            custom_status: result.custom_status,
            completion_token: item.completion_token.clone(),
            // The span every episode of this execution reports as its own,
            // for a sidecar that keeps it.
            orchestration_trace_context: convert::orchestration_trace_to_proto(&item),
        };
        // Refusals that sending again cannot fix (too large for us or for
        // the sidecar, a history over its cap, a result it calls invalid)
        // fail the orchestration instead, as durable's other backends do:
        // left to the worker, the episode would be delivered, run and
        // refused again without end.
        let failure = match rpc.request(response, &what).await {
            Err(e @ BackendError::PayloadTooLarge { .. }) => too_large_failure(&e),
            Err(e) => return Err(e),
            Ok(req) => match rpc.client().complete_orchestrator_task(req).await {
                Ok(_) => {
                    self.invalid_results_of(&item.instance_id, false);
                    return Ok(None);
                }
                Err(status) => match refusal(rpc, &status, &item.instance_id) {
                    Refusal::ForGood(failure) => failure,
                    Refusal::IfRepeated(failure) => {
                        let times = self.invalid_results_of(&item.instance_id, true);
                        if times < INVALID_RESULT_REFUSALS {
                            return Err(BackendError::InvalidRequest(format!(
                                "the sidecar refused the result of an episode of \"{}\" as \
                                 invalid ({}), {times} of {INVALID_RESULT_REFUSALS} times in a \
                                 row; the episode runs again, and the orchestration fails if \
                                 the sidecar refuses it {INVALID_RESULT_REFUSALS} times",
                                item.instance_id,
                                status.message()
                            )));
                        }
                        self.invalid_results_of(&item.instance_id, false);
                        failure
                    }
                    Refusal::Passing => return Err(rpc.lease_error(status, &item.instance_id)),
                },
            },
        };
        let recorded = RecordedEpisode {
            status: OrchestrationStatus::Failed,
            failure: Some(failure.clone()),
        };
        fail_in_place(rpc, &item.instance_id, item.completion_token, failure).await?;
        Ok(Some(recorded))
    }

    async fn abandon_orchestration_item(
        &self,
        item: OrchestrationWorkItem,
    ) -> Result<(), BackendError> {
        let rpc = &self.inner.rpc;
        if let Some(token) = item
            .completion_token
            .strip_prefix(convert::entities::ENTITY_TOKEN)
        {
            let req = rpc
                .request(
                    proto::AbandonEntityTaskRequest {
                        completion_token: token.to_string(),
                    },
                    "an abandon request",
                )
                .await?;
            rpc.client()
                .abandon_task_entity_work_item(req)
                .await
                .map_err(|s| rpc.lease_error(s, &item.instance_id))?;
            return Ok(());
        }
        let req = rpc
            .request(
                proto::AbandonOrchestrationTaskRequest {
                    completion_token: item.completion_token.clone(),
                },
                "an abandon request",
            )
            .await?;
        rpc.client()
            .abandon_task_orchestrator_work_item(req)
            .await
            .map_err(|s| rpc.lease_error(s, &item.instance_id))?;
        Ok(())
    }

    async fn next_activity_item(&self) -> Result<ActivityWorkItem, BackendError> {
        self.next_item(&self.inner.activities).await
    }

    async fn complete_activity_item(
        &self,
        item: &ActivityWorkItem,
        outcome: durable_runtime::failure::TaskOutcome,
    ) -> Result<(), BackendError> {
        let rpc = &self.inner.rpc;
        let (result, failure_details) = convert::activity_outcome_to_proto(outcome);
        let what = format!("the result of activity \"{}\"", item.name);
        match send_activity_response(rpc, item, result, failure_details, &what).await {
            // Too large for us or for the sidecar: the orchestration gets a
            // failure saying so (not retried: the result would not shrink),
            // as with durable's other backends.
            Err(e @ BackendError::PayloadTooLarge { .. }) => {
                tracing::warn!(activity = %item.name, instance_id = %item.instance_id, error = %e, "an activity's result is too large to send; reporting it as failed");
                let failure = convert::failure_to_proto(&too_large_failure(&e));
                send_activity_response(rpc, item, None, Some(failure), &what).await
            }
            other => other,
        }
    }

    async fn abandon_activity_item(&self, item: &ActivityWorkItem) -> Result<(), BackendError> {
        let rpc = &self.inner.rpc;
        let req = rpc
            .request(
                proto::AbandonActivityTaskRequest {
                    completion_token: item.completion_token.clone(),
                },
                "an abandon request",
            )
            .await?;
        rpc.client()
            .abandon_task_activity_work_item(req)
            .await
            .map_err(|s| rpc.lease_error(s, &item.instance_id))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use durable_runtime::actions::{ActionKind, OrchestratorAction};
    use durable_runtime::history::EventKind;
    use durable_runtime::{Client, Error, ScheduleOptions};

    #[tokio::test]
    async fn empty_ids_names_and_inputs_are_refused_before_anything_is_sent() {
        let sidecar = scripted::Sidecar::default();
        let addr = sidecar.clone().serve().await;
        let client = Client::new(Arc::new(
            GrpcBackend::new(GrpcOptions::new(format!("http://{addr}"))).unwrap(),
        ));
        let refused = |r: Result<String, Error>| match r {
            Err(Error::Backend(BackendError::InvalidRequest(why))) => why,
            other => panic!("expected an invalid request, got {other:?}"),
        };
        let why = refused(
            client
                .schedule_by_name("o", &(), ScheduleOptions::with_id(""))
                .await,
        );
        assert_eq!(why, "instance id must not be empty");
        let why = refused(
            client
                .schedule_by_name("", &(), ScheduleOptions::with_id("i"))
                .await,
        );
        assert_eq!(why, "orchestrator name must not be empty");
        let why = refused(
            client
                .schedule_raw("o", Some(String::new()), ScheduleOptions::with_id("i"))
                .await,
        );
        assert!(why.contains("\"o\"") && why.contains("not JSON"), "{why}");
        assert!(sidecar.seen.lock().unwrap().started.is_empty());

        // No input at all is fine.
        let id = client
            .schedule_raw("o", None, ScheduleOptions::with_id("i"))
            .await
            .unwrap();
        assert_eq!(id, "i");
        let seen = sidecar.seen.lock().unwrap();
        let [started] = &seen.started[..] else {
            panic!("one start, got {:?}", seen.started);
        };
        assert_eq!((started.instance_id.as_str(), &started.input), ("i", &None));
    }

    #[tokio::test]
    async fn results_too_large_to_send_fail_the_activity_or_the_orchestration() {
        let sidecar = scripted::Sidecar::default();
        let addr = sidecar.clone().serve().await;
        let backend =
            GrpcBackend::new(GrpcOptions::new(format!("http://{addr}")).max_message_size(1024))
                .unwrap();
        let big = format!("\"{}\"", "x".repeat(2000));

        let activity = ActivityWorkItem {
            instance_id: "parent".into(),
            execution_id: "e".into(),
            name: "huge".into(),
            version: None,
            input: None,
            task_id: 4,
            completion_token: "act".into(),
            tags: Default::default(),
            trace: None,
        };
        backend
            .complete_activity_item(&activity, Ok(Some(big.clone())))
            .await
            .expect("the activity is reported, as failed");

        let result = OrchestratorResult {
            actions: vec![OrchestratorAction {
                id: 5,
                kind: ActionKind::completed(Some(big)),
                trace: None,
            }],
            custom_status: None,
            cancelled_timers: Vec::new(),
        };
        backend
            .complete_orchestration_item(episode("parent"), result)
            .await
            .expect("the episode is completed, as a failure");

        let seen = sidecar.seen.lock().unwrap();
        let [done] = &seen.activity_completions[..] else {
            panic!(
                "one activity completion, got {:?}",
                seen.activity_completions
            );
        };
        assert_eq!(
            (
                done.instance_id.as_str(),
                done.task_id,
                done.completion_token.as_str()
            ),
            ("parent", 4, "act")
        );
        assert_eq!(done.result, None);
        let f = done.failure_details.as_ref().expect("a failure");
        assert_eq!(f.error_type, "PayloadTooLarge");
        assert!(f.is_non_retriable);
        assert!(f.error_message.contains("huge"), "{}", f.error_message);

        let [done] = &seen.completions[..] else {
            panic!("one episode completion, got {:?}", seen.completions);
        };
        assert_eq!(done.completion_token, "orch");
        let f = failure_in(done);
        assert_eq!(f.error_type, "PayloadTooLarge");
        assert!(f.non_retriable);
        assert!(f.message.contains("parent"), "{}", f.message);
    }

    /// An episode of `instance_id`, token "orch".
    fn episode(instance_id: &str) -> OrchestrationWorkItem {
        OrchestrationWorkItem {
            instance_id: instance_id.into(),
            execution_id: "e".into(),
            past_events: Arc::new(vec![]),
            new_events: vec![],
            completion_token: "orch".into(),
            orchestration_span: None,
        }
    }

    /// An episode's result that schedules activity "a".
    fn schedules_an_activity() -> OrchestratorResult {
        OrchestratorResult {
            actions: vec![OrchestratorAction {
                id: 0,
                kind: ActionKind::ScheduleTask {
                    name: "a".into(),
                    version: None,
                    input: None,
                    tags: Default::default(),
                },
                trace: None,
            }],
            custom_status: None,
            cancelled_timers: Vec::new(),
        }
    }

    /// The failure a completion records; panics unless it is one failed
    /// completion of the orchestration.
    fn failure_in(done: &proto::OrchestratorResponse) -> durable_runtime::history::FailureDetails {
        let [action] = &done.actions[..] else {
            panic!("one action, got {:?}", done.actions);
        };
        match convert::action_from_proto(action.clone()).unwrap().kind {
            ActionKind::CompleteOrchestration {
                status: OrchestrationStatus::Failed,
                result: None,
                failure: Some(f),
                ..
            } => f,
            other => panic!("expected a failed completion, got {other:?}"),
        }
    }

    /// A backend on a scripted sidecar that refuses the next episode
    /// completions with `refusals`.
    async fn refusing(refusals: Vec<tonic::Status>) -> (scripted::Sidecar, GrpcBackend) {
        let sidecar = scripted::Sidecar::default();
        sidecar.completion_refusals.lock().unwrap().extend(refusals);
        let addr = sidecar.clone().serve().await;
        let backend = GrpcBackend::new(GrpcOptions::new(format!("http://{addr}"))).unwrap();
        (sidecar, backend)
    }

    #[tokio::test]
    async fn a_result_refused_for_good_fails_the_orchestration_once() {
        let cases = [
            (
                tonic::Status::resource_exhausted(
                    "Orchestration 'big' would exceed maximum history size",
                ),
                "HistoryTooLarge",
                ["maximum history size", "continue_as_new", "history limit"],
            ),
            (
                tonic::Status::invalid_argument("unknown action type"),
                "ResultRefused",
                ["unknown action type", "\"big\"", "refused"],
            ),
        ];
        for (status, error_type, mentions) in cases {
            // A history over the cap is refused for good at once; a result
            // called invalid only once it is refused three times in a row
            // (each time the episode runs again).
            let times = if error_type == "ResultRefused" {
                INVALID_RESULT_REFUSALS as usize
            } else {
                1
            };
            let (sidecar, backend) = refusing(vec![status; times]).await;
            for attempt in 1..times {
                let e = backend
                    .complete_orchestration_item(episode("big"), schedules_an_activity())
                    .await
                    .expect_err("a result called invalid is not yet refused for good");
                assert!(
                    matches!(&e, BackendError::InvalidRequest(m)
                        if m.contains(&format!("{attempt} of {times} times"))),
                    "{e}"
                );
            }
            backend
                .complete_orchestration_item(episode("big"), schedules_an_activity())
                .await
                .expect("the episode is completed, as a failure");
            let seen = sidecar.seen.lock().unwrap();
            let [refused @ .., failed] = &seen.completions[..] else {
                unreachable!()
            };
            assert_eq!(
                refused.len(),
                times,
                "{error_type}: the refused results, then the failure; got {:?}",
                seen.completions
            );
            assert!(refused.iter().all(|r| r.actions.len() == 1), "{error_type}");
            assert_eq!(failed.completion_token, "orch");
            let f = failure_in(failed);
            assert_eq!(f.error_type, error_type);
            assert!(f.non_retriable, "{error_type}");
            for text in mentions {
                assert!(f.message.contains(text), "{text:?} in {}", f.message);
            }
        }
    }

    /// A result called invalid once, then taken, is sent as it was: the
    /// orchestration does not fail, and the count starts again.
    #[tokio::test]
    async fn a_result_called_invalid_once_is_sent_again_unchanged() {
        let invalid = || tonic::Status::invalid_argument("unknown instance");
        let (sidecar, backend) = refusing(vec![invalid()]).await;
        for _ in 0..2 {
            let e = backend
                .complete_orchestration_item(episode("flaky"), schedules_an_activity())
                .await
                .expect_err("the refusal reaches the worker, which gives the episode back");
            assert!(
                matches!(&e, BackendError::InvalidRequest(m) if m.contains("1 of 3")),
                "{e}"
            );
            backend
                .complete_orchestration_item(episode("flaky"), schedules_an_activity())
                .await
                .expect("the episode is taken the next time");
            sidecar
                .completion_refusals
                .lock()
                .unwrap()
                .push_back(invalid());
        }
        let seen = sidecar.seen.lock().unwrap();
        assert_eq!(seen.completions.len(), 4, "{:?}", seen.completions);
        for sent in &seen.completions {
            assert!(
                matches!(
                    convert::action_from_proto(sent.actions[0].clone())
                        .unwrap()
                        .kind,
                    ActionKind::ScheduleTask { .. }
                ),
                "the result was replaced: {sent:?}"
            );
        }
    }

    #[tokio::test]
    async fn a_worker_whose_episode_is_over_the_history_cap_fails_the_instance() {
        let (sidecar, backend) = refusing(vec![tonic::Status::resource_exhausted(
            "Orchestration 'big' would exceed maximum history size",
        )])
        .await;
        let started = |kind| convert::event_to_proto(&HistoryEvent::new(Default::default(), kind));
        sidecar.work.lock().unwrap().push(proto::WorkItem {
            request: Some(proto::work_item::Request::OrchestratorRequest(
                proto::OrchestratorRequest {
                    instance_id: "big".into(),
                    execution_id: Some("e".into()),
                    past_events: vec![],
                    new_events: vec![
                        started(EventKind::OrchestratorStarted),
                        started(EventKind::ExecutionStarted {
                            name: "o".into(),
                            version: None,
                            input: None,
                            instance_id: "big".into(),
                            execution_id: Some("e".into()),
                            parent: None,
                            scheduled_start: None,
                            tags: Default::default(),
                        }),
                    ],
                    requires_history_streaming: false,
                    orchestration_trace_context: None,
                },
            )),
            completion_token: "orch".into(),
        });
        let registry =
            durable_runtime::Registry::new().orchestrator_fn("o", |ctx, (): ()| async move {
                ctx.call_activity_by_name::<()>("a", &()).await?;
                Ok(())
            });
        let worker = durable_runtime::Worker::new(Arc::new(backend), registry)
            .start()
            .unwrap();
        scripted::until(&sidecar, "the episode is completed as a failure", |seen| {
            seen.completions.len() >= 2
        })
        .await;
        worker.shutdown().await;
        let seen = sidecar.seen.lock().unwrap();
        let [_, failed] = &seen.completions[..] else {
            panic!(
                "the refused episode, then its failure; got {:?}",
                seen.completions
            );
        };
        assert_eq!(failure_in(failed).error_type, "HistoryTooLarge");
    }

    #[tokio::test]
    async fn the_orchestration_span_a_sidecar_keeps_is_reported_and_echoed() {
        let recorder = durable_runtime::trace::SpanRecorder::new();
        durable_runtime::trace::add_sink(recorder.clone());
        let (sidecar, backend) = refusing(vec![]).await;
        let started = |kind| convert::event_to_proto(&HistoryEvent::new(Default::default(), kind));
        // As another SDK's worker would have set it in an earlier episode.
        let kept = proto::OrchestrationTraceContext {
            span_id: Some("1122334455667788".into()),
            span_start_time: Some(prost_types::Timestamp {
                seconds: 1_700_000_000,
                nanos: 0,
            }),
        };
        sidecar.work.lock().unwrap().push(proto::WorkItem {
            request: Some(proto::work_item::Request::OrchestratorRequest(
                proto::OrchestratorRequest {
                    instance_id: "kept-span".into(),
                    execution_id: Some("e".into()),
                    past_events: vec![],
                    new_events: vec![
                        started(EventKind::OrchestratorStarted),
                        started(EventKind::ExecutionStarted {
                            name: "kept_span_orch".into(),
                            version: None,
                            input: None,
                            instance_id: "kept-span".into(),
                            execution_id: Some("e".into()),
                            parent: None,
                            scheduled_start: None,
                            tags: Default::default(),
                        }),
                    ],
                    requires_history_streaming: false,
                    orchestration_trace_context: Some(kept.clone()),
                },
            )),
            completion_token: "orch".into(),
        });
        let registry = durable_runtime::Registry::new()
            .orchestrator_fn("kept_span_orch", |_ctx, (): ()| async move { Ok(()) });
        let worker = durable_runtime::Worker::new(Arc::new(backend), registry)
            .start()
            .unwrap();
        scripted::until(&sidecar, "the episode is completed", |seen| {
            !seen.completions.is_empty()
        })
        .await;
        let spans = recorder
            .wait_for(Duration::from_secs(20), |all| {
                all.iter().any(|s| s.name == "orchestration:kept_span_orch")
            })
            .await
            .unwrap_or_else(|got| panic!("no orchestration span: {got:#?}"));
        worker.shutdown().await;
        let span = spans
            .iter()
            .find(|s| s.name == "orchestration:kept_span_orch")
            .unwrap();
        assert_eq!(span.span_id.to_string(), "1122334455667788");
        assert_eq!(span.start.timestamp(), 1_700_000_000);
        let seen = sidecar.seen.lock().unwrap();
        assert_eq!(
            seen.completions[0].orchestration_trace_context,
            Some(kept),
            "the kept span is sent back unchanged"
        );
    }

    #[tokio::test]
    async fn a_refused_failure_is_reported_and_not_sent_again() {
        let history = || {
            tonic::Status::resource_exhausted(
                "Orchestration 'big' would exceed maximum history size",
            )
        };
        let (sidecar, backend) = refusing(vec![history(), history(), history()]).await;
        let e = backend
            .complete_orchestration_item(episode("big"), schedules_an_activity())
            .await
            .expect_err("neither the result nor the failure was accepted");
        let text = e.to_string();
        assert!(
            text.contains("\"big\"") && text.contains("until the sidecar accepts"),
            "{text}"
        );
        assert_eq!(sidecar.seen.lock().unwrap().completions.len(), 2);
    }

    #[tokio::test]
    async fn a_refusal_that_may_pass_is_left_to_redelivery() {
        let (sidecar, backend) = refusing(vec![tonic::Status::resource_exhausted(
            "too many requests; try again later",
        )])
        .await;
        let e = backend
            .complete_orchestration_item(episode("busy"), schedules_an_activity())
            .await
            .expect_err("a quota is not a reason to fail the orchestration");
        assert!(e.to_string().contains("try again later"), "{e}");
        assert_eq!(sidecar.seen.lock().unwrap().completions.len(), 1);
    }
}
