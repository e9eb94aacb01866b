//! What the macros generate, run for real: handles, names, options, error
//! conversion, discovery, the replay-safety marker and `#[durable::test]`.

use durable::prelude::*;

/// Two numbers (a public input type, as the handles are public).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pair {
    /// The first number.
    pub left: u32,
    /// The second number.
    pub right: u32,
}

/// Adds the two numbers.
#[activity]
async fn add(_ctx: ActivityContext, Pair { left, right }: Pair) -> u32 {
    left + right
}

#[activity(name = "Checked.Divide")]
async fn divide(_ctx: ActivityContext, (dividend, divisor): (u32, u32)) -> Result<u32, String> {
    if divisor == 0 {
        return Err(format!("cannot divide {dividend} by zero"));
    }
    Ok(dividend / divisor)
}

#[derive(Debug)]
struct Overdrawn(u32);

impl std::fmt::Display for Overdrawn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "balance would drop below zero by {}", self.0)
    }
}

#[activity]
async fn withdraw(_ctx: ActivityContext, amount: u32) -> Result<u32, Overdrawn> {
    100u32
        .checked_sub(amount)
        .ok_or_else(|| Overdrawn(amount - 100))
}

#[activity]
async fn fails_with_activity_error(_ctx: ActivityContext) -> Result<(), ActivityError> {
    Err(ActivityError::new("Custom.Kind", "kept as it is"))
}

#[activity]
async fn ping(_ctx: ActivityContext) {}

#[orchestrator]
async fn arithmetic(ctx: OrchestrationContext, pair: Pair) -> Result<u32, OrchestrationError> {
    let sum = ctx.call_activity(add, pair.clone()).await?;
    let by_name: u32 = ctx
        .call_activity_by_name("Checked.Divide", &(sum, pair.right))
        .await?;
    Ok(ctx.call_activity(divide, (by_name * 10, 2)).await?)
}

#[orchestrator(name = "Renamed", version = "3")]
async fn plain_output(ctx: OrchestrationContext, amount: u32) -> String {
    match ctx.call_activity(withdraw, amount).await {
        Ok(left) => format!("{left} left"),
        Err(failure) => format!("refused: {}", failure.message()),
    }
}

#[orchestrator]
async fn no_input_no_output(ctx: OrchestrationContext) {
    let _ = ctx.call_activity(ping, ()).await;
}

#[orchestrator]
async fn parent(ctx: OrchestrationContext, pair: Pair) -> Result<u32, OrchestrationError> {
    Ok(ctx.call_sub_orchestrator(arithmetic, pair).await? + 1)
}

#[orchestrator]
async fn propagates(ctx: OrchestrationContext, divisor: u32) -> Result<u32, OrchestrationError> {
    Ok(ctx.call_activity(divide, (10, divisor)).await?)
}

#[orchestrator]
async fn activity_error_kept(ctx: OrchestrationContext) -> Result<(), OrchestrationError> {
    Ok(ctx.call_activity(fails_with_activity_error, ()).await?)
}

#[orchestrator]
async fn marked(ctx: OrchestrationContext) -> Result<bool, OrchestrationError> {
    // Deliberate, and harmless: only compared with itself.
    #[durable::nondeterministic]
    let started = std::time::Instant::now();
    ctx.call_activity(ping, ()).await?;
    Ok(started.elapsed() >= std::time::Duration::ZERO)
}

#[test]
fn handles_carry_names_versions_and_types() {
    assert_eq!(<add as ActivitySignature>::NAME, "add");
    assert_eq!(<divide as ActivitySignature>::NAME, "Checked.Divide");
    assert_eq!(<plain_output as OrchestratorSignature>::NAME, "Renamed");
    assert_eq!(<plain_output as OrchestratorSignature>::VERSION, Some("3"));
    assert_eq!(<arithmetic as OrchestratorSignature>::VERSION, None);
    // The handle is a plain value: Copy, Default, Debug.
    let handle = add;
    let copy = handle;
    assert_eq!(
        format!("{:?}", (handle, copy, <add as Default>::default())),
        "(add, add, add)"
    );
}

#[test]
fn discovery_finds_every_annotated_function() {
    let registry = Registry::discover().expect("no duplicate names in this binary");
    for name in [
        "arithmetic",
        "Renamed",
        "no_input_no_output",
        "parent",
        "marked",
    ] {
        assert!(
            registry.has_orchestrator(name),
            "orchestrator {name} not discovered"
        );
    }
    for name in ["add", "Checked.Divide", "withdraw", "ping"] {
        assert!(
            registry.has_activity(name),
            "activity {name} not discovered"
        );
    }
}

#[test]
fn activities_can_be_called_directly() {
    let ctx = || ActivityContext::new("instance", 1, "divide");
    let run = |input| block_on(divide.run(ctx(), input));
    assert_eq!(run((9, 3)).unwrap(), 3);
    let error = run((9, 0)).unwrap_err();
    assert_eq!(error.details().message, "cannot divide 9 by zero");
}

/// A minimal executor for the direct call above (the activity never waits).
fn block_on<F: std::future::Future>(future: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a current-thread runtime")
        .block_on(future)
}

async fn completed<O: serde::de::DeserializeOwned>(env: &TestEnv, id: &str) -> O {
    let state = env.wait_for_completion(id).await.expect("completes");
    assert_eq!(
        state.status(),
        OrchestrationStatus::Completed,
        "{:?}",
        state.failure()
    );
    state.output().expect("output decodes")
}

async fn failure_message(env: &TestEnv, id: &str) -> (String, String) {
    let state = env.wait_for_completion(id).await.expect("finishes");
    assert_eq!(state.status(), OrchestrationStatus::Failed);
    let failure = state.failure().expect("failure details");
    (failure.error_type.clone(), failure.message.clone())
}

#[durable::test]
async fn typed_calls_and_calls_by_wire_name(env: TestEnv) {
    let id = env
        .client()
        .schedule(arithmetic, Pair { left: 4, right: 2 })
        .await
        .unwrap();
    assert_eq!(completed::<u32>(&env, &id).await, 15);
}

#[durable::test]
async fn sub_orchestrators_by_handle(env: TestEnv) {
    let id = env
        .client()
        .schedule(parent, Pair { left: 4, right: 2 })
        .await
        .unwrap();
    assert_eq!(completed::<u32>(&env, &id).await, 16);
}

#[durable::test]
async fn plain_outputs_and_renamed_orchestrators(env: TestEnv) {
    let client = env.client();
    let ok = client.schedule(plain_output, 30).await.unwrap();
    let refused = client.schedule(plain_output, 130).await.unwrap();
    assert_eq!(completed::<String>(&env, &ok).await, "70 left");
    assert_eq!(
        completed::<String>(&env, &refused).await,
        "refused: balance would drop below zero by 30"
    );
    let state = client.get_state(&ok).await.unwrap().unwrap();
    assert_eq!(state.name(), "Renamed");
}

#[durable::test]
async fn unit_input_and_output(env: TestEnv) {
    let id = env.client().schedule(no_input_no_output, ()).await.unwrap();
    completed::<()>(&env, &id).await;
}

#[durable::test]
async fn activity_errors_fail_the_orchestration_with_their_message(env: TestEnv) {
    let id = env.client().schedule(propagates, 0).await.unwrap();
    let (_, message) = failure_message(&env, &id).await;
    assert!(message.contains("cannot divide 10 by zero"), "{message}");

    let id = env
        .client()
        .schedule(activity_error_kept, ())
        .await
        .unwrap();
    let (error_type, message) = failure_message(&env, &id).await;
    // The activity's own error type survives the trip through the history.
    assert!(
        message.contains("Custom.Kind: kept as it is"),
        "{error_type}: {message}"
    );
}

#[durable::test]
async fn marked_statements_compile_and_run(env: TestEnv) {
    let id = env.client().schedule(marked, ()).await.unwrap();
    assert!(completed::<bool>(&env, &id).await);
}

#[durable::test(orchestrators(no_input_no_output), activities(ping))]
async fn explicit_registry_runs_what_it_names(env: TestEnv) {
    let id = env.client().schedule(no_input_no_output, ()).await.unwrap();
    completed::<()>(&env, &id).await;
}

#[durable::test(orchestrators(propagates))]
async fn explicit_registry_leaves_out_what_it_does_not_name(env: TestEnv) {
    let id = env.client().schedule(propagates, 2).await.unwrap();
    let (_, message) = failure_message(&env, &id).await;
    assert!(message.contains("not registered"), "{message}");
}

#[durable::test]
async fn tests_may_return_ok() -> Result<(), String> {
    Ok(())
}

#[durable::test]
#[should_panic(expected = "the test returned an error: \"boom\"")]
async fn tests_returning_err_fail() -> Result<(), String> {
    Err("boom".to_string())
}

/// An orchestrator may fail with any displayable error, boxed ones included.
#[orchestrator]
async fn fails_with_boxed_error(
    _ctx: OrchestrationContext,
    code: u32,
) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    Err(format!("rejected with code {code}").into())
}

/// An orchestrator may fail with a plain `String`.
#[orchestrator]
async fn fails_with_string(_ctx: OrchestrationContext) -> Result<u32, String> {
    Err("no stock".to_string())
}

#[durable::test(orchestrators(fails_with_boxed_error, fails_with_string))]
async fn orchestrators_fail_with_any_displayable_error(env: TestEnv) {
    let id = env
        .client()
        .schedule(fails_with_boxed_error, 7)
        .await
        .unwrap();
    let state = env.wait_for_completion(&id).await.unwrap();
    assert_eq!(state.status(), OrchestrationStatus::Failed);
    assert_eq!(state.failure().unwrap().message, "rejected with code 7");
    let id = env.client().schedule(fails_with_string, ()).await.unwrap();
    let failure = env
        .wait_for_completion(&id)
        .await
        .unwrap()
        .failure()
        .cloned()
        .unwrap();
    assert_eq!(
        (failure.error_type.as_str(), failure.message.as_str()),
        ("OrchestrationError", "no stock")
    );
}
