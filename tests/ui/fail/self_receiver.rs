use durable::prelude::*;

struct Greeter;

impl Greeter {
    #[orchestrator]
    async fn greet(&self, _ctx: OrchestrationContext, name: String) -> String {
        format!("hello, {name}")
    }
}

fn main() {}
