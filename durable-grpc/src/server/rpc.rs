//! The RPCs: each checks the call (credentials, task hub, size), reads the
//! request with `convert`, asks the backend, and answers with `convert`.

use super::status::{deadline, from_backend, json, unreadable};
use super::work::{self, Filters, Item, Kind, Limits};
use super::{Create, SidecarService};
use crate::convert;
use crate::proto;
use crate::proto::task_hub_sidecar_service_server::TaskHubSidecarService;
use durable_runtime::actions::ActionKind;
use durable_runtime::backend::{InstanceQuery, WaitFor};
use durable_runtime::Client;
use durable_runtime::OrchestrationStatus;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::BoxStream;
use tonic::{Request, Response, Status};

type Answer<T> = Result<Response<T>, Status>;

/// Events per `HistoryChunk` of `StreamInstanceHistory`.
const HISTORY_CHUNK_EVENTS: usize = 200;

/// The most backend pages one `ListInstanceIds` call reads to fill its
/// answer when the completion-time filter leaves pages short.
const LIST_IDS_SCAN: usize = 8;

/// What the server answers for a call of the protocol it does not serve.
fn not_served(call: &str, why: &str) -> Status {
    Status::unimplemented(format!(
        "{call} is not implemented by durable's server: {why}"
    ))
}

/// Checks the JSON payloads of an episode's result.
fn check_result(
    instance_id: &str,
    result: &durable_runtime::actions::OrchestratorResult,
) -> Result<(), Status> {
    json(
        || format!("the custom status of instance \"{instance_id}\""),
        result.custom_status.as_deref(),
    )?;
    for action in &result.actions {
        let id = action.id;
        match &action.kind {
            ActionKind::ScheduleTask { name, input, .. } => json(
                || {
                    format!("the input of activity \"{name}\" (action {id} of instance \"{instance_id}\")")
                },
                input.as_deref(),
            )?,
            ActionKind::CreateSubOrchestration { name, input, .. } => json(
                || {
                    format!("the input of sub-orchestration \"{name}\" (action {id} of instance \"{instance_id}\")")
                },
                input.as_deref(),
            )?,
            ActionKind::SendEvent { name, data, .. } => {
                json(
                    || {
                        format!("the data of event \"{name}\" (action {id} of instance \"{instance_id}\")")
                    },
                    data.as_deref(),
                )?
            }
            ActionKind::CompleteOrchestration { result, .. } => json(
                || format!("the output of instance \"{instance_id}\""),
                result.as_deref(),
            )?,
            _ => {}
        }
    }
    Ok(())
}

impl SidecarService {
    /// `WaitForInstanceStart` and `WaitForInstanceCompletion`: the
    /// backend's own wait, for as long as the caller's deadline allows.
    async fn wait(
        &self,
        request: Request<proto::GetInstanceRequest>,
        wait_for: WaitFor,
        call: &str,
    ) -> Answer<proto::GetInstanceResponse> {
        let shared = &self.hub(&request, call).await?;
        // Answered a little before the deadline, so the caller gets this
        // server's DEADLINE_EXCEEDED (naming the instance) rather than the
        // transport's cancellation.
        let timeout = deadline(&request).map_or(Duration::MAX, |d| {
            d.saturating_sub((d / 10).min(Duration::from_millis(50)))
        });
        let r = request.into_inner();
        let waited = tokio::select! {
            w = shared.backend.wait_for_instance(&r.instance_id, wait_for, timeout) => w,
            _ = shared.stopped() => {
                return Err(Status::unavailable(format!(
                    "{call} of instance \"{}\": {}; wait again once it is back",
                    r.instance_id,
                    shared.stop_reason(),
                )))
            }
        };
        let m = waited.map_err(from_backend)?;
        let m = if r.get_inputs_and_outputs {
            m
        } else {
            m.without_payloads()
        };
        Ok(Response::new(proto::GetInstanceResponse {
            exists: true,
            orchestration_state: Some(convert::metadata_to_proto(&m)),
        }))
    }
}

#[tonic::async_trait]
impl TaskHubSidecarService for SidecarService {
    async fn hello(&self, request: Request<()>) -> Answer<()> {
        // A hello opens nothing: it checks the credentials and that the hub
        // named is one this server can serve.
        let hub = self.check(&request, "Hello")?;
        self.hubs.key_of(&hub, "Hello")?;
        Ok(Response::new(()))
    }

    async fn start_instance(
        &self,
        request: Request<proto::CreateInstanceRequest>,
    ) -> Answer<proto::CreateInstanceResponse> {
        let call = "StartInstance";
        let shared = self.hub_or_new(&request, call).await?;
        let mut create = convert::create_request_from_proto(request.into_inner())
            .map_err(|e| unreadable(call, e))?;
        if create.instance_id.is_empty() {
            // As other sidecars do: the caller learns the id from the answer.
            create.instance_id = format!("{:032x}", fastrand::u128(..));
        }
        create.validate().map_err(from_backend)?;
        json(
            || format!("the input of orchestration \"{}\"", create.name),
            create.input.as_deref(),
        )?;
        let instance_id = create.instance_id.clone();
        shared
            .backend
            .create_instance(create)
            .await
            .map_err(from_backend)?;
        Ok(Response::new(proto::CreateInstanceResponse { instance_id }))
    }

    async fn get_instance(
        &self,
        request: Request<proto::GetInstanceRequest>,
    ) -> Answer<proto::GetInstanceResponse> {
        let shared = self.hub(&request, "GetInstance").await?;
        let r = request.into_inner();
        let m = shared
            .backend
            .get_instance(&r.instance_id, r.get_inputs_and_outputs)
            .await
            .map_err(from_backend)?;
        Ok(Response::new(proto::GetInstanceResponse {
            exists: m.is_some(),
            orchestration_state: m.as_ref().map(convert::metadata_to_proto),
        }))
    }

    async fn wait_for_instance_start(
        &self,
        request: Request<proto::GetInstanceRequest>,
    ) -> Answer<proto::GetInstanceResponse> {
        self.wait(request, WaitFor::Start, "WaitForInstanceStart")
            .await
    }

    async fn wait_for_instance_completion(
        &self,
        request: Request<proto::GetInstanceRequest>,
    ) -> Answer<proto::GetInstanceResponse> {
        self.wait(request, WaitFor::Completion, "WaitForInstanceCompletion")
            .await
    }

    async fn raise_event(
        &self,
        request: Request<proto::RaiseEventRequest>,
    ) -> Answer<proto::RaiseEventResponse> {
        let shared = self.hub(&request, "RaiseEvent").await?;
        let r = request.into_inner();
        let input = convert::payload(r.input);
        json(
            || {
                format!(
                    "the data of event \"{}\" for instance \"{}\"",
                    r.name, r.instance_id
                )
            },
            input.as_deref(),
        )?;
        shared
            .backend
            .raise_event(&r.instance_id, &r.name, input)
            .await
            .map_err(from_backend)?;
        Ok(Response::new(proto::RaiseEventResponse {}))
    }

    async fn terminate_instance(
        &self,
        request: Request<proto::TerminateRequest>,
    ) -> Answer<proto::TerminateResponse> {
        let shared = self.hub(&request, "TerminateInstance").await?;
        let r = request.into_inner();
        let output = convert::payload(r.output);
        json(
            || format!("the output of terminating instance \"{}\"", r.instance_id),
            output.as_deref(),
        )?;
        shared
            .backend
            .terminate(&r.instance_id, output, r.recursive)
            .await
            .map_err(from_backend)?;
        Ok(Response::new(proto::TerminateResponse {}))
    }

    async fn suspend_instance(
        &self,
        request: Request<proto::SuspendRequest>,
    ) -> Answer<proto::SuspendResponse> {
        let shared = self.hub(&request, "SuspendInstance").await?;
        let r = request.into_inner();
        shared
            .backend
            .suspend(&r.instance_id, convert::payload(r.reason))
            .await
            .map_err(from_backend)?;
        Ok(Response::new(proto::SuspendResponse {}))
    }

    async fn resume_instance(
        &self,
        request: Request<proto::ResumeRequest>,
    ) -> Answer<proto::ResumeResponse> {
        let shared = self.hub(&request, "ResumeInstance").await?;
        let r = request.into_inner();
        shared
            .backend
            .resume(&r.instance_id, convert::payload(r.reason))
            .await
            .map_err(from_backend)?;
        Ok(Response::new(proto::ResumeResponse {}))
    }

    async fn query_instances(
        &self,
        request: Request<proto::QueryInstancesRequest>,
    ) -> Answer<proto::QueryInstancesResponse> {
        let call = "QueryInstances";
        let shared = self.hub(&request, call).await?;
        let query = match request.into_inner().query {
            Some(q) => convert::query_from_proto(q).map_err(|e| unreadable(call, e))?,
            None => InstanceQuery::default(),
        };
        let page = shared
            .backend
            .query_instances(query)
            .await
            .map_err(from_backend)?;
        Ok(Response::new(proto::QueryInstancesResponse {
            orchestration_state: page
                .instances
                .iter()
                .map(convert::metadata_to_proto)
                .collect(),
            continuation_token: page.continuation_token,
        }))
    }

    async fn list_instance_ids(
        &self,
        request: Request<proto::ListInstanceIdsRequest>,
    ) -> Answer<proto::ListInstanceIdsResponse> {
        let call = "ListInstanceIds";
        let shared = self.hub(&request, call).await?;
        let r = request.into_inner();
        let statuses = r
            .runtime_status
            .into_iter()
            .map(convert::status_from_proto)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| unreadable(call, e))?;
        let from = r
            .completed_time_from
            .as_ref()
            .map(convert::timestamp_from_proto)
            .transpose()
            .map_err(|e| unreadable(call, e))?;
        let to = r
            .completed_time_to
            .as_ref()
            .map(convert::timestamp_from_proto)
            .transpose()
            .map_err(|e| unreadable(call, e))?;
        // Finished instances only, as the call is meant for (and as other
        // sidecars answer it): the statuses asked for that are terminal, or
        // every terminal status when none is asked for.
        let terminal = [
            OrchestrationStatus::Completed,
            OrchestrationStatus::Failed,
            OrchestrationStatus::Terminated,
            OrchestrationStatus::Canceled,
        ];
        let statuses: Vec<OrchestrationStatus> = if statuses.is_empty() {
            terminal.to_vec()
        } else {
            statuses.into_iter().filter(|s| s.is_terminal()).collect()
        };
        if statuses.is_empty() {
            return Ok(Response::new(proto::ListInstanceIdsResponse::default()));
        }
        let completed_in_range = |m: &durable_runtime::backend::InstanceMetadata| {
            if from.is_none() && to.is_none() {
                return true;
            }
            m.completed_at
                .is_some_and(|t| from.is_none_or(|f| t >= f) && to.is_none_or(|until| t < until))
        };
        // The backend pages by id; the completion-time filter is applied
        // here. Backend pages are read, each no larger than what the answer
        // still lacks (so the token resumes exactly after the last id
        // looked at), until the answer is full, the instances end, or
        // LIST_IDS_SCAN pages were read: only then is an answer short
        // (even empty) while a token says more may follow.
        let page_size = match usize::try_from(r.page_size) {
            Ok(n) if n > 0 => n,
            _ => InstanceQuery::default().effective_page_size(),
        };
        let mut instance_ids = Vec::new();
        let mut token = convert::payload(r.last_instance_key);
        for _ in 0..LIST_IDS_SCAN {
            let page = shared
                .backend
                .query_instances(InstanceQuery {
                    statuses: statuses.clone(),
                    page_size: page_size - instance_ids.len(),
                    continuation_token: token.take(),
                    ..InstanceQuery::default()
                })
                .await
                .map_err(from_backend)?;
            instance_ids.extend(
                page.instances
                    .into_iter()
                    .filter(completed_in_range)
                    .map(|m| m.instance_id),
            );
            token = page.continuation_token;
            if token.is_none() || instance_ids.len() >= page_size {
                break;
            }
        }
        Ok(Response::new(proto::ListInstanceIdsResponse {
            instance_ids,
            last_instance_key: token,
        }))
    }

    async fn purge_instances(
        &self,
        request: Request<proto::PurgeInstancesRequest>,
    ) -> Answer<proto::PurgeInstancesResponse> {
        let call = "PurgeInstances";
        let shared = self.hub(&request, call).await?;
        let (target, recursive) = convert::purge_from_proto(request.into_inner())
            .map_err(|e| unreadable(call, e))?
            .ok_or_else(|| {
                Status::invalid_argument(
                    "PurgeInstances: the request names neither an instance id nor a filter \
                     (a batch of instance ids is not served); pass one of them",
                )
            })?;
        let n = shared
            .backend
            .purge(target, recursive)
            .await
            .map_err(from_backend)?;
        Ok(Response::new(proto::PurgeInstancesResponse {
            deleted_instance_count: i32::try_from(n).unwrap_or(i32::MAX),
            is_complete: Some(true),
        }))
    }

    async fn restart_instance(
        &self,
        request: Request<proto::RestartInstanceRequest>,
    ) -> Answer<proto::RestartInstanceResponse> {
        let shared = self.hub(&request, "RestartInstance").await?;
        let r = request.into_inner();
        let client = Client::new(shared.backend.clone());
        let restarted = if r.restart_with_new_instance_id {
            client.restart_as_new(&r.instance_id).await
        } else {
            client.restart(&r.instance_id).await
        };
        match restarted {
            Ok(instance_id) => Ok(Response::new(proto::RestartInstanceResponse {
                instance_id,
            })),
            Err(durable_runtime::Error::Backend(e)) => Err(from_backend(e)),
            Err(e) => Err(Status::internal(format!(
                "RestartInstance of instance \"{}\": {e}",
                r.instance_id
            ))),
        }
    }

    async fn rewind_instance(
        &self,
        request: Request<proto::RewindInstanceRequest>,
    ) -> Answer<proto::RewindInstanceResponse> {
        let shared = self.hub(&request, "RewindInstance").await?;
        let r = request.into_inner();
        shared
            .backend
            .rewind(&r.instance_id, r.reason)
            .await
            .map_err(from_backend)?;
        Ok(Response::new(proto::RewindInstanceResponse {}))
    }

    async fn stream_instance_history(
        &self,
        request: Request<proto::StreamInstanceHistoryRequest>,
    ) -> Answer<BoxStream<proto::HistoryChunk>> {
        let shared = self.hub(&request, "StreamInstanceHistory").await?;
        let r = request.into_inner();
        let execution_id = convert::payload(r.execution_id);
        // For a work item that left its history out: the history it was
        // leased with, which is what its episode must replay.
        let held = if r.for_work_item_processing {
            shared
                .leases
                .held_history(&r.instance_id, execution_id.as_deref())
        } else {
            None
        };
        let history = match held {
            Some(events) => events,
            None => Arc::new(
                shared
                    .backend
                    .get_history(&r.instance_id)
                    .await
                    .map_err(from_backend)?,
            ),
        };
        // Chunks of at most HISTORY_CHUNK_EVENTS events and about half the
        // message size limit, so each fits a peer's incoming limit.
        let budget = shared.options.max_message_size / 2;
        let mut chunks: Vec<Result<proto::HistoryChunk, Status>> = Vec::new();
        let mut chunk = proto::HistoryChunk { events: Vec::new() };
        let mut size = 0;
        for event in history.iter() {
            let wire = convert::event_to_proto(event);
            let len = prost::Message::encoded_len(&wire);
            if !chunk.events.is_empty()
                && (chunk.events.len() == HISTORY_CHUNK_EVENTS || size + len > budget)
            {
                chunks.push(Ok(std::mem::take(&mut chunk)));
                size = 0;
            }
            size += len;
            chunk.events.push(wire);
        }
        if !chunk.events.is_empty() {
            chunks.push(Ok(chunk));
        }
        Ok(Response::new(Box::pin(tokio_stream::iter(chunks))))
    }

    async fn get_work_items(
        &self,
        request: Request<proto::GetWorkItemsRequest>,
    ) -> Answer<BoxStream<proto::WorkItem>> {
        let shared = self.hub_or_new(&request, "GetWorkItems").await?;
        let limits = Limits::from_request(request.get_ref());
        let filters = Filters::from_request(request.get_ref());
        let (tx, rx) = tokio::sync::mpsc::channel(16);
        tokio::spawn(work::run_stream(shared.clone(), limits, filters, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn complete_orchestrator_task(
        &self,
        request: Request<proto::OrchestratorResponse>,
    ) -> Answer<proto::CompleteTaskResponse> {
        let call = "CompleteOrchestratorTask";
        let shared = &self.hub(&request, call).await?;
        let r = request.into_inner();
        let token = r.completion_token.clone();
        let instance_id = r.instance_id.clone();
        let result = convert::orchestrator_result_from_proto(r)
            .map_err(|e| unreadable(&format!("{call} of instance \"{instance_id}\""), e))?;
        check_result(&instance_id, &result)?;
        let taken = shared
            .leases
            .take(shared, &token, Kind::Orchestration, &instance_id, call)?;
        let Item::Orchestration(item) = taken.item().clone() else {
            unreachable!("taken by kind")
        };
        match shared
            .backend
            .complete_orchestration_item(item, result)
            .await
        {
            Ok(()) => {
                taken.done();
                Ok(Response::new(proto::CompleteTaskResponse {}))
            }
            Err(e @ durable_runtime::BackendError::LeaseLost(_)) => {
                taken.done();
                Err(from_backend(e))
            }
            Err(e) => {
                taken.restore().await;
                Err(from_backend(e))
            }
        }
    }

    async fn complete_activity_task(
        &self,
        request: Request<proto::ActivityResponse>,
    ) -> Answer<proto::CompleteTaskResponse> {
        let call = "CompleteActivityTask";
        let shared = &self.hub(&request, call).await?;
        let r = request.into_inner();
        let token = r.completion_token.clone();
        let instance_id = r.instance_id.clone();
        let outcome = convert::activity_outcome_from_proto(r);
        if let Ok(result) = &outcome {
            json(
                || format!("the result of an activity of instance \"{instance_id}\""),
                result.as_deref(),
            )?;
        }
        let taken = shared
            .leases
            .take(shared, &token, Kind::Activity, &instance_id, call)?;
        let Item::Activity(item) = taken.item() else {
            unreachable!("taken by kind")
        };
        match shared.backend.complete_activity_item(item, outcome).await {
            Ok(()) => {
                taken.done();
                Ok(Response::new(proto::CompleteTaskResponse {}))
            }
            Err(e @ durable_runtime::BackendError::LeaseLost(_)) => {
                taken.done();
                Err(from_backend(e))
            }
            Err(e) => {
                taken.restore().await;
                Err(from_backend(e))
            }
        }
    }

    async fn abandon_task_activity_work_item(
        &self,
        request: Request<proto::AbandonActivityTaskRequest>,
    ) -> Answer<proto::AbandonActivityTaskResponse> {
        let call = "AbandonTaskActivityWorkItem";
        let shared = &self.hub(&request, call).await?;
        let token = request.into_inner().completion_token;
        let taken = shared
            .leases
            .take(shared, &token, Kind::Activity, "", call)?;
        let Item::Activity(item) = taken.item() else {
            unreachable!("taken by kind")
        };
        let result = shared.backend.abandon_activity_item(item).await;
        taken.done();
        result.map_err(from_backend)?;
        Ok(Response::new(proto::AbandonActivityTaskResponse {}))
    }

    async fn abandon_task_orchestrator_work_item(
        &self,
        request: Request<proto::AbandonOrchestrationTaskRequest>,
    ) -> Answer<proto::AbandonOrchestrationTaskResponse> {
        let call = "AbandonTaskOrchestratorWorkItem";
        let shared = &self.hub(&request, call).await?;
        let token = request.into_inner().completion_token;
        let taken = shared
            .leases
            .take(shared, &token, Kind::Orchestration, "", call)?;
        let Item::Orchestration(item) = taken.item().clone() else {
            unreachable!("taken by kind")
        };
        let result = shared.backend.abandon_orchestration_item(item).await;
        taken.done();
        result.map_err(from_backend)?;
        Ok(Response::new(proto::AbandonOrchestrationTaskResponse {}))
    }

    async fn create_task_hub(
        &self,
        request: Request<proto::CreateTaskHubRequest>,
    ) -> Answer<proto::CreateTaskHubResponse> {
        let call = "CreateTaskHub";
        let hub = self.check(&request, call)?;
        if request.get_ref().recreate_if_exists {
            // Deleting a hub that has no storage is not an error.
            self.hubs.delete(&hub, call).await?;
        }
        // Opening a hub creates its storage.
        self.hubs.get(&hub, call, Create::Yes).await?;
        Ok(Response::new(proto::CreateTaskHubResponse {}))
    }

    async fn delete_task_hub(
        &self,
        request: Request<proto::DeleteTaskHubRequest>,
    ) -> Answer<proto::DeleteTaskHubResponse> {
        let call = "DeleteTaskHub";
        let hub = self.check(&request, call)?;
        self.hubs.delete(&hub, call).await?;
        Ok(Response::new(proto::DeleteTaskHubResponse {}))
    }

    async fn signal_entity(
        &self,
        request: Request<proto::SignalEntityRequest>,
    ) -> Answer<proto::SignalEntityResponse> {
        self.hub(&request, "SignalEntity").await?;
        Err(not_served("SignalEntity", ENTITIES))
    }

    async fn get_entity(
        &self,
        request: Request<proto::GetEntityRequest>,
    ) -> Answer<proto::GetEntityResponse> {
        self.hub(&request, "GetEntity").await?;
        Err(not_served("GetEntity", ENTITIES))
    }

    async fn query_entities(
        &self,
        request: Request<proto::QueryEntitiesRequest>,
    ) -> Answer<proto::QueryEntitiesResponse> {
        self.hub(&request, "QueryEntities").await?;
        Err(not_served("QueryEntities", ENTITIES))
    }

    async fn clean_entity_storage(
        &self,
        request: Request<proto::CleanEntityStorageRequest>,
    ) -> Answer<proto::CleanEntityStorageResponse> {
        self.hub(&request, "CleanEntityStorage").await?;
        Err(not_served("CleanEntityStorage", ENTITIES))
    }

    async fn complete_entity_task(
        &self,
        request: Request<proto::EntityBatchResult>,
    ) -> Answer<proto::CompleteTaskResponse> {
        self.hub(&request, "CompleteEntityTask").await?;
        Err(not_served("CompleteEntityTask", ENTITIES))
    }

    async fn abandon_task_entity_work_item(
        &self,
        request: Request<proto::AbandonEntityTaskRequest>,
    ) -> Answer<proto::AbandonEntityTaskResponse> {
        self.hub(&request, "AbandonTaskEntityWorkItem").await?;
        Err(not_served("AbandonTaskEntityWorkItem", ENTITIES))
    }
}

/// Why the entity RPCs are not served.
const ENTITIES: &str = "durable has no durable entities; no entity work is ever handed out";
