//! When the work-item stream runs: a waiting `next_*` call opens it (starts
//! the pump); it is closed once no worker asks any more, and what it
//! brought that no worker took is given back, so that other workers get it
//! now rather than when the sidecar's lease expires.

use super::completion::give_back;
use super::pump::run_pump;
use super::{GrpcBackend, Inner};
use durable_runtime::backend::BackendError;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, Mutex};

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
    pub(super) fn stop_pump(&self) {
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

impl GrpcBackend {
    /// Waits for the next item of `queue`, (re)opening the work-item stream
    /// first and again whenever it is closed under the wait.
    pub(super) async fn next_item<T>(
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

    /// Starts the pump if it is not running.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::scripted::{self, streamed_item_then_activity, until};
    use crate::{convert, proto, GrpcOptions};
    use durable_runtime::backend::Backend;
    use durable_runtime::history::{EventKind, HistoryEvent};

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
                        orchestration_trace_context: None,
                    },
                )),
                completion_token: "orch-token".into(),
            },
            scripted::activity_item(),
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
