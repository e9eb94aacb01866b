//! Behaviour specific to the in-memory backend and the worker: limits,
//! virtual time, shutdown, when_any over a Vec, timers that are cancelled
//! or outlive their execution.

use durable_runtime::actions::{ActionKind, OrchestratorAction, OrchestratorResult};
use durable_runtime::backend::transition::Limits;
use durable_runtime::backend::CreateInstanceRequest;
use durable_runtime::{
    ActivityError, Backend, Client, IdReusePolicy, MemoryBackend, OrchestrationStatus, Registry,
    ScheduleOptions, TestEnv, Worker, WorkerOptions,
};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn chain_registry() -> Registry {
    Registry::new()
        .activity_fn(
            "inc",
            |_c, x: i64| async move { Ok::<_, ActivityError>(x + 1) },
        )
        .orchestrator_fn("long_chain", |ctx, n: i64| async move {
            let mut x = 0;
            for _ in 0..n {
                x = ctx.call_activity_by_name("inc", &x).await?;
            }
            Ok(x)
        })
}

#[tokio::test]
async fn history_over_the_cap_fails_that_instance_only() {
    let backend = Arc::new(MemoryBackend::new().with_limits(Limits {
        max_history_events: 40,
        ..Limits::default()
    }));
    let worker = Worker::new(backend.clone(), chain_registry())
        .start()
        .unwrap();
    let client = Client::new(backend);
    let big = client
        .schedule_by_name("long_chain", &100, ScheduleOptions::default())
        .await
        .unwrap();
    let small = client
        .schedule_by_name("long_chain", &3, ScheduleOptions::default())
        .await
        .unwrap();
    let s = client
        .wait_for_completion(&big, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(s.status(), OrchestrationStatus::Failed);
    let msg = &s.failure().unwrap().message;
    assert!(
        msg.contains("over the limit of 40") && msg.contains("continue_as_new"),
        "{msg}"
    );
    let s = client
        .wait_for_completion(&small, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(s.status(), OrchestrationStatus::Completed);
    assert_eq!(s.output::<i64>().unwrap(), 3);
    worker.shutdown().await;
}

#[tokio::test]
async fn oversized_activity_result_becomes_a_clear_failure() {
    let backend = Arc::new(MemoryBackend::new().with_limits(Limits {
        max_payload_bytes: 1024,
        ..Limits::default()
    }));
    let registry = Registry::new()
        .activity_fn("big", |_c, _: ()| async move {
            Ok::<_, ActivityError>("x".repeat(4096))
        })
        .orchestrator_fn("calls_big", |ctx, _: ()| async move {
            let s: String = ctx.call_activity_by_name("big", &()).await?;
            Ok(s.len())
        });
    let worker = Worker::new(backend.clone(), registry).start().unwrap();
    let client = Client::new(backend);
    let id = client
        .schedule_by_name("calls_big", &(), ScheduleOptions::default())
        .await
        .unwrap();
    let s = client
        .wait_for_completion(&id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(s.status(), OrchestrationStatus::Failed);
    let msg = &s.failure().unwrap().message;
    assert!(
        msg.contains("result of activity \"big\"") && msg.contains("over the limit of 1024"),
        "{msg}"
    );
    worker.shutdown().await;
}

#[tokio::test]
async fn when_any_over_a_vec_tells_which_won() {
    let registry = Registry::new()
        .activity_fn(
            "inc",
            |_c, x: i64| async move { Ok::<_, ActivityError>(x + 1) },
        )
        .orchestrator_fn("first_of", |ctx, _: ()| async move {
            let waits = vec![
                ctx.wait_for_external_event::<String>("a"),
                ctx.wait_for_external_event::<String>("b"),
                ctx.wait_for_external_event::<String>("c"),
            ];
            let (index, value) = ctx.when_any(waits).await;
            Ok(format!("{index}:{}", value?))
        });
    let env = TestEnv::new(registry).unwrap();
    let id = env
        .client()
        .schedule_by_name("first_of", &(), ScheduleOptions::default())
        .await
        .unwrap();
    env.client().raise_event(&id, "b", &"bee").await.unwrap();
    let s = env.wait_for_completion(&id).await.unwrap();
    assert_eq!(s.output::<String>().unwrap(), "1:bee");
    env.shutdown().await;
}

#[tokio::test]
async fn virtual_clock_skips_a_thirty_day_timer() {
    let registry = Registry::new().orchestrator_fn("sleeps", |ctx, _: ()| async move {
        ctx.create_timer(Duration::from_secs(30 * 24 * 3600)).await;
        Ok(ctx.current_utc_datetime())
    });
    let env = TestEnv::new(registry).unwrap();
    let start = env.now();
    let id = env
        .client()
        .schedule_by_name("sleeps", &(), ScheduleOptions::default())
        .await
        .unwrap();
    let s = env.wait_for_completion(&id).await.unwrap();
    let woke: chrono::DateTime<chrono::Utc> = s.output().unwrap();
    // Only the virtual clock can have moved 30 days: a real wait would have
    // run into TestEnv's 30 s wall-time limit and failed.
    assert!(woke - start >= chrono::Duration::days(30));
    env.shutdown().await;
}

#[tokio::test]
async fn a_stuck_instance_is_reported_not_waited_for() {
    let registry = Registry::new().orchestrator_fn("waits", |ctx, _: ()| async move {
        let _: String = ctx.wait_for_external_event("never").await?;
        Ok(())
    });
    let env = TestEnv::new(registry).unwrap();
    let id = env
        .client()
        .schedule_by_name("waits", &(), ScheduleOptions::with_id("w-1"))
        .await
        .unwrap();
    let err = env.wait_for_completion(&id).await.unwrap_err().to_string();
    assert!(
        err.contains("\"w-1\"") && err.contains("Running") && err.contains("external event"),
        "{err}"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn shutdown_abandons_in_flight_activities_for_the_next_worker() {
    let backend = Arc::new(MemoryBackend::new());
    let runs = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(tokio::sync::Notify::new());
    let (r, g) = (runs.clone(), gate.clone());
    let slow = Registry::new()
        .activity_fn("slow", move |_c, _: ()| {
            let (r, g) = (r.clone(), g.clone());
            async move {
                r.fetch_add(1, Ordering::SeqCst);
                g.notify_one();
                std::future::pending::<()>().await;
                Ok::<_, ActivityError>(0)
            }
        })
        .orchestrator_fn("o", |ctx, _: ()| async move {
            let v: i64 = ctx.call_activity_by_name("slow", &()).await?;
            Ok(v)
        });
    let worker = Worker::new(backend.clone(), slow)
        .with_options(WorkerOptions {
            shutdown_grace: Duration::from_millis(50),
            ..Default::default()
        })
        .start()
        .unwrap();
    let client = Client::new(backend.clone() as Arc<dyn Backend>);
    let id = client
        .schedule_by_name("o", &(), ScheduleOptions::default())
        .await
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), gate.notified())
        .await
        .expect("the activity never started");
    worker.shutdown().await;

    // A second worker whose activity returns at once picks the abandoned item up.
    let fast = Registry::new()
        .activity_fn("slow", |_c, _: ()| async move { Ok::<_, ActivityError>(7) })
        .orchestrator_fn("o", |ctx, _: ()| async move {
            let v: i64 = ctx.call_activity_by_name("slow", &()).await?;
            Ok(v)
        });
    let worker = Worker::new(backend.clone(), fast).start().unwrap();
    let s = client
        .wait_for_completion(&id, Duration::from_secs(10))
        .await
        .unwrap();
    assert_eq!(s.output::<i64>().unwrap(), 7);
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    worker.shutdown().await;
}

#[tokio::test]
async fn duplicate_registration_is_a_startup_error_naming_both() {
    let registry = Registry::new()
        .activity_fn(
            "same",
            |_c, _: ()| async move { Ok::<_, ActivityError>(()) },
        )
        .activity_fn(
            "same",
            |_c, _: ()| async move { Ok::<_, ActivityError>(()) },
        );
    let err = Worker::new(Arc::new(MemoryBackend::new()), registry)
        .start()
        .unwrap_err()
        .to_string();
    assert!(err.contains("\"same\" is registered twice"), "{err}");
    assert!(
        err.matches("memory_backend.rs:").count() == 2,
        "both places named: {err}"
    );
}

/// Days in seconds.
fn days(n: u64) -> Duration {
    Duration::from_secs(n * 24 * 3600)
}

#[tokio::test]
async fn a_met_deadline_leaves_no_timer_for_the_virtual_clock() {
    let registry = Registry::new().orchestrator_fn("approve_then_ship", |ctx, _: ()| async move {
        let approved = ctx
            .wait_for_external_event::<bool>("approval")
            .timeout(days(1))
            .await;
        let shipped = ctx
            .wait_for_external_event::<bool>("shipped")
            .timeout(days(2))
            .await;
        Ok((approved.is_ok(), shipped.is_ok()))
    });
    let env = TestEnv::new(registry).unwrap();
    let start = env.now();
    let id = env
        .client()
        .schedule_by_name("approve_then_ship", &(), ScheduleOptions::default())
        .await
        .unwrap();
    env.wait_until_idle().await;
    let day = chrono::Duration::days(1);
    assert_eq!(env.backend().next_timer(), Some(start + day));
    env.client()
        .raise_event(&id, "approval", &true)
        .await
        .unwrap();
    env.wait_until_idle().await;
    // Only the second deadline is left: the first one's timer is gone.
    assert_eq!(env.backend().next_timer(), Some(start + day * 2));
    assert_eq!(env.now(), start, "raising and idling move no time");
    let s = env.wait_for_completion(&id).await.unwrap();
    assert_eq!(s.output::<(bool, bool)>().unwrap(), (true, false));
    let fired: Vec<_> = env
        .history(&id)
        .await
        .into_iter()
        .filter(|e| e.kind.type_name() == "TimerFired")
        .collect();
    assert_eq!(
        fired.len(),
        1,
        "only the second deadline fired; the clock never stopped at the cancelled one: {fired:?}"
    );
    env.shutdown().await;
}

/// Drives the memory backend by hand: an episode that creates a day-long
/// timer, then one (after an event) that ends the execution with `ending`
/// and cancels nothing itself.
async fn end_with_a_pending_timer(ending: ActionKind) -> MemoryBackend {
    let backend = MemoryBackend::with_virtual_clock(chrono::Utc::now());
    let request = CreateInstanceRequest {
        instance_id: "i".into(),
        name: "orch".into(),
        version: None,
        input: None,
        scheduled_start: None,
        reuse_policy: IdReusePolicy::default(),
        trace: None,
        tags: Default::default(),
    };
    backend.create_instance(request).await.unwrap();
    let item = backend.next_orchestration_item().await.unwrap();
    let fire_at = backend.now() + chrono::Duration::days(1);
    let episode = |id, kind| OrchestratorResult {
        actions: vec![OrchestratorAction {
            id,
            kind,
            trace: None,
        }],
        custom_status: None,
        cancelled_timers: Vec::new(),
    };
    backend
        .complete_orchestration_item(item, episode(0, ActionKind::CreateTimer { fire_at }))
        .await
        .unwrap();
    assert_eq!(backend.next_timer(), Some(fire_at));
    backend.raise_event("i", "go", None).await.unwrap();
    let item = backend.next_orchestration_item().await.unwrap();
    backend
        .complete_orchestration_item(item, episode(1, ending))
        .await
        .unwrap();
    backend
}

#[tokio::test]
async fn an_execution_that_ends_drops_its_pending_timers() {
    let backend = end_with_a_pending_timer(ActionKind::completed(None)).await;
    assert_eq!(
        backend.next_timer(),
        None,
        "a finished execution keeps a timer"
    );
    let backend = end_with_a_pending_timer(ActionKind::continued_as_new(None, Vec::new())).await;
    assert_eq!(
        backend.next_timer(),
        None,
        "an execution that continued as new keeps a timer"
    );
}
