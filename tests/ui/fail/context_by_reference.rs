use durable::prelude::*;

#[orchestrator]
async fn greet(_ctx: &OrchestrationContext, name: String) -> String {
    format!("hello, {name}")
}

fn main() {}
