use durable::prelude::*;

pub struct Receipt {
    pub total: f64,
}

#[orchestrator]
async fn checkout(_ctx: OrchestrationContext, total: f64) -> Result<Receipt, OrchestrationError> {
    Ok(Receipt { total })
}

fn main() {}
