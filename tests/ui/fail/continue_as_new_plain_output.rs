use durable::prelude::*;

#[orchestrator]
async fn countdown(ctx: OrchestrationContext, n: u32) -> u32 {
    if n > 0 {
        return ctx.continue_as_new(&(n - 1));
    }
    n
}

fn main() {}
