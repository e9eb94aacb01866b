//! Recursive terminate and purge. Sidecars are asked to recurse, but not
//! all of them do, so the backend also walks the tree itself, finding each
//! instance's sub-orchestrations in its history (where the sidecar can
//! stream histories; where it cannot, the recursion is left to it).

use super::instance::ItemError;
use super::rpc::Rpc;
use crate::convert;
use crate::proto;
use durable_runtime::backend::{BackendError, PurgeTarget};
use durable_runtime::history::{self, SubOrchestration};
use futures::future::BoxFuture;

impl Rpc {
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
    pub(super) fn terminate_tree<'a>(
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
    pub(super) fn purge_tree<'a>(
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
}

#[cfg(test)]
mod tests {
    use crate::backend::scripted;
    use crate::proto;
    use crate::{GrpcBackend, GrpcOptions};
    use durable_runtime::backend::{Backend, PurgeTarget};
    use tonic::Code;

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
}
