//! Finishing with work items on the sidecar's side: an activity's response,
//! an episode completed as a failure of its orchestration (in place of a
//! result that cannot be sent or read), and items given back unrun.

use super::rpc::Rpc;
use crate::convert;
use crate::proto;
use durable_runtime::actions::{ActionKind, OrchestratorAction};
use durable_runtime::backend::{ActivityWorkItem, BackendError};
use durable_runtime::history::FailureDetails;

/// Sends the result or the failure of an activity; `what` names it in a
/// size error.
pub(super) async fn send_activity_response(
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
        .map_err(|s| rpc.lease_error(s, &item.instance_id))?;
    Ok(())
}

/// Completes an episode as a non-retriable failure of its orchestration,
/// in place of whatever the episode would have done.
pub(super) async fn fail_orchestration(
    rpc: &Rpc,
    instance_id: &str,
    token: String,
    failure: FailureDetails,
) -> Result<(), BackendError> {
    let action = OrchestratorAction {
        id: -1,
        kind: ActionKind::failed(FailureDetails {
            non_retriable: true,
            ..failure
        }),
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
        .map_err(|s| rpc.lease_error(s, instance_id))?;
    Ok(())
}

/// The failure standing in for a result too large to send, as durable's
/// other backends record it.
pub(super) fn too_large_failure(error: &BackendError) -> FailureDetails {
    FailureDetails {
        non_retriable: true,
        ..FailureDetails::new("PayloadTooLarge", error.to_string())
    }
}

/// Abandons the work items of these completion tokens, so that the sidecar
/// hands them to other workers; a failed abandon is let go.
pub(super) async fn give_back(rpc: Rpc, orchestrations: Vec<String>, activities: Vec<String>) {
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
