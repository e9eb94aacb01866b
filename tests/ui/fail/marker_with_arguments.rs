use durable::prelude::*;

#[orchestrator]
async fn stamp(_ctx: OrchestrationContext) -> u128 {
    #[durable::nondeterministic(reason = "logging")]
    let started = std::time::Instant::now();
    started.elapsed().as_millis()
}

fn main() {}
