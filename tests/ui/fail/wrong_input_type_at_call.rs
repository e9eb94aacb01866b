use durable::prelude::*;

/// The activity's input: a type of this file, so the compiler names it the
/// same way whatever else the crate graph holds.
#[derive(Serialize, Deserialize)]
struct Item(String);

#[activity]
async fn ship_item(_ctx: ActivityContext, item: Item) -> String {
    format!("TRACK-{}", item.0)
}

#[orchestrator]
async fn ship(ctx: OrchestrationContext, quantity: u32) -> Result<String, OrchestrationError> {
    Ok(ctx.call_activity(ship_item, quantity).await?)
}

fn main() {}
