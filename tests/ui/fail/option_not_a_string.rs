use durable::prelude::*;

#[orchestrator(name = greet_v2, version = 2)]
async fn greet(_ctx: OrchestrationContext, name: String) -> String {
    format!("hello, {name}")
}

fn main() {}
