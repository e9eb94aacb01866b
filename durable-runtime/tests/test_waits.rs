//! `TestEnv`'s waits for a state (a custom status, a wait for an event) and
//! its moves of virtual time; `wait_until_idle` against back-off timers.

use durable_runtime::testing::TestError;
use durable_runtime::{ActivityError, Either, Registry, RetryPolicy, ScheduleOptions, TestEnv};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// "order" charges a card that declines twice (retried after 60 s and
/// 120 s), then waits for a confirmation; its custom status names the
/// stage. Returns the attempts "charge" saw.
fn order_registry() -> (Registry, Arc<Mutex<Vec<u32>>>) {
    let attempts = Arc::new(Mutex::new(Vec::new()));
    let seen = attempts.clone();
    let registry = Registry::new()
        .activity_fn("charge", move |ctx, _: ()| {
            let seen = seen.clone();
            async move {
                seen.lock().unwrap().push(ctx.attempt());
                if ctx.attempt() < 3 {
                    return Err(ActivityError::new("Declined", "try again"));
                }
                Ok(())
            }
        })
        .orchestrator_fn("order", |ctx, _: ()| async move {
            ctx.set_custom_status(&"charging");
            let retry = RetryPolicy::new(5, Duration::from_secs(60)).backoff_coefficient(2.0);
            ctx.call_activity_by_name_with_retry::<()>("charge", &(), retry)
                .await?;
            ctx.set_custom_status(&"awaiting-confirmation");
            let ok: bool = ctx.wait_for_external_event("confirm").await?;
            ctx.set_custom_status(&"done");
            Ok(ok)
        });
    (registry, attempts)
}

async fn schedule(env: &TestEnv, name: &str, id: &str) -> String {
    env.client()
        .schedule_by_name(name, &(), ScheduleOptions::with_id(id))
        .await
        .unwrap()
}

fn status_of(state: &durable_runtime::OrchestrationState) -> String {
    state.custom_status::<String>().unwrap()
}

#[tokio::test]
async fn wait_until_idle_returns_while_a_retry_back_off_is_pending() {
    let (registry, attempts) = order_registry();
    let env = TestEnv::new(registry).unwrap();
    let start = env.now();
    let id = schedule(&env, "order", "o-idle").await;
    env.wait_until_idle().await;
    let state = env.client().get_state(&id).await.unwrap().unwrap();
    assert_eq!(
        status_of(&state),
        "charging",
        "idle is reached before the retry"
    );
    assert_eq!(*attempts.lock().unwrap(), [1]);
    assert_eq!(
        env.backend().next_timer(),
        Some(start + chrono::Duration::seconds(60)),
        "the back-off timer is pending"
    );
    assert_eq!(env.now(), start, "wait_until_idle does not move time");
    env.shutdown().await;
}

#[tokio::test]
async fn wait_for_custom_status_passes_retry_back_offs() {
    let (registry, attempts) = order_registry();
    let env = TestEnv::new(registry).unwrap();
    let start = env.now();
    let id = schedule(&env, "order", "o-status").await;
    let stage: String = env
        .wait_for_custom_status(&id, |s: &String| s == "awaiting-confirmation")
        .await
        .unwrap();
    assert_eq!(stage, "awaiting-confirmation");
    assert_eq!(*attempts.lock().unwrap(), [1, 2, 3]);
    assert_eq!(
        env.now(),
        start + chrono::Duration::seconds(60 + 120),
        "virtual time moved through both back-offs, and no further"
    );
    env.client()
        .raise_event(&id, "confirm", &true)
        .await
        .unwrap();
    env.wait_for_custom_status_eq(&id, &"done".to_string())
        .await
        .unwrap();
    let done = env.wait_for_completion(&id).await.unwrap();
    assert!(done.output::<bool>().unwrap());
    env.shutdown().await;
}

#[tokio::test]
async fn a_custom_status_that_can_never_come_fails_naming_what_was_seen() {
    let (registry, _) = order_registry();
    let env = TestEnv::new(registry).unwrap();
    let id = schedule(&env, "order", "o-never").await;
    let err = env
        .wait_for_custom_status_eq(&id, &"shipped".to_string())
        .await
        .unwrap_err();
    assert!(matches!(err, TestError::NotReached { .. }), "{err:?}");
    let msg = err.to_string();
    for part in [
        "\"o-never\"",
        "showing the custom status \"shipped\"",
        "its custom status is \"awaiting-confirmation\"",
        "no timer is pending",
    ] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }

    // A finished instance will not change its status either.
    env.client()
        .raise_event(&id, "confirm", &false)
        .await
        .unwrap();
    env.wait_for_completion(&id).await.unwrap();
    let msg = env
        .wait_for_custom_status(&id, |s: &String| s == "charging")
        .await
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("it finished (Completed)") && msg.contains("\"done\""),
        "{msg}"
    );
    env.shutdown().await;
}

/// "approval" waits a minute, then for an "approval" event racing a 24 h
/// deadline.
fn approval_registry() -> Registry {
    Registry::new()
        .orchestrator_fn("approval", |ctx, _: ()| async move {
            ctx.create_timer(Duration::from_secs(60)).await;
            let answer = ctx.wait_for_external_event::<bool>("Approval");
            let deadline = ctx.create_timer(Duration::from_secs(24 * 3600));
            Ok(match ctx.when_any2(answer, deadline).await {
                Either::First(answer) => {
                    if answer? {
                        "approved"
                    } else {
                        "rejected"
                    }
                }
                Either::Second(()) => "timed out",
            }
            .to_string())
        })
        .orchestrator_fn("pays", |ctx, _: ()| async move {
            let _: u32 = ctx.wait_for_external_event("payment").await?;
            Ok(())
        })
}

#[tokio::test]
async fn wait_until_waiting_for_event_passes_a_delay_and_stops_before_the_deadline() {
    let env = TestEnv::new(approval_registry()).unwrap();
    let start = env.now();
    let id = schedule(&env, "approval", "a-1").await;
    env.wait_until_waiting_for_event(&id, "approval")
        .await
        .unwrap();
    assert_eq!(
        env.now(),
        start + chrono::Duration::seconds(60),
        "the one-minute delay passed, the deadline did not"
    );
    assert_eq!(env.backend().event_waits(&id), ["approval"]);
    env.client()
        .raise_event(&id, "approval", &true)
        .await
        .unwrap();
    let done = env.wait_for_completion(&id).await.unwrap();
    assert_eq!(done.output::<String>().unwrap(), "approved");
    assert!(
        env.backend().event_waits(&id).is_empty(),
        "a finished instance waits for nothing"
    );
    env.shutdown().await;
}

#[tokio::test]
async fn waiting_for_an_event_nobody_waits_for_fails_naming_what_it_waits_for() {
    let env = TestEnv::new(approval_registry()).unwrap();
    let id = schedule(&env, "pays", "p-1").await;
    let err = env
        .wait_until_waiting_for_event(&id, "approval")
        .await
        .unwrap_err();
    assert!(matches!(err, TestError::NotReached { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("\"p-1\" will never be waiting for event \"approval\"")
            && msg.contains("waits for the events [\"payment\"]")
            && msg.contains("no timer is pending"),
        "{msg}"
    );

    // Once it finishes, it never waits again.
    env.client()
        .raise_event(&id, "payment", &7u32)
        .await
        .unwrap();
    env.wait_for_completion(&id).await.unwrap();
    let msg = env
        .wait_until_waiting_for_event(&id, "payment")
        .await
        .unwrap_err()
        .to_string();
    assert!(msg.contains("it finished (Completed)"), "{msg}");
    let missing = env.wait_until_waiting_for_event("nobody", "payment").await;
    assert!(
        matches!(missing, Err(TestError::NotFound(_))),
        "{missing:?}"
    );
    env.shutdown().await;
}

/// "reminders" sets its custom status to 1, 2, 3 a day apart.
fn reminders() -> Registry {
    Registry::new().orchestrator_fn("reminders", |ctx, _: ()| async move {
        for n in 1..=3u32 {
            ctx.create_timer(Duration::from_secs(24 * 3600)).await;
            ctx.set_custom_status(&n);
        }
        Ok(())
    })
}

#[tokio::test]
async fn advancing_time_fires_each_timer_due_and_lets_it_settle() {
    let env = TestEnv::new(reminders()).unwrap();
    let start = env.now();
    let id = schedule(&env, "reminders", "r-1").await;
    env.wait_until_idle().await;
    // The second timer is created only when the first fires: both are due.
    env.advance_by(Duration::from_secs(50 * 3600))
        .await
        .unwrap();
    assert_eq!(env.now(), start + chrono::Duration::hours(50));
    let state = env.client().get_state(&id).await.unwrap().unwrap();
    assert_eq!(state.custom_status::<u32>().unwrap(), 2);
    assert!(!state.status().is_terminal());

    let err = env.advance_to(start).await.unwrap_err();
    assert!(matches!(err, TestError::TimeGoesBack { .. }), "{err:?}");
    assert!(err.to_string().contains("cannot go back"), "{err}");

    env.advance_to(start + chrono::Duration::hours(72))
        .await
        .unwrap();
    let state = env.client().get_state(&id).await.unwrap().unwrap();
    assert_eq!(state.custom_status::<u32>().unwrap(), 3);
    assert!(state.status().is_terminal(), "{:?}", state.status());
    env.shutdown().await;
}

#[tokio::test]
async fn waits_for_a_state_are_bounded_by_wall_time() {
    let registry = Registry::new()
        .activity_fn("hangs", |_ctx, _: ()| async move {
            std::future::pending::<()>().await;
            Ok::<_, ActivityError>(())
        })
        .orchestrator_fn("stuck", |ctx, _: ()| async move {
            ctx.set_custom_status(&"calling");
            ctx.call_activity_by_name::<()>("hangs", &()).await?;
            Ok(())
        });
    let env = TestEnv::new(registry)
        .unwrap()
        .with_wait_limit(Duration::from_millis(200));
    let id = schedule(&env, "stuck", "s-1").await;
    let err = env
        .wait_for_custom_status_eq(&id, &"called".to_string())
        .await
        .unwrap_err();
    assert!(matches!(err, TestError::StateTimeout { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains("\"s-1\" showing the custom status \"called\"")
            && msg.contains("200ms")
            && msg.contains("\"calling\""),
        "{msg}"
    );
    let err = env
        .advance_by(Duration::from_secs(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("advancing virtual time") && err.contains("still running"),
        "{err}"
    );
    env.shutdown().await;
}
