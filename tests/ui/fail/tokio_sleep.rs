use durable::prelude::*;
use std::time::Duration;

#[orchestrator]
async fn remind(_ctx: OrchestrationContext) {
    tokio::time::sleep(Duration::from_secs(30)).await;
}

fn main() {}
