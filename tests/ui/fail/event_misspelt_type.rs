use durable::prelude::*;

#[derive(Serialize, Deserialize, Event)]
struct Approval(bool);

#[orchestrator]
async fn review(ctx: OrchestrationContext) -> Result<bool, OrchestrationError> {
    let Approval(approved) = ctx.wait_for_event::<Aproval>().await?;
    Ok(approved)
}

fn main() {}
