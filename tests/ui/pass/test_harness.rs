use durable::prelude::*;

#[orchestrator]
async fn hello(_ctx: OrchestrationContext, name: String) -> String {
    format!("hello, {name}")
}

#[activity]
async fn noop(_ctx: ActivityContext) {}

#[durable::test]
async fn with_env(env: TestEnv) {
    let _ = env.client();
}

#[durable::test]
async fn without_env() {}

#[durable::test(orchestrators(hello), activities(noop))]
async fn explicit_registry(env: TestEnv) -> Result<(), String> {
    let _ = env;
    Ok(())
}

/// Docs and other attributes are kept.
#[durable::test]
#[ignore = "shows that attributes are kept"]
async fn ignored(_env: TestEnv) {}

fn main() {}
