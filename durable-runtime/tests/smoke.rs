//! Quick end-to-end check of the runtime on the in-memory backend.

use durable_runtime::{
    ActivityError, Client, MemoryBackend, OrchestrationStatus, Registry, ScheduleOptions, Worker,
};
use std::sync::Arc;
use std::time::Duration;

#[tokio::test]
async fn chain_of_three() {
    let backend = Arc::new(MemoryBackend::new());
    let registry = Registry::new()
        .activity_fn("inc", |_ctx, x: i64| async move {
            Ok::<_, ActivityError>(x + 1)
        })
        .orchestrator_fn("seq", |ctx, x: i64| async move {
            let a: i64 = ctx.call_activity_by_name("inc", &x).await?;
            let b: i64 = ctx.call_activity_by_name("inc", &a).await?;
            let c: i64 = ctx.call_activity_by_name("inc", &b).await?;
            Ok(c)
        });
    let worker = Worker::new(backend.clone(), registry).start().unwrap();
    let client = Client::new(backend);
    let id = client
        .schedule_by_name("seq", &1, ScheduleOptions::default())
        .await
        .unwrap();
    let state = client
        .wait_for_completion(&id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(
        state.status(),
        OrchestrationStatus::Completed,
        "{:?}",
        state.failure()
    );
    assert_eq!(state.output::<i64>().unwrap(), 4);
    worker.shutdown().await;
}
