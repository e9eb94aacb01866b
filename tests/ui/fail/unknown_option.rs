use durable::prelude::*;

#[orchestrator(nmae = "Greet")]
async fn greet(_ctx: OrchestrationContext, name: String) -> String {
    format!("hello, {name}")
}

fn main() {}
