//! Reading an instance through the sidecar: its status (and waiting for a
//! suspend or resume to show in it) and its history, streamed in chunks,
//! telling a history durable cannot read from a call that failed.

use super::error::unreadable;
use super::rpc::Rpc;
use crate::convert;
use crate::proto;
use durable_runtime::backend::{BackendError, InstanceMetadata};
use durable_runtime::history::{HistoryEvent, OrchestrationStatus};
use std::time::Duration;
use tonic::Code;

/// How long [`Backend::suspend`](durable_runtime::backend::Backend::suspend)
/// and [`Backend::resume`](durable_runtime::backend::Backend::resume) wait
/// for the sidecar to report the new status before returning anyway.
const SUSPEND_SETTLE: Duration = Duration::from_secs(5);

impl Rpc {
    pub(super) async fn get_instance(
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
    pub(super) async fn require_instance(
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
    pub(super) async fn settle(
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

    /// The history of an instance (of `execution_id`, if given);
    /// `for_work_item` tells the sidecar it is for running an episode.
    pub(super) async fn history(
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
    pub(super) async fn fetch_history(
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
pub(super) enum ItemError {
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
    pub(super) fn into_inner(self) -> BackendError {
        match self {
            ItemError::Unreadable(e) | ItemError::Fetch(e) | ItemError::Unsupported(e) => e,
        }
    }
}

/// The instance a `GetInstance` answer describes, if it exists; its input,
/// output and custom status only `with_payloads`.
pub(super) fn instance_from_response(
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
