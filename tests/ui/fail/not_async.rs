use durable::prelude::*;

#[orchestrator]
fn greet(_ctx: OrchestrationContext, name: String) -> String {
    format!("hello, {name}")
}

fn main() {}
