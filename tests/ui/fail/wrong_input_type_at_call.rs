use durable::prelude::*;

#[activity]
async fn ship_item(_ctx: ActivityContext, name: String) -> String {
    format!("TRACK-{name}")
}

#[orchestrator]
async fn ship(ctx: OrchestrationContext, quantity: u32) -> Result<String, OrchestrationError> {
    Ok(ctx.call_activity(ship_item, quantity).await?)
}

fn main() {}
