//! A rolling upgrade on SQLite: instances of version 1 in flight when the
//! worker restarts with versions 1 and 2 finish on version 1, new ones
//! start on version 2; a strict worker with only version 2 leaves version-1
//! work for a worker that runs it (reject) or fails it (fail).

use durable::prelude::*;
use durable::sqlite::SqliteBackend;
use durable::versioning::{FailureStrategy, MatchStrategy, VersioningOptions};
use durable::{WorkerHandle, WorkerOptions};
use std::sync::Arc;
use std::time::Duration;

#[orchestrator(name = "checkout", version = "1")]
async fn checkout_v1(
    ctx: OrchestrationContext,
    order: String,
) -> Result<String, OrchestrationError> {
    let _: () = ctx.wait_for_external_event("paid").await?;
    Ok(format!("v1 shipped {order}"))
}

#[orchestrator(name = "checkout", version = "2")]
async fn checkout_v2(
    ctx: OrchestrationContext,
    order: String,
) -> Result<String, OrchestrationError> {
    let _: () = ctx.wait_for_external_event("paid").await?;
    let version = ctx.version().unwrap_or_default();
    Ok(format!("v{version} shipped {order} with tracking"))
}

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_in_flight_finish_on_their_version_after_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("upgrade.db");

    // Before the upgrade: only version 1 is deployed.
    let backend: Arc<dyn durable::Backend> = Arc::new(SqliteBackend::open(&path).unwrap());
    let worker = Worker::new(backend.clone(), Registry::new().orchestrator(checkout_v1))
        .start()
        .unwrap();
    let client = Client::new(backend.clone());
    let old = client.schedule(checkout_v1, "a".to_string()).await.unwrap();
    client.wait_for_start(&old, WAIT).await.unwrap();
    worker.shutdown().await;
    drop(client);
    drop(backend);

    // After: both versions side by side.
    let backend: Arc<dyn durable::Backend> = Arc::new(SqliteBackend::open(&path).unwrap());
    let registry = Registry::new()
        .orchestrator(checkout_v1)
        .orchestrator(checkout_v2);
    let worker = Worker::new(backend.clone(), registry).start().unwrap();
    let client = Client::new(backend);
    let new = client.schedule(checkout_v2, "b".to_string()).await.unwrap();
    for id in [&old, &new] {
        client.raise_event(id, "paid", &()).await.unwrap();
    }
    let output = |id: String| {
        let client = &client;
        async move {
            let state = client.wait_for_completion(&id, WAIT).await.unwrap();
            assert_eq!(state.status(), OrchestrationStatus::Completed, "{state:?}");
            (
                state.metadata().version.clone(),
                state.output::<String>().unwrap(),
            )
        }
    };
    assert_eq!(
        output(old).await,
        (Some("1".to_string()), "v1 shipped a".to_string())
    );
    assert_eq!(
        output(new).await,
        (
            Some("2".to_string()),
            "v2 shipped b with tracking".to_string()
        )
    );
    worker.shutdown().await;
}

/// A version-1 instance in flight (waiting for its payment) on a fresh
/// SQLite file, and the backend it is on; no worker runs afterwards.
async fn a_v1_instance_in_flight(path: &std::path::Path) -> (Arc<dyn durable::Backend>, String) {
    let backend: Arc<dyn durable::Backend> = Arc::new(SqliteBackend::open(path).unwrap());
    let worker = Worker::new(backend.clone(), Registry::new().orchestrator(checkout_v1))
        .start()
        .unwrap();
    let client = Client::new(backend.clone());
    let id = client
        .schedule(checkout_v1, "old".to_string())
        .await
        .unwrap();
    client.wait_for_start(&id, WAIT).await.unwrap();
    worker.shutdown().await;
    (backend, id)
}

/// A worker with only version 2, matching strictly.
fn strict_v2_only(
    backend: Arc<dyn durable::Backend>,
    failure_strategy: FailureStrategy,
) -> WorkerHandle {
    let options = WorkerOptions {
        versioning: VersioningOptions {
            version: "2".into(),
            match_strategy: MatchStrategy::Strict,
            failure_strategy,
            reject_pause: Duration::from_millis(10),
            ..VersioningOptions::default()
        },
        ..WorkerOptions::default()
    };
    Worker::new(backend, Registry::new().orchestrator(checkout_v2))
        .with_options(options)
        .start()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_v2_worker_leaves_v1_work_to_a_worker_that_runs_it() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, old) = a_v1_instance_in_flight(&dir.path().join("reject.db")).await;
    let strict = strict_v2_only(backend.clone(), FailureStrategy::Reject);
    let client = Client::new(backend.clone());
    // The old instance's payment arrives first, so its episode is ready
    // before the new instance's: the strict worker is offered it and gives
    // it back, then runs the new one.
    client.raise_event(&old, "paid", &()).await.unwrap();
    let new = client
        .schedule(checkout_v2, "new".to_string())
        .await
        .unwrap();
    client.raise_event(&new, "paid", &()).await.unwrap();
    let state = client.wait_for_completion(&new, WAIT).await.unwrap();
    assert_eq!(
        state.output::<String>().unwrap(),
        "v2 shipped new with tracking"
    );
    let state = client
        .get_status(&old)
        .await
        .unwrap()
        .expect("the old instance exists");
    assert_eq!(state.status(), OrchestrationStatus::Running, "{state:?}");
    strict.shutdown().await;
    // A worker that still runs version 1 finishes it on version 1.
    let v1 = Worker::new(backend, Registry::new().orchestrator(checkout_v1))
        .start()
        .unwrap();
    let state = client.wait_for_completion(&old, WAIT).await.unwrap();
    assert_eq!(state.status(), OrchestrationStatus::Completed, "{state:?}");
    assert_eq!(state.output::<String>().unwrap(), "v1 shipped old");
    v1.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_strict_v2_worker_that_fails_fails_v1_work() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, old) = a_v1_instance_in_flight(&dir.path().join("fail.db")).await;
    let strict = strict_v2_only(backend.clone(), FailureStrategy::Fail);
    let client = Client::new(backend);
    client.raise_event(&old, "paid", &()).await.unwrap();
    let state = client.wait_for_completion(&old, WAIT).await.unwrap();
    assert_eq!(state.status(), OrchestrationStatus::Failed, "{state:?}");
    let failure = state.failure().expect("a failure");
    assert_eq!(failure.error_type, "VersionMismatch", "{failure:?}");
    strict.shutdown().await;
}

#[orchestrator(name = "monitor", version = "1")]
async fn monitor_v1(ctx: OrchestrationContext, round: u32) -> Result<String, OrchestrationError> {
    // An eternal orchestration moves itself to version 2 at its next round.
    ctx.continue_as_new_at_version(&(round + 1), "2")
}

#[orchestrator(name = "monitor", version = "2")]
async fn monitor_v2(ctx: OrchestrationContext, round: u32) -> Result<String, OrchestrationError> {
    Ok(format!(
        "round {round} on version {}",
        ctx.version().unwrap_or_default()
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn continue_as_new_moves_an_instance_to_a_new_version() {
    let dir = tempfile::tempdir().unwrap();
    let backend: Arc<dyn durable::Backend> =
        Arc::new(SqliteBackend::open(dir.path().join("moves.db")).unwrap());
    let registry = Registry::new()
        .orchestrator(monitor_v1)
        .orchestrator(monitor_v2);
    let worker = Worker::new(backend.clone(), registry).start().unwrap();
    let client = Client::new(backend);
    let id = client.schedule(monitor_v1, 1).await.unwrap();
    let state = client.wait_for_completion(&id, WAIT).await.unwrap();
    assert_eq!(state.output::<String>().unwrap(), "round 2 on version 2");
    assert_eq!(state.metadata().version.as_deref(), Some("2"));
    let history = client.history(&id).await.unwrap();
    let started = history.iter().find_map(|e| match &e.kind {
        durable::history::EventKind::ExecutionStarted { version, .. } => Some(version.clone()),
        _ => None,
    });
    assert_eq!(started, Some(Some("2".to_string())), "{history:?}");
    worker.shutdown().await;
}

/// Version 3 checks stock before it waits for payment: histories of
/// versions 1 and 2 do not replay on it.
#[orchestrator(name = "checkout", version = "3")]
async fn checkout_v3(
    ctx: OrchestrationContext,
    order: String,
) -> Result<String, OrchestrationError> {
    let _: () = ctx.call_activity_by_name("check_stock", &order).await?;
    let _: () = ctx.wait_for_external_event("paid").await?;
    Ok(format!("v3 shipped {order}"))
}

/// `testing::replay` replays a history against the version it was recorded
/// on, and tells which registered versions can replay it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_checks_a_history_against_its_version_and_finds_the_versions_that_replay_it() {
    use durable::testing::{replay, replay_registry, replayable_versions, ReplayError};
    let env = TestEnv::new(Registry::new().orchestrator(checkout_v1)).unwrap();
    let id = env
        .client()
        .schedule(checkout_v1, "book".into())
        .await
        .unwrap();
    env.wait_until_waiting_for_event(&id, "paid").await.unwrap();
    env.client().raise_event(&id, "paid", &()).await.unwrap();
    env.wait_for_completion(&id).await.unwrap();
    let recorded = env.history(&id).await;
    env.shutdown().await;

    replay(checkout_v1, &recorded).expect("the version that recorded it replays it");
    match replay(checkout_v2, &recorded) {
        Err(e @ ReplayError::WrongVersion { .. }) => {
            let text = e.to_string();
            assert!(text.contains("version \"1\""), "{text}");
            assert!(text.contains("not on version \"2\""), "{text}");
        }
        other => panic!("expected WrongVersion, got {other:?}"),
    }

    let all = Registry::new()
        .orchestrator(checkout_v1)
        .orchestrator(checkout_v2)
        .orchestrator(checkout_v3);
    replay_registry(&all, &recorded).expect("a worker with every version replays it");
    assert_eq!(
        replayable_versions(&all, &recorded).unwrap(),
        [Some("1".to_string()), Some("2".to_string())],
        "version 3 inserts an activity before the event, so it cannot replay a version-1 history"
    );

    // A deploy that drops version 1 would fail these instances.
    let without_v1 = Registry::new()
        .orchestrator(checkout_v2)
        .orchestrator(checkout_v3);
    match replay_registry(&without_v1, &recorded) {
        Err(e @ ReplayError::NotRegistered { .. }) => {
            let text = e.to_string();
            assert!(text.contains("version \"2\", version \"3\""), "{text}");
        }
        other => panic!("expected NotRegistered, got {other:?}"),
    }
}
