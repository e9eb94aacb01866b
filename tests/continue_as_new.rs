//! `return ctx.continue_as_new(&next)` in orchestrators of every return
//! type it supports, run on the in-memory backend.

use durable::prelude::*;

#[orchestrator]
async fn count_up(ctx: OrchestrationContext, n: u32) -> Result<u32, OrchestrationError> {
    if n < 3 {
        return ctx.continue_as_new(&(n + 1));
    }
    Ok(n)
}

#[orchestrator]
async fn count_up_string_error(ctx: OrchestrationContext, n: u32) -> Result<u32, String> {
    if n < 3 {
        return ctx.continue_as_new(&(n + 1));
    }
    Ok(n)
}

#[orchestrator]
async fn count_up_boxed_error(
    ctx: OrchestrationContext,
    n: u32,
) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    if n < 3 {
        return ctx.continue_as_new(&(n + 1));
    }
    Ok(n)
}

/// An error type of the application's own.
#[derive(Debug)]
enum AppError {
    Restarted,
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::Restarted => f.write_str("restarted"),
        }
    }
}

impl From<ContinuedAsNew> for AppError {
    fn from(_: ContinuedAsNew) -> Self {
        AppError::Restarted
    }
}

#[orchestrator]
async fn count_up_app_error(ctx: OrchestrationContext, n: u32) -> Result<u32, AppError> {
    if n < 3 {
        return ctx.continue_as_new(&(n + 1));
    }
    Ok(n)
}

/// Unit output: the last generation records its count as custom status.
#[orchestrator]
async fn count_up_unit(ctx: OrchestrationContext, n: u32) {
    ctx.set_custom_status(&n);
    if n < 3 {
        ctx.continue_as_new(&(n + 1))
    }
}

#[derive(Debug, Serialize, Deserialize, Event)]
struct Tick;

/// Keeps the ticks that arrived during one generation for the next.
#[orchestrator]
async fn tick_counter(ctx: OrchestrationContext, seen: u32) -> Result<u32, OrchestrationError> {
    ctx.wait_for_event::<Tick>().await?;
    if seen + 1 < 3 {
        return ctx.continue_as_new_keep_events(&(seen + 1));
    }
    Ok(seen + 1)
}

async fn final_output(env: &TestEnv, id: &str) -> u32 {
    let state = env.wait_for_completion(id).await.unwrap();
    assert_eq!(
        state.status(),
        OrchestrationStatus::Completed,
        "{id}: {:?}",
        state.failure()
    );
    state.output::<u32>().unwrap()
}

#[durable::test]
async fn every_supported_return_type_continues_as_new(env: TestEnv) {
    let client = env.client();
    let ids = [
        client.schedule(count_up, 0).await.unwrap(),
        client.schedule(count_up_string_error, 0).await.unwrap(),
        client.schedule(count_up_boxed_error, 0).await.unwrap(),
        client.schedule(count_up_app_error, 0).await.unwrap(),
    ];
    for id in &ids {
        assert_eq!(final_output(&env, id).await, 3, "{id}");
    }
    let unit = client.schedule(count_up_unit, 0).await.unwrap();
    let state = env.wait_for_completion(&unit).await.unwrap();
    assert_eq!(state.status(), OrchestrationStatus::Completed);
    assert_eq!(state.custom_status::<u32>().unwrap(), 3);
}

#[durable::test]
async fn keep_events_carries_unconsumed_events_over(env: TestEnv) {
    let client = env.client();
    let id = client.schedule(tick_counter, 0).await.unwrap();
    for _ in 0..3 {
        client.raise(&id, &Tick).await.unwrap();
    }
    assert_eq!(final_output(&env, &id).await, 3);
}
