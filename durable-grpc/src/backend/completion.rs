//! Finishing with work items on the sidecar's side: an activity's response,
//! an episode completed as a failure of its orchestration (in place of a
//! result that cannot be sent or read, or that the sidecar refused for
//! good), and items given back unrun.

use super::error::map_status;
use super::rpc::Rpc;
use crate::convert;
use crate::proto;
use durable_runtime::actions::{ActionKind, OrchestratorAction};
use durable_runtime::backend::{ActivityWorkItem, BackendError};
use durable_runtime::history::FailureDetails;
use tonic::{Code, Status};

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
        trace: None,
    };
    let response = proto::OrchestratorResponse {
        instance_id: instance_id.to_string(),
        actions: vec![convert::action_to_proto(&action)],
        custom_status: None,
        completion_token: token,
        orchestration_trace_context: None,
    };
    let req = rpc.request(response, "an orchestration result").await?;
    rpc.client()
        .complete_orchestrator_task(req)
        .await
        .map_err(|s| rpc.lease_error(s, instance_id))?;
    Ok(())
}

/// How many times in a row the sidecar must call one instance's episode
/// result invalid before the orchestration fails: a sidecar may also say
/// `InvalidArgument` for a passing reason (an instance it is still
/// creating, a token from before a restart), while a result it truly cannot
/// take is refused again on every replay.
pub(super) const INVALID_RESULT_REFUSALS: u32 = 3;

/// What a refusal of an episode's result means.
pub(super) enum Refusal {
    /// It would be refused again however often it is sent (the same
    /// history replays to the same result): a history or a message over the
    /// sidecar's limits. Record this failure in its place.
    ForGood(FailureDetails),
    /// The sidecar calls the result invalid: for good once it has said so
    /// [`INVALID_RESULT_REFUSALS`] times in a row, then record this failure.
    IfRepeated(FailureDetails),
    /// It may pass: a lost lease, an unreachable sidecar, a quota.
    Passing,
}

/// Classifies the sidecar's refusal of an episode's result.
pub(super) fn refusal(rpc: &Rpc, status: &Status, instance_id: &str) -> Refusal {
    let endpoint = &rpc.endpoint;
    let message = status.message();
    match status.code() {
        Code::ResourceExhausted if message.to_lowercase().contains("history") => {
            Refusal::ForGood(FailureDetails::new(
                "HistoryTooLarge",
                format!(
                    "the history of \"{instance_id}\" would grow over the sidecar's maximum \
                     history size (the sidecar at {endpoint} said: {message}); use \
                     continue_as_new to start a fresh history, or raise the sidecar's history \
                     limit"
                ),
            ))
        }
        Code::ResourceExhausted => match map_status(endpoint, status.clone(), Some(instance_id)) {
            e @ BackendError::PayloadTooLarge { .. } => Refusal::ForGood(too_large_failure(&e)),
            _ => Refusal::Passing,
        },
        Code::InvalidArgument => Refusal::IfRepeated(FailureDetails::new(
            "ResultRefused",
            format!(
                "the sidecar at {endpoint} refused the result of an episode of \
                 \"{instance_id}\" as invalid {INVALID_RESULT_REFUSALS} times in a row \
                 ({message}); it would refuse it again, so the orchestration fails; check that \
                 the sidecar supports what the orchestration does"
            ),
        )),
        _ => Refusal::Passing,
    }
}

/// Completes an episode as `failure` in place of the result the sidecar
/// refused for good. If the sidecar refuses that too, the instance cannot
/// move on: the error says so, and nothing is sent again.
pub(super) async fn fail_in_place(
    rpc: &Rpc,
    instance_id: &str,
    token: String,
    failure: FailureDetails,
) -> Result<(), BackendError> {
    tracing::warn!(instance_id, error = %failure.message, "the sidecar refused an episode's result for good; failing its orchestration");
    let refused = failure.message.clone();
    match fail_orchestration(rpc, instance_id, token, failure).await {
        Err(e @ (BackendError::LeaseLost(_) | BackendError::Unavailable(_))) => Err(e),
        Err(e) => Err(BackendError::Other(format!(
            "the sidecar refused the result of an episode of instance \"{instance_id}\" \
             ({refused}), then the failure sent in its place ({e}); the instance stays as it \
             is until the sidecar accepts a result for it (e.g. once its limit is raised)"
        ))),
        Ok(()) => Ok(()),
    }
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
        if let Some(token) = completion_token.strip_prefix(crate::convert::entities::ENTITY_TOKEN) {
            let msg = proto::AbandonEntityTaskRequest {
                completion_token: token.to_string(),
            };
            if let Ok(req) = rpc.request(msg, "an abandon request").await {
                let _ = rpc.client().abandon_task_entity_work_item(req).await;
            }
            continue;
        }
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
