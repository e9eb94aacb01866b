//! Deadlines end to end on the in-memory backend: an event a losing deadline
//! had already received stays for the next wait; a deadline on a retried
//! call leaves no back-off timer behind.

use durable_runtime::{Registry, ScheduleOptions, TestEnv};
use std::time::Duration;

/// `Timeout`'s docs (and `DurableFuture::timeout`'s) promise that "a losing
/// event wait leaves its event for a later wait". When the `Timeout` is
/// awaited after both its deadline fired and its event arrived (deadline
/// first), it reports `TimedOut` but the event it had already received is
/// dropped with the wait: a later wait for the same event never sees it.
#[tokio::test]
async fn a_late_awaited_timeout_that_loses_keeps_its_event_for_a_later_wait() {
    let registry = Registry::new().orchestrator_fn("late", |ctx, _: ()| async move {
        let approval = ctx
            .wait_for_external_event::<String>("approval")
            .timeout(Duration::from_secs(10));
        // Something else first; meanwhile the deadline passes (10 s) and
        // then the event comes (20 min).
        ctx.create_timer(Duration::from_secs(3600)).await;
        match approval.await {
            Ok(v) => Ok(format!("in time: {}", v?)),
            Err(_) => {
                let late: String = ctx.wait_for_external_event("approval").await?;
                Ok(format!("late: {late}"))
            }
        }
    });
    let env = TestEnv::new(registry).unwrap();
    let id = env
        .client()
        .schedule_by_name("late", &(), ScheduleOptions::with_id("late-1"))
        .await
        .unwrap();
    env.advance_by(Duration::from_secs(20 * 60)).await.unwrap();
    env.client()
        .raise_event(&id, "approval", &"ann")
        .await
        .unwrap();
    let state = env
        .wait_for_completion(&id)
        .await
        .unwrap_or_else(|e| panic!("the event that came after the deadline was lost: {e}"));
    assert_eq!(state.output::<String>().unwrap(), "late: ann");
}

/// A deadline on a retried call that passes during a back-off cancels the
/// back-off timer with the call (probe: expected to pass).
#[tokio::test]
async fn a_deadline_passing_during_a_retry_back_off_cancels_the_back_off_timer() {
    use durable_runtime::{ActivityError, RetryPolicy};
    let registry = Registry::new()
        .activity_fn("declines", |_ctx, _: ()| async move {
            Err::<(), _>(ActivityError::new("Declined", "no"))
        })
        .orchestrator_fn("pay", |ctx, _: ()| async move {
            let retry = RetryPolicy::new(5, Duration::from_secs(600));
            let paid = ctx
                .timeout(
                    ctx.call_activity_by_name_with_retry::<()>("declines", &(), retry),
                    Duration::from_secs(60),
                )
                .await;
            let _: () = ctx.wait_for_external_event("gate").await?;
            Ok(paid.is_err())
        });
    let env = TestEnv::new(registry).unwrap();
    let id = env
        .client()
        .schedule_by_name("pay", &(), ScheduleOptions::with_id("pay-1"))
        .await
        .unwrap();
    env.wait_until_waiting_for_event(&id, "gate").await.unwrap();
    assert_eq!(
        env.backend().next_timer(),
        None,
        "a timer was left behind after the deadline dropped the retried call"
    );
    env.client().raise_event(&id, "gate", &()).await.unwrap();
    let state = env.wait_for_completion(&id).await.unwrap();
    assert!(state.output::<bool>().unwrap(), "the deadline did not win");
}
