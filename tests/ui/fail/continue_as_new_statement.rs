use durable::prelude::*;

#[orchestrator]
async fn countdown(ctx: OrchestrationContext, n: u32) -> Result<u32, OrchestrationError> {
    if n > 0 {
        // The old statement form: the result must be returned now.
        ctx.continue_as_new(&(n - 1));
    }
    Ok(n)
}

fn main() {}
