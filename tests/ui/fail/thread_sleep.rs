use durable::prelude::*;
use std::time::Duration;

#[orchestrator]
async fn remind(_ctx: OrchestrationContext) {
    std::thread::sleep(Duration::from_secs(30));
}

fn main() {}
