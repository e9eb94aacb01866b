//! Regression tests for edge cases found in review: each drives the
//! in-memory backend and the engine step by step.

use durable_runtime::backend::{Backend, CreateInstanceRequest, IdReusePolicy};
use durable_runtime::history::{EventKind, HistoryEvent};
use durable_runtime::replay::Execution;
use durable_runtime::testing::TestError;
use durable_runtime::{Client, Either, MemoryBackend, OrchestrationStatus, Registry, TestEnv};
use std::sync::Arc;
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(5);

fn t0() -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
        .unwrap()
        .with_timezone(&chrono::Utc)
}

fn request(id: &str, name: &str, input: &str) -> CreateInstanceRequest {
    CreateInstanceRequest {
        instance_id: id.into(),
        name: name.into(),
        version: None,
        input: Some(input.into()),
        scheduled_start: None,
        reuse_policy: IdReusePolicy::default(),
        trace: None,
        tags: Default::default(),
    }
}

/// Leases the next episode, runs it from scratch, completes it; returns
/// the actions it produced.
async fn run_episode(b: &MemoryBackend, reg: &Arc<Registry>) -> Vec<String> {
    let item = tokio::time::timeout(LIMIT, b.next_orchestration_item())
        .await
        .expect("no orchestration work item arrived")
        .unwrap();
    let result = Execution::new(reg.clone(), &item.instance_id)
        .run_episode(&item.past_events, &item.new_events);
    let actions = result.actions.iter().map(|a| a.kind.describe()).collect();
    b.complete_orchestration_item(item, result).await.unwrap();
    actions
}

#[tokio::test]
async fn a_result_for_the_old_execution_does_not_complete_the_new_ones_task() {
    let reg = Arc::new(
        Registry::new().orchestrator_fn("o", |ctx, generation: u32| async move {
            if generation == 0 {
                let slow = ctx.call_activity_by_name::<String>("slow", &());
                let timeout = ctx.create_timer(Duration::from_secs(1));
                if let Either::Second(()) = ctx.when_any2(slow, timeout).await {
                    return ctx.continue_as_new(&1u32);
                }
                return Ok(String::new());
            }
            let r: String = ctx.call_activity_by_name("fresh", &()).await?;
            Ok(format!("generation 1 got {r}"))
        }),
    );
    let b = MemoryBackend::with_virtual_clock(t0());
    b.create_instance(request("i", "o", "0")).await.unwrap();
    run_episode(&b, &reg).await;
    let slow = b.next_activity_item().await.unwrap();
    b.advance(Duration::from_secs(1));
    // The timer episode (which continues as new) is leased...
    let item = b.next_orchestration_item().await.unwrap();
    // ...when the old execution's activity finishes.
    b.complete_activity_item(&slow, Ok(Some("\"stale\"".into())))
        .await
        .unwrap();
    let result = Execution::new(reg.clone(), "i").run_episode(&item.past_events, &item.new_events);
    b.complete_orchestration_item(item, result).await.unwrap();
    let actions = run_episode(&b, &reg).await;
    assert_eq!(actions, vec!["activity \"fresh\"".to_string()]);
    let st = b.get_instance("i", true).await.unwrap().unwrap();
    assert_eq!(
        st.status,
        OrchestrationStatus::Running,
        "the stale result completed the new execution"
    );
}

#[tokio::test]
async fn a_cached_execution_is_not_continued_for_a_replaced_instance() {
    let reg = Arc::new(
        Registry::new().orchestrator_fn("o", |ctx, n: u32| async move {
            let _: u32 = ctx.call_activity_by_name("a", &()).await?;
            Ok(n)
        }),
    );
    let b = MemoryBackend::new();
    b.create_instance(request("i", "o", "1")).await.unwrap();
    let item = b.next_orchestration_item().await.unwrap();
    let mut first = Execution::new(reg.clone(), "i");
    let r = first.run_episode(&item.past_events, &item.new_events);
    b.complete_orchestration_item(item, r).await.unwrap();
    b.next_activity_item().await.unwrap();
    // Replace the running instance with a new input.
    b.create_instance(CreateInstanceRequest {
        reuse_policy: IdReusePolicy::always(),
        ..request("i", "o", "2")
    })
    .await
    .unwrap();
    let item = b.next_orchestration_item().await.unwrap();
    let r = Execution::new(reg.clone(), "i").run_episode(&item.past_events, &item.new_events);
    b.complete_orchestration_item(item, r).await.unwrap();
    let act = b.next_activity_item().await.unwrap();
    b.complete_activity_item(&act, Ok(Some("0".into())))
        .await
        .unwrap();
    let item = b.next_orchestration_item().await.unwrap();
    assert!(
        !first.can_continue(&item.past_events),
        "the first incarnation's execution accepted the replacement's history"
    );
}

#[tokio::test]
async fn terminate_dispatches_nothing_the_last_episode_would_have() {
    let reg = Arc::new(
        Registry::new().orchestrator_fn("o", |ctx, _: u32| async move {
            let _: String = ctx.call_activity_by_name("first", &()).await?;
            let _: String = ctx.call_activity_by_name("charge_card", &()).await?;
            Ok(())
        }),
    );
    let b = MemoryBackend::with_virtual_clock(t0());
    b.create_instance(request("i", "o", "0")).await.unwrap();
    run_episode(&b, &reg).await;
    let first = b.next_activity_item().await.unwrap();
    b.complete_activity_item(&first, Ok(Some("\"ok\"".into())))
        .await
        .unwrap();
    b.terminate("i", None, false).await.unwrap();
    let actions = run_episode(&b, &reg).await;
    assert_eq!(
        actions,
        vec!["complete orchestration (Terminated)".to_string()]
    );
    let next = tokio::time::timeout(Duration::from_millis(100), b.next_activity_item()).await;
    assert!(next.is_err(), "an activity was dispatched after terminate");
}

#[test]
fn code_that_now_returns_early_is_non_deterministic() {
    let t = t0();
    let history = vec![
        HistoryEvent::new(t, EventKind::OrchestratorStarted),
        HistoryEvent::new(
            t,
            EventKind::ExecutionStarted {
                name: "o".into(),
                version: None,
                input: Some("0".into()),
                instance_id: "i".into(),
                execution_id: Some("e".into()),
                parent: None,
                scheduled_start: None,
                tags: Default::default(),
            },
        ),
        HistoryEvent::with_id(
            0,
            t,
            EventKind::TaskScheduled {
                name: "a".into(),
                version: None,
                input: None,
                tags: Default::default(),
            },
        ),
        HistoryEvent::new(t, EventKind::OrchestratorCompleted),
        HistoryEvent::new(t, EventKind::OrchestratorStarted),
        HistoryEvent::new(
            t,
            EventKind::TaskCompleted {
                task_scheduled_id: 0,
                result: Some("1".into()),
            },
        ),
        HistoryEvent::with_id(
            1,
            t,
            EventKind::TaskScheduled {
                name: "b".into(),
                version: None,
                input: None,
                tags: Default::default(),
            },
        ),
        HistoryEvent::new(t, EventKind::OrchestratorCompleted),
    ];
    // The new code returns after "a"; the history also ran "b".
    let reg = Arc::new(
        Registry::new().orchestrator_fn("o", |ctx, _: u32| async move {
            let x: u32 = ctx.call_activity_by_name("a", &()).await?;
            Ok(x)
        }),
    );
    let mut exec = Execution::new(reg, "i");
    exec.run_episode(&history, &[]);
    let nd = exec.non_determinism().expect("non-determinism detected");
    assert_eq!(nd.sequence_id, 1);
    assert_eq!(nd.history.as_deref(), Some("activity \"b\""));
    assert_eq!(nd.code, None);
}

#[tokio::test]
async fn a_suspended_instance_does_not_start_at_its_scheduled_time() {
    let reg = Arc::new(
        Registry::new().orchestrator_fn("o", |ctx, _: u32| async move {
            let r: String = ctx.call_activity_by_name("side_effect", &()).await?;
            Ok(r)
        }),
    );
    let b = MemoryBackend::with_virtual_clock(t0());
    b.create_instance(CreateInstanceRequest {
        scheduled_start: Some(t0() + chrono::Duration::seconds(10)),
        ..request("i", "o", "0")
    })
    .await
    .unwrap();
    b.suspend("i", None).await.unwrap();
    b.advance(Duration::from_secs(10));
    let actions = run_episode(&b, &reg).await;
    assert!(actions.is_empty(), "a suspended instance ran: {actions:?}");
    assert_eq!(
        b.get_instance("i", false).await.unwrap().unwrap().status,
        OrchestrationStatus::Suspended
    );
    b.resume("i", None).await.unwrap();
    let actions = run_episode(&b, &reg).await;
    assert_eq!(actions, vec!["activity \"side_effect\"".to_string()]);
}

#[tokio::test]
async fn an_event_before_a_delayed_start_waits_for_the_start() {
    let b = Arc::new(MemoryBackend::with_virtual_clock(t0()));
    b.create_instance(CreateInstanceRequest {
        scheduled_start: Some(t0() + chrono::Duration::hours(1)),
        ..request("i", "o", "0")
    })
    .await
    .unwrap();
    b.raise_event("i", "x", Some("1".into())).await.unwrap();
    let early = tokio::time::timeout(Duration::from_millis(50), b.next_orchestration_item()).await;
    assert!(
        early.is_err(),
        "an episode ran before the instance's start time"
    );
    let client = Client::new(b.clone());
    assert!(client
        .wait_for_start("i", Duration::from_millis(50))
        .await
        .is_err());
    assert_eq!(
        b.get_instance("i", false).await.unwrap().unwrap().status,
        OrchestrationStatus::Pending
    );
}

#[tokio::test]
async fn a_huge_timeout_means_wait_forever_not_panic() {
    let b = Arc::new(MemoryBackend::with_virtual_clock(t0()));
    b.create_instance(request("i", "o", "0")).await.unwrap();
    let client = Client::new(b.clone());
    let wait = tokio::spawn(async move {
        client
            .wait_for_completion("i", Duration::MAX)
            .await
            .map(|_| ())
    });
    b.terminate("i", None, false).await.unwrap();
    // No worker runs, so the instance never finishes: the wait must still be
    // pending (not panicked) after the terminate request.
    let outcome = tokio::time::timeout(Duration::from_millis(100), wait).await;
    assert!(outcome.is_err(), "the wait ended: {outcome:?}");
    // Moving a virtual clock by an absurd amount saturates instead of panicking.
    b.advance(Duration::MAX);
    assert!(b.now() > t0() + chrono::Duration::days(365 * 1000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_uuid_differs_between_executions() {
    let reg = Registry::new().orchestrator_fn("o", |ctx, previous: Option<String>| async move {
        let id = ctx.new_uuid().to_string();
        match previous {
            None => ctx.continue_as_new(&Some(id)),
            Some(p) => Ok(format!("{p} {id}")),
        }
    });
    let env = TestEnv::new(reg).unwrap();
    let id = env
        .client()
        .schedule_by_name("o", &Option::<String>::None, Default::default())
        .await
        .unwrap();
    let out: String = env
        .wait_for_completion(&id)
        .await
        .unwrap()
        .output()
        .unwrap();
    let ids: Vec<&str> = out.split(' ').collect();
    assert_ne!(ids[0], ids[1]);
    env.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_for_completion_never_reports_a_finished_instance_as_stuck() {
    let reg = Registry::new().orchestrator_fn("o", |_ctx, x: u64| async move {
        // A little CPU work so the episode ends while the test is between
        // reading the state and checking idleness.
        Ok((0..(x % 50) * 20).fold(0u64, |s, i| s.wrapping_add(i * i)))
    });
    let env = TestEnv::new(reg).unwrap();
    for i in 0..2_000u64 {
        let id = env
            .client()
            .schedule_by_name("o", &i, Default::default())
            .await
            .unwrap();
        match env.wait_for_completion(&id).await {
            Ok(s) => assert_eq!(s.status(), OrchestrationStatus::Completed),
            Err(TestError::Stuck { status, .. }) => {
                panic!("run {i}: finished instance reported stuck ({status})")
            }
            Err(e) => panic!("run {i}: {e}"),
        }
    }
    env.shutdown().await;
}
