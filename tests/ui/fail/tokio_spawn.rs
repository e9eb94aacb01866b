use durable::prelude::*;

#[activity]
async fn ship_item(_ctx: ActivityContext, name: String) -> String {
    format!("TRACK-{name}")
}

#[orchestrator]
async fn ship_all(ctx: OrchestrationContext, items: Vec<String>) -> Result<(), OrchestrationError> {
    for item in items {
        let ctx = ctx.clone();
        tokio::spawn(async move {
            let _ = ctx.call_activity(ship_item, item).await;
        });
    }
    Ok(())
}

fn main() {}
