use durable::prelude::*;
use std::time::Duration;

#[orchestrator]
async fn approval(ctx: OrchestrationContext) -> Result<String, OrchestrationError> {
    let decision = tokio::select! {
        approved = ctx.wait_for_external_event::<bool>("approval") => {
            if approved? { "approved" } else { "rejected" }
        }
        _ = ctx.create_timer(Duration::from_secs(30)) => "timed out",
    };
    Ok(decision.to_string())
}

fn main() {}
