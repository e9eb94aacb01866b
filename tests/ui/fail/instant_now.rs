use durable::prelude::*;

#[orchestrator]
async fn measure(ctx: OrchestrationContext) -> Result<u128, OrchestrationError> {
    let started = std::time::Instant::now();
    ctx.create_timer(std::time::Duration::from_secs(5)).await;
    Ok(started.elapsed().as_millis())
}

fn main() {}
