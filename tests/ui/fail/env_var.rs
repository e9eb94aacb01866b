use durable::prelude::*;

#[orchestrator]
async fn region(_ctx: OrchestrationContext) -> String {
    std::env::var("REGION").unwrap_or_default()
}

fn main() {}
