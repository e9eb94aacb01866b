use durable::prelude::*;

#[orchestrator]
async fn greet(name: String, _ctx: OrchestrationContext) -> String {
    format!("hello, {name}")
}

fn main() {}
