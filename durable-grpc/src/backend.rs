//! [`GrpcBackend`]: the [`Backend`] trait spoken over `TaskHubSidecarService`.
//!
//! Client calls map one to one onto unary RPCs. The worker side is one
//! long-lived `GetWorkItems` stream owned by a background task, which sorts
//! the items into an orchestration queue and an activity queue (what
//! [`Backend::next_orchestration_item`] and [`Backend::next_activity_item`]
//! wait on) and reopens the stream with capped, jittered exponential backoff
//! whenever it breaks, e.g. when the sidecar restarts.

use crate::convert::{self, ConvertError};
use crate::options::{GrpcOptions, ReconnectPolicy, TokenProvider};
use crate::proto;
use crate::proto::task_hub_sidecar_service_client::TaskHubSidecarServiceClient;
use async_trait::async_trait;
use durable_runtime::actions::{ActionKind, OrchestratorAction, OrchestratorResult};
use durable_runtime::backend::{
    ActivityOutcome, ActivityWorkItem, Backend, BackendError, CreateInstanceRequest,
    InstanceMetadata, InstanceQuery, OrchestrationWorkItem, PurgeTarget, QueryPage, WaitFor,
};
use durable_runtime::history::{
    self, FailureDetails, HistoryEvent, OrchestrationStatus, SubOrchestration,
};
use futures::future::BoxFuture;
use prost::Message;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex as StdMutex};
use std::time::Duration;
use tokio::sync::{mpsc, Mutex, Notify};
use tokio::task::JoinHandle;
use tonic::metadata::{Ascii, MetadataKey, MetadataValue};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};
use tonic::{Code, Request, Status};

/// How long [`Backend::suspend`] and [`Backend::resume`] wait for the
/// sidecar to report the new status before returning anyway.
const SUSPEND_SETTLE: Duration = Duration::from_secs(5);

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
}

impl Inner {
    /// Items received but never handed to a worker: the stream leased them
    /// to us. Taken out of the queues, for giving back.
    fn drain_untaken(&self) -> (Vec<String>, Vec<String>) {
        let mut orchestrations = Vec::new();
        let mut activities = Vec::new();
        if let Ok(mut rx) = self.orchestrations.try_lock() {
            while let Ok(item) = rx.try_recv() {
                orchestrations.push(item.completion_token);
            }
        }
        if let Ok(mut rx) = self.activities.try_lock() {
            while let Ok(item) = rx.try_recv() {
                activities.push(item.completion_token);
            }
        }
        (orchestrations, activities)
    }

    /// Closes the work-item stream and gives back what it brought that no
    /// worker took, so other workers get it now rather than when (and if)
    /// the sidecar's lease expires.
    fn stop_pump(&self) {
        if let Ok(mut pump) = self.pump.lock() {
            if let Some(handle) = pump.take() {
                handle.abort();
            }
        }
        self.stream_closed.notify_waiters();
        let (orchestrations, activities) = self.drain_untaken();
        if orchestrations.is_empty() && activities.is_empty() {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        runtime.spawn(give_back(self.rpc.clone(), orchestrations, activities));
    }
}

async fn give_back(rpc: Rpc, orchestrations: Vec<String>, activities: Vec<String>) {
    for completion_token in orchestrations {
        let msg = proto::AbandonOrchestrationTaskRequest { completion_token };
        if let Ok(req) = rpc.request(msg, "an abandon request").await {
            let _ = rpc.client().abandon_task_orchestrator_work_item(req).await;
        }
    }
    for completion_token in activities {
        let msg = proto::AbandonActivityTaskRequest { completion_token };
        if let Ok(req) = rpc.request(msg, "an abandon request").await {
            let _ = rpc.client().abandon_task_activity_work_item(req).await;
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop_pump();
    }
}

/// How long the stream stays open after the last waiting `next_*` call was
/// cancelled (a worker shutting down) with no new call. Workers cancel a
/// waiting call only when they stop, so this can be short.
const IDLE_GRACE: Duration = Duration::from_millis(250);

/// Counts a waiting `next_*` call. A call cancelled rather than answered,
/// followed by no other call for [`IDLE_GRACE`], means the worker stopped:
/// the stream is closed so it stops taking work no one will do (it reopens
/// on the next call).
struct Waiting {
    inner: Arc<Inner>,
    answered: bool,
}

impl Waiting {
    fn new(inner: &Arc<Inner>) -> Waiting {
        inner.waiting.fetch_add(1, Ordering::SeqCst);
        inner.calls.fetch_add(1, Ordering::SeqCst);
        Waiting {
            inner: inner.clone(),
            answered: false,
        }
    }
}

impl Drop for Waiting {
    fn drop(&mut self) {
        let left = self.inner.waiting.fetch_sub(1, Ordering::SeqCst) - 1;
        if self.answered || left > 0 {
            return;
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let calls = self.inner.calls.load(Ordering::SeqCst);
        let inner = Arc::downgrade(&self.inner);
        runtime.spawn(async move {
            tokio::time::sleep(IDLE_GRACE).await;
            if let Some(inner) = inner.upgrade() {
                if inner.waiting.load(Ordering::SeqCst) == 0
                    && inner.calls.load(Ordering::SeqCst) == calls
                {
                    tracing::debug!("no worker is asking for work; closing the work-item stream");
                    inner.stop_pump();
                }
            }
        });
    }
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

    /// Waits for the next item of `queue`, (re)opening the work-item stream
    /// first and again whenever it is closed under the wait.
    async fn next_item<T>(
        &self,
        queue: &Mutex<mpsc::UnboundedReceiver<T>>,
    ) -> Result<T, BackendError> {
        let mut waiting = Waiting::new(&self.inner);
        let mut rx = queue.lock().await;
        loop {
            let closed = self.inner.stream_closed.notified();
            tokio::pin!(closed);
            // Registered before the stream is opened, so a close from now on
            // is seen.
            closed.as_mut().enable();
            self.ensure_pump();
            tokio::select! {
                item = rx.recv() => {
                    waiting.answered = true;
                    return item.ok_or(BackendError::Shutdown);
                }
                () = &mut closed => {}
            }
        }
    }

    fn ensure_pump(&self) {
        let Ok(mut pump) = self.inner.pump.lock() else {
            return;
        };
        if pump.is_none() {
            *pump = Some(tokio::spawn(run_pump(
                self.inner.rpc.clone(),
                self.inner.options.clone(),
                self.inner.orchestration_tx.clone(),
                self.inner.activity_tx.clone(),
            )));
        }
    }
}

/// What every call needs: the channel, the headers and the limits.
#[derive(Clone)]
struct Rpc {
    client: TaskHubSidecarServiceClient<Channel>,
    endpoint: Arc<str>,
    task_hub: MetadataValue<Ascii>,
    headers: Vec<(MetadataKey<Ascii>, MetadataValue<Ascii>)>,
    token_provider: Option<Arc<dyn TokenProvider>>,
    request_timeout: Duration,
    max_message_size: usize,
}

impl Rpc {
    fn new(options: &GrpcOptions) -> Result<Self, BackendError> {
        let url = options.endpoint.trim();
        let is_https = url.starts_with("https://");
        if !is_https && !url.starts_with("http://") {
            return Err(BackendError::InvalidRequest(format!(
                "the sidecar endpoint \"{url}\" is not an http:// or https:// URL; \
                 write it like http://localhost:8080"
            )));
        }
        let mut endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| {
                BackendError::InvalidRequest(format!(
                    "the sidecar endpoint \"{url}\" is not a valid URL: {e}"
                ))
            })?
            .connect_timeout(options.connect_timeout)
            .keep_alive_timeout(options.keep_alive_timeout)
            .keep_alive_while_idle(true)
            .tcp_nodelay(true);
        if let Some(interval) = options.keep_alive_interval {
            endpoint = endpoint.http2_keep_alive_interval(interval);
        }
        if options.tls_ca_pem.is_some() && !is_https {
            return Err(BackendError::InvalidRequest(format!(
                "a CA certificate was given but the sidecar endpoint \"{url}\" is not https://; \
                 use an https:// endpoint or drop the certificate"
            )));
        }
        if is_https {
            let mut tls = ClientTlsConfig::new().with_webpki_roots();
            if let Some(pem) = &options.tls_ca_pem {
                tls = tls.ca_certificate(Certificate::from_pem(pem));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| {
                BackendError::InvalidRequest(format!("cannot set up TLS for \"{url}\": {e}"))
            })?;
        }
        let headers = options
            .headers
            .iter()
            .map(|(name, value)| {
                let key = MetadataKey::from_bytes(name.as_bytes()).map_err(|_| {
                    BackendError::InvalidRequest(format!(
                        "\"{name}\" is not a valid header name; use lowercase ASCII letters, \
                         digits and dashes"
                    ))
                })?;
                let value = value.parse::<MetadataValue<Ascii>>().map_err(|_| {
                    BackendError::InvalidRequest(format!(
                        "the value of header \"{name}\" cannot be sent (non-ASCII or control \
                         characters)"
                    ))
                })?;
                Ok((key, value))
            })
            .collect::<Result<Vec<_>, BackendError>>()?;
        let task_hub = options
            .task_hub
            .parse::<MetadataValue<Ascii>>()
            .map_err(|_| {
                BackendError::InvalidRequest(format!(
                    "the task hub name \"{}\" cannot be sent as a header; use ASCII letters, \
                 digits and dashes",
                    options.task_hub
                ))
            })?;
        let client = TaskHubSidecarServiceClient::new(endpoint.connect_lazy())
            .max_decoding_message_size(options.max_incoming_message_size)
            .max_encoding_message_size(options.max_message_size);
        Ok(Rpc {
            client,
            endpoint: url.into(),
            task_hub,
            headers,
            token_provider: options.token_provider.clone(),
            request_timeout: options.request_timeout,
            max_message_size: options.max_message_size,
        })
    }

    fn client(&self) -> TaskHubSidecarServiceClient<Channel> {
        self.client.clone()
    }

    /// Wraps a message with the task hub, the bearer token and the default
    /// deadline, refusing it before it is sent if it is over the size limit.
    async fn request<T: Message>(
        &self,
        message: T,
        what: &str,
    ) -> Result<Request<T>, BackendError> {
        // 5 bytes of gRPC framing precede every message.
        let size = message.encoded_len() + 5;
        if size > self.max_message_size {
            return Err(BackendError::PayloadTooLarge {
                what: what.to_string(),
                size,
                limit: self.max_message_size,
            });
        }
        let mut request = Request::new(message);
        request.set_timeout(self.request_timeout);
        let metadata = request.metadata_mut();
        metadata.insert("taskhub", self.task_hub.clone());
        for (key, value) in &self.headers {
            metadata.insert(key.clone(), value.clone());
        }
        if let Some(provider) = &self.token_provider {
            let token = provider.token().await.map_err(|e| {
                BackendError::Unavailable(format!(
                    "could not get a bearer token for the sidecar at {}: {e}",
                    self.endpoint
                ))
            })?;
            let value = format!("Bearer {token}")
                .parse::<MetadataValue<Ascii>>()
                .map_err(|_| {
                    BackendError::InvalidRequest(
                        "the bearer token provider returned text that cannot be sent as a \
                         header (non-ASCII or control characters)"
                            .to_string(),
                    )
                })?;
            metadata.insert("authorization", value);
        }
        Ok(request)
    }

    /// Maps a gRPC status to a backend error. `instance` names the instance
    /// the call was about, for `NotFound`.
    fn error(&self, status: Status, instance: Option<&str>) -> BackendError {
        map_status(&self.endpoint, status, instance)
    }

    async fn get_instance(
        &self,
        instance_id: &str,
        with_payloads: bool,
    ) -> Result<Option<InstanceMetadata>, BackendError> {
        let req = self
            .request(
                proto::GetInstanceRequest {
                    instance_id: instance_id.to_string(),
                    get_inputs_and_outputs: with_payloads,
                },
                "a status query",
            )
            .await?;
        let resp = self
            .client()
            .get_instance(req)
            .await
            .map_err(|s| self.error(s, Some(instance_id)))?
            .into_inner();
        instance_from_response(resp, with_payloads)
    }

    /// The instance, or `NotFound`; `InvalidState` if it has finished and
    /// `op` needs it live. Sidecars differ in how they answer operations on
    /// missing or finished instances (some accept and ignore them), so the
    /// backend asks first and answers as durable's other backends do.
    async fn require_instance(
        &self,
        instance_id: &str,
        op: Option<&'static str>,
    ) -> Result<InstanceMetadata, BackendError> {
        let m = self
            .get_instance(instance_id, false)
            .await?
            .ok_or_else(|| BackendError::NotFound(instance_id.to_string()))?;
        match op {
            Some(operation) if m.status.is_terminal() => Err(BackendError::InvalidState {
                id: instance_id.to_string(),
                operation,
                status: m.status,
            }),
            _ => Ok(m),
        }
    }

    /// After a suspend or resume: waits (up to [`SUSPEND_SETTLE`]) while the
    /// instance still has the status `from`. Some sidecars record the new
    /// status only once a worker has handled the request; waiting here means
    /// a status read right after the call sees it, as with durable's other
    /// backends, and a suspend right after a resume (or the reverse) is not
    /// taken for a repeat by a sidecar that ignores repeats.
    async fn settle(
        &self,
        instance_id: &str,
        from: OrchestrationStatus,
    ) -> Result<(), BackendError> {
        let deadline = tokio::time::Instant::now() + SUSPEND_SETTLE;
        let mut pause = Duration::from_millis(5);
        while tokio::time::Instant::now() < deadline {
            match self.get_instance(instance_id, false).await? {
                Some(m) if m.status == from => {}
                _ => break,
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
        Ok(())
    }

    /// The sub-orchestrations an instance started, read from its history,
    /// with whether each has finished; `None` if the sidecar cannot stream
    /// histories (Dapr, durabletask-go), in which case the recursion is left
    /// to it.
    async fn children(
        &self,
        instance_id: &str,
    ) -> Result<Option<Vec<SubOrchestration>>, BackendError> {
        match self.fetch_history(instance_id, None, false).await {
            Ok(history) => Ok(Some(history::sub_orchestrations(&history))),
            Err(ItemError::Unsupported(e)) => {
                tracing::debug!(instance_id, error = %e, "no history to find sub-orchestrations in; the sidecar's own recursion is relied on");
                Ok(None)
            }
            Err(e) => Err(e.into_inner()),
        }
    }

    /// Terminates an instance and, if `recursive`, its running
    /// sub-orchestrations. The request goes first, with `recursive` set, for
    /// sidecars that implement the recursion; it is then also done here,
    /// from the history, because not every sidecar implements it (for one
    /// that does, this finds nothing left to do, and for one that cannot
    /// stream histories it is left to the sidecar).
    fn terminate_tree<'a>(
        &'a self,
        instance_id: &'a str,
        output: Option<String>,
        recursive: bool,
    ) -> BoxFuture<'a, Result<(), BackendError>> {
        Box::pin(async move {
            let current = self.require_instance(instance_id, None).await?;
            if !current.status.is_terminal() {
                let req = self
                    .request(
                        proto::TerminateRequest {
                            instance_id: instance_id.to_string(),
                            output: output.clone(),
                            recursive,
                        },
                        "the output of a terminate request",
                    )
                    .await?;
                self.client()
                    .terminate_instance(req)
                    .await
                    .map_err(|s| self.error(s, Some(instance_id)))?;
            }
            let children: Vec<String> = if recursive {
                self.children(instance_id)
                    .await?
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|child| !child.finished)
                    .map(|child| child.instance_id)
                    .collect()
            } else {
                Vec::new()
            };
            for child in children {
                match self.terminate_tree(&child, output.clone(), true).await {
                    Ok(()) | Err(BackendError::NotFound(_)) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })
    }

    /// Purges a finished instance and, if `recursive`, its finished
    /// sub-orchestrations (done here for the same reason as termination;
    /// the history is read first, as the purge deletes it).
    fn purge_tree<'a>(
        &'a self,
        instance_id: &'a str,
        recursive: bool,
    ) -> BoxFuture<'a, Result<usize, BackendError>> {
        Box::pin(async move {
            let current = self.require_instance(instance_id, None).await?;
            if !current.status.is_terminal() {
                return Err(BackendError::InvalidState {
                    id: instance_id.to_string(),
                    operation: "purge",
                    status: current.status,
                });
            }
            let children: Vec<String> = if recursive {
                self.children(instance_id)
                    .await?
                    .unwrap_or_default()
                    .into_iter()
                    .map(|child| child.instance_id)
                    .collect()
            } else {
                Vec::new()
            };
            let req = self
                .request(
                    convert::purge_to_proto(
                        &PurgeTarget::Instance(instance_id.to_string()),
                        recursive,
                    ),
                    "a purge request",
                )
                .await?;
            let resp = self
                .client()
                .purge_instances(req)
                .await
                .map_err(|s| self.error(s, Some(instance_id)))?
                .into_inner();
            let mut count = usize::try_from(resp.deleted_instance_count).unwrap_or(0);
            for child in children {
                match self.purge_tree(&child, true).await {
                    Ok(n) => count += n,
                    Err(BackendError::NotFound(_) | BackendError::InvalidState { .. }) => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(count)
        })
    }

    async fn history(
        &self,
        instance_id: &str,
        execution_id: Option<String>,
        for_work_item: bool,
    ) -> Result<Vec<HistoryEvent>, BackendError> {
        self.fetch_history(instance_id, execution_id, for_work_item)
            .await
            .map_err(ItemError::into_inner)
    }

    /// The history of an instance, telling a history durable cannot read
    /// from a call that failed.
    async fn fetch_history(
        &self,
        instance_id: &str,
        execution_id: Option<String>,
        for_work_item: bool,
    ) -> Result<Vec<HistoryEvent>, ItemError> {
        let mut req = self
            .request(
                proto::StreamInstanceHistoryRequest {
                    instance_id: instance_id.to_string(),
                    execution_id,
                    for_work_item_processing: for_work_item,
                },
                "a history query",
            )
            .await
            .map_err(ItemError::Fetch)?;
        // A history can be long: the stream gets no overall deadline, but
        // each step must come within the request timeout, so a stalled
        // sidecar is noticed.
        req.metadata_mut().remove("grpc-timeout");
        let stalled = || {
            ItemError::Fetch(BackendError::Unavailable(format!(
                "the sidecar at {} sent nothing of the history of instance \"{instance_id}\" \
                 for {:?} (the request timeout); it may be overloaded",
                self.endpoint, self.request_timeout
            )))
        };
        let mut stream = tokio::time::timeout(
            self.request_timeout,
            self.client().stream_instance_history(req),
        )
        .await
        .map_err(|_| stalled())?
        .map_err(|s| match s.code() {
            Code::Unimplemented => ItemError::Unsupported(BackendError::Other(format!(
                "the sidecar at {} does not implement StreamInstanceHistory (Dapr and \
                 durabletask-go do not), so durable cannot read the history of instance \
                 \"{instance_id}\" through it",
                self.endpoint
            ))),
            _ => ItemError::Fetch(self.error(s, Some(instance_id))),
        })?
        .into_inner();
        let mut events = Vec::new();
        while let Some(chunk) = tokio::time::timeout(self.request_timeout, stream.message())
            .await
            .map_err(|_| stalled())?
            .map_err(|s| ItemError::Fetch(self.error(s, Some(instance_id))))?
        {
            events.extend(convert::events_from_proto(chunk.events).map_err(|e| {
                ItemError::Unreadable(unreadable("the history of", instance_id, e))
            })?);
        }
        Ok(events)
    }
}

/// Why an orchestration work item (or a history) could not be had.
#[derive(Debug)]
enum ItemError {
    /// The sidecar sent something durable cannot read; asking again would
    /// bring the same.
    Unreadable(BackendError),
    /// A call failed (the sidecar unreachable, restarting, stalled, the
    /// instance briefly missing...); asking again later may work.
    Fetch(BackendError),
    /// The sidecar does not implement `StreamInstanceHistory`.
    Unsupported(BackendError),
}

impl ItemError {
    fn into_inner(self) -> BackendError {
        match self {
            ItemError::Unreadable(e) | ItemError::Fetch(e) | ItemError::Unsupported(e) => e,
        }
    }
}

fn instance_from_response(
    resp: proto::GetInstanceResponse,
    with_payloads: bool,
) -> Result<Option<InstanceMetadata>, BackendError> {
    if !resp.exists {
        return Ok(None);
    }
    let Some(state) = resp.orchestration_state else {
        return Ok(None);
    };
    let id = state.instance_id.clone();
    let metadata =
        convert::metadata_from_proto(state).map_err(|e| unreadable("the status of", &id, e))?;
    Ok(Some(if with_payloads {
        metadata
    } else {
        metadata.without_payloads()
    }))
}

fn unreadable(what: &str, instance_id: &str, e: ConvertError) -> BackendError {
    BackendError::Other(format!(
        "the sidecar sent {what} instance \"{instance_id}\" in a form durable cannot read: {e}"
    ))
}

/// Maps a gRPC status to a [`BackendError`] that says what to do next.
fn map_status(endpoint: &str, status: Status, instance: Option<&str>) -> BackendError {
    let message = status.message().to_string();
    match status.code() {
        Code::NotFound => match instance {
            Some(id) => BackendError::NotFound(id.to_string()),
            None => BackendError::Other(format!("the sidecar reported not found: {message}")),
        },
        // A connection that drops in the middle of a call surfaces from the
        // HTTP/2 layer as `Unknown: transport error`, not `Unavailable`.
        Code::Unknown if status.message().contains("transport error") => {
            BackendError::Unavailable(format!(
                "lost the connection to the sidecar at {endpoint} ({}); check that it is \
                 running and listening there, or point the endpoint option (ENDPOINT) at it",
                describe_transport_error(&status)
            ))
        }
        Code::Unavailable => BackendError::Unavailable(format!(
            "cannot reach the sidecar at {endpoint} ({}); check that it is running and \
             listening there, or point the endpoint option (ENDPOINT) at it",
            describe_transport_error(&status)
        )),
        Code::Unauthenticated | Code::PermissionDenied => BackendError::Unavailable(format!(
            "the sidecar at {endpoint} refused the credentials ({message}); check the bearer \
             token provider and the task hub name"
        )),
        Code::ResourceExhausted => match parse_size_limit(&message) {
            Some((size, limit)) => BackendError::PayloadTooLarge {
                what: "a message to the sidecar".to_string(),
                size,
                limit,
            },
            None => BackendError::Other(format!(
                "the sidecar at {endpoint} refused the call for lack of resources: {message}"
            )),
        },
        Code::OutOfRange if is_incoming_too_large(&status) => match parse_incoming_size(&message) {
            Some((size, limit)) => BackendError::PayloadTooLarge {
                what: "a message from the sidecar (raise the max_incoming_message_size \
                           option)"
                    .to_string(),
                size,
                limit,
            },
            None => BackendError::Other(message),
        },
        Code::InvalidArgument | Code::OutOfRange => BackendError::InvalidRequest(message),
        Code::Unimplemented => BackendError::Other(format!(
            "the sidecar at {endpoint} does not implement this call ({message}); it may speak \
             an older version of the protocol"
        )),
        Code::Cancelled if message.contains("Timeout expired") => {
            BackendError::Other(format!("the call to the sidecar at {endpoint} timed out"))
        }
        // What a call in flight gets when the connection drops under it.
        Code::Cancelled => BackendError::Unavailable(format!(
            "the connection to the sidecar at {endpoint} was lost ({}); it may have \
             restarted, so retry the call",
            describe_transport_error(&status)
        )),
        code => BackendError::Other(format!(
            "the sidecar at {endpoint} answered {code:?}: {message}"
        )),
    }
}

/// The useful part of a transport failure: tonic nests the cause (refused
/// connection, DNS failure, TLS error) in the status's source chain.
fn describe_transport_error(status: &Status) -> String {
    let mut parts = vec![status.message().to_string()];
    let mut source: Option<&dyn std::error::Error> = std::error::Error::source(status);
    while let Some(e) = source {
        let text = e.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = e.source();
    }
    parts.retain(|p| !p.is_empty());
    parts.join(": ")
}

/// Whether a status is tonic refusing a received message over
/// [`GrpcOptions::max_incoming_message_size`].
fn is_incoming_too_large(status: &Status) -> bool {
    status.code() == Code::OutOfRange
        && status
            .message()
            .contains("decoded message length too large")
}

/// Reads sizes out of tonic's "found X bytes, the limit is: Y bytes".
fn parse_incoming_size(message: &str) -> Option<(usize, usize)> {
    let number_after = |key: &str| -> Option<usize> {
        let rest = &message[message.find(key)? + key.len()..];
        rest.split_whitespace().next()?.parse().ok()
    };
    Some((number_after("found ")?, number_after("the limit is: ")?))
}

/// Reads sizes out of gRPC's "larger than max (X vs. Y)" messages.
fn parse_size_limit(message: &str) -> Option<(usize, usize)> {
    let start = message.find('(')?;
    let end = message[start..].find(')')? + start;
    let mut parts = message[start + 1..end].split(" vs. ");
    let size = parts.next()?.trim().parse().ok()?;
    let limit = parts.next()?.trim().parse().ok()?;
    Some((size, limit))
}

// ---- the work-item stream ----

async fn run_pump(
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
                    versions: vec![],
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
        });
    let request = proto::GetWorkItemsRequest {
        max_concurrent_orchestration_work_items: i32::try_from(
            options.max_concurrent_orchestrations,
        )
        .unwrap_or(i32::MAX),
        max_concurrent_activity_work_items: i32::try_from(options.max_concurrent_activities)
            .unwrap_or(i32::MAX),
        max_concurrent_entity_work_items: 0,
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
        Some(R::HealthPing(_)) => {}
        None => {
            tracing::warn!("the sidecar sent a work item of a kind durable does not support (entities?); ignoring it");
        }
    }
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

/// Completes an episode as a non-retriable failure of its orchestration,
/// in place of whatever the episode would have done.
async fn fail_orchestration(
    rpc: &Rpc,
    instance_id: &str,
    token: String,
    failure: FailureDetails,
) -> Result<(), BackendError> {
    let action = OrchestratorAction {
        id: -1,
        kind: ActionKind::CompleteOrchestration {
            status: OrchestrationStatus::Failed,
            result: None,
            failure: Some(FailureDetails {
                non_retriable: true,
                ..failure
            }),
            new_version: None,
            carryover_events: vec![],
        },
    };
    let response = proto::OrchestratorResponse {
        instance_id: instance_id.to_string(),
        actions: vec![convert::action_to_proto(&action)],
        custom_status: None,
        completion_token: token,
    };
    let req = rpc.request(response, "an orchestration result").await?;
    rpc.client()
        .complete_orchestrator_task(req)
        .await
        .map_err(|s| lease_error(rpc, s, instance_id))?;
    Ok(())
}

/// The failure standing in for a result too large to send, as durable's
/// other backends record it.
fn too_large_failure(error: &BackendError) -> FailureDetails {
    FailureDetails {
        non_retriable: true,
        ..FailureDetails::new("PayloadTooLarge", error.to_string())
    }
}

async fn send_activity_response(
    rpc: &Rpc,
    item: &ActivityWorkItem,
    result: Option<String>,
    failure_details: Option<proto::TaskFailureDetails>,
    what: &str,
) -> Result<(), BackendError> {
    let req = rpc
        .request(
            proto::ActivityResponse {
                instance_id: item.instance_id.clone(),
                task_id: item.task_id,
                result,
                failure_details,
                completion_token: item.completion_token.clone(),
            },
            what,
        )
        .await?;
    rpc.client()
        .complete_activity_task(req)
        .await
        .map_err(|s| lease_error(rpc, s, &item.instance_id))?;
    Ok(())
}

fn lease_error(rpc: &Rpc, status: Status, instance_id: &str) -> BackendError {
    match status.code() {
        Code::NotFound | Code::FailedPrecondition | Code::Aborted => {
            BackendError::LeaseLost(format!("instance \"{instance_id}\": {}", status.message()))
        }
        _ => rpc.error(status, Some(instance_id)),
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
        let rpc = &self.inner.rpc;
        let id = request.instance_id.clone();
        let what = format!("the input of orchestration \"{}\"", request.name);
        let message = proto::CreateInstanceRequest {
            instance_id: request.instance_id,
            name: request.name,
            version: request.version,
            input: request.input,
            scheduled_start_timestamp: request
                .scheduled_start
                .as_ref()
                .map(convert::timestamp_to_proto),
            orchestration_id_reuse_policy: Some(proto::OrchestrationIdReusePolicy {
                replaceable_status: request
                    .reuse_policy
                    .replaceable
                    .iter()
                    .map(|s| convert::status_to_proto(*s))
                    .collect(),
            }),
        };
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

    async fn complete_orchestration_item(
        &self,
        item: OrchestrationWorkItem,
        result: OrchestratorResult,
    ) -> Result<(), BackendError> {
        let rpc = &self.inner.rpc;
        let what = format!(
            "the result of an episode of instance \"{}\"",
            item.instance_id
        );
        let sent = async {
            let req = rpc
                .request(
                    proto::OrchestratorResponse {
                        instance_id: item.instance_id.clone(),
                        actions: result
                            .actions
                            .iter()
                            .map(convert::action_to_proto)
                            .collect(),
                        custom_status: result.custom_status,
                        completion_token: item.completion_token.clone(),
                    },
                    &what,
                )
                .await?;
            rpc.client()
                .complete_orchestrator_task(req)
                .await
                .map_err(|s| lease_error(rpc, s, &item.instance_id))?;
            Ok(())
        };
        match sent.await {
            // Too large for us or for the sidecar: sending it again would
            // fail again, and the worker can only log an error. Fail the
            // orchestration instead, as durable's other backends do.
            Err(e @ BackendError::PayloadTooLarge { .. }) => {
                tracing::warn!(instance_id = %item.instance_id, error = %e, "an episode's result is too large to send; failing its orchestration");
                fail_orchestration(
                    rpc,
                    &item.instance_id,
                    item.completion_token.clone(),
                    too_large_failure(&e),
                )
                .await
            }
            other => other,
        }
    }

    async fn abandon_orchestration_item(
        &self,
        item: OrchestrationWorkItem,
    ) -> Result<(), BackendError> {
        let rpc = &self.inner.rpc;
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
            .map_err(|s| lease_error(rpc, s, &item.instance_id))?;
        Ok(())
    }

    async fn next_activity_item(&self) -> Result<ActivityWorkItem, BackendError> {
        self.next_item(&self.inner.activities).await
    }

    async fn complete_activity_item(
        &self,
        item: &ActivityWorkItem,
        outcome: ActivityOutcome,
    ) -> Result<(), BackendError> {
        let rpc = &self.inner.rpc;
        let (result, failure_details) = match outcome {
            ActivityOutcome::Completed(result) => (result, None),
            ActivityOutcome::Failed(mut failure) => {
                // Sidecars tell failure from success by a non-empty message.
                if failure.message.is_empty() {
                    failure.message = if failure.error_type.is_empty() {
                        "the activity failed".to_string()
                    } else {
                        failure.error_type.clone()
                    };
                }
                (None, Some(convert::failure_to_proto(&failure)))
            }
        };
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
            .map_err(|s| lease_error(rpc, s, &item.instance_id))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use durable_runtime::history::EventKind;

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

    #[test]
    fn grpc_size_messages_are_parsed() {
        assert_eq!(
            parse_size_limit("Received message larger than max (5242885 vs. 4194304)"),
            Some((5_242_885, 4_194_304))
        );
        assert_eq!(parse_size_limit("no numbers here"), None);
        assert_eq!(parse_size_limit("weird (a vs. b)"), None);
        let e = map_status(
            "http://h:1",
            Status::out_of_range(
                "Error, decoded message length too large: found 70 bytes, the limit is: 64 bytes",
            ),
            None,
        );
        match e {
            BackendError::PayloadTooLarge { what, size, limit } => {
                assert_eq!((size, limit), (70, 64));
                assert!(what.contains("max_incoming_message_size"), "{what}");
            }
            other => panic!("expected PayloadTooLarge, got {other}"),
        }
    }

    #[test]
    fn a_connection_lost_mid_call_is_unavailable() {
        let e = map_status("http://h:1", Status::unknown("transport error"), None);
        match e {
            BackendError::Unavailable(msg) => assert!(msg.contains("http://h:1"), "{msg}"),
            other => panic!("expected Unavailable, got {other}"),
        }
        let e = map_status("http://h:1", Status::unknown("something else"), None);
        assert!(!matches!(e, BackendError::Unavailable(_)), "{e}");
    }

    #[test]
    fn statuses_map_to_errors_that_say_what_to_do() {
        let e = map_status("http://h:1", Status::not_found("x"), Some("abc"));
        assert!(matches!(e, BackendError::NotFound(id) if id == "abc"));
        let e = map_status(
            "http://h:1",
            Status::unavailable("connection refused"),
            None,
        );
        let text = e.to_string();
        assert!(matches!(e, BackendError::Unavailable(_)));
        assert!(
            text.contains("http://h:1") && text.contains("connection refused"),
            "{text}"
        );
        let e = map_status(
            "http://h:1",
            Status::resource_exhausted("Received message larger than max (10 vs. 5)"),
            None,
        );
        assert!(matches!(
            e,
            BackendError::PayloadTooLarge {
                size: 10,
                limit: 5,
                ..
            }
        ));
        let e = map_status("http://h:1", Status::unauthenticated("no token"), None);
        assert!(e.to_string().contains("bearer token"));
    }

    #[tokio::test]
    async fn bad_endpoints_and_task_hubs_are_reported_up_front() {
        assert!(GrpcBackend::new(GrpcOptions::new("https://scheduler.example:443")).is_ok());
        let e = GrpcBackend::new(GrpcOptions::new("localhost:8080")).unwrap_err();
        assert!(e.to_string().contains("http://"), "{e}");
        let e = GrpcBackend::new(GrpcOptions::new("http://localhost:1").task_hub("bad\nhub"))
            .unwrap_err();
        assert!(e.to_string().contains("task hub"), "{e}");
    }

    #[tokio::test]
    async fn oversized_requests_are_refused_before_they_are_sent() {
        let backend =
            GrpcBackend::new(GrpcOptions::new("http://127.0.0.1:9").max_message_size(1024))
                .unwrap();
        let e = backend
            .create_instance(CreateInstanceRequest {
                instance_id: "i".into(),
                name: "big".into(),
                version: None,
                input: Some(format!("\"{}\"", "x".repeat(2000))),
                scheduled_start: None,
                reuse_policy: Default::default(),
            })
            .await
            .unwrap_err();
        match e {
            BackendError::PayloadTooLarge { what, size, limit } => {
                assert_eq!(limit, 1024);
                assert!(size > 2000);
                assert!(what.contains("big"), "{what}");
            }
            other => panic!("expected PayloadTooLarge, got {other}"),
        }
    }

    /// A scripted sidecar: records what it is sent, answers from a script.
    mod scripted {
        use crate::proto;
        use crate::proto::task_hub_sidecar_service_server::{
            TaskHubSidecarService, TaskHubSidecarServiceServer,
        };
        use std::net::SocketAddr;
        use std::sync::{Arc, Mutex};
        use tokio_stream::wrappers::TcpListenerStream;
        use tonic::{Request, Response, Status};

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
                Ok(Response::new(proto::CompleteTaskResponse {}))
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
            ) -> Result<Response<tonic::codegen::BoxStream<proto::HistoryChunk>>, Status>
            {
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

        use futures::StreamExt;
    }

    #[tokio::test]
    async fn every_call_carries_the_task_hub_and_a_fresh_bearer_token() {
        let sidecar = scripted::Sidecar::default();
        let addr = sidecar.clone().serve().await;
        let calls = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = calls.clone();
        let options = GrpcOptions::new(format!("http://{addr}"))
            .task_hub("orders")
            .bearer_token(move || {
                let n = counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move { Ok::<_, std::io::Error>(format!("token-{n}")) }
            });
        let backend = GrpcBackend::connect(options).await.unwrap();
        assert_eq!(backend.get_instance("x", false).await.unwrap(), None);
        let seen = sidecar.seen.lock().unwrap();
        assert_eq!(
            seen.headers,
            vec![
                (
                    "hello".to_string(),
                    Some("orders".to_string()),
                    Some("Bearer token-0".to_string())
                ),
                (
                    "get_instance".to_string(),
                    Some("orders".to_string()),
                    Some("Bearer token-1".to_string())
                ),
            ]
        );
    }

    #[tokio::test]
    async fn extra_headers_go_on_every_call() {
        let sidecar = scripted::Sidecar::default();
        let addr = sidecar.clone().serve().await;
        let options = GrpcOptions::new(format!("http://{addr}")).header("dapr-api-token", "s3cret");
        let backend = GrpcBackend::connect(options).await.unwrap();
        assert_eq!(backend.get_instance("x", false).await.unwrap(), None);
        let seen = sidecar.seen.lock().unwrap();
        assert_eq!(seen.api_tokens, vec![Some("s3cret".to_string()); 2]);
    }

    #[tokio::test]
    async fn bad_headers_and_tls_settings_are_clear_errors() {
        let err = |o: GrpcOptions| {
            GrpcBackend::new(o)
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default()
        };
        let e = err(GrpcOptions::new("http://127.0.0.1:1").header("Bad Name", "x"));
        assert!(e.contains("\"Bad Name\" is not a valid header name"), "{e}");
        let e = err(GrpcOptions::new("http://127.0.0.1:1").header("x-key", "line\nbreak"));
        assert!(e.contains("header \"x-key\" cannot be sent"), "{e}");
        let e = err(GrpcOptions::new("http://127.0.0.1:1").tls_ca_certificate(b"pem".to_vec()));
        assert!(e.contains("not https://"), "{e}");
        let debug = format!(
            "{:?}",
            GrpcOptions::default().header("dapr-api-token", "s3cret")
        );
        assert!(
            debug.contains("dapr-api-token") && !debug.contains("s3cret"),
            "{debug}"
        );
    }

    #[tokio::test]
    async fn a_failing_token_provider_is_reported_without_calling_the_sidecar() {
        let sidecar = scripted::Sidecar::default();
        let addr = sidecar.clone().serve().await;
        let options = GrpcOptions::new(format!("http://{addr}")).bearer_token(|| async {
            Err::<String, _>(std::io::Error::other("credential expired"))
        });
        let e = GrpcBackend::connect(options).await.unwrap_err();
        assert!(e.to_string().contains("credential expired"), "{e}");
        assert!(sidecar.seen.lock().unwrap().headers.is_empty());
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
    async fn items_nobody_took_are_given_back_when_the_backend_is_dropped() {
        let sidecar = scripted::Sidecar::default();
        let started = convert::event_to_proto(&HistoryEvent::new(
            chrono::DateTime::UNIX_EPOCH,
            EventKind::OrchestratorStarted,
        ));
        *sidecar.work.lock().unwrap() = vec![
            proto::WorkItem {
                request: Some(proto::work_item::Request::OrchestratorRequest(
                    proto::OrchestratorRequest {
                        instance_id: "untaken".into(),
                        execution_id: None,
                        past_events: vec![],
                        new_events: vec![started],
                        requires_history_streaming: false,
                    },
                )),
                completion_token: "orch-token".into(),
            },
            proto::WorkItem {
                request: Some(proto::work_item::Request::ActivityRequest(
                    proto::ActivityRequest {
                        name: "a".into(),
                        version: None,
                        input: None,
                        orchestration_instance: None,
                        task_id: 0,
                    },
                )),
                completion_token: "act-token".into(),
            },
        ];
        let addr = sidecar.clone().serve().await;
        let backend = GrpcBackend::new(GrpcOptions::new(format!("http://{addr}"))).unwrap();
        // Items are queued in stream order, so once the activity is here the
        // orchestration is waiting in its queue.
        let act = tokio::time::timeout(Duration::from_secs(10), backend.next_activity_item())
            .await
            .expect("the activity arrives")
            .unwrap();
        assert_eq!(act.completion_token, "act-token");
        drop(backend);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            if sidecar.seen.lock().unwrap().abandoned == ["orch-token"] {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the untaken orchestration was not abandoned"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
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
                },
            )),
            completion_token: "tok".into(),
        }];
        let addr = sidecar.clone().serve().await;
        let backend = GrpcBackend::new(
            GrpcOptions::new(format!("http://{addr}"))
                .max_concurrent(7, 9)
                .work_item_filters(crate::WorkItemFilters {
                    orchestrations: vec!["long".into()],
                    activities: vec!["step".into()],
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
        };
        backend
            .complete_activity_item(&activity, ActivityOutcome::Completed(Some(big.clone())))
            .await
            .expect("the activity is reported, as failed");

        let episode = OrchestrationWorkItem {
            instance_id: "parent".into(),
            execution_id: "e".into(),
            past_events: Arc::new(vec![]),
            new_events: vec![],
            completion_token: "orch".into(),
        };
        let result = OrchestratorResult {
            actions: vec![OrchestratorAction {
                id: 5,
                kind: ActionKind::CompleteOrchestration {
                    status: OrchestrationStatus::Completed,
                    result: Some(big),
                    failure: None,
                    new_version: None,
                    carryover_events: vec![],
                },
            }],
            custom_status: None,
        };
        backend
            .complete_orchestration_item(episode, result)
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
        let [action] = &done.actions[..] else {
            panic!("one action, got {:?}", done.actions);
        };
        match convert::action_from_proto(action.clone()).unwrap().kind {
            ActionKind::CompleteOrchestration {
                status: OrchestrationStatus::Failed,
                result: None,
                failure: Some(f),
                ..
            } => {
                assert_eq!(f.error_type, "PayloadTooLarge");
                assert!(f.non_retriable);
                assert!(f.message.contains("parent"), "{}", f.message);
            }
            other => panic!("expected a failed completion, got {other:?}"),
        }
    }

    /// A work item whose history must be fetched, followed by an activity.
    fn streamed_item_then_activity() -> Vec<proto::WorkItem> {
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
                    },
                )),
                completion_token: "orch-token".into(),
            },
            proto::WorkItem {
                request: Some(proto::work_item::Request::ActivityRequest(
                    proto::ActivityRequest {
                        name: "a".into(),
                        version: None,
                        input: None,
                        orchestration_instance: None,
                        task_id: 0,
                    },
                )),
                completion_token: "act-token".into(),
            },
        ]
    }

    fn quick_retries(addr: std::net::SocketAddr) -> GrpcOptions {
        GrpcOptions::new(format!("http://{addr}")).reconnect(crate::ReconnectPolicy {
            initial_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            multiplier: 2.0,
        })
    }

    /// Waits (boundedly) until `done` holds of what the sidecar saw.
    async fn until(
        sidecar: &scripted::Sidecar,
        what: &str,
        done: impl Fn(&scripted::Seen) -> bool,
    ) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !done(&sidecar.seen.lock().unwrap()) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "timed out waiting: {what}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
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

    #[tokio::test]
    async fn a_worker_stopping_keeps_the_stream_of_workers_still_asking() {
        let sidecar = scripted::Sidecar::default();
        let addr = sidecar.clone().serve().await;
        let backend = GrpcBackend::new(GrpcOptions::new(format!("http://{addr}"))).unwrap();
        // Another worker on the same backend is waiting for an activity.
        let other = tokio::spawn({
            let backend = backend.clone();
            async move { backend.next_activity_item().await }
        });
        until(&sidecar, "the stream opens", |seen| {
            seen.stream_requests.len() == 1
        })
        .await;
        backend.worker_stopped().await;
        assert!(
            backend.inner.pump.lock().unwrap().is_some(),
            "the stream was closed under a waiting worker"
        );

        // Closed all the same (by hand), it is reopened for the waiting call,
        // which gets what the new stream brings.
        *sidecar.work.lock().unwrap() = streamed_item_then_activity().split_off(1);
        backend.close_work_stream();
        let act = tokio::time::timeout(Duration::from_secs(10), other)
            .await
            .expect("the waiting call is answered from a reopened stream")
            .unwrap()
            .unwrap();
        assert_eq!(act.completion_token, "act-token");
        assert_eq!(sidecar.seen.lock().unwrap().stream_requests.len(), 2);

        // With nobody asking, a stopped worker closes the stream at once.
        backend.worker_stopped().await;
        assert!(backend.inner.pump.lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn without_history_streaming_recursion_is_left_to_the_sidecar() {
        // Like Dapr and durabletask-go: no StreamInstanceHistory.
        let sidecar = scripted::Sidecar::default();
        *sidecar.history_error.lock().unwrap() = Some(Code::Unimplemented);
        *sidecar.instance_status.lock().unwrap() = Some(proto::OrchestrationStatus::Running);
        let addr = sidecar.clone().serve().await;
        let backend = GrpcBackend::new(GrpcOptions::new(format!("http://{addr}"))).unwrap();

        backend
            .terminate("parent", Some("\"stop\"".into()), true)
            .await
            .expect("terminated, the children left to the sidecar");
        *sidecar.instance_status.lock().unwrap() = Some(proto::OrchestrationStatus::Terminated);
        let purged = backend
            .purge(PurgeTarget::Instance("parent".into()), true)
            .await
            .expect("purged, the children left to the sidecar");
        assert_eq!(purged, 3, "the sidecar's count");
        {
            let seen = sidecar.seen.lock().unwrap();
            let [t] = &seen.terminated[..] else {
                panic!("one terminate request, got {:?}", seen.terminated);
            };
            assert_eq!(t.instance_id, "parent");
            assert!(t.recursive, "the sidecar is asked to recurse");
            let [p] = &seen.purged[..] else {
                panic!("one purge request, got {:?}", seen.purged);
            };
            assert!(p.recursive, "the sidecar is asked to recurse");
        }

        let e = backend.get_history("parent").await.unwrap_err();
        assert!(e.to_string().contains("StreamInstanceHistory"), "{e}");
    }

    #[tokio::test]
    async fn the_stream_closes_when_no_worker_asks_for_work_and_reopens_when_one_does() {
        let sidecar = scripted::Sidecar::default();
        let addr = sidecar.clone().serve().await;
        let backend = GrpcBackend::new(GrpcOptions::new(format!("http://{addr}"))).unwrap();
        // A worker asks, then shuts down: its pending call is cancelled.
        let asked =
            tokio::time::timeout(Duration::from_millis(200), backend.next_activity_item()).await;
        assert!(asked.is_err(), "nothing to hand out");
        let deadline = tokio::time::Instant::now() + IDLE_GRACE * 5;
        loop {
            let (closed, opened) = {
                let seen = sidecar.seen.lock().unwrap();
                (seen.streams_closed, seen.stream_requests.len())
            };
            if closed == 1 {
                assert_eq!(opened, 1);
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the stream stayed open with no worker asking"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        // The next ask opens a new stream.
        let asking = tokio::spawn({
            let backend = backend.clone();
            async move { backend.next_activity_item().await }
        });
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while sidecar.seen.lock().unwrap().stream_requests.len() < 2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no new stream was opened for the next ask"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        asking.abort();
    }
}
