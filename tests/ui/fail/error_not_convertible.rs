use durable::prelude::*;

pub struct NotAnError;

#[orchestrator]
async fn checkout(_ctx: OrchestrationContext, total: f64) -> Result<f64, NotAnError> {
    if total < 0.0 {
        return Err(NotAnError);
    }
    Ok(total)
}

fn main() {}
