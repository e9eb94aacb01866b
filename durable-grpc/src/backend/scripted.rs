//! A scripted sidecar for the unit tests: records what it is sent, answers
//! from a script; and the fixtures the tests share.

use crate::proto;
use crate::proto::task_hub_sidecar_service_server::{
    TaskHubSidecarService, TaskHubSidecarServiceServer,
};
use crate::{convert, GrpcOptions};
use durable_runtime::history::{EventKind, HistoryEvent};
use futures::StreamExt;
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::wrappers::TcpListenerStream;
use tonic::{Request, Response, Status};

/// What the sidecar was sent.
#[derive(Default)]
pub(super) struct Seen {
    pub(super) headers: Vec<(String, Option<String>, Option<String>)>,
    pub(super) api_tokens: Vec<Option<String>>,
    pub(super) completions: Vec<proto::OrchestratorResponse>,
    pub(super) activity_completions: Vec<proto::ActivityResponse>,
    pub(super) abandoned: Vec<String>,
    pub(super) stream_requests: Vec<proto::GetWorkItemsRequest>,
    pub(super) streams_closed: usize,
    pub(super) terminated: Vec<proto::TerminateRequest>,
    pub(super) purged: Vec<proto::PurgeInstancesRequest>,
    pub(super) started: Vec<proto::CreateInstanceRequest>,
}

/// Counts, in `Seen`, work-item streams the client went away from.
struct ClosedOnDrop(Arc<Mutex<Seen>>);

impl Drop for ClosedOnDrop {
    fn drop(&mut self) {
        if let Ok(mut seen) = self.0.lock() {
            seen.streams_closed += 1;
        }
    }
}

/// The sidecar; clones share its script and what it saw.
#[derive(Clone, Default)]
pub(super) struct Sidecar {
    pub(super) seen: Arc<Mutex<Seen>>,
    pub(super) work: Arc<Mutex<Vec<proto::WorkItem>>>,
    pub(super) history: Arc<Mutex<Vec<proto::HistoryEvent>>>,
    /// What `StreamInstanceHistory` fails with, if it fails.
    pub(super) history_error: Arc<Mutex<Option<tonic::Code>>>,
    /// Whether `StreamInstanceHistory` answers and then sends nothing.
    pub(super) history_stalls: Arc<Mutex<bool>>,
    /// The status `GetInstance` reports (`None`: no such instance).
    pub(super) instance_status: Arc<Mutex<Option<proto::OrchestrationStatus>>>,
    /// What the next `CompleteOrchestratorTask` calls fail with, first
    /// first; a call finding it empty succeeds. Failed calls are recorded
    /// in `Seen::completions` too.
    pub(super) completion_refusals: Arc<Mutex<VecDeque<Status>>>,
}

impl Sidecar {
    fn record<T>(&self, call: &str, req: &Request<T>) {
        let get = |k: &str| {
            req.metadata()
                .get(k)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let mut seen = self.seen.lock().unwrap();
        seen.headers
            .push((call.to_string(), get("taskhub"), get("authorization")));
        seen.api_tokens.push(get("dapr-api-token"));
    }

    pub(super) async fn serve(self) -> SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TaskHubSidecarServiceServer::new(self))
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        addr
    }
}

#[tonic::async_trait]
impl TaskHubSidecarService for Sidecar {
    async fn hello(&self, req: Request<()>) -> Result<Response<()>, Status> {
        self.record("hello", &req);
        Ok(Response::new(()))
    }

    async fn get_instance(
        &self,
        req: Request<proto::GetInstanceRequest>,
    ) -> Result<Response<proto::GetInstanceResponse>, Status> {
        self.record("get_instance", &req);
        let status = *self.instance_status.lock().unwrap();
        Ok(Response::new(proto::GetInstanceResponse {
            exists: status.is_some(),
            orchestration_state: status.map(|status| proto::OrchestrationState {
                instance_id: req.get_ref().instance_id.clone(),
                name: "o".into(),
                orchestration_status: status as i32,
                ..Default::default()
            }),
        }))
    }

    async fn start_instance(
        &self,
        req: Request<proto::CreateInstanceRequest>,
    ) -> Result<Response<proto::CreateInstanceResponse>, Status> {
        self.record("start_instance", &req);
        let req = req.into_inner();
        // As sidecars do: no id, and one is made up.
        let instance_id = match req.instance_id.as_str() {
            "" => "made-up-id".to_string(),
            id => id.to_string(),
        };
        self.seen.lock().unwrap().started.push(req);
        Ok(Response::new(proto::CreateInstanceResponse { instance_id }))
    }

    async fn terminate_instance(
        &self,
        req: Request<proto::TerminateRequest>,
    ) -> Result<Response<proto::TerminateResponse>, Status> {
        self.record("terminate_instance", &req);
        self.seen.lock().unwrap().terminated.push(req.into_inner());
        Ok(Response::new(proto::TerminateResponse {}))
    }

    async fn purge_instances(
        &self,
        req: Request<proto::PurgeInstancesRequest>,
    ) -> Result<Response<proto::PurgeInstancesResponse>, Status> {
        self.record("purge_instances", &req);
        self.seen.lock().unwrap().purged.push(req.into_inner());
        Ok(Response::new(proto::PurgeInstancesResponse {
            deleted_instance_count: 3,
            is_complete: Some(true),
        }))
    }

    async fn get_work_items(
        &self,
        req: Request<proto::GetWorkItemsRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<proto::WorkItem>>, Status> {
        self.record("get_work_items", &req);
        self.seen
            .lock()
            .unwrap()
            .stream_requests
            .push(req.get_ref().clone());
        let items: Vec<_> = std::mem::take(&mut *self.work.lock().unwrap());
        let closed = ClosedOnDrop(self.seen.clone());
        let stream = futures::stream::iter(items.into_iter().map(Ok))
            .chain(futures::stream::pending())
            .map(move |item| {
                let _ = &closed;
                item
            });
        Ok(Response::new(Box::pin(stream)))
    }

    async fn complete_orchestrator_task(
        &self,
        req: Request<proto::OrchestratorResponse>,
    ) -> Result<Response<proto::CompleteTaskResponse>, Status> {
        self.record("complete_orchestrator_task", &req);
        self.seen.lock().unwrap().completions.push(req.into_inner());
        match self.completion_refusals.lock().unwrap().pop_front() {
            Some(status) => Err(status),
            None => Ok(Response::new(proto::CompleteTaskResponse {})),
        }
    }

    async fn complete_activity_task(
        &self,
        req: Request<proto::ActivityResponse>,
    ) -> Result<Response<proto::CompleteTaskResponse>, Status> {
        self.record("complete_activity_task", &req);
        self.seen
            .lock()
            .unwrap()
            .activity_completions
            .push(req.into_inner());
        Ok(Response::new(proto::CompleteTaskResponse {}))
    }

    async fn stream_instance_history(
        &self,
        req: Request<proto::StreamInstanceHistoryRequest>,
    ) -> Result<Response<tonic::codegen::BoxStream<proto::HistoryChunk>>, Status> {
        self.record("stream_instance_history", &req);
        if let Some(code) = *self.history_error.lock().unwrap() {
            return Err(Status::new(code, "scripted failure"));
        }
        if *self.history_stalls.lock().unwrap() {
            return Ok(Response::new(Box::pin(futures::stream::pending())));
        }
        // Two chunks, to show they are put together in order.
        let events = self.history.lock().unwrap().clone();
        let (a, b) = events.split_at(events.len() / 2);
        let chunks = vec![
            Ok(proto::HistoryChunk { events: a.to_vec() }),
            Ok(proto::HistoryChunk { events: b.to_vec() }),
        ];
        Ok(Response::new(Box::pin(futures::stream::iter(chunks))))
    }

    async fn abandon_task_orchestrator_work_item(
        &self,
        req: Request<proto::AbandonOrchestrationTaskRequest>,
    ) -> Result<Response<proto::AbandonOrchestrationTaskResponse>, Status> {
        self.seen
            .lock()
            .unwrap()
            .abandoned
            .push(req.into_inner().completion_token);
        Ok(Response::new(proto::AbandonOrchestrationTaskResponse {}))
    }
}

/// A work item whose history must be fetched, followed by an activity.
pub(super) fn streamed_item_then_activity() -> Vec<proto::WorkItem> {
    vec![
        proto::WorkItem {
            request: Some(proto::work_item::Request::OrchestratorRequest(
                proto::OrchestratorRequest {
                    instance_id: "streamed".into(),
                    execution_id: Some("e".into()),
                    past_events: vec![],
                    new_events: vec![convert::event_to_proto(&HistoryEvent::new(
                        chrono::DateTime::UNIX_EPOCH,
                        EventKind::OrchestratorStarted,
                    ))],
                    requires_history_streaming: true,
                    orchestration_trace_context: None,
                },
            )),
            completion_token: "orch-token".into(),
        },
        activity_item(),
    ]
}

/// An activity work item for activity "a", token "act-token".
pub(super) fn activity_item() -> proto::WorkItem {
    proto::WorkItem {
        request: Some(proto::work_item::Request::ActivityRequest(
            proto::ActivityRequest {
                name: "a".into(),
                version: None,
                input: None,
                orchestration_instance: None,
                task_id: 0,
                parent_trace_context: None,
                tags: Default::default(),
            },
        )),
        completion_token: "act-token".into(),
    }
}

/// Options for a sidecar at `addr` that retry within milliseconds.
pub(super) fn quick_retries(addr: SocketAddr) -> GrpcOptions {
    GrpcOptions::new(format!("http://{addr}")).reconnect(crate::ReconnectPolicy {
        initial_delay: Duration::from_millis(1),
        max_delay: Duration::from_millis(5),
        multiplier: 2.0,
    })
}

/// Waits (boundedly) until `done` holds of what the sidecar saw.
pub(super) async fn until(sidecar: &Sidecar, what: &str, done: impl Fn(&Seen) -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !done(&sidecar.seen.lock().unwrap()) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting: {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
