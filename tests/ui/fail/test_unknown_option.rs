use durable::prelude::*;

#[orchestrator]
async fn greet(_ctx: OrchestrationContext, name: String) -> String {
    format!("hello, {name}")
}

#[durable::test(orchestrator(greet))]
async fn greets(env: TestEnv) {
    let _ = env;
}

fn main() {}
