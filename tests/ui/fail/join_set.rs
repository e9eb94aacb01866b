use durable::prelude::*;

#[activity]
async fn ship(_ctx: ActivityContext, item: String) -> String {
    item
}

#[orchestrator]
async fn ship_all(ctx: OrchestrationContext, items: Vec<String>) -> Result<usize, OrchestrationError> {
    let mut set = tokio::task::JoinSet::new();
    for item in items {
        set.spawn(ctx.call_activity(ship, item));
    }
    Ok(set.join_all().await.len())
}

fn main() {}
