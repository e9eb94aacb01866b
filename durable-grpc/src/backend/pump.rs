//! The pump: the task that owns the `GetWorkItems` stream while it is
//! open. It sorts the items into the orchestration and activity queues,
//! fetches in a task of its own the history an orchestration item left
//! out, fails the instance of an item durable cannot read, and reopens the
//! stream with capped, jittered exponential backoff whenever it breaks.

use super::completion::{fail_orchestration, give_back};
use super::error::{is_incoming_too_large, unreadable};
use super::instance::ItemError;
use super::rpc::Rpc;
use crate::convert;
use crate::options::{GrpcOptions, ReconnectPolicy};
use crate::proto;
use durable_runtime::backend::{ActivityWorkItem, BackendError, OrchestrationWorkItem};
use durable_runtime::history::{FailureDetails, HistoryEvent};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tonic::Code;

/// The task owning the work-item stream: opens it, sorts what it brings
/// into the two queues, and reopens it with backoff whenever it breaks,
/// until the queues are gone.
pub(super) async fn run_pump(
    rpc: Rpc,
    options: GrpcOptions,
    orchestrations: mpsc::UnboundedSender<OrchestrationWorkItem>,
    activities: mpsc::UnboundedSender<ActivityWorkItem>,
) {
    let filters = options
        .work_item_filters
        .as_ref()
        .map(|f| proto::WorkItemFilters {
            orchestrations: f
                .orchestrations
                .iter()
                .map(|name| proto::OrchestrationFilter {
                    name: name.clone(),
                    versions: f
                        .orchestration_versions
                        .get(name)
                        .cloned()
                        .unwrap_or_default(),
                })
                .collect(),
            activities: f
                .activities
                .iter()
                .map(|name| proto::ActivityFilter {
                    name: name.clone(),
                    versions: vec![],
                })
                .collect(),
            entities: f
                .entities
                .iter()
                .map(|name| proto::EntityFilter { name: name.clone() })
                .collect(),
        });
    let request = proto::GetWorkItemsRequest {
        max_concurrent_orchestration_work_items: i32::try_from(
            options.max_concurrent_orchestrations,
        )
        .unwrap_or(i32::MAX),
        max_concurrent_activity_work_items: i32::try_from(options.max_concurrent_activities)
            .unwrap_or(i32::MAX),
        // Entity batches run as orchestration items (see `dispatch`).
        max_concurrent_entity_work_items: i32::try_from(options.max_concurrent_orchestrations)
            .unwrap_or(i32::MAX),
        // Work items may leave a long history out; `orchestration_item`
        // fetches it.
        capabilities: vec![proto::WorkerCapability::HistoryStreaming as i32],
        work_item_filters: filters,
    };
    // Held while this task runs: items built in tasks of their own see from
    // it whether the stream that brought them is still wanted.
    let alive = Arc::new(());
    let mut attempt: u32 = 0;
    loop {
        if orchestrations.is_closed() && activities.is_closed() {
            return;
        }
        match open_stream(&rpc, request.clone()).await {
            Ok(mut stream) => {
                tracing::info!(endpoint = %rpc.endpoint, "receiving work items from the sidecar");
                let opened = tokio::time::Instant::now();
                let mut delivered = false;
                loop {
                    match stream.message().await {
                        Ok(Some(item)) => {
                            delivered = true;
                            dispatch(
                                &rpc,
                                &options.reconnect,
                                &alive,
                                item,
                                &orchestrations,
                                &activities,
                            );
                        }
                        Ok(None) => {
                            tracing::warn!(endpoint = %rpc.endpoint, "the sidecar closed the work-item stream; reconnecting");
                            break;
                        }
                        Err(status) if is_incoming_too_large(&status) => {
                            tracing::error!(
                                endpoint = %rpc.endpoint,
                                error = %status.message(),
                                limit = options.max_incoming_message_size,
                                "the sidecar sent a work item larger than the incoming message \
                                 limit; raise the max_incoming_message_size option (the item \
                                 stays with the sidecar until then); reconnecting"
                            );
                            break;
                        }
                        Err(status) if is_permanent(status.code()) => {
                            tracing::error!(endpoint = %rpc.endpoint, error = %rpc.error(status, None), "the sidecar refused the work-item stream, and will until the configuration changes; retrying with backoff");
                            break;
                        }
                        Err(status) => {
                            tracing::warn!(endpoint = %rpc.endpoint, error = %rpc.error(status, None), "the work-item stream broke; reconnecting");
                            break;
                        }
                    }
                }
                attempt = attempt_after_stream(attempt, delivered, opened.elapsed());
            }
            Err((e, Some(code))) if is_permanent(code) => {
                tracing::error!(endpoint = %rpc.endpoint, error = %e, attempt, "the sidecar refuses the work-item stream (credentials, task hub or protocol version), and will until the configuration changes; retrying with backoff");
            }
            Err((e, _)) => {
                tracing::warn!(endpoint = %rpc.endpoint, error = %e, attempt, "cannot open the work-item stream; will retry");
            }
        }
        let delay = options.reconnect.delay(attempt);
        attempt = attempt.saturating_add(1);
        tokio::time::sleep(delay).await;
    }
}

/// How long a work-item stream must stay up, if it delivers nothing, for
/// its end to count as a fresh break rather than another failed attempt.
const STREAM_STABLE: Duration = Duration::from_secs(10);

/// The backoff attempt after a stream that opened and then ended: back to
/// the start only if the stream delivered work or stayed up a while, so a
/// sidecar that accepts and at once closes is not hammered.
fn attempt_after_stream(attempt: u32, delivered: bool, up_for: Duration) -> u32 {
    if delivered || up_for >= STREAM_STABLE {
        0
    } else {
        attempt
    }
}

/// Statuses that retrying will not change (wrong credentials or task hub, a
/// sidecar that does not speak this part of the protocol).
fn is_permanent(code: Code) -> bool {
    matches!(
        code,
        Code::Unauthenticated | Code::PermissionDenied | Code::Unimplemented
    )
}

/// Opens the work-item stream; on failure, the error and the gRPC code if
/// the sidecar answered.
async fn open_stream(
    rpc: &Rpc,
    request: proto::GetWorkItemsRequest,
) -> Result<tonic::Streaming<proto::WorkItem>, (BackendError, Option<Code>)> {
    let mut req = rpc
        .request(request, "a work-item stream request")
        .await
        .map_err(|e| (e, None))?;
    // The stream lives as long as the worker: no deadline (keep-alive pings
    // detect a dead peer).
    req.metadata_mut().remove("grpc-timeout");
    Ok(rpc
        .client()
        .get_work_items(req)
        .await
        .map_err(|s| {
            let code = s.code();
            (rpc.error(s, None), Some(code))
        })?
        .into_inner())
}

/// Sorts a work item into its queue. Never waits: an orchestration item
/// whose history must be fetched is built in a task of its own, so a slow
/// or stalled history call holds up no other work.
fn dispatch(
    rpc: &Rpc,
    reconnect: &ReconnectPolicy,
    pump: &Arc<()>,
    item: proto::WorkItem,
    orchestrations: &mpsc::UnboundedSender<OrchestrationWorkItem>,
    activities: &mpsc::UnboundedSender<ActivityWorkItem>,
) {
    use proto::work_item::Request as R;
    let token = item.completion_token;
    match item.request {
        Some(R::OrchestratorRequest(request)) if request.requires_history_streaming => {
            tokio::spawn(streamed_orchestration_item(
                rpc.clone(),
                reconnect.clone(),
                Arc::downgrade(pump),
                request,
                token,
                orchestrations.clone(),
            ));
        }
        Some(R::OrchestratorRequest(mut request)) => {
            // Nothing to fetch: queued at once, so items keep stream order.
            let instance_id = request.instance_id.clone();
            let built = convert::events_from_proto(std::mem::take(&mut request.past_events))
                .map_err(|e| unreadable("the history of", &instance_id, e))
                .and_then(|past| new_events_item(request, past, token.clone()));
            match built {
                Ok(work_item) => enqueue(rpc, orchestrations, work_item),
                Err(e) => {
                    tokio::spawn(fail_unreadable_orchestration(
                        rpc.clone(),
                        instance_id,
                        token,
                        e,
                    ));
                }
            }
        }
        Some(R::ActivityRequest(request)) => {
            let _ = activities.send(convert::activity_item_from_proto(request, token));
        }
        // An entity batch runs as an episode of its `@name@key` instance
        // (see `convert::entities`); its completion token is marked so that
        // completing it sends an `EntityBatchResult`.
        Some(R::EntityRequest(request)) => {
            let instance_id = request.instance_id.clone();
            match convert::entities::item_from_batch_request(request, &token, chrono::Utc::now()) {
                Ok(work_item) => enqueue(rpc, orchestrations, work_item),
                Err(e) => refuse_entity_item(rpc, &instance_id, token, e),
            }
        }
        Some(R::EntityRequestV2(request)) => {
            let instance_id = request.instance_id.clone();
            match convert::entities::item_from_request(request, &token, chrono::Utc::now()) {
                Ok(work_item) => enqueue(rpc, orchestrations, work_item),
                Err(e) => refuse_entity_item(rpc, &instance_id, token, e),
            }
        }
        Some(R::HealthPing(_)) => {}
        None => {
            tracing::warn!(
                "the sidecar sent a work item of a kind durable does not know; ignoring it"
            );
        }
    }
}

/// An entity work item durable cannot read: its batch is completed with a
/// failure for every operation rather than delivered again without end.
fn refuse_entity_item(rpc: &Rpc, instance_id: &str, token: String, e: convert::ConvertError) {
    tracing::error!(entity = instance_id, error = %e, "the sidecar sent an entity work item durable cannot read; failing its batch");
    let result = proto::EntityBatchResult {
        failure_details: Some(convert::failure_to_proto(
            &durable_runtime::history::FailureDetails::new(
                "EntityWorkItemUnreadable",
                format!("durable cannot read the entity work item of \"{instance_id}\": {e}"),
            ),
        )),
        completion_token: token,
        ..Default::default()
    };
    let rpc = rpc.clone();
    tokio::spawn(async move {
        if let Ok(req) = rpc.request(result, "an entity batch result").await {
            let _ = rpc.client().complete_entity_task(req).await;
        }
    });
}

/// Queues an orchestration item, or gives it back if the backend is gone.
fn enqueue(
    rpc: &Rpc,
    queue: &mpsc::UnboundedSender<OrchestrationWorkItem>,
    item: OrchestrationWorkItem,
) {
    if let Err(mpsc::error::SendError(item)) = queue.send(item) {
        tokio::spawn(give_back(rpc.clone(), vec![item.completion_token], vec![]));
    }
}

/// The work item of an orchestrator request whose past events are `past`.
fn new_events_item(
    request: proto::OrchestratorRequest,
    past: Vec<HistoryEvent>,
    token: String,
) -> Result<OrchestrationWorkItem, BackendError> {
    let instance_id = request.instance_id.clone();
    convert::orchestration_item_from_proto(request, past, token)
        .map_err(|e| unreadable("the new events of", &instance_id, e))
}

/// How many times the history of a work item is asked for before the item
/// is given back to the sidecar.
const HISTORY_ATTEMPTS: u32 = 3;

/// Fetches the history a work item left out and queues the item; fails the
/// instance if the history cannot be read, gives the item back if it cannot
/// be fetched or if the stream that brought it (`pump`) has been closed.
async fn streamed_orchestration_item(
    rpc: Rpc,
    reconnect: ReconnectPolicy,
    pump: std::sync::Weak<()>,
    request: proto::OrchestratorRequest,
    token: String,
    queue: mpsc::UnboundedSender<OrchestrationWorkItem>,
) {
    let instance_id = request.instance_id.clone();
    let mut attempt = 0;
    let past = loop {
        match rpc
            .fetch_history(&instance_id, request.execution_id.clone(), true)
            .await
        {
            Ok(past) => break past,
            Err(ItemError::Fetch(e)) if attempt + 1 < HISTORY_ATTEMPTS => {
                tracing::debug!(instance_id, error = %e, attempt, "cannot fetch the history of a work item; retrying");
                tokio::time::sleep(reconnect.delay(attempt)).await;
                attempt += 1;
            }
            Err(ItemError::Fetch(e) | ItemError::Unsupported(e)) => {
                tracing::warn!(instance_id, error = %e, "cannot fetch the history of a work item; giving it back to the sidecar for redelivery");
                give_back(rpc, vec![token], vec![]).await;
                return;
            }
            Err(ItemError::Unreadable(e)) => {
                fail_unreadable_orchestration(rpc, instance_id, token, e).await;
                return;
            }
        }
    };
    match new_events_item(request, past, token.clone()) {
        Ok(_) if pump.upgrade().is_none() => give_back(rpc, vec![token], vec![]).await,
        Ok(item) => enqueue(&rpc, &queue, item),
        Err(e) => fail_unreadable_orchestration(rpc, instance_id, token, e).await,
    }
}

/// An episode durable cannot read would be redelivered forever if abandoned;
/// failing the instance instead tells its owner what happened.
async fn fail_unreadable_orchestration(
    rpc: Rpc,
    instance_id: String,
    token: String,
    error: BackendError,
) {
    let instance_id = instance_id.as_str();
    tracing::error!(instance_id, %error, "failing an orchestration whose work item cannot be read");
    let failure = FailureDetails::new("durable::UnsupportedHistory", error.to_string());
    if let Err(e) = fail_orchestration(&rpc, instance_id, token, failure).await {
        tracing::error!(instance_id, error = %e, "could not fail the orchestration either");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::scripted::{self, quick_retries, streamed_item_then_activity, until};
    use crate::GrpcBackend;
    use durable_runtime::actions::ActionKind;
    use durable_runtime::backend::Backend;
    use durable_runtime::history::{EventKind, OrchestrationStatus};

    #[test]
    fn the_backoff_restarts_only_after_a_stream_that_was_worth_it() {
        let short = Duration::from_millis(5);
        assert_eq!(
            attempt_after_stream(4, false, short),
            4,
            "accepted, then closed at once"
        );
        assert_eq!(attempt_after_stream(4, true, short), 0, "delivered work");
        assert_eq!(
            attempt_after_stream(4, false, STREAM_STABLE),
            0,
            "stayed up"
        );
        assert!(is_permanent(Code::Unauthenticated));
        assert!(is_permanent(Code::PermissionDenied));
        assert!(is_permanent(Code::Unimplemented));
        assert!(!is_permanent(Code::Unavailable));
    }

    #[tokio::test]
    async fn unreadable_episodes_fail_their_instance_and_pings_are_ignored() {
        let sidecar = scripted::Sidecar::default();
        let good = convert::event_to_proto(&HistoryEvent::new(
            chrono::DateTime::UNIX_EPOCH,
            EventKind::OrchestratorStarted,
        ));
        let unknown = proto::HistoryEvent {
            event_id: 3,
            timestamp: None,
            event_type: None,
        };
        *sidecar.work.lock().unwrap() = vec![
            proto::WorkItem {
                request: Some(proto::work_item::Request::HealthPing(proto::HealthPing {})),
                completion_token: String::new(),
            },
            proto::WorkItem {
                request: Some(proto::work_item::Request::OrchestratorRequest(
                    proto::OrchestratorRequest {
                        instance_id: "entity-user".into(),
                        execution_id: None,
                        past_events: vec![unknown],
                        new_events: vec![good.clone()],
                        requires_history_streaming: false,
                        orchestration_trace_context: None,
                    },
                )),
                completion_token: "t-1".into(),
            },
            proto::WorkItem {
                request: Some(proto::work_item::Request::OrchestratorRequest(
                    proto::OrchestratorRequest {
                        instance_id: "fine".into(),
                        execution_id: Some("e".into()),
                        past_events: vec![],
                        new_events: vec![good],
                        requires_history_streaming: false,
                        orchestration_trace_context: None,
                    },
                )),
                completion_token: "t-2".into(),
            },
        ];
        let addr = sidecar.clone().serve().await;
        let backend = GrpcBackend::new(GrpcOptions::new(format!("http://{addr}"))).unwrap();
        let item = tokio::time::timeout(Duration::from_secs(10), backend.next_orchestration_item())
            .await
            .expect("the readable work item arrives")
            .unwrap();
        assert_eq!(item.instance_id, "fine");
        assert_eq!(item.execution_id, "e");
        until(&sidecar, "the unreadable episode is answered", |seen| {
            !seen.completions.is_empty()
        })
        .await;
        let seen = sidecar.seen.lock().unwrap();
        assert_eq!(
            seen.completions.len(),
            1,
            "the unreadable episode was answered"
        );
        let done = &seen.completions[0];
        assert_eq!(done.instance_id, "entity-user");
        assert_eq!(done.completion_token, "t-1");
        let action = convert::action_from_proto(done.actions[0].clone()).unwrap();
        match action.kind {
            ActionKind::CompleteOrchestration {
                status: OrchestrationStatus::Failed,
                failure: Some(f),
                ..
            } => {
                assert!(f.message.contains("does not support"), "{}", f.message);
                assert!(f.non_retriable);
            }
            other => panic!("expected a failed completion, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_history_the_sidecar_streams_separately_is_fetched_and_filters_are_announced() {
        let sidecar = scripted::Sidecar::default();
        let t = chrono::DateTime::UNIX_EPOCH;
        let past = vec![
            HistoryEvent::new(t, EventKind::OrchestratorStarted),
            HistoryEvent::new(
                t,
                EventKind::ExecutionStarted {
                    name: "long".into(),
                    version: None,
                    input: None,
                    instance_id: "big".into(),
                    execution_id: Some("exec".into()),
                    parent: None,
                    scheduled_start: None,
                    tags: Default::default(),
                },
            ),
            HistoryEvent::with_id(
                0,
                t,
                EventKind::TimerCreated {
                    fire_at: t + chrono::Duration::seconds(5),
                },
            ),
            HistoryEvent::new(t, EventKind::OrchestratorCompleted),
        ];
        *sidecar.history.lock().unwrap() = past.iter().map(convert::event_to_proto).collect();
        *sidecar.work.lock().unwrap() = vec![proto::WorkItem {
            request: Some(proto::work_item::Request::OrchestratorRequest(
                proto::OrchestratorRequest {
                    instance_id: "big".into(),
                    execution_id: None,
                    past_events: vec![],
                    new_events: vec![convert::event_to_proto(&HistoryEvent::new(
                        t,
                        EventKind::OrchestratorStarted,
                    ))],
                    requires_history_streaming: true,
                    orchestration_trace_context: None,
                },
            )),
            completion_token: "tok".into(),
        }];
        let addr = sidecar.clone().serve().await;
        let backend = GrpcBackend::new(
            GrpcOptions::new(format!("http://{addr}"))
                .max_concurrent(7, 9)
                .work_item_filters(crate::WorkItemFilters {
                    orchestrations: vec!["long".into(), "any".into()],
                    activities: vec!["step".into()],
                    orchestration_versions: [("long".to_string(), vec!["2".to_string()])].into(),
                    entities: vec![],
                }),
        )
        .unwrap();
        let item = tokio::time::timeout(Duration::from_secs(10), backend.next_orchestration_item())
            .await
            .expect("the work item arrives")
            .unwrap();
        assert_eq!(*item.past_events, past);
        assert_eq!(item.execution_id, "exec");
        let seen = sidecar.seen.lock().unwrap();
        let request = &seen.stream_requests[0];
        assert_eq!(request.max_concurrent_orchestration_work_items, 7);
        assert_eq!(request.max_concurrent_activity_work_items, 9);
        assert_eq!(
            request.capabilities,
            [proto::WorkerCapability::HistoryStreaming as i32],
            "history streaming is announced"
        );
        let filters = request.work_item_filters.as_ref().expect("filters sent");
        assert_eq!(filters.orchestrations[0].name, "long");
        assert_eq!(filters.orchestrations[0].versions, ["2"], "versions sent");
        assert_eq!(filters.orchestrations[1].name, "any");
        assert!(
            filters.orchestrations[1].versions.is_empty(),
            "a name without versions takes every version"
        );
        assert_eq!(filters.activities[0].name, "step");
    }

    #[tokio::test]
    async fn work_items_over_the_outgoing_limit_are_received() {
        // A sidecar that sends long histories inline: 5 MiB, over the 4 MiB
        // outgoing limit, under the incoming one.
        let sidecar = scripted::Sidecar::default();
        let t = chrono::DateTime::UNIX_EPOCH;
        let input = format!("\"{}\"", "x".repeat(5 * 1024 * 1024));
        let started = HistoryEvent::new(
            t,
            EventKind::ExecutionStarted {
                name: "long".into(),
                version: None,
                input: Some(input),
                instance_id: "fat".into(),
                execution_id: Some("exec".into()),
                parent: None,
                scheduled_start: None,
                tags: Default::default(),
            },
        );
        *sidecar.work.lock().unwrap() = vec![proto::WorkItem {
            request: Some(proto::work_item::Request::OrchestratorRequest(
                proto::OrchestratorRequest {
                    instance_id: "fat".into(),
                    execution_id: Some("exec".into()),
                    past_events: vec![convert::event_to_proto(&started)],
                    new_events: vec![convert::event_to_proto(&HistoryEvent::new(
                        t,
                        EventKind::OrchestratorStarted,
                    ))],
                    requires_history_streaming: false,
                    orchestration_trace_context: None,
                },
            )),
            completion_token: "tok".into(),
        }];
        let addr = sidecar.clone().serve().await;
        let options = GrpcOptions::new(format!("http://{addr}"));
        assert_eq!(options.max_message_size, crate::DEFAULT_MAX_MESSAGE_SIZE);
        let backend = GrpcBackend::new(options).unwrap();
        let item = tokio::time::timeout(Duration::from_secs(10), backend.next_orchestration_item())
            .await
            .expect("the 5 MiB work item arrives")
            .unwrap();
        assert_eq!(*item.past_events, [started]);
    }

    #[tokio::test]
    async fn a_failed_history_call_gives_the_item_back_instead_of_failing_the_instance() {
        for code in [
            Code::Unavailable,
            Code::Cancelled,
            Code::DeadlineExceeded,
            Code::NotFound,
            Code::Internal,
        ] {
            let sidecar = scripted::Sidecar::default();
            *sidecar.work.lock().unwrap() = streamed_item_then_activity();
            *sidecar.history_error.lock().unwrap() = Some(code);
            let addr = sidecar.clone().serve().await;
            let backend = GrpcBackend::new(quick_retries(addr)).unwrap();
            let act = tokio::time::timeout(Duration::from_secs(10), backend.next_activity_item())
                .await
                .unwrap_or_else(|_| panic!("{code:?}: the activity arrives"))
                .unwrap();
            assert_eq!(act.completion_token, "act-token");
            until(&sidecar, "the work item is abandoned", |seen| {
                !seen.abandoned.is_empty()
            })
            .await;
            let seen = sidecar.seen.lock().unwrap();
            assert_eq!(seen.abandoned, ["orch-token"], "{code:?}");
            assert!(
                seen.completions.is_empty(),
                "{code:?}: the instance was completed: {:?}",
                seen.completions
            );
            let asked = seen
                .headers
                .iter()
                .filter(|(call, ..)| call == "stream_instance_history")
                .count();
            assert_eq!(asked, HISTORY_ATTEMPTS as usize, "{code:?}: retried first");
        }
    }

    #[tokio::test]
    async fn a_stalled_history_holds_up_no_other_work_and_times_out() {
        let sidecar = scripted::Sidecar::default();
        *sidecar.work.lock().unwrap() = streamed_item_then_activity();
        *sidecar.history_stalls.lock().unwrap() = true;
        let addr = sidecar.clone().serve().await;
        // The default request timeout (30 s) is far longer than this wait:
        // the activity behind the stalled item is not held up by it.
        let backend = GrpcBackend::new(quick_retries(addr)).unwrap();
        let act = tokio::time::timeout(Duration::from_secs(5), backend.next_activity_item())
            .await
            .expect("the activity arrives while the history before it stalls")
            .unwrap();
        assert_eq!(act.completion_token, "act-token");
        assert!(sidecar.seen.lock().unwrap().abandoned.is_empty());
        drop(backend);

        // With a short request timeout, the stalled call is given up on and
        // the item given back.
        let sidecar = scripted::Sidecar::default();
        *sidecar.work.lock().unwrap() = streamed_item_then_activity();
        *sidecar.history_stalls.lock().unwrap() = true;
        let addr = sidecar.clone().serve().await;
        let backend =
            GrpcBackend::new(quick_retries(addr).request_timeout(Duration::from_millis(50)))
                .unwrap();
        let _activity = backend.next_activity_item().await.unwrap();
        until(&sidecar, "the stalled work item is given back", |seen| {
            !seen.abandoned.is_empty()
        })
        .await;
        let seen = sidecar.seen.lock().unwrap();
        assert_eq!(seen.abandoned, ["orch-token"]);
        assert!(seen.completions.is_empty());
    }

    #[tokio::test]
    async fn a_fetched_history_durable_cannot_read_fails_the_instance() {
        let sidecar = scripted::Sidecar::default();
        *sidecar.work.lock().unwrap() = streamed_item_then_activity();
        *sidecar.history.lock().unwrap() = vec![proto::HistoryEvent {
            event_id: 1,
            timestamp: None,
            event_type: None,
        }];
        let addr = sidecar.clone().serve().await;
        let backend = GrpcBackend::new(quick_retries(addr)).unwrap();
        let _activity = backend.next_activity_item().await.unwrap();
        until(&sidecar, "the instance is failed", |seen| {
            !seen.completions.is_empty()
        })
        .await;
        let seen = sidecar.seen.lock().unwrap();
        assert!(seen.abandoned.is_empty());
        assert_eq!(seen.completions[0].completion_token, "orch-token");
        match convert::action_from_proto(seen.completions[0].actions[0].clone())
            .unwrap()
            .kind
        {
            ActionKind::CompleteOrchestration {
                status: OrchestrationStatus::Failed,
                failure: Some(f),
                ..
            } => assert!(f.message.contains("streamed"), "{}", f.message),
            other => panic!("expected a failed completion, got {other:?}"),
        }
    }
}
