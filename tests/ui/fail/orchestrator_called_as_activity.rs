use durable::prelude::*;

#[orchestrator]
async fn child(_ctx: OrchestrationContext, value: u32) -> u32 {
    value
}

#[orchestrator]
async fn parent(ctx: OrchestrationContext, value: u32) -> Result<u32, OrchestrationError> {
    Ok(ctx.call_activity(child, value).await?)
}

fn main() {}
