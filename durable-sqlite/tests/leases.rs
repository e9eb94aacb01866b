//! Leases: stale tokens are rejected, expired leases deliver the work
//! again (to another process sharing the file), and two processes' workers
//! share one database.

use durable_runtime::actions::{ActionKind, OrchestratorAction, OrchestratorResult};
use durable_runtime::backend::{Backend, BackendError, CreateInstanceRequest, IdReusePolicy};
use durable_runtime::{
    ActivityError, Client, OrchestrationState, Registry, ScheduleOptions, Worker,
};
use durable_sqlite::{SqliteBackend, SqliteOptions};
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(10);

fn db() -> (tempfile::TempDir, std::path::PathBuf) {
    let d = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR"))
        .unwrap_or_else(|e| panic!("creating a temporary directory failed: {e}"));
    let p = d.path().join("leases.db");
    (d, p)
}

fn short_leases() -> SqliteOptions {
    SqliteOptions {
        lease_duration: Duration::from_millis(300),
        poll_interval: Duration::from_millis(20),
        ..SqliteOptions::default()
    }
}

async fn create(b: &SqliteBackend, id: &str) {
    b.create_instance(CreateInstanceRequest {
        instance_id: id.into(),
        name: "orch".into(),
        version: None,
        input: None,
        scheduled_start: None,
        reuse_policy: IdReusePolicy::default(),
        trace: None,
        tags: Default::default(),
    })
    .await
    .unwrap_or_else(|e| panic!("create: {e}"));
}

fn schedule_task() -> OrchestratorResult {
    OrchestratorResult {
        actions: vec![OrchestratorAction {
            id: 0,
            kind: ActionKind::ScheduleTask {
                name: "work".into(),
                version: None,
                input: Some("1".into()),
                tags: Default::default(),
            },
            trace: None,
        }],
        custom_status: None,
        cancelled_timers: Vec::new(),
    }
}

async fn within<T>(what: &str, f: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what} did not happen within {LIMIT:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_completion_token_is_rejected_and_changes_nothing() {
    let b = SqliteBackend::in_memory().unwrap_or_else(|e| panic!("{e}"));
    create(&b, "x").await;
    let item = within("an episode", b.next_orchestration_item())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let mut forged = item.clone();
    forged.completion_token = "12345".into();
    assert!(matches!(
        b.complete_orchestration_item(forged, schedule_task()).await,
        Err(BackendError::LeaseLost(_))
    ));
    b.complete_orchestration_item(item.clone(), schedule_task())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(
            b.complete_orchestration_item(item, schedule_task()).await,
            Err(BackendError::LeaseLost(_))
        ),
        "completing twice must be rejected"
    );
    let history = b.get_history("x").await.unwrap_or_else(|e| panic!("{e}"));
    let scheduled = history
        .iter()
        .filter(|e| e.kind.type_name() == "TaskScheduled")
        .count();
    assert_eq!(scheduled, 1, "the episode was applied more than once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_lease_delivers_the_work_to_another_process() {
    let (_d, path) = db();
    let a = SqliteBackend::open_with(&path, short_leases()).unwrap_or_else(|e| panic!("{e}"));
    let b = SqliteBackend::open_with(&path, short_leases()).unwrap_or_else(|e| panic!("{e}"));
    create(&a, "x").await;
    let episode = within("an episode", a.next_orchestration_item())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    a.complete_orchestration_item(episode, schedule_task())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    // `a` takes the activity and "crashes": it never completes it.
    let lost = within("an activity", a.next_activity_item())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let again = within("redelivery after the lease expired", b.next_activity_item())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!((again.instance_id.as_str(), again.task_id), ("x", 0));
    assert!(matches!(
        a.complete_activity_item(&lost, Ok(Some("2".into()))).await,
        Err(BackendError::LeaseLost(_))
    ));
    b.complete_activity_item(&again, Ok(Some("2".into())))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let next = within("the completion's episode", a.next_orchestration_item())
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let completions = next
        .new_events
        .iter()
        .filter(|e| e.kind.type_name() == "TaskCompleted")
        .count();
    assert_eq!(completions, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_share_one_file() {
    let (_d, path) = db();
    let registry = || {
        Registry::new()
            .activity_fn(
                "inc",
                |_c, x: i64| async move { Ok::<_, ActivityError>(x + 1) },
            )
            .orchestrator_fn("chain", |ctx, x: i64| async move {
                let a: i64 = ctx.call_activity_by_name("inc", &x).await?;
                let b: i64 = ctx.call_activity_by_name("inc", &a).await?;
                Ok(b)
            })
    };
    let mut workers = Vec::new();
    let mut backends = Vec::new();
    for _ in 0..2 {
        let b: Arc<dyn Backend> = Arc::new(
            SqliteBackend::open_with(&path, short_leases()).unwrap_or_else(|e| panic!("{e}")),
        );
        workers.push(
            Worker::new(b.clone(), registry())
                .start()
                .unwrap_or_else(|e| panic!("{e}")),
        );
        backends.push(b);
    }
    // A third handle, with no worker, plays the client process.
    let client = Client::new(Arc::new(
        SqliteBackend::open_with(&path, short_leases()).unwrap_or_else(|e| panic!("{e}")),
    ));
    let mut ids = Vec::new();
    for i in 0..50 {
        ids.push(
            client
                .schedule_by_name("chain", &i, ScheduleOptions::default())
                .await
                .unwrap_or_else(|e| panic!("{e}")),
        );
    }
    for (i, id) in ids.iter().enumerate() {
        let s = client
            .wait_for_completion(id, LIMIT)
            .await
            .unwrap_or_else(|e| panic!("{id}: {e}"));
        assert_eq!(s.output::<i64>().ok(), Some(i as i64 + 2));
    }
    for w in workers {
        w.shutdown().await;
    }
}

/// A worker renews the lease of a long activity, so another worker sharing
/// the file does not run it a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_activities_keep_their_lease() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (_dir, path) = db();
    let runs = Arc::new(AtomicUsize::new(0));
    let registry = |runs: Arc<AtomicUsize>| {
        Registry::new()
            .activity_fn("long", move |_c, _: ()| {
                let runs = runs.clone();
                async move {
                    runs.fetch_add(1, Ordering::SeqCst);
                    // Simulated work lasting four lease durations.
                    tokio::time::sleep(Duration::from_millis(1200)).await;
                    Ok::<_, ActivityError>(1)
                }
            })
            .orchestrator_fn("orch", |ctx, _: ()| async move {
                let v: i64 = ctx.call_activity_by_name("long", &()).await?;
                Ok(v)
            })
    };
    let state = run_on_two_processes(&path, || registry(runs.clone()), "orch").await;
    assert_eq!(state.output::<i64>().unwrap(), 1);
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "the activity ran twice: its lease was not renewed"
    );
}

/// A worker renews the lease of an episode that takes longer than a lease
/// (here an orchestrator that blocks for four lease durations), so another
/// process sharing the file does not run it a second time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_episode_keeps_its_lease() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let (_dir, path) = db();
    let first_runs = Arc::new(AtomicUsize::new(0));
    let registry = |runs: Arc<AtomicUsize>| {
        Registry::new().orchestrator_fn("slow", move |ctx, _: ()| {
            let runs = runs.clone();
            async move {
                if !ctx.is_replaying() {
                    runs.fetch_add(1, Ordering::SeqCst);
                    // Simulated slow orchestrator code, four lease durations.
                    std::thread::sleep(Duration::from_millis(1200));
                }
                Ok(7i64)
            }
        })
    };
    let state = run_on_two_processes(&path, || registry(first_runs.clone()), "slow").await;
    assert_eq!(state.output::<i64>().unwrap(), 7);
    assert_eq!(
        first_runs.load(Ordering::SeqCst),
        1,
        "the episode ran twice: its lease was not renewed while it ran"
    );
}

/// Two backends on the file at `path` (two processes, as far as leases
/// go), each with a worker of `registry`'s handlers: schedules `name` and
/// returns its final state once it completed.
async fn run_on_two_processes(
    path: &std::path::Path,
    registry: impl Fn() -> Registry,
    name: &str,
) -> OrchestrationState {
    let a = Arc::new(SqliteBackend::open_with(path, short_leases()).unwrap());
    let b = Arc::new(SqliteBackend::open_with(path, short_leases()).unwrap());
    let wa = Worker::new(a.clone(), registry()).start().unwrap();
    let wb = Worker::new(b.clone(), registry()).start().unwrap();
    let client = Client::new(a.clone());
    let id = client
        .schedule_by_name(name, &(), ScheduleOptions::default())
        .await
        .unwrap();
    let state = client.wait_for_completion(&id, LIMIT).await.unwrap();
    wa.shutdown().await;
    wb.shutdown().await;
    state
}
